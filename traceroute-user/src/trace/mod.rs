//! A trace from request to `NetworkPath`: resolve the target, look up the route,
//! be admitted ([`admission`]), open flows ([`flows`]), probe ([`prober`],
//! driven by [`engine`], over what the process knows of each responder,
//! [`knowledge`]), and assemble the record ([`record`]). MDA and path MTU
//! traces are rounds of such flows ([`mda`], [`pmtu`]); [`unprivileged`]
//! traces go without a tracer.

mod admission;
pub mod budget;
mod call;
pub mod connection;
pub mod dgram;
pub mod engine;
mod error;
mod flows;
pub mod knowledge;
pub mod lag;
pub mod mda;
pub mod pmtu;
pub mod ports;
pub mod prober;
mod record;
pub mod request;
#[cfg(test)]
mod scenarios;
pub mod sender;
pub mod share;
#[cfg(test)]
pub mod sim;
pub mod syn_socket;
mod unprivileged;

use std::net::IpAddr;
use std::time::Duration;

use uuid::Uuid;

use crate::capture::{Capture, CaptureMode, FlowSubscription};
use crate::clock::MonotonicTime;
use crate::path::graph;
use crate::path::{DistanceUncertain, E2eProbe, NetworkPath, Probing, Run};
use crate::probe::{ProbeFlow, Protocol, Ttl};
use crate::resolve::{ReverseDns, resolve_target};
use crate::route::{Route, RouteCache};
use budget::{ProbeRail, Rate};
use engine::LiveNetwork;
use knowledge::{Knowledge, Origin};
pub use prober::{Ignored, Plan, Policy, ProbeKey, TraceStats};
use prober::{Prober, Setup};
pub use request::{Mode, RESOLVE_TIMEOUT, TcpMethod, TraceRequest};
use sender::{ProbeSender, SendVia};
use share::{HopShare, Observer, ShareConfig};

pub use call::Call;
pub use error::TraceError;
use flows::consecutive_ids;
pub(crate) use flows::flow_id;
use mda::run::graph_of;
use record::{e2e_samples, hostname, log_outcome, probing_of, runs_of};
use unprivileged::connect_runs;
pub use unprivileged::trace_unprivileged;

/// Settings of the process-wide tracer.
#[derive(Clone, Copy, Debug)]
pub struct TracerConfig {
    pub capture: CaptureMode,
    /// Safety rail: probes per second across all traces. Router budgets, not
    /// this, pace probing; it only caps a runaway.
    pub probes_per_second: u32,
    /// What we assume a responder lets us have before anything is known of
    /// it (the prior its budget is learnt from): Linux's default burst of
    /// 6, then 1 per second.
    pub router_rate: Rate,
    pub policy: Policy,
    pub share: ShareConfig,
    /// Attach the capture to every interface that is up at start (a service,
    /// where replies may come back anywhere), or only to each trace's
    /// outgoing interface when it starts (a one-shot CLI trace).
    pub watch_all_interfaces: bool,
}

impl Default for TracerConfig {
    fn default() -> Self {
        Self {
            capture: CaptureMode::Auto,
            probes_per_second: request::PROBES_PER_SECOND.default,
            router_rate: Rate::ROUTER_DEFAULT,
            policy: Policy::default(),
            share: ShareConfig::default(),
            watch_all_interfaces: true,
        }
    }
}

/// Everything traces share: capture, route cache, raw sockets, what is
/// known of each responder, the probe rail and the first hops they have in
/// common.
pub struct Tracer {
    capture: Capture,
    routes: RouteCache,
    sender: ProbeSender,
    knowledge: Knowledge,
    rail: ProbeRail,
    share: HopShare,
    /// Held while a trace is checked for admission and its first window
    /// reserved, so the next check sees what this one will spend.
    admission: std::sync::Mutex<()>,
    lag: lag::DeliveryLag,
    jitter: lag::Jitter,
    policy: Policy,
    rdns: ReverseDns,
    hostname: String,
}

impl Tracer {
    /// Starts the capture and the route cache.
    pub async fn new(config: TracerConfig) -> Result<Self, TraceError> {
        let started = std::time::Instant::now();
        let capture = Capture::start(config.capture)?;
        tracing::debug!(ms = ms_since(started), "capture loaded");
        if config.watch_all_interfaces {
            let watched = capture.watch_all_interfaces()?;
            tracing::debug!(?watched, "capture watching interfaces");
        }
        let routes = RouteCache::new().await?;
        tracing::debug!(ms = ms_since(started), "route cache ready");
        Ok(Self {
            capture,
            routes,
            sender: ProbeSender::new(),
            knowledge: Knowledge::new(config.router_rate),
            rail: ProbeRail::new(config.probes_per_second),
            share: HopShare::new(config.share),
            admission: std::sync::Mutex::new(()),
            lag: lag::DeliveryLag::default(),
            jitter: lag::Jitter::default(),
            policy: config.policy,
            rdns: ReverseDns::new(),
            hostname: hostname(),
        })
    }

    pub fn capture(&self) -> &Capture {
        &self.capture
    }

    pub fn routes(&self) -> &RouteCache {
        &self.routes
    }

    /// What the tracer has learnt about the responders it met.
    pub fn knowledge(&self) -> &Knowledge {
        &self.knowledge
    }

    fn shared(&self) -> prober::Shared<'_> {
        prober::Shared {
            lag: &self.lag,
            jitter: &self.jitter,
            knowledge: &self.knowledge,
            rail: &self.rail,
            share: &self.share,
        }
    }

    /// Runs one trace, bounded only by its own limits.
    pub async fn trace(&self, request: &TraceRequest) -> Result<NetworkPath, TraceError> {
        self.trace_with_stats(request, &Call::default())
            .await
            .map(|(path, _)| path)
    }

    /// Runs one trace as `call` says and also says what it took (probes,
    /// answers by kind, not-sent probes, ignored packets), for metrics: the
    /// stats of each plan it ran (the trace, then the end-to-end probes
    /// when asked for).
    pub async fn trace_with_stats(
        &self,
        request: &TraceRequest,
        call: &Call,
    ) -> Result<(NetworkPath, Vec<TraceStats>), TraceError> {
        self.run_trace(request, call, None).await
    }

    /// [`trace_with_stats`](Self::trace_with_stats), publishing progress
    /// to `progress` as [`trace_live`](Self::trace_live) does.
    pub async fn trace_observed(
        &self,
        request: &TraceRequest,
        call: &Call,
        progress: Option<&ProgressSender>,
    ) -> Result<(NetworkPath, Vec<TraceStats>), TraceError> {
        self.run_trace(request, call, progress).await
    }

    /// Runs one trace, publishing how far it has got to `progress` each
    /// time a probe settles (single-flow traces; multi-flow, MDA and PMTU
    /// traces publish nothing until they end). The last snapshot is what a
    /// caller that stops waiting (Ctrl-C) can still report.
    pub async fn trace_live(
        &self,
        request: &TraceRequest,
        progress: &ProgressSender,
    ) -> Result<NetworkPath, TraceError> {
        self.run_trace(request, &Call::default(), Some(progress))
            .await
            .map(|(path, _)| path)
    }

    /// The reverse DNS resolver traces use (its cache is shared).
    pub fn reverse_dns(&self) -> &ReverseDns {
        &self.rdns
    }

    async fn run_trace(
        &self,
        request: &TraceRequest,
        call: &Call,
        progress: Option<&ProgressSender>,
    ) -> Result<(NetworkPath, Vec<TraceStats>), TraceError> {
        validate(request)?;
        let started = std::time::Instant::now();
        let target = match call.resolved {
            Some(addr) => addr,
            None => target_of(request).await?,
        };
        let route = self.routes.lookup_pinned(target, &request.egress).await?;
        tracing::debug!(ms = ms_since(started), "resolved and routed");
        self.capture.watch_interface(&route.interface.name)?;
        if let Some(name) = &route.source_interface {
            self.capture.watch_interface(name)?;
        }
        tracing::debug!(ms = ms_since(started), "capture attached");
        let port = request
            .port
            .or(request.protocol.default_port().map(|p| p.0))
            .unwrap_or(0);
        let job = Job {
            request,
            call,
            route: &route,
            target,
            port,
            test_run_id: Uuid::new_v4(),
            progress,
            probe_size: None,
        };
        let probing = async {
            match request.mode {
                Mode::Mda(multipath) => self.mda(&job, multipath).await,
                Mode::Pmtu => self.pmtu(&job).await,
                Mode::Flows(_)
                    if request.protocol == Protocol::Tcp && request.tcp_method.by_connect() =>
                {
                    let runs = connect_runs(request, job.route, job.target, job.port).await?;
                    let outcome = FlowOutcome::by_connect(&runs);
                    Ok((runs, vec![outcome], None))
                }
                Mode::Flows(flows) => {
                    let flows = usize::from(flows);
                    let outcomes = self
                        .probe_flows(
                            &job,
                            &consecutive_ids(flows, request.flow_id),
                            (request.first_ttl, request.max_ttl),
                            request.queries,
                            None,
                        )
                        .await?;
                    let runs: Vec<Run> = outcomes.iter().flat_map(|o| o.runs.clone()).collect();
                    let graph = (flows > 1).then(|| {
                        graph_of(&job, &outcomes, request.first_ttl.get())
                            .to_record("flows", None, true)
                    });
                    Ok((runs, outcomes, graph))
                }
            }
        };
        // End-to-end probes run beside the trace, spread over its window.
        let end_to_end = async {
            if request.e2e_queries == 0 {
                return Ok(None);
            }
            self.e2e(&job).await.map(Some)
        };
        let ((mut runs, outcomes, graph), e2e) = tokio::try_join!(probing, end_to_end)?;
        tracing::debug!(
            ms = ms_since(started),
            flows = outcomes.len(),
            "probing done"
        );
        let mut stats: Vec<TraceStats> = outcomes.iter().map(|o| o.stats.clone()).collect();
        let e2e_probe = match e2e {
            Some((probe, e2e_stats)) => {
                stats.push(e2e_stats);
                probe
            }
            None => E2eProbe::from_samples(&[]),
        };
        if request.reverse_dns {
            self.fill_reverse_dns(&mut runs).await;
        }
        for run in &mut runs {
            run.fingerprint = Some(graph::run_fingerprint(run));
        }
        let path_fingerprint =
            graph::set_fingerprint(runs.iter().filter_map(|r| r.fingerprint.as_deref()));
        let protocol = request.protocol;
        let mut path = self.record(&job, runs, e2e_probe);
        path.probing = Some(Probing::sum(outcomes.iter().map(|o| &o.probing)));
        if protocol == Protocol::Tcp {
            let inside = outcomes.iter().any(|o| o.in_connection);
            let method = match (request.tcp_method.by_connect(), inside) {
                (true, _) => "syn_socket",
                (_, true) => "sack",
                _ => "syn",
            };
            path.tcp_method = Some(method.to_string());
        }
        path.multipath = graph;
        path.path_fingerprint = Some(path_fingerprint);
        Ok((path, stats))
    }

    /// Traces `count` flows at once over the TTLs `(first, last)`, each with
    /// `attempts` runs. With `first_id`, flow i takes id `first_id + i`
    /// (reproducible flows); otherwise ids are random.
    async fn probe_flows(
        &self,
        job: &Job<'_>,
        ids: &[Option<u16>],
        (first_ttl, max_ttl): (Ttl, Ttl),
        attempts: u8,
        window: Option<usize>,
    ) -> Result<Vec<FlowOutcome>, TraceError> {
        let count = ids.len();
        let plan = Plan {
            first_ttl,
            max_ttl,
            attempts,
            ..Plan::of(job.request)
        };
        // Each flow's deadline covers what the routers owe all of them.
        let flows = u16::try_from(count).unwrap_or(u16::MAX);
        let deadline = job.call.deadline_of(&plan, self.knowledge.prior(), flows);
        let branching = match job.request.mode {
            Mode::Flows(_) => count > 1,
            mode => mode.branches(),
        };
        let mut opened = Vec::with_capacity(count);
        for &pinned in ids {
            opened.push(self.open_any_flow(job, pinned).await?);
        }
        let method = self.capture.method();
        let flows = opened
            .into_iter()
            .map(|(flow, mut subscription, reservation)| {
                async move {
                    let run_ids: Vec<Uuid> = (0..attempts).map(|_| Uuid::new_v4()).collect();
                    let id = flow_id(&flow);
                    let observers = run_ids
                        .iter()
                        .map(|run_id| Observer {
                            test_run_id: job.test_run_id,
                            run_id: *run_id,
                            protocol: job.request.protocol,
                            destination: job.target,
                            flow_id: id,
                        })
                        .collect();
                    let mut setup = self.setup(job, plan, branching, flow, observers);
                    if let Some(window) = window {
                        setup.policy.window = window;
                    }
                    // One flow can be watched live: its runs are the record.
                    let live = job.progress.filter(|_| count == 1);
                    let mut settled = usize::MAX;
                    let mut observe = |prober: &Prober| {
                        let Some(progress) = live else { return };
                        if prober.settled() == settled {
                            return;
                        }
                        settled = prober.settled();
                        let mut runs = runs_of(prober, method.into(), MonotonicTime::now());
                        for (run, run_id) in runs.iter_mut().zip(&run_ids) {
                            run.run_id = *run_id;
                            run.flow_id = Some(id);
                        }
                        let mut path = self.record(job, runs, E2eProbe::from_samples(&[]));
                        path.incomplete = true;
                        progress.send_replace(Some(Progress {
                            path,
                            settled_through: prober.settled_through().map(Ttl::get),
                        }));
                    };
                    let prober = self
                        .run_plan(job, setup, deadline, &mut subscription, &mut observe)
                        .await?;
                    drop(subscription);
                    drop(reservation);
                    log_outcome(&job.request.host, &prober);
                    let mut runs = runs_of(&prober, method.into(), MonotonicTime::now());
                    for (run, run_id) in runs.iter_mut().zip(&run_ids) {
                        run.run_id = *run_id;
                        run.flow_id = Some(id);
                    }
                    DistanceUncertain::mark(&mut runs);
                    Ok::<_, TraceError>(FlowOutcome {
                        flow_id: id,
                        in_connection: prober.flow().connection().is_some(),
                        runs,
                        stats: prober.stats().clone(),
                        probing: probing_of(&prober),
                    })
                }
            });
        futures_util::future::join_all(flows)
            .await
            .into_iter()
            .collect()
    }

    /// End-to-end probes over a flow of their own: `e2e_queries` probes at
    /// `max_ttl`, spaced over one timeout, one sample each.
    async fn e2e(&self, job: &Job<'_>) -> Result<(E2eProbe, TraceStats), TraceError> {
        let plan = Plan::e2e_of(job.request);
        let deadline = job.call.deadline_of(&plan, self.knowledge.prior(), 1);
        let (flow, mut subscription, _reservation) = self.open_flow(job, None)?;
        let mut setup = self.setup(job, plan, false, flow, Vec::new());
        setup.policy.adaptive_waits = false;
        let prober = self
            .run_plan(job, setup, deadline, &mut subscription, &mut |_| {})
            .await?;
        Ok((
            E2eProbe::from_samples(&e2e_samples(&prober)),
            prober.stats().clone(),
        ))
    }

    /// The prober's setup for `plan` over `flow`, one of the job's flows
    /// (`branching`: one of several that may cross different routers).
    fn setup(
        &self,
        job: &Job<'_>,
        plan: Plan,
        branching: bool,
        flow: ProbeFlow,
        observers: Vec<Observer>,
    ) -> Setup {
        let request = job.request;
        let mut policy = self.policy;
        if let Some(window) = request.window {
            policy.window = usize::from(window);
        }
        if let Some((here, near)) = request.wait_factors {
            policy.here = here;
            policy.near = near;
            policy.traceroute_waits = true;
        }
        Setup {
            plan,
            policy,
            flow,
            origin: origin_of(job.route),
            // Set when admitted.
            deadline: MonotonicTime::now(),
            observers,
            branching,
        }
    }

    /// Admits one plan of the job and drives it to its end, `deadline`
    /// after it was admitted at most.
    async fn run_plan(
        &self,
        job: &Job<'_>,
        setup: Setup,
        deadline: Duration,
        subscription: &mut FlowSubscription,
        observe: &mut (dyn FnMut(&Prober) + Send),
    ) -> Result<Prober, TraceError> {
        let via = job.request.egress.is_pinned().then_some(SendVia {
            ifindex: setup.origin.ifindex,
            source: setup.origin.source,
        });
        let mut prober = self.admit(setup, deadline, job.call.admission_wait).await?;
        let mut network = LiveNetwork {
            sender: &self.sender,
            via,
            subscription,
            news: self.share.subscribe(),
            grown: self.knowledge.subscribe(),
            closed: false,
        };
        engine::drive_observed(&mut prober, &mut network, self.shared(), observe)
            .await
            .map_err(TraceError::Send)?;
        Ok(prober)
    }
}

fn ms_since(t: std::time::Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn validate(request: &TraceRequest) -> Result<(), TraceError> {
    if request.queries == 0 || request.queries > prober::MAX_ATTEMPTS {
        return Err(TraceError::InvalidRequest(format!(
            "queries must be 1..={}",
            prober::MAX_ATTEMPTS
        )));
    }
    if request.first_ttl > request.max_ttl {
        return Err(TraceError::InvalidRequest(
            "the first TTL is above the maximum TTL".into(),
        ));
    }
    if let Some(conflict) = request.pmtu_conflict() {
        return Err(TraceError::InvalidRequest(conflict.into()));
    }
    if let Some(conflict) = request.flow_conflict() {
        return Err(TraceError::InvalidRequest(conflict));
    }
    if let Some(conflict) = request.sack_conflict() {
        return Err(TraceError::InvalidRequest(conflict));
    }
    request.egress.check().map_err(TraceError::InvalidRequest)
}

fn origin_of(route: &Route) -> Origin {
    Origin {
        source: route.source,
        ifindex: route.interface.index,
        gateway: route.gateway,
    }
}

/// What one trace works on: the request and where it goes.
struct Job<'a> {
    request: &'a TraceRequest,
    call: &'a Call,
    route: &'a Route,
    target: IpAddr,
    port: u16,
    test_run_id: Uuid,
    /// Where a live trace publishes its progress.
    progress: Option<&'a ProgressSender>,
    /// Every probe this many bytes (IP header included), padded; `None`:
    /// as small as they come. Set per round by path MTU discovery: a
    /// property of the run, not of what was asked.
    probe_size: Option<u16>,
}

/// How far a running trace has got (see [`Tracer::trace_live`]).
#[derive(Clone, Debug)]
pub struct Progress {
    /// The record so far, marked `incomplete`: probes not settled yet are
    /// `no_answer: cut_short` (not given their full wait), never silent.
    pub path: NetworkPath,
    /// Every attempt at this TTL and at all TTLs below it is settled: the
    /// rows up to here will not change.
    pub settled_through: Option<u8>,
}

/// The sending half of a live trace's progress.
pub type ProgressSender = tokio::sync::watch::Sender<Option<Progress>>;

/// One flow's share of a trace.
struct FlowOutcome {
    flow_id: u16,
    /// Probed inside a TCP connection (`sack`).
    in_connection: bool,
    runs: Vec<Run>,
    stats: TraceStats,
    probing: Probing,
}

impl FlowOutcome {
    /// The outcome of `syn_socket` runs: one probe per hop each, nothing
    /// held back.
    fn by_connect(runs: &[Run]) -> FlowOutcome {
        let probes_sent = runs.iter().map(|r| r.hops.len() as u64).sum();
        FlowOutcome {
            flow_id: runs.first().and_then(|r| r.flow_id).unwrap_or(0),
            in_connection: false,
            runs: runs.to_vec(),
            stats: TraceStats {
                probes_sent,
                ..TraceStats::default()
            },
            probing: Probing {
                probes_sent,
                ..Probing::default()
            },
        }
    }
}

/// The address the request's host resolves to.
async fn target_of(request: &TraceRequest) -> Result<IpAddr, TraceError> {
    Ok(
        resolve_target(&request.host, request.family, RESOLVE_TIMEOUT)
            .await?
            .addr,
    )
}
