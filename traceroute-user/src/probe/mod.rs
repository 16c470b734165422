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
//! | TCP SYN | sequence number = `salt << 16 \| id` ([`TcpSeq`]) |
//! | UDP | UDP checksum = `id` (two payload bytes make it so) |
//! | ICMP echo | sequence number = `id` (two payload bytes keep the checksum constant) |
//! | IPv4, any | IP identification = `id` (fallback for very short quotes) |

mod build;
mod flow;
mod id;

pub use build::{ICMP_PAYLOAD_LEN, TCP_WINDOW, UDP_PAYLOAD_LEN, build_probe};
pub use flow::{ProbeError, ProbeFlow, Protocol};
pub use id::{InvalidTtl, Port, ProbeId, TcpSeq, Ttl};

#[cfg(test)]
mod tests;
