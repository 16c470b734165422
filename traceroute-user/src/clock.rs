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

/// The offset from CLOCK_MONOTONIC to CLOCK_REALTIME, for stamps the kernel
/// takes on the wall clock (a packet's receive stamp, which sockets and
/// `__sk_buff.tstamp` report). Both clocks run at the same NTP-disciplined
/// rate: the offset changes only when the wall clock is stepped, so one
/// reading converts every stamp taken since the last step exactly.
#[derive(Clone, Copy, Debug)]
pub struct WallClockOffset {
    realtime_minus_monotonic: i128,
}

impl WallClockOffset {
    /// Reads the offset now: the wall clock between two monotonic reads,
    /// taken as read at their midpoint (tens of nanoseconds apart).
    pub fn measure() -> Self {
        let before = MonotonicTime::now().as_nanos() as i128;
        let real = clock_gettime(ClockId::CLOCK_REALTIME).map_or(0, |ts| {
            i128::from(ts.tv_sec()) * 1_000_000_000 + i128::from(ts.tv_nsec())
        });
        let after = MonotonicTime::now().as_nanos() as i128;
        Self {
            realtime_minus_monotonic: real - (before + after) / 2,
        }
    }

    /// A CLOCK_REALTIME stamp on CLOCK_MONOTONIC.
    pub fn to_monotonic(&self, realtime_ns: u64) -> MonotonicTime {
        let mono = i128::from(realtime_ns) - self.realtime_minus_monotonic;
        MonotonicTime::from_nanos(mono.clamp(0, i128::from(u64::MAX)) as u64)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wall_clock_offset_maps_the_wall_clock_now_to_now() {
        let wall = WallClockOffset::measure();
        let real = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let mapped = wall.to_monotonic(real);
        let now = MonotonicTime::now();
        let diff = now.as_nanos().abs_diff(mapped.as_nanos());
        assert!(diff < 50_000_000, "{diff} ns apart");
        // Ten milliseconds earlier on the wall clock is ten earlier here too.
        let earlier = wall.to_monotonic(real - 10_000_000);
        assert_eq!(mapped.since(earlier), Some(Duration::from_millis(10)));
    }
}
