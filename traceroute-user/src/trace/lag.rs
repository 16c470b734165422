//! Two measures of how late answers can come right now, so giving up a probe
//! follows the host and the network instead of a fixed slack.
//!
//! * [`DeliveryLag`]: replies are stamped by the kernel, but a trace learns
//!   of them only after the ring buffer, the dispatcher and its own queue; on a
//!   busy host that takes milliseconds. Waits run on the userspace clock, so
//!   they are lengthened by the recent delivery lag: a reply the kernel saw in
//!   time is never called missing because it was still on its way to us.
//! * [`Jitter`]: how much later than its own best an answer from the same
//!   responder came, recently, across all traces. Distance does not count
//!   (a far responder's best is far too); queueing does. A starved host or a
//!   congested path shows up here, and the give-up floor grows with it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use crate::clock::MonotonicTime;
use crate::sync::LockExt;

/// A recent maximum that halves every `half_life` ([`HALF_LIFE`] unless
/// made [`with_half_life`](Self::with_half_life)).
pub struct DecayingMax {
    /// (value in ns, when it was last updated)
    state: Mutex<(f64, Option<MonotonicTime>)>,
    half_life: Duration,
}

impl Default for DecayingMax {
    fn default() -> Self {
        Self::with_half_life(HALF_LIFE)
    }
}

/// How fast a spike of delivery lag is forgotten.
pub const HALF_LIFE: Duration = Duration::from_secs(1);

/// How fast a spike of jitter is forgotten: a host or path under load stays
/// so for a while, and an answer is often slowest when load peaks, before
/// anything has measured that peak.
pub const JITTER_HALF_LIFE: Duration = Duration::from_secs(5);

impl DecayingMax {
    pub fn with_half_life(half_life: Duration) -> Self {
        DecayingMax {
            state: Mutex::new((0.0, None)),
            half_life,
        }
    }

    fn decayed(&self, value: f64, from: Option<MonotonicTime>, now: MonotonicTime) -> f64 {
        let elapsed = from
            .and_then(|f| now.since(f))
            .unwrap_or_default()
            .as_secs_f64();
        value * 0.5f64.powf(elapsed / self.half_life.as_secs_f64())
    }

    pub fn observe(&self, value: Duration, now: MonotonicTime) {
        let mut state = self.state.locked();
        let old = self.decayed(state.0, state.1, now);
        *state = (old.max(value.as_nanos() as f64), Some(now));
    }

    pub fn recent(&self, now: MonotonicTime) -> Duration {
        let state = self.state.locked();
        Duration::from_nanos(self.decayed(state.0, state.1, now) as u64)
    }
}

/// How late the capture pipeline hands packets over.
pub type DeliveryLag = DecayingMax;

/// Responders remembered for their best RTT; beyond this the table restarts.
const MAX_RESPONDERS: usize = 65_536;

/// Recent excess of answers' RTTs over their responder's best.
pub struct Jitter {
    best: Mutex<HashMap<IpAddr, Duration>>,
    excess: DecayingMax,
}

impl Default for Jitter {
    fn default() -> Self {
        Jitter {
            best: Mutex::new(HashMap::new()),
            excess: DecayingMax::with_half_life(JITTER_HALF_LIFE),
        }
    }
}

impl Jitter {
    pub fn observe(&self, responder: IpAddr, rtt: Duration, now: MonotonicTime) {
        let excess = {
            let mut best = self.best.locked();
            if best.len() >= MAX_RESPONDERS {
                best.clear();
            }
            let b = best.entry(responder).or_insert(rtt);
            *b = (*b).min(rtt);
            rtt - *b
        };
        self.excess.observe(excess, now);
    }

    pub fn recent(&self, now: MonotonicTime) -> Duration {
        self.excess.recent(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::sim::at;

    #[test]
    fn a_spike_counts_at_once_and_halves_every_second() {
        let lag = DeliveryLag::default();
        lag.observe(Duration::from_millis(40), at(0));
        lag.observe(Duration::from_millis(1), at(0));
        assert_eq!(lag.recent(at(0)), Duration::from_millis(40));
        assert_eq!(lag.recent(at(1000)), Duration::from_millis(20));
        assert!(lag.recent(at(10_000)) < Duration::from_millis(1));
    }

    #[test]
    fn jitter_is_lateness_against_the_same_responder_not_distance() {
        let jitter = Jitter::default();
        let far = IpAddr::from([198, 18, 9, 2]);
        let near = IpAddr::from([198, 18, 1, 2]);
        jitter.observe(far, Duration::from_millis(200), at(0));
        jitter.observe(near, Duration::from_millis(1), at(0));
        assert_eq!(jitter.recent(at(0)), Duration::ZERO, "far is not late");
        jitter.observe(near, Duration::from_millis(41), at(0));
        assert_eq!(jitter.recent(at(0)), Duration::from_millis(40));
    }
}
