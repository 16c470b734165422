//! Userspace twin of the kernel classifier (traceroute-ebpf `classify.rs`), used
//! by the socket fallback: same rules, same [`FlowKey`]s. A test runs both on the
//! same packets so they cannot drift apart.

use traceroute_common::{Direction, EventKind, FlowKey, icmp, proto, tcp};

struct Ip {
    version: u8,
    protocol: u8,
    l4: usize,
}

fn be16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(off)?, *b.get(off + 1)?]))
}

fn ip_header(b: &[u8], off: usize, outer: bool) -> Option<Ip> {
    let first = *b.get(off)?;
    match first >> 4 {
        4 => {
            let ihl = usize::from(first & 0x0f) * 4;
            if ihl < 20 {
                return None;
            }
            if outer && be16(b, off + 6)? & 0x3fff != 0 {
                return None;
            }
            Some(Ip {
                version: 4,
                protocol: *b.get(off + 9)?,
                l4: off + ihl,
            })
        }
        6 => Some(Ip {
            version: 6,
            protocol: *b.get(off + 6)?,
            l4: off + 40,
        }),
        _ => None,
    }
}

fn address(b: &[u8], off: usize, version: u8, src: bool) -> Option<[u8; 16]> {
    let mut out = [0u8; 16];
    if version == 4 {
        let at = off + if src { 12 } else { 16 };
        out[..4].copy_from_slice(b.get(at..at + 4)?);
    } else {
        let at = off + if src { 8 } else { 24 };
        out.copy_from_slice(b.get(at..at + 16)?);
    }
    Some(out)
}

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

/// The flow a packet (bytes from the IP header on) belongs to, if it can be one
/// of ours, and what it is. `tcp_acks`: bare TCP ACKs count (a trace probes
/// inside a connection), as the kernel's `Setting::TcpAcks`.
pub fn classify(b: &[u8], direction: Direction, tcp_acks: bool) -> Option<(EventKind, FlowKey)> {
    let ip = ip_header(b, 0, true)?;
    match direction {
        Direction::Egress => probe(b, &ip, tcp_acks).map(|k| (EventKind::Probe, k)),
        Direction::Ingress => match (ip.version, ip.protocol) {
            (4, proto::ICMP) | (6, proto::ICMPV6) => icmp(b, &ip),
            (_, proto::TCP) => tcp(b, &ip, tcp_acks),
            _ => None,
        },
    }
}

/// The flow of a transport header at `l4` of a packet to `dst` (a probe or a quoted probe).
fn transport_flow(b: &[u8], ip: &Ip, dst: [u8; 16]) -> Option<FlowKey> {
    match ip.protocol {
        proto::TCP | proto::UDP => Some(key(
            dst,
            ip.version,
            ip.protocol,
            be16(b, ip.l4)?,
            be16(b, ip.l4 + 2)?,
        )),
        proto::ICMP | proto::ICMPV6 if *b.get(ip.l4)? == icmp::echo_request(ip.version) => {
            Some(key(dst, ip.version, ip.protocol, be16(b, ip.l4 + 4)?, 0))
        }
        _ => None,
    }
}

fn probe(b: &[u8], ip: &Ip, tcp_acks: bool) -> Option<FlowKey> {
    // TCP probes are bare SYNs, or bare ACKs inside a connection.
    if ip.protocol == proto::TCP {
        let flags = *b.get(ip.l4 + tcp::FLAGS_OFFSET)?;
        if !(tcp::is_bare_syn(flags) || tcp_acks && tcp::is_bare_ack(flags)) {
            return None;
        }
    }
    transport_flow(b, ip, address(b, 0, ip.version, false)?)
}

fn icmp(b: &[u8], ip: &Ip) -> Option<(EventKind, FlowKey)> {
    let ty = *b.get(ip.l4)?;
    let kind = icmp::reply_kind(ip.version, ty)?;
    if kind == EventKind::EchoReply {
        let src = address(b, 0, ip.version, true)?;
        let ident = be16(b, ip.l4 + 4)?;
        return Some((kind, key(src, ip.version, ip.protocol, ident, 0)));
    }
    let inner_off = ip.l4 + icmp::HEADER_LEN;
    let inner = ip_header(b, inner_off, false)?;
    if inner.version != ip.version {
        return None;
    }
    let dst = address(b, inner_off, inner.version, false)?;
    Some((kind, transport_flow(b, &inner, dst)?))
}

fn tcp(b: &[u8], ip: &Ip, tcp_acks: bool) -> Option<(EventKind, FlowKey)> {
    let flags = *b.get(ip.l4 + tcp::FLAGS_OFFSET)?;
    let kind = match tcp::reply_kind(flags) {
        Some(kind) => kind,
        None if tcp_acks && tcp::is_bare_ack(flags) => EventKind::TcpAck,
        None => return None,
    };
    let src = address(b, 0, ip.version, true)?;
    let sport = be16(b, ip.l4)?;
    let dport = be16(b, ip.l4 + 2)?;
    Some((kind, key(src, ip.version, ip.protocol, dport, sport)))
}
