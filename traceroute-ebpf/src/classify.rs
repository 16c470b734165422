//! Decides whether a packet can belong to one of our probe flows, and which.
//!
//! Only header fields are read, each with a bounds-checked load: a truncated,
//! fragmented or malformed packet simply does not classify. The userspace socket
//! fallback mirrors this logic (traceroute-user `capture::classify`); tests run
//! both on the same packets.

use aya_ebpf::programs::TcContext;
use traceroute_common::{Counter, Direction, EventKind, FlowKey, icmp, proto, tcp};

use crate::maps::count;

/// A packet that names a probe flow.
pub struct Match {
    pub kind: EventKind,
    pub flow: FlowKey,
    pub ip_version: u8,
}

/// The IP-level facts of a header.
struct Ip {
    version: u8,
    protocol: u8,
    /// Offset of the transport header.
    l4: u32,
}

const IPV6_HDR_LEN: u32 = 40;
const ICMP_HDR_LEN: u32 = icmp::HEADER_LEN as u32;
const TCP_FLAGS: u32 = tcp::FLAGS_OFFSET as u32;

#[inline(always)]
fn load<T>(ctx: &TcContext, off: u32) -> Option<T> {
    ctx.load::<T>(off as usize).ok()
}

#[inline(always)]
fn be16(ctx: &TcContext, off: u32) -> Option<u16> {
    load::<u16>(ctx, off).map(u16::from_be)
}

/// Reads an IP header at `off`. `outer` decides whether fragments are counted.
#[inline(always)]
fn ip_header(ctx: &TcContext, off: u32, outer: bool) -> Option<Ip> {
    let first: u8 = load(ctx, off)?;
    match first >> 4 {
        4 => {
            let ihl = u32::from(first & 0x0f) * 4;
            if ihl < 20 {
                if outer {
                    count(Counter::Malformed);
                }
                return None;
            }
            // Non-first fragments carry no transport header; first fragments of
            // ours never happen (probes are small and set DF on IPv4 anyway).
            let frag = be16(ctx, off + 6)?;
            if frag & 0x3fff != 0 && outer {
                count(Counter::Fragments);
                return None;
            }
            Some(Ip {
                version: 4,
                protocol: load(ctx, off + 9)?,
                l4: off + ihl,
            })
        }
        6 => Some(Ip {
            version: 6,
            protocol: load(ctx, off + 6)?,
            l4: off + IPV6_HDR_LEN,
        }),
        _ => {
            if outer {
                count(Counter::Malformed);
            }
            None
        }
    }
}

/// Source (`src == true`) or destination address of the IP header at `off`.
#[inline(always)]
fn address(ctx: &TcContext, off: u32, version: u8, src: bool) -> Option<[u8; 16]> {
    let mut out = [0u8; 16];
    if version == 4 {
        let a: [u8; 4] = load(ctx, off + if src { 12 } else { 16 })?;
        out[..4].copy_from_slice(&a);
    } else {
        out = load(ctx, off + if src { 8 } else { 24 })?;
    }
    Some(out)
}

#[inline(always)]
fn key(addr: [u8; 16], version: u8, protocol: u8, local: u16, remote: u16) -> FlowKey {
    FlowKey {
        remote_addr: addr,
        local_port: local,
        remote_port: remote,
        protocol,
        ip_version: version,
        _pad: [0; 2],
    }
}

#[inline(always)]
pub fn classify(ctx: &TcContext, l3: u32, direction: Direction) -> Option<Match> {
    let ip = ip_header(ctx, l3, true)?;
    match direction {
        Direction::Egress => probe(ctx, l3, &ip),
        Direction::Ingress => reply(ctx, l3, &ip),
    }
}

/// One of our probes leaving: TCP, UDP or ICMP echo request to a flow's remote.
#[inline(always)]
fn probe(ctx: &TcContext, l3: u32, ip: &Ip) -> Option<Match> {
    // TCP probes are bare SYNs: every other segment (the bulk of real traffic)
    // is dismissed before any address load or map lookup.
    // While a trace probes inside a connection, its segments (bare ACKs)
    // are probes too.
    if ip.protocol == proto::TCP {
        let flags: u8 = load(ctx, ip.l4 + TCP_FLAGS)?;
        let in_connection = tcp::is_bare_ack(flags) && crate::maps::tcp_acks_wanted();
        if !tcp::is_bare_syn(flags) && !in_connection {
            return None;
        }
    }
    let dst = address(ctx, l3, ip.version, false)?;
    let flow = match ip.protocol {
        proto::TCP | proto::UDP => {
            let sport = be16(ctx, ip.l4)?;
            let dport = be16(ctx, ip.l4 + 2)?;
            key(dst, ip.version, ip.protocol, sport, dport)
        }
        proto::ICMP | proto::ICMPV6 => {
            let ty: u8 = load(ctx, ip.l4)?;
            if ty != icmp::echo_request(ip.version) {
                return None;
            }
            key(dst, ip.version, ip.protocol, be16(ctx, ip.l4 + 4)?, 0)
        }
        _ => return None,
    };
    Some(Match {
        kind: EventKind::Probe,
        flow,
        ip_version: ip.version,
    })
}

/// A reply: ICMP error quoting a probe, echo reply, or TCP SYN-ACK / RST.
#[inline(always)]
fn reply(ctx: &TcContext, l3: u32, ip: &Ip) -> Option<Match> {
    match (ip.version, ip.protocol) {
        (4, proto::ICMP) | (6, proto::ICMPV6) => icmp(ctx, l3, ip),
        (_, proto::TCP) => tcp(ctx, l3, ip),
        _ => None,
    }
}

#[inline(always)]
fn icmp(ctx: &TcContext, l3: u32, ip: &Ip) -> Option<Match> {
    let ty: u8 = load(ctx, ip.l4)?;
    let kind = icmp::reply_kind(ip.version, ty)?;
    if kind == EventKind::EchoReply {
        let src = address(ctx, l3, ip.version, true)?;
        let ident = be16(ctx, ip.l4 + 4)?;
        return Some(Match {
            kind,
            flow: key(src, ip.version, ip.protocol, ident, 0),
            ip_version: ip.version,
        });
    }
    // The quoted probe: its IP header and (at least) 8 bytes of its transport header.
    let inner_off = ip.l4 + ICMP_HDR_LEN;
    let inner = ip_header(ctx, inner_off, false)?;
    if inner.version != ip.version {
        return None;
    }
    let dst = address(ctx, inner_off, inner.version, false)?;
    let flow = match inner.protocol {
        proto::TCP | proto::UDP => {
            let sport = be16(ctx, inner.l4)?;
            let dport = be16(ctx, inner.l4 + 2)?;
            key(dst, inner.version, inner.protocol, sport, dport)
        }
        proto::ICMP | proto::ICMPV6 => {
            let inner_ty: u8 = load(ctx, inner.l4)?;
            if inner_ty != icmp::echo_request(inner.version) {
                return None;
            }
            key(
                dst,
                inner.version,
                inner.protocol,
                be16(ctx, inner.l4 + 4)?,
                0,
            )
        }
        _ => return None,
    };
    Some(Match {
        kind,
        flow,
        ip_version: ip.version,
    })
}

#[inline(always)]
fn tcp(ctx: &TcContext, l3: u32, ip: &Ip) -> Option<Match> {
    let flags: u8 = load(ctx, ip.l4 + TCP_FLAGS)?;
    let kind = match tcp::reply_kind(flags) {
        Some(kind) => kind,
        None if tcp::is_bare_ack(flags) && crate::maps::tcp_acks_wanted() => EventKind::TcpAck,
        None => return None,
    };
    let src = address(ctx, l3, ip.version, true)?;
    let sport = be16(ctx, ip.l4)?;
    let dport = be16(ctx, ip.l4 + 2)?;
    Some(Match {
        kind,
        // Seen from our side: the reply's destination port is our source port.
        flow: key(src, ip.version, ip.protocol, dport, sport),
        ip_version: ip.version,
    })
}
