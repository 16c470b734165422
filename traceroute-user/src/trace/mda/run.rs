//! An MDA trace: a scout flow finds the destination, then rounds of flows
//! (and extensions of flows already sent) until the stopping rule holds for
//! every router (see [`super`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::super::flows::consecutive_ids;
use super::super::knowledge::RouterKey;
use super::super::{FlowOutcome, Job, TraceError, Tracer, request};
use crate::clock::MonotonicTime;
use crate::path::graph::{FlowPath, Graph, PathGraph};
use crate::path::{Hop, Run, SharedHop};
use crate::probe::{Protocol, Ttl};

impl Tracer {
    /// MDA: rounds of flows until every router had enough flows through it
    /// to rule out one more next hop, or the flow budget is spent.
    pub(in crate::trace) async fn mda(
        &self,
        job: &Job<'_>,
        multipath: request::Multipath,
    ) -> Result<(Vec<Run>, Vec<FlowOutcome>, Option<PathGraph>), TraceError> {
        let first_ttl = job.request.first_ttl;
        // A scout flow first: where the destination is. Flows sent beyond
        // it would all hit the destination's own ICMP budget (a UDP port
        // unreachable is rate limited like any error) and come back as
        // silence that is not there.
        let mut outcomes = self
            .probe_flows(
                job,
                &[job.request.flow_id],
                (first_ttl, job.request.max_ttl),
                1,
                // Few probes in flight, so few go beyond the destination.
                Some(SCOUT_WINDOW),
            )
            .await?;
        let destination_ttl = outcomes[0]
            .runs
            .iter()
            .filter(|r| r.destination_reached)
            .filter_map(|r| r.hops.last().map(|h| h.ttl))
            .min();
        let max_ttl = destination_ttl.unwrap_or(job.request.max_ttl);
        // The scout's probes beyond the destination all reached it, and a
        // UDP destination answers each with a rate-limited port
        // unreachable: charge them to its budget, so the rounds do not find
        // it emptier than they think and report silence.
        if let (Some(ttl), Protocol::Udp) = (destination_ttl, job.request.protocol) {
            let scout = &outcomes[0];
            let to_destination = scout.runs[0]
                .hops
                .iter()
                .filter(|h| h.shared.is_none())
                .count() as u64;
            let beyond = scout
                .probing
                .probes_sent
                .saturating_sub(scout.probing.reprobes)
                .saturating_sub(to_destination);
            let key = RouterKey::TraceTtl(job.test_run_id.as_u128(), ttl);
            let now = MonotonicTime::now();
            // Each took a token, answered or not. One unanswered says
            // nothing of what is left: the scout stops at the destination
            // without waiting out the probes beyond it (the rounds' own
            // silences show a limit, waited for).
            self.knowledge
                .charge(key, u32::try_from(beyond).unwrap_or(u32::MAX), now);
        }
        let plan = super::Mda {
            confidence: multipath.confidence,
            first_ttl: first_ttl.get(),
            max_ttl: max_ttl.get(),
            max_flows: request::MDA_MAX_FLOWS,
            rule: multipath.rule,
        };
        let mut tried = BTreeSet::new();
        loop {
            let paths = flow_paths(&outcomes);
            let graph = Graph::build(job.route.source, first_ttl.get(), &paths);
            // Flows known to cross a router that lacks flows beyond it, one
            // TTL further: one probe each, all TTLs of the round at once.
            let extensions = plan.extensions(&graph, &paths, &tried);
            if !extensions.is_empty() {
                tracing::debug!(probes = extensions.len(), "MDA extension round");
                tried.extend(extensions.iter().copied());
                let mut by_ttl: BTreeMap<u8, Vec<Option<u16>>> = BTreeMap::new();
                for (id, ttl) in extensions {
                    by_ttl.entry(ttl).or_default().push(Some(id));
                }
                let rounds = by_ttl.into_iter().map(|(ttl, ids)| async move {
                    let ttl = Ttl::new(ttl).unwrap_or(first_ttl);
                    self.probe_flows(job, &ids, (ttl, ttl), 1, None).await
                });
                for round in futures_util::future::try_join_all(rounds).await? {
                    outcomes.extend(round);
                }
                continue;
            }
            let count = plan.next_round(&graph);
            if count == 0 {
                break;
            }
            let start = Ttl::new(plan.start_ttl(&graph)).unwrap_or(first_ttl);
            // The first round (after the scout) goes to the destination;
            // later ones only to the shallowest router still lacking flows.
            let end = if paths.len() == 1 {
                max_ttl
            } else {
                Ttl::new(plan.end_ttl(&graph)).unwrap_or(max_ttl).max(start)
            };
            tracing::debug!(
                flows = count,
                start_ttl = start.get(),
                end_ttl = end.get(),
                "MDA round"
            );
            // Pinned flows continue after the ids used so far.
            let ids = consecutive_ids(
                count,
                job.request
                    .flow_id
                    .map(|id| id.wrapping_add(paths.len() as u16)),
            );
            let round = self.probe_flows(job, &ids, (start, end), 1, None).await?;
            outcomes.extend(round);
        }
        let graph = graph_of(job, &outcomes, first_ttl.get());
        let mut record = graph.to_record(
            "mda",
            Some(multipath.confidence.value()),
            plan.complete(&graph),
        );
        record.rule = Some(multipath.rule.as_str().to_string());
        let mut runs = runs_by_flow(&outcomes);
        fill_skipped_prefix(&mut runs, first_ttl, job);
        Ok((runs, outcomes, Some(record)))
    }
}

/// Probes in flight for an MDA trace's scout flow.
pub(in crate::trace) const SCOUT_WINDOW: usize = 2;

/// The path graph of the flows so far.
pub(in crate::trace) fn graph_of(job: &Job<'_>, outcomes: &[FlowOutcome], first_ttl: u8) -> Graph {
    Graph::build(job.route.source, first_ttl, &flow_paths(outcomes))
}

/// One path per flow, from every outcome that probed it (MDA probes a flow
/// again one TTL further when a router it crossed lacks flows), in the
/// order flows were first sent.
pub(in crate::trace) fn flow_paths(outcomes: &[FlowOutcome]) -> Vec<FlowPath> {
    let mut order: Vec<u16> = Vec::new();
    let mut runs: HashMap<u16, Vec<&Run>> = HashMap::new();
    for outcome in outcomes {
        let entry = runs.entry(outcome.flow_id).or_insert_with(|| {
            order.push(outcome.flow_id);
            Vec::new()
        });
        entry.extend(&outcome.runs);
    }
    order
        .into_iter()
        .map(|id| FlowPath::from_runs(id, runs[&id].iter().copied()))
        .collect()
}

/// One run per flow of an MDA trace: a flow probed again further on keeps
/// its first run (its id, source and the TTLs it probed first), with the
/// later probes' hops after them.
pub(in crate::trace) fn runs_by_flow(outcomes: &[FlowOutcome]) -> Vec<Run> {
    let mut merged: Vec<Run> = Vec::new();
    let mut index: HashMap<u16, usize> = HashMap::new();
    for outcome in outcomes {
        for run in &outcome.runs {
            match index.get(&outcome.flow_id) {
                Some(&i) => {
                    let first = &mut merged[i];
                    let last = first.hops.last().map(|h| h.ttl);
                    first.hops.extend(
                        run.hops
                            .iter()
                            .filter(|h| last.is_none_or(|l| h.ttl > l))
                            .cloned(),
                    );
                    first.destination_reached |= run.destination_reached;
                }
                None => {
                    index.insert(outcome.flow_id, merged.len());
                    merged.push(run.clone());
                }
            }
        }
    }
    merged
}

/// MDA flows after the first round skip the TTLs where one router was
/// confirmed: their runs get those hops from a run that observed them,
/// marked `shared` with that run's ids (never silently made up).
pub(in crate::trace) fn fill_skipped_prefix(runs: &mut [Run], first_ttl: Ttl, job: &Job<'_>) {
    let Some(reference) = runs
        .iter()
        .find(|r| r.hops.first().is_some_and(|h| h.ttl == first_ttl))
        .cloned()
    else {
        return;
    };
    for run in runs.iter_mut() {
        let Some(start) = run.hops.first().map(|h| h.ttl) else {
            continue;
        };
        if start <= first_ttl {
            continue;
        }
        let mut prefix: Vec<Hop> = reference
            .hops
            .iter()
            .filter(|h| h.ttl < start)
            .cloned()
            .map(|mut h| {
                h.shared.get_or_insert(SharedHop {
                    test_run_id: job.test_run_id,
                    run_id: reference.run_id,
                    protocol: job.request.protocol,
                    destination: job.target,
                    flow_id: reference.flow_id.unwrap_or(0),
                    age: 0.0,
                });
                h
            })
            .collect();
        prefix.append(&mut run.hops);
        run.hops = prefix;
    }
}
