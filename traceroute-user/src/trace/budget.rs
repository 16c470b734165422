//! The token buckets that decide *when* a probe may leave: [`Rate`] and
//! [`Bucket`] (GCRA, virtual scheduling), which the responder knowledge
//! ([`super::knowledge`]) keeps one of per responder, and the process-wide
//! [`ProbeRail`]. Both take the time as an argument, so they are tested
//! without a clock.
//!
//! GCRA: a reservation is granted at the earliest time it conforms, so
//! waiting traces are served in order and the time a batch of probes would
//! need can be predicted up front (admission).

use std::sync::Mutex;
use std::time::Duration;

use crate::clock::MonotonicTime;
use crate::sync::LockExt;

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

    /// `scale` times the burst and the rate: a budget learnt to be larger.
    pub fn scaled(self, scale: u32) -> Rate {
        Rate {
            burst: self.burst.saturating_mul(scale),
            per_second: self.per_second * f64::from(scale),
        }
    }

    pub fn interval(self) -> Duration {
        Duration::from_secs_f64(1.0 / self.per_second.max(1e-6))
    }

    /// How far ahead of the steady rate a burst may run.
    pub fn tolerance(self) -> Duration {
        self.interval() * self.burst.saturating_sub(1)
    }
}

/// GCRA state: the theoretical arrival time of the next token.
#[derive(Clone, Copy, Debug)]
pub struct Bucket {
    tat: MonotonicTime,
}

impl Default for Bucket {
    fn default() -> Self {
        Bucket {
            tat: MonotonicTime::from_nanos(0),
        }
    }
}

impl Bucket {
    /// When the `n`-th token from now (1-based) conforms.
    pub fn earliest(&self, rate: Rate, now: MonotonicTime, n: u32) -> MonotonicTime {
        let tat = self.tat.max(now) + rate.interval() * n.saturating_sub(1);
        now.max(tat.saturating_sub(rate.tolerance()))
    }

    /// Takes the next token; returns when it conforms.
    pub fn reserve(&mut self, rate: Rate, now: MonotonicTime) -> MonotonicTime {
        let at = self.earliest(rate, now, 1);
        self.tat = self.tat.max(at) + rate.interval();
        at
    }

    /// Tokens in use at `at` (taken and not yet refilled), rounded up.
    pub fn in_use(&self, rate: Rate, at: MonotonicTime) -> u32 {
        let ahead = self.tat.since(at).unwrap_or_default();
        let tokens = ahead.as_secs_f64() / rate.interval().as_secs_f64();
        // A hair below a whole token is that token (float noise).
        (tokens - 1e-6).ceil().max(0.0) as u32
    }

    /// The same tokens in use, counted at another rate: a budget that grows
    /// or shrinks keeps what was spent of it, not the time that stood for.
    pub fn rescale(&mut self, from: Rate, to: Rate, now: MonotonicTime) {
        let ahead = self.tat.since(now).unwrap_or_default();
        let tokens = ahead.as_secs_f64() / from.interval().as_secs_f64();
        self.tat = now + Duration::from_secs_f64(tokens * to.interval().as_secs_f64());
    }

    /// Every token spent at `at`: the next one conforms one interval later.
    pub fn spend_all(&mut self, rate: Rate, at: MonotonicTime) {
        self.tat = self.tat.max(at + rate.interval() + rate.tolerance());
    }

    /// Keeps the stricter of two states (the later theoretical arrival).
    pub fn merge(&mut self, other: Bucket) {
        self.tat = self.tat.max(other.tat);
    }
}

/// The process-wide cap on probes per second: a safety rail far above what
/// router budgets allow a single path, not a pacing clock.
pub struct ProbeRail {
    rate: Rate,
    bucket: Mutex<Rail>,
}

/// The rail had no slot free now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    /// The next slot.
    pub free: MonotonicTime,
    /// When this probe should look again.
    pub again: MonotonicTime,
}

struct Rail {
    bucket: Bucket,
    /// The latest time a refused probe was told to look again: the next
    /// one refused is told one slot later, so that waiting traces wake one
    /// at a time instead of all at each free slot.
    told: MonotonicTime,
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
            bucket: Mutex::new(Rail {
                bucket: Bucket::default(),
                told: MonotonicTime::from_nanos(0),
            }),
        }
    }

    /// Takes a slot only if one is free now; otherwise says when to look
    /// again (a free slot, one per probe refused so far), and takes nothing
    /// (a probe that is never sent holds no slot).
    pub fn take_now(&self, now: MonotonicTime) -> Result<(), Refused> {
        let mut rail = self.bucket.locked();
        let free = rail.bucket.earliest(self.rate, now, 1);
        if free > now {
            // Spread over at most a burst's worth of slots (the same traces
            // ask again and again; this is a hint, not a queue).
            let spread = free + self.rate.tolerance();
            let again = if rail.told > free && rail.told <= spread {
                rail.told
            } else {
                free
            };
            rail.told = again + self.rate.interval();
            return Err(Refused { free, again });
        }
        rail.bucket.reserve(self.rate, now);
        Ok(())
    }

    /// How long `n` more probes would wait behind the ones already granted.
    pub fn backlog(&self, now: MonotonicTime, n: u32) -> Duration {
        let rail = self.bucket.locked();
        rail.bucket
            .earliest(self.rate, now, n)
            .since(now)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::sim::at;

    #[test]
    fn a_bucket_gives_a_burst_of_six_then_one_per_second() {
        let mut b = Bucket::default();
        let rate = Rate::LINUX_ICMP;
        let grants: Vec<_> = (0..9).map(|_| b.reserve(rate, at(0))).collect();
        for g in &grants[..6] {
            assert_eq!(*g, at(0));
        }
        assert_eq!(grants[6..], [at(1000), at(2000), at(3000)]);
        assert_eq!(b.in_use(rate, at(0)), 9);
        assert_eq!(b.earliest(rate, at(0), 2), at(5000));
        // Idle for long enough, the burst is back.
        assert_eq!(b.in_use(rate, at(20_000)), 0);
        assert_eq!(b.reserve(rate, at(20_000)), at(20_000));
    }

    #[test]
    fn rescaling_keeps_the_tokens_spent() {
        let mut b = Bucket::default();
        let one = Rate::LINUX_ICMP;
        let two = Rate {
            burst: 12,
            per_second: 2.0,
        };
        for _ in 0..6 {
            b.reserve(one, at(0));
        }
        assert_eq!(b.in_use(one, at(0)), 6);
        b.rescale(one, two, at(0));
        assert_eq!(b.in_use(two, at(0)), 6);
        // Six of twelve left: the seventh and the twelfth go now.
        assert_eq!(b.earliest(two, at(0), 6), at(0));
        assert_eq!(b.earliest(two, at(0), 7), at(500));
        b.spend_all(one, at(100));
        assert_eq!(b.earliest(one, at(100), 1), at(1100));
    }

    #[test]
    fn the_rail_lets_a_window_out_at_once_then_paces() {
        let rail = ProbeRail::new(1000);
        let burst = rail.rate.burst;
        for _ in 0..burst {
            assert_eq!(rail.take_now(at(0)), Ok(()));
        }
        let refused = |free, again| {
            Err(Refused {
                free: at(free),
                again: at(again),
            })
        };
        assert_eq!(rail.take_now(at(0)), refused(1, 1), "nothing taken");
        // The next one refused looks again a slot later.
        assert_eq!(rail.take_now(at(0)), refused(1, 2));
        assert_eq!(rail.backlog(at(0), 1), Duration::from_millis(1));
        assert_eq!(rail.take_now(at(1)), Ok(()));
        assert_eq!(rail.backlog(at(1), 1), Duration::from_millis(1));
    }
}
