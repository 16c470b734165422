use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use etherparse::{Icmpv4Type, Icmpv6Type, NetHeaders, PacketHeaders, TransportHeader};
use traceroute_common::proto;

use super::build::UDP_PAYLOAD_LEN;
use super::flow::ProbeError;
use super::id::{InvalidTtl, Port};
use super::*;

const V4_SRC: [u8; 4] = [198, 18, 0, 5];
const V4_DST: [u8; 4] = [198, 19, 7, 9];

fn v6(last: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last))
}

fn sock(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

/// One flow per protocol × IP version.
fn all_flows() -> Vec<ProbeFlow> {
    let (s4, d4) = (IpAddr::from(V4_SRC), IpAddr::from(V4_DST));
    let (s6, d6) = (v6(5), v6(0x99));
    let secret = |bits: u64| FlowSecret::from_bits(bits);
    vec![
        ProbeFlow::tcp(sock(s4, 40001), sock(d4, 443))
            .unwrap()
            .with_secret(secret(0xdead_beef_0102_0304)),
        ProbeFlow::tcp(sock(s6, 40002), sock(d6, 80))
            .unwrap()
            .with_secret(secret(0x1234_5678_ffff_fffe)),
        ProbeFlow::udp(sock(s4, 40003), sock(d4, 33434))
            .unwrap()
            .with_secret(secret(0x0bad_cafe_a5a5_0001)),
        // No secret: wire fields are the plain ids.
        ProbeFlow::udp(sock(s6, 40004), sock(d6, 33434)).unwrap(),
        ProbeFlow::icmp(s4, d4, 0x4242)
            .unwrap()
            .with_secret(secret(0x7777_0000_1111_fffe)),
        ProbeFlow::icmp(s6, d6, 0x0707)
            .unwrap()
            .with_secret(secret(0x0000_0001_8000_7fff)),
    ]
}

fn ttl(v: u8) -> Ttl {
    Ttl::new(v).unwrap()
}

/// A spread of (ttl, attempt) pairs including the extremes.
fn samples() -> Vec<(Ttl, u8)> {
    let mut out = Vec::new();
    for t in [1u8, 2, 3, 7, 15, 16, 30, 64, 128, 254, 255] {
        for a in [0u8, 1, 2, 3, 9, 127, 128, 255] {
            out.push((ttl(t), a));
        }
    }
    out
}

/// Independent one's-complement sum of 16-bit big-endian words, folded.
fn ones_sum(parts: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = parts.concat();
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The pseudo header of the transport checksum.
fn pseudo_header(packet: &[u8], protocol: u8, transport_len: usize) -> Vec<u8> {
    if packet[0] >> 4 == 4 {
        let mut p = packet[12..20].to_vec();
        p.extend_from_slice(&[0, protocol]);
        p.extend_from_slice(&(transport_len as u16).to_be_bytes());
        p
    } else {
        let mut p = packet[8..40].to_vec();
        p.extend_from_slice(&(transport_len as u32).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, protocol]);
        p
    }
}

fn ip_header_len(packet: &[u8]) -> usize {
    if packet[0] >> 4 == 4 {
        usize::from(packet[0] & 0xf) * 4
    } else {
        40
    }
}

/// Checks every checksum of `packet` with the independent sum: summing a
/// region including its checksum gives 0xffff.
fn assert_checksums_valid(packet: &[u8], flow: &ProbeFlow) {
    let ihl = ip_header_len(packet);
    if !flow.is_ipv6() {
        assert_eq!(ones_sum(&[&packet[..ihl]]), 0xffff, "IPv4 header checksum");
    }
    let transport = &packet[ihl..];
    let icmpv4 = flow.protocol() == Protocol::Icmp && !flow.is_ipv6();
    let sum = if icmpv4 {
        ones_sum(&[transport])
    } else {
        let pseudo = pseudo_header(packet, flow.ip_number(), transport.len());
        ones_sum(&[&pseudo, transport])
    };
    assert_eq!(sum, 0xffff, "{:?} transport checksum", flow.protocol());
}

/// What the probe carries, read back with etherparse.
#[derive(Debug)]
struct Parsed {
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    protocol: u8,
    ip_id: Option<u16>,
    flow_label: Option<u32>,
    ports: Option<(u16, u16)>,
    tcp_seq: Option<u32>,
    udp_checksum: Option<u16>,
    echo: Option<(u16, u16)>,
    icmp_type_code_checksum: Option<(u8, u8, u16)>,
    len: usize,
}

fn parse(packet: &[u8]) -> Parsed {
    let headers = PacketHeaders::from_ip_slice(packet).expect("probe parses");
    let mut p = Parsed {
        src: IpAddr::from(V4_SRC),
        dst: IpAddr::from(V4_SRC),
        ttl: 0,
        protocol: 0,
        ip_id: None,
        flow_label: None,
        ports: None,
        tcp_seq: None,
        udp_checksum: None,
        echo: None,
        icmp_type_code_checksum: None,
        len: packet.len(),
    };
    match headers.net.expect("IP header") {
        NetHeaders::Ipv4(ip, _) => {
            // etherparse's own checksum agrees with the one we wrote.
            assert_eq!(ip.header_checksum, ip.calc_header_checksum());
            assert_eq!(usize::from(ip.total_len), packet.len());
            p.src = ip.source.into();
            p.dst = ip.destination.into();
            p.ttl = ip.time_to_live;
            p.protocol = ip.protocol.0;
            p.ip_id = Some(ip.identification);
        }
        NetHeaders::Ipv6(ip, _) => {
            assert_eq!(usize::from(ip.payload_length) + 40, packet.len());
            p.src = ip.source_addr().into();
            p.dst = ip.destination_addr().into();
            p.ttl = ip.hop_limit;
            p.protocol = ip.next_header.0;
            p.flow_label = Some(ip.flow_label.value());
        }
        NetHeaders::Arp(_) => panic!("not IP"),
    }
    let payload = headers.payload.slice();
    match headers.transport.expect("transport header") {
        TransportHeader::Tcp(tcp) => {
            assert!(tcp.syn && !tcp.ack && !tcp.rst);
            assert_ne!(tcp.window_size, 0);
            p.ports = Some((tcp.source_port, tcp.destination_port));
            p.tcp_seq = Some(tcp.sequence_number);
            let expected = match (p.src, p.dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    tcp.calc_checksum_ipv4_raw(s.octets(), d.octets(), payload)
                }
                (IpAddr::V6(s), IpAddr::V6(d)) => {
                    tcp.calc_checksum_ipv6_raw(s.octets(), d.octets(), payload)
                }
                _ => unreachable!(),
            };
            assert_eq!(tcp.checksum, expected.unwrap());
        }
        TransportHeader::Udp(udp) => {
            p.ports = Some((udp.source_port, udp.destination_port));
            p.udp_checksum = Some(udp.checksum);
            let expected = match (p.src, p.dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    udp.calc_checksum_ipv4_raw(s.octets(), d.octets(), payload)
                }
                (IpAddr::V6(s), IpAddr::V6(d)) => {
                    udp.calc_checksum_ipv6_raw(s.octets(), d.octets(), payload)
                }
                _ => unreachable!(),
            };
            assert_eq!(udp.checksum, expected.unwrap());
        }
        TransportHeader::Icmpv4(icmp) => {
            let Icmpv4Type::EchoRequest(echo) = icmp.icmp_type else {
                panic!("not an echo request: {icmp:?}");
            };
            let mut recomputed = icmp.clone();
            recomputed.update_checksum(payload);
            assert_eq!(icmp.checksum, recomputed.checksum);
            p.echo = Some((echo.id, echo.seq));
            p.icmp_type_code_checksum = Some((8, 0, icmp.checksum));
        }
        TransportHeader::Icmpv6(icmp) => {
            let Icmpv6Type::EchoRequest(echo) = icmp.icmp_type else {
                panic!("not an echo request: {icmp:?}");
            };
            p.echo = Some((echo.id, echo.seq));
            p.icmp_type_code_checksum = Some((128, 0, icmp.checksum));
        }
        TransportHeader::Igmp(_) => panic!("IGMP?"),
    }
    p
}

#[test]
fn probe_id_round_trips_for_every_ttl_and_attempt() {
    for t in 1..=255u8 {
        for a in 0..=255u8 {
            let id = ProbeId::new(ttl(t), a);
            assert_ne!(id.raw(), 0);
            assert_eq!(ProbeId::from_raw(id.raw()), Some(id));
            assert_eq!((id.ttl().get(), id.attempt()), (t, a));
        }
    }
    assert_eq!(ProbeId::new(ttl(3), 2).raw(), 0x0203);
    for attempt in 0..=255u16 {
        assert_eq!(
            ProbeId::from_raw(attempt << 8),
            None,
            "TTL byte 0 is never ours"
        );
    }
}

#[test]
fn ttl_rejects_zero() {
    assert_eq!(Ttl::new(0), None);
    assert_eq!(Ttl::try_from(0u8), Err(InvalidTtl(0)));
    assert!(serde_json::from_str::<Ttl>("0").is_err());
    assert_eq!(serde_json::to_string(&ttl(7)).unwrap(), "7");
    assert_eq!(Ttl::try_from(30u8).map(Ttl::get), Ok(30));
    assert_eq!(Ttl::range(Ttl::MIN, ttl(3)).count(), 3);
}

#[test]
fn tcp_seq_carries_salt_and_id() {
    let id = ProbeId::new(ttl(9), 4);
    let plain = TcpSeq::new(FlowSecret::ZERO, id);
    assert_eq!(plain.0, 0x0000_0409);
    let secret = FlowSecret::from_bits(0x0000_beef_0000_0010);
    let seq = TcpSeq::new(secret, id);
    assert_eq!(seq.0, 0xbeef_0419, "salt high, id shifted by 0x10 low");
    assert_eq!(seq.salt(), 0xbeef);
    assert_eq!(secret.decode(seq.wire_id()), Some(id));
    assert_eq!(TcpSeq::from_ack(seq.0.wrapping_add(1)), seq);
    // A SYN with seq u32::MAX is acknowledged with 0.
    assert_eq!(TcpSeq::from_ack(0).0, u32::MAX);
}

#[test]
fn family_mismatch_is_an_error() {
    let err = ProbeFlow::udp(sock(IpAddr::from(V4_SRC), 1), sock(v6(1), 2)).unwrap_err();
    assert!(matches!(err, ProbeError::FamilyMismatch { .. }));
    assert!(ProbeFlow::icmp(v6(1), IpAddr::from(V4_DST), 1).is_err());
}

#[test]
fn default_ports_match_the_system_probe() {
    assert_eq!(Protocol::Tcp.default_port(), Some(Port(80)));
    assert_eq!(Protocol::Udp.default_port(), Some(Port(33434)));
    assert_eq!(Protocol::Icmp.default_port(), None);
}

#[test]
fn flow_key_describes_the_flow() {
    let flows = all_flows();
    let k = flows[0].flow_key();
    assert_eq!(
        k,
        traceroute_common::FlowKey::v4(V4_DST, proto::TCP, 40001, 443)
    );
    let IpAddr::V6(d6) = v6(0x99) else {
        unreachable!()
    };
    assert_eq!(
        flows[5].flow_key(),
        traceroute_common::FlowKey::v6(d6.octets(), proto::ICMPV6, 0x0707, 0)
    );
    assert_eq!(flows[4].flow_key().local_port, 0x4242);
    assert_eq!(flows[3].flow_key().protocol, proto::UDP);
}

#[test]
fn every_probe_round_trips_through_etherparse() {
    for flow in all_flows() {
        for (t, a) in samples() {
            let packet = build_probe(&flow, t, a);
            let p = parse(&packet);
            let id = ProbeId::new(t, a);
            assert_eq!((p.src, p.dst), (flow.source(), flow.destination()));
            assert_eq!(p.ttl, t.get());
            assert_eq!(p.protocol, flow.ip_number());
            let secret = flow.secret();
            if flow.is_ipv6() {
                assert_eq!(p.ip_id, None);
            } else {
                assert_eq!(p.ip_id, Some(secret.ip_id(id)), "IPv4 ID = keyed ProbeId");
                assert_eq!(p.ip_id.and_then(|i| secret.probe_of_ip_id(i)), Some(id));
            }
            assert_eq!(p.len, usize::from(probe_len(&flow)));
            match flow.protocol() {
                Protocol::Tcp => {
                    let seq = TcpSeq(p.tcp_seq.unwrap());
                    assert_eq!(seq.salt(), secret.salt());
                    assert_eq!(secret.decode(seq.wire_id()), Some(id));
                }
                Protocol::Udp => {
                    assert_eq!(p.udp_checksum.and_then(|c| secret.decode(c)), Some(id));
                }
                Protocol::Icmp => {
                    let (ident, seq) = p.echo.unwrap();
                    assert_eq!(Some(ident), flow.icmp_identifier());
                    assert_eq!(secret.decode(seq), Some(id));
                }
            }
            if flow.protocol() != Protocol::Tcp {
                let header = packet.len() - 8 - UDP_PAYLOAD_LEN;
                let at = header + TOKEN_OFFSET;
                let token = u32::from_be_bytes(packet[at..at + 4].try_into().unwrap());
                assert_eq!(token, secret.token(), "payload carries the token");
            }
            if let Some((s, d)) = p.ports {
                assert_eq!(Some(Port(s)), flow.source_port());
                assert_eq!(Some(Port(d)), flow.destination_port());
            }
        }
    }
}

#[test]
fn checksums_are_valid_by_an_independent_sum() {
    for flow in all_flows() {
        for (t, a) in samples() {
            assert_checksums_valid(&build_probe(&flow, t, a), &flow);
        }
    }
}

#[test]
fn udp_checksum_encodes_every_probe_id() {
    // Exhaustive: every (ttl, attempt) yields checksum == the encoded
    // ProbeId, and the packet stays valid — including the 0xffff corner.
    for flow in all_flows()
        .into_iter()
        .filter(|f| f.protocol() == Protocol::Udp)
    {
        for t in 1..=255u8 {
            for a in 0..=255u8 {
                let packet = build_probe(&flow, ttl(t), a);
                let ihl = ip_header_len(&packet);
                let checksum = u16::from_be_bytes([packet[ihl + 6], packet[ihl + 7]]);
                assert_eq!(checksum, flow.secret().encode(ProbeId::new(ttl(t), a)));
                let pseudo = pseudo_header(&packet, proto::UDP, packet.len() - ihl);
                assert_eq!(ones_sum(&[&pseudo, &packet[ihl..]]), 0xffff);
            }
        }
    }
}

/// The fields a load balancer may hash, per protocol: addresses, protocol,
/// ports / ICMP type, code, identifier and checksum, IPv6 flow label, and
/// (harmlessly) the packet length.
fn hash_fields(p: &Parsed) -> String {
    format!(
        "{} {} {} {:?} {:?} {:?} {:?} {}",
        p.src,
        p.dst,
        p.protocol,
        p.ports,
        p.echo.map(|(ident, _)| ident),
        p.icmp_type_code_checksum,
        p.flow_label,
        p.len
    )
}

#[test]
fn paris_invariants_hold_within_a_flow() {
    for flow in all_flows() {
        let first = parse(&build_probe(&flow, Ttl::MIN, 0));
        let reference = hash_fields(&first);
        let mut ids = std::collections::HashSet::new();
        for (t, a) in samples() {
            let p = parse(&build_probe(&flow, t, a));
            assert_eq!(hash_fields(&p), reference, "{flow:?} ttl {t} attempt {a}");
            // ... while the identity field differs for every probe.
            let identity = p
                .tcp_seq
                .or(p.udp_checksum.map(u32::from))
                .or(p.echo.map(|(_, seq)| u32::from(seq)));
            assert!(
                ids.insert(identity),
                "identity repeated at ttl {t} attempt {a}"
            );
        }
        if flow.is_ipv6() {
            assert_eq!(first.flow_label, Some(0));
        }
    }
}

#[test]
fn icmp_checksum_is_constant_for_every_sequence() {
    for flow in all_flows()
        .into_iter()
        .filter(|f| f.protocol() == Protocol::Icmp)
    {
        let checksum_of = |t: u8, a: u8| {
            let packet = build_probe(&flow, ttl(t), a);
            let ihl = ip_header_len(&packet);
            u16::from_be_bytes([packet[ihl + 2], packet[ihl + 3]])
        };
        let reference = checksum_of(1, 0);
        for t in 1..=255u8 {
            for a in [0u8, 1, 2, 100, 255] {
                assert_eq!(checksum_of(t, a), reference);
            }
        }
    }
}

#[test]
fn different_flows_get_different_hash_fields() {
    let flows = all_flows();
    let a = parse(&build_probe(&flows[2], ttl(1), 0));
    let other = ProbeFlow::udp(
        sock(IpAddr::from(V4_SRC), 40099),
        sock(IpAddr::from(V4_DST), 33434),
    )
    .unwrap();
    let b = parse(&build_probe(&other, ttl(1), 0));
    assert_ne!(hash_fields(&a), hash_fields(&b));
}

#[test]
fn probe_sizes_are_small_and_fixed() {
    let sizes: Vec<usize> = all_flows()
        .iter()
        .map(|f| build_probe(f, ttl(1), 0).len())
        .collect();
    // TCP: IP + 20 + MSS option (4); UDP/ICMP: IP + 8 + 12 payload.
    assert_eq!(sizes, vec![44, 64, 40, 60, 40, 60]);
}

#[test]
fn secret_encoding_is_a_bijection_that_never_gives_zero() {
    let ids: Vec<ProbeId> = (1..=u16::MAX).filter_map(ProbeId::from_raw).collect();
    for bits in [0, 1, 0xfffe, 0xffff, 0x1234_5678_9abc_def0, u64::MAX] {
        let secret = FlowSecret::from_bits(bits);
        let mut seen = std::collections::HashSet::new();
        for &id in &ids {
            let wire = secret.encode(id);
            assert_ne!(wire, 0, "a UDP checksum of 0 means none");
            assert!(seen.insert(wire), "two ids on one wire value");
            assert_eq!(secret.decode(wire), Some(id));
            assert_eq!(secret.probe_of_ip_id(secret.ip_id(id)), Some(id));
        }
        assert_eq!(secret.decode(0), None);
    }
    // ZERO leaves every field plain.
    let id = ProbeId::new(ttl(5), 2);
    assert_eq!(FlowSecret::ZERO.encode(id), id.raw());
    assert_eq!(FlowSecret::ZERO.ip_id(id), id.raw());
}

#[test]
fn padded_probes_have_the_size_asked_and_keep_identity_checksums_and_paris() {
    for flow in all_flows() {
        let base = crate::probe::probe_len(&flow);
        if flow.protocol() == Protocol::Tcp {
            assert!(flow.with_size(1400).is_err(), "SYN probes are not padded");
            assert_eq!(flow.with_size(base).unwrap(), flow);
            continue;
        }
        assert!(flow.with_size(base - 1).is_err());
        for size in [base, base + 1, 1280, 1500, 9000] {
            let padded = flow.with_size(size).unwrap();
            assert_eq!(crate::probe::probe_len(&padded), size);
            let reference = hash_fields(&parse(&build_probe(&padded, Ttl::MIN, 0)));
            for (t, a) in samples() {
                let packet = build_probe(&padded, t, a);
                assert_eq!(packet.len(), usize::from(size));
                assert_checksums_valid(&packet, &padded);
                let p = parse(&packet);
                assert_eq!(hash_fields(&p), reference, "Paris within a padded flow");
                let wire = p.udp_checksum.or(p.echo.map(|(_, seq)| seq));
                let encoded = padded.secret().encode(ProbeId::new(t, a));
                assert_eq!(wire, Some(encoded), "{flow:?} {size}");
            }
        }
    }
}

#[test]
fn ordered_secrets_give_sequence_numbers_that_grow_with_the_probe_ids() {
    // The worst shifts (just below the cycle) would wrap at once without it.
    for bits in [0x1234_5678_0000_fffe_u64, 0x0000_0001_0000_c000, 7] {
        for highest in [
            ProbeId::new(ttl(30), 2),
            ProbeId::new(ttl(64), 99),
            ProbeId::new(ttl(255), 255),
        ] {
            let secret = FlowSecret::from_bits(bits).with_ids_in_order(highest);
            assert_eq!(secret.salt(), FlowSecret::from_bits(bits).salt());
            assert_eq!(secret.token(), FlowSecret::from_bits(bits).token());
            let seqs: Vec<u32> = (1..=highest.raw())
                .filter_map(ProbeId::from_raw)
                .map(|id| TcpSeq::new(secret, id).0)
                .collect();
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "{bits:#x} up to {highest}"
            );
            for id in (1..=highest.raw()).filter_map(ProbeId::from_raw) {
                assert_eq!(secret.decode(secret.encode(id)), Some(id));
            }
        }
    }
    // Without it, a shift near the top wraps within 100 queries.
    let plain = FlowSecret::from_bits(0xff00);
    let (a, b) = (ProbeId::new(ttl(64), 0), ProbeId::new(ttl(64), 1));
    assert!(TcpSeq::new(plain, b).0 < TcpSeq::new(plain, a).0);
}
