//! Capture: seeing replies (and our own probes leaving) with kernel timestamps.

pub mod classify;
pub mod ebpf;
mod hub;
pub mod interface;
pub mod socket;

pub use hub::{
    Capture, CaptureError, CaptureMode, FlowSubscription, TimestampSource, is_permission, kind_name,
};

use std::time::Duration;

use traceroute_common::{CaptureEvent, Direction, EventKind};

/// A packet seen by the capture, owned and detached from the ring buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedPacket {
    /// CLOCK_MONOTONIC time at which the kernel saw the packet.
    pub timestamp: MonotonicTime,
    pub ifindex: u32,
    pub direction: Direction,
    pub kind: EventKind,
    /// Cookie of the registered flow the packet belongs to.
    pub cookie: u32,
    /// Length of the packet on the wire from the IP header on.
    pub packet_len: u32,
    /// The first bytes of the packet, from the IP header on.
    pub bytes: Vec<u8>,
}

impl CapturedPacket {
    /// Copies an event out of the ring buffer; `None` for a malformed event.
    pub fn from_event(event: &CaptureEvent) -> Option<Self> {
        Some(Self {
            timestamp: MonotonicTime::from_nanos(event.timestamp_ns),
            ifindex: event.ifindex,
            direction: event.direction()?,
            kind: event.kind()?,
            cookie: event.cookie,
            packet_len: event.packet_len,
            bytes: event.packet().to_vec(),
        })
    }
}

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
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid pointer to a timespec; CLOCK_MONOTONIC always exists.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        Self(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
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
