//! The clock every timestamp is on: CLOCK_MONOTONIC, which the kernel's
//! `bpf_ktime_get_ns` and our own sends both read, so kernel stamps and
//! userspace times compare directly.

use std::time::Duration;

use nix::time::{ClockId, clock_gettime};

/// A point on CLOCK_MONOTONIC, the clock `bpf_ktime_get_ns` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MonotonicTime(u64);

impl MonotonicTime {
    pub const fn from_nanos(ns: u64) -> Self {
        Self(ns)
    }

    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// The current time on the same clock the kernel stamps with.
    pub fn now() -> Self {
        // CLOCK_MONOTONIC cannot fail on Linux; 0 would only make RTTs absent.
        clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(Self(0), |ts| {
            Self(ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64)
        })
    }

    /// Time from `earlier` to `self`; `None` if `earlier` is later.
    pub fn since(self, earlier: MonotonicTime) -> Option<Duration> {
        self.0.checked_sub(earlier.0).map(Duration::from_nanos)
    }

    /// `self - d`, or the clock's origin.
    pub fn saturating_sub(self, d: Duration) -> MonotonicTime {
        Self(self.0.saturating_sub(duration_nanos(d)))
    }
}

fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl std::ops::Add<Duration> for MonotonicTime {
    type Output = MonotonicTime;
    fn add(self, d: Duration) -> MonotonicTime {
        Self(self.0.saturating_add(duration_nanos(d)))
    }
}
