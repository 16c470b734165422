//! A path MTU trace: rounds of one pinned flow, each from the first TTL that
//! did not fit, at the size reported there (see [`super`]).

use super::super::{FlowOutcome, Job, TraceError, Tracer};
use crate::path::Run;
use crate::path::graph::PathGraph;
use crate::probe::Ttl;

impl Tracer {
    /// Path MTU discovery: rounds of one flow, the first at the interface
    /// MTU, each next one from the first TTL that did not fit, at the MTU
    /// reported there (see [`pmtu`]). Every round uses the same flow id, so
    /// the same path.
    pub(in crate::trace) async fn pmtu(
        &self,
        job: &Job<'_>,
    ) -> Result<(Vec<Run>, Vec<FlowOutcome>, Option<PathGraph>), TraceError> {
        let request = job.request;
        let min = if job.target.is_ipv6() { 1280 } else { 68 };
        let mut size = job.route.interface.mtu.min(u32::from(u16::MAX));
        let mut from_ttl = request.first_ttl;
        let mut flow_id = request.flow_id;
        let mut merged: Vec<Run> = Vec::new();
        let mut outcomes = Vec::new();
        for _ in 0..super::MAX_ROUNDS {
            // Rounds re-probe TTLs: no live view of them.
            let round_job = Job {
                progress: None,
                probe_size: Some(size as u16),
                ..*job
            };
            let round = self
                .probe_flows(
                    &round_job,
                    &[flow_id],
                    (from_ttl, request.max_ttl),
                    request.queries,
                    None,
                )
                .await?;
            flow_id = flow_id.or(round.first().map(|o| o.flow_id));
            let mut runs: Vec<Run> = round.iter().flat_map(|o| o.runs.clone()).collect();
            super::stamp(&mut runs, size);
            outcomes.extend(round);
            if merged.is_empty() {
                merged = runs;
            } else {
                super::merge(&mut merged, runs, from_ttl.get());
            }
            let reports = super::reports(&merged);
            super::mark_reporters(&mut merged, &reports);
            let (Some(first), Some(next)) =
                (reports.first(), super::next_size(size, &reports, min))
            else {
                break;
            };
            tracing::debug!(
                size,
                next,
                from_ttl = first.ttl,
                "path MTU: probing again smaller"
            );
            size = next;
            from_ttl = Ttl::new(first.ttl).unwrap_or(from_ttl);
        }
        // Probes too big for a round were sent again smaller: unless some
        // are still unresolved, the record lacks nothing because of them.
        if super::reports(&merged).is_empty() {
            for outcome in &mut outcomes {
                outcome.probing.degraded.retain(|r| r != "too_big");
                outcome.stats.degraded.retain(|r| *r != "too_big");
            }
        }
        Ok((merged, outcomes, None))
    }
}
