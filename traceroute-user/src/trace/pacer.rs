//! Probe pacing shared by every trace of the process: never more than the
//! configured probes per second, so routers' ICMP rate limits (Linux: a burst of
//! ~6, then 1/s per source by default) are not tripped by our own bursts.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

pub struct Pacer {
    interval: Duration,
    next_slot: Mutex<Instant>,
}

impl Pacer {
    /// `per_second` probes per second (at least 1).
    pub fn new(per_second: u32) -> Self {
        Self {
            interval: Duration::from_secs(1) / per_second.max(1),
            next_slot: Mutex::new(Instant::now()),
        }
    }

    /// Waits for the next free slot and takes it. Cancellation-safe: a slot is
    /// only taken when the future completes.
    pub async fn wait(&self) {
        loop {
            let slot = {
                let mut next = self.next_slot.lock().unwrap();
                let now = Instant::now();
                if *next <= now {
                    *next = now + self.interval;
                    return;
                }
                *next
            };
            tokio::time::sleep_until(slot).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn spaces_probes_by_the_interval() {
        let pacer = Pacer::new(100);
        let start = Instant::now();
        for _ in 0..11 {
            pacer.wait().await;
        }
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(99), "{elapsed:?}");
        assert!(elapsed <= Duration::from_millis(111), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn is_shared_between_tasks() {
        let pacer = std::sync::Arc::new(Pacer::new(50));
        let start = Instant::now();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let p = pacer.clone();
                tokio::spawn(async move {
                    for _ in 0..5 {
                        p.wait().await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        // 20 probes at 50/s: at least 19 intervals of 20 ms.
        assert!(start.elapsed() >= Duration::from_millis(380));
    }
}
