//! Serde model of the `NetworkPath` record (docs/NETWORK_PATH.md).
//!
//! Field names are the contract: do not rename. Fields marked "extra" are our
//! additions; they are optional so records of the original agent still parse.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::probe::{Protocol, Ttl};

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
    /// Extra, TCP: how the probes went: `syn` (bare SYNs) or `sack`
    /// (segments inside an established connection). `prefer_sack` shows
    /// which one it came to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_method: Option<String>,
    /// Extra: what the probing cost and whether anything was left undone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probing: Option<Probing>,
    /// Extra: the path graph of a multi-flow trace (`paths` > 1 or MDA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multipath: Option<PathGraph>,
    /// Extra: fingerprint of the set of distinct paths the runs took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_fingerprint: Option<String>,
    /// Extra: set on a scheduled target's record when its path set differs
    /// from the previous run's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_change: Option<PathChange>,
    /// Extra: the trace was interrupted (Ctrl-C in the CLI) before it
    /// ended; hops not settled by then are `no_answer: cut_short`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub incomplete: bool,
}

/// Extra: a scheduled target's paths changed since its previous run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathChange {
    pub previous: String,
    pub current: String,
}

/// Extra: the probing behind a record (traceroute runs and e2e probes).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Probing {
    pub probes_sent: u64,
    /// Of which re-probes of routers suspected of rate limiting.
    pub reprobes: u64,
    /// Probes never sent (router budget, probe rate, deadline).
    pub probes_not_sent: u64,
    /// Hops reused from another trace (see `Hop::shared`).
    pub shared_hops: u64,
    /// Why this record reports less than was asked: `rate_limited`,
    /// `cut_short`, `router_budget`, `probe_rate`, `deadline`. Empty when
    /// every unanswered hop waited its full time.
    pub degraded: Vec<String>,
    /// Milliseconds the trace waited to be admitted because responders it
    /// needs were known to be at their limit (absent: it did not wait).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission_wait: Option<f64>,
}

impl Probing {
    /// The probing of several flows as one: counts add up, reasons merge.
    pub fn sum<'a>(parts: impl IntoIterator<Item = &'a Probing>) -> Probing {
        let mut total = Probing::default();
        for p in parts {
            total.probes_sent += p.probes_sent;
            total.reprobes += p.reprobes;
            total.probes_not_sent += p.probes_not_sent;
            total.shared_hops += p.shared_hops;
            total.admission_wait = match (total.admission_wait, p.admission_wait) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            for reason in &p.degraded {
                if !total.degraded.contains(reason) {
                    total.degraded.push(reason.clone());
                }
            }
        }
        total
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathSource {
    pub hostname: String,
    /// The route the probes took out of this host; absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<Via>,
    /// This host's public address as configured (`public_ip` in the service
    /// config); the agent never asks an outside service for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ip: Option<IpAddr>,
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
    /// Extra: the flow of this run (source port; ICMP: echo identifier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_id: Option<u16>,
    /// Extra: fingerprint of the hop addresses of this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Extra: the destination's answer came from nearer than the hop it
    /// answered at (see [`SuspectedMiddlebox`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspected_middlebox: Option<SuspectedMiddlebox>,
    /// Extra: where the destination is could not be settled (see
    /// [`DistanceUncertain`]); such runs do not count in `hop_count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distance_uncertain: Option<DistanceUncertain>,
}

/// Extra: the destination answered the probe of TTL `answered_at`, but the
/// TTLs `silent` before it (after the last router that answered) got no
/// answer from anyone, even asked again, and the answer's reply TTL puts its
/// sender `estimate` hops away. A rate-limited destination answers some of
/// the probes that reach it and not others: it may be as near as the first
/// silent TTL at or beyond `estimate`. The record does not guess.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DistanceUncertain {
    pub answered_at: Ttl,
    pub silent: Vec<Ttl>,
    pub estimate: u8,
}

/// Extra: the answer that ended a run in the destination's name carries a
/// reply TTL that puts its sender `distance` hops away, nearer than `ttl`,
/// the TTL of the probe it answered. A SYN proxy or a firewall answering
/// for the destination does this (the destination is further on); so can a
/// return path shorter than the way there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuspectedMiddlebox {
    /// TTL of the probe the answer came for (where the record shows the
    /// destination).
    pub ttl: Ttl,
    /// TTL / hop limit of that answer as it reached us.
    pub reply_ttl: u8,
    /// Hops to its sender: the smallest usual initial TTL (64, 128, 255)
    /// not below `reply_ttl`, minus `reply_ttl`, plus one.
    pub distance: u8,
    /// This run's router at `distance`, if it answered: the likely sender.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub likely: Option<IpAddr>,
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
    /// Omitted when empty, as the Go client's `omitempty` does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
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
    /// Extra, TCP destination hop: how the destination answered, so an open
    /// port (`syn_ack`, or `ack` inside a `sack` connection) and a closed
    /// one (`rst`) are told apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_answer: Option<TcpAnswer>,
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
    /// Extra: interfaces the router described in that reply's ICMP
    /// extension (RFC 5837), in its order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interface_info: Vec<InterfaceInfo>,
    /// Extra, unanswered hops only: why there is no answer. Only `timeout`
    /// (sent, waited its full time) means the hop was silent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_answer: Option<NoAnswerKind>,
    /// Extra, with `no_answer: not_sent`: what kept the probe back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_sent_reason: Option<NotSentReason>,
    /// Extra, unanswered hops whose probe was sent: how long it waited (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waited: Option<f64>,
    /// Extra: attempts at this TTL (entries of `rtts`) whose probe was never
    /// sent or not given its full wait (`not_sent`, `cut_short`, `too_big`):
    /// neither answered nor lost, so loss is counted without them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub not_waited: u8,
    /// Extra: this hop was observed by another trace (the gateway, which
    /// every trace leaving by the same source, interface and gateway crosses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<SharedHop>,
    /// Extra: what this hop's quote of our probe shows changed on the way
    /// there; absent when it quotes the probe as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewritten: Option<Rewritten>,
    /// Extra, with `no_answer: too_big`: the router before this hop that
    /// could not forward the probe, and its next link's MTU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub too_big: Option<TooBig>,
    /// Extra, path MTU discovery: the size (bytes, IP header included) of
    /// the probe that reached this hop, the path MTU up to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_mtu: Option<u32>,
    /// Extra, path MTU discovery: this router reported its next link's MTU
    /// (fragmentation needed / packet too big) for bigger probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop_mtu: Option<u32>,
}

/// Extra: a "fragmentation needed" / "packet too big" answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TooBig {
    /// The router that sent it.
    pub from: IpAddr,
    /// The MTU it gave (absent when it gave 0, as pre-RFC 1191 routers do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// Extra: fields of our probe that a hop's ICMP error quotes differently
/// from how they were sent (each absent when unchanged). The first hop that
/// shows a change is just past the box that made it. A NAT that translates
/// the quotes back (RFC 5508, as Linux connection tracking does) leaves no
/// trace here.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rewritten {
    /// Our source address as the hop saw it: a NAT before it rewrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<IpAddr>,
    /// The DSCP the hop saw (probes are sent with 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dscp: Option<u8>,
    /// The ECN bits the hop saw (probes are sent with 0, not ECN-capable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecn: Option<u8>,
    /// The IPv4 ID the hop saw, when a box renumbered it (reported only
    /// when the quote also carries the probe's token, which proves it ours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_id: Option<u16>,
}

/// Why a probe has no answer (the record's `no_answer` plus `not_sent_reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NoAnswer {
    /// Sent, and waited its full time: silent.
    Timeout,
    /// Its router answered before (or other traces at this position) and
    /// later hops answered: suspected ICMP rate limiting.
    RateLimited,
    /// Sent, but the trace's deadline ended its wait early.
    CutShort,
    /// Never sent.
    NotSent(NotSentReason),
    /// A router before this hop could not forward the probe: its next link's
    /// MTU (`None`: not given) is smaller than the probe.
    TooBig { from: IpAddr, mtu: Option<u32> },
}

impl NoAnswer {
    /// The label of logs and metrics (a not-sent probe by its reason).
    pub fn as_str(self) -> &'static str {
        match self {
            NoAnswer::Timeout => "timeout",
            NoAnswer::RateLimited => "rate_limited",
            NoAnswer::CutShort => "cut_short",
            NoAnswer::NotSent(r) => r.as_str(),
            NoAnswer::TooBig { .. } => "too_big",
        }
    }

    pub fn kind(self) -> NoAnswerKind {
        match self {
            NoAnswer::Timeout => NoAnswerKind::Timeout,
            NoAnswer::RateLimited => NoAnswerKind::RateLimited,
            NoAnswer::CutShort => NoAnswerKind::CutShort,
            NoAnswer::NotSent(_) => NoAnswerKind::NotSent,
            NoAnswer::TooBig { .. } => NoAnswerKind::TooBig,
        }
    }

    pub fn not_sent_reason(self) -> Option<NotSentReason> {
        match self {
            NoAnswer::NotSent(r) => Some(r),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoAnswerKind {
    Timeout,
    RateLimited,
    CutShort,
    NotSent,
    TooBig,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotSentReason {
    /// The router's ICMP budget would not allow it before the deadline.
    RouterBudget,
    /// The process-wide probe rate would not allow it before the deadline.
    ProbeRate,
    /// The trace ended first.
    Deadline,
}

impl NotSentReason {
    pub fn as_str(self) -> &'static str {
        match self {
            NotSentReason::RouterBudget => "router_budget",
            NotSentReason::ProbeRate => "probe_rate",
            NotSentReason::Deadline => "deadline",
        }
    }
}

/// Extra: who observed a shared hop, and how long before this trace used it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SharedHop {
    pub test_run_id: Uuid,
    pub run_id: Uuid,
    pub protocol: Protocol,
    pub destination: IpAddr,
    /// Source port of the observing flow (ICMP: its echo identifier).
    pub flow_id: u16,
    /// Milliseconds between the observation and its use.
    pub age: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HopCount {
    pub avg: f64,
    pub min: u32,
    pub max: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct E2eProbe {
    /// One RTT (ms) per probe counted in `packets_sent`, in sending order;
    /// `0` for a probe lost (as the Go client has it).
    pub rtts: Vec<f64>,
    /// Probes that were sent and given their full wait (a probe never sent,
    /// or cut short by the deadline, is no sample).
    pub packets_sent: u32,
    pub packets_received: u32,
    /// Despite the name, a fraction from 0 to 1 (the Go client's meaning).
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

/// The capture that ran (its one name is defined by the capture).
pub use crate::capture::CaptureMethod;
use crate::capture::Stamp;

/// How a TCP destination answered a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TcpAnswer {
    /// SYN-ACK: the port is open.
    SynAck,
    /// RST: the port is closed.
    Rst,
    /// A (duplicate) ACK inside the `sack` connection: the port is open.
    Ack,
}

impl TcpAnswer {
    /// The name the record uses.
    pub fn as_str(self) -> &'static str {
        match self {
            TcpAnswer::SynAck => "syn_ack",
            TcpAnswer::Rst => "rst",
            TcpAnswer::Ack => "ack",
        }
    }

    /// Whether the answer says the port accepts connections.
    pub fn port_open(self) -> bool {
        !matches!(self, TcpAnswer::Rst)
    }
}

/// Where an RTT's two timestamps were taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestampSource {
    /// In the kernel, by the eBPF programs, on both probe and reply (the
    /// reply's when its program ran: the stack had stamped nothing).
    Kernel,
    /// The probe by the eBPF egress program; the reply by the stack's own
    /// receive stamp, taken when the packet was queued (before the softirq
    /// that runs the ingress program), which that program read.
    KernelReceive,
    /// On the packet socket (reply) and before the send call (probe).
    Socket,
    /// In user space around the system calls (`tcp_method=syn_socket`).
    User,
}

impl TimestampSource {
    /// Where an answer's RTT was stamped: by a capture of `method`, the reply
    /// stamped as `stamp` says.
    pub fn of(method: CaptureMethod, stamp: Stamp) -> TimestampSource {
        match (method, stamp) {
            (CaptureMethod::Ebpf, Stamp::Stack) => TimestampSource::KernelReceive,
            (method, _) => method.into(),
        }
    }
}

impl From<CaptureMethod> for TimestampSource {
    fn from(method: CaptureMethod) -> TimestampSource {
        match method {
            CaptureMethod::Ebpf => TimestampSource::Kernel,
            CaptureMethod::Socket => TimestampSource::Socket,
        }
    }
}

/// Extra: top-level capture facts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureInfo {
    pub method: CaptureMethod,
}

/// One MPLS label stack entry from an ICMP extension (RFC 4950).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MplsLabel {
    /// 20-bit label value.
    pub label: u32,
    /// Traffic class (formerly EXP) bits.
    pub exp: u8,
    /// Bottom-of-stack flag.
    pub bottom_of_stack: bool,
    /// TTL of the label stack entry.
    pub ttl: u8,
}

/// One interface a router described in an ICMP error (RFC 5837): each part
/// only when the router gave it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InterfaceInfo {
    pub role: InterfaceRole,
    /// The router's ifIndex of the interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifindex: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    /// Its name as the router spells it (control characters replaced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// Which interface of the router an [`InterfaceInfo`] is (RFC 5837 §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InterfaceRole {
    /// The interface the probe arrived on.
    Incoming,
    /// A component below IP of that interface (a bundle member, say).
    IncomingSubIp,
    /// The interface the probe would have left by.
    Outgoing,
    /// The next hop the probe would have been sent to.
    NextHop,
}

impl InterfaceRole {
    /// Its short name in the table's `-e` view.
    pub fn short(self) -> &'static str {
        match self {
            InterfaceRole::Incoming => "in",
            InterfaceRole::IncomingSubIp => "in-sub",
            InterfaceRole::Outgoing => "out",
            InterfaceRole::NextHop => "next",
        }
    }
}

/// `Option<IpAddr>` as a string, `""` for `None`: the contract's silent hop.
pub(super) mod ip_or_empty {
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

/// Extra: the graph of a multi-flow trace (`paths` or `multipath=mda`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PathGraph {
    /// `flows` (a fixed number of flows) or `mda`.
    pub method: String,
    /// MDA: the confidence asked for (0.95 or 0.99).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// MDA: the stopping rule, `lite` (per TTL where its routers look
    /// alike, else per router) or `full` (per router).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// MDA: the stopping rule held everywhere at that confidence: every
    /// node (or, under the lite rule, every TTL where it applies) got
    /// enough flows to rule out one more next hop (false when the flow
    /// budget ran out first).
    pub complete: bool,
    pub flows: u32,
    pub nodes: Vec<GraphNode>,
    pub links: Vec<GraphLink>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GraphNode {
    pub id: usize,
    /// 0 for this host.
    pub ttl: u8,
    /// `""` for a silent position.
    #[serde(with = "ip_or_empty")]
    pub ip_address: Option<IpAddr>,
    pub silent: bool,
    pub destination: bool,
    /// Flows that crossed it.
    pub flows: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt: Option<RttStats>,
    /// Share of the attempts that reached it and got no answer.
    pub loss: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GraphLink {
    pub from: usize,
    pub to: usize,
    /// Flow identifiers (source ports; ICMP: echo identifiers) that took it.
    pub flows: Vec<u16>,
    /// RTTs of the far end, for these flows only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt: Option<RttStats>,
    pub loss: f64,
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}
