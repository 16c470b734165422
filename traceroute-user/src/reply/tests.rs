//! Decoding tests on crafted replies, truncations and garbage.
use std::net::{Ipv6Addr, SocketAddr};

use etherparse::{IpHeaders, IpNumber, Ipv4Header, PacketBuilder, TcpOptionElement};

use super::*;
use crate::probe::{FlowSecret, ProbeFlow, Protocol, Ttl, build_probe};

const ME4: [u8; 4] = [198, 18, 0, 5];
const TARGET4: [u8; 4] = [198, 19, 7, 9];
const ROUTER4: [u8; 4] = [198, 18, 1, 1];

fn me6() -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 5)
}
fn target6() -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 9, 0, 0, 0, 0, 9)
}
fn router6() -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1)
}

fn ttl(v: u8) -> Ttl {
    Ttl::new(v).unwrap()
}

fn flows() -> Vec<ProbeFlow> {
    let (m4, t4) = (IpAddr::from(ME4), IpAddr::from(TARGET4));
    let (m6, t6) = (IpAddr::V6(me6()), IpAddr::V6(target6()));
    let s = SocketAddr::new;
    [
        ProbeFlow::tcp(s(m4, 40001), s(t4, 443)),
        ProbeFlow::udp(s(m4, 40002), s(t4, 33434)),
        ProbeFlow::icmp(m4, t4, 0x4242),
        ProbeFlow::tcp(s(m6, 40003), s(t6, 80)),
        ProbeFlow::udp(s(m6, 40004), s(t6, 33435)),
        ProbeFlow::icmp(m6, t6, 0x0707),
    ]
    .into_iter()
    .zip(1u64..)
    .map(|(flow, i)| {
        let bits = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i);
        flow.unwrap().with_secret(FlowSecret::from_bits(bits))
    })
    .collect()
}

/// The probe the wire fields name, ignoring every cross-check.
fn decoded(r: &Reply, flow: &ProbeFlow) -> Option<ProbeId> {
    let secret = flow.secret();
    r.wire_id.and_then(|w| secret.decode(w))
}

/// Bytes of a probe a router quotes: IP header + `transport` bytes.
fn quote_of(probe: &[u8], transport: usize) -> Vec<u8> {
    let ihl = if probe[0] >> 4 == 4 {
        usize::from(probe[0] & 0xf) * 4
    } else {
        40
    };
    probe[..(ihl + transport).min(probe.len())].to_vec()
}

/// An ICMP error from `router` to the probe's source quoting `quote`.
fn icmp_error(flow: &ProbeFlow, router: IpAddr, type_code: (u8, u8), quote: &[u8]) -> Vec<u8> {
    icmp_error_raw(flow, router, type_code, [0; 4], quote)
}

fn icmp_error_raw(
    flow: &ProbeFlow,
    router: IpAddr,
    (t, c): (u8, u8),
    rest: [u8; 4],
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    match (router, flow.source()) {
        (IpAddr::V4(r), IpAddr::V4(me)) => PacketBuilder::ipv4(r.octets(), me.octets(), 250)
            .icmpv4_raw(t, c, rest)
            .write(&mut out, body)
            .unwrap(),
        (IpAddr::V6(r), IpAddr::V6(me)) => PacketBuilder::ipv6(r.octets(), me.octets(), 250)
            .icmpv6_raw(t, c, rest)
            .write(&mut out, body)
            .unwrap(),
        _ => unreachable!(),
    }
    out
}

fn router_of(flow: &ProbeFlow) -> IpAddr {
    if flow.is_ipv6() {
        IpAddr::V6(router6())
    } else {
        IpAddr::from(ROUTER4)
    }
}

fn time_exceeded(flow: &ProbeFlow) -> (u8, u8) {
    if flow.is_ipv6() { (3, 0) } else { (11, 0) }
}

#[test]
fn time_exceeded_quoting_8_bytes_identifies_the_probe() {
    for flow in flows() {
        for (t, a) in [(1u8, 0u8), (2, 1), (17, 2), (255, 255)] {
            let probe = build_probe(&flow, ttl(t), a);
            let packet = icmp_error(
                &flow,
                router_of(&flow),
                time_exceeded(&flow),
                &quote_of(&probe, 8),
            );
            let r = Reply::parse(&packet).unwrap();
            assert_eq!(r.kind, EventKind::TimeExceeded);
            assert_eq!(r.source, router_of(&flow));
            assert_eq!(r.ttl, 250);
            assert_eq!(r.icmp, Some(time_exceeded(&flow)));
            assert_eq!(r.flow, flow.flow_key(), "{flow:?}");
            // IPv6 routers quote the whole probe (RFC 4443): a quote
            // without the token is not trusted.
            let expected = if flow.is_ipv6() && flow.protocol() != Protocol::Tcp {
                Err(Unverified::WrongSecret)
            } else {
                Ok(ProbeId::new(ttl(t), a))
            };
            assert_eq!(r.identify(&flow), expected, "{flow:?}");
            assert_eq!(decoded(&r, &flow), Some(ProbeId::new(ttl(t), a)));
            let q = r.quote.unwrap();
            assert_eq!(q.ttl, t);
            assert_eq!(q.transport_len, 8);
            assert_eq!(usize::from(q.ip_len), probe.len());
            assert_eq!(q.original_datagram_len, None);
            if flow.protocol() == crate::probe::Protocol::Tcp {
                assert_eq!(r.tcp_seq.unwrap().salt(), flow.secret().salt());
            } else {
                assert_eq!(r.tcp_seq, None);
            }
            assert_eq!(r.ip_id.is_some(), !flow.is_ipv6());
        }
    }
}

#[test]
fn full_quotes_work_too() {
    for flow in flows() {
        let probe = build_probe(&flow, ttl(4), 3);
        let packet = icmp_error(&flow, router_of(&flow), time_exceeded(&flow), &probe);
        let r = Reply::parse(&packet).unwrap();
        assert_eq!(r.flow, flow.flow_key());
        assert_eq!(r.identify(&flow), Ok(ProbeId::new(ttl(4), 3)));
        assert_eq!(r.token.is_some(), flow.protocol() != Protocol::Tcp);
        assert_eq!(
            r.quote.unwrap().transport_len,
            probe.len() - quote_of(&probe, 0).len()
        );
    }
}

#[test]
fn destination_unreachable_all_codes() {
    for flow in flows() {
        let probe = build_probe(&flow, ttl(9), 1);
        let (t, codes) = if flow.is_ipv6() {
            (1u8, 0..=7u8)
        } else {
            (3u8, 0..=15u8)
        };
        for code in codes {
            let dst = flow.destination();
            let packet = icmp_error(&flow, dst, (t, code), &probe);
            let r = Reply::parse(&packet).unwrap();
            assert_eq!(r.kind, EventKind::DestUnreachable);
            assert_eq!(r.icmp, Some((t, code)));
            assert_eq!(r.source, dst);
            assert_eq!(r.flow, flow.flow_key());
            assert_eq!(r.identify(&flow), Ok(ProbeId::new(ttl(9), 1)));
        }
    }
}

#[test]
fn short_quotes_fall_back_to_the_ipv4_id() {
    for flow in flows() {
        let probe = build_probe(&flow, ttl(6), 2);
        let id = ProbeId::new(ttl(6), 2);
        let minimum = if flow.protocol() == crate::probe::Protocol::Icmp {
            6
        } else {
            4
        };
        for transport in 0..8 {
            let packet = icmp_error(
                &flow,
                router_of(&flow),
                time_exceeded(&flow),
                &quote_of(&probe, transport),
            );
            let result = Reply::parse(&packet);
            if transport < minimum {
                assert!(
                    matches!(result, Err(ReplyError::Truncated { .. })),
                    "{transport}: {result:?}"
                );
                continue;
            }
            let r = result.unwrap();
            assert_eq!(r.flow, flow.flow_key());
            let expected = (!flow.is_ipv6()).then_some(id);
            assert_eq!(
                r.identify(&flow).ok(),
                expected,
                "{flow:?} with {transport} bytes"
            );
        }
    }
}

/// What the destination sends back for an echo probe: identifier, sequence
/// and payload of the probe.
fn echo_reply_to(flow: &ProbeFlow, probe: &[u8], payload: Option<&[u8]>) -> Vec<u8> {
    let icmp = &probe[probe.len() - 8 - crate::probe::ICMP_PAYLOAD_LEN..];
    let (ident, seq) = (be16(icmp, 4), be16(icmp, 6));
    let payload = payload.unwrap_or(&icmp[8..]);
    let mut out = Vec::new();
    match (flow.destination(), flow.source()) {
        (IpAddr::V4(d), IpAddr::V4(s)) => PacketBuilder::ipv4(d.octets(), s.octets(), 57)
            .icmpv4_echo_reply(ident, seq)
            .write(&mut out, payload),
        (IpAddr::V6(d), IpAddr::V6(s)) => PacketBuilder::ipv6(d.octets(), s.octets(), 57)
            .icmpv6_echo_reply(ident, seq)
            .write(&mut out, payload),
        _ => unreachable!(),
    }
    .unwrap();
    out
}

#[test]
fn echo_replies_v4_and_v6() {
    for (flow, icmp) in [(&flows()[2], (0, 0)), (&flows()[5], (129, 0))] {
        let id = ProbeId::new(ttl(12), 1);
        let probe = build_probe(flow, id.ttl(), id.attempt());
        let r = Reply::parse(&echo_reply_to(flow, &probe, None)).unwrap();
        assert_eq!(r.kind, EventKind::EchoReply);
        assert_eq!(r.flow, flow.flow_key());
        assert_eq!(r.identify(flow), Ok(id));
        assert_eq!((r.ttl, r.icmp), (57, Some(icmp)));
        // The echo returns the whole payload: without our token, or with
        // another, it is not ours.
        for payload in [&[1u8, 2, 3, 4][..], &[0; 12]] {
            let r = Reply::parse(&echo_reply_to(flow, &probe, Some(payload))).unwrap();
            assert_eq!(decoded(&r, flow), Some(id));
            assert_eq!(r.identify(flow), Err(Unverified::WrongSecret));
        }
    }
}

fn tcp_answer(flow: &ProbeFlow, probe_ttl: u8, attempt: u8, rst: bool) -> Vec<u8> {
    let seq = TcpSeq::new(flow.secret(), ProbeId::new(ttl(probe_ttl), attempt)).0;
    let (sport, dport) = (
        flow.source_port().unwrap().get(),
        flow.destination_port().unwrap().get(),
    );
    let builder = match (flow.destination(), flow.source()) {
        (IpAddr::V4(d), IpAddr::V4(s)) => PacketBuilder::ipv4(d.octets(), s.octets(), 61),
        (IpAddr::V6(d), IpAddr::V6(s)) => PacketBuilder::ipv6(d.octets(), s.octets(), 61),
        _ => unreachable!(),
    };
    let step = builder
        .tcp(dport, sport, 0x1000_0000, 65535)
        .ack(seq.wrapping_add(1));
    let step = if rst { step.rst() } else { step.syn() };
    let mut out = Vec::new();
    step.write(&mut out, &[]).unwrap();
    out
}

#[test]
fn tcp_syn_ack_and_rst_v4_and_v6() {
    for flow in flows()
        .into_iter()
        .filter(|f| f.protocol() == crate::probe::Protocol::Tcp)
    {
        for (rst, kind) in [(false, EventKind::TcpSynAck), (true, EventKind::TcpRst)] {
            let r = Reply::parse(&tcp_answer(&flow, 14, 2, rst)).unwrap();
            assert_eq!(r.kind, kind);
            assert_eq!(r.source, flow.destination());
            assert_eq!(r.flow, flow.flow_key());
            assert_eq!(r.tcp_seq.unwrap().salt(), flow.secret().salt());
            assert_eq!(r.identify(&flow), Ok(ProbeId::new(ttl(14), 2)));
            // Another salt: not ours.
            let other = flow.with_secret(FlowSecret::ZERO);
            assert_eq!(r.identify(&other), Err(Unverified::WrongSecret));
            assert_eq!((r.ttl, r.icmp, r.quote), (61, None, None));
        }
    }
}

#[test]
fn tcp_without_syn_or_rst_is_refused() {
    let flow = &flows()[0];
    let mut out = Vec::new();
    PacketBuilder::ipv4(TARGET4, ME4, 61)
        .tcp(443, 40001, 1, 1000)
        .ack(5)
        .write(&mut out, &[])
        .unwrap();
    // A bare ACK is parsed (inside a connection it can answer a probe), but
    // outside one it answers nothing.
    let ack = Reply::parse(&out).unwrap();
    assert_eq!((ack.kind, ack.sack_left), (EventKind::TcpAck, None));
    assert_eq!(ack.identify(flow), Err(Unverified::NoIdentity));
    let mut push = Vec::new();
    PacketBuilder::ipv4(TARGET4, ME4, 61)
        .tcp(443, 40001, 1, 1000)
        .psh()
        .write(&mut push, &[])
        .unwrap();
    assert!(matches!(
        Reply::parse(&push),
        Err(ReplyError::UnsupportedTcp(0x08))
    ));
    // A truncated TCP header is an error, not a panic.
    let answer = tcp_answer(flow, 1, 0, false);
    assert!(matches!(
        Reply::parse(&answer[..30]),
        Err(ReplyError::Tcp(_))
    ));
}

#[test]
fn own_probes_are_recognised_on_egress() {
    for flow in flows() {
        let probe = build_probe(&flow, ttl(7), 5);
        let r = Reply::parse(&probe).unwrap();
        assert_eq!(r.kind, EventKind::Probe);
        // The destination is in the flow key.
        assert_eq!(r.source, flow.source());
        assert_eq!(r.ttl, 7);
        assert_eq!(r.flow, flow.flow_key());
        let id = ProbeId::new(ttl(7), 5);
        assert_eq!(r.identify(&flow), Ok(id));
        assert_eq!(
            r.ip_id,
            (!flow.is_ipv6()).then_some(flow.secret().ip_id(id))
        );
    }
}

/// Re-encodes an IPv4 packet with `options` in its header.
fn with_ipv4_options(packet: &[u8], options: &[u8]) -> Vec<u8> {
    let (mut header, rest) = Ipv4Header::from_slice(packet).unwrap();
    header.options = options.try_into().unwrap();
    header.total_len = (header.header_len() + rest.len()) as u16;
    header.header_checksum = header.calc_header_checksum();
    let mut out = header.to_bytes().to_vec();
    out.extend_from_slice(rest);
    out
}

#[test]
fn ip_options_outer_and_inner() {
    let options = [1u8, 1, 1, 0, 0x44, 4, 5, 0]; // NOPs, EOL; a short timestamp option
    for flow in flows().into_iter().filter(|f| !f.is_ipv6()) {
        let probe = build_probe(&flow, ttl(3), 1);
        let inner = with_ipv4_options(&quote_of(&probe, 8), &options);
        let packet = icmp_error(&flow, router_of(&flow), (11, 0), &inner);
        let outer = with_ipv4_options(&packet, &options[..4]);
        for bytes in [packet, outer] {
            let r = Reply::parse(&bytes).unwrap();
            assert_eq!(r.flow, flow.flow_key());
            assert_eq!(decoded(&r, &flow), Some(ProbeId::new(ttl(3), 1)));
            assert_eq!(r.quote.unwrap().transport_len, 8);
        }
    }
}

/// Inserts an 8-byte IPv6 extension header of type `ext` (hop-by-hop 0 or
/// destination options 60, carrying a PadN option) after the fixed header.
fn with_ipv6_ext(packet: &[u8], ext: u8) -> Vec<u8> {
    let mut out = packet[..40].to_vec();
    let next = out[6];
    out[6] = ext;
    let len = be16(&out, 4) + 8;
    out[4..6].copy_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    out.extend_from_slice(&packet[40..]);
    out
}

#[test]
fn ipv6_extension_headers_in_the_quote() {
    for flow in flows().into_iter().filter(ProbeFlow::is_ipv6) {
        let probe = build_probe(&flow, ttl(2), 0);
        let quote = quote_of(&probe, 8);
        let hop_by_hop = with_ipv6_ext(&quote, 0);
        let dest_opts = with_ipv6_ext(&quote, 60);
        // Hop-by-hop must come first (RFC 8200).
        let both = with_ipv6_ext(&dest_opts, 0);
        for quote in [hop_by_hop, dest_opts, both] {
            let packet = icmp_error(&flow, router_of(&flow), (3, 0), &quote);
            let r = Reply::parse(&packet).unwrap();
            assert_eq!(r.flow, flow.flow_key());
            assert_eq!(decoded(&r, &flow), Some(ProbeId::new(ttl(2), 0)));
            assert_eq!(r.quote.unwrap().transport_len, 8);
            // Our probes carry no extension headers: a quote with one does
            // not fit the probe it names.
            // (UDP and echo quotes this short also miss the token.)
            let expected = if flow.protocol() == Protocol::Tcp {
                Unverified::Implausible
            } else {
                Unverified::WrongSecret
            };
            assert_eq!(r.identify(&flow), Err(expected));
        }
        // Hop-by-hop anywhere else is malformed: a clear error.
        let misplaced = with_ipv6_ext(&with_ipv6_ext(&quote, 0), 60);
        let packet = icmp_error(&flow, router_of(&flow), (3, 0), &misplaced);
        assert_eq!(Reply::parse(&packet), Err(ReplyError::ExtensionHeaders));
        // Extension headers on the outer packet as well.
        let packet = icmp_error(&flow, router_of(&flow), (3, 0), &quote_of(&probe, 8));
        let r = Reply::parse(&with_ipv6_ext(&packet, 0)).unwrap();
        assert_eq!(decoded(&r, &flow), Some(ProbeId::new(ttl(2), 0)));
        let full = icmp_error(&flow, router_of(&flow), (3, 0), &probe);
        let r = Reply::parse(&with_ipv6_ext(&full, 0)).unwrap();
        assert_eq!(r.identify(&flow), Ok(ProbeId::new(ttl(2), 0)));
    }
}

#[test]
fn mismatched_or_foreign_quotes_are_errors() {
    let f4 = &flows()[1];
    let f6 = &flows()[4];
    // IPv4 ICMP quoting an IPv6 packet.
    let p6 = build_probe(f6, ttl(1), 0);
    let packet = icmp_error(f4, router_of(f4), (11, 0), &quote_of(&p6, 8));
    assert!(matches!(
        Reply::parse(&packet),
        Err(ReplyError::QuoteVersionMismatch {
            outer: 4,
            quoted: 6
        })
    ));
    // A quote of something that is not a probe protocol (GRE).
    let mut gre = Vec::new();
    PacketBuilder::ip(IpHeaders::Ipv4(
        Ipv4Header::new(8, 1, IpNumber(47), ME4, TARGET4).unwrap(),
        Default::default(),
    ))
    .write(&mut gre, IpNumber(47), &[0; 8])
    .unwrap();
    let packet = icmp_error(f4, router_of(f4), (11, 0), &gre);
    assert!(matches!(
        Reply::parse(&packet),
        Err(ReplyError::UnsupportedProtocol(47))
    ));
    // A quoted ICMP that is not an echo request.
    let mut echo_reply = Vec::new();
    PacketBuilder::ipv4(ME4, TARGET4, 1)
        .icmpv4_echo_reply(1, 1)
        .write(&mut echo_reply, &[])
        .unwrap();
    let packet = icmp_error(f4, router_of(f4), (11, 0), &echo_reply);
    assert!(matches!(
        Reply::parse(&packet),
        Err(ReplyError::QuotedIcmpNotEcho(0))
    ));
    // ICMP redirect: not a reply we handle.
    let packet = icmp_error(
        f4,
        router_of(f4),
        (5, 1),
        &quote_of(&build_probe(f4, ttl(1), 0), 8),
    );
    assert!(matches!(
        Reply::parse(&packet),
        Err(ReplyError::UnsupportedIcmp {
            icmp_type: 5,
            code: 1
        })
    ));
    // An ICMP error without any quote.
    let packet = icmp_error(f4, router_of(f4), (11, 0), &[]);
    assert!(matches!(Reply::parse(&packet), Err(ReplyError::Quoted(_))));
}

#[test]
fn fragments_are_refused() {
    let flow = &flows()[1];
    let probe = build_probe(flow, ttl(1), 0);
    let (mut header, rest) = Ipv4Header::from_slice(&probe).unwrap();
    header.fragment_offset = etherparse::IpFragOffset::try_new(10).unwrap();
    header.header_checksum = header.calc_header_checksum();
    let mut fragment = header.to_bytes().to_vec();
    fragment.extend_from_slice(rest);
    assert!(matches!(Reply::parse(&fragment), Err(ReplyError::Fragment)));
}

/// ICMP extension structure with one MPLS object holding `labels`.
fn mpls_extension(labels: &[u32]) -> Vec<u8> {
    let mut ext = vec![0x20, 0, 0, 0];
    ext.extend_from_slice(&((4 + 4 * labels.len()) as u16).to_be_bytes());
    ext.extend_from_slice(&[1, 1]);
    for l in labels {
        ext.extend_from_slice(&l.to_be_bytes());
    }
    ext
}

#[test]
fn mpls_labels_rfc4884_and_compat() {
    let flow = &flows()[1];
    // Routers quote the whole probe, zero-padded to 128 bytes (RFC 4884).
    let mut body = build_probe(flow, ttl(5), 0);
    body.resize(128, 0);
    // label 16005, exp 5, bottom of stack, ttl 1; then label 24, exp 0, not bottom, ttl 254
    let entries = [16005 << 12 | 5 << 9 | 1 << 8 | 1, 24 << 12 | 254];
    body.extend_from_slice(&mpls_extension(&entries));
    let expected = vec![
        MplsLabel {
            label: 16005,
            exp: 5,
            bottom_of_stack: true,
            ttl: 1,
        },
        MplsLabel {
            label: 24,
            exp: 0,
            bottom_of_stack: false,
            ttl: 254,
        },
    ];
    // RFC 4884: length in 32-bit words in byte 5 (32 * 4 = 128).
    let rfc = icmp_error_raw(flow, router_of(flow), (11, 0), [0, 32, 0, 0], &body);
    let r = Reply::parse(&rfc).unwrap();
    assert_eq!(r.mpls_labels, expected);
    assert_eq!(r.quote.unwrap().original_datagram_len, Some(128));
    assert_eq!(r.identify(flow), Ok(ProbeId::new(ttl(5), 0)));
    // A length field below 128 is junk: ignored, the quote still parses.
    let junk = icmp_error_raw(flow, router_of(flow), (11, 0), [0, 3, 0, 0], &body);
    let r = Reply::parse(&junk).unwrap();
    assert_eq!(r.quote.unwrap().original_datagram_len, None);
    assert_eq!(r.identify(flow), Ok(ProbeId::new(ttl(5), 0)));
    // Compat: no length, extensions at 128.
    let compat = icmp_error_raw(flow, router_of(flow), (11, 0), [0; 4], &body);
    let r = Reply::parse(&compat).unwrap();
    assert_eq!(r.mpls_labels, expected);
    assert_eq!(r.identify(flow), Ok(ProbeId::new(ttl(5), 0)));
    // IPv6: length in 64-bit words in byte 4 (16 * 8 = 128).
    let f6 = &flows()[4];
    let mut body6 = build_probe(f6, ttl(5), 0);
    body6.resize(128, 0);
    body6.extend_from_slice(&mpls_extension(&entries[..1]));
    let v6 = icmp_error_raw(f6, router_of(f6), (3, 0), [16, 0, 0, 0], &body6);
    let r = Reply::parse(&v6).unwrap();
    assert_eq!(r.mpls_labels, expected[..1]);
    assert_eq!(r.flow, f6.flow_key());
}

/// Every reply kind, v4 and v6, as test material for the robustness tests.
fn corpus() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for flow in flows() {
        let probe = build_probe(&flow, ttl(3), 1);
        out.push(probe.clone());
        out.push(icmp_error(
            &flow,
            router_of(&flow),
            time_exceeded(&flow),
            &quote_of(&probe, 8),
        ));
        out.push(icmp_error(
            &flow,
            router_of(&flow),
            time_exceeded(&flow),
            &probe,
        ));
        if flow.protocol() == crate::probe::Protocol::Tcp {
            out.push(tcp_answer(&flow, 3, 1, false));
            out.push(tcp_answer(&flow, 3, 1, true));
        }
    }
    let flow = &flows()[1];
    let mut body = quote_of(&build_probe(flow, ttl(5), 0), 8);
    body.resize(128, 0);
    body.extend_from_slice(&mpls_extension(&[16005 << 12 | 1 << 8 | 1]));
    out.push(icmp_error_raw(
        flow,
        router_of(flow),
        (11, 0),
        [0, 32, 0, 0],
        &body,
    ));
    out
}

#[test]
fn every_prefix_of_a_valid_reply_is_handled() {
    for packet in corpus() {
        assert!(Reply::parse(&packet).is_ok());
        for n in 0..packet.len() {
            // Must not panic; short prefixes must not be accepted as a
            // different flow either.
            if let Ok(r) = Reply::parse(&packet[..n]) {
                assert_eq!(r.flow, Reply::parse(&packet).unwrap().flow);
            }
        }
    }
}

/// xorshift64*: a deterministic pseudo-random stream for the fuzz loops.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn byte(&mut self) -> u8 {
        (self.next() >> 32) as u8
    }
}

#[test]
fn random_garbage_never_panics() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..20_000 {
        let len = (rng.next() % 257) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
        // Steer half of the inputs past the version check.
        if let Some(first) = bytes.first_mut() {
            *first = match i % 4 {
                0 => 0x45,
                1 => 0x60 | (*first & 0xf),
                _ => *first,
            };
        }
        let _ = Reply::parse(&bytes);
    }
}

#[test]
fn mutated_replies_never_panic() {
    let mut rng = Rng(42);
    let corpus = corpus();
    for _ in 0..20_000 {
        let mut packet = corpus[(rng.next() % corpus.len() as u64) as usize].clone();
        for _ in 0..(1 + rng.next() % 4) {
            let at = (rng.next() % packet.len() as u64) as usize;
            packet[at] = rng.byte();
        }
        let cut = (rng.next() % (packet.len() as u64 + 1)) as usize;
        let _ = Reply::parse(&packet[..cut]);
    }
}

#[test]
fn errors_read_well() {
    let err = Reply::parse(&[]).unwrap_err();
    assert!(err.to_string().starts_with("outer IP header"), "{err}");
    let e = ReplyError::Truncated {
        layer: "ICMP header",
        needed: 8,
        available: 3,
    };
    assert_eq!(e.to_string(), "truncated ICMP header: need 8 bytes, have 3");
}

#[test]
fn summaries_of_any_packet() {
    let flow = &flows()[2];
    let probe = build_probe(flow, ttl(9), 0);
    let s = Summary::parse(&probe).unwrap();
    assert_eq!((s.src, s.dst), (flow.source(), flow.destination()));
    assert_eq!((s.protocol, s.ttl), (1, 9));
    assert_eq!((s.icmp_type, s.icmp_code), (Some(8), Some(0)));
    let f6 = &flows()[5];
    let s = Summary::parse(&build_probe(f6, ttl(3), 0)).unwrap();
    assert_eq!((s.protocol, s.ttl, s.icmp_type), (58, 3, Some(128)));
    // A TCP SYN has no ICMP fields; a transport cut short still gives the IP header.
    let s = Summary::parse(&build_probe(&flows()[0], ttl(2), 0)[..22]).unwrap();
    assert_eq!((s.protocol, s.icmp_type), (6, None));
    assert_eq!(Summary::parse(&[]), None);
    assert_eq!(Summary::parse(&[0x45, 0, 0]), None);
    assert_eq!(Summary::parse(&[0xff; 40]), None);
}

#[test]
fn a_reply_for_another_flow_is_not_identified() {
    let flow = flows()[1];
    let probe = build_probe(&flow, ttl(4), 0);
    let r = Reply::parse(&icmp_error(&flow, router_of(&flow), (11, 0), &probe)).unwrap();
    let other = ProbeFlow::udp(
        SocketAddr::new(flow.source(), 40999),
        SocketAddr::new(flow.destination(), 33434),
    )
    .unwrap()
    .with_secret(flow.secret());
    assert_eq!(r.identify(&other), Err(Unverified::NoIdentity));
    assert_eq!(r.identify(&flow), Ok(ProbeId::new(ttl(4), 0)));
}

/// One's complement sum of `data` as 16-bit words, added to `sum`.
fn ones_sum(data: &[u8], mut sum: u32) -> u32 {
    for word in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([word[0], *word.get(1).unwrap_or(&0)]));
    }
    sum
}

fn folded(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// `probe` as a stateless NAT forwards it: source address replaced by
/// `source`, every checksum computed afresh (IPv4 header; TCP, UDP and
/// ICMPv6 over their pseudo-header).
fn with_source(probe: &[u8], source: IpAddr) -> Vec<u8> {
    let mut p = probe.to_vec();
    let v4 = p[0] >> 4 == 4;
    let (l3_len, proto, checksum_at) = if v4 {
        let ihl = usize::from(p[0] & 0xf) * 4;
        (ihl, p[9], 10)
    } else {
        (40, p[6], 0)
    };
    match source {
        IpAddr::V4(a) => p[12..16].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => p[8..24].copy_from_slice(&a.octets()),
    }
    if v4 {
        p[checksum_at..checksum_at + 2].fill(0);
        let c = folded(ones_sum(&p[..l3_len], 0));
        p[checksum_at..checksum_at + 2].copy_from_slice(&c.to_be_bytes());
    }
    let l4_checksum_at = match proto {
        proto::UDP => 6,
        proto::TCP => 16,
        proto::ICMPV6 => 2,
        _ => return p, // ICMPv4: no pseudo-header
    };
    let l4_len = p.len() - l3_len;
    let mut pseudo = Vec::new();
    if v4 {
        pseudo.extend_from_slice(&p[12..20]);
        pseudo.extend_from_slice(&[0, proto]);
        pseudo.extend_from_slice(&(l4_len as u16).to_be_bytes());
    } else {
        pseudo.extend_from_slice(&p[8..40]);
        pseudo.extend_from_slice(&(l4_len as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, proto]);
    }
    let at = l3_len + l4_checksum_at;
    p[at..at + 2].fill(0);
    let c = match folded(ones_sum(&p[l3_len..], ones_sum(&pseudo, 0))) {
        0 if proto == proto::UDP => 0xffff,
        c => c,
    };
    p[at..at + 2].copy_from_slice(&c.to_be_bytes());
    p
}

#[test]
fn a_probe_whose_source_a_nat_rewrote_is_still_recognised_and_the_rewrite_shows() {
    for flow in flows() {
        let nat: IpAddr = if flow.is_ipv6() {
            "2001:db8:77::1".parse().unwrap()
        } else {
            "198.18.77.1".parse().unwrap()
        };
        for attempt in 0..4 {
            let probe = with_source(&build_probe(&flow, ttl(9), attempt), nat);
            let packet = icmp_error(&flow, router_of(&flow), time_exceeded(&flow), &probe);
            let r = Reply::parse(&packet).unwrap();
            // The UDP checksum (our identity field) changed with the source;
            // the decoder undoes exactly that change.
            assert_eq!(
                r.identify(&flow),
                Ok(ProbeId::new(ttl(9), attempt)),
                "{flow:?}"
            );
            let quote = r.quote.unwrap();
            assert_eq!((quote.source, quote.tos), (nat, 0));
        }
    }
    // The rewrite arithmetic itself (RFC 1624), both ways.
    let (a, b): (IpAddr, IpAddr) = (
        "198.18.0.5".parse().unwrap(),
        "198.18.77.1".parse().unwrap(),
    );
    for c in [1u16, 0x1234, 0xfffe, 0xffff] {
        assert_eq!(checksum_replace(checksum_replace(c, a, b), b, a), c);
    }
    assert_eq!(checksum_replace(0, a, b), 0, "no checksum stays none");
}

#[test]
fn the_quoted_tos_byte_is_read_for_v4_and_v6() {
    for flow in flows() {
        let mut probe = build_probe(&flow, ttl(3), 0);
        if flow.is_ipv6() {
            // Traffic class straddles bytes 0 and 1: DSCP 8, ECN 1 = 0x21.
            probe[0] = (probe[0] & 0xf0) | 0x2;
            probe[1] = (probe[1] & 0x0f) | 0x10;
        } else {
            probe[1] = 0x21;
        }
        let packet = icmp_error(&flow, router_of(&flow), time_exceeded(&flow), &probe);
        let r = Reply::parse(&packet).unwrap();
        assert_eq!(r.quote.unwrap().tos, 0x21, "{flow:?}");
        assert_eq!(r.identify(&flow), Ok(ProbeId::new(ttl(3), 0)));
    }
}

#[test]
fn fragmentation_needed_and_packet_too_big_carry_the_mtu() {
    for flow in flows()
        .into_iter()
        .filter(|f| f.protocol() != Protocol::Tcp)
    {
        let flow = flow.with_size(1500).unwrap();
        let probe = build_probe(&flow, ttl(5), 1);
        // ICMPv4 3/4 has the MTU in bytes 6..8; ICMPv6 2/0 in bytes 4..8.
        // Routers quote as much as fits (576 bytes for v4, 1280 for v6).
        let (type_code, rest, quoted) = if flow.is_ipv6() {
            ((2, 0), 1400u32.to_be_bytes(), 1232)
        } else {
            ((3, 4), [0, 0, 0x05, 0x78], 548)
        };
        let packet = icmp_error_raw(&flow, router_of(&flow), type_code, rest, &probe[..quoted]);
        let r = Reply::parse(&packet).unwrap();
        assert_eq!(r.next_hop_mtu, Some(1400), "{flow:?}");
        let want = if flow.is_ipv6() {
            EventKind::PacketTooBig
        } else {
            EventKind::DestUnreachable
        };
        assert_eq!(r.kind, want);
        assert_eq!(r.identify(&flow), Ok(ProbeId::new(ttl(5), 1)));
        // An old router's 0 is "not given".
        let zero = icmp_error_raw(&flow, router_of(&flow), type_code, [0; 4], &probe[..quoted]);
        assert_eq!(Reply::parse(&zero).unwrap().next_hop_mtu, None);
    }
    // Other unreachable codes carry no MTU.
    let flow = &flows()[1];
    let probe = build_probe(flow, ttl(5), 1);
    let port = icmp_error_raw(flow, router_of(flow), (3, 3), [0, 0, 0x05, 0x78], &probe);
    assert_eq!(Reply::parse(&port).unwrap().next_hop_mtu, None);
}

#[test]
fn inside_a_connection_quotes_and_sack_blocks_name_the_probe() {
    use crate::probe::sack::{Connection, seq_of};
    let connection = Connection {
        next_seq: 0xffff_fff0,
        ack: 77,
    };
    for flow in flows()
        .into_iter()
        .filter(|f| f.protocol() == Protocol::Tcp)
    {
        let flow = flow.in_connection(connection);
        let id = ProbeId::new(ttl(7), 2);
        let probe = build_probe(&flow, ttl(7), 2);
        // Our segment leaving, and a router's quote of it.
        let own = Reply::parse(&probe).unwrap();
        assert_eq!((own.kind, own.identify(&flow)), (EventKind::Probe, Ok(id)));
        let quoted = icmp_error(
            &flow,
            router_of(&flow),
            time_exceeded(&flow),
            &quote_of(&probe, 8),
        );
        assert_eq!(
            Reply::parse(&quoted).unwrap().identify(&flow),
            Ok(id),
            "{flow:?}"
        );
        // The destination's duplicate ACK: its first SACK block starts at
        // the probe's sequence number.
        let (sport, dport) = (
            flow.destination_port().unwrap().get(),
            flow.source_port().unwrap().get(),
        );
        let dup_ack = |left: u32| {
            let sack =
                TcpOptionElement::SelectiveAcknowledgement((left, left.wrapping_add(1)), [None; 3]);
            let mut out = Vec::new();
            let builder = match (flow.destination(), flow.source()) {
                (IpAddr::V4(d), IpAddr::V4(s)) => PacketBuilder::ipv4(d.octets(), s.octets(), 60),
                (IpAddr::V6(d), IpAddr::V6(s)) => PacketBuilder::ipv6(d.octets(), s.octets(), 60),
                _ => unreachable!(),
            };
            builder
                .tcp(sport, dport, 77, 1000)
                .ack(connection.next_seq)
                .options(&[sack])
                .unwrap()
                .write(&mut out, &[])
                .unwrap();
            out
        };
        let answer = Reply::parse(&dup_ack(seq_of(connection, id))).unwrap();
        assert_eq!(
            (answer.kind, answer.identify(&flow)),
            (EventKind::TcpAck, Ok(id))
        );
        // A block no probe starts: refused.
        let odd = Reply::parse(&dup_ack(seq_of(connection, id).wrapping_add(1))).unwrap();
        assert_eq!(odd.identify(&flow), Err(Unverified::WrongSecret));
        // The same quote for a SYN flow is no answer of the connection flow.
        let syn = build_probe(&flows()[0], ttl(7), 2);
        if !flow.is_ipv6() {
            let other = icmp_error(
                &flows()[0],
                router_of(&flow),
                time_exceeded(&flow),
                &quote_of(&syn, 8),
            );
            assert!(Reply::parse(&other).unwrap().identify(&flow).is_err());
        }
    }
}

#[test]
fn a_renumbered_ip_id_is_accepted_only_with_the_token_quoted() {
    for flow in flows().into_iter().filter(|f| !f.is_ipv6()) {
        let mut probe = build_probe(&flow, ttl(4), 0);
        // A box on the way renumbers the IPv4 ID (and fixes the checksum).
        probe[4..6].copy_from_slice(&0x4242u16.to_be_bytes());
        probe[10..12].fill(0);
        let c = folded(ones_sum(&probe[..20], 0));
        probe[10..12].copy_from_slice(&c.to_be_bytes());
        let full = icmp_error(&flow, router_of(&flow), time_exceeded(&flow), &probe);
        let short = icmp_error(
            &flow,
            router_of(&flow),
            time_exceeded(&flow),
            &quote_of(&probe, 8),
        );
        let (full, short) = (Reply::parse(&full).unwrap(), Reply::parse(&short).unwrap());
        assert_eq!(full.ip_id, Some(0x4242));
        if flow.protocol() == Protocol::Tcp {
            // No token in a SYN: the ID stays part of the proof.
            assert_eq!(full.identify(&flow), Err(Unverified::WrongSecret));
        } else {
            assert_eq!(
                full.identify(&flow),
                Ok(ProbeId::new(ttl(4), 0)),
                "{flow:?}"
            );
        }
        assert_eq!(
            short.identify(&flow),
            Err(Unverified::WrongSecret),
            "{flow:?}"
        );
    }
}

/// An extension structure with an RFC 5837 incoming-interface object
/// (ifIndex, address, name, MTU) after an MPLS object.
fn interface_extension(address: IpAddr) -> Vec<u8> {
    let mut object = 7u32.to_be_bytes().to_vec();
    match address {
        IpAddr::V4(a) => {
            object.extend([0, 1, 0, 0]);
            object.extend(a.octets());
        }
        IpAddr::V6(a) => {
            object.extend([0, 2, 0, 0]);
            object.extend(a.octets());
        }
    }
    object.extend([8, b'e', b't', b'h', b'1', 0, 0, 0]);
    object.extend(1400u32.to_be_bytes());
    let mut ext = mpls_extension(&[16005 << 12 | 1 << 8 | 1]);
    ext.extend(((object.len() + 4) as u16).to_be_bytes());
    ext.extend([2, 0b0000_1111]);
    ext.extend(object);
    ext
}

#[test]
fn interface_information_rides_beside_mpls_and_the_probe_is_still_named() {
    use crate::path::{InterfaceInfo, InterfaceRole};
    for (flow, type_code, length) in [
        (&flows()[1], (11, 0), [0, 32, 0, 0]),
        (&flows()[4], (3, 0), [16, 0, 0, 0]),
    ] {
        let mut body = build_probe(flow, ttl(4), 0);
        body.resize(128, 0);
        let router = router_of(flow);
        body.extend(interface_extension(router));
        let packet = icmp_error_raw(flow, router, type_code, length, &body);
        let r = Reply::parse(&packet).unwrap();
        assert_eq!(r.mpls_labels.len(), 1);
        assert_eq!(
            r.interfaces,
            vec![InterfaceInfo {
                role: InterfaceRole::Incoming,
                ifindex: Some(7),
                address: Some(router),
                name: Some("eth1".into()),
                mtu: Some(1400),
            }]
        );
        assert_eq!(r.identify(flow), Ok(ProbeId::new(ttl(4), 0)));
    }
}
