//! The probing loop of one trace: send paced probes for every (attempt, TTL) in
//! flight at once, feed what the capture delivers into the [`TraceState`], stop
//! when it is settled or the total deadline passes.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;
use traceroute_common::EventKind;

use super::pacer::Pacer;
use super::sender::ProbeSender;
use super::state::{Answer, Plan, ProbeKey, TraceState};
use crate::capture::{CapturedPacket, FlowSubscription, MonotonicTime, kind_name};
use crate::probe::{ProbeFlow, Protocol, build_probe};
use crate::reply::Reply;

/// Upper bound on how long the loop sleeps between checks, so silent hops can
/// be given up early as soon as the evidence allows.
const TICK: Duration = Duration::from_millis(10);

/// What one trace did, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceStats {
    pub probes_sent: u64,
    /// Answers taken, by what they were.
    pub answers: BTreeMap<&'static str, u64>,
    pub ignored: Ignored,
}

/// What did not fit the trace: counted, never fatal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ignored {
    /// Packets our parser rejects (malformed, truncated before the probe id).
    pub malformed: u64,
    /// Parsed, but naming no probe of ours (unknown id, wrong TCP salt: spoofed or stray).
    pub unmatched: u64,
    /// Second answers to an already answered probe.
    pub duplicates: u64,
}

pub struct Engine<'a> {
    pub flow: &'a ProbeFlow,
    pub sender: &'a ProbeSender,
    pub pacer: &'a Pacer,
    pub plan: Plan,
    /// The trace gives up at this point whatever is still pending.
    pub deadline: Instant,
}

impl Engine<'_> {
    pub async fn run(
        &self,
        subscription: &mut FlowSubscription,
    ) -> std::io::Result<(TraceState, TraceStats)> {
        let mut state = TraceState::new(self.plan);
        let mut stats = TraceStats::default();
        loop {
            state.settle(MonotonicTime::now());
            if state.is_done() || Instant::now() >= self.deadline {
                break;
            }
            let want_send = state.next_to_send().is_some();
            let nap = tokio::time::sleep(
                TICK.min(self.deadline.saturating_duration_since(Instant::now())),
            );
            tokio::select! {
                biased;
                packet = subscription.recv() => match packet {
                    Some(p) => self.on_packet(&mut state, &mut stats, &p),
                    None => break,
                },
                _ = self.pacer.wait(), if want_send => {
                    if let Some(key) = state.next_to_send() {
                        self.send(&mut state, key)?;
                        stats.probes_sent += 1;
                    }
                }
                _ = nap => {}
            }
        }
        stats.ignored.duplicates = state.duplicates();
        Ok((state, stats))
    }

    fn send(&self, state: &mut TraceState, key: ProbeKey) -> std::io::Result<()> {
        let packet = build_probe(self.flow, key.ttl, key.attempt);
        // Stamped before the call: without a kernel egress stamp the RTT errs
        // long by the syscall, never short.
        let at = MonotonicTime::now();
        match self.sender.send(&packet, self.flow.destination()) {
            Ok(()) => {
                state.on_sent(key, at);
                Ok(())
            }
            // A full socket buffer: try again at the next slot.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn on_packet(&self, state: &mut TraceState, stats: &mut TraceStats, packet: &CapturedPacket) {
        let ignored = &mut stats.ignored;
        let Ok(reply) = Reply::parse(&packet.bytes) else {
            ignored.malformed += 1;
            return;
        };
        let id = match self.flow.protocol() {
            Protocol::Tcp => reply.probe_id_with_salt(self.flow.salt()),
            _ => reply.probe_id,
        };
        let Some(id) = id else {
            ignored.unmatched += 1;
            return;
        };
        let key = ProbeKey {
            attempt: id.attempt(),
            ttl: id.ttl(),
        };
        if packet.kind == EventKind::Probe {
            state.on_tx_stamp(key, packet.timestamp);
            return;
        }
        let answer = answer_of(&reply, packet, self.flow.destination());
        if state.on_answer(key, answer) {
            *stats.answers.entry(kind_name(packet.kind)).or_default() += 1;
        } else if !state.probes().contains_key(&key) {
            ignored.unmatched += 1;
        }
    }
}

/// Reads a reply as an answer: who, when, and whether the path ends there.
fn answer_of(reply: &Reply, packet: &CapturedPacket, target: IpAddr) -> Answer {
    let destination = match packet.kind {
        EventKind::TcpSynAck | EventKind::TcpRst | EventKind::EchoReply => true,
        // Port unreachable (UDP) or any unreachable from the target itself.
        EventKind::DestUnreachable => reply.source == target,
        EventKind::TimeExceeded | EventKind::Probe => false,
    };
    Answer {
        from: reply.source,
        received: packet.timestamp,
        icmp_type: reply.icmp.map(|(t, _)| t),
        icmp_code: reply.icmp.map(|(_, c)| c),
        reply_ttl: reply.ttl,
        destination,
        // An unreachable from a router ends the path too: nothing gets past it.
        terminal: destination || packet.kind == EventKind::DestUnreachable,
        mpls_labels: reply.mpls_labels.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use etherparse::PacketBuilder;
    use traceroute_common::Direction;

    use super::*;
    use crate::probe::Ttl;
    use crate::trace::state::Status;

    const SRC: [u8; 4] = [198, 18, 1, 1];
    const DST: [u8; 4] = [198, 18, 5, 2];
    const HOP: [u8; 4] = [198, 18, 2, 2];

    fn engine_for<'a>(
        flow: &'a ProbeFlow,
        sender: &'a ProbeSender,
        pacer: &'a Pacer,
    ) -> Engine<'a> {
        Engine {
            flow,
            sender,
            pacer,
            plan: Plan {
                first_ttl: Ttl::MIN,
                max_ttl: Ttl::new(8).unwrap(),
                attempts: 2,
                timeout: Duration::from_secs(1),
            },
            deadline: Instant::now() + Duration::from_secs(5),
        }
    }

    fn key(attempt: u8, ttl: u8) -> ProbeKey {
        ProbeKey {
            attempt,
            ttl: Ttl::new(ttl).unwrap(),
        }
    }

    fn packet(kind: EventKind, bytes: Vec<u8>, at_ms: u64) -> CapturedPacket {
        CapturedPacket {
            timestamp: MonotonicTime::from_nanos(1_000_000_000 + at_ms * 1_000_000),
            ifindex: 2,
            direction: if kind == EventKind::Probe {
                Direction::Egress
            } else {
                Direction::Ingress
            },
            kind,
            cookie: 1,
            packet_len: bytes.len() as u32,
            bytes,
        }
    }

    /// An ICMP error from `from` quoting the first `quote` bytes of `probe`.
    fn icmp_error(from: [u8; 4], ty: u8, code: u8, probe: &[u8], quote: usize) -> Vec<u8> {
        let b = PacketBuilder::ipv4(from, SRC, 60).icmpv4_raw(ty, code, [0; 4]);
        let mut out = Vec::new();
        b.write(&mut out, &probe[..quote]).unwrap();
        out
    }

    fn udp_flow() -> ProbeFlow {
        ProbeFlow::udp(
            SocketAddr::from((SRC, 40001)),
            SocketAddr::from((DST, 33434)),
        )
        .unwrap()
    }

    fn state_with_sent(engine: &Engine<'_>, sent_ms: u64) -> TraceState {
        let mut state = TraceState::new(engine.plan);
        for attempt in 0..2 {
            for ttl in 1..=8 {
                state.on_sent(
                    key(attempt, ttl),
                    MonotonicTime::from_nanos(1_000_000_000 + sent_ms * 1_000_000),
                );
            }
        }
        state
    }

    /// Runs `check` with an engine for `flow` whose 2 x 8 probes were all sent at 0 ms.
    fn with_engine(
        flow: ProbeFlow,
        check: impl FnOnce(&Engine<'_>, &mut TraceState, &mut TraceStats),
    ) {
        let (sender, pacer) = (ProbeSender::new(), Pacer::new(100));
        let engine = engine_for(&flow, &sender, &pacer);
        let mut state = state_with_sent(&engine, 0);
        let mut stats = TraceStats::default();
        check(&engine, &mut state, &mut stats);
    }

    /// Feeds one captured packet of `kind` seen at `at_ms` to the engine.
    fn feed(
        engine: &Engine<'_>,
        state: &mut TraceState,
        stats: &mut TraceStats,
        kind: EventKind,
        bytes: Vec<u8>,
        at_ms: u64,
    ) {
        engine.on_packet(state, stats, &packet(kind, bytes, at_ms));
    }

    fn answer(state: &TraceState, attempt: u8, ttl: u8) -> &crate::trace::state::Answer {
        match &state.probes()[&key(attempt, ttl)].status {
            Status::Answered(a) => a,
            other => panic!("probe ({attempt}, {ttl}) not answered: {other:?}"),
        }
    }

    #[test]
    fn udp_replies_map_to_their_probe_and_rtt_uses_the_kernel_tx_stamp() {
        let flow = udp_flow();
        let probe2 = build_probe(&flow, Ttl::new(2).unwrap(), 1);
        let probe5 = build_probe(&flow, Ttl::new(5).unwrap(), 0);
        with_engine(flow, |engine, state, stats| {
            feed(engine, state, stats, EventKind::Probe, probe2.clone(), 1);
            // A router quoting only the RFC 792 minimum (IP header + 8 bytes).
            let te = icmp_error(HOP, 11, 0, &probe2, 28);
            feed(engine, state, stats, EventKind::TimeExceeded, te, 4);
            let rtt = state.probes()[&key(1, 2)].rtt();
            assert_eq!(rtt, Some(Duration::from_millis(3)), "kernel RX - kernel TX");
            let a = answer(state, 1, 2);
            assert_eq!(a.from, IpAddr::from(HOP));
            assert!(!a.destination && !a.terminal);

            let unreach = icmp_error(DST, 3, 3, &probe5, probe5.len());
            feed(engine, state, stats, EventKind::DestUnreachable, unreach, 6);
            let a = answer(state, 0, 5);
            assert!(
                a.destination && a.terminal,
                "port unreachable from the target"
            );
            assert_eq!(state.end_ttl(), Ttl::new(5));
            assert_eq!(stats.ignored, Ignored::default());
            assert_eq!(stats.answers.get("time_exceeded"), Some(&1));
            assert_eq!(stats.answers.get("dest_unreachable"), Some(&1));
        });
    }

    #[test]
    fn mpls_labels_from_icmp_extensions_reach_the_answer() {
        let flow = udp_flow();
        let probe = build_probe(&flow, Ttl::new(3).unwrap(), 0);
        // RFC 4884: the quote padded to 128 bytes (length 32 words in byte 5), then
        // an extension (version 2) with one MPLS object (class 1, c-type 1).
        let mut body = probe[..28].to_vec();
        body.resize(128, 0);
        body.extend_from_slice(&[0x20, 0, 0, 0, 0, 8, 1, 1]);
        body.extend_from_slice(&(16005u32 << 12 | 1 << 8 | 7).to_be_bytes());
        let b = PacketBuilder::ipv4(HOP, SRC, 60).icmpv4_raw(11, 0, [0, 32, 0, 0]);
        let mut te = Vec::new();
        b.write(&mut te, &body).unwrap();
        with_engine(flow, |engine, state, stats| {
            feed(engine, state, stats, EventKind::TimeExceeded, te, 2);
            let labels = &answer(state, 0, 3).mpls_labels;
            assert_eq!(labels.len(), 1);
            assert_eq!(labels[0].label, 16005);
            assert!(labels[0].bottom_of_stack);
            assert_eq!(labels[0].ttl, 7);
        });
    }

    #[test]
    fn unreachable_from_a_router_ends_the_path_without_reaching_it() {
        let flow = udp_flow();
        let probe = build_probe(&flow, Ttl::new(3).unwrap(), 0);
        with_engine(flow, |engine, state, stats| {
            let prohibited = icmp_error(HOP, 3, 13, &probe, 28);
            feed(
                engine,
                state,
                stats,
                EventKind::DestUnreachable,
                prohibited,
                2,
            );
            let a = answer(state, 0, 3);
            assert!(!a.destination && a.terminal);
            assert_eq!(state.end_ttl(), Ttl::new(3));
        });
    }

    #[test]
    fn tcp_replies_with_a_foreign_salt_are_ignored_and_counted() {
        let flow = ProbeFlow::tcp(SocketAddr::from((SRC, 40001)), SocketAddr::from((DST, 80)))
            .unwrap()
            .with_salt(0x5151);
        let id = crate::probe::ProbeId::new(Ttl::new(4).unwrap(), 1);
        let synack = |salt: u16| {
            let ack = crate::probe::TcpSeq::new(salt, id).0.wrapping_add(1);
            let b = PacketBuilder::ipv4(DST, SRC, 60)
                .tcp(80, 40001, 9, 1024)
                .syn()
                .ack(ack);
            let mut out = Vec::new();
            b.write(&mut out, &[]).unwrap();
            out
        };
        with_engine(flow, |engine, state, stats| {
            feed(
                engine,
                state,
                stats,
                EventKind::TcpSynAck,
                synack(0x1111),
                2,
            );
            assert_eq!(stats.ignored.unmatched, 1, "spoofed/stray SYN-ACK");
            assert_eq!(state.probes()[&key(1, 4)].status, Status::Pending);
            feed(
                engine,
                state,
                stats,
                EventKind::TcpSynAck,
                synack(0x5151),
                3,
            );
            assert!(answer(state, 1, 4).destination);
            feed(
                engine,
                state,
                stats,
                EventKind::TcpSynAck,
                synack(0x5151),
                4,
            );
            assert_eq!(state.duplicates(), 1);
            feed(engine, state, stats, EventKind::TcpRst, vec![0x45, 0, 1], 5);
            assert_eq!(stats.ignored.malformed, 1);
        });
    }
}
