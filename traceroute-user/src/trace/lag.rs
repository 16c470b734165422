//! How late the capture pipeline hands over what the kernel saw.
//!
//! Replies are stamped by the kernel, but a trace learns of them only after
//! the ring buffer, the dispatcher and its own queue: on a busy host that can
//! take milliseconds. A probe is given up on the userspace clock, so its wait
//! is lengthened by the recent delivery lag: a reply the kernel saw in time
//! must never be called missing because it was still on its way to us.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The recent worst delivery lag, decaying by an eighth per packet.
#[derive(Default)]
pub struct DeliveryLag {
    recent_ns: AtomicU64,
}

impl DeliveryLag {
    pub fn observe(&self, lag: Duration) {
        let lag = u64::try_from(lag.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .recent_ns
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(lag.max(old - old / 8))
            });
    }

    pub fn recent(&self) -> Duration {
        Duration::from_nanos(self.recent_ns.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_delivery_counts_at_once_and_fades_with_timely_ones() {
        let lag = DeliveryLag::default();
        lag.observe(Duration::from_millis(40));
        assert_eq!(lag.recent(), Duration::from_millis(40));
        lag.observe(Duration::from_millis(1));
        assert_eq!(lag.recent(), Duration::from_millis(35));
        for _ in 0..60 {
            lag.observe(Duration::ZERO);
        }
        assert!(lag.recent() < Duration::from_millis(1));
    }
}
