//! The probing state machine of one trace, free of I/O and of clocks: the
//! driver ([`super::engine`]) asks [`Prober::poll`] what to do at a given time,
//! sends what it is told, and feeds back what the capture saw. The same code
//! runs against the simulated network of the scenario tests.
//!
//! * **Order and window.** Probes go TTL-major (every attempt of TTL 1, then
//!   TTL 2, ...), at most [`Policy::window`] in flight at once, as
//!   traceroute's `-N`: a short path's whole first window leaves at once.
//! * **Budgets, learnt.** A probe that makes a responder answer first takes
//!   one of that responder's tokens from the process's [`Knowledge`] and a
//!   slot on the process-wide rail ([`ProbeRail`]); it is sent when both
//!   allow. Budgets start at the prior and grow while responders answer
//!   everything; a trace's first probe at a TTL goes before anyone's further
//!   ones. Probes the destination answers without an ICMP error (TCP, ICMP
//!   echo) need no token once the destination's TTL is known.
//! * **First hop shared.** TTL 1 is asked once per origin and reused by other
//!   traces ([`HopShare`]).
//! * **Giving up, and what silence is** ([`verdict`]): a probe nothing is
//!   known about waits the whole timeout; shorter waits come only from
//!   knowledge. Silences that look like a limit are asked again after a
//!   refill, never reported as silent hops.
//! * **Truth.** Every probe ends answered, shared, or with the reason it has
//!   no answer: waited its full time, suspected rate limiting, never sent
//!   (router budget, probe rate, deadline), or sent but cut short by the
//!   deadline. Only the first is silence.

mod answer;
mod types;
mod verdict;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use traceroute_common::EventKind;

use super::knowledge::{Ask, Grant, RouterKey};
use super::share::{FirstHop, FirstHopPlan};
use crate::capture::{CapturedPacket, kind_name};
use crate::clock::MonotonicTime;
use crate::path::{NoAnswer, NotSentReason};
use crate::probe::{ProbeFlow, Protocol, Ttl};
use crate::reply::{Reply, Unverified};
pub use answer::Answer;
pub use types::{
    Action, Ignored, MAX_ATTEMPTS, Plan, Policy, ProbeKey, Probes, Send, Setup, Shared,
    Status, Token, TraceStats,
};
use verdict::Recheck;

#[cfg(doc)]
use super::{budget::ProbeRail, knowledge::Knowledge, share::HopShare};

/// What a probe still open needs from [`Prober::poll`].
#[derive(Clone, Copy)]
enum Next {
    Scheduled(MonotonicTime),
    Start,
    InFlight,
}

/// Who answered at a TTL.
#[derive(Clone, Copy, Debug)]
struct Responded {
    from: std::net::IpAddr,
    destination: bool,
}

/// The give-up floor is this many times the recent jitter.
const JITTER_FLOOR_FACTOR: u32 = 4;

pub struct Prober {
    setup: Setup,
    /// TTL-major order of every probe.
    order: Vec<ProbeKey>,
    probes: Probes,
    /// Lowest TTL whose answer ended the path.
    end_ttl: Option<Ttl>,
    /// Fastest and slowest RTT seen per TTL.
    rtts: HashMap<Ttl, (Duration, Duration)>,
    /// Who answered first at each TTL (an answer, or the shared gateway's).
    heard_from: BTreeMap<Ttl, Responded>,
    /// Something a deferred probe may wait for happened (an answer, a
    /// budget that grew, the gateway's answer published): they look again.
    news: bool,
    /// Every probe before this index of `order` is settled (a hint: it only
    /// moves back when settled probes are opened again).
    open_from: std::cell::Cell<usize>,
    /// TTLs whose first-contact silence is being checked once more.
    rechecks: HashMap<Ttl, Recheck>,
    /// This trace is the one asking the gateway for its origin.
    claimed_first_hop: bool,
    stats: TraceStats,
    /// When the trace ended.
    finished: Option<MonotonicTime>,
    /// The give-up floor now: `min_wait`, or four times the recent jitter.
    floor: Duration,
    /// When the trace was admitted (the origin of [`Plan::spacing`]).
    started: Option<MonotonicTime>,
    /// The time of the last poll.
    now: MonotonicTime,
    /// Where the destination answered this origin before the trace began
    /// (looked up at the first poll).
    expected_end: Option<Option<Ttl>>,
    /// The latest stamp of a packet of this trace the capture handed over
    /// (a reply, or one of our probes seen leaving).
    heard: Option<MonotonicTime>,
}

impl Prober {
    pub fn new(setup: Setup) -> Prober {
        let probes = Probes::new(&setup.plan);
        let order = probes.keys().to_vec();
        Prober {
            setup,
            order,
            probes,
            end_ttl: None,
            rtts: HashMap::new(),
            heard_from: BTreeMap::new(),
            news: false,
            open_from: std::cell::Cell::new(0),
            rechecks: HashMap::new(),
            claimed_first_hop: false,
            stats: TraceStats::default(),
            finished: None,
            floor: Duration::ZERO,
            started: None,
            now: MonotonicTime::from_nanos(0),
            heard: None,
            expected_end: None,
        }
    }

    pub fn plan(&self) -> &Plan {
        &self.setup.plan
    }

    pub fn flow(&self) -> &ProbeFlow {
        &self.setup.flow
    }

    pub fn probes(&self) -> &Probes {
        &self.probes
    }

    pub fn stats(&self) -> &TraceStats {
        &self.stats
    }

    /// When the trace ended, once it has.
    #[cfg(test)]
    pub fn finished_at(&self) -> Option<MonotonicTime> {
        self.finished
    }

    #[cfg(test)]
    pub fn end_ttl(&self) -> Option<Ttl> {
        self.end_ttl
    }

    /// The TTLs that matter: up to where the path ended, else up to max_ttl.
    pub fn last_ttl(&self) -> Ttl {
        self.end_ttl.unwrap_or(self.setup.plan.max_ttl)
    }

    /// Probes settled so far (answered, shared, or given up on).
    pub fn settled(&self) -> usize {
        self.probes
            .values()
            .filter(|p| p.status.is_settled())
            .count()
    }

    /// The highest TTL up to which every attempt is settled, from the
    /// first TTL on without a gap; `None` while the first is not.
    pub fn settled_through(&self) -> Option<Ttl> {
        let plan = &self.setup.plan;
        let mut through = None;
        for ttl in Ttl::range(plan.first_ttl, self.last_ttl()) {
            let all = (0..plan.attempts).all(|attempt| {
                self.probes
                    .get(&ProbeKey { attempt, ttl })
                    .is_some_and(|p| p.status.is_settled())
            });
            if !all {
                break;
            }
            through = Some(ttl);
        }
        through
    }

    /// Decides what to do at `now`.
    pub fn poll(&mut self, now: MonotonicTime, shared: Shared<'_>) -> Action {
        if self.finished.is_some() {
            return Action::Done;
        }
        self.started.get_or_insert(now);
        self.floor = self
            .setup
            .policy
            .min_wait
            // An answer slower than the worst seen lately is what loaded
            // hosts produce: four times that, so load is not called loss.
            .max(shared.jitter.recent(now) * JITTER_FLOOR_FACTOR);
        self.settle(now, shared);
        if self.is_done() {
            self.finish(now, shared);
            return Action::Done;
        }
        if now >= self.setup.deadline {
            self.finish(now, shared);
            return Action::Done;
        }
        let last = self.last_ttl();
        let busy = self
            .probes
            .iter()
            .filter(|(k, p)| k.ttl <= last && p.status.is_busy())
            .count();
        let mut wake = self.setup.deadline;
        let lag = shared.lag.recent(now);
        let retry = std::mem::take(&mut self.news);
        let hold_beyond = self.known_end(now, shared);
        for i in self.first_open()..self.order.len() {
            let key = self.order[i];
            if key.ttl > last {
                break;
            }
            // Beyond where the destination answered last time, nothing is
            // started before that TTL has settled: a UDP destination would
            // spend its answers on them, and they are rarely needed.
            let held = hold_beyond.is_some_and(|end| key.ttl > end);
            if held && matches!(self.probes.at(i).status, Status::Queued) {
                continue;
            }
            let (next, deferred) = match self.probes.at(i).status {
                Status::Scheduled(at) => (Next::Scheduled(at), false),
                Status::Queued => (Next::Start, false),
                // Its time came, or news may have changed what it waits for.
                Status::Deferred(at) if at <= now || retry => (Next::Start, true),
                Status::Deferred(at) => {
                    wake = wake.min(at);
                    continue;
                }
                Status::InFlight => (Next::InFlight, false),
                _ => continue,
            };
            match next {
                Next::Scheduled(at) if at <= now => match self.release(key, now, shared) {
                    Some(send) => return send,
                    None => {
                        if let Status::Scheduled(at) = self.probes.at(i).status {
                            wake = wake.min(at);
                        }
                    }
                },
                Next::Scheduled(at) => wake = wake.min(at),
                // A probe waiting for another trace's answer from the gateway,
                // or for a token of a budget still being learnt, looks again
                // at every wake-up (news of either wakes us).
                Next::Start if busy < self.setup.policy.window || deferred => {
                    match self.start(key, now, shared) {
                        Status::Scheduled(at) if at <= now => {
                            self.set(key, Status::Scheduled(at));
                            if let Some(send) = self.release(key, now, shared) {
                                return send;
                            }
                            if let Status::Scheduled(at) = self.probes[&key].status {
                                wake = wake.min(at);
                            }
                        }
                        status => {
                            if let Status::Scheduled(at) | Status::Deferred(at) = status {
                                wake = wake.min(at);
                            }
                            self.set(key, status);
                        }
                    }
                }
                Next::Start => {}
                Next::InFlight => {
                    let probe = self.probes.at(i);
                    if let Some(send) = probe.sends.last() {
                        wake = wake.min(self.give_up_at(key, send, lag, shared));
                    }
                }
            }
        }
        // Reusing the gateway's answer can settle the last open probe.
        if self.is_done() {
            self.finish(now, shared);
            return Action::Done;
        }
        Action::Wait(wake.max(now))
    }

    /// The TTL at which the destination answered this origin lately, while
    /// this trace has not settled it yet (probes beyond it wait for that).
    fn known_end(&mut self, now: MonotonicTime, shared: Shared<'_>) -> Option<Ttl> {
        let known = *self.expected_end.get_or_insert_with(|| {
            shared.knowledge.destination_distance(
                self.setup.origin,
                self.setup.flow.destination(),
                now,
            )
        });
        let end = known.filter(|end| *end >= self.setup.plan.first_ttl)?;
        let settled = (0..self.setup.plan.attempts).all(|attempt| {
            self.probes
                .get(&ProbeKey { attempt, ttl: end })
                .is_some_and(|p| p.status.is_settled())
        });
        (!settled).then_some(end)
    }

    /// Reserves the budgets of the first window now, before the trace
    /// starts sending: a trace admitted next sees them spent.
    pub fn reserve_first_window(&mut self, now: MonotonicTime, shared: Shared<'_>) {
        self.started.get_or_insert(now);
        let window = self.setup.policy.window;
        let hold_beyond = self.known_end(now, shared);
        let first: Vec<ProbeKey> = self
            .order
            .iter()
            .filter(|k| hold_beyond.is_none_or(|end| k.ttl <= end))
            .take(window)
            .copied()
            .collect();
        for key in first {
            let status = self.start(key, now, shared);
            self.set(key, status);
        }
    }

    /// Another trace published the gateway's answer, or a budget grew:
    /// probes waiting for either look again at the next poll.
    pub fn on_news(&mut self) {
        self.news = true;
    }

    /// How long this trace waited to be admitted.
    pub fn set_admission_wait(&mut self, waited: Duration) {
        self.stats.admission_wait = waited;
    }

    /// Gives a queued probe its next status: shared, deferred, scheduled or
    /// never sent.
    fn start(&mut self, key: ProbeKey, now: MonotonicTime, shared: Shared<'_>) -> Status {
        let setup = &self.setup;
        let first_hop = key.ttl == Ttl::MIN && setup.origin.gateway.is_some();
        if first_hop && !self.claimed_first_hop {
            let claim_until = now + setup.plan.timeout;
            match shared.share.plan(setup.origin, now, claim_until) {
                FirstHopPlan::Reuse(hop) => {
                    self.stats.shared_hops += 1;
                    return Status::Shared(hop);
                }
                FirstHopPlan::WaitFor(until) => return Status::Deferred(until),
                FirstHopPlan::Probe => self.claimed_first_hop = true,
            }
        }
        if let Some(not_before) = self.probes[&key].not_before.filter(|t| *t > now) {
            return Status::Deferred(not_before);
        }
        // A lower TTL is being checked again: if the destination is there,
        // this probe is beyond it and would only spend its budget.
        let again = !self.probes[&key].sends.is_empty();
        if again && self.checking_below(key.ttl) {
            return Status::Deferred(self.setup.deadline);
        }
        let spacing = setup.plan.spacing * u32::from(key.attempt);
        let mut at = self
            .started
            .map_or(now, |started| now.max(started + spacing));
        if at > self.send_limit() {
            return self.unsendable(key, NotSentReason::Deadline);
        }
        let mut grant = None;
        if let Some(router) = self.router(key.ttl, shared) {
            let ask = Ask {
                at,
                limit: self.send_limit(),
                first: self.first_sample(key),
            };
            match shared.knowledge.reserve(router, now, ask) {
                Grant::At(t, spent) => {
                    at = t;
                    grant = Some(Token { key: router, spent });
                }
                Grant::Later(t) => {
                    tracing::trace!(?router, ttl = key.ttl.get(), wait = ?t.since(now), "waiting for a token");
                    return Status::Deferred(t);
                }
                Grant::TooLate(t) => {
                    tracing::trace!(
                        ?router,
                        ttl = key.ttl.get(),
                        ?t,
                        "no token before the deadline"
                    );
                    return self.unsendable(key, NotSentReason::RouterBudget);
                }
            }
        }
        if let Some(probe) = self.probes.get_mut(&key) {
            probe.grant = grant;
        }
        Status::Scheduled(at)
    }

    /// No probe of this TTL has been answered, sent or given a send time:
    /// this one is the trace's first sample there, which goes before further
    /// samples of anyone (see [`Knowledge::reserve`]).
    fn first_sample(&self, key: ProbeKey) -> bool {
        !self.heard_from.contains_key(&key.ttl)
            && (0..self.setup.plan.attempts)
                .filter(|attempt| *attempt != key.attempt)
                .all(|attempt| {
                    let other = ProbeKey {
                        attempt,
                        ttl: key.ttl,
                    };
                    !matches!(
                        self.probes.get(&other).map(|p| &p.status),
                        Some(Status::InFlight | Status::Scheduled(_))
                    )
                })
    }

    /// Sent by then, a probe still gets the shortest wait before the deadline.
    fn send_limit(&self) -> MonotonicTime {
        self.setup
            .deadline
            .saturating_sub(self.setup.policy.min_wait)
    }

    /// A scheduled probe whose time came takes a slot on the rail if one is
    /// free now; otherwise it waits for one without holding it, so probes
    /// that end up not sent (beyond the destination) cost the rail nothing.
    fn release(&mut self, key: ProbeKey, now: MonotonicTime, shared: Shared<'_>) -> Option<Action> {
        let reprobe = !self.probes[&key].sends.is_empty();
        match shared.rail.take_now(now) {
            Ok(()) => Some(Action::Send { key, reprobe }),
            Err(refused) if refused.free <= self.send_limit() => {
                let again = refused.again.min(self.send_limit());
                self.set(key, Status::Scheduled(again));
                None
            }
            Err(_) => {
                let status = self.unsendable(key, NotSentReason::ProbeRate);
                self.set(key, status);
                None
            }
        }
    }

    /// A probe that cannot leave (again) for `reason`: never sent, or, when
    /// it was sent once and its silence was to be asked again, what that
    /// silence was taken for.
    fn unsendable(&mut self, key: ProbeKey, reason: NotSentReason) -> Status {
        let probe = &self.probes[&key];
        if probe.sends.is_empty() {
            return self.not_sent(reason);
        }
        let waited = probe.gave_up_after;
        // A first contact's re-check that cannot go: its one full wait stands.
        let reason = if self.rechecks.get(&key.ttl) == Some(&Recheck::Pending(key)) {
            NoAnswer::Timeout
        } else {
            NoAnswer::RateLimited
        };
        Status::Unanswered { reason, waited }
    }

    fn not_sent(&mut self, reason: NotSentReason) -> Status {
        *self.stats.not_sent.entry(reason.as_str()).or_default() += 1;
        Status::Unanswered {
            reason: NoAnswer::NotSent(reason),
            waited: None,
        }
    }

    /// The budget a probe at `ttl` spends: the responder this trace saw
    /// there, else the one other traces saw at that position of the origin
    /// (the gateway's position is always its own). `None` when nothing is
    /// known to answer there with an ICMP error: a destination answering TCP
    /// or echo probes costs no router anything.
    fn router(&self, ttl: Ttl, shared: Shared<'_>) -> Option<RouterKey> {
        let protocol = self.setup.flow.protocol();
        let free_at_destination = matches!(protocol, Protocol::Tcp | Protocol::Icmp);
        if let Some(seen) = self.heard_from.get(&ttl) {
            return (!(seen.destination && free_at_destination))
                .then_some(RouterKey::Address(seen.from));
        }
        if free_at_destination && self.destination_ttl().is_some_and(|d| ttl >= d) {
            return None;
        }
        let position = RouterKey::Position(self.setup.origin, ttl);
        if ttl == Ttl::MIN && self.setup.origin.gateway.is_some() {
            return Some(position);
        }
        if !self.position_applies(ttl) {
            return Some(self.own_hop(ttl));
        }
        Some(
            shared
                .knowledge
                .known(position)
                .map_or(self.own_hop(ttl), RouterKey::Address),
        )
    }

    /// The unknown responder at `ttl` on this flow's path. A flow of a
    /// multi-flow trace does not know which of the routers at `ttl` it will
    /// meet, so all flows of the trace share one budget per TTL: no router
    /// there can be asked more than that budget, and it grows as the TTL's
    /// routers answer. A lone flow keys it by itself.
    fn own_hop(&self, ttl: Ttl) -> RouterKey {
        if self.setup.branching
            && let Some(observer) = self.setup.observers.first()
        {
            return RouterKey::TraceTtl(observer.test_run_id.as_u128(), ttl);
        }
        let key = self.setup.flow.flow_key();
        let id = u128::from_be_bytes(key.remote_addr)
            ^ (u128::from(key.local_port) << 112)
            ^ (u128::from(key.remote_port) << 96)
            ^ u128::from(key.protocol);
        RouterKey::TraceHop(id, ttl)
    }

    /// Knowledge about TTL `ttl` from this origin applies to this flow.
    fn position_applies(&self, ttl: Ttl) -> bool {
        !self.setup.branching || ttl == Ttl::MIN
    }

    fn destination_ttl(&self) -> Option<Ttl> {
        self.heard_from
            .iter()
            .find(|(_, seen)| seen.destination)
            .map(|(ttl, _)| *ttl)
    }

    fn set(&mut self, key: ProbeKey, status: Status) {
        let seen = match &status {
            Status::Answered(a) => Some(Responded {
                from: a.from,
                destination: a.destination,
            }),
            Status::Shared(hop) => Some(Responded {
                from: hop.responder,
                destination: false,
            }),
            _ => None,
        };
        if let Some(seen) = seen {
            self.heard_from.entry(key.ttl).or_insert(seen);
        }
        if let Some(p) = self.probes.get_mut(&key) {
            p.status = status;
        }
    }

    /// The probe left at `at`.
    pub fn on_sent(&mut self, key: ProbeKey, at: MonotonicTime) {
        let Some(p) = self.probes.get_mut(&key) else {
            return;
        };
        if !p.sends.is_empty() {
            self.stats.reprobes += 1;
        }
        p.sends.push(Send {
            at,
            tx_stamp: None,
            token: p.grant.take(),
        });
        p.status = Status::InFlight;
        self.stats.probes_sent += 1;
    }

    /// The socket had no room: try again shortly.
    pub fn on_send_deferred(&mut self, key: ProbeKey, now: MonotonicTime) {
        self.set(key, Status::Scheduled(now + Duration::from_millis(1)));
    }

    /// Ends the trace: what is still open gets its honest reason.
    fn finish(&mut self, now: MonotonicTime, shared: Shared<'_>) {
        let last = self.last_ttl();
        let open: Vec<ProbeKey> = self
            .probes
            .iter()
            .filter(|(k, p)| k.ttl <= last && !p.status.is_settled())
            .map(|(k, _)| *k)
            .collect();
        for key in open {
            let probe = &self.probes[&key];
            let status = match (&probe.status, probe.sends.last()) {
                (Status::InFlight, Some(send)) => Status::Unanswered {
                    reason: NoAnswer::CutShort,
                    waited: now.since(send.at),
                },
                // Its full wait stands; the check of its TTL did not end.
                (Status::Awaiting { waited }, _) => Status::Unanswered {
                    reason: NoAnswer::Timeout,
                    waited: Some(*waited),
                },
                _ => self.unsendable(key, NotSentReason::Deadline),
            };
            self.set(key, status);
        }
        if self.claimed_first_hop {
            shared.share.release(self.setup.origin);
        }
        // A lone flow's unknown-router budgets die with it. A multi-flow
        // trace's per-TTL budgets are shared with sibling flows still
        // running: forgetting them would hand those a fresh burst (they
        // age out like anything unused).
        if !self.setup.branching {
            let plan = self.setup.plan;
            for ttl in Ttl::range(plan.first_ttl, plan.max_ttl) {
                shared.knowledge.forget(self.own_hop(ttl));
            }
        }
        self.stats.degraded = self.degraded();
        self.finished = Some(now);
    }

    /// Feeds one captured packet of this trace's flow.
    pub fn on_packet(&mut self, packet: &CapturedPacket, shared: Shared<'_>) {
        let Ok(reply) = Reply::parse(&packet.bytes) else {
            self.stats.ignored.malformed += 1;
            return;
        };
        let id = match reply.identify(&self.setup.flow) {
            Ok(id) => id,
            Err(Unverified::NoIdentity) => {
                self.stats.ignored.unmatched += 1;
                return;
            }
            Err(Unverified::WrongSecret) => {
                self.stats.ignored.wrong_secret += 1;
                return;
            }
            Err(Unverified::Implausible) => {
                self.stats.ignored.implausible += 1;
                return;
            }
        };
        let (key, reprobe) = ProbeKey::from_wire(id);
        let index = usize::from(reprobe);
        // Our own probes seen leaving count too: the capture has handed
        // over what it saw up to then.
        self.heard = self.heard.max(Some(packet.timestamp));
        self.news = true;
        if packet.kind == EventKind::Probe {
            if let Some(send) = self
                .probes
                .get_mut(&key)
                .and_then(|p| p.sends.get_mut(index))
            {
                send.tx_stamp.get_or_insert(packet.timestamp);
            }
            return;
        }
        let Some(send) = self.probes.get(&key).and_then(|p| p.sends.get(index)) else {
            // A reply to a probe that never left: forged or stray.
            self.stats.ignored.unmatched += 1;
            return;
        };
        let send = *send;
        let Some(rtt) = packet.timestamp.since(send.stamp()) else {
            // Stamped before its probe left: cannot be its answer.
            self.stats.ignored.before_probe += 1;
            return;
        };
        let probe = &self.probes[&key];
        if matches!(probe.status, Status::Answered(_)) {
            self.stats.ignored.duplicates += 1;
            return;
        }
        if packet.kind == EventKind::PacketTooBig || reply.next_hop_mtu.is_some() {
            // Not this TTL's router: one before it that could not forward
            // the probe. Path MTU discovery sends it again, smaller.
            let reason = NoAnswer::TooBig {
                from: reply.source,
                mtu: reply.next_hop_mtu,
            };
            self.set(
                key,
                Status::Unanswered {
                    reason,
                    waited: Some(rtt),
                },
            );
            return;
        }
        let answer = answer::answer_of(&reply, packet, &self.setup.flow, id, rtt);
        *self
            .stats
            .answers
            .entry(kind_name(packet.kind))
            .or_default() += 1;
        self.take_answer(key, send, answer, shared);
    }

    fn take_answer(&mut self, key: ProbeKey, send: Send, answer: Answer, shared: Shared<'_>) {
        let origin = self.setup.origin;
        let knowledge = shared.knowledge;
        let now = answer.received;
        if let Some(token) = send.token {
            knowledge.answered(token.key, token.spent, now);
        }
        if answer.destination {
            knowledge.reached(origin, answer.from, key.ttl, now);
        } else {
            // A router answers for every flow crossing it; a destination
            // answers only for itself.
            if self.position_applies(key.ttl) {
                knowledge.learn(RouterKey::Position(origin, key.ttl), answer.from, now);
            }
            // A multi-flow trace's per-TTL budget stays with the TTL: it
            // paces every sibling flow still to come, whichever router
            // answered this one, and grows as the TTL's routers answer.
            if !self.setup.branching {
                knowledge.learn(self.own_hop(key.ttl), answer.from, now);
            }
        }
        if let Some(rtt) = answer.rtt {
            shared.jitter.observe(answer.from, rtt, now);
            knowledge.observe_latency(answer.from, rtt, now);
            let entry = self.rtts.entry(key.ttl).or_insert((rtt, rtt));
            entry.0 = entry.0.min(rtt);
            entry.1 = entry.1.max(rtt);
        }
        if answer.terminal && self.end_ttl.is_none_or(|t| key.ttl < t) {
            self.end_ttl = Some(key.ttl);
        }
        let gateway_answered = key.ttl == Ttl::MIN
            && self.claimed_first_hop
            && !answer.destination
            && !answer.terminal;
        if gateway_answered && let Some(by) = self.setup.observers.get(usize::from(key.attempt)) {
            shared.share.publish(
                origin,
                FirstHop {
                    responder: answer.from,
                    rtt: answer.rtt,
                    icmp_type: answer.icmp_type,
                    icmp_code: answer.icmp_code,
                    reply_ttl: answer.reply_ttl,
                    observed_at: answer.received,
                    by: by.clone(),
                },
            );
        }
        let from = answer.from;
        self.set(key, Status::Answered(answer));
        self.heard_at(key, send, from, now, shared);
        self.reopen_below(key.ttl, now, shared);
    }
}
