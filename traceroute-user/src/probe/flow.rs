//! A probe flow: the fields every probe of one path measurement shares.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};
use traceroute_common::{FlowKey, proto};

use super::id::{FlowSecret, Port};
use crate::error::UnknownName;

/// Transport of the probes. Serialized as in `NetworkPath` records: "TCP", "UDP", "ICMP".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    /// TCP SYN probes.
    Tcp,
    /// UDP datagrams.
    Udp,
    /// ICMP / ICMPv6 echo requests.
    Icmp,
}

impl Protocol {
    /// The destination port used when the caller names none (the system-probe
    /// defaults); ICMP has no port.
    pub const fn default_port(self) -> Option<Port> {
        match self {
            Protocol::Tcp => Some(Port(80)),
            Protocol::Udp => Some(Port(33434)),
            Protocol::Icmp => None,
        }
    }

    /// IP protocol number of the probes for the given IP version.
    pub const fn ip_number(self, ipv6: bool) -> u8 {
        match (self, ipv6) {
            (Protocol::Tcp, _) => proto::TCP,
            (Protocol::Udp, _) => proto::UDP,
            (Protocol::Icmp, false) => proto::ICMP,
            (Protocol::Icmp, true) => proto::ICMPV6,
        }
    }

    /// The name used in `NetworkPath` records and the HTTP API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Icmp => "ICMP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `tcp`, `udp`, `icmp`, any case: the one parser of the CLI, the API and
/// the config.
impl std::str::FromStr for Protocol {
    type Err = UnknownName;

    fn from_str(text: &str) -> Result<Protocol, UnknownName> {
        match text.to_ascii_uppercase().as_str() {
            "TCP" => Ok(Protocol::Tcp),
            "UDP" => Ok(Protocol::Udp),
            "ICMP" => Ok(Protocol::Icmp),
            _ => Err(UnknownName::new("protocol", text, "TCP, UDP or ICMP")),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProbeError {
    #[error("source {local} and destination {remote} are not of the same IP family")]
    FamilyMismatch { local: IpAddr, remote: IpAddr },
    #[error(
        "{protocol} probes cannot be {size} bytes (they are {min} bytes at least; TCP SYN probes are not padded)"
    )]
    Size {
        protocol: Protocol,
        size: u16,
        min: u16,
    },
}

/// One Paris flow: what stays constant across every TTL and attempt.
///
/// Built with [`ProbeFlow::tcp`], [`ProbeFlow::udp`] or [`ProbeFlow::icmp`],
/// which guarantee both addresses share a family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProbeFlow {
    protocol: Protocol,
    source: IpAddr,
    destination: IpAddr,
    /// Source port (TCP/UDP) or echo identifier (ICMP).
    local: u16,
    /// Destination port (TCP/UDP); 0 for ICMP.
    remote: u16,
    secret: FlowSecret,
    /// Zero bytes after the payload (UDP and ICMP), for probes of a given
    /// size (path MTU discovery).
    padding: u16,
    /// TCP: probes are segments of this established connection instead of
    /// SYNs (see [`super::sack`]).
    connection: Option<super::sack::Connection>,
}

impl ProbeFlow {
    /// TCP SYN probes from `source` to `destination`. The secret starts at
    /// [`FlowSecret::ZERO`]; set a random one with [`ProbeFlow::with_secret`].
    pub fn tcp(source: SocketAddr, destination: SocketAddr) -> Result<Self, ProbeError> {
        Self::new(
            Protocol::Tcp,
            source.ip(),
            destination.ip(),
            source.port(),
            destination.port(),
        )
    }

    /// UDP probes from `source` to `destination`.
    pub fn udp(source: SocketAddr, destination: SocketAddr) -> Result<Self, ProbeError> {
        Self::new(
            Protocol::Udp,
            source.ip(),
            destination.ip(),
            source.port(),
            destination.port(),
        )
    }

    /// ICMP (v4 or v6) echo requests with echo identifier `identifier`.
    pub fn icmp(source: IpAddr, destination: IpAddr, identifier: u16) -> Result<Self, ProbeError> {
        Self::new(Protocol::Icmp, source, destination, identifier, 0)
    }

    fn new(
        protocol: Protocol,
        source: IpAddr,
        destination: IpAddr,
        local: u16,
        remote: u16,
    ) -> Result<Self, ProbeError> {
        if source.is_ipv4() != destination.is_ipv4() {
            return Err(ProbeError::FamilyMismatch {
                local: source,
                remote: destination,
            });
        }
        Ok(Self {
            protocol,
            source,
            destination,
            local,
            remote,
            secret: FlowSecret::ZERO,
            padding: 0,
            connection: None,
        })
    }

    /// The same TCP flow, probing inside `connection` (see [`super::sack`]).
    pub fn in_connection(mut self, connection: super::sack::Connection) -> Self {
        debug_assert_eq!(self.protocol, Protocol::Tcp);
        self.connection = Some(connection);
        self
    }

    /// The connection TCP probes ride in, if any.
    pub fn connection(&self) -> Option<super::sack::Connection> {
        self.connection
    }

    /// The same flow with probes of `size` bytes in all (IP header
    /// included), padded with zeros: UDP and ICMP only.
    pub fn with_size(mut self, size: u16) -> Result<Self, ProbeError> {
        self.padding = 0;
        let min = super::probe_len(&self);
        if self.protocol == Protocol::Tcp && size != min || size < min {
            return Err(ProbeError::Size {
                protocol: self.protocol,
                size,
                min,
            });
        }
        self.padding = size - min;
        Ok(self)
    }

    /// Zero bytes after the payload.
    pub fn padding(&self) -> u16 {
        self.padding
    }

    /// Sets the secret every probe of the flow carries (see [`FlowSecret`]).
    pub fn with_secret(mut self, secret: FlowSecret) -> Self {
        self.secret = secret;
        self
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    pub fn source(&self) -> IpAddr {
        self.source
    }

    pub fn destination(&self) -> IpAddr {
        self.destination
    }

    pub fn is_ipv6(&self) -> bool {
        self.destination.is_ipv6()
    }

    /// Our port (TCP/UDP); `None` for ICMP.
    pub fn source_port(&self) -> Option<Port> {
        (self.protocol != Protocol::Icmp).then_some(Port(self.local))
    }

    /// The destination port (TCP/UDP); `None` for ICMP.
    pub fn destination_port(&self) -> Option<Port> {
        (self.protocol != Protocol::Icmp).then_some(Port(self.remote))
    }

    /// The echo identifier (ICMP); `None` for TCP/UDP.
    pub fn icmp_identifier(&self) -> Option<u16> {
        (self.protocol == Protocol::Icmp).then_some(self.local)
    }

    pub fn secret(&self) -> FlowSecret {
        self.secret
    }

    /// IP protocol number of the probes.
    pub fn ip_number(&self) -> u8 {
        self.protocol.ip_number(self.is_ipv6())
    }

    /// The key under which the capture program and reply decoding know this flow.
    pub fn flow_key(&self) -> FlowKey {
        let ip_number = self.ip_number();
        match self.destination {
            IpAddr::V4(a) => FlowKey::v4(a.octets(), ip_number, self.local, self.remote),
            IpAddr::V6(a) => FlowKey::v6(a.octets(), ip_number, self.local, self.remote),
        }
    }
}
