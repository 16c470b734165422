//! The bookkeeping of one trace, free of I/O so it can be tested with a fake clock.
//!
//! Probes are (attempt, ttl) pairs sent attempt-major: attempt 0 for every TTL,
//! then attempt 1, ... Each is pending until answered or settled as lost. The
//! trace is done when every probe that matters is settled: those at or below the
//! lowest TTL at which the path ended (destination reached or a terminal
//! unreachable), or all of them when it never ended.
//!
//! Adaptive waiting: a silent hop is given up early once a probe with a higher
//! TTL has been answered and the silent one has waited well past the slowest RTT
//! seen so far — the answer would have come by now. Without such evidence a probe
//! waits the full per-hop timeout, and the total deadline bounds everything.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use crate::capture::MonotonicTime;
use crate::probe::Ttl;
use crate::reply::MplsLabel;

/// Which probe: attempt number (0-based, one per run) and TTL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProbeKey {
    pub attempt: u8,
    pub ttl: Ttl,
}

/// What answered a probe.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub from: IpAddr,
    /// When the reply was seen (kernel or socket timestamp).
    pub received: MonotonicTime,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    /// TTL / hop limit of the reply packet.
    pub reply_ttl: u8,
    /// The destination itself answered (SYN-ACK, RST, echo reply, port unreachable).
    pub destination: bool,
    /// Nothing beyond this hop will answer (destination, or unreachable from a router).
    pub terminal: bool,
    /// MPLS label stack the router reported in ICMP extensions (RFC 4950).
    pub mpls_labels: Vec<MplsLabel>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Status {
    Pending,
    Answered(Answer),
    Lost,
}

#[derive(Clone, Debug)]
pub struct Probe {
    /// Userspace clock when the send call returned.
    pub sent: MonotonicTime,
    /// Kernel egress stamp, when the capture saw the probe leave.
    pub tx_stamp: Option<MonotonicTime>,
    pub status: Status,
}

impl Probe {
    /// Round-trip time: reply stamp minus the best send stamp we have.
    pub fn rtt(&self) -> Option<Duration> {
        let Status::Answered(a) = &self.status else {
            return None;
        };
        a.received.since(self.tx_stamp.unwrap_or(self.sent))
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Lowest TTL probed: 1 for a trace, the last one for end-to-end probes.
    pub first_ttl: Ttl,
    pub max_ttl: Ttl,
    pub attempts: u8,
    /// Longest wait for one probe's answer.
    pub timeout: Duration,
}

/// Extra wait past the slowest RTT before a silent hop is given up early.
const EARLY_GIVE_UP_SLACK: Duration = Duration::from_millis(50);

#[derive(Debug)]
pub struct TraceState {
    plan: Plan,
    probes: BTreeMap<ProbeKey, Probe>,
    /// Lowest TTL whose answer ended the path.
    end_ttl: Option<Ttl>,
    slowest_rtt: Duration,
    duplicates: u64,
}

impl TraceState {
    pub fn new(plan: Plan) -> Self {
        Self {
            plan,
            probes: BTreeMap::new(),
            end_ttl: None,
            slowest_rtt: Duration::ZERO,
            duplicates: 0,
        }
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The TTLs that matter: up to where the path ended, else up to max_ttl.
    pub fn last_ttl(&self) -> Ttl {
        self.end_ttl.unwrap_or(self.plan.max_ttl)
    }

    pub fn end_ttl(&self) -> Option<Ttl> {
        self.end_ttl
    }

    /// The next probe to send, in attempt-major order, skipping TTLs beyond the end.
    pub fn next_to_send(&self) -> Option<ProbeKey> {
        let (first, last) = (self.plan.first_ttl, self.last_ttl());
        (0..self.plan.attempts)
            .flat_map(|attempt| Ttl::range(first, last).map(move |ttl| ProbeKey { attempt, ttl }))
            .find(|k| !self.probes.contains_key(k))
    }

    pub fn on_sent(&mut self, key: ProbeKey, at: MonotonicTime) {
        self.probes.insert(
            key,
            Probe {
                sent: at,
                tx_stamp: None,
                status: Status::Pending,
            },
        );
    }

    /// The capture saw the probe leave.
    pub fn on_tx_stamp(&mut self, key: ProbeKey, at: MonotonicTime) {
        if let Some(p) = self.probes.get_mut(&key) {
            p.tx_stamp.get_or_insert(at);
        }
    }

    /// Records an answer; `false` for replies to unknown probes and duplicates.
    /// A late answer to a probe already given up is still taken.
    pub fn on_answer(&mut self, key: ProbeKey, answer: Answer) -> bool {
        let Some(probe) = self.probes.get_mut(&key) else {
            return false;
        };
        if matches!(probe.status, Status::Answered(_)) {
            self.duplicates += 1;
            return false;
        }
        let terminal = answer.terminal;
        probe.status = Status::Answered(answer);
        if let Some(rtt) = probe.rtt() {
            self.slowest_rtt = self.slowest_rtt.max(rtt);
        }
        if terminal && self.end_ttl.is_none_or(|t| key.ttl < t) {
            self.end_ttl = Some(key.ttl);
        }
        true
    }

    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Gives up on probes that waited long enough (see module docs).
    pub fn settle(&mut self, now: MonotonicTime) {
        let highest_answered = self
            .probes
            .iter()
            .filter(|(_, p)| matches!(p.status, Status::Answered(_)))
            .map(|(k, _)| k.ttl)
            .max();
        let early = self.slowest_rtt * 2 + EARLY_GIVE_UP_SLACK;
        for (key, probe) in self.probes.iter_mut() {
            if probe.status != Status::Pending {
                continue;
            }
            let waited = now.since(probe.sent).unwrap_or_default();
            let later_hop_answered = highest_answered.is_some_and(|h| h > key.ttl);
            if waited >= self.plan.timeout || (later_hop_answered && waited >= early) {
                probe.status = Status::Lost;
            }
        }
    }

    /// Every probe that matters has been sent and settled.
    pub fn is_done(&self) -> bool {
        if self.next_to_send().is_some() {
            return false;
        }
        let last = self.last_ttl();
        self.probes
            .iter()
            .filter(|(k, _)| k.ttl <= last)
            .all(|(_, p)| p.status != Status::Pending)
    }

    /// When the next pending probe times out, for the engine's sleep.
    pub fn next_deadline(&self) -> Option<MonotonicTime> {
        self.probes
            .values()
            .filter(|p| p.status == Status::Pending)
            .map(|p| {
                MonotonicTime::from_nanos(p.sent.as_nanos() + self.plan.timeout.as_nanos() as u64)
            })
            .min()
    }

    pub fn probes(&self) -> &BTreeMap<ProbeKey, Probe> {
        &self.probes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn t(v: u8) -> Ttl {
        Ttl::new(v).unwrap()
    }

    fn at(ms: u64) -> MonotonicTime {
        MonotonicTime::from_nanos(1_000 * MS + ms * MS)
    }

    fn plan(max_ttl: u8, attempts: u8) -> Plan {
        Plan {
            first_ttl: Ttl::MIN,
            max_ttl: t(max_ttl),
            attempts,
            timeout: Duration::from_millis(1000),
        }
    }

    fn key(attempt: u8, ttl: u8) -> ProbeKey {
        ProbeKey {
            attempt,
            ttl: t(ttl),
        }
    }

    fn answer(received: MonotonicTime, destination: bool) -> Answer {
        Answer {
            from: IpAddr::from([198, 18, 0, 1]),
            received,
            icmp_type: Some(11),
            icmp_code: Some(0),
            reply_ttl: 60,
            destination,
            terminal: destination,
            mpls_labels: Vec::new(),
        }
    }

    fn send_all(s: &mut TraceState, t: MonotonicTime) {
        while let Some(k) = s.next_to_send() {
            s.on_sent(k, t);
        }
    }

    #[test]
    fn sends_attempt_major_up_to_max_ttl() {
        let s = TraceState::new(plan(3, 2));
        assert_eq!(s.next_to_send(), Some(key(0, 1)));
        let mut s = s;
        let mut order = Vec::new();
        while let Some(k) = s.next_to_send() {
            order.push((k.attempt, k.ttl.get()));
            s.on_sent(k, at(0));
        }
        assert_eq!(order, vec![(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3)]);
    }

    #[test]
    fn destination_answer_stops_higher_ttls() {
        let mut s = TraceState::new(plan(30, 3));
        for _ in 0..5 {
            let k = s.next_to_send().unwrap();
            s.on_sent(k, at(0));
        }
        assert!(s.on_answer(key(0, 4), answer(at(5), true)));
        assert_eq!(s.last_ttl(), t(4));
        // TTL 5 was already sent; nothing above 4 is sent any more.
        let rest: Vec<_> = std::iter::from_fn(|| {
            let k = s.next_to_send()?;
            s.on_sent(k, at(6));
            Some(k)
        })
        .collect();
        assert!(rest.iter().all(|k| k.ttl.get() <= 4), "{rest:?}");
        assert_eq!(rest.len(), 8); // attempts 1 and 2 for TTL 1..=4
    }

    #[test]
    fn a_lower_terminal_answer_moves_the_end_down() {
        let mut s = TraceState::new(plan(10, 1));
        send_all(&mut s, at(0));
        s.on_answer(key(0, 7), answer(at(3), true));
        s.on_answer(key(0, 5), answer(at(4), true));
        assert_eq!(s.end_ttl(), Some(t(5)));
    }

    #[test]
    fn silent_hop_is_given_up_early_when_later_hops_answered() {
        let mut s = TraceState::new(plan(3, 1));
        send_all(&mut s, at(0));
        s.on_answer(key(0, 1), answer(at(2), false));
        s.on_answer(key(0, 3), answer(at(4), true));
        // Slowest RTT 4 ms: give up TTL 2 after 2*4 + 50 = 58 ms, not 1000 ms.
        s.settle(at(40));
        assert!(!s.is_done());
        s.settle(at(60));
        assert_eq!(s.probes()[&key(0, 2)].status, Status::Lost);
        assert!(s.is_done());
    }

    #[test]
    fn silent_tail_waits_the_full_timeout() {
        let mut s = TraceState::new(plan(3, 1));
        send_all(&mut s, at(0));
        s.on_answer(key(0, 1), answer(at(2), false));
        s.settle(at(500));
        assert!(!s.is_done(), "no later evidence: TTL 2 and 3 keep waiting");
        s.settle(at(1000));
        assert!(s.is_done());
    }

    #[test]
    fn late_answers_are_taken_and_duplicates_counted() {
        let mut s = TraceState::new(plan(2, 1));
        send_all(&mut s, at(0));
        s.settle(at(1000));
        assert!(s.on_answer(key(0, 1), answer(at(1001), false)));
        assert!(!s.on_answer(key(0, 1), answer(at(1002), false)));
        assert_eq!(s.duplicates(), 1);
        assert!(
            !s.on_answer(key(3, 1), answer(at(1002), false)),
            "unknown probe"
        );
    }

    #[test]
    fn rtt_prefers_the_kernel_tx_stamp() {
        let mut s = TraceState::new(plan(1, 1));
        s.on_sent(key(0, 1), at(10));
        s.on_tx_stamp(key(0, 1), at(9));
        s.on_answer(key(0, 1), answer(at(19), true));
        assert_eq!(
            s.probes()[&key(0, 1)].rtt(),
            Some(Duration::from_millis(10))
        );
        let mut s = TraceState::new(plan(1, 1));
        s.on_sent(key(0, 1), at(10));
        s.on_answer(key(0, 1), answer(at(19), true));
        assert_eq!(s.probes()[&key(0, 1)].rtt(), Some(Duration::from_millis(9)));
    }

    #[test]
    fn a_fixed_ttl_plan_probes_only_that_ttl() {
        let mut s = TraceState::new(Plan {
            first_ttl: t(64),
            ..plan(64, 3)
        });
        let mut sent = Vec::new();
        while let Some(k) = s.next_to_send() {
            sent.push((k.attempt, k.ttl.get()));
            s.on_sent(k, at(0));
        }
        assert_eq!(sent, vec![(0, 64), (1, 64), (2, 64)]);
    }

    #[test]
    fn next_deadline_is_the_earliest_pending_timeout() {
        let mut s = TraceState::new(plan(2, 1));
        s.on_sent(key(0, 1), at(0));
        s.on_sent(key(0, 2), at(5));
        assert_eq!(s.next_deadline(), Some(at(1000)));
        s.on_answer(key(0, 1), answer(at(1), false));
        assert_eq!(s.next_deadline(), Some(at(1005)));
    }
}
