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

/// A per-flow secret mixed into every field that identifies a probe, so an
/// off-path sender who knows (or sweeps) our ports and the probe numbering
/// still has to guess 32 bits to plant a reply (a TCP flow whose ids are kept
/// in order, [`FlowSecret::with_ids_in_order`], gives up a few of them).
///
/// Only fields that load balancers do not hash carry it (Paris):
/// - the identity field (UDP checksum, echo sequence, low half of the TCP
///   sequence) holds the [`ProbeId`] shifted by a 16-bit key
///   ([`FlowSecret::encode`]);
/// - the IPv4 ID holds the [`ProbeId`] XOR a second 16-bit key, and routers
///   quote the IP header in full;
/// - UDP and echo payloads carry a 32-bit token (checked whenever it is
///   quoted or echoed; ICMPv6 errors and echo replies always include it);
/// - TCP's sequence number carries a 16-bit salt in its high half (the low
///   16 bits of the token: a TCP probe has no payload).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowSecret(u64);

impl FlowSecret {
    /// No secret: wire fields equal the plain [`ProbeId`] (tests, captures).
    pub const ZERO: FlowSecret = FlowSecret(0);

    /// A given secret (tests, reproducible captures).
    #[cfg(any(test, feature = "internals"))]
    pub const fn from_bits(bits: u64) -> Self {
        Self(bits)
    }

    /// A fresh secret from the kernel's entropy pool.
    pub fn random() -> Self {
        // Without an entropy source the clock still differs per trace; an
        // attacker who can predict it is on the host already.
        Self(getrandom::u64().unwrap_or_else(|_| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        }))
    }

    /// This secret with its identity shift narrowed so that every probe id up
    /// to `highest` encodes without wrapping: encoded ids then grow with the
    /// probe ids, and so do TCP sequence numbers.
    ///
    /// Why: a destination that lost the RST for an earlier SYN of the flow
    /// still holds that half-open request. A later SYN in its window makes it
    /// drop the request and answer; one below it (after a wrap) gets nothing
    /// until the request expires, which reads as loss that is not there.
    /// The shift keeps log2(65535 - highest) bits (over 15 for 100 queries).
    pub const fn with_ids_in_order(self, highest: ProbeId) -> Self {
        let room = ID_CYCLE + 1 - highest.0 as u32;
        let shift = self.id_shift() % room;
        Self(self.0 & !0xffff | shift as u64)
    }

    /// Shift of the identity field, in 0..65535 (the field's nonzero values
    /// form a cycle of 65535).
    const fn id_shift(self) -> u32 {
        (self.0 & 0xffff) as u32 % ID_CYCLE
    }

    const fn ip_id_key(self) -> u16 {
        (self.0 >> 16) as u16
    }

    /// The high half of every TCP probe's sequence number.
    pub const fn salt(self) -> u16 {
        (self.0 >> 32) as u16
    }

    /// The token in UDP and echo probe payloads.
    pub const fn token(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The identity field for `id`: never 0, like the id itself (a UDP
    /// checksum of 0 means "none").
    pub const fn encode(self, id: ProbeId) -> u16 {
        ((id.0 as u32 - 1 + self.id_shift()) % ID_CYCLE + 1) as u16
    }

    /// The probe an identity field names, if it can be one of ours.
    pub const fn decode(self, wire: u16) -> Option<ProbeId> {
        if wire == 0 {
            return None;
        }
        let raw = (wire as u32 - 1 + ID_CYCLE - self.id_shift()) % ID_CYCLE + 1;
        ProbeId::from_raw(raw as u16)
    }

    /// The IPv4 ID of probe `id`.
    pub const fn ip_id(self, id: ProbeId) -> u16 {
        id.0 ^ self.ip_id_key()
    }

    /// The probe an IPv4 ID names (when a router quoted too little of the
    /// transport header for the identity field).
    pub const fn probe_of_ip_id(self, ip_id: u16) -> Option<ProbeId> {
        ProbeId::from_raw(ip_id ^ self.ip_id_key())
    }
}

/// Nonzero 16-bit values.
const ID_CYCLE: u32 = 0xffff;

/// The sequence number of a TCP probe: the flow's salt in the high half and
/// the encoded [`ProbeId`] in the low half.
///
/// Why the salt: SYN-ACKs and RSTs are matched on `ack - 1`; without a salt,
/// a stray segment of an unrelated connection between the same ports could
/// alias a probe, and an off-path sender could guess it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TcpSeq(pub u32);

impl TcpSeq {
    pub const fn new(secret: FlowSecret, id: ProbeId) -> Self {
        Self((secret.salt() as u32) << 16 | secret.encode(id) as u32)
    }

    /// The sequence number our SYN had, from the acknowledgment number of a
    /// SYN-ACK or RST answering it (a SYN consumes one sequence number).
    pub const fn from_ack(ack: u32) -> Self {
        Self(ack.wrapping_sub(1))
    }

    pub const fn salt(self) -> u16 {
        (self.0 >> 16) as u16
    }

    /// The identity field (see [`FlowSecret::decode`]).
    pub const fn wire_id(self) -> u16 {
        self.0 as u16
    }
}
