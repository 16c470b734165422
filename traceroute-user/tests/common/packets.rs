//! Crafted packets for capture tests: probes and every reply kind, for IPv4 and
//! IPv6, plus the awkward ones (short quotes, IP options, fragments, garbage).

#![allow(dead_code)]

use etherparse::PacketBuilder;
use traceroute_common::{EventKind, FlowKey, proto};

pub const SRC4: [u8; 4] = [198, 18, 1, 1];
pub const DST4: [u8; 4] = [198, 18, 9, 9];
pub const HOP4: [u8; 4] = [198, 18, 5, 1];
pub const SRC6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub const DST6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
pub const HOP6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

pub const SPORT: u16 = 40001;
pub const UDP_PORT: u16 = 33434;
pub const TCP_PORT: u16 = 80;
pub const ECHO_ID: u16 = 0x4242;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum V {
    Four,
    Six,
}

macro_rules! build {
    ($builder:expr, $payload:expr) => {{
        let b = $builder;
        let payload: &[u8] = $payload;
        let mut out = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut out, payload).unwrap();
        out
    }};
}

fn ip(v: V, src_is_us: bool, remote: bool, ttl: u8) -> PacketBuilderIp {
    PacketBuilderIp {
        v,
        src_is_us,
        remote,
        ttl,
    }
}

/// Which addresses a packet uses.
pub struct PacketBuilderIp {
    v: V,
    src_is_us: bool,
    remote: bool,
    ttl: u8,
}

impl PacketBuilderIp {
    fn start(&self) -> etherparse::PacketBuilderStep<etherparse::IpHeaders> {
        let them4 = if self.remote { DST4 } else { HOP4 };
        let them6 = if self.remote { DST6 } else { HOP6 };
        match (self.v, self.src_is_us) {
            (V::Four, true) => PacketBuilder::ipv4(SRC4, them4, self.ttl),
            (V::Four, false) => PacketBuilder::ipv4(them4, SRC4, self.ttl),
            (V::Six, true) => PacketBuilder::ipv6(SRC6, them6, self.ttl),
            (V::Six, false) => PacketBuilder::ipv6(them6, SRC6, self.ttl),
        }
    }
}

pub fn flow(v: V, protocol: u8, local: u16, remote: u16) -> FlowKey {
    match v {
        V::Four => FlowKey::v4(DST4, protocol, local, remote),
        V::Six => FlowKey::v6(DST6, protocol, local, remote),
    }
}

pub fn icmp_proto(v: V) -> u8 {
    match v {
        V::Four => proto::ICMP,
        V::Six => proto::ICMPV6,
    }
}

pub fn udp_flow(v: V) -> FlowKey {
    flow(v, proto::UDP, SPORT, UDP_PORT)
}
pub fn tcp_flow(v: V) -> FlowKey {
    flow(v, proto::TCP, SPORT, TCP_PORT)
}
pub fn echo_flow(v: V) -> FlowKey {
    flow(v, icmp_proto(v), ECHO_ID, 0)
}

/// Our UDP probe (bytes from the IP header).
pub fn udp_probe(v: V, ttl: u8) -> Vec<u8> {
    build!(
        ip(v, true, true, ttl).start().udp(SPORT, UDP_PORT),
        &[0xab; 12]
    )
}

/// Our TCP SYN probe.
pub fn tcp_probe(v: V, ttl: u8) -> Vec<u8> {
    build!(
        ip(v, true, true, ttl)
            .start()
            .tcp(SPORT, TCP_PORT, 0x1234_0001, 1024)
            .syn(),
        &[]
    )
}

/// Our echo request probe.
pub fn echo_probe(v: V, ttl: u8) -> Vec<u8> {
    let b = ip(v, true, true, ttl).start();
    match v {
        V::Four => build!(b.icmpv4_echo_request(ECHO_ID, 1), &[0; 8]),
        V::Six => build!(b.icmpv6_echo_request(ECHO_ID, 1), &[0; 8]),
    }
}

/// An ICMP error (`ty`/`code` given per family) from a router or the destination,
/// quoting `quote_len` bytes of `probe`.
pub fn icmp_error(
    v: V,
    ty: u8,
    code: u8,
    probe: &[u8],
    quote_len: usize,
    from_dst: bool,
) -> Vec<u8> {
    let quote = &probe[..quote_len.min(probe.len())];
    let b = ip(v, false, from_dst, 250).start();
    match v {
        V::Four => build!(b.icmpv4_raw(ty, code, [0; 4]), quote),
        V::Six => build!(b.icmpv6_raw(ty, code, [0; 4]), quote),
    }
}

pub fn time_exceeded(v: V, probe: &[u8], quote_len: usize) -> Vec<u8> {
    match v {
        V::Four => icmp_error(v, 11, 0, probe, quote_len, false),
        V::Six => icmp_error(v, 3, 0, probe, quote_len, false),
    }
}

pub fn port_unreachable(v: V, probe: &[u8]) -> Vec<u8> {
    match v {
        V::Four => icmp_error(v, 3, 3, probe, probe.len(), true),
        V::Six => icmp_error(v, 1, 4, probe, probe.len(), true),
    }
}

pub fn admin_prohibited(v: V, probe: &[u8]) -> Vec<u8> {
    match v {
        V::Four => icmp_error(v, 3, 13, probe, 28, false),
        V::Six => icmp_error(v, 1, 1, probe, probe.len(), false),
    }
}

/// A TCP segment from the destination to us with `flags` (SYN-ACK, RST, ACK...).
pub fn tcp_reply(v: V, syn: bool, ack: bool, rst: bool) -> Vec<u8> {
    let mut b = ip(v, false, true, 61)
        .start()
        .tcp(TCP_PORT, SPORT, 777, 1024);
    if syn {
        b = b.syn();
    }
    if ack {
        b = b.ack(0x1234_0002);
    }
    if rst {
        b = b.rst();
    }
    build!(b, &[])
}

pub fn echo_reply(v: V) -> Vec<u8> {
    let b = ip(v, false, true, 60).start();
    match v {
        V::Four => build!(b.icmpv4_echo_reply(ECHO_ID, 1), &[0; 8]),
        V::Six => build!(b.icmpv6_echo_reply(ECHO_ID, 1), &[0; 8]),
    }
}

/// Adds 4 bytes of IPv4 options (NOP NOP NOP EOL) to the IPv4 header at `off`.
pub fn with_ipv4_options(packet: &[u8], off: usize) -> Vec<u8> {
    let ihl = usize::from(packet[off] & 0x0f) * 4;
    let mut out = packet[..off + ihl].to_vec();
    out.extend_from_slice(&[1, 1, 1, 0]);
    out.extend_from_slice(&packet[off + ihl..]);
    out[off] = 0x40 | ((ihl as u8 + 4) / 4);
    let total = u16::from_be_bytes([out[off + 2], out[off + 3]]) + 4;
    out[off + 2..off + 4].copy_from_slice(&total.to_be_bytes());
    fix_ipv4_checksum(&mut out, off);
    out
}

pub fn fix_ipv4_checksum(p: &mut [u8], off: usize) {
    let ihl = usize::from(p[off] & 0x0f) * 4;
    p[off + 10] = 0;
    p[off + 11] = 0;
    let mut sum = 0u32;
    for i in (off..off + ihl).step_by(2) {
        sum += u32::from(u16::from_be_bytes([p[i], p[i + 1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[off + 10..off + 12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

/// Marks an IPv4 packet as a non-first fragment.
pub fn as_fragment(packet: &[u8]) -> Vec<u8> {
    let mut out = packet.to_vec();
    out[6] = 0x20; // MF
    out[7] = 0x10; // offset 16*8
    fix_ipv4_checksum(&mut out, 0);
    out
}

/// Deterministic pseudo-random bytes (xorshift), starting like an IP packet of version `v`.
pub fn garbage(seed: u64, len: usize, version_nibble: u8) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    if let Some(b) = out.first_mut() {
        *b = (version_nibble << 4) | (*b & 0x0f);
    }
    out
}

/// Wraps an IP packet in an Ethernet header, as TC sees it on a veth.
pub fn ethernet(packet: &[u8]) -> Vec<u8> {
    let ethertype: u16 = match packet.first().map(|b| b >> 4) {
        Some(6) => 0x86dd,
        _ => 0x0800,
    };
    let mut out = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    out.extend_from_slice(&ethertype.to_be_bytes());
    out.extend_from_slice(packet);
    out
}

/// A named packet and what the capture must make of it.
pub struct Case {
    pub name: String,
    pub packet: Vec<u8>,
    pub egress: bool,
    /// `Some((kind, flow))` when it must be captured for `flow`.
    pub expect: Option<(EventKind, FlowKey)>,
}

fn case(
    name: &str,
    v: V,
    packet: Vec<u8>,
    egress: bool,
    expect: Option<(EventKind, FlowKey)>,
) -> Case {
    Case {
        name: format!("{name} ({v:?})"),
        packet,
        egress,
        expect,
    }
}

/// The corpus. Flows named in `expect` are registered by the tests.
pub fn corpus() -> Vec<Case> {
    use EventKind::*;
    let mut cases = Vec::new();
    for v in [V::Four, V::Six] {
        let udp = udp_probe(v, 3);
        let tcp = tcp_probe(v, 3);
        let echo = echo_probe(v, 3);
        let ip_len = if v == V::Four { 20 } else { 40 };
        cases.push(case(
            "udp probe",
            v,
            udp.clone(),
            true,
            Some((Probe, udp_flow(v))),
        ));
        cases.push(case(
            "tcp probe",
            v,
            tcp.clone(),
            true,
            Some((Probe, tcp_flow(v))),
        ));
        cases.push(case(
            "echo probe",
            v,
            echo.clone(),
            true,
            Some((Probe, echo_flow(v))),
        ));
        cases.push(case("echo reply on egress", v, echo_reply(v), true, None));
        // Our kernel's RST answering a SYN-ACK, and data of the flow: not probes.
        let ours = |syn: bool, ack: bool, rst: bool| {
            let mut b = ip(v, true, true, 64).start().tcp(SPORT, TCP_PORT, 5, 1024);
            if syn {
                b = b.syn();
            }
            if ack {
                b = b.ack(778);
            }
            if rst {
                b = b.rst();
            }
            build!(b, &[1, 2, 3])
        };
        cases.push(case(
            "outgoing rst of the flow",
            v,
            ours(false, true, true),
            true,
            None,
        ));
        cases.push(case(
            "outgoing ack of the flow",
            v,
            ours(false, true, false),
            true,
            None,
        ));
        cases.push(case(
            "outgoing syn-ack of the flow",
            v,
            ours(true, true, false),
            true,
            None,
        ));
        cases.push(case(
            "time exceeded, udp, 8-byte quote",
            v,
            time_exceeded(v, &udp, ip_len + 8),
            false,
            Some((TimeExceeded, udp_flow(v))),
        ));
        cases.push(case(
            "time exceeded, udp, full quote",
            v,
            time_exceeded(v, &udp, udp.len()),
            false,
            Some((TimeExceeded, udp_flow(v))),
        ));
        cases.push(case(
            "time exceeded, tcp",
            v,
            time_exceeded(v, &tcp, ip_len + 8),
            false,
            Some((TimeExceeded, tcp_flow(v))),
        ));
        cases.push(case(
            "time exceeded, echo",
            v,
            time_exceeded(v, &echo, ip_len + 8),
            false,
            Some((TimeExceeded, echo_flow(v))),
        ));
        // Ports alone name the flow; the probe id then comes from the IPv4 ID (or not at all).
        cases.push(case(
            "time exceeded, 4-byte quote",
            v,
            time_exceeded(v, &udp, ip_len + 4),
            false,
            Some((TimeExceeded, udp_flow(v))),
        ));
        cases.push(case(
            "time exceeded, 2-byte quote",
            v,
            time_exceeded(v, &udp, ip_len + 2),
            false,
            None,
        ));
        cases.push(case(
            "time exceeded, quote without transport",
            v,
            time_exceeded(v, &udp, ip_len),
            false,
            None,
        ));
        cases.push(case(
            "port unreachable",
            v,
            port_unreachable(v, &udp),
            false,
            Some((DestUnreachable, udp_flow(v))),
        ));
        cases.push(case(
            "admin prohibited",
            v,
            admin_prohibited(v, &tcp),
            false,
            Some((DestUnreachable, tcp_flow(v))),
        ));
        cases.push(case(
            "syn-ack",
            v,
            tcp_reply(v, true, true, false),
            false,
            Some((TcpSynAck, tcp_flow(v))),
        ));
        cases.push(case(
            "rst",
            v,
            tcp_reply(v, false, true, true),
            false,
            Some((TcpRst, tcp_flow(v))),
        ));
        cases.push(case(
            "plain ack",
            v,
            tcp_reply(v, false, true, false),
            false,
            None,
        ));
        cases.push(case(
            "bare syn",
            v,
            tcp_reply(v, true, false, false),
            false,
            None,
        ));
        cases.push(case(
            "echo reply",
            v,
            echo_reply(v),
            false,
            Some((EchoReply, echo_flow(v))),
        ));
        cases.push(case(
            "echo request inbound",
            v,
            echo_probe(v, 9),
            false,
            None,
        ));
        // A probe of an unregistered flow: other port.
        let other = build!(
            ip(v, true, true, 3).start().udp(SPORT, UDP_PORT + 1),
            &[0; 4]
        );
        cases.push(case("unregistered probe", v, other.clone(), true, None));
        cases.push(case(
            "time exceeded for unregistered flow",
            v,
            time_exceeded(v, &other, other.len()),
            false,
            None,
        ));
        // BPF_PROG_TEST_RUN refuses frames shorter than an IP header; shorter
        // inputs are covered by the userspace twin's prefix test.
        for (i, len) in [0usize, 1, 7, 19, 57].into_iter().enumerate() {
            let vn = if v == V::Four { 4 } else { 6 };
            let len = len + ip_len;
            cases.push(case(
                &format!("garbage #{i} ({len} bytes)"),
                v,
                garbage(i as u64 + 7, len, vn),
                false,
                None,
            ));
            cases.push(case(
                &format!("garbage #{i} on egress"),
                v,
                garbage(i as u64 + 99, len, vn),
                true,
                None,
            ));
        }
    }
    // IPv4 specifics: options on the outer and the quoted header, fragments, bad IHL.
    let v = V::Four;
    let udp = udp_probe(v, 3);
    let quoted_opts = with_ipv4_options(&udp, 0);
    cases.push(case(
        "outer ip options",
        v,
        with_ipv4_options(&time_exceeded(v, &udp, 28), 0),
        false,
        Some((TimeExceeded, udp_flow(v))),
    ));
    cases.push(case(
        "quoted ip options",
        v,
        time_exceeded(v, &quoted_opts, 32),
        false,
        Some((TimeExceeded, udp_flow(v))),
    ));
    cases.push(case(
        "quoted ip options, ports only",
        v,
        time_exceeded(v, &quoted_opts, 28),
        false,
        Some((TimeExceeded, udp_flow(v))),
    ));
    cases.push(case(
        "quoted ip options, short quote",
        v,
        time_exceeded(v, &quoted_opts, 26),
        false,
        None,
    ));
    cases.push(case(
        "fragment of a reply",
        v,
        as_fragment(&time_exceeded(v, &udp, 28)),
        false,
        None,
    ));
    cases.push(case(
        "fragment of a probe",
        v,
        as_fragment(&udp),
        true,
        None,
    ));
    let mut bad_ihl = time_exceeded(v, &udp, 28);
    bad_ihl[0] = 0x43;
    cases.push(case("ihl below 5", v, bad_ihl, false, None));
    cases
}
