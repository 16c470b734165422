//! What this process has learnt about the responders its probes meet: one
//! store, shared by every trace (the service's traces, MDA's flows,
//! end-to-end probes), so that many traces through the same few routers get
//! better, not worse, with each other.
//!
//! Per responder, from what it was seen to do:
//!
//! * **its answer budget** ([`budget`]): how many ICMP errors it gives us at
//!   once and per second. Cautious (the prior) where nothing is known, grown
//!   while it answers everything, back to the prior as soon as it shows a
//!   limit. A router that answers thousands per second is probed at the
//!   network's speed after a few traces; a Linux router still gets its 6
//!   then 1/s.
//! * **its answer latency** ([`latency`]): a distribution of recent RTTs, so
//!   a probe to a known responder gives up after what that responder takes
//!   (with margin), not after a guess from other hops.
//! * **the silences of places nobody answers from**: keyed by where they are
//!   (origin, the last answering hop before and the first after, and the
//!   offset from the one before), remembered when a probe there waited its
//!   full time, so a later trace may give up sooner there; re-checked with a
//!   full wait every [`RECHECK_SILENCE`].
//!
//! Routers are known by the address they answered from; a position nobody
//! has identified yet by its origin and TTL ([`RouterKey::Position`]) or by
//! the flow and TTL ([`RouterKey::TraceHop`]), and the routers of one TTL of
//! a multi-flow trace, whose flows may branch, by the trace and TTL
//! ([`RouterKey::TraceTtl`]). Everything ages out after [`FORGET_AFTER`]
//! unused. What is known can be looked at ([`Knowledge::view`]: the
//! service's `/debug/responders`, the CLI's `--explain`, and metrics).

pub mod budget;
pub mod latency;
pub mod view;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::clock::MonotonicTime;
use crate::probe::Ttl;
use crate::sync::LockExt;
use crate::trace::budget::Rate;
use budget::Budget;
pub use budget::{Ask, Grant, Spent};
use latency::Latency;

/// Tokens of a budget still being learnt are taken at most this far ahead,
/// so that waiting probes profit from its growth.
pub const HORIZON: Duration = Duration::from_millis(50);
/// A budget grows to at most this many times the prior (Linux's prior:
/// 6144 at once, about 1000 per second).
pub const MAX_SCALE: u32 = 1024;
/// Limit-like silences in a row that make a budget limited.
pub const STRIKES_TO_LIMIT: u32 = 2;
/// A responder that showed a limit is not grown again for this long.
pub const LIMIT_HOLD: Duration = Duration::from_secs(300);
/// Anything unused this long is forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(600);
/// A place known to be silent gets a full wait again after this long.
pub const RECHECK_SILENCE: Duration = Duration::from_secs(300);
/// Most entries of each kind kept; beyond, the least recently used go.
pub const MAX_ENTRIES: usize = 65_536;
/// How often forgetting runs.
const GC_EVERY: Duration = Duration::from_secs(10);

/// Where a trace's probes leave this host: the part of a route that every
/// trace using it has in common.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    pub source: IpAddr,
    pub ifindex: u32,
    /// Next hop; `None` when the destination is on-link.
    pub gateway: Option<IpAddr>,
}

/// A responder, as far as we know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouterKey {
    /// Whoever answers probes of this TTL leaving by this origin.
    Position(Origin, Ttl),
    /// The address a responder answered from.
    Address(IpAddr),
    /// Whoever answers one lone flow's probes of this TTL (one flow takes
    /// one path), until it answers and is known by its address.
    TraceHop(u128, Ttl),
    /// Whichever routers answer a multi-flow trace's probes of this TTL:
    /// its flows may cross several, and none of them knows which it will
    /// meet, so they share one budget. Flows hash unevenly over the routers,
    /// so a budget grown past one router's is spent on faith: a silence of
    /// any probe on it is asked again, and it falls back to one router's.
    TraceTtl(u128, Ttl),
}

/// A place on a path that nobody answered from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Place {
    pub origin: Origin,
    /// The last hop before it that answered (`None`: none did).
    pub before: Option<IpAddr>,
    /// The first hop after it that answered (`None`: none did).
    pub after: Option<IpAddr>,
    /// Its TTL less the TTL of `before` (of the source, when `None`).
    pub offset: u8,
}

/// What was seen at a silent place.
#[derive(Clone, Copy, Debug)]
struct Silence {
    /// Probes there that waited their full time for nothing.
    silences: u64,
    /// The last such full wait.
    last_full: MonotonicTime,
    touched: MonotonicTime,
}

/// The lowest TTL a destination answered at, and when it last did.
#[derive(Clone, Copy, Debug)]
struct Distance {
    ttl: Ttl,
    seen: MonotonicTime,
}

#[derive(Clone, Copy, Debug)]
struct Alias {
    addr: IpAddr,
    seen: MonotonicTime,
}

#[derive(Default)]
struct Table {
    budgets: HashMap<RouterKey, Budget>,
    /// Positions whose responder is known: its budget is that address's.
    aliases: HashMap<(Origin, Ttl), Alias>,
    /// A lone trace's own hops that answered: their budget went to the
    /// address (until the trace forgets them).
    hops: HashMap<RouterKey, IpAddr>,
    latency: HashMap<IpAddr, Latency>,
    places: HashMap<Place, Silence>,
    /// How far destinations answered from.
    destinations: HashMap<(Origin, IpAddr), Distance>,
    last_gc: Option<MonotonicTime>,
}

/// Counts since start, for metrics.
#[derive(Default)]
struct Counts {
    growths: AtomicU64,
    limits: AtomicU64,
}

/// The store (see the module docs).
pub struct Knowledge {
    prior: Rate,
    table: Mutex<Table>,
    counts: Counts,
    /// Bumped when a budget grows, so probes waiting for tokens look again.
    news: watch::Sender<u64>,
}

/// A snapshot for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub responders: u64,
    pub limited: u64,
    pub silent_places: u64,
    pub growths: u64,
    pub limits: u64,
}

impl Knowledge {
    /// An empty store; `prior` is the budget assumed of a responder nothing
    /// is known about.
    pub fn new(prior: Rate) -> Knowledge {
        Knowledge {
            prior,
            table: Mutex::new(Table::default()),
            counts: Counts::default(),
            news: watch::channel(0).0,
        }
    }

    pub fn prior(&self) -> Rate {
        self.prior
    }

    /// Changes when a budget grows.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.news.subscribe()
    }

    fn table(&self, now: MonotonicTime) -> std::sync::MutexGuard<'_, Table> {
        let mut table = self.table.locked();
        table.gc(now);
        table
    }

    /// Takes a token of `key`'s responder (see [`budget`]).
    pub fn reserve(&self, key: RouterKey, now: MonotonicTime, ask: Ask) -> Grant {
        let mut table = self.table(now);
        let key = table.resolve(key);
        table
            .budgets
            .entry(key)
            .or_insert_with(|| Budget::new(now))
            .reserve(self.prior, now, ask, matches!(key, RouterKey::TraceTtl(..)))
    }

    /// The probe that spent `spent` of `key` was answered.
    pub fn answered(&self, key: RouterKey, spent: Spent, now: MonotonicTime) {
        let grew = {
            let mut table = self.table(now);
            let key = table.resolve(key);
            table
                .budgets
                .get_mut(&key)
                .is_some_and(|b| b.answered(self.prior, spent, now))
        };
        if grew {
            self.counts.growths.fetch_add(1, Ordering::Relaxed);
            self.news.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// A probe to `key` sent at `sent_at` went unanswered where its
    /// responder should have answered. Returns whether it is now limited.
    pub fn silent(&self, key: RouterKey, sent_at: MonotonicTime, now: MonotonicTime) -> bool {
        let mut table = self.table(now);
        let key = table.resolve(key);
        let budget = table.budgets.entry(key).or_insert_with(|| Budget::new(now));
        let was = budget.is_limited(now);
        let limited = budget.silent(self.prior, sent_at, now);
        if limited && !was {
            self.counts.limits.fetch_add(1, Ordering::Relaxed);
        }
        limited
    }

    /// `key`'s responder answered a probe after a silence that a full
    /// budget would not have had: it limits (used from `at`).
    pub fn limit_shown(&self, key: RouterKey, at: MonotonicTime, now: MonotonicTime) {
        let mut table = self.table(now);
        let key = table.resolve(key);
        let budget = table.budgets.entry(key).or_insert_with(|| Budget::new(now));
        if !budget.is_limited(now) {
            self.counts.limits.fetch_add(1, Ordering::Relaxed);
        }
        budget.limit(self.prior, at, now);
    }

    /// A probe to `key` sent at `at` may have found its responder out of
    /// tokens: its next token comes an interval after `at`. Nothing is
    /// concluded (a first contact's silence may be a silent hop).
    pub fn empty_since(&self, key: RouterKey, at: MonotonicTime, now: MonotonicTime) {
        let mut table = self.table(now);
        let key = table.resolve(key);
        table
            .budgets
            .entry(key)
            .or_insert_with(|| Budget::new(now))
            .empty_since(self.prior, at);
    }

    /// When `n` more tokens of `key`'s responder would all have been granted.
    pub fn earliest(&self, key: RouterKey, now: MonotonicTime, n: u32) -> MonotonicTime {
        let table = self.table(now);
        let key = table.resolve(key);
        match table.budgets.get(&key) {
            Some(b) => b.earliest(self.prior, now, n),
            None => Budget::new(now).earliest(self.prior, now, n),
        }
    }

    /// How long the next probe at `key` would wait, if its responder is
    /// known to be at its limit; `None` when nothing says it must wait
    /// (admission refuses only from knowledge, never from the prior).
    pub fn limited_wait(&self, key: RouterKey, now: MonotonicTime) -> Option<Duration> {
        let table = self.table(now);
        let key = table.resolve(key);
        let budget = table.budgets.get(&key)?;
        budget
            .is_limited(now)
            .then(|| budget.earliest(self.prior, now, 1).since(now))
            .flatten()
    }

    /// `destination` answered a probe of `ttl` from `origin` (as itself:
    /// an echo reply, a SYN-ACK, a port unreachable).
    pub fn reached(&self, origin: Origin, destination: IpAddr, ttl: Ttl, now: MonotonicTime) {
        let mut table = self.table(now);
        let entry = table
            .destinations
            .entry((origin, destination))
            .or_insert(Distance { ttl, seen: now });
        entry.ttl = entry.ttl.min(ttl);
        entry.seen = now;
    }

    /// The lowest TTL at which `destination` answered `origin` lately.
    pub fn destination_distance(
        &self,
        origin: Origin,
        destination: IpAddr,
        now: MonotonicTime,
    ) -> Option<Ttl> {
        let table = self.table.locked();
        table
            .destinations
            .get(&(origin, destination))
            .filter(|d| now.since(d.seen).is_none_or(|age| age < FORGET_AFTER))
            .map(|d| d.ttl)
    }

    /// `n` answers owed by `key`'s responder that no reservation took (see
    /// [`Budget::charge`]).
    pub fn charge(&self, key: RouterKey, n: u32, now: MonotonicTime) {
        let mut table = self.table(now);
        let key = table.resolve(key);
        table
            .budgets
            .entry(key)
            .or_insert_with(|| Budget::new(now))
            .charge(self.prior, n, now);
    }

    /// `position`'s responder answered from `addr`: from now on they share
    /// one budget, which keeps what both had spent (the stricter of the
    /// two). A trace's own hop is merged and forgotten; a position is
    /// remembered.
    pub fn learn(&self, position: RouterKey, addr: IpAddr, now: MonotonicTime) {
        let mut table = self.table(now);
        match position {
            RouterKey::Position(origin, ttl) => {
                let known = table
                    .aliases
                    .insert((origin, ttl), Alias { addr, seen: now });
                if known.is_some_and(|a| a.addr == addr) {
                    return;
                }
            }
            RouterKey::TraceHop(..) => {
                if table.hops.insert(position, addr) == Some(addr) {
                    return;
                }
            }
            RouterKey::Address(_) | RouterKey::TraceTtl(..) => return,
        }
        let Some(spent) = table.budgets.remove(&position) else {
            return;
        };
        let prior = self.prior;
        match table.budgets.get_mut(&RouterKey::Address(addr)) {
            Some(known) => known.merge(prior, spent, now),
            None => {
                table.budgets.insert(RouterKey::Address(addr), spent);
            }
        }
    }

    /// Drops a budget nobody will use again (a finished trace's own hops).
    pub fn forget(&self, key: RouterKey) {
        let mut table = self.table.locked();
        table.budgets.remove(&key);
        table.hops.remove(&key);
    }

    /// The address a position is known to answer from.
    pub fn known(&self, position: RouterKey) -> Option<IpAddr> {
        let RouterKey::Position(origin, ttl) = position else {
            return None;
        };
        let table = self.table.locked();
        table.aliases.get(&(origin, ttl)).map(|a| a.addr)
    }

    /// An answer from `responder` after `rtt`.
    pub fn observe_latency(&self, responder: IpAddr, rtt: Duration, now: MonotonicTime) {
        let mut table = self.table(now);
        table
            .latency
            .entry(responder)
            .or_insert_with(|| Latency::new(now))
            .observe(rtt, now);
    }

    /// How long a probe answered by `responder` may take to be answered
    /// (see [`Latency::give_up_after`]); `None` when it never answered.
    pub fn give_up_after(&self, responder: IpAddr, here: f64) -> Option<Duration> {
        let table = self.table.locked();
        table.latency.get(&responder)?.give_up_after(here)
    }

    /// A probe at `place` waited its full time (`full`) or was given up
    /// sooner from this knowledge, and nothing came.
    pub fn silence_at(&self, place: Place, full: bool, now: MonotonicTime) {
        let mut table = self.table(now);
        let entry = table.places.entry(place).or_insert(Silence {
            silences: 0,
            last_full: now,
            touched: now,
        });
        entry.touched = now;
        if full {
            entry.silences += 1;
            entry.last_full = now;
        }
    }

    /// `place` waited its full time for nothing recently enough that a
    /// probe there may give up sooner (and no first-contact re-check).
    pub fn known_silent(&self, place: Place, now: MonotonicTime) -> bool {
        let table = self.table.locked();
        table.places.get(&place).is_some_and(|s| {
            s.silences > 0
                && now
                    .since(s.last_full)
                    .is_none_or(|age| age < RECHECK_SILENCE)
        })
    }

    /// Totals for metrics.
    pub fn totals(&self, now: MonotonicTime) -> Totals {
        let table = self.table(now);
        let addresses = table
            .budgets
            .keys()
            .filter(|k| matches!(k, RouterKey::Address(_)))
            .count()
            .max(table.latency.len());
        Totals {
            responders: addresses as u64,
            limited: table.budgets.values().filter(|b| b.is_limited(now)).count() as u64,
            silent_places: table.places.values().filter(|s| s.silences > 0).count() as u64,
            growths: self.counts.growths.load(Ordering::Relaxed),
            limits: self.counts.limits.load(Ordering::Relaxed),
        }
    }
}

impl Table {
    fn resolve(&self, key: RouterKey) -> RouterKey {
        match key {
            RouterKey::Position(origin, ttl) => self
                .aliases
                .get(&(origin, ttl))
                .map_or(key, |a| RouterKey::Address(a.addr)),
            RouterKey::TraceHop(..) => self.hops.get(&key).map_or(key, |a| RouterKey::Address(*a)),
            RouterKey::Address(_) | RouterKey::TraceTtl(..) => key,
        }
    }

    /// Forgets what was not used for [`FORGET_AFTER`], and the least
    /// recently used beyond [`MAX_ENTRIES`].
    fn gc(&mut self, now: MonotonicTime) {
        if self
            .last_gc
            .is_some_and(|last| now.since(last).is_none_or(|d| d < GC_EVERY))
        {
            return;
        }
        self.last_gc = Some(now);
        let fresh = |touched: MonotonicTime| now.since(touched).is_none_or(|d| d < FORGET_AFTER);
        self.budgets.retain(|_, b| fresh(b.touched));
        self.aliases.retain(|_, a| fresh(a.seen));
        self.latency.retain(|_, l| fresh(l.touched));
        self.places.retain(|_, s| fresh(s.touched));
        self.destinations.retain(|_, d| fresh(d.seen));
        trim(&mut self.budgets, |b| b.touched);
        trim(&mut self.aliases, |a| a.seen);
        trim(&mut self.latency, |l| l.touched);
        trim(&mut self.places, |s| s.touched);
        trim(&mut self.destinations, |d| d.seen);
        // Own hops are forgotten by their trace; these only guard a leak.
        if self.hops.len() > MAX_ENTRIES {
            self.hops.clear();
        }
    }
}

/// Keeps the [`MAX_ENTRIES`] / 2 most recently used entries of a map that
/// grew past [`MAX_ENTRIES`].
fn trim<K: Clone + Eq + std::hash::Hash, V>(
    map: &mut HashMap<K, V>,
    touched: impl Fn(&V) -> MonotonicTime,
) {
    if map.len() <= MAX_ENTRIES {
        return;
    }
    let mut ages: Vec<MonotonicTime> = map.values().map(&touched).collect();
    ages.sort_unstable();
    let cut = ages[ages.len() - MAX_ENTRIES / 2];
    map.retain(|_, v| touched(v) >= cut);
}
