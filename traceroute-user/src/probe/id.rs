//! Small quantities of a probe: TTL, port, probe identity.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An IPv4 TTL / IPv6 hop limit a probe is sent with: 1..=255.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Ttl(u8);

impl Ttl {
    pub const MIN: Ttl = Ttl(1);
    pub const MAX: Ttl = Ttl(255);

    /// `None` for 0: a packet with TTL 0 never leaves the host.
    pub const fn new(value: u8) -> Option<Self> {
        if value == 0 { None } else { Some(Self(value)) }
    }

    pub const fn get(self) -> u8 {
        self.0
    }

    /// All TTLs from `first` to `last`, inclusive.
    pub fn range(first: Ttl, last: Ttl) -> impl Iterator<Item = Ttl> {
        (first.0..=last.0).map(Ttl)
    }
}

/// Why a TTL was rejected (serde reports it when reading records).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("TTL must be 1..=255, got {0}")]
pub struct InvalidTtl(pub u8);

impl TryFrom<u8> for Ttl {
    type Error = InvalidTtl;
    fn try_from(value: u8) -> Result<Self, InvalidTtl> {
        Self::new(value).ok_or(InvalidTtl(value))
    }
}

impl From<Ttl> for u8 {
    fn from(ttl: Ttl) -> u8 {
        ttl.0
    }
}

impl fmt::Display for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A TCP or UDP port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Port(pub u16);

impl Port {
    pub const fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Identity of one probe within its flow: `attempt << 8 | ttl`.
///
/// The TTL sits in the low byte and is never 0, so a `ProbeId` is never 0
/// either — which matters because a UDP checksum of 0 means "no checksum".
/// Attempts beyond 255 wrap: a tracer never sends that many per TTL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProbeId(u16);

impl ProbeId {
    pub const fn new(ttl: Ttl, attempt: u8) -> Self {
        Self((attempt as u16) << 8 | ttl.0 as u16)
    }

    /// Decodes a value read from a packet; `None` when its TTL byte is 0
    /// (then it is not one of ours).
    pub const fn from_raw(raw: u16) -> Option<Self> {
        if raw & 0xff == 0 {
            None
        } else {
            Some(Self(raw))
        }
    }

    pub const fn raw(self) -> u16 {
        self.0
    }

    pub const fn ttl(self) -> Ttl {
        Ttl(self.0 as u8)
    }

    pub const fn attempt(self) -> u8 {
        (self.0 >> 8) as u8
    }
}

impl fmt::Display for ProbeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ttl {} attempt {}", self.ttl(), self.attempt())
    }
}

/// The sequence number of a TCP probe: a per-flow salt in the high half and
/// the [`ProbeId`] in the low half.
///
/// Why the salt: SYN-ACKs and RSTs are matched on `ack - 1`; without a salt,
/// a stray segment of an unrelated connection between the same ports could
/// alias a probe. The caller compares [`TcpSeq::salt`] with its flow's salt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TcpSeq(pub u32);

impl TcpSeq {
    pub const fn new(salt: u16, id: ProbeId) -> Self {
        Self((salt as u32) << 16 | id.0 as u32)
    }

    /// The sequence number our SYN had, from the acknowledgment number of a
    /// SYN-ACK or RST answering it (a SYN consumes one sequence number).
    pub const fn from_ack(ack: u32) -> Self {
        Self(ack.wrapping_sub(1))
    }

    pub const fn salt(self) -> u16 {
        (self.0 >> 16) as u16
    }

    pub const fn probe_id(self) -> Option<ProbeId> {
        ProbeId::from_raw(self.0 as u16)
    }
}
