//! The probing state machine of one trace, free of I/O and of clocks: the
//! driver ([`super::engine`]) asks [`Prober::poll`] what to do at a given time,
//! sends what it is told, and feeds back what the capture saw. The same code
//! runs against the simulated network of the scenario tests.
//!
//! * **Order and window.** Probes go TTL-major (every attempt of TTL 1, then
//!   TTL 2, ...), at most [`Policy::window`] scheduled or in flight at once, as
//!   traceroute's `-N`: a short path's whole first window leaves at once.
//! * **Budgets, not a clock.** A probe that makes a router answer first
//!   reserves one of that router's tokens ([`RouterBudgets`]) and a slot on the
//!   process-wide rail ([`ProbeRail`]); it is sent when both allow. Probes the
//!   destination answers without an ICMP error (TCP, ICMP echo) need no router
//!   token once the destination's TTL is known.
//! * **First hop shared.** TTL 1 is asked once per origin and reused by other
//!   traces ([`HopShare`]).
//! * **Giving up, from measured RTTs** ([`Policy::wait_for`]): a probe waits
//!   the request's timeout, but no longer than `here` × an RTT already seen
//!   at its TTL or `near` × the slowest RTT of a later hop (traceroute's
//!   `-w MAX,HERE,NEAR`, with NEAR 3 instead of 10), and never less than
//!   `min_wait` or four times the recent [`Jitter`]; the capture pipeline's recent
//!   delivery lag is added on top ([`DeliveryLag`]).
//! * **Rate limiting.** A probe left unanswered by a router that answered
//!   this trace at that TTL before (or other traces at that position), while
//!   later hops answer, is suspected rate-limited: its router's budget is
//!   marked spent and the probe is sent once more when the budget has
//!   refilled, if the deadline allows.
//! * **Truth.** Every probe ends answered, shared, or with the reason it has
//!   no answer: waited its full time, suspected rate limiting, never sent
//!   (router budget, probe rate, deadline), or sent but cut short by the
//!   deadline. Only the first is silence.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use traceroute_common::EventKind;

use super::budget::{Grant, Origin, ProbeRail, RouterBudgets, RouterKey};
use super::lag::{DeliveryLag, Jitter};
use super::share::{FirstHop, FirstHopPlan, HopShare, Observer};
use crate::capture::{CapturedPacket, kind_name};
use crate::clock::MonotonicTime;
use crate::path::MplsLabel;
use crate::path::{NoAnswer, NotSentReason, Rewritten, TcpAnswer};
use crate::probe::{PROBE_TOS, ProbeFlow, ProbeId, Protocol, Ttl};
use crate::reply::{Quote, Reply, Unverified};

/// Which probe: attempt number (0-based, one per run) and TTL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProbeKey {
    pub attempt: u8,
    pub ttl: Ttl,
}

/// The attempt byte of a re-probe carries this bit, so a late answer to the
/// first probe and the answer to the re-probe are told apart.
const REPROBE_BIT: u8 = 0x80;
/// Attempts per TTL the wire encoding leaves room for.
pub const MAX_ATTEMPTS: u8 = REPROBE_BIT - 1;

/// The give-up floor is this many times the recent [`Jitter`].
const JITTER_FLOOR_FACTOR: u32 = 4;

impl ProbeKey {
    /// The identity the probe carries on the wire.
    pub fn wire_id(self, reprobe: bool) -> ProbeId {
        let attempt = if reprobe {
            self.attempt | REPROBE_BIT
        } else {
            self.attempt
        };
        ProbeId::new(self.ttl, attempt)
    }

    /// The key and whether it was a re-probe, from a wire identity.
    pub fn from_wire(id: ProbeId) -> (ProbeKey, bool) {
        let key = ProbeKey {
            attempt: id.attempt() & !REPROBE_BIT,
            ttl: id.ttl(),
        };
        (key, id.attempt() & REPROBE_BIT != 0)
    }
}

/// What the request asks for.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Lowest TTL probed: 1 for a trace, the last one for end-to-end probes.
    pub first_ttl: Ttl,
    pub max_ttl: Ttl,
    /// Probes per TTL (runs); at most [`MAX_ATTEMPTS`].
    pub attempts: u8,
    /// Longest wait for one probe's answer (traceroute's MAX).
    pub timeout: Duration,
    /// Attempt `n` leaves no sooner than `n` times this after the trace
    /// starts (zero: no spacing).
    pub spacing: Duration,
}

/// How the tracer probes; one place for these defaults.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Probes scheduled or in flight at once per trace (traceroute's `-N`).
    pub window: usize,
    /// Wait at most this many times an RTT already seen at the same TTL.
    pub here: f64,
    /// Wait at most this many times the slowest RTT of a later hop.
    pub near: f64,
    /// Never give up sooner than this (routers generate ICMP errors on a slow
    /// path), nor sooner than four times the recent [`Jitter`]; the capture
    /// pipeline's own lag is added on top ([`DeliveryLag`]).
    pub min_wait: Duration,
    /// Re-probe a suspected rate-limited router once its budget refilled.
    pub reprobe: bool,
    /// Give up on a probe sooner than the timeout from RTTs already seen
    /// (`here`, `near`). Off for end-to-end probes: their loss is a sample,
    /// so every one waits the full timeout.
    pub adaptive_waits: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            window: usize::from(super::request::WINDOW.default),
            here: 3.0,
            // traceroute's NEAR is 10; a hop's answer comes before a later
            // hop's on the same path, so 3x leaves room for a router's slow
            // ICMP path while a silent hop on a 40 ms path costs 120 ms, not 400.
            near: 3.0,
            min_wait: Duration::from_millis(10),
            reprobe: true,
            adaptive_waits: true,
        }
    }
}

/// What the prober shares with every other trace of the process.
#[derive(Clone, Copy)]
pub struct Shared<'a> {
    pub lag: &'a DeliveryLag,
    pub jitter: &'a Jitter,
    pub routers: &'a RouterBudgets,
    pub rail: &'a ProbeRail,
    pub share: &'a HopShare,
}

/// What answered a probe.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub from: IpAddr,
    /// When the reply was seen (kernel or socket timestamp).
    pub received: MonotonicTime,
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

/// One transmission of a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Send {
    /// Userspace clock just before the send call.
    pub at: MonotonicTime,
    /// Kernel egress stamp, when the capture saw the probe leave.
    pub tx_stamp: Option<MonotonicTime>,
}

impl Send {
    fn stamp(&self) -> MonotonicTime {
        self.tx_stamp.unwrap_or(self.at)
    }
}

/// Where a probe stands.
#[derive(Clone, Debug, PartialEq)]
pub enum Status {
    /// Not yet given a send time.
    Queued,
    /// Waiting until then: for another trace's answer from the gateway, or
    /// for a token of a TTL budget still being learnt.
    Deferred(MonotonicTime),
    /// Budgets granted: leaves at this time.
    Scheduled(MonotonicTime),
    /// Sent; waiting for the answer.
    InFlight,
    Answered(Answer),
    /// The gateway's answer to another trace, reused.
    Shared(FirstHop),
    /// Settled without an answer, and why.
    Unanswered {
        reason: NoAnswer,
        /// How long the last send waited (none when never sent).
        waited: Option<Duration>,
    },
}

impl Status {
    fn is_settled(&self) -> bool {
        matches!(
            self,
            Status::Answered(_) | Status::Shared(_) | Status::Unanswered { .. }
        )
    }

    /// Counts against the window: probes on the wire. (Probes scheduled for
    /// later do not: a router's slow refill must not hold up other TTLs.)
    fn is_busy(&self) -> bool {
        matches!(self, Status::InFlight)
    }
}

#[derive(Clone, Debug)]
pub struct Probe {
    /// The first send, then the re-probe if there was one.
    pub sends: Vec<Send>,
    pub status: Status,
    /// Its router budget was a learnt, grown one (see
    /// [`RouterBudgets::answered`]): a silence is probed again, not reported.
    pub optimistic: bool,
}

impl Probe {
    pub fn rtt(&self) -> Option<Duration> {
        match &self.status {
            Status::Answered(a) => a.rtt,
            _ => None,
        }
    }
}

/// What the driver should do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this probe now (a re-probe when `reprobe`).
    Send { key: ProbeKey, reprobe: bool },
    /// Nothing to do before this time (or before a packet arrives).
    Wait(MonotonicTime),
    /// Every probe that matters is settled.
    Done,
}

/// What one trace did, for metrics and the record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceStats {
    pub probes_sent: u64,
    /// Of which re-probes of suspected rate-limited routers.
    pub reprobes: u64,
    /// Probes never sent, by reason.
    pub not_sent: BTreeMap<&'static str, u64>,
    /// Hops reused from another trace.
    pub shared_hops: u64,
    /// Answers taken, by what they were.
    pub answers: BTreeMap<&'static str, u64>,
    pub ignored: Ignored,
    /// Set when the trace ends: see [`Prober::degraded`].
    pub degraded: Vec<&'static str>,
}

/// What did not fit the trace: counted, never fatal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ignored {
    /// Packets our parser rejects (malformed, truncated before the probe id).
    pub malformed: u64,
    /// Parsed, but naming no probe of ours that was sent (unknown id: stray).
    pub unmatched: u64,
    /// A field carrying the flow's secret does not match (forged or stray).
    pub wrong_secret: u64,
    /// The quote does not fit the probe it names (length, TTL).
    pub implausible: u64,
    /// Stamped before the probe it names left: cannot be its answer.
    pub before_probe: u64,
    /// Second answers to an already answered probe.
    pub duplicates: u64,
}

impl Ignored {
    /// Each count with its metric label.
    pub fn by_reason(&self) -> [(&'static str, u64); 6] {
        [
            ("malformed", self.malformed),
            ("unknown_probe", self.unmatched),
            ("wrong_secret", self.wrong_secret),
            ("implausible", self.implausible),
            ("before_probe", self.before_probe),
            ("duplicate", self.duplicates),
        ]
    }
}

/// How far ahead a multi-flow trace takes a token of a TTL budget it is
/// still learning (see [`RouterBudgets::answered`]).
const LEARNING_HORIZON: Duration = Duration::from_millis(50);

/// Everything a prober needs to know about its trace.
pub struct Setup {
    pub plan: Plan,
    pub policy: Policy,
    pub flow: ProbeFlow,
    pub origin: Origin,
    /// The trace gives up at this point whatever is still pending.
    pub deadline: MonotonicTime,
    /// Who this trace is, per attempt, for hops it shares with others.
    pub observers: Vec<Observer>,
    /// One flow of a multi-flow trace: its siblings may cross other routers
    /// at the same TTL, so "the router at this TTL from this origin" (learnt
    /// from any trace) means nothing past the gateway, for pacing, for
    /// suspecting rate limits, and for what others learn from this flow.
    pub branching: bool,
}

pub struct Prober {
    setup: Setup,
    /// TTL-major order of every probe.
    order: Vec<ProbeKey>,
    probes: BTreeMap<ProbeKey, Probe>,
    /// Lowest TTL whose answer ended the path.
    end_ttl: Option<Ttl>,
    /// Fastest and slowest RTT seen per TTL.
    rtts: HashMap<Ttl, (Duration, Duration)>,
    /// This trace is the one asking the gateway for its origin.
    claimed_first_hop: bool,
    stats: TraceStats,
    /// When the trace ended.
    finished: Option<MonotonicTime>,
    /// The give-up floor now: `min_wait`, or four times the recent jitter.
    floor: Duration,
    /// When the trace was admitted (the origin of [`Plan::spacing`]).
    started: Option<MonotonicTime>,
}

impl Prober {
    pub fn new(setup: Setup) -> Prober {
        let plan = setup.plan;
        let order: Vec<ProbeKey> = Ttl::range(plan.first_ttl, plan.max_ttl)
            .flat_map(|ttl| (0..plan.attempts).map(move |attempt| ProbeKey { attempt, ttl }))
            .collect();
        let probes = order
            .iter()
            .map(|k| {
                (
                    *k,
                    Probe {
                        sends: Vec::new(),
                        status: Status::Queued,
                        optimistic: false,
                    },
                )
            })
            .collect();
        Prober {
            setup,
            order,
            probes,
            end_ttl: None,
            rtts: HashMap::new(),
            claimed_first_hop: false,
            stats: TraceStats::default(),
            finished: None,
            floor: Duration::ZERO,
            started: None,
        }
    }

    pub fn plan(&self) -> &Plan {
        &self.setup.plan
    }

    pub fn flow(&self) -> &ProbeFlow {
        &self.setup.flow
    }

    pub fn probes(&self) -> &BTreeMap<ProbeKey, Probe> {
        &self.probes
    }

    pub fn stats(&self) -> &TraceStats {
        &self.stats
    }

    /// When the trace ended, once it has.
    pub fn finished_at(&self) -> Option<MonotonicTime> {
        self.finished
    }

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
        for i in 0..self.order.len() {
            let key = self.order[i];
            if key.ttl > last {
                break;
            }
            match self.probes[&key].status.clone() {
                Status::Scheduled(at) if at <= now => match self.release(key, now, shared) {
                    Some(send) => return send,
                    None => {
                        if let Status::Scheduled(at) = self.probes[&key].status {
                            wake = wake.min(at);
                        }
                    }
                },
                Status::Scheduled(at) => wake = wake.min(at),
                // A probe waiting for another trace's answer from the gateway
                // looks again at every wake-up (news of that answer wakes us).
                Status::Queued | Status::Deferred(_)
                    if busy < self.setup.policy.window
                        || matches!(self.probes[&key].status, Status::Deferred(_)) =>
                {
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
                Status::InFlight => {
                    let probe = &self.probes[&key];
                    if let Some(send) = probe.sends.last() {
                        wake = wake.min(send.at + self.wait_for(key) + shared.lag.recent(now));
                    }
                }
                _ => {}
            }
        }
        // Reusing the gateway's answer can settle the last open probe.
        if self.is_done() {
            self.finish(now, shared);
            return Action::Done;
        }
        Action::Wait(wake.max(now))
    }

    /// Reserves the router budgets of the first window now, before the trace
    /// starts sending: a trace admitted next sees them spent.
    pub fn reserve_first_window(&mut self, now: MonotonicTime, shared: Shared<'_>) {
        self.started.get_or_insert(now);
        let window = self.setup.policy.window;
        let first: Vec<ProbeKey> = self.order.iter().take(window).copied().collect();
        for key in first {
            let status = self.start(key, now, shared);
            self.set(key, status);
        }
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
        let spacing = setup.plan.spacing * u32::from(key.attempt);
        let mut at = self
            .started
            .map_or(now, |started| now.max(started + spacing));
        if at > self.send_limit() {
            return self.not_sent(NotSentReason::Deadline);
        }
        if let Some(router) = self.router(key.ttl, shared) {
            let optimistic = shared.routers.optimistic(router);
            // A multi-flow trace's TTL budget grows as its routers answer:
            // its tokens are taken only shortly before they are used, so
            // probes waiting for them profit from the growth.
            let learning = matches!(router, RouterKey::TraceHop(..)) && self.setup.branching;
            let limit = if learning {
                self.send_limit().min(at + LEARNING_HORIZON)
            } else {
                self.send_limit()
            };
            match shared.routers.reserve(router, at, limit) {
                Grant::At(t) => at = t,
                Grant::TooLate(t) if learning && t <= self.send_limit() => {
                    tracing::trace!(?router, ttl = key.ttl.get(), wait = ?t.since(now), "deferred for a token");
                    return Status::Deferred(t);
                }
                Grant::TooLate(t) => {
                    tracing::trace!(
                        ?router,
                        ttl = key.ttl.get(),
                        ?t,
                        "no token before the deadline"
                    );
                    return self.not_sent(NotSentReason::RouterBudget);
                }
            }
            if at > now + LEARNING_HORIZON {
                tracing::trace!(?router, ttl = key.ttl.get(), wait_ms = ?at.since(now), "waiting for a token");
            }
            if let Some(probe) = self.probes.get_mut(&key) {
                probe.optimistic = optimistic;
            }
        }
        Status::Scheduled(at)
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
            Err(free) if free <= self.send_limit() => {
                self.set(key, Status::Scheduled(free));
                None
            }
            Err(_) => {
                let status = self.not_sent(NotSentReason::ProbeRate);
                self.set(key, status);
                None
            }
        }
    }

    fn not_sent(&mut self, reason: NotSentReason) -> Status {
        *self.stats.not_sent.entry(reason.as_str()).or_default() += 1;
        Status::Unanswered {
            reason: NoAnswer::NotSent(reason),
            waited: None,
        }
    }

    /// The router budget a probe at `ttl` spends: the router this trace saw
    /// there, else the one other traces saw at that position of the origin
    /// (the gateway's position is always its own). `None` when nothing is
    /// known to answer there with an ICMP error: a destination answering TCP
    /// or echo probes costs no router anything, and an unknown position is
    /// paced by the window until someone learns what is there.
    fn router(&self, ttl: Ttl, shared: Shared<'_>) -> Option<RouterKey> {
        let protocol = self.setup.flow.protocol();
        let free_at_destination = matches!(protocol, Protocol::Tcp | Protocol::Icmp);
        let mut seen = self.probes.iter().filter(|(k, _)| k.ttl == ttl);
        let seen = seen.find_map(|(_, p)| match &p.status {
            Status::Answered(a) => Some(a),
            _ => None,
        });
        if let Some(answer) = seen {
            return (!(answer.destination && free_at_destination))
                .then_some(RouterKey::Address(answer.from));
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
                .routers
                .known(position)
                .map_or(self.own_hop(ttl), RouterKey::Address),
        )
    }

    /// This trace's budget for a hop nobody has identified yet.
    /// The unknown router at `ttl` on this flow's path. A flow of a
    /// multi-flow trace does not know which of the routers at `ttl` it will
    /// meet, so all flows of the trace share one budget per TTL: no router
    /// there can be asked more than one router's worth, and none drops
    /// answers we would report as silence (slower, never untrue). A lone
    /// flow keys it by itself.
    fn own_hop(&self, ttl: Ttl) -> RouterKey {
        if self.setup.branching
            && let Some(observer) = self.setup.observers.first()
        {
            return RouterKey::TraceHop(observer.test_run_id.as_u128(), ttl);
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
        self.probes
            .iter()
            .filter_map(|(k, p)| match &p.status {
                Status::Answered(a) if a.destination => Some(k.ttl),
                _ => None,
            })
            .min()
    }

    fn set(&mut self, key: ProbeKey, status: Status) {
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
        p.sends.push(Send { at, tx_stamp: None });
        p.status = Status::InFlight;
        self.stats.probes_sent += 1;
    }

    /// The socket had no room: try again shortly.
    pub fn on_send_deferred(&mut self, key: ProbeKey, now: MonotonicTime) {
        self.set(key, Status::Scheduled(now + Duration::from_millis(1)));
    }

    /// How long a probe at `key` waits before it is given up (see module docs).
    pub fn wait_for(&self, key: ProbeKey) -> Duration {
        let policy = &self.setup.policy;
        let max = self.setup.plan.timeout;
        if !policy.adaptive_waits {
            return max;
        }
        let mut wait = max;
        if let Some((fastest, _)) = self.rtts.get(&key.ttl) {
            wait = wait.min(fastest.mul_f64(policy.here));
        }
        let slowest_later = self
            .rtts
            .iter()
            .filter(|(ttl, _)| **ttl > key.ttl)
            .map(|(_, (_, slowest))| *slowest)
            .max();
        if let Some(slowest) = slowest_later {
            wait = wait.min(slowest.mul_f64(policy.near));
        }
        wait.max(self.floor.max(policy.min_wait)).min(max)
    }

    /// Gives up in-flight probes whose wait is over.
    fn settle(&mut self, now: MonotonicTime, shared: Shared<'_>) {
        let last = self.last_ttl();
        // Waits are kernel time; what we have seen lags behind it.
        let lag = shared.lag.recent(now);
        let expired: Vec<(ProbeKey, Duration)> = self
            .probes
            .iter()
            .filter(|(k, p)| k.ttl <= last && p.status == Status::InFlight)
            .filter_map(|(k, p)| {
                let waited = now.since(p.sends.last()?.at).unwrap_or_default();
                (waited >= self.wait_for(*k) + lag).then_some((*k, waited))
            })
            .collect();
        for (key, waited) in expired {
            let router = self.router(key.ttl, shared);
            let status =
                if let Some(router) = router.filter(|_| self.rate_limit_suspected(key, shared)) {
                    shared.routers.exhausted(router, now);
                    let can_retry = self.setup.policy.reprobe
                        && self.probes[&key].sends.len() == 1
                        && shared.routers.earliest(router, now, 1) + self.wait_for(key)
                            <= self.setup.deadline;
                    if can_retry {
                        Status::Queued
                    } else {
                        Status::Unanswered {
                            reason: NoAnswer::RateLimited,
                            waited: Some(waited),
                        }
                    }
                } else if self.optimism_to_check(key) {
                    // Sent on a learnt budget: a router may have held back.
                    // Once more on one router's budget, and that counts.
                    if let Some(router) = router {
                        shared.routers.back_off(router, now);
                    }
                    Status::Queued
                } else {
                    Status::Unanswered {
                        reason: NoAnswer::Timeout,
                        waited: Some(waited),
                    }
                };
            self.set(key, status);
        }
    }

    /// An unanswered probe sent on a grown budget and not probed again yet:
    /// its silence may be a router holding back (a truly silent hop costs
    /// one more probe to be called so).
    fn optimism_to_check(&self, key: ProbeKey) -> bool {
        let probe = &self.probes[&key];
        probe.optimistic && probe.sends.len() == 1
    }

    /// A router that answers at this TTL (this trace saw it, or others did at
    /// this position) is silent now, while a later hop answered: it is holding
    /// back, not absent.
    fn answers_at(&self, key: ProbeKey, shared: Shared<'_>) -> bool {
        self.rtts.contains_key(&key.ttl)
            || (self.position_applies(key.ttl)
                && shared
                    .routers
                    .known(RouterKey::Position(self.setup.origin, key.ttl))
                    .is_some())
    }

    fn rate_limit_suspected(&self, key: ProbeKey, shared: Shared<'_>) -> bool {
        let later_answered = self.probes.iter().any(|(k, p)| {
            k.ttl > key.ttl && matches!(p.status, Status::Answered(_) | Status::Shared(_))
        });
        later_answered && self.answers_at(key, shared)
    }

    /// Reasons this trace reports less than it was asked to (not-sent probes,
    /// suspected rate limiting, waits cut short by the deadline).
    pub fn degraded(&self) -> Vec<&'static str> {
        let last = self.last_ttl();
        let mut reasons: Vec<&'static str> = self
            .probes
            .iter()
            .filter(|(k, _)| k.ttl <= last)
            .filter_map(|(_, p)| match &p.status {
                Status::Unanswered { reason, .. } if *reason != NoAnswer::Timeout => {
                    Some(reason.as_str())
                }
                _ => None,
            })
            .collect();
        reasons.sort_unstable();
        reasons.dedup();
        reasons
    }

    /// Every probe that matters has an outcome.
    pub fn is_done(&self) -> bool {
        let last = self.last_ttl();
        self.probes
            .iter()
            .filter(|(k, _)| k.ttl <= last)
            .all(|(_, p)| p.status.is_settled())
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
            let status = match probe.sends.last() {
                Some(send) if probe.status == Status::InFlight => Status::Unanswered {
                    reason: NoAnswer::CutShort,
                    waited: now.since(send.at),
                },
                _ => self.not_sent(NotSentReason::Deadline),
            };
            self.set(key, status);
        }
        if self.claimed_first_hop {
            shared.share.release(self.setup.origin);
        }
        // A lone flow's unknown-router budgets die with it. A multi-flow
        // trace's per-TTL budgets are shared with sibling flows still
        // running: forgetting them would hand those a fresh burst (they
        // age out like any idle bucket).
        if !self.setup.branching {
            let plan = self.setup.plan;
            for ttl in Ttl::range(plan.first_ttl, plan.max_ttl) {
                shared.routers.forget(self.own_hop(ttl));
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
        let answer = answer_of(&reply, packet, &self.setup.flow, id, rtt);
        *self
            .stats
            .answers
            .entry(kind_name(packet.kind))
            .or_default() += 1;
        self.take_answer(key, answer, shared);
    }

    fn take_answer(&mut self, key: ProbeKey, answer: Answer, shared: Shared<'_>) {
        let origin = self.setup.origin;
        if self.setup.branching && answer.destination {
            // The destination's ICMP budget (UDP) is learnt like a router's.
            shared.routers.answered(self.own_hop(key.ttl));
        }
        if !answer.destination {
            // A router answers for every flow crossing it; a destination
            // answers only for itself.
            if self.position_applies(key.ttl) {
                shared
                    .routers
                    .learn(RouterKey::Position(origin, key.ttl), answer.from);
            }
            // A multi-flow trace's per-TTL budget stays with the TTL: it
            // paces every sibling flow still to come, whichever router
            // answered this one, and grows as the TTL's routers answer.
            if self.setup.branching {
                shared.routers.answered(self.own_hop(key.ttl));
            } else {
                shared.routers.learn(self.own_hop(key.ttl), answer.from);
            }
        }
        if let Some(rtt) = answer.rtt {
            shared.jitter.observe(answer.from, rtt, answer.received);
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
        self.set(key, Status::Answered(answer));
    }
}

/// Reads a reply as an answer: who, when, and whether the path ends there.
fn answer_of(
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
        kind: packet.kind,
        icmp_type: reply.icmp.map(|(t, _)| t),
        icmp_code: reply.icmp.map(|(_, c)| c),
        reply_ttl: reply.ttl,
        destination,
        // An unreachable from a router ends the path too: nothing gets past it.
        terminal: destination || packet.kind == EventKind::DestUnreachable,
        mpls_labels: reply.mpls_labels.clone(),
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
