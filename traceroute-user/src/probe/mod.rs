//! Crafting Paris-safe probes.
//!
//! A [`ProbeFlow`] fixes everything a load balancer may hash (addresses,
//! protocol, ports, ICMP type/code/identifier/checksum, IPv6 flow label), so
//! all probes of a flow follow one path. [`build_probe`] then encodes the
//! probe's identity ([`ProbeId`]: TTL + attempt) only in fields nobody hashes
//! and that survive an ICMP error quoting just 8 bytes of transport header:
//!
//! | protocol | where the [`ProbeId`] goes |
//! |---|---|
//! | TCP SYN | sequence number = `salt << 16 \| encode(id)` ([`TcpSeq`]) |
//! | UDP | UDP checksum = `encode(id)` (two payload bytes make it so), then the token |
//! | ICMP echo | sequence number = `encode(id)` (two payload bytes keep the checksum constant), then the token |
//! | IPv4, any | IP identification = `id ^ key` (checked on every reply; the fallback for very short quotes) |
//!
//! `encode`, `key`, the salt and the token come from the flow's
//! [`FlowSecret`], so that a reply must carry at least 32 secret bits.

mod build;
mod flow;
mod id;
pub mod sack;

#[cfg(test)]
pub use build::ICMP_PAYLOAD_LEN;
pub use build::{PROBE_TOS, TOKEN_OFFSET, build_probe, probe_len};
pub use flow::{ProbeFlow, Protocol};
pub use id::{FlowSecret, ProbeId, TcpSeq, Ttl};

#[cfg(test)]
mod tests;
