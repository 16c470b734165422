//! `traceroute-agent serve`: one process holding the [`Tracer`] (capture and
//! route cache), answering the HTTP API ([`api`]) and running scheduled
//! targets ([`scheduler`]) whose records go out as JSON lines.
//!
//! Signals: SIGHUP re-reads the config file (targets, namespace, tags, output
//! path; a bad file keeps the running config) and reopens the output file;
//! SIGTERM/SIGINT stop accepting, let in-flight traces finish within
//! `shutdown_grace`, cancel the rest, drop the tracer (detaching the eBPF
//! programs), remove the socket and exit 0.

pub mod api;
pub mod config;
pub mod head_guard;
pub mod listen;
pub mod metrics;
pub mod scheduler;
pub mod stream;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Semaphore, watch};

use crate::error::ErrorCode;
use crate::path::NetworkPath;
use crate::route::{RouteCache, RouteError};
use crate::sinks::clickhouse::ClickHouseSink;
use crate::sinks::file::JsonLines;
use crate::sync::RwLockExt;
use crate::trace::{Call, ProgressSender, TraceError, TraceRequest, Tracer, TracerConfig};
pub use config::Config;
use metrics::{Metrics, Origin};

/// An error with its API code; [`api`] turns it into a status and JSON body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceError {
    pub code: ErrorCode,
    pub message: String,
}

impl ServiceError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ServiceError {
        ServiceError {
            code,
            message: message.into(),
        }
    }
}

impl From<TraceError> for ServiceError {
    fn from(e: TraceError) -> ServiceError {
        let message = match e.missing_privilege() {
            Some(missing) => format!("{e} ({missing})"),
            None => e.to_string(),
        };
        ServiceError::new(e.code(), message)
    }
}

/// What `serve` runs with: the config plus where it came from, so SIGHUP can
/// re-read it and re-apply the command-line overrides.
pub struct Options {
    pub config_file: Option<PathBuf>,
    /// Applied to every config read (the file's values lose to flags).
    pub overrides: Box<dyn Fn(&mut Config) + Send + Sync>,
}

impl Options {
    /// Reads the file (or the defaults), applies the overrides, validates.
    pub fn load(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config_file {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        (self.overrides)(&mut config);
        config.validate()?;
        Ok(config)
    }
}

/// What only this host can say about a config: a literal target that is a
/// broadcast address here (the directed broadcast of one of its subnets) is
/// refused like 255.255.255.255, naming it. Other route failures are not
/// (the route may come up later; those runs fail and say why), and a name
/// is resolved per run, whose runs are refused (`INVALID_REQUEST`) then.
pub async fn check_targets_here(config: &Config, routes: &RouteCache) -> anyhow::Result<()> {
    for (i, target) in config.targets.iter().enumerate() {
        let Ok(ip) = target.host.parse::<IpAddr>() else {
            continue;
        };
        if let Err(e @ RouteError::Broadcast(_)) = routes.lookup(ip.to_canonical()).await {
            anyhow::bail!("targets[{i}] ({}): {e}", target.host);
        }
    }
    Ok(())
}

/// State shared by the API handlers and the scheduler.
pub struct Shared {
    pub tracer: Arc<Tracer>,
    pub metrics: Arc<Metrics>,
    config: RwLock<Arc<Config>>,
    /// API trace slots (`api.max_concurrent_traces` at start; a reload does
    /// not resize them).
    pub api_slots: Arc<Semaphore>,
    api_capacity: usize,
    /// Name lookups of API requests ([`API_RESOLVE_SLOTS`]).
    pub resolve_slots: Semaphore,
    /// True once shutdown began: new API traces are refused.
    stopping: watch::Sender<bool>,
    /// True once the grace period is over: running traces give up.
    cancel: watch::Sender<bool>,
    /// True once running traces are done (or cancelled): the listeners close.
    close: watch::Sender<bool>,
}

impl Shared {
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.config.read_locked())
    }

    fn set_config(&self, config: Config) {
        *self.config.write_locked() = Arc::new(config);
    }

    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Completes when running traces must give up.
    pub async fn cancelled(&self) {
        let mut rx = self.cancel.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Completes when the listeners should stop accepting: until then, new
    /// requests during shutdown get `503 SHUTTING_DOWN`, not a refused connection.
    pub async fn closed(&self) {
        let mut rx = self.close.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// API traces running now.
    pub fn api_in_flight(&self) -> usize {
        self.api_capacity
            .saturating_sub(self.api_slots.available_permits())
    }

    /// Completes when no API trace is running.
    async fn api_idle(&self) {
        while self.api_in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Runs one trace (with its end-to-end probes) within `limit` and
    /// stamps the record with the configured namespace and tags. Counted in
    /// the metrics; a trace whose future is dropped counts as `CANCELLED`.
    pub async fn trace(
        &self,
        request: &TraceRequest,
        call: &Call,
        extra_tags: &[String],
        origin: Origin,
        limit: Duration,
        progress: Option<&ProgressSender>,
    ) -> Result<NetworkPath, ServiceError> {
        let flight = self.metrics.start(request.protocol, origin);
        let result = tokio::select! {
            r = self.tracer.trace_observed(request, call, progress) => r.map_err(ServiceError::from).map(|(path, stats)| {
                for s in &stats {
                    self.metrics.count_stats(request.protocol, s);
                }
                path
            }),
            _ = self.cancelled() => Err(ServiceError::new(
                ErrorCode::ShuttingDown,
                "the agent is shutting down; the trace was cancelled",
            )),
            _ = tokio::time::sleep(limit) => Err(ServiceError::new(
                ErrorCode::Timeout,
                format!("the trace did not finish within {} ms", limit.as_millis()),
            )),
        };
        match result {
            Ok(mut path) => {
                let config = self.config();
                path.namespace = config.namespace.clone();
                path.source.public_ip = config.public_ip;
                path.tags = config
                    .tags
                    .iter()
                    .chain(extra_tags)
                    .cloned()
                    .collect::<Vec<_>>();
                flight.finish(None);
                Ok(path)
            }
            Err(e) => {
                flight.finish(Some(e.code));
                Err(e)
            }
        }
    }
}

/// How long an API trace may wait to be admitted when the routers it needs
/// are busy with other traces, before it is answered `503 BUSY`.
pub const API_ADMISSION_WAIT: Duration = Duration::from_secs(2);

/// Name lookups the API lets wait for the resolver at once; more get
/// `503 BUSY`. Separate from the trace slots.
pub const API_RESOLVE_SLOTS: usize = 16;

/// Runs the service until SIGTERM/SIGINT.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let config = options.load()?;
    let tracer = Arc::new(
        Tracer::new(TracerConfig {
            capture: config.capture,
            probes_per_second: config.probes_per_second,
            router_rate: config.router_rate(),
            ..TracerConfig::default()
        })
        .await
        .context("starting the tracer")?,
    );
    check_targets_here(&config, tracer.routes()).await?;
    let clickhouse = match &config.output.clickhouse {
        Some(section) => {
            let options = section.options()?;
            let sink = ClickHouseSink::start(options).context("starting the ClickHouse output")?;
            tracing::info!(
                address = %format!("{}:{}", sink.options().host, sink.options().port),
                database = sink.options().database,
                user = sink.options().user,
                spool = %sink.options().spool_dir.display(),
                "clickhouse output on"
            );
            Some(Arc::new(sink))
        }
        None => None,
    };
    let metrics = Arc::new(Metrics::new(
        Arc::downgrade(&tracer),
        clickhouse.as_ref().map_or_else(Weak::new, Arc::downgrade),
    ));
    let sink = Arc::new(open_sink(&config)?);
    let listeners = listen::Listeners::open(&config.api)?;
    let shared = Arc::new(Shared {
        tracer,
        metrics,
        api_slots: Arc::new(Semaphore::new(config.api.max_concurrent_traces)),
        api_capacity: config.api.max_concurrent_traces,
        resolve_slots: Semaphore::new(API_RESOLVE_SLOTS),
        config: RwLock::new(Arc::new(config.clone())),
        stopping: watch::channel(false).0,
        cancel: watch::channel(false).0,
        close: watch::channel(false).0,
    });
    let mut scheduler = scheduler::Scheduler::new(Arc::clone(&shared), sink, clickhouse.clone());
    scheduler.apply(&config.targets);
    let on_shed: Arc<dyn Fn() + Send + Sync> = {
        let shared = Arc::clone(&shared);
        Arc::new(move || shared.metrics.connection_shed())
    };
    let mut servers = tokio::spawn(listeners.serve(
        api::router(Arc::clone(&shared)),
        {
            let shared = Arc::clone(&shared);
            async move { shared.closed().await }
        },
        on_shed,
    ));
    tracing::info!(
        capture = %shared.tracer.capture().method(),
        targets = config.targets.len(),
        "traceroute-agent serving"
    );

    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut retry = tokio::time::interval(OUTPUT_RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = hup.recv() => reload(&options, &shared, &mut scheduler).await,
            _ = retry.tick() => follow_output(&shared, &scheduler, &shared.config()),
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }

    let grace = shared.config().shutdown_grace;
    tracing::info!(grace_ms = grace.as_millis() as u64, "shutting down");
    shared.stopping.send_replace(true);
    let drained = tokio::time::timeout(grace, async {
        scheduler.stop().await;
        shared.api_idle().await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!("grace period over: cancelling running traces");
        shared.cancel.send_replace(true);
        let finished = tokio::time::timeout(Duration::from_secs(2), async {
            scheduler.stop().await;
            shared.api_idle().await;
        })
        .await;
        if finished.is_err() {
            tracing::warn!("traces still running after cancellation: aborting them");
        }
    }
    // Until here the listeners kept answering (503 SHUTTING_DOWN).
    shared.close.send_replace(true);
    if tokio::time::timeout(Duration::from_secs(2), &mut servers)
        .await
        .is_err()
    {
        tracing::warn!("connections still open: closing them");
        servers.abort();
        let _ = servers.await;
    }
    scheduler.abort_and_wait().await;
    drop(scheduler);
    if let Some(clickhouse) = &clickhouse {
        // What was not sent waits in the spool for the next start.
        clickhouse.close().await;
    }
    let Ok(shared) = Arc::try_unwrap(shared) else {
        // Something still holds the state (a handler that ignored the
        // cancellation); the runtime's shutdown drops it right after.
        tracing::warn!("state still referenced at exit");
        return Ok(());
    };
    drop(shared.metrics);
    match Arc::try_unwrap(shared.tracer) {
        Ok(tracer) => drop(tracer),
        Err(_) => tracing::warn!("tracer still referenced at exit"),
    }
    tracing::info!("stopped");
    Ok(())
}

fn open_sink(config: &Config) -> anyhow::Result<JsonLines> {
    Ok(match &config.output.path {
        Some(path) => JsonLines::file(path)?,
        None => JsonLines::stdout(),
    })
}

/// Makes the sink write where `config` says. The sink itself is compared, not
/// the previous config: after a failed open the config already names the new
/// file while records still go to the old one, and every later attempt (each
/// SIGHUP, and the periodic retry) must try again.
fn follow_output(shared: &Shared, scheduler: &scheduler::Scheduler, config: &Config) {
    if scheduler.sink().path() == config.output.path {
        return;
    }
    match open_sink(config) {
        Ok(sink) => {
            tracing::info!(path = ?config.output.path, "output switched");
            scheduler.set_sink(Arc::new(sink));
        }
        Err(e) => {
            shared.metrics.sink_open_failed();
            tracing::error!("opening the new output, records keep going to the old one: {e:#}");
        }
    }
}

/// How often an output that could not be opened is tried again.
const OUTPUT_RETRY: Duration = Duration::from_secs(10);

async fn reload(options: &Options, shared: &Shared, scheduler: &mut scheduler::Scheduler) {
    if let Err(e) = scheduler.sink().reopen() {
        shared.metrics.sink_open_failed();
        tracing::error!("reopening the output file: {e}");
    }
    let Some(file) = &options.config_file else {
        tracing::info!("SIGHUP: output reopened (no config file to reload)");
        return;
    };
    let loaded = match options.load() {
        Ok(c) => check_targets_here(&c, shared.tracer.routes())
            .await
            .map(|()| c),
        Err(e) => Err(e),
    };
    let new = match loaded {
        Ok(c) => c,
        Err(e) => {
            let error = crate::error::one_line(&format!("{e:#}"));
            tracing::error!(
                file = %file.display(),
                "config reload failed, keeping the running config: {error}"
            );
            return;
        }
    };
    let old = shared.config();
    if new.api != old.api
        || new.capture != old.capture
        || new.probes_per_second != old.probes_per_second
        || new.router_rate() != old.router_rate()
        || new.output.clickhouse != old.output.clickhouse
    {
        tracing::warn!(
            "changes to [api], [output.clickhouse], capture, probes_per_second and router_icmp_* \
             apply after a restart"
        );
    }
    follow_output(shared, scheduler, &new);
    scheduler.apply(&new.targets);
    tracing::info!(targets = new.targets.len(), "config reloaded");
    shared.set_config(new);
}
