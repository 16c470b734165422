//! Decoding what the capture delivers: replies to our probes, and our own
//! probes leaving (so their kernel TX timestamps can be matched).
//!
//! [`Reply::parse`] takes the bytes from the outer IP header on (possibly
//! truncated, as captured) and recovers the probe they belong to: its
//! [`FlowKey`] as we sent it and its [`ProbeId`] (see [`crate::probe`] for
//! where each protocol carries it). Malformed, truncated or foreign packets
//! give a [`ReplyError`], never a panic.
//!
//! TCP: the [`ProbeId`] comes from the low half of the probe's sequence
//! number, so [`Reply::tcp_seq`] is exposed as well and the caller must check
//! [`TcpSeq::salt`] against its flow's salt before trusting the id (a SYN-ACK
//! or RST of an unrelated connection on the same ports would not carry it).

use std::net::IpAddr;

use etherparse::err::{ip::LaxHeaderSliceError, tcp::HeaderSliceError as TcpSliceError};
use etherparse::{LaxIpSlice, TcpSlice};
use serde::{Deserialize, Serialize};
use traceroute_common::{EventKind, FlowKey, proto};

use crate::probe::{ProbeId, TcpSeq};

/// ICMP message types we decode.
mod icmp_type {
    pub const V4_ECHO_REPLY: u8 = 0;
    pub const V4_DEST_UNREACHABLE: u8 = 3;
    pub const V4_ECHO_REQUEST: u8 = 8;
    pub const V4_TIME_EXCEEDED: u8 = 11;
    pub const V6_DEST_UNREACHABLE: u8 = 1;
    pub const V6_TIME_EXCEEDED: u8 = 3;
    pub const V6_ECHO_REQUEST: u8 = 128;
    pub const V6_ECHO_REPLY: u8 = 129;
}

/// ICMP header length (type, code, checksum, 4 bytes that depend on the type).
const ICMP_HEADER_LEN: usize = 8;
/// RFC 4884: where extensions start when a router does not fill in the length
/// field (pre-RFC 4884 behaviour, still common).
const ICMP_EXTENSION_COMPAT_OFFSET: usize = 128;

/// One MPLS label stack entry from an ICMP extension (RFC 4950).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MplsLabel {
    /// 20-bit label value.
    pub label: u32,
    /// Traffic class (formerly EXP) bits.
    pub exp: u8,
    /// Bottom-of-stack flag.
    pub bottom_of_stack: bool,
    /// TTL of the label stack entry.
    pub ttl: u8,
}

/// What the quoted copy of our probe inside an ICMP error tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quote {
    /// TTL / hop limit our probe had when the router saw it (usually 0 or 1
    /// for time exceeded; more means a router in between did not decrement).
    pub ttl: u8,
    /// Length of our probe according to the quoted IP header.
    pub ip_len: u16,
    /// Bytes of the quoted transport header present (8 is the RFC 792 minimum).
    pub transport_len: usize,
    /// RFC 4884 "original datagram" length in bytes when the router set it.
    pub original_datagram_len: Option<usize>,
}

/// A decoded reply (or egress probe) matched to the probe it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// What the packet is. [`EventKind::Probe`] for our own outgoing probes.
    pub kind: EventKind,
    /// Outer source address: the responding router or destination (ourselves
    /// for [`EventKind::Probe`]).
    pub source: IpAddr,
    /// Outer destination address.
    pub destination: IpAddr,
    /// Outer TTL / hop limit (for a probe: the TTL it was sent with).
    pub ttl: u8,
    /// ICMP / ICMPv6 `(type, code)` when the packet is ICMP.
    pub icmp: Option<(u8, u8)>,
    /// The probe's flow as we sent it (remote = probe destination).
    pub flow: FlowKey,
    /// The probe's identity; `None` when the packet does not carry a valid one.
    /// For TCP check [`Reply::tcp_seq`]'s salt first.
    pub probe_id: Option<ProbeId>,
    /// TCP only: the sequence number of our probe (from the quote, from
    /// `ack - 1` of a SYN-ACK/RST, or from the probe itself).
    pub tcp_seq: Option<TcpSeq>,
    /// IPv4 only: the identification field of our probe (quoted or own).
    pub ip_id: Option<u16>,
    /// ICMP errors only: facts about the quoted probe.
    pub quote: Option<Quote>,
    /// MPLS label stack from ICMP extensions, outermost first.
    pub mpls_labels: Vec<MplsLabel>,
}

/// Why a captured packet could not be decoded into a [`Reply`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("outer IP header: {0}")]
    Outer(#[source] LaxHeaderSliceError),
    #[error("quoted IP header: {0}")]
    Quoted(#[source] LaxHeaderSliceError),
    #[error("IPv6 extension headers could not be parsed")]
    ExtensionHeaders,
    #[error("IP fragment (probes and their replies are never fragmented)")]
    Fragment,
    #[error("truncated {layer}: need {needed} bytes, have {available}")]
    Truncated {
        layer: &'static str,
        needed: usize,
        available: usize,
    },
    #[error("TCP header: {0}")]
    Tcp(#[source] TcpSliceError),
    #[error("IP protocol {0} is not one of our probes or replies")]
    UnsupportedProtocol(u8),
    #[error("ICMP type {icmp_type} code {code} is not a reply we handle")]
    UnsupportedIcmp { icmp_type: u8, code: u8 },
    #[error("TCP segment with flags {0:#04x} is neither a SYN, a SYN-ACK nor a RST")]
    UnsupportedTcp(u8),
    #[error("ICMP error quotes an IPv{quoted} packet inside IPv{outer}")]
    QuoteVersionMismatch { outer: u8, quoted: u8 },
    #[error("quoted ICMP type {0} is not an echo request")]
    QuotedIcmpNotEcho(u8),
}

/// An IP layer (outer or quoted), reduced to what we use.
struct Ip<'a> {
    version: u8,
    source: IpAddr,
    destination: IpAddr,
    ttl: u8,
    /// IPv4 identification (None for IPv6).
    id: Option<u16>,
    /// Length per the header (v4 total length; v6 40 + payload length).
    len: u16,
    protocol: u8,
    payload: &'a [u8],
}

impl<'a> Ip<'a> {
    fn from_slice(slice: LaxIpSlice<'a>) -> Ip<'a> {
        let payload = slice.payload();
        match &slice {
            LaxIpSlice::Ipv4(v4) => {
                let h = v4.header();
                Ip {
                    version: 4,
                    source: h.source_addr().into(),
                    destination: h.destination_addr().into(),
                    ttl: h.ttl(),
                    id: Some(h.identification()),
                    len: h.total_len(),
                    protocol: payload.ip_number.0,
                    payload: payload.payload,
                }
            }
            LaxIpSlice::Ipv6(v6) => {
                let h = v6.header();
                Ip {
                    version: 6,
                    source: h.source_addr().into(),
                    destination: h.destination_addr().into(),
                    ttl: h.hop_limit(),
                    id: None,
                    len: h.payload_length().saturating_add(40),
                    protocol: payload.ip_number.0,
                    payload: payload.payload,
                }
            }
        }
    }
}

/// Parses an IP layer, rejecting fragments and broken extension headers.
fn parse_ip(
    bytes: &[u8],
    wrap: fn(LaxHeaderSliceError) -> ReplyError,
) -> Result<Ip<'_>, ReplyError> {
    let (slice, ext_error) = LaxIpSlice::from_slice(bytes).map_err(wrap)?;
    // Why only v4's offset: a first fragment still starts with the transport
    // header; for IPv6 any fragment header that fragments is refused.
    let fragment = match &slice {
        LaxIpSlice::Ipv4(v4) => v4.header().fragments_offset().value() != 0,
        LaxIpSlice::Ipv6(v6) => v6.is_payload_fragmented(),
    };
    if ext_error.is_some() {
        return Err(ReplyError::ExtensionHeaders);
    }
    if fragment {
        return Err(ReplyError::Fragment);
    }
    Ok(Ip::from_slice(slice))
}

fn need(layer: &'static str, bytes: &[u8], needed: usize) -> Result<(), ReplyError> {
    if bytes.len() < needed {
        Err(ReplyError::Truncated {
            layer,
            needed,
            available: bytes.len(),
        })
    } else {
        Ok(())
    }
}

fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn flow_key(remote: IpAddr, protocol: u8, local_port: u16, remote_port: u16) -> FlowKey {
    match remote {
        IpAddr::V4(a) => FlowKey::v4(a.octets(), protocol, local_port, remote_port),
        IpAddr::V6(a) => FlowKey::v6(a.octets(), protocol, local_port, remote_port),
    }
}

/// Transport fields of one of our probes, read from its first bytes.
struct ProbeFields {
    flow: FlowKey,
    probe_id: Option<ProbeId>,
    tcp_seq: Option<TcpSeq>,
}

/// Reads our probe's identity from its transport header (`t`, at least the
/// ports; the id needs 8 bytes). `destination` is the probe's destination.
fn probe_fields(
    version: u8,
    destination: IpAddr,
    protocol: u8,
    t: &[u8],
) -> Result<ProbeFields, ReplyError> {
    let is_icmp =
        (version == 4 && protocol == proto::ICMP) || (version == 6 && protocol == proto::ICMPV6);
    if is_icmp {
        need("quoted ICMP header", t, 6)?;
        let echo = if version == 4 {
            icmp_type::V4_ECHO_REQUEST
        } else {
            icmp_type::V6_ECHO_REQUEST
        };
        if t[0] != echo {
            return Err(ReplyError::QuotedIcmpNotEcho(t[0]));
        }
        let probe_id = (t.len() >= 8)
            .then(|| ProbeId::from_raw(be16(t, 6)))
            .flatten();
        return Ok(ProbeFields {
            flow: flow_key(destination, protocol, be16(t, 4), 0),
            probe_id,
            tcp_seq: None,
        });
    }
    if protocol != proto::TCP && protocol != proto::UDP {
        return Err(ReplyError::UnsupportedProtocol(protocol));
    }
    need("transport ports", t, 4)?;
    let flow = flow_key(destination, protocol, be16(t, 0), be16(t, 2));
    let (probe_id, tcp_seq) = match (protocol, t.len() >= 8) {
        (proto::TCP, true) => {
            let seq = TcpSeq(be32(t, 4));
            (seq.probe_id(), Some(seq))
        }
        // The UDP checksum is the id.
        (_, true) => (ProbeId::from_raw(be16(t, 6)), None),
        (_, false) => (None, None),
    };
    Ok(ProbeFields {
        flow,
        probe_id,
        tcp_seq,
    })
}

impl Reply {
    /// Decodes `bytes` (from the outer IP header on). See the module docs.
    ///
    /// The direction is read from the content: a TCP SYN without ACK, a UDP
    /// datagram or an echo request is one of our probes ([`EventKind::Probe`]);
    /// a capture that also sees foreign traffic should pass only egress
    /// packets of registered flows as probes.
    pub fn parse(bytes: &[u8]) -> Result<Reply, ReplyError> {
        let ip = parse_ip(bytes, ReplyError::Outer)?;
        match (ip.version, ip.protocol) {
            (4, proto::ICMP) | (6, proto::ICMPV6) => Self::icmp(&ip),
            (_, proto::TCP) => Self::tcp(&ip),
            (_, proto::UDP) => Self::own_probe(&ip, None),
            (_, other) => Err(ReplyError::UnsupportedProtocol(other)),
        }
    }

    /// The probe id, trusted only if the TCP salt matches `salt` (the salt of
    /// this reply's flow); non-TCP ids are returned as they are.
    pub fn probe_id_with_salt(&self, salt: u16) -> Option<ProbeId> {
        match self.tcp_seq {
            Some(seq) if seq.salt() != salt => None,
            _ => self.probe_id,
        }
    }

    fn base(ip: &Ip<'_>, kind: EventKind, fields: ProbeFields) -> Reply {
        Reply {
            kind,
            source: ip.source,
            destination: ip.destination,
            ttl: ip.ttl,
            icmp: None,
            flow: fields.flow,
            probe_id: fields.probe_id,
            tcp_seq: fields.tcp_seq,
            ip_id: None,
            quote: None,
            mpls_labels: Vec::new(),
        }
    }

    /// One of our probes leaving: the identity is in its own headers.
    fn own_probe(ip: &Ip<'_>, icmp: Option<(u8, u8)>) -> Result<Reply, ReplyError> {
        need("probe transport header", ip.payload, 8)?;
        let fields = probe_fields(ip.version, ip.destination, ip.protocol, ip.payload)?;
        let mut reply = Self::base(ip, EventKind::Probe, fields);
        reply.icmp = icmp;
        reply.ip_id = ip.id;
        if reply.probe_id.is_none() {
            reply.probe_id = ip.id.and_then(ProbeId::from_raw);
        }
        Ok(reply)
    }

    fn tcp(ip: &Ip<'_>) -> Result<Reply, ReplyError> {
        let tcp = TcpSlice::from_slice(ip.payload).map_err(ReplyError::Tcp)?;
        let flags = ip.payload[13];
        if tcp.syn() && !tcp.ack() {
            return Self::own_probe(ip, None);
        }
        let kind = if tcp.rst() {
            EventKind::TcpRst
        } else if tcp.syn() && tcp.ack() {
            EventKind::TcpSynAck
        } else {
            return Err(ReplyError::UnsupportedTcp(flags));
        };
        // The reply comes from the destination: our ports are swapped, and
        // the acknowledgment number (if valid) is our sequence number + 1.
        let tcp_seq = tcp
            .ack()
            .then(|| TcpSeq::from_ack(tcp.acknowledgment_number()));
        let fields = ProbeFields {
            flow: flow_key(
                ip.source,
                proto::TCP,
                tcp.destination_port(),
                tcp.source_port(),
            ),
            probe_id: tcp_seq.and_then(TcpSeq::probe_id),
            tcp_seq,
        };
        Ok(Self::base(ip, kind, fields))
    }

    fn icmp(ip: &Ip<'_>) -> Result<Reply, ReplyError> {
        let icmp = ip.payload;
        need("ICMP header", icmp, ICMP_HEADER_LEN)?;
        let (icmp_type, code) = (icmp[0], icmp[1]);
        let v4 = ip.version == 4;
        use icmp_type::*;
        let kind = match (v4, icmp_type) {
            (true, V4_TIME_EXCEEDED) | (false, V6_TIME_EXCEEDED) => EventKind::TimeExceeded,
            (true, V4_DEST_UNREACHABLE) | (false, V6_DEST_UNREACHABLE) => {
                EventKind::DestUnreachable
            }
            (true, V4_ECHO_REPLY) | (false, V6_ECHO_REPLY) => EventKind::EchoReply,
            (true, V4_ECHO_REQUEST) | (false, V6_ECHO_REQUEST) => {
                return Self::own_probe(ip, Some((icmp_type, code)));
            }
            _ => return Err(ReplyError::UnsupportedIcmp { icmp_type, code }),
        };
        if kind == EventKind::EchoReply {
            // Echo replies carry our identifier and sequence back.
            let fields = ProbeFields {
                flow: flow_key(ip.source, ip.protocol, be16(icmp, 4), 0),
                probe_id: ProbeId::from_raw(be16(icmp, 6)),
                tcp_seq: None,
            };
            let mut reply = Self::base(ip, kind, fields);
            reply.icmp = Some((icmp_type, code));
            return Ok(reply);
        }
        Self::icmp_error(ip, kind, (icmp_type, code))
    }

    /// Time exceeded / destination unreachable: the probe is in the quote.
    fn icmp_error(ip: &Ip<'_>, kind: EventKind, type_code: (u8, u8)) -> Result<Reply, ReplyError> {
        let body = &ip.payload[ICMP_HEADER_LEN..];
        // RFC 4884 length of the original datagram: in 32-bit words at byte 5
        // for ICMPv4, in 64-bit words at byte 4 for ICMPv6. It is only valid
        // from 128 bytes on; smaller values are junk from old routers (these
        // bytes were "unused"), so they count as absent.
        let length_field = if ip.version == 4 {
            usize::from(ip.payload[5]) * 4
        } else {
            usize::from(ip.payload[4]) * 8
        };
        let original_len = if length_field >= ICMP_EXTENSION_COMPAT_OFFSET {
            length_field
        } else {
            0
        };
        let quote = match original_len {
            0 => body,
            n => &body[..n.min(body.len())],
        };
        let inner = parse_ip(quote, ReplyError::Quoted)?;
        if inner.version != ip.version {
            return Err(ReplyError::QuoteVersionMismatch {
                outer: ip.version,
                quoted: inner.version,
            });
        }
        let fields = probe_fields(
            inner.version,
            inner.destination,
            inner.protocol,
            inner.payload,
        )?;
        let mut reply = Self::base(ip, kind, fields);
        reply.icmp = Some(type_code);
        reply.ip_id = inner.id;
        if reply.probe_id.is_none() {
            // The quote is too short for the transport id: the IPv4 ID is ours too.
            reply.probe_id = inner.id.and_then(ProbeId::from_raw);
        }
        reply.quote = Some(Quote {
            ttl: inner.ttl,
            ip_len: inner.len,
            transport_len: inner.payload.len(),
            original_datagram_len: (original_len > 0).then_some(original_len),
        });
        reply.mpls_labels = mpls_labels(body, original_len);
        Ok(reply)
    }
}

/// MPLS labels from the ICMP extension structure (RFC 4884 / RFC 4950) after
/// the quoted datagram, if any. Anything malformed just yields fewer labels.
fn mpls_labels(body: &[u8], original_len: usize) -> Vec<MplsLabel> {
    let start = if original_len > 0 {
        original_len
    } else {
        ICMP_EXTENSION_COMPAT_OFFSET
    };
    let mut labels = Vec::new();
    // Extension header: version 2 in the high nibble, reserved, checksum.
    let Some(ext) = body.get(start..) else {
        return labels;
    };
    if ext.len() < 4 || ext[0] >> 4 != 2 {
        return labels;
    }
    let mut objects = &ext[4..];
    // Each object: length (with its 4-byte header), class-num, c-type.
    while objects.len() >= 4 {
        let len = usize::from(be16(objects, 0));
        let (class, c_type) = (objects[2], objects[3]);
        if len < 4 || len > objects.len() {
            break;
        }
        if class == 1 && c_type == 1 {
            for entry in objects[4..len].chunks_exact(4) {
                let v = be32(entry, 0);
                labels.push(MplsLabel {
                    label: v >> 12,
                    exp: ((v >> 9) & 0x7) as u8,
                    bottom_of_stack: (v >> 8) & 1 == 1,
                    ttl: v as u8,
                });
            }
        }
        objects = &objects[len..];
    }
    labels
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv6Addr, SocketAddr};

    use etherparse::{IpHeaders, IpNumber, Ipv4Header, PacketBuilder};

    use super::*;
    use crate::probe::{ProbeFlow, Ttl, build_probe};

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
        vec![
            ProbeFlow::tcp(s(m4, 40001), s(t4, 443))
                .unwrap()
                .with_salt(0xabcd),
            ProbeFlow::udp(s(m4, 40002), s(t4, 33434)).unwrap(),
            ProbeFlow::icmp(m4, t4, 0x4242).unwrap(),
            ProbeFlow::tcp(s(m6, 40003), s(t6, 80))
                .unwrap()
                .with_salt(0x5555),
            ProbeFlow::udp(s(m6, 40004), s(t6, 33435)).unwrap(),
            ProbeFlow::icmp(m6, t6, 0x0707).unwrap(),
        ]
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
                assert_eq!(r.probe_id, Some(ProbeId::new(ttl(t), a)));
                let q = r.quote.unwrap();
                assert_eq!(q.ttl, t);
                assert_eq!(q.transport_len, 8);
                assert_eq!(usize::from(q.ip_len), probe.len());
                assert_eq!(q.original_datagram_len, None);
                if flow.protocol() == crate::probe::Protocol::Tcp {
                    assert_eq!(r.tcp_seq.unwrap().salt(), flow.salt());
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
            assert_eq!(r.probe_id, Some(ProbeId::new(ttl(4), 3)));
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
                let packet = icmp_error(&flow, dst, (t, code), &quote_of(&probe, 8));
                let r = Reply::parse(&packet).unwrap();
                assert_eq!(r.kind, EventKind::DestUnreachable);
                assert_eq!(r.icmp, Some((t, code)));
                assert_eq!(r.source, dst);
                assert_eq!(r.flow, flow.flow_key());
                assert_eq!(r.probe_id, Some(ProbeId::new(ttl(9), 1)));
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
                assert_eq!(r.probe_id, expected, "{flow:?} with {transport} bytes");
            }
        }
    }

    #[test]
    fn echo_replies_v4_and_v6() {
        let f4 = &flows()[2];
        let mut out = Vec::new();
        PacketBuilder::ipv4(TARGET4, ME4, 57)
            .icmpv4_echo_reply(0x4242, ProbeId::new(ttl(12), 1).raw())
            .write(&mut out, &[1, 2, 3, 4])
            .unwrap();
        let r = Reply::parse(&out).unwrap();
        assert_eq!(r.kind, EventKind::EchoReply);
        assert_eq!(r.flow, f4.flow_key());
        assert_eq!(r.probe_id, Some(ProbeId::new(ttl(12), 1)));
        assert_eq!((r.ttl, r.icmp), (57, Some((0, 0))));

        let f6 = &flows()[5];
        let mut out = Vec::new();
        PacketBuilder::ipv6(target6().octets(), me6().octets(), 60)
            .icmpv6_echo_reply(0x0707, ProbeId::new(ttl(3), 0).raw())
            .write(&mut out, &[9; 12])
            .unwrap();
        let r = Reply::parse(&out).unwrap();
        assert_eq!(r.kind, EventKind::EchoReply);
        assert_eq!(r.flow, f6.flow_key());
        assert_eq!(r.probe_id, Some(ProbeId::new(ttl(3), 0)));
        assert_eq!(r.icmp, Some((129, 0)));
    }

    fn tcp_answer(flow: &ProbeFlow, probe_ttl: u8, attempt: u8, rst: bool) -> Vec<u8> {
        let seq = TcpSeq::new(flow.salt(), ProbeId::new(ttl(probe_ttl), attempt)).0;
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
                assert_eq!(r.tcp_seq.unwrap().salt(), flow.salt());
                assert_eq!(r.probe_id, Some(ProbeId::new(ttl(14), 2)));
                assert_eq!(r.probe_id_with_salt(flow.salt()), r.probe_id);
                assert_eq!(r.probe_id_with_salt(flow.salt() ^ 1), None);
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
        assert!(matches!(
            Reply::parse(&out),
            Err(ReplyError::UnsupportedTcp(0x10))
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
            assert_eq!(
                (r.source, r.destination),
                (flow.source(), flow.destination())
            );
            assert_eq!(r.ttl, 7);
            assert_eq!(r.flow, flow.flow_key());
            assert_eq!(r.probe_id, Some(ProbeId::new(ttl(7), 5)));
            assert_eq!(
                r.ip_id,
                (!flow.is_ipv6()).then_some(ProbeId::new(ttl(7), 5).raw())
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
                assert_eq!(r.probe_id, Some(ProbeId::new(ttl(3), 1)));
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
        for flow in flows().into_iter().filter(|f| f.is_ipv6()) {
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
                assert_eq!(r.probe_id, Some(ProbeId::new(ttl(2), 0)));
                assert_eq!(r.quote.unwrap().transport_len, 8);
            }
            // Hop-by-hop anywhere else is malformed: a clear error.
            let misplaced = with_ipv6_ext(&with_ipv6_ext(&quote, 0), 60);
            let packet = icmp_error(&flow, router_of(&flow), (3, 0), &misplaced);
            assert_eq!(Reply::parse(&packet), Err(ReplyError::ExtensionHeaders));
            // Extension headers on the outer packet as well.
            let packet = icmp_error(&flow, router_of(&flow), (3, 0), &quote_of(&probe, 8));
            let r = Reply::parse(&with_ipv6_ext(&packet, 0)).unwrap();
            assert_eq!(r.probe_id, Some(ProbeId::new(ttl(2), 0)));
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
        let probe = build_probe(flow, ttl(5), 0);
        let mut body = quote_of(&probe, 8);
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
        assert_eq!(r.probe_id, Some(ProbeId::new(ttl(5), 0)));
        // A length field below 128 is junk: ignored, the quote still parses.
        let junk = icmp_error_raw(flow, router_of(flow), (11, 0), [0, 3, 0, 0], &body);
        let r = Reply::parse(&junk).unwrap();
        assert_eq!(r.quote.unwrap().original_datagram_len, None);
        assert_eq!(r.probe_id, Some(ProbeId::new(ttl(5), 0)));
        // Compat: no length, extensions at 128.
        let compat = icmp_error_raw(flow, router_of(flow), (11, 0), [0; 4], &body);
        let r = Reply::parse(&compat).unwrap();
        assert_eq!(r.mpls_labels, expected);
        assert_eq!(r.probe_id, Some(ProbeId::new(ttl(5), 0)));
        // IPv6: length in 64-bit words in byte 4 (16 * 8 = 128).
        let f6 = &flows()[4];
        let mut body6 = quote_of(&build_probe(f6, ttl(5), 0), 8);
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
}
