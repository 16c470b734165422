//! The vocabulary of a trace's probing: which probe ([`ProbeKey`]), what
//! the request asks ([`Plan`]) and how to probe ([`Policy`]), where each
//! probe stands ([`Status`]), and what the trace did ([`TraceStats`]).

use std::collections::BTreeMap;
use std::time::Duration;

use super::answer::Answer;
use crate::clock::MonotonicTime;
use crate::path::NoAnswer;
use crate::probe::{ProbeFlow, ProbeId, Ttl};
use crate::trace::budget::{ProbeRail, Rate};
use crate::trace::knowledge::{Knowledge, Origin, RouterKey, Spent};
use crate::trace::lag::{DeliveryLag, Jitter};
use crate::trace::request::{E2E_MIN_SPACING, TraceRequest};
use crate::trace::share::{FirstHop, HopShare, Observer};

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

impl Plan {
    /// What `request` probes: every TTL from its first to its max, its
    /// queries as attempts, as fast as budgets allow.
    pub fn of(request: &TraceRequest) -> Plan {
        Plan {
            first_ttl: request.first_ttl,
            max_ttl: request.max_ttl,
            attempts: request.queries,
            timeout: request.timeout,
            spacing: Duration::ZERO,
        }
    }

    /// What `request`'s end-to-end probes probe: `e2e_queries` probes at
    /// `max_ttl` (as the Go client sends them, so a `max_ttl` short of the
    /// destination shows as loss), spread evenly over one `timeout` so they
    /// sample the path across the trace rather than in one burst. They run
    /// beside the trace over a flow of their own, as SYN probes for TCP (as
    /// the original: SACK answers are not reliable enough for loss, and a
    /// connection per probe is too much).
    pub fn e2e_of(request: &TraceRequest) -> Plan {
        let spacing = request.timeout / u32::from(request.e2e_queries.max(1));
        Plan {
            first_ttl: request.max_ttl,
            attempts: request.e2e_queries,
            spacing: spacing.max(E2E_MIN_SPACING),
            ..Plan::of(request)
        }
    }

    /// The bound a plan of `flows` flows probed together needs: two waits (a
    /// probe, and one re-probe of a rate-limited router or of a first
    /// contact's silence), the time one token takes to come back between
    /// them, the time a router's budget needs for the attempts of every flow
    /// beyond its burst, the attempts' spacing, and a second of slack. All
    /// from the prior: what is learnt of routers shortens traces, not their
    /// deadline.
    pub fn deadline(&self, router_rate: Rate, flows: u16) -> Duration {
        let attempts = u32::from(self.attempts) * u32::from(flows.max(1));
        let beyond_burst = attempts.saturating_sub(router_rate.burst);
        self.timeout * 2
            + router_rate.interval()
            + Duration::from_secs_f64(f64::from(beyond_burst) / router_rate.per_second)
            + self.spacing * u32::from(self.attempts.saturating_sub(1))
            + Duration::from_secs(1)
    }
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
    /// Re-probe a suspected rate-limited router once its budget refilled,
    /// and check a first contact's silence once more after a refill.
    pub reprobe: bool,
    /// Give up on a probe sooner than the timeout where something is known
    /// (see [`super::verdict`]). Off for end-to-end probes: their loss is a
    /// sample, so every one waits the full timeout.
    pub adaptive_waits: bool,
    /// traceroute's `-w MAX,HERE,NEAR` as traceroute means it: NEAR times a
    /// later hop's RTT applies on first contact too (the CLI's `-w`). Off,
    /// a probe nothing is known about waits the whole timeout.
    pub traceroute_waits: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            window: usize::from(crate::trace::request::WINDOW.default),
            here: 3.0,
            // traceroute's NEAR is 10; a hop's answer comes before a later
            // hop's on the same path, so 3x leaves room for a router's slow
            // ICMP path while a silent hop on a 40 ms path costs 120 ms, not 400.
            near: 3.0,
            min_wait: Duration::from_millis(10),
            reprobe: true,
            adaptive_waits: true,
            traceroute_waits: false,
        }
    }
}

/// What the prober shares with every other trace of the process.
#[derive(Clone, Copy)]
pub struct Shared<'a> {
    pub lag: &'a DeliveryLag,
    pub jitter: &'a Jitter,
    pub knowledge: &'a Knowledge,
    pub rail: &'a ProbeRail,
    pub share: &'a HopShare,
}

/// A responder's token a probe spent (see [`crate::trace::knowledge`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    pub key: RouterKey,
    pub spent: Spent,
}

/// One transmission of a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Send {
    /// Userspace clock just before the send call.
    pub at: MonotonicTime,
    /// Kernel egress stamp, when the capture saw the probe leave.
    pub tx_stamp: Option<MonotonicTime>,
    /// The responder's token it spent, if it makes one answer.
    pub token: Option<Token>,
}

impl Send {
    pub(super) fn stamp(&self) -> MonotonicTime {
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
    /// Waited its full time for nothing at a first contact; its TTL is
    /// being checked once more after a refill before anything is reported.
    Awaiting {
        waited: Duration,
    },
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
    pub(super) fn is_settled(&self) -> bool {
        matches!(
            self,
            Status::Answered(_) | Status::Shared(_) | Status::Unanswered { .. }
        )
    }

    /// Counts against the window: probes on the wire. (Probes scheduled for
    /// later do not: a router's slow refill must not hold up other TTLs.)
    pub(super) fn is_busy(&self) -> bool {
        matches!(self, Status::InFlight)
    }
}

#[derive(Clone, Debug)]
pub struct Probe {
    /// The first send, then the re-probe if there was one.
    pub sends: Vec<Send>,
    pub status: Status,
    /// The token its next send spends, once granted.
    pub grant: Option<Token>,
    /// How long its first send waited before it was given up and queued to
    /// be probed again (what it reports if the second send never leaves).
    pub gave_up_after: Option<Duration>,
    /// It is not sent again before this time.
    pub not_before: Option<MonotonicTime>,
    /// Its silence was taken for a responder holding back: it was queued to
    /// be asked again, and a second silence is that too, not a silent hop.
    pub suspected: bool,
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
    /// Of which re-probes of suspected rate-limited routers (and first
    /// contacts' silences checked once more).
    pub reprobes: u64,
    /// Probes never sent, by reason.
    pub not_sent: BTreeMap<&'static str, u64>,
    /// Hops reused from another trace.
    pub shared_hops: u64,
    /// Answers taken, by what they were.
    pub answers: BTreeMap<&'static str, u64>,
    pub ignored: Ignored,
    /// Set when the trace ends: see [`super::Prober::degraded`].
    pub degraded: Vec<&'static str>,
    /// How long the trace waited to be admitted (busy routers).
    pub admission_wait: Duration,
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

/// Every probe of a trace, TTL-major (every attempt of the first TTL, then
/// the next TTL, ...), found by key in constant time.
#[derive(Clone, Debug)]
pub struct Probes {
    first_ttl: Ttl,
    attempts: u8,
    keys: Vec<ProbeKey>,
    probes: Vec<Probe>,
}

impl Probes {
    /// A queued probe for every attempt of every TTL of `plan`.
    pub fn new(plan: &Plan) -> Probes {
        let keys: Vec<ProbeKey> = Ttl::range(plan.first_ttl, plan.max_ttl)
            .flat_map(|ttl| (0..plan.attempts).map(move |attempt| ProbeKey { attempt, ttl }))
            .collect();
        let probes = keys
            .iter()
            .map(|_| Probe {
                sends: Vec::new(),
                status: Status::Queued,
                grant: None,
                gave_up_after: None,
                not_before: None,
                suspected: false,
            })
            .collect();
        Probes {
            first_ttl: plan.first_ttl,
            attempts: plan.attempts,
            keys,
            probes,
        }
    }

    fn index(&self, key: &ProbeKey) -> Option<usize> {
        let ttl = key.ttl.get().checked_sub(self.first_ttl.get())?;
        (key.attempt < self.attempts)
            .then(|| usize::from(ttl) * usize::from(self.attempts) + usize::from(key.attempt))
            .filter(|i| *i < self.probes.len())
    }

    /// The `i`-th probe, TTL-major.
    pub fn at(&self, i: usize) -> &Probe {
        &self.probes[i]
    }

    pub fn get(&self, key: &ProbeKey) -> Option<&Probe> {
        self.probes.get(self.index(key)?)
    }

    pub fn get_mut(&mut self, key: &ProbeKey) -> Option<&mut Probe> {
        let i = self.index(key)?;
        self.probes.get_mut(i)
    }

    /// Every key, TTL-major.
    pub fn keys(&self) -> &[ProbeKey] {
        &self.keys
    }

    pub fn iter(&self) -> impl Iterator<Item = (&ProbeKey, &Probe)> {
        self.keys.iter().zip(&self.probes)
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&ProbeKey, &mut Probe)> {
        self.keys.iter().zip(&mut self.probes)
    }

    pub fn values(&self) -> impl Iterator<Item = &Probe> {
        self.probes.iter()
    }
}

impl std::ops::Index<&ProbeKey> for Probes {
    type Output = Probe;

    fn index(&self, key: &ProbeKey) -> &Probe {
        self.get(key).expect("a probe of this trace")
    }
}

impl<'a> IntoIterator for &'a Probes {
    type Item = (&'a ProbeKey, &'a Probe);
    type IntoIter = std::iter::Zip<std::slice::Iter<'a, ProbeKey>, std::slice::Iter<'a, Probe>>;

    fn into_iter(self) -> Self::IntoIter {
        self.keys.iter().zip(&self.probes)
    }
}
