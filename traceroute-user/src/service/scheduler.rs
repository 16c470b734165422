//! Scheduled targets: each `[[targets]]` entry is one task that traces its
//! target every `interval` and writes each record as one JSON line.
//!
//! * Spread: a target's first run starts at a random point of its first
//!   interval, so many targets with one interval do not fire together.
//! * Jitter: each later start is `interval` after the previous start, moved by
//!   up to ±5 % of the interval.
//! * One run per target at a time: a task runs its traces one after the other;
//!   a run longer than the interval delays the next one (missed starts are
//!   skipped, never queued).
//! * A failed run is logged and counted (`failed_runs_total`); it writes no line.
//! * Reload ([`Scheduler::apply`]): unchanged targets keep their task and
//!   rhythm; removed or changed ones are cancelled; new ones start.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::Shared;
use super::config::Target;
use super::metrics::Origin;
use crate::path::{NetworkPath, PathChange};
use crate::sinks::clickhouse::ClickHouseSink;
use crate::sinks::file::JsonLines;
use crate::sync::LockExt;
use crate::trace::request::BadRequest;
use crate::trace::{Call, TraceRequest};

pub struct Scheduler {
    shared: Arc<Shared>,
    sink: Arc<Mutex<Arc<JsonLines>>>,
    /// The ClickHouse output, when configured (beside the JSON lines).
    clickhouse: Option<Arc<ClickHouseSink>>,
    tasks: HashMap<String, JoinHandle<()>>,
    /// Set on shutdown: tasks start no new run.
    stop: watch::Sender<bool>,
}

impl Scheduler {
    pub fn new(
        shared: Arc<Shared>,
        sink: Arc<JsonLines>,
        clickhouse: Option<Arc<ClickHouseSink>>,
    ) -> Scheduler {
        Scheduler {
            shared,
            sink: Arc::new(Mutex::new(sink)),
            clickhouse,
            tasks: HashMap::new(),
            stop: watch::channel(false).0,
        }
    }

    pub fn sink(&self) -> Arc<JsonLines> {
        Arc::clone(&self.sink.locked())
    }

    pub fn set_sink(&self, sink: Arc<JsonLines>) {
        *self.sink.locked() = sink;
    }

    /// Makes the running targets those of `targets`.
    pub fn apply(&mut self, targets: &[Target]) {
        let mut wanted: HashMap<String, &Target> = HashMap::new();
        for t in targets {
            // Two identical entries are one target.
            wanted.insert(format!("{t:?}"), t);
        }
        // A finished task (its `count` reached) stays finished while wanted.
        self.tasks.retain(|key, task| {
            let keep = wanted.contains_key(key);
            if !keep {
                task.abort();
            }
            keep
        });
        for (key, target) in wanted {
            if self.tasks.contains_key(&key) {
                continue;
            }
            let task = tokio::spawn(run_target(
                Arc::clone(&self.shared),
                Arc::clone(&self.sink),
                self.clickhouse.clone(),
                target.clone(),
                self.stop.subscribe(),
            ));
            self.tasks.insert(key, task);
        }
    }

    /// Asks every task to stop after its current run and waits for them.
    pub async fn stop(&mut self) {
        self.stop.send_replace(true);
        for task in self.tasks.values_mut() {
            if !task.is_finished() {
                let _ = task.await;
            }
        }
    }

    /// Cancels every task now.
    pub fn abort(&mut self) {
        for (_, task) in self.tasks.drain() {
            task.abort();
        }
    }

    /// Cancels every task and waits until their futures are dropped.
    pub async fn abort_and_wait(&mut self) {
        let tasks: Vec<_> = self.tasks.drain().map(|(_, t)| t).collect();
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            // A finished task may already have been awaited by `stop`.
            if !task.is_finished() {
                let _ = task.await;
            }
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Sets the target's gauges from its finished run, and compares the run's
/// set of paths with the previous run's: a change is marked in the record
/// (`path_change`) and counted.
fn note_run(shared: &Shared, target: &Target, path: &mut NetworkPath, last: &mut Option<String>) {
    let distinct: std::collections::BTreeSet<&str> = path
        .traceroute
        .runs
        .iter()
        .filter_map(|r| r.fingerprint.as_deref())
        .collect();
    let distinct = distinct.len();
    let current = path.path_fingerprint.clone();
    let changed = match (last.as_ref(), current.as_ref()) {
        (Some(previous), Some(current)) => previous != current,
        _ => false,
    };
    if changed && let (Some(previous), Some(current)) = (last.clone(), current.clone()) {
        tracing::info!(host = target.host, previous, current, "path changed");
        path.path_change = Some(PathChange { previous, current });
    }
    shared
        .metrics
        .target_run(&target.host, path, distinct, changed);
    if current.is_some() {
        *last = current;
    }
}

/// The target's request and how one run of it is bounded.
fn request_of(
    shared: &Shared,
    target: &Target,
    cap: Duration,
) -> Result<(TraceRequest, Call), BadRequest> {
    let req = target.request()?;
    let call = Call {
        deadline: Some(shared.tracer.deadline_for(&req).min(cap)),
        // A run waits for busy routers at most half its interval; then it is
        // skipped (counted as failed with code BUSY) rather than run short.
        admission_wait: target.interval / 2,
        resolved: None,
    };
    Ok((req, call))
}

async fn run_target(
    shared: Arc<Shared>,
    sink: Arc<Mutex<Arc<JsonLines>>>,
    clickhouse: Option<Arc<ClickHouseSink>>,
    target: Target,
    mut stop: watch::Receiver<bool>,
) {
    let interval = target.interval;
    let mut next = Instant::now() + interval.mul_f64(crate::random::unit());
    let mut runs = 0u64;
    // The previous run's path-set fingerprint, to notice path changes.
    let mut last_paths: Option<String> = None;
    loop {
        if target.count.is_some_and(|c| runs >= c) {
            tracing::debug!(host = target.host, runs, "target done");
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let started = Instant::now();
        let config = shared.config();
        // Probing stops after the larger of the interval and the API's request
        // bound; resolution and reverse DNS get 10 s more before the run is
        // given up as TIMEOUT.
        let cap = config.api.request_timeout.max(interval);
        let (request, call) = match request_of(&shared, &target, cap) {
            Ok(request) => request,
            Err(e) => {
                // Config validation builds the same request: not reached.
                tracing::error!(host = target.host, "target dropped: {e}");
                return;
            }
        };
        let limit = cap + Duration::from_secs(10);
        match shared
            .trace(&request, &call, &target.tags, Origin::Schedule, limit, None)
            .await
        {
            Ok(mut path) => {
                note_run(&shared, &target, &mut path, &mut last_paths);
                let sink = Arc::clone(&sink.locked());
                if let Err(e) = sink.write(&path) {
                    shared.metrics.record_lost();
                    tracing::error!(host = target.host, "writing the record, it is lost: {e}");
                }
                if let Some(clickhouse) = &clickhouse {
                    clickhouse.write(&path);
                }
            }
            Err(e) => tracing::warn!(
                host = target.host,
                protocol = %target.protocol,
                code = e.code.as_str(),
                "scheduled trace failed: {}",
                e.message
            ),
        }
        runs += 1;
        // ±5 % jitter around the interval, measured from this run's start.
        let jitter = interval.mul_f64(0.1 * crate::random::unit());
        next = started + interval.mul_f64(0.95) + jitter;
        let now = Instant::now();
        if next < now {
            // The run overran its interval: start again now, skip the missed ones.
            next = now;
        }
    }
}
