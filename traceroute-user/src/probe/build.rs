//! Writing a probe as a complete IP packet (for raw sockets with a
//! header-included option), checksums included.

use std::net::IpAddr;

use etherparse::{
    IpHeaders, IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header, PacketBuilder, TcpOptionElement,
    UdpHeader,
};

use super::flow::{ProbeFlow, Protocol};
use super::id::{FlowSecret, ProbeId, TcpSeq, Ttl};
use super::sack;

/// Advertised window of TCP probes (a common Linux value: a zero window looks
/// like a scanner to some firewalls).
pub const TCP_WINDOW: u16 = 64240;
/// Bytes after the UDP header: 2 that steer the checksum, the flow's 4-byte
/// token, constant filler.
pub const UDP_PAYLOAD_LEN: usize = 12;
/// Bytes after the ICMP echo header: 2 that keep the checksum constant, the
/// token, filler.
pub const ICMP_PAYLOAD_LEN: usize = 12;
/// Where the token starts, counted from the UDP or ICMP header (both 8 bytes).
pub const TOKEN_OFFSET: usize = 8 + 2;
/// Length of a TCP probe's header: 20 + the 4-byte MSS option.
const TCP_PROBE_LEN: usize = 24;

/// Constant filler after the token. Recognisable in captures.
const FILLER: [u8; 6] = *b"paris!";

/// IPv6 flow label of every probe. Constant (Paris); zero because routers that
/// hash the label fall back to the 5-tuple for label 0, which we control.
const FLOW_LABEL: Ipv6FlowLabel = Ipv6FlowLabel::ZERO;

/// Builds probe number `attempt` at `ttl` of `flow`: the whole IP packet.
///
/// Every field a load balancer hashes is the same for all `(ttl, attempt)`
/// of one flow, including the ICMP checksum; see the module docs for where
/// the [`ProbeId`] goes.
pub fn build_probe(flow: &ProbeFlow, ttl: Ttl, attempt: u8) -> Vec<u8> {
    let id = ProbeId::new(ttl, attempt);
    let secret = flow.secret();
    let wire_id = secret.encode(id);
    let builder = PacketBuilder::ip(ip_headers(flow, ttl, secret.ip_id(id)));
    let mut out = Vec::with_capacity(usize::from(probe_len(flow)));
    // Probes are at most an IP packet (`ProbeFlow::with_size` takes a u16),
    // so the builder's "too big" errors cannot happen.
    let written = match flow.protocol() {
        Protocol::Tcp if flow.connection().is_some() => {
            let connection = flow.connection().expect("checked");
            let (sport, dport) = ports(flow);
            builder
                .tcp(sport, dport, sack::seq_of(connection, id), TCP_WINDOW)
                .ack(connection.ack)
                .write(&mut out, &[0])
        }
        Protocol::Tcp => {
            let (sport, dport) = ports(flow);
            let mss = if flow.is_ipv6() { 1440 } else { 1460 };
            builder
                .tcp(sport, dport, TcpSeq::new(secret, id).0, TCP_WINDOW)
                .syn()
                .options(&[TcpOptionElement::MaximumSegmentSize(mss)])
                .expect("an MSS option fits in the TCP header")
                .write(&mut out, &[])
        }
        Protocol::Udp => {
            let (sport, dport) = ports(flow);
            let payload = udp_payload(flow, wire_id);
            builder.udp(sport, dport).write(&mut out, &payload)
        }
        Protocol::Icmp => {
            let ident = flow.icmp_identifier().unwrap_or_default();
            let payload = icmp_payload(secret, wire_id, flow.padding());
            if flow.is_ipv6() {
                builder
                    .icmpv6_echo_request(ident, wire_id)
                    .write(&mut out, &payload)
            } else {
                builder
                    .icmpv4_echo_request(ident, wire_id)
                    .write(&mut out, &payload)
            }
        }
    };
    written.expect("fixed-size probe fits in an IP packet");
    debug_assert_eq!(out.len(), usize::from(probe_len(flow)));
    out
}

/// Length of every probe of `flow` as its IP header states it (IPv6: 40 +
/// payload length); quotes of our probes must agree.
pub fn probe_len(flow: &ProbeFlow) -> u16 {
    let ip = if flow.is_ipv6() { 40 } else { 20 };
    let transport = match flow.protocol() {
        // A bare header and one byte of data.
        Protocol::Tcp if flow.connection().is_some() => 20 + 1,
        Protocol::Tcp => TCP_PROBE_LEN,
        Protocol::Udp => UdpHeader::LEN + UDP_PAYLOAD_LEN,
        Protocol::Icmp => 8 + ICMP_PAYLOAD_LEN,
    };
    (ip + transport) as u16 + flow.padding()
}

fn ports(flow: &ProbeFlow) -> (u16, u16) {
    let sport = flow.source_port().unwrap_or_default().get();
    let dport = flow.destination_port().unwrap_or_default().get();
    (sport, dport)
}

/// The TOS / traffic class byte of every probe: DSCP 0 (best effort), ECN 0
/// (not ECN-capable). A quote showing anything else was re-marked on the way.
pub const PROBE_TOS: u8 = 0;

fn ip_headers(flow: &ProbeFlow, ttl: Ttl, ip_id: u16) -> IpHeaders {
    let protocol = IpNumber(flow.ip_number());
    match (flow.source(), flow.destination()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            // Payload length and checksum are filled in by the builder.
            let mut ip = Ipv4Header::new(0, ttl.get(), protocol, src.octets(), dst.octets())
                .expect("empty payload");
            // Routers quote the IP header in full: the ID is checked on
            // every reply, and is our fallback identity when they quote less
            // than 8 transport bytes.
            ip.identification = ip_id;
            // `Ipv4Header::new` leaves DSCP and ECN at 0: PROBE_TOS.
            IpHeaders::Ipv4(ip, Default::default())
        }
        (src, dst) => {
            let ip = Ipv6Header {
                traffic_class: PROBE_TOS,
                flow_label: FLOW_LABEL,
                payload_length: 0,
                next_header: protocol,
                hop_limit: ttl.get(),
                source: v6_octets(src),
                destination: v6_octets(dst),
            };
            IpHeaders::Ipv6(ip, Default::default())
        }
    }
}

/// IPv6 octets of an address; [`ProbeFlow`] guarantees both are IPv6 here.
fn v6_octets(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
    }
}

/// The payload: steering word, token, filler, then `padding` zeros.
fn with_steering_word(word: u16, token: u32, padding: u16) -> Vec<u8> {
    let mut payload = vec![0u8; UDP_PAYLOAD_LEN + usize::from(padding)];
    payload[..2].copy_from_slice(&word.to_be_bytes());
    payload[2..6].copy_from_slice(&token.to_be_bytes());
    payload[6..UDP_PAYLOAD_LEN].copy_from_slice(&FILLER);
    payload
}

/// UDP payload whose first two bytes make the UDP checksum equal `wire_id`.
///
/// Why: the checksum is the only UDP field that is not hashed yet is quoted
/// in the first 8 bytes. One's-complement sums are linear: with a zero word
/// the sum is `!c0` (`c0` its checksum), and adding the word `!target + c0`
/// brings it to `!c0 + c0 + !target = !target`, i.e. checksum `target`.
fn udp_payload(flow: &ProbeFlow, wire_id: u16) -> Vec<u8> {
    let token = flow.secret().token();
    let zero = with_steering_word(0, token, flow.padding());
    let (sport, dport) = ports(flow);
    let header = UdpHeader {
        source_port: sport,
        destination_port: dport,
        length: (UdpHeader::LEN + zero.len()) as u16,
        checksum: 0,
    };
    let c0 = match (flow.source(), flow.destination()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            header.calc_checksum_ipv4_raw(s.octets(), d.octets(), &zero)
        }
        (s, d) => header.calc_checksum_ipv6_raw(v6_octets(s), v6_octets(d), &zero),
    }
    .expect("the payload fits in an IP packet");
    with_steering_word(ones_add(!wire_id, c0), token, flow.padding())
}

/// ICMP echo payload whose first two bytes are `!seq`: `seq + !seq` is the
/// same (negative zero) for every seq, so the ICMP checksum — which some load
/// balancers hash together with the identifier — never changes within a flow.
fn icmp_payload(secret: FlowSecret, wire_id: u16, padding: u16) -> Vec<u8> {
    with_steering_word(!wire_id, secret.token(), padding)
}

/// One's-complement 16-bit addition (end-around carry).
fn ones_add(a: u16, b: u16) -> u16 {
    let sum = u32::from(a) + u32::from(b);
    ((sum & 0xffff) + (sum >> 16)) as u16
}
