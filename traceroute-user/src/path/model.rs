//! Serde model of the `NetworkPath` record (DESIGN §4).
//!
//! Field names are the contract: do not rename. Fields marked "extra" are our
//! additions; they are optional so records of the original agent still parse.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::probe::{Protocol, Ttl};
use crate::reply::MplsLabel;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetworkPath {
    /// Milliseconds since the Unix epoch.
    pub timestamp: u64,
    pub agent_version: String,
    pub namespace: String,
    pub test_run_id: Uuid,
    pub protocol: Protocol,
    pub source: PathSource,
    pub destination: PathDestination,
    pub traceroute: Traceroute,
    pub e2e_probe: E2eProbe,
    pub tags: Vec<String>,
    /// Extra: how replies were captured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<CaptureInfo>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathSource {
    pub hostname: String,
    /// The route the probes took out of this host; absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<Via>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Via {
    pub interface: Interface,
    /// Extra: next-hop gateway of the route (absent for on-link targets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    /// MAC address as `aa:bb:..`; empty for interfaces without one (tun, wireguard).
    pub hardware_addr: String,
    /// Extra: interface MTU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathDestination {
    pub hostname: String,
    /// Destination port; 0 for ICMP.
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Traceroute {
    pub runs: Vec<Run>,
    pub hop_count: HopCount,
}

/// One traceroute run: one flow, every TTL.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub run_id: Uuid,
    pub source: RunSource,
    pub destination: RunDestination,
    pub hops: Vec<Hop>,
    /// Extra: whether the destination answered (SYN-ACK/RST, echo reply,
    /// port unreachable...) at some TTL of this run.
    #[serde(default)]
    pub destination_reached: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSource {
    pub ip_address: IpAddr,
    /// Our source port; for ICMP the echo identifier is not a port: 0.
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunDestination {
    pub ip_address: IpAddr,
    pub port: u16,
    pub reverse_dns: Vec<String>,
}

/// One TTL of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hop {
    pub ttl: Ttl,
    /// The responder; `""` for a silent hop (never a made-up name).
    #[serde(with = "ip_or_empty")]
    pub ip_address: Option<IpAddr>,
    /// Milliseconds: the lowest RTT among the attempts `ip_address` answered.
    /// Absent for a silent hop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt: Option<f64>,
    pub reachable: bool,
    /// Extra: names of `ip_address` when reverse DNS was requested.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reverse_dns: Vec<String>,
    /// Extra: RTT of every attempt at this TTL in ms, `null` when unanswered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rtts: Vec<Option<f64>>,
    /// Extra: ICMP type of the reply that named `ip_address` (none for TCP replies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    /// Extra: ICMP code of that reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
    /// Extra: TTL / hop limit of that reply as it reached us.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_ttl: Option<u8>,
    /// Extra: where the RTT timestamps came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_source: Option<TimestampSource>,
    /// Extra: other addresses that answered at this TTL (per-packet load balancing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_ip_addresses: Vec<IpAddr>,
    /// Extra: MPLS label stack from the ICMP extension of that reply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mpls_labels: Vec<MplsLabel>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HopCount {
    pub avg: f64,
    pub min: u32,
    pub max: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct E2eProbe {
    /// RTTs (ms) of the probes that were answered, in sending order.
    pub rtts: Vec<f64>,
    pub packets_sent: u32,
    pub packets_received: u32,
    pub packet_loss_percentage: f64,
    /// Mean absolute difference of consecutive RTTs (ms).
    pub jitter: f64,
    pub rtt: RttStats,
}

#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct RttStats {
    pub avg: f64,
    pub min: f64,
    pub max: f64,
}

/// Where an RTT's two timestamps were taken (defined by the capture).
pub use crate::capture::TimestampSource;

/// Extra: top-level capture facts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureInfo {
    pub method: CaptureMethod,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureMethod {
    Ebpf,
    Socket,
}

/// `Option<IpAddr>` as a string, `""` for `None`: the contract's silent hop.
mod ip_or_empty {
    use std::net::IpAddr;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(ip: &Option<IpAddr>, s: S) -> Result<S::Ok, S::Error> {
        match ip {
            Some(ip) => s.collect_str(ip),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IpAddr>, D::Error> {
        let text = String::deserialize(d)?;
        if text.is_empty() {
            Ok(None)
        } else {
            text.parse().map(Some).map_err(D::Error::custom)
        }
    }
}
