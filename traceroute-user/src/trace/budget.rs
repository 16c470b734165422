//! Budgets that decide *when* a probe may leave: one per router we make answer,
//! and one process-wide safety rail. Both are shared by every trace of the
//! process and take the time as an argument, so they are tested without a clock.
//!
//! Why per router: a Linux router answers one source with a burst of 6 ICMP
//! errors and then 1 per second (`net.ipv4.icmp_ratelimit`), so asking it
//! faster only turns answers into invented silence. A probe that would make a
//! router answer reserves one of that router's tokens first; the grant says
//! when it may be sent. Routers are known by the address they answered from;
//! before that, by their position (the route's origin and the TTL).
//!
//! Both budgets are GCRA (virtual scheduling): a reservation is granted at the
//! earliest time it conforms, so waiting traces are served in order and the
//! time a batch of probes would need can be predicted up front (admission).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use crate::clock::MonotonicTime;
use crate::probe::Ttl;
use crate::sync::LockExt;

/// Where a trace's probes leave this host: the part of a route that every
/// trace using it has in common.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    pub source: IpAddr,
    pub ifindex: u32,
    /// Next hop; `None` when the destination is on-link.
    pub gateway: Option<IpAddr>,
}

/// A router, as far as we know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouterKey {
    /// Whoever answers probes of this TTL leaving by this origin.
    Position(Origin, Ttl),
    /// The address a router answered from.
    Address(IpAddr),
    /// Whoever answers one trace's probes of this TTL (one flow takes one
    /// path), until it answers and is known by its address.
    TraceHop(u128, Ttl),
}

/// A token bucket as a router (or our own rail) keeps it: `burst` at once,
/// then `per_second`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub burst: u32,
    pub per_second: f64,
}

impl Rate {
    /// Linux's defaults: `icmp_ratelimit` 1000 ms with a burst of 6.
    pub const LINUX_ICMP: Rate = Rate {
        burst: 6,
        per_second: 1.0,
    };

    /// What we spend of a router: Linux's rate with 2 % to spare, so probes
    /// that leave a little late never arrive faster than it refills.
    pub const ROUTER_DEFAULT: Rate = Rate {
        burst: 6,
        per_second: 1.0 / 1.02,
    };

    /// What we spend of a router that allows `burst` then `per_second`:
    /// its rate with 2 % to spare (see [`Rate::ROUTER_DEFAULT`]).
    pub fn router(burst: u32, per_second: f64) -> Rate {
        Rate {
            burst,
            per_second: per_second / 1.02,
        }
    }

    fn interval(self) -> Duration {
        Duration::from_secs_f64(1.0 / self.per_second.max(1e-6))
    }

    /// How far ahead of the steady rate a burst may run.
    fn tolerance(self) -> Duration {
        self.interval() * self.burst.saturating_sub(1)
    }
}

/// GCRA state: the theoretical arrival time of the next token.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tat: MonotonicTime,
}

impl Bucket {
    fn new() -> Bucket {
        Bucket {
            tat: MonotonicTime::from_nanos(0),
        }
    }

    /// When the `n`-th token from now (1-based) conforms.
    fn earliest(&self, rate: Rate, now: MonotonicTime, n: u32) -> MonotonicTime {
        let tat = self.tat.max(now) + rate.interval() * n.saturating_sub(1);
        now.max(tat.saturating_sub(rate.tolerance()))
    }

    fn reserve(&mut self, rate: Rate, now: MonotonicTime) -> MonotonicTime {
        let at = self.earliest(rate, now, 1);
        self.tat = self.tat.max(at) + rate.interval();
        at
    }
}

/// The answer to a reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grant {
    /// Send at this time (now or later); the token is taken.
    At(MonotonicTime),
    /// Not before this time, which is past the limit given: nothing taken.
    TooLate(MonotonicTime),
}

/// Every router's budget, process-wide.
pub struct RouterBudgets {
    rate: Rate,
    inner: Mutex<Routers>,
}

#[derive(Default)]
struct Routers {
    buckets: HashMap<RouterKey, Bucket>,
    /// Positions whose router is known: its tokens are that address's.
    aliases: HashMap<RouterKey, IpAddr>,
    /// Learnt budgets of a multi-flow trace's TTLs (see [`RouterBudgets::answered`]).
    learnt: HashMap<RouterKey, Learnt>,
}

/// What a multi-flow trace learnt about one of its TTLs: the routers there
/// answered `answers` probes, and are paced at `scale` times one router's
/// budget (several routers share the TTL, and not all rate-limit).
#[derive(Clone, Copy, Debug)]
struct Learnt {
    scale: u32,
    answers: u32,
    /// A router here held back once: one router's budget from then on (a
    /// budget that keeps growing back would keep overshooting).
    settled: bool,
}

/// Most a TTL's budget grows to: 64 routers' worth.
const MAX_SCALE: u32 = 64;

/// Buckets idle this long are full again and can be forgotten.
const IDLE_FORGET: Duration = Duration::from_secs(120);
/// Forgetting runs when the table grows past this many buckets.
const GC_THRESHOLD: usize = 4096;

impl Routers {
    fn resolve(&self, key: RouterKey) -> RouterKey {
        match self.aliases.get(&key) {
            Some(addr) => RouterKey::Address(*addr),
            None => key,
        }
    }

    fn gc(&mut self, now: MonotonicTime) {
        if self.buckets.len() < GC_THRESHOLD {
            return;
        }
        self.buckets
            .retain(|_, b| now.since(b.tat).is_none_or(|idle| idle < IDLE_FORGET));
        let buckets = &self.buckets;
        self.learnt.retain(|key, _| buckets.contains_key(key));
    }

    /// `rate`, scaled by what was learnt about `key` (already resolved).
    fn rate_of(&self, key: RouterKey, rate: Rate) -> Rate {
        match self.learnt.get(&key) {
            Some(l) if l.scale > 1 => Rate {
                burst: rate.burst.saturating_mul(l.scale),
                per_second: rate.per_second * f64::from(l.scale),
            },
            _ => rate,
        }
    }
}

impl RouterBudgets {
    pub fn new(rate: Rate) -> RouterBudgets {
        RouterBudgets {
            rate,
            inner: Mutex::new(Routers::default()),
        }
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Takes one token of `key`'s router if it can be had by `limit`.
    pub fn reserve(&self, key: RouterKey, now: MonotonicTime, limit: MonotonicTime) -> Grant {
        let mut routers = self.inner.locked();
        routers.gc(now);
        let key = routers.resolve(key);
        let rate = routers.rate_of(key, self.rate);
        let bucket = routers.buckets.entry(key).or_insert_with(Bucket::new);
        let at = bucket.earliest(rate, now, 1);
        if at > limit {
            return Grant::TooLate(at);
        }
        Grant::At(bucket.reserve(rate, now))
    }

    /// A router at `key` (a multi-flow trace's TTL) answered. Once a full
    /// burst of the current budget has been answered, the budget doubles:
    /// the TTL has several routers, or routers that do not limit. Probes
    /// sent on a grown budget are "optimistic"; a silence among them is
    /// probed again after [`RouterBudgets::back_off`], never reported as is.
    pub fn answered(&self, key: RouterKey) {
        let mut routers = self.inner.locked();
        let burst = self.rate.burst;
        let learnt = routers.learnt.entry(key).or_insert(Learnt {
            scale: 1,
            answers: 0,
            settled: false,
        });
        learnt.answers += 1;
        let grow = !learnt.settled
            && learnt.answers >= learnt.scale.saturating_mul(burst)
            && learnt.scale < MAX_SCALE;
        if grow {
            learnt.scale *= 2;
        }
    }

    /// Whether probes at `key` are paced above one router's budget.
    pub fn optimistic(&self, key: RouterKey) -> bool {
        let routers = self.inner.locked();
        routers.learnt.get(&key).is_some_and(|l| l.scale > 1)
    }

    /// A probe sent on a grown budget at `key` went unanswered: a router
    /// there may be holding back. The budget falls to one router's for good
    /// and is spent, so whatever is probed there next (the re-probe first)
    /// finds routers refilled.
    pub fn back_off(&self, key: RouterKey, now: MonotonicTime) {
        {
            let mut routers = self.inner.locked();
            if let Some(learnt) = routers.learnt.get_mut(&key) {
                learnt.scale = 1;
                learnt.settled = true;
            }
        }
        self.exhausted(key, now);
    }

    /// When `n` more tokens of `key`'s router would all have been granted.
    pub fn earliest(&self, key: RouterKey, now: MonotonicTime, n: u32) -> MonotonicTime {
        let routers = self.inner.locked();
        let key = routers.resolve(key);
        let rate = routers.rate_of(key, self.rate);
        routers
            .buckets
            .get(&key)
            .copied()
            .unwrap_or_else(Bucket::new)
            .earliest(rate, now, n)
    }

    /// `position`'s router answered from `addr`: from now on they share one
    /// budget, which keeps what both had spent (the stricter of the two). A
    /// trace's own hop is merged and forgotten; a position is remembered.
    pub fn learn(&self, position: RouterKey, addr: IpAddr) {
        let mut routers = self.inner.locked();
        if routers.aliases.get(&position) == Some(&addr) {
            return;
        }
        if let RouterKey::TraceHop(..) = position
            && !routers.buckets.contains_key(&position)
        {
            return;
        }
        let spent = routers.buckets.remove(&position);
        let target = routers
            .buckets
            .entry(RouterKey::Address(addr))
            .or_insert_with(Bucket::new);
        if let Some(spent) = spent {
            target.tat = target.tat.max(spent.tat);
        }
        if let RouterKey::Position(..) = position {
            routers.aliases.insert(position, addr);
        }
    }

    /// Drops a budget nobody will use again (a finished trace's own hops).
    pub fn forget(&self, key: RouterKey) {
        let mut routers = self.inner.locked();
        routers.buckets.remove(&key);
        routers.learnt.remove(&key);
    }

    /// `key`'s router just held back an answer: its real budget is spent, so
    /// ours is too (the next token comes one interval from now).
    pub fn exhausted(&self, key: RouterKey, now: MonotonicTime) {
        let mut routers = self.inner.locked();
        let key = routers.resolve(key);
        let bucket = routers.buckets.entry(key).or_insert_with(Bucket::new);
        let empty = now + self.rate.interval() + self.rate.tolerance();
        bucket.tat = bucket.tat.max(empty);
    }

    /// The address a position is known to answer from.
    pub fn known(&self, position: RouterKey) -> Option<IpAddr> {
        let routers = self.inner.locked();
        routers.aliases.get(&position).copied()
    }
}

/// The process-wide cap on probes per second: a safety rail far above what
/// router budgets allow a single path, not a pacing clock.
pub struct ProbeRail {
    rate: Rate,
    bucket: Mutex<Bucket>,
}

impl ProbeRail {
    pub fn new(per_second: u32) -> ProbeRail {
        let per_second = per_second.max(1);
        ProbeRail {
            rate: Rate {
                // A short path's whole first window leaves at once.
                burst: (per_second / 20).clamp(16, 500),
                per_second: f64::from(per_second),
            },
            bucket: Mutex::new(Bucket::new()),
        }
    }

    /// Takes a slot only if one is free now; otherwise says when one will be,
    /// and takes nothing (a probe that is never sent holds no slot).
    pub fn take_now(&self, now: MonotonicTime) -> Result<(), MonotonicTime> {
        let mut bucket = self.bucket.locked();
        let at = bucket.earliest(self.rate, now, 1);
        if at > now {
            return Err(at);
        }
        bucket.reserve(self.rate, now);
        Ok(())
    }

    /// How long `n` more probes would wait behind the ones already granted.
    pub fn backlog(&self, now: MonotonicTime, n: u32) -> Duration {
        let bucket = self.bucket.locked();
        bucket
            .earliest(self.rate, now, n)
            .since(now)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::sim::{at, origin};

    fn far() -> MonotonicTime {
        at(1_000_000)
    }

    #[test]
    fn a_router_gets_a_burst_of_six_then_one_per_second() {
        let b = RouterBudgets::new(Rate::LINUX_ICMP);
        let key = RouterKey::Address(IpAddr::from([198, 18, 2, 2]));
        let grants: Vec<_> = (0..9).map(|_| b.reserve(key, at(0), far())).collect();
        for g in &grants[..6] {
            assert_eq!(*g, Grant::At(at(0)));
        }
        assert_eq!(grants[6], Grant::At(at(1000)));
        assert_eq!(grants[7], Grant::At(at(2000)));
        assert_eq!(grants[8], Grant::At(at(3000)));
        // Idle for long enough, the burst is back.
        assert_eq!(b.reserve(key, at(20_000), far()), Grant::At(at(20_000)));
    }

    #[test]
    fn a_grant_past_the_limit_takes_nothing() {
        let b = RouterBudgets::new(Rate::LINUX_ICMP);
        let key = RouterKey::Address(IpAddr::from([198, 18, 2, 2]));
        for _ in 0..6 {
            b.reserve(key, at(0), at(0));
        }
        assert_eq!(b.reserve(key, at(0), at(500)), Grant::TooLate(at(1000)));
        assert_eq!(b.reserve(key, at(0), at(500)), Grant::TooLate(at(1000)));
        assert_eq!(b.earliest(key, at(0), 2), at(2000));
    }

    #[test]
    fn an_exhausted_router_waits_one_interval() {
        let b = RouterBudgets::new(Rate::LINUX_ICMP);
        let key = RouterKey::Address(IpAddr::from([198, 18, 2, 2]));
        b.exhausted(key, at(300));
        assert_eq!(b.reserve(key, at(300), far()), Grant::At(at(1300)));
    }

    #[test]
    fn a_learned_position_shares_the_address_budget_and_keeps_what_was_spent() {
        let b = RouterBudgets::new(Rate::LINUX_ICMP);
        let pos = RouterKey::Position(origin(), Ttl::new(2).unwrap());
        let addr = IpAddr::from([198, 18, 2, 2]);
        for _ in 0..4 {
            b.reserve(pos, at(0), far());
        }
        b.learn(pos, addr);
        assert_eq!(b.known(pos), Some(addr));
        // 2 left of the burst, whichever name is used.
        assert_eq!(
            b.reserve(RouterKey::Address(addr), at(0), far()),
            Grant::At(at(0))
        );
        assert_eq!(b.reserve(pos, at(0), far()), Grant::At(at(0)));
        assert_eq!(b.reserve(pos, at(0), far()), Grant::At(at(1000)));
    }

    #[test]
    fn a_ttl_whose_routers_answer_a_full_burst_gets_twice_the_budget_until_one_holds_back() {
        let b = RouterBudgets::new(Rate::LINUX_ICMP);
        let key = RouterKey::TraceHop(7, Ttl::new(3).unwrap());
        for _ in 0..6 {
            assert_eq!(b.reserve(key, at(0), far()), Grant::At(at(0)));
        }
        assert!(!b.optimistic(key));
        assert_eq!(b.reserve(key, at(0), far()), Grant::At(at(1000)));
        for _ in 0..5 {
            b.answered(key);
        }
        assert!(!b.optimistic(key), "5 answers are not a full burst");
        b.answered(key);
        assert!(b.optimistic(key));
        // Twice the budget: the next token comes sooner than one router's
        // pace allows (that would be at 2 s).
        assert!(b.earliest(key, at(1000), 1) < at(2000));
        // Another 12 answers: four routers' worth.
        for _ in 0..12 {
            b.answered(key);
        }
        assert_eq!(b.inner.locked().learnt[&key].scale, 4);
        // A silence among optimistic probes: one router's budget again,
        // spent, and for good.
        b.back_off(key, at(2000));
        assert!(!b.optimistic(key));
        assert_eq!(b.reserve(key, at(2000), far()), Grant::At(at(3000)));
        for _ in 0..100 {
            b.answered(key);
        }
        assert!(!b.optimistic(key));
        // Growth is capped.
        let other = RouterKey::TraceHop(7, Ttl::new(4).unwrap());
        for _ in 0..100_000 {
            b.answered(other);
        }
        assert_eq!(b.inner.locked().learnt[&other].scale, MAX_SCALE);
    }

    #[test]
    fn the_rail_lets_a_window_out_at_once_then_paces() {
        let rail = ProbeRail::new(1000);
        let burst = rail.rate.burst;
        for _ in 0..burst {
            assert_eq!(rail.take_now(at(0)), Ok(()));
        }
        assert_eq!(rail.take_now(at(0)), Err(at(1)), "nothing taken");
        assert_eq!(rail.backlog(at(0), 1), Duration::from_millis(1));
        assert_eq!(rail.take_now(at(1)), Ok(()));
        assert_eq!(rail.backlog(at(1), 1), Duration::from_millis(1));
    }
}
