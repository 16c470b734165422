//! The probing loop of one trace: send paced probes for every (attempt, TTL) in
//! flight at once, feed what the capture delivers into the [`TraceState`], stop
//! when it is settled or the total deadline passes.

use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;
use traceroute_common::EventKind;

use super::pacer::Pacer;
use super::sender::ProbeSender;
use super::state::{Answer, Plan, ProbeKey, TraceState};
use crate::capture::{CapturedPacket, FlowSubscription, MonotonicTime};
use crate::probe::{ProbeFlow, Protocol, build_probe};
use crate::reply::Reply;

/// Upper bound on how long the loop sleeps between checks, so silent hops can
/// be given up early as soon as the evidence allows.
const TICK: Duration = Duration::from_millis(10);

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
    ) -> std::io::Result<(TraceState, Ignored)> {
        let mut state = TraceState::new(self.plan);
        let mut ignored = Ignored::default();
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
                    Some(p) => self.on_packet(&mut state, &mut ignored, &p),
                    None => break,
                },
                _ = self.pacer.wait(), if want_send => {
                    if let Some(key) = state.next_to_send() {
                        self.send(&mut state, key)?;
                    }
                }
                _ = nap => {}
            }
        }
        ignored.duplicates = state.duplicates();
        Ok((state, ignored))
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

    fn on_packet(&self, state: &mut TraceState, ignored: &mut Ignored, packet: &CapturedPacket) {
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
        if !state.on_answer(key, answer) && !state.probes().contains_key(&key) {
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
    }
}
