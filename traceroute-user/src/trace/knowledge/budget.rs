//! One responder's answer budget, learnt from what it does.
//!
//! It starts at the prior (by default Linux's: a burst of 6 ICMP errors,
//! then one per second) and doubles, burst and rate together, each time the
//! responder answers the probe that took the last token of the current
//! budget: it has answered all we modelled, so it may allow more (TCP's slow
//! start, with "a full budget answered" as the round). Tokens are taken at
//! most [`HORIZON`] ahead while the budget is being learnt, so probes that
//! wait profit from growth at once.
//!
//! Silences that look like a limit (see the prober) are strikes: the first
//! is asked again at once (one lost packet is not a limit), and
//! [`STRIKES_TO_LIMIT`] in a row make the budget *limited*: spent as of the
//! silent probe, back to the prior,
//! no growth for [`LIMIT_HOLD`], and reservations queue up front so that
//! admission can see how long the line is. First samples (a trace's first
//! probe at a TTL) go before further samples of anyone.

use super::{HORIZON, LIMIT_HOLD, MAX_SCALE, STRIKES_TO_LIMIT};
use crate::clock::MonotonicTime;
use crate::trace::budget::{Bucket, Rate};

/// What a reservation asks for.
#[derive(Clone, Copy, Debug)]
pub struct Ask {
    /// The earliest the probe may leave.
    pub at: MonotonicTime,
    /// It must leave by then, or not at all.
    pub limit: MonotonicTime,
    /// The trace has no answer at this TTL yet: its first sample there is
    /// worth more than anyone's further ones.
    pub first: bool,
}

/// The answer to a reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grant {
    /// Send at this time; the token is taken.
    At(MonotonicTime, Spent),
    /// Look again then (or when the budget grows, see
    /// [`super::Knowledge::subscribe`]): nothing taken.
    Later(MonotonicTime),
    /// Not before this time, which is past the limit: nothing taken.
    TooLate(MonotonicTime),
}

/// Which token a probe spent, for what its answer or silence teaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spent {
    /// Tokens in use once it was taken (1: the first of a full budget).
    pub depth: u32,
    /// The budget's scale when it was taken.
    pub scale: u32,
    /// Deeper than the responder has been seen to answer: a silence may be
    /// the limit we were probing for, and is asked again, never reported.
    pub optimistic: bool,
}

#[derive(Clone, Debug)]
pub struct Budget {
    bucket: Bucket,
    /// The budget is the prior times this (a power of two).
    scale: u32,
    /// The deepest token that was answered since the last limit.
    proven: u32,
    /// When it last showed a limit.
    limited: Option<MonotonicTime>,
    /// Limit-like silences since its last answer.
    strikes: u32,
    /// A first sample waits for a token until then: others give way.
    contended_until: MonotonicTime,
    /// Last use or observation (ageing out).
    pub(super) touched: MonotonicTime,
    pub(super) growths: u64,
    pub(super) limits: u64,
}

impl Budget {
    pub fn new(now: MonotonicTime) -> Budget {
        Budget {
            bucket: Bucket::default(),
            scale: 1,
            proven: 0,
            limited: None,
            strikes: 0,
            contended_until: MonotonicTime::from_nanos(0),
            touched: now,
            growths: 0,
            limits: 0,
        }
    }

    pub fn scale(&self) -> u32 {
        self.scale
    }

    pub fn proven(&self) -> u32 {
        self.proven
    }

    pub fn rate(&self, prior: Rate) -> Rate {
        prior.scaled(self.scale)
    }

    /// It showed a limit within [`LIMIT_HOLD`].
    pub fn is_limited(&self, now: MonotonicTime) -> bool {
        self.limited
            .is_some_and(|at| now.since(at).is_none_or(|held| held < LIMIT_HOLD))
    }

    /// When its last limit was seen.
    pub fn limited_at(&self) -> Option<MonotonicTime> {
        self.limited
    }

    /// Takes a token for `ask`. `several`: the budget stands for several
    /// routers whose share of it is not known (see
    /// [`super::RouterKey::TraceTtl`]): beyond one router's, every token is
    /// optimistic.
    pub fn reserve(&mut self, prior: Rate, now: MonotonicTime, ask: Ask, several: bool) -> Grant {
        self.touched = now;
        let rate = self.rate(prior);
        let from = ask.at.max(now);
        let earliest = self.bucket.earliest(rate, from, 1);
        if earliest > ask.limit {
            return Grant::TooLate(earliest);
        }
        let limited = self.is_limited(now);
        if !ask.first && now < self.contended_until {
            // First samples of other traces are waiting for this budget.
            return if limited {
                Grant::TooLate(earliest.max(self.contended_until))
            } else {
                Grant::Later(self.contended_until.min(ask.limit))
            };
        }
        if earliest > from + HORIZON {
            if ask.first {
                self.contended_until = self.contended_until.max(earliest + HORIZON);
            }
            if !limited {
                // Still learning: the budget may grow before then.
                return Grant::Later(earliest);
            }
        }
        let at = self.bucket.reserve(rate, earliest);
        let depth = self.bucket.in_use(rate, at);
        Grant::At(
            at,
            Spent {
                depth,
                scale: self.scale,
                optimistic: depth > self.proven.max(prior.burst) || (several && self.scale > 1),
            },
        )
    }

    /// A probe that spent `spent` was answered. Returns whether the budget
    /// grew: it answered the last token of its budget.
    pub fn answered(&mut self, prior: Rate, spent: Spent, now: MonotonicTime) -> bool {
        self.touched = now;
        self.strikes = 0;
        self.proven = self.proven.max(spent.depth);
        let top = prior.burst.saturating_mul(self.scale);
        let grow = spent.scale == self.scale
            && spent.depth >= top
            && self.scale < MAX_SCALE
            && !self.is_limited(now);
        if grow {
            self.rescale(prior, self.scale * 2, now);
            self.growths += 1;
        }
        grow
    }

    /// A probe sent at `sent_at` went unanswered where the responder should
    /// have answered. The first such silence changes nothing (a lost packet
    /// is asked again at once, and answered); the second in a row is a
    /// limit: it was out of tokens then. Returns whether the budget is now
    /// limited.
    pub fn silent(&mut self, prior: Rate, sent_at: MonotonicTime, now: MonotonicTime) -> bool {
        self.touched = now;
        self.strikes += 1;
        if self.strikes >= STRIKES_TO_LIMIT {
            self.limit(prior, sent_at, now);
        }
        self.is_limited(now)
    }

    /// The responder showed a limit: the prior again, spent as of
    /// `empty_at`, and no growth for [`LIMIT_HOLD`].
    pub fn limit(&mut self, prior: Rate, empty_at: MonotonicTime, now: MonotonicTime) {
        if !self.is_limited(now) {
            // What it allows is what the prior says, and it had nothing
            // left then: what the grown budget counted as in use is moot.
            // (Already limited, its queue stands.)
            self.scale = 1;
            self.bucket = Bucket::default();
            self.limits += 1;
        }
        self.limited = Some(now);
        self.proven = 0;
        self.strikes = 0;
        self.touched = now;
        self.empty_since(prior, empty_at);
    }

    /// Every token was spent at `at`: the next one comes an interval later.
    pub fn empty_since(&mut self, prior: Rate, at: MonotonicTime) {
        self.bucket.spend_all(self.rate(prior), at);
    }

    /// When the `n`-th token from now would conform.
    pub fn earliest(&self, prior: Rate, now: MonotonicTime, n: u32) -> MonotonicTime {
        self.bucket.earliest(self.rate(prior), now, n)
    }

    /// Tokens in use now.
    pub fn in_use(&self, prior: Rate, now: MonotonicTime) -> u32 {
        self.bucket.in_use(self.rate(prior), now)
    }

    /// Takes `n` tokens as of `now` whatever the queue (answers the budget
    /// owed that no reservation took, such as a UDP destination's answers
    /// to an MDA scout's probes beyond it).
    pub fn charge(&mut self, prior: Rate, n: u32, now: MonotonicTime) {
        let rate = self.rate(prior);
        for _ in 0..n {
            self.bucket.reserve(rate, now);
        }
        self.touched = now;
    }

    /// Keeps the stricter of two states of one responder (a position that
    /// turned out to be an address already known).
    pub fn merge(&mut self, prior: Rate, other: Budget, now: MonotonicTime) {
        let mut other = other;
        if other.scale != self.scale {
            other.rescale(prior, self.scale, now);
        }
        self.bucket.merge(other.bucket);
        self.limited = self.limited.max(other.limited);
        self.contended_until = self.contended_until.max(other.contended_until);
        self.touched = self.touched.max(other.touched);
        self.growths += other.growths;
        self.limits += other.limits;
    }

    fn rescale(&mut self, prior: Rate, scale: u32, now: MonotonicTime) {
        let from = self.rate(prior);
        self.scale = scale;
        self.bucket.rescale(from, self.rate(prior), now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::sim::at;

    const PRIOR: Rate = Rate::LINUX_ICMP;

    fn ask(ms: u64) -> Ask {
        Ask {
            at: at(ms),
            limit: at(1_000_000),
            first: true,
        }
    }

    fn extra(ms: u64) -> Ask {
        Ask {
            first: false,
            ..ask(ms)
        }
    }

    impl Budget {
        /// [`Budget::reserve`] of one router's budget.
        fn reserve_one(&mut self, now: MonotonicTime, ask: Ask) -> Grant {
            self.reserve(PRIOR, now, ask, false)
        }
    }

    fn take(b: &mut Budget, ms: u64) -> Spent {
        match b.reserve_one(at(ms), ask(ms)) {
            Grant::At(t, spent) => {
                assert_eq!(t, at(ms));
                spent
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_new_budget_is_the_prior_and_waits_instead_of_queueing() {
        let mut b = Budget::new(at(0));
        let depths: Vec<u32> = (0..6).map(|_| take(&mut b, 0).depth).collect();
        assert_eq!(depths, [1, 2, 3, 4, 5, 6]);
        // Unknown: the seventh is not booked a second ahead, it looks again.
        assert_eq!(b.reserve_one(at(0), ask(0)), Grant::Later(at(1000)));
        assert_eq!(b.in_use(PRIOR, at(0)), 6);
        // Past the limit: too late, nothing taken.
        let short = Ask {
            limit: at(500),
            ..ask(0)
        };
        assert_eq!(b.reserve_one(at(0), short), Grant::TooLate(at(1000)));
    }

    #[test]
    fn answering_the_last_token_doubles_the_budget_and_frees_what_was_added() {
        let mut b = Budget::new(at(0));
        let spent: Vec<Spent> = (0..6).map(|_| take(&mut b, 0)).collect();
        assert!(spent.iter().all(|s| !s.optimistic), "the prior is assumed");
        for s in &spent[..5] {
            assert!(!b.answered(PRIOR, *s, at(1)));
        }
        assert!(b.answered(PRIOR, spent[5], at(1)), "a full budget answered");
        assert_eq!(b.scale(), 2);
        // Six more at once; they are beyond what was seen answered.
        let more: Vec<Spent> = (0..6).map(|_| take(&mut b, 1)).collect();
        assert!(more.iter().all(|s| s.optimistic && s.scale == 2));
        assert_eq!(more[5].depth, 12);
        assert!(b.answered(PRIOR, more[5], at(2)));
        assert_eq!(b.scale(), 4);
        // Answers of a budget already grown teach nothing more.
        assert!(!b.answered(PRIOR, more[5], at(2)));
        assert_eq!(b.scale(), 4);
    }

    #[test]
    fn two_silences_in_a_row_are_a_limit_one_is_not() {
        let mut b = Budget::new(at(0));
        for _ in 0..6 {
            let s = take(&mut b, 0);
            b.answered(PRIOR, s, at(1));
        }
        assert_eq!(b.scale(), 2);
        assert!(!b.silent(PRIOR, at(10), at(20)), "one silence: a loss");
        // Nothing else changes: what the budget allows is asked at once.
        assert_eq!(b.scale(), 2);
        let s = take_any(&mut b, 600);
        b.answered(PRIOR, s, at(601));
        assert!(!b.silent(PRIOR, at(640), at(650)), "strikes restart");
        assert!(
            b.silent(PRIOR, at(660), at(670)),
            "answers stopped: a limit"
        );
        assert_eq!(b.scale(), 1);
        assert_eq!(b.limits, 1);
        // The prior, spent as of the silence: a token one interval after it.
        assert_eq!(b.earliest(PRIOR, at(670), 1), at(1660));
        // Limited: reservations queue up front, and nothing grows.
        for want in [1660, 2660] {
            match b.reserve_one(at(670), ask(670)) {
                Grant::At(t, s) => {
                    assert_eq!(t, at(want));
                    assert!(!b.answered(PRIOR, s, at(want + 1)));
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(b.scale(), 1);
        // The hold ends: it may grow again.
        let later = at(670) + LIMIT_HOLD + std::time::Duration::from_secs(1);
        assert!(!b.is_limited(later));
    }

    fn take_any(b: &mut Budget, ms: u64) -> Spent {
        match b.reserve_one(at(ms), ask(ms)) {
            Grant::At(_, spent) => spent,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn further_samples_give_way_to_first_ones() {
        let mut b = Budget::new(at(0));
        for _ in 0..6 {
            take(&mut b, 0);
        }
        // A first sample has to wait: it marks the budget contended.
        assert_eq!(b.reserve_one(at(0), ask(0)), Grant::Later(at(1000)));
        // At its time, another trace's further sample must not take it.
        assert!(matches!(
            b.reserve_one(at(1000), extra(1000)),
            Grant::Later(_)
        ));
        assert!(matches!(b.reserve_one(at(1000), ask(1000)), Grant::At(..)));
        // Limited, a further sample behind waiting first ones is refused
        // (the budget went to others), not queued.
        b.limit(PRIOR, at(1000), at(1000));
        assert!(matches!(b.reserve_one(at(1000), ask(1000)), Grant::At(..)));
        assert!(matches!(
            b.reserve_one(at(1000), extra(1000)),
            Grant::TooLate(_)
        ));
    }
}
