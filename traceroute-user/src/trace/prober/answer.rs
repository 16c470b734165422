//! What a reply says as an answer to a probe: who answered, when, whether
//! the path ends there, and what the quote shows changed on the way.

use std::net::IpAddr;
use std::time::Duration;

use traceroute_common::EventKind;

use crate::capture::{CapturedPacket, Stamp};
use crate::clock::MonotonicTime;
use crate::path::{InterfaceInfo, MplsLabel, Rewritten, TcpAnswer};
use crate::probe::{PROBE_TOS, ProbeFlow, ProbeId};
use crate::reply::{Quote, Reply};

/// What answered a probe.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub from: IpAddr,
    /// When the reply was seen (kernel or socket timestamp).
    pub received: MonotonicTime,
    /// Which reading `received` is.
    pub stamp: Stamp,
    pub kind: EventKind,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    /// TTL / hop limit of the reply packet.
    pub reply_ttl: u8,
    /// The destination itself answered (SYN-ACK, RST, echo reply, port unreachable).
    pub destination: bool,
    /// Nothing beyond this hop will answer (destination, or unreachable from a router).
    pub terminal: bool,
    pub mpls_labels: Vec<MplsLabel>,
    /// Interfaces the router described (RFC 5837).
    pub interface_info: Vec<InterfaceInfo>,
    /// Round-trip time from the send it answers.
    pub rtt: Option<Duration>,
    /// What the reply's quote shows changed on the way (ICMP errors only).
    pub rewritten: Option<Rewritten>,
}

impl Answer {
    /// How a TCP destination answered; `None` for every other answer.
    pub fn tcp_answer(&self) -> Option<TcpAnswer> {
        match self.kind {
            EventKind::TcpSynAck => Some(TcpAnswer::SynAck),
            EventKind::TcpRst => Some(TcpAnswer::Rst),
            EventKind::TcpAck => Some(TcpAnswer::Ack),
            _ => None,
        }
    }
}

/// Reads a reply as an answer: who, when, and whether the path ends there.
pub(super) fn answer_of(
    reply: &Reply,
    packet: &CapturedPacket,
    flow: &ProbeFlow,
    id: ProbeId,
    rtt: Duration,
) -> Answer {
    let target = flow.destination();
    let destination = match packet.kind {
        EventKind::TcpSynAck | EventKind::TcpRst | EventKind::EchoReply | EventKind::TcpAck => true,
        // Port unreachable (UDP) or any unreachable from the target itself.
        EventKind::DestUnreachable => reply.source == target,
        EventKind::TimeExceeded | EventKind::Probe | EventKind::PacketTooBig => false,
    };
    Answer {
        from: reply.source,
        received: packet.timestamp,
        stamp: packet.stamp,
        kind: packet.kind,
        icmp_type: reply.icmp.map(|(t, _)| t),
        icmp_code: reply.icmp.map(|(_, c)| c),
        reply_ttl: reply.ttl,
        destination,
        // An unreachable from a router ends the path too: nothing gets past it.
        terminal: destination || packet.kind == EventKind::DestUnreachable,
        mpls_labels: reply.mpls_labels.clone(),
        interface_info: reply.interfaces.clone(),
        rtt: Some(rtt),
        rewritten: reply
            .quote
            .and_then(|quote| rewritten(&quote, reply.ip_id, flow, id)),
    }
}

/// What `quote` (with the quoted IPv4 ID) shows changed from probe `id` as
/// `flow` sent it, if anything.
fn rewritten(
    quote: &Quote,
    ip_id: Option<u16>,
    flow: &ProbeFlow,
    id: ProbeId,
) -> Option<Rewritten> {
    let changed = |seen: u8, sent: u8| (seen != sent).then_some(seen);
    let sent_ip_id = flow.secret().ip_id(id);
    let out = Rewritten {
        source_address: (quote.source != flow.source()).then_some(quote.source),
        dscp: changed(quote.tos >> 2, PROBE_TOS >> 2),
        ecn: changed(quote.tos & 0b11, PROBE_TOS & 0b11),
        ip_id: ip_id.filter(|seen| *seen != sent_ip_id),
    };
    (out != Rewritten::default()).then_some(out)
}
