//! Admission: a trace starts unless responders it needs are known to be at
//! their limit (or the probe rail is backed up) so that it could not finish
//! before its deadline.

use std::time::Duration;

use super::knowledge::{Origin, RouterKey};
use super::prober::{Plan, Prober, Setup};
use super::{TraceError, TraceRequest, Tracer};
use crate::clock::MonotonicTime;
use crate::probe::Ttl;
use crate::sync::LockExt;

/// How often a trace waiting for admission looks again.
pub(in crate::trace) const ADMISSION_RECHECK: Duration = Duration::from_millis(250);

impl Tracer {
    /// The bound a whole trace of `request` needs with routers at this
    /// tracer's prior budget (see the prober's `Plan::deadline`), for its mode's flows.
    pub fn deadline_for(&self, request: &TraceRequest) -> Duration {
        Plan::of(request).deadline(self.knowledge.prior(), request.mode.flows())
    }

    /// Admits a trace unless responders it will ask are known to be at
    /// their limit (or the probe rail is backed up) so that its probes could
    /// not leave before its `deadline`; then it waits up to
    /// `admission_wait` for them, and is refused after that. Nothing known, nothing refused:
    /// a prior is not a limit. The check and the reservation of the first
    /// window are one step, so two traces arriving together cannot both
    /// count on the same budget. The record says how long it waited.
    pub(in crate::trace) async fn admit(
        &self,
        setup: Setup,
        deadline: Duration,
        admission_wait: Duration,
    ) -> Result<Prober, TraceError> {
        let arrived = tokio::time::Instant::now();
        let waited_until = arrived + admission_wait;
        let mut setup = Some(setup);
        let mut waited = false;
        loop {
            let wait = {
                let _admission = self.admission.locked();
                let kept = setup.as_ref().expect("kept");
                let wait = self.predicted_wait(&kept.plan, kept.origin);
                // Room for the probes' own waits after the last one leaves.
                if wait + kept.plan.timeout <= deadline {
                    let mut setup = setup.take().expect("kept");
                    let now = MonotonicTime::now();
                    setup.deadline = now + deadline;
                    let mut prober = Prober::new(setup);
                    if waited {
                        prober.set_admission_wait(arrived.elapsed());
                    }
                    prober.reserve_first_window(now, self.shared());
                    return Ok(prober);
                }
                wait
            };
            let now = tokio::time::Instant::now();
            if now >= waited_until {
                return Err(TraceError::Busy { retry_after: wait });
            }
            waited = true;
            tokio::time::sleep(ADMISSION_RECHECK.min(waited_until - now)).await;
        }
    }

    /// How long the plan's first probes would wait for responders known to
    /// be at their limit, and for the rail, if it started now.
    pub(in crate::trace) fn predicted_wait(&self, plan: &Plan, origin: Origin) -> Duration {
        let now = MonotonicTime::now();
        let routers = Ttl::range(plan.first_ttl, plan.max_ttl)
            .filter_map(|ttl| {
                self.knowledge
                    .limited_wait(RouterKey::Position(origin, ttl), now)
            })
            .max()
            .unwrap_or_default();
        let hops = u32::from(plan.max_ttl.get() - plan.first_ttl.get()) + 1;
        let attempts = u32::from(plan.attempts);
        routers.max(self.rail.backlog(now, hops * attempts))
    }
}
