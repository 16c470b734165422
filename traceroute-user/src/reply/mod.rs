//! Decoding what the capture delivers: replies to our probes, and our own
//! probes leaving (so their kernel TX timestamps can be matched).
//!
//! [`Reply::parse`] takes the bytes from the outer IP header on (possibly
//! truncated, as captured) and recovers what identifies the probe they belong
//! to: its [`FlowKey`] as we sent it and the wire fields that carry its
//! [`ProbeId`] under the flow's [`FlowSecret`] (see [`crate::probe`]).
//! Malformed, truncated or foreign packets give a [`ReplyError`], never a
//! panic. [`Reply::identify`] then checks every secret-bearing field the
//! packet has against the flow, and names the probe.

use std::net::IpAddr;

use etherparse::err::{ip::LaxHeaderSliceError, tcp::HeaderSliceError as TcpSliceError};
use etherparse::{LaxIpSlice, TcpOptionElement, TcpSlice};
use traceroute_common::{EventKind, FlowKey, proto, tcp};

mod extensions;

use crate::path::{InterfaceInfo, MplsLabel};
use extensions::extensions;
use crate::probe::{FlowSecret, ProbeFlow, ProbeId, Protocol, TOKEN_OFFSET, TcpSeq, probe_len};

use traceroute_common::icmp::{self, HEADER_LEN as ICMP_HEADER_LEN};

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
    /// Our probe's source address as quoted: a NAT on the way that does not
    /// translate quotes back (RFC 5508) leaves its own address here.
    pub source: IpAddr,
    /// The TOS / traffic class byte as quoted (DSCP << 2 | ECN).
    pub tos: u8,
}

/// A decoded reply (or egress probe) matched to the probe it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// What the packet is. [`EventKind::Probe`] for our own outgoing probes.
    pub kind: EventKind,
    /// Outer source address: the responding router or destination (ourselves
    /// for [`EventKind::Probe`]).
    pub source: IpAddr,
    /// Outer TTL / hop limit (for a probe: the TTL it was sent with).
    pub ttl: u8,
    /// ICMP / ICMPv6 `(type, code)` when the packet is ICMP.
    pub icmp: Option<(u8, u8)>,
    /// The probe's flow as we sent it (remote = probe destination).
    pub flow: FlowKey,
    /// The identity field as on the wire (UDP checksum, echo sequence; for
    /// TCP the low half of [`Reply::tcp_seq`]); `None` when not present.
    pub wire_id: Option<u16>,
    /// TCP only: the sequence number of our probe (from the quote, from
    /// `ack - 1` of a SYN-ACK/RST, or from the probe itself).
    pub tcp_seq: Option<TcpSeq>,
    /// IPv4 only: the identification field of our probe (quoted or own).
    pub ip_id: Option<u16>,
    /// UDP and echo probes: the flow token from the payload, when quoted or
    /// echoed.
    pub token: Option<u32>,
    /// ICMP errors only: facts about the quoted probe.
    pub quote: Option<Quote>,
    /// MPLS label stack from ICMP extensions, outermost first.
    pub mpls_labels: Vec<MplsLabel>,
    /// Interfaces the router described in ICMP extensions (RFC 5837).
    pub interfaces: Vec<InterfaceInfo>,
    /// "Fragmentation needed" (ICMPv4 unreachable code 4) or ICMPv6 packet
    /// too big: the MTU of the link the probe did not fit (`None` when the
    /// router left it 0, as pre-RFC 1191 routers do).
    pub next_hop_mtu: Option<u32>,
    /// A bare ACK's first SACK block's left edge: inside a connection, the
    /// sequence number of the probe that made the destination answer.
    pub sack_left: Option<u32>,
}

/// The outer headers of any captured packet, decodable as a reply or not:
/// for logs and the `capture` command.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP protocol number of the transport (after IPv6 extension headers).
    pub protocol: u8,
    pub ttl: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
}

impl Summary {
    /// The IP header and, when present, the ICMP type and code; `None` when
    /// not even the IP header parses.
    pub fn parse(bytes: &[u8]) -> Option<Summary> {
        let ip = parse_ip(bytes, ReplyError::Outer).ok()?;
        let is_icmp = matches!(
            (ip.version, ip.protocol),
            (4, proto::ICMP) | (6, proto::ICMPV6)
        );
        let type_code = match ip.payload {
            [ty, code, ..] if is_icmp => Some((*ty, *code)),
            _ => None,
        };
        Some(Summary {
            src: ip.source,
            dst: ip.destination,
            protocol: ip.protocol,
            ttl: ip.ttl,
            icmp_type: type_code.map(|t| t.0),
            icmp_code: type_code.map(|t| t.1),
        })
    }
}

/// Why a decoded packet is not taken as belonging to a probe of its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unverified {
    #[error("it names another flow, or no field identifies a probe")]
    NoIdentity,
    #[error("a field that carries the flow's secret does not match")]
    WrongSecret,
    #[error("the quote does not fit the probe (length or TTL)")]
    Implausible,
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
    /// TOS (v4) / traffic class (v6): DSCP << 2 | ECN.
    tos: u8,
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
                    tos: (h.dcp().value() << 2) | h.ecn().value(),
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
                    tos: h.traffic_class(),
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

/// `checksum` after the address `from` it covers is replaced by `to`
/// (RFC 1624: HC' = ~(~HC + ~m + m'), over 16-bit words). A UDP checksum of
/// 0 means "none" and stays 0; a computed 0 is sent as 0xffff.
fn checksum_replace(checksum: u16, from: IpAddr, to: IpAddr) -> u16 {
    if checksum == 0 {
        return 0;
    }
    let words = |a: IpAddr| -> Vec<u16> {
        let bytes = match a {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        bytes
            .chunks(2)
            .map(|w| u16::from_be_bytes([w[0], w[1]]))
            .collect()
    };
    let mut sum = u32::from(!checksum);
    for w in words(from) {
        sum += u32::from(!w);
    }
    for w in words(to) {
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    match !(sum as u16) {
        0 => 0xffff,
        c => c,
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
    wire_id: Option<u16>,
    tcp_seq: Option<TcpSeq>,
    token: Option<u32>,
}

/// The token in a UDP or echo transport slice, if it reaches that far.
fn token_of(t: &[u8]) -> Option<u32> {
    (t.len() >= TOKEN_OFFSET + 4).then(|| be32(t, TOKEN_OFFSET))
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
        if t[0] != icmp::echo_request(version) {
            return Err(ReplyError::QuotedIcmpNotEcho(t[0]));
        }
        return Ok(ProbeFields {
            flow: flow_key(destination, protocol, be16(t, 4), 0),
            wire_id: (t.len() >= 8).then(|| be16(t, 6)),
            tcp_seq: None,
            token: token_of(t),
        });
    }
    if protocol != proto::TCP && protocol != proto::UDP {
        return Err(ReplyError::UnsupportedProtocol(protocol));
    }
    need("transport ports", t, 4)?;
    let flow = flow_key(destination, protocol, be16(t, 0), be16(t, 2));
    let (wire_id, tcp_seq, token) = match (protocol, t.len() >= 8) {
        (proto::TCP, true) => {
            let seq = TcpSeq(be32(t, 4));
            (Some(seq.wire_id()), Some(seq), None)
        }
        // The UDP checksum is the identity field.
        (_, true) => (Some(be16(t, 6)), None, token_of(t)),
        (_, false) => (None, None, None),
    };
    Ok(ProbeFields {
        flow,
        wire_id,
        tcp_seq,
        token,
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

    /// The probe of `flow` this packet answers (or is), after checking that
    /// it quotes that flow, every field that carries the flow's secret, and
    /// that the quote fits the probe.
    pub fn identify(&self, flow: &ProbeFlow) -> Result<ProbeId, Unverified> {
        // The capture delivered it for this flow; the decoder must agree.
        if self.flow != flow.flow_key() {
            return Err(Unverified::NoIdentity);
        }
        if let Some(connection) = flow.connection() {
            return self.identify_in_connection(flow, connection);
        }
        let secret = flow.secret();
        if let Some(seq) = self.tcp_seq
            && seq.salt() != secret.salt()
        {
            return Err(Unverified::WrongSecret);
        }
        let id = match (self.wire_id, self.ip_id) {
            (Some(wire), _) => secret.decode(self.unrewritten_wire_id(wire, flow)),
            // Quoted too briefly for the identity field: the IPv4 ID.
            (None, Some(ip_id)) => secret.probe_of_ip_id(ip_id),
            (None, None) => return Err(Unverified::NoIdentity),
        }
        .ok_or(Unverified::WrongSecret)?;
        // Some boxes renumber IP IDs (NATs among them). With the 32-bit
        // token quoted as well the probe is still proven ours (and the
        // change is reported); without it, the ID is part of the proof.
        let token_quoted = self.token.is_some() && self.token == Some(secret.token());
        if self.ip_id.is_some_and(|ip_id| ip_id != secret.ip_id(id)) && !token_quoted {
            return Err(Unverified::WrongSecret);
        }
        self.check_token(flow.protocol(), secret)?;
        self.check_quote(flow, id)?;
        Ok(id)
    }

    /// The quote, if any, fits probe `id` of `flow`: its length, and a TTL
    /// no higher than the probe was sent with.
    fn check_quote(&self, flow: &ProbeFlow, id: ProbeId) -> Result<(), Unverified> {
        if let Some(quote) = self.quote {
            let len = probe_len(flow);
            // Some BSD-derived stacks quote the length in host byte order.
            let len_fits = quote.ip_len == len || quote.ip_len == len.swap_bytes();
            // A router sees the probe with at most the TTL it was sent with.
            if !len_fits || quote.ttl > id.ttl().get() {
                return Err(Unverified::Implausible);
            }
        }
        Ok(())
    }

    /// A probe inside `connection`: named by its sequence number, quoted by
    /// a router or acknowledged by a SACK block of the destination. Anything
    /// else the connection carries (the handshake, a reset) answers no probe.
    fn identify_in_connection(
        &self,
        flow: &ProbeFlow,
        connection: crate::probe::sack::Connection,
    ) -> Result<ProbeId, Unverified> {
        let seq = match (self.kind, self.quote, self.tcp_seq, self.sack_left) {
            (EventKind::TcpAck, _, _, Some(left)) => left,
            // Quoted by a router, or the probe itself leaving.
            (EventKind::Probe, _, Some(seq), _) | (_, Some(_), Some(seq), _) => seq.0,
            _ => return Err(Unverified::NoIdentity),
        };
        let id = crate::probe::sack::probe_of(connection, seq).ok_or(Unverified::WrongSecret)?;
        if self
            .ip_id
            .is_some_and(|ip_id| ip_id != flow.secret().ip_id(id))
        {
            return Err(Unverified::WrongSecret);
        }
        self.check_quote(flow, id)?;
        Ok(id)
    }

    /// The identity field as we sent it. A UDP checksum covers the source
    /// address; when the quote shows a NAT rewrote it (RFC 1624 incremental
    /// update), the rewrite is undone so the probe is still recognised.
    fn unrewritten_wire_id(&self, wire: u16, flow: &ProbeFlow) -> u16 {
        match self.quote {
            Some(quote) if flow.protocol() == Protocol::Udp && quote.source != flow.source() => {
                checksum_replace(wire, quote.source, flow.source())
            }
            _ => wire,
        }
    }

    fn check_token(&self, protocol: Protocol, secret: FlowSecret) -> Result<(), Unverified> {
        if protocol == Protocol::Tcp {
            return Ok(());
        }
        // Echo replies return the whole payload, and ICMPv6 errors quote as
        // much of the probe as fits in 1280 bytes (RFC 4443 2.4(c)): both
        // always have the token. IPv4 routers may quote only 8 bytes.
        let always_there = self.kind == EventKind::EchoReply
            || self.kind == EventKind::Probe
            || (self.source.is_ipv6() && self.quote.is_some());
        match self.token {
            Some(token) if token == secret.token() => Ok(()),
            None if !always_there => Ok(()),
            _ => Err(Unverified::WrongSecret),
        }
    }

    fn base(ip: &Ip<'_>, kind: EventKind, fields: ProbeFields) -> Reply {
        Reply {
            kind,
            source: ip.source,
            ttl: ip.ttl,
            icmp: None,
            flow: fields.flow,
            wire_id: fields.wire_id,
            tcp_seq: fields.tcp_seq,
            ip_id: None,
            token: fields.token,
            quote: None,
            mpls_labels: Vec::new(),
            interfaces: Vec::new(),
            next_hop_mtu: None,
            sack_left: None,
        }
    }

    /// One of our probes leaving: the identity is in its own headers.
    fn own_probe(ip: &Ip<'_>, icmp: Option<(u8, u8)>) -> Result<Reply, ReplyError> {
        need("probe transport header", ip.payload, 8)?;
        let fields = probe_fields(ip.version, ip.destination, ip.protocol, ip.payload)?;
        let mut reply = Self::base(ip, EventKind::Probe, fields);
        reply.icmp = icmp;
        reply.ip_id = ip.id;
        Ok(reply)
    }

    fn tcp(ip: &Ip<'_>) -> Result<Reply, ReplyError> {
        let tcp = TcpSlice::from_slice(ip.payload).map_err(ReplyError::Tcp)?;
        let flags = ip.payload[13];
        // Ours: a SYN probe, or a probe inside a connection (a bare ACK
        // with data; the destination's ACKs carry none).
        let in_connection_probe = tcp::is_bare_ack(flags) && !tcp.payload().is_empty();
        if (tcp.syn() && !tcp.ack()) || in_connection_probe {
            return Self::own_probe(ip, None);
        }
        let kind = if tcp.rst() {
            EventKind::TcpRst
        } else if tcp.syn() && tcp.ack() {
            EventKind::TcpSynAck
        } else if tcp::is_bare_ack(flags) {
            EventKind::TcpAck
        } else {
            return Err(ReplyError::UnsupportedTcp(flags));
        };
        // The reply comes from the destination: our ports are swapped.
        let flow = flow_key(
            ip.source,
            proto::TCP,
            tcp.destination_port(),
            tcp.source_port(),
        );
        // Inside a connection the probe is named by the SACK block, not by
        // the acknowledgment number (which stays at the hole). Otherwise the
        // acknowledgment number (if valid) is our sequence number + 1.
        let in_connection = kind == EventKind::TcpAck;
        let tcp_seq =
            (tcp.ack() && !in_connection).then(|| TcpSeq::from_ack(tcp.acknowledgment_number()));
        let fields = ProbeFields {
            flow,
            wire_id: tcp_seq.map(TcpSeq::wire_id),
            tcp_seq,
            token: None,
        };
        let mut reply = Self::base(ip, kind, fields);
        if in_connection {
            reply.sack_left = tcp.options_iterator().find_map(|o| match o {
                Ok(TcpOptionElement::SelectiveAcknowledgement((left, _), _)) => Some(left),
                _ => None,
            });
        }
        Ok(reply)
    }

    fn icmp(ip: &Ip<'_>) -> Result<Reply, ReplyError> {
        let icmp = ip.payload;
        need("ICMP header", icmp, ICMP_HEADER_LEN)?;
        let (icmp_type, code) = (icmp[0], icmp[1]);
        if icmp_type == icmp::echo_request(ip.version) {
            return Self::own_probe(ip, Some((icmp_type, code)));
        }
        let kind = icmp::reply_kind(ip.version, icmp_type)
            .ok_or(ReplyError::UnsupportedIcmp { icmp_type, code })?;
        if kind == EventKind::EchoReply {
            // Echo replies carry our identifier and sequence back.
            let fields = ProbeFields {
                flow: flow_key(ip.source, ip.protocol, be16(icmp, 4), 0),
                wire_id: Some(be16(icmp, 6)),
                tcp_seq: None,
                token: token_of(icmp),
            };
            let mut reply = Self::base(ip, kind, fields);
            reply.icmp = Some((icmp_type, code));
            return Ok(reply);
        }
        Self::icmp_error(ip, kind, (icmp_type, code))
    }

    /// Time exceeded / destination unreachable / packet too big: the probe
    /// is in the quote.
    fn icmp_error(ip: &Ip<'_>, kind: EventKind, type_code: (u8, u8)) -> Result<Reply, ReplyError> {
        let body = &ip.payload[ICMP_HEADER_LEN..];
        // RFC 4884 length of the original datagram: in 32-bit words at byte 5
        // for ICMPv4, in 64-bit words at byte 4 for ICMPv6. It is only valid
        // from 128 bytes on; smaller values are junk from old routers (these
        // bytes were "unused"), so they count as absent.
        let too_big = kind == EventKind::PacketTooBig
            || (ip.version == 4
                && kind == EventKind::DestUnreachable
                && type_code.1 == icmp::V4_FRAGMENTATION_NEEDED);
        // Packet too big has the MTU in bytes 4..8; no length field.
        let length_field = match (ip.version, kind) {
            (_, EventKind::PacketTooBig) => 0,
            (4, _) => usize::from(ip.payload[5]) * 4,
            _ => usize::from(ip.payload[4]) * 8,
        };
        let original_len = if length_field >= extensions::COMPAT_OFFSET {
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
        reply.quote = Some(Quote {
            ttl: inner.ttl,
            ip_len: inner.len,
            transport_len: inner.payload.len(),
            original_datagram_len: (original_len > 0).then_some(original_len),
            source: inner.source,
            tos: inner.tos,
        });
        let found = extensions(body, original_len);
        reply.mpls_labels = found.mpls_labels;
        reply.interfaces = found.interfaces;
        if too_big {
            let mtu = if ip.version == 4 {
                u32::from(be16(ip.payload, 6))
            } else {
                be32(ip.payload, 4)
            };
            reply.next_hop_mtu = (mtu != 0).then_some(mtu);
        }
        Ok(reply)
    }
}

#[cfg(test)]
mod tests;
