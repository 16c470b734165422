//! How long one responder takes to answer: its recent answer latencies, as
//! a distribution (a busy router's own ICMP errors can come tens or hundreds
//! of milliseconds late, and not always equally late).

use std::time::Duration;

use crate::clock::MonotonicTime;

/// Samples kept per responder.
const SAMPLES: usize = 16;

/// The last [`SAMPLES`] answer latencies of one responder.
#[derive(Clone, Debug)]
pub struct Latency {
    samples: Vec<Duration>,
    /// Where the next sample goes once the ring is full.
    next: usize,
    pub(super) touched: MonotonicTime,
}

impl Latency {
    pub fn new(now: MonotonicTime) -> Latency {
        Latency {
            samples: Vec::with_capacity(SAMPLES),
            next: 0,
            touched: now,
        }
    }

    pub fn observe(&mut self, rtt: Duration, now: MonotonicTime) {
        if self.samples.len() < SAMPLES {
            self.samples.push(rtt);
        } else {
            self.samples[self.next] = rtt;
            self.next = (self.next + 1) % SAMPLES;
        }
        self.touched = now;
    }

    pub fn count(&self) -> usize {
        self.samples.len()
    }

    /// The `q`-quantile (0..=1) of the samples, nearest rank.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let mut sorted = self.samples.clone();
        sorted.sort_unstable();
        let last = sorted.len().checked_sub(1)?;
        let rank = ((q.clamp(0.0, 1.0) * last as f64).round() as usize).min(last);
        Some(sorted[rank])
    }

    /// How long an answer from it may take: `here` times its median (as
    /// traceroute's HERE), and never less than half again its slowest
    /// recent answer.
    pub fn give_up_after(&self, here: f64) -> Option<Duration> {
        let median = self.quantile(0.5)?;
        let slowest = self.quantile(1.0)?;
        Some(median.mul_f64(here).max(slowest.mul_f64(1.5)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::sim::at;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_wait_covers_the_slowest_answer_and_forgets_old_ones() {
        let mut l = Latency::new(at(0));
        assert_eq!(l.give_up_after(3.0), None);
        for rtt in [30, 32, 31, 120] {
            l.observe(ms(rtt), at(0));
        }
        // Median 31 ms x 3 is 93 ms, but one answer took 120 ms.
        assert_eq!(l.give_up_after(3.0), Some(ms(180)));
        for _ in 0..SAMPLES {
            l.observe(ms(30), at(1));
        }
        assert_eq!(l.count(), SAMPLES);
        assert_eq!(l.quantile(1.0), Some(ms(30)));
        assert_eq!(l.give_up_after(3.0), Some(ms(90)));
    }
}
