//! Giving up on a probe, and what its silence is taken for.
//!
//! * **Waits.** A probe nothing is known about waits the request's whole
//!   timeout: a router whose control plane is busy sends its own errors tens
//!   or hundreds of milliseconds late while it forwards in microseconds, so
//!   later hops' RTTs say nothing about it. Shorter waits come only from
//!   knowledge: the responder known at its TTL (this trace's answer there,
//!   or other traces' at this position) gives up after what that responder
//!   takes ([`Knowledge::give_up_after`]); a place known to be silent (a
//!   full wait there recently, [`Knowledge::known_silent`]) after `near` ×
//!   the slowest later hop. With the CLI's `-w` (traceroute's
//!   `MAX,HERE,NEAR`) HERE and NEAR apply on first contact too, as in
//!   traceroute. Never less than `min_wait` or four times the recent jitter;
//!   the capture's recent delivery lag comes on top.
//! * **Verdicts.** A silence is, in this order:
//!   1. *a limit*, when the probe spent a token beyond what its responder
//!      was seen to answer, or when a responder that answers at its TTL fell
//!      silent while a later hop answered: its budget takes a strike, and
//!      the probe is sent again once the budget has refilled (if the
//!      deadline allows), else reported `rate_limited`;
//!   2. *a first contact*, when nobody is known at its TTL and its place is
//!      not known to be silent, yet a later TTL answered (a router whose
//!      budget another process spent, a destination that answers some TTLs
//!      and not others): one probe of the TTL is sent again once a token
//!      has had time to refill, and the TTL's other silences wait for it
//!      (`Awaiting`). Answered, the TTL was rate limited and its silences are
//!      asked again; silent, every attempt there was;
//!   3. otherwise *silence* (`timeout`), remembered for its place when the
//!      probe waited its full time.
//!
//! [`Knowledge::give_up_after`]: crate::trace::knowledge::Knowledge::give_up_after
//! [`Knowledge::known_silent`]: crate::trace::knowledge::Knowledge::known_silent

use std::net::IpAddr;
use std::time::Duration;

use super::{ProbeKey, Prober, Send, Shared, Status};
use crate::clock::MonotonicTime;
use crate::path::NoAnswer;
use crate::probe::Ttl;
use crate::trace::knowledge::{Place, RouterKey};

/// Where the re-check of a first contact's silent TTL stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Recheck {
    /// This probe of the TTL is being sent again.
    Pending(ProbeKey),
    /// It came back silent too: the TTL is silent.
    Silent,
}

impl Prober {
    /// How long a probe at `key` waits before it is given up (see the
    /// module docs), as known now.
    pub fn wait_for(&self, key: ProbeKey, shared: Shared<'_>) -> Duration {
        let policy = &self.setup.policy;
        let max = self.setup.plan.timeout;
        if !policy.adaptive_waits {
            return max;
        }
        let slowest_later = self
            .rtts
            .iter()
            .filter(|(ttl, _)| **ttl > key.ttl)
            .map(|(_, (_, slowest))| *slowest)
            .max();
        let mut wait = max;
        if policy.traceroute_waits {
            if let Some((fastest, _)) = self.rtts.get(&key.ttl) {
                wait = wait.min(fastest.mul_f64(policy.here));
            }
            if let Some(slowest) = slowest_later {
                wait = wait.min(slowest.mul_f64(policy.near));
            }
        } else if let Some(responder) = self.responder_at(key.ttl, shared) {
            if let Some(known) = shared.knowledge.give_up_after(responder, policy.here) {
                wait = wait.min(known);
            }
        } else if let Some(slowest) = slowest_later
            && self.place_known_silent(key.ttl, shared)
        {
            wait = wait.min(slowest.mul_f64(policy.near));
        }
        wait.max(self.floor.max(policy.min_wait)).min(max)
    }

    /// When the probe `key` sent by `send` is given up: after its wait and
    /// the capture's recent lag, but a wait shorter than the timeout only
    /// once the capture has handed over something of this trace stamped
    /// after it left (its own departure will do): until then the capture may
    /// just be slow, and its lag is not measured yet.
    pub(super) fn give_up_at(
        &self,
        key: ProbeKey,
        send: &Send,
        lag: Duration,
        shared: Shared<'_>,
    ) -> MonotonicTime {
        let wait = self.wait_for(key, shared);
        let full = self.setup.plan.timeout;
        let heard_since = self.heard.is_some_and(|heard| heard >= send.at);
        if wait >= full || heard_since {
            send.at + wait + lag
        } else {
            send.at + full + lag
        }
    }

    /// Gives up in-flight probes whose wait is over.
    pub(super) fn settle(&mut self, now: MonotonicTime, shared: Shared<'_>) {
        self.now = now;
        let last = self.last_ttl();
        // Waits are kernel time; what we have seen lags behind it.
        let lag = shared.lag.recent(now);
        let expired: Vec<(ProbeKey, Duration)> = self
            .probes
            .iter()
            .skip(self.first_open())
            .take_while(|(k, _)| k.ttl <= last)
            .filter_map(|(k, p)| {
                if !matches!(p.status, Status::InFlight) {
                    return None;
                }
                let send = p.sends.last()?;
                let waited = now.since(send.at).unwrap_or_default();
                (now >= self.give_up_at(*k, send, lag, shared)).then_some((*k, waited))
            })
            .collect();
        for (key, waited) in expired {
            let status = self.verdict(key, waited, now, shared);
            if let Some(probe) = self.probes.get_mut(&key) {
                if status == Status::Queued {
                    probe.gave_up_after = Some(waited);
                }
                probe.status = status;
            }
        }
    }

    /// What the silence of `key`, which waited `waited`, is taken for.
    fn verdict(
        &mut self,
        key: ProbeKey,
        waited: Duration,
        now: MonotonicTime,
        shared: Shared<'_>,
    ) -> Status {
        let knowledge = shared.knowledge;
        let probe = &self.probes[&key];
        let send = *probe.sends.last().expect("a probe in flight was sent");
        let first_send = probe.sends.len() == 1;
        let later = self.later_answered(key.ttl);
        let timeout = Status::Unanswered {
            reason: NoAnswer::Timeout,
            waited: Some(waited),
        };
        // End-to-end probes: a silence after the full wait is a loss sample,
        // whatever holds it back.
        if !self.setup.policy.adaptive_waits {
            return timeout;
        }
        // 1. A responder holding back (or, asked again for that, still).
        let optimistic = send.token.is_some_and(|t| t.spent.optimistic);
        // The destination answered this origin at this TTL or nearer (this
        // trace's other flows, or earlier traces): the probe reached it, or
        // a router before it that answers; either is holding back.
        let reaches_destination = shared
            .knowledge
            .destination_distance(self.setup.origin, self.setup.flow.destination(), now)
            .is_some_and(|distance| key.ttl >= distance);
        if optimistic
            || probe.suspected
            || reaches_destination
            || (later && self.answers_at(key, shared))
        {
            let budget = self
                .router(key.ttl, shared)
                .or_else(|| send.token.map(|t| t.key));
            let limited = budget.is_some_and(|budget| knowledge.silent(budget, send.at, now));
            // Not a limit yet (one silence may be a lost packet): asked
            // again when a limited responder would have a token again.
            let refilled = send.at + knowledge.prior().interval();
            let not_before = (!limited).then_some(refilled);
            if first_send
                && self.setup.policy.reprobe
                && self.can_send_again(key, not_before.unwrap_or(now).max(now), shared)
            {
                if let Some(probe) = self.probes.get_mut(&key) {
                    probe.not_before = not_before;
                    probe.suspected = true;
                }
                return Status::Queued;
            }
            return Status::Unanswered {
                reason: NoAnswer::RateLimited,
                waited: Some(waited),
            };
        }
        // 2. A first contact.
        match self.rechecks.get(&key.ttl).copied() {
            Some(Recheck::Pending(checking)) if checking == key && !first_send => {
                self.rechecks.insert(key.ttl, Recheck::Silent);
                // Probes held back behind this check may go.
                self.news = true;
                self.conclude_awaiting(key.ttl);
                self.remember_silence(key.ttl, waited, now, shared);
                return timeout;
            }
            Some(Recheck::Pending(_)) => return Status::Awaiting { waited },
            Some(Recheck::Silent) => {
                self.remember_silence(key.ttl, waited, now, shared);
                return timeout;
            }
            None => {}
        }
        let first_contact = first_send
            && later
            && self.setup.policy.reprobe
            && self.setup.policy.adaptive_waits
            && !self.place_known_silent(key.ttl, shared);
        if first_contact {
            // Had its responder nothing left, a token came back one
            // interval after this probe left.
            if let Some(budget) = self.router(key.ttl, shared) {
                knowledge.empty_since(budget, send.at, now);
            }
            if self.can_send_again(key, now, shared) {
                self.rechecks.insert(key.ttl, Recheck::Pending(key));
                return Status::Queued;
            }
        }
        // 3. Silence.
        self.remember_silence(key.ttl, waited, now, shared);
        timeout
    }

    /// Whether a probe at `key` sent again now would get a token and its
    /// wait before the deadline.
    fn can_send_again(&self, key: ProbeKey, now: MonotonicTime, shared: Shared<'_>) -> bool {
        let leaves = self
            .router(key.ttl, shared)
            .map_or(now, |budget| shared.knowledge.earliest(budget, now, 1));
        leaves.max(now) + self.wait_for(key, shared) <= self.setup.deadline
    }

    /// A TTL below `ttl` is being checked once more.
    pub(super) fn checking_below(&self, ttl: Ttl) -> bool {
        self.rechecks
            .iter()
            .any(|(t, r)| *t < ttl && matches!(r, Recheck::Pending(_)))
    }

    /// The TTL's re-check came back silent: the silences that waited for
    /// it stand, as the full waits they were.
    fn conclude_awaiting(&mut self, ttl: Ttl) {
        for (k, probe) in self.probes.iter_mut() {
            if k.ttl == ttl
                && let Status::Awaiting { waited } = probe.status
            {
                probe.status = Status::Unanswered {
                    reason: NoAnswer::Timeout,
                    waited: Some(waited),
                };
            }
        }
    }

    /// An answer at `key.ttl`: a first contact's silences there were a
    /// limit (or a loss), not a silent hop. When it answers the re-check
    /// itself, its responder has shown that it limits.
    pub(super) fn heard_at(
        &mut self,
        key: ProbeKey,
        send: Send,
        from: IpAddr,
        received: MonotonicTime,
        shared: Shared<'_>,
    ) {
        let Some(recheck) = self.rechecks.remove(&key.ttl) else {
            return;
        };
        let answered_recheck =
            recheck == Recheck::Pending(key) && self.probes[&key].sends.get(1) == Some(&send);
        if answered_recheck && send.token.is_some() {
            shared
                .knowledge
                .limit_shown(RouterKey::Address(from), send.at, received);
        }
        for (k, probe) in self.probes.iter_mut() {
            if k.ttl == key.ttl
                && let Status::Awaiting { waited } = probe.status
            {
                probe.gave_up_after = Some(waited);
                probe.status = Status::Queued;
            }
        }
    }

    /// An answer at `ttl`: TTLs below it already given up as silent at a
    /// first contact (before anything beyond them had answered) get the
    /// check they would have had, so that a destination that answered some
    /// TTLs and not others is not placed beyond where it is.
    pub(super) fn reopen_below(&mut self, ttl: Ttl, now: MonotonicTime, shared: Shared<'_>) {
        let policy = &self.setup.policy;
        if !policy.reprobe || !policy.adaptive_waits {
            return;
        }
        let first = self.setup.plan.first_ttl;
        let below: Vec<Ttl> = Ttl::range(first, ttl).filter(|t| *t < ttl).collect();
        for t in below {
            if self.rechecks.contains_key(&t) || self.answered_by(t).is_some() {
                continue;
            }
            let at_t: Vec<(ProbeKey, Duration)> = self
                .probes
                .iter()
                .filter(|(k, _)| k.ttl == t)
                .filter_map(|(k, p)| match (&p.status, p.sends.as_slice()) {
                    (
                        Status::Unanswered {
                            reason: NoAnswer::Timeout,
                            waited: Some(waited),
                        },
                        [_],
                    ) => Some((*k, *waited)),
                    _ => None,
                })
                .collect();
            let Some(&(checking, waited)) = at_t.first() else {
                continue;
            };
            // What was remembered of its place assumed nothing answered
            // beyond it: no reason to skip the check.
            if !self.can_send_again(checking, now, shared) {
                continue;
            }
            // The answer that prompted this may have taken the last token
            // of whoever answers there (a destination answers every TTL
            // beyond its own): the check waits for one to come back.
            if let Some(budget) = self.router(t, shared) {
                shared.knowledge.empty_since(budget, now, now);
            }
            self.rechecks.insert(t, Recheck::Pending(checking));
            for (key, waited_too) in &at_t {
                if let Some(probe) = self.probes.get_mut(key) {
                    probe.status = Status::Awaiting {
                        waited: *waited_too,
                    };
                }
            }
            if let Some(probe) = self.probes.get_mut(&checking) {
                probe.gave_up_after = Some(waited);
                probe.status = Status::Queued;
            }
            self.reopened();
        }
    }

    /// Remembers a silence at `ttl`'s place (a full wait, or a shorter one
    /// taken from knowledge of it).
    fn remember_silence(&self, ttl: Ttl, waited: Duration, now: MonotonicTime, shared: Shared<'_>) {
        if !self.setup.policy.adaptive_waits {
            return;
        }
        let full = waited >= self.setup.plan.timeout;
        shared.knowledge.silence_at(self.place(ttl), full, now);
    }

    /// Where `ttl` is: between the answers this trace has around it.
    fn place(&self, ttl: Ttl) -> Place {
        let before = self.heard_from.range(..ttl).next_back();
        let after = self
            .heard_from
            .range(ttl..=self.last_ttl())
            .find(|(t, _)| **t > ttl);
        Place {
            origin: self.setup.origin,
            before: before.map(|(_, seen)| seen.from),
            after: after.map(|(_, seen)| seen.from),
            offset: ttl.get() - before.map_or(0, |(t, _)| t.get()),
        }
    }

    fn place_known_silent(&self, ttl: Ttl, shared: Shared<'_>) -> bool {
        shared.knowledge.known_silent(self.place(ttl), self.now)
    }

    /// Who answered this trace at `ttl` (any attempt).
    fn answered_by(&self, ttl: Ttl) -> Option<IpAddr> {
        self.heard_from.get(&ttl).map(|seen| seen.from)
    }

    /// The responder known at `ttl`: this trace's answer there, or the one
    /// other traces saw at this position.
    fn responder_at(&self, ttl: Ttl, shared: Shared<'_>) -> Option<IpAddr> {
        self.answered_by(ttl).or_else(|| {
            self.position_applies(ttl)
                .then(|| {
                    shared
                        .knowledge
                        .known(RouterKey::Position(self.setup.origin, ttl))
                })
                .flatten()
        })
    }

    /// A responder answers at this TTL (this trace saw it, or others did at
    /// this position): a silence there is it holding back, not absent.
    fn answers_at(&self, key: ProbeKey, shared: Shared<'_>) -> bool {
        self.rtts.contains_key(&key.ttl) || self.responder_at(key.ttl, shared).is_some()
    }

    fn later_answered(&self, ttl: Ttl) -> bool {
        self.heard_from.range(ttl..).any(|(t, _)| *t > ttl)
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
        self.order
            .get(self.first_open())
            .is_none_or(|k| k.ttl > last)
    }

    /// The index in `order` of the first probe not settled (all before it
    /// are).
    pub(super) fn first_open(&self) -> usize {
        let mut i = self.open_from.get();
        while i < self.order.len() && self.probes.at(i).status.is_settled() {
            i += 1;
        }
        self.open_from.set(i);
        i
    }

    /// Settled probes were opened again: look from the start.
    fn reopened(&self) {
        self.open_from.set(0);
    }
}
