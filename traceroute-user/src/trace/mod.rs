//! A trace from request to `NetworkPath`: resolve the target, look up the route,
//! reserve a flow, probe (see [`engine`]), and assemble the record.

pub mod budget;
pub mod connection;
pub mod dgram;
pub mod engine;
pub mod knowledge;
pub mod lag;
pub mod mda;
pub mod pmtu;
pub mod ports;
pub mod prober;
pub mod request;
#[cfg(test)]
mod scenarios;
pub mod sender;
pub mod share;
#[cfg(test)]
pub mod sim;
pub mod syn_socket;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use uuid::Uuid;

use crate::capture::{Capture, CaptureError, CaptureMode, FlowSubscription};
use crate::clock::MonotonicTime;
use crate::error::ErrorCode;
use crate::path::graph::{self, FlowPath, Graph, PathGraph};
use crate::path::{
    AttemptOutcome, CaptureInfo, DistanceUncertain, E2eProbe, Hop, HopObservation,
    Interface as PathInterface, NetworkPath, NoAnswer, PathDestination, PathSource, Probing, Run,
    SharedHop, TimestampSource, Via,
};
use crate::probe::{FlowSecret, ProbeFlow, ProbeId, Protocol, Ttl};
use crate::resolve::{ResolveError, ReverseDns, resolve_target};
use crate::route::{Route, RouteCache, RouteError};
use crate::sync::LockExt;
use budget::{ProbeRail, Rate};
use engine::LiveNetwork;
use knowledge::{Knowledge, Origin, RouterKey};
use mda::Confidence;
pub use prober::{Ignored, Plan, Policy, ProbeKey, TraceStats};
use prober::{Prober, Setup, Status};
pub use request::{RESOLVE_TIMEOUT, TcpMethod, TraceRequest};
use sender::{ProbeSender, SendVia};
use share::{HopShare, Observer, ShareConfig};

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error("sending probes: {0}")]
    Send(#[source] std::io::Error),
    #[error("reserving a source port: {0}")]
    Port(#[source] std::io::Error),
    #[error("tcp_method sack: {0}")]
    Connection(#[from] connection::ConnectionError),
    #[error(
        "the routers on this path are answering other traces: this one could not finish in time (try again in {} s)",
        retry_after.as_secs().max(1)
    )]
    Busy { retry_after: Duration },
    /// A trace without privilege that the system does not allow (a datagram
    /// ICMP socket outside `net.ipv4.ping_group_range`).
    #[error("{0}")]
    Unprivileged(String),
}

impl TraceError {
    /// Which privilege was missing, and for what, when one was.
    pub fn missing_privilege(&self) -> Option<&'static str> {
        let denied =
            |e: &std::io::Error| matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES));
        match self {
            TraceError::Send(e) if denied(e) => Some("sending raw probes needs CAP_NET_RAW"),
            TraceError::Capture(CaptureError::Socket(e)) if denied(e) => {
                Some("socket capture (packet sockets) needs CAP_NET_RAW")
            }
            TraceError::Capture(e) if e.is_permission() => {
                Some("the eBPF capture needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN")
            }
            _ => None,
        }
    }

    /// The error code of the HTTP API contract (README, "HTTP API").
    pub fn code(&self) -> ErrorCode {
        match self {
            TraceError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            TraceError::Resolve(e) => e.code(),
            TraceError::Route(e) => e.code(),
            TraceError::Capture(_) => ErrorCode::Unknown,
            TraceError::Busy { .. } => ErrorCode::Busy,
            TraceError::Unprivileged(_) => ErrorCode::Denied,
            TraceError::Connection(e) => match e {
                connection::ConnectionError::Refused | connection::ConnectionError::NoSack => {
                    ErrorCode::NotSupported
                }
                connection::ConnectionError::Timeout(_) => ErrorCode::Timeout,
                connection::ConnectionError::Io(_) => ErrorCode::Unknown,
            },
            TraceError::Send(e) | TraceError::Port(e) => match e.raw_os_error() {
                Some(libc::EPERM | libc::EACCES) => ErrorCode::Denied,
                Some(libc::ENETUNREACH) => ErrorCode::Netunreach,
                Some(libc::EHOSTUNREACH) => ErrorCode::Hostunreach,
                _ => ErrorCode::Unknown,
            },
        }
    }
}

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

/// How many times a flow is re-drawn when another trace holds it.
const FLOW_ATTEMPTS: usize = 16;
/// How often a trace waiting for admission looks again.
const ADMISSION_RECHECK: Duration = Duration::from_millis(250);

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

    /// Runs one trace.
    pub async fn trace(&self, request: &TraceRequest) -> Result<NetworkPath, TraceError> {
        self.trace_with_stats(request).await.map(|(path, _)| path)
    }

    /// Runs one trace and also says what it took (probes, answers by kind,
    /// not-sent probes, ignored packets), for metrics.
    /// The trace and the stats of each plan it ran (the trace, then the
    /// end-to-end probes when asked for).
    pub async fn trace_with_stats(
        &self,
        request: &TraceRequest,
    ) -> Result<(NetworkPath, Vec<TraceStats>), TraceError> {
        self.run_trace(request, None).await
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
        self.run_trace(request, Some(progress))
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
        progress: Option<&ProgressSender>,
    ) -> Result<(NetworkPath, Vec<TraceStats>), TraceError> {
        validate(request)?;
        let started = std::time::Instant::now();
        let target = target_of(request).await?;
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
            route: &route,
            target,
            port,
            test_run_id: Uuid::new_v4(),
            progress,
        };
        let probing = async {
            match request.multipath {
                Some(confidence) => self.mda(&job, confidence).await,
                None if request.pmtu => self.pmtu(&job).await,
                None if request.protocol == Protocol::Tcp && request.tcp_method.by_connect() => {
                    let runs = connect_runs(request, job.route, job.target, job.port).await?;
                    let outcome = FlowOutcome::by_connect(&runs);
                    Ok((runs, vec![outcome], None))
                }
                None => {
                    let flows = usize::from(request.paths);
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

    /// A record of `runs` for `job`: source, destination, capture.
    fn record(&self, job: &Job<'_>, runs: Vec<Run>, e2e_probe: E2eProbe) -> NetworkPath {
        let protocol = job.request.protocol;
        let mut path = NetworkPath::new(
            protocol,
            PathSource {
                hostname: self.hostname.clone(),
                via: Some(via_of(job.route)),
                public_ip: None,
            },
            PathDestination {
                hostname: job.request.host.clone(),
                port: if protocol == Protocol::Icmp {
                    0
                } else {
                    job.port
                },
            },
            runs,
            e2e_probe,
        );
        path.test_run_id = job.test_run_id;
        path.capture = Some(CaptureInfo {
            method: self.capture.method(),
        });
        path
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
        // Each flow's deadline covers what the routers owe all of them.
        let request = TraceRequest {
            first_ttl,
            max_ttl,
            queries: attempts,
            paths: u16::try_from(count).unwrap_or(u16::MAX),
            ..job.request.clone()
        };
        let mut opened = Vec::with_capacity(count);
        for &pinned in ids {
            opened.push(self.open_any_flow(job, pinned).await?);
        }
        let origin = origin_of(job.route);
        let method = self.capture.method();
        let flows = opened
            .into_iter()
            .map(|(flow, mut subscription, reservation)| {
                let request = &request;
                async move {
                    let run_ids: Vec<Uuid> = (0..attempts).map(|_| Uuid::new_v4()).collect();
                    let id = flow_id(&flow);
                    let observers = run_ids
                        .iter()
                        .map(|run_id| Observer {
                            test_run_id: job.test_run_id,
                            run_id: *run_id,
                            protocol: request.protocol,
                            destination: job.target,
                            flow_id: id,
                        })
                        .collect();
                    let mut setup = self.setup(request, flow, origin, observers);
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
                        .run_plan(request, setup, &mut subscription, &mut observe)
                        .await?;
                    drop(subscription);
                    drop(reservation);
                    log_outcome(&request.host, &prober);
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

    /// MDA: rounds of flows until every router had enough flows through it
    /// to rule out one more next hop, or the flow budget is spent.
    async fn mda(
        &self,
        job: &Job<'_>,
        confidence: Confidence,
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
            let beyond = scout.probing.probes_sent.saturating_sub(to_destination);
            // Its own port unreachable at the destination TTL is not beyond.
            let unreachables = scout.stats.answers.get("dest_unreachable").copied();
            let answered_beyond = unreachables.unwrap_or(0).saturating_sub(1).min(beyond);
            let key = RouterKey::TraceHop(job.test_run_id.as_u128(), ttl);
            let now = MonotonicTime::now();
            // Each took a token, answered or not; one unanswered says it
            // had none left then.
            self.knowledge
                .charge(key, u32::try_from(answered_beyond).unwrap_or(u32::MAX), now);
            if answered_beyond < beyond {
                self.knowledge.empty_since(key, now, now);
            }
        }
        let plan = mda::Mda {
            confidence,
            first_ttl: first_ttl.get(),
            max_ttl: max_ttl.get(),
            max_flows: request::MDA_MAX_FLOWS,
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
        let record = graph.to_record("mda", Some(confidence.value()), plan.complete(&graph));
        let mut runs = runs_by_flow(&outcomes);
        fill_skipped_prefix(&mut runs, first_ttl, job);
        Ok((runs, outcomes, Some(record)))
    }

    /// Path MTU discovery: rounds of one flow, the first at the interface
    /// MTU, each next one from the first TTL that did not fit, at the MTU
    /// reported there (see [`pmtu`]). Every round uses the same flow id, so
    /// the same path.
    async fn pmtu(
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
        for _ in 0..pmtu::MAX_ROUNDS {
            let round_request = TraceRequest {
                probe_size: Some(size as u16),
                ..request.clone()
            };
            // Rounds re-probe TTLs: no live view of them.
            let round_job = Job {
                request: &round_request,
                progress: None,
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
            pmtu::stamp(&mut runs, size);
            outcomes.extend(round);
            if merged.is_empty() {
                merged = runs;
            } else {
                pmtu::merge(&mut merged, runs, from_ttl.get());
            }
            let reports = pmtu::reports(&merged);
            pmtu::mark_reporters(&mut merged, &reports);
            let (Some(first), Some(next)) = (reports.first(), pmtu::next_size(size, &reports, min))
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
        if pmtu::reports(&merged).is_empty() {
            for outcome in &mut outcomes {
                outcome.probing.degraded.retain(|r| r != "too_big");
                outcome.stats.degraded.retain(|r| *r != "too_big");
            }
        }
        Ok((merged, outcomes, None))
    }

    /// End-to-end probes over a flow of their own: `e2e_queries` probes at
    /// `max_ttl`, spaced over one timeout, one sample each.
    async fn e2e(&self, job: &Job<'_>) -> Result<(E2eProbe, TraceStats), TraceError> {
        let e2e = job.request.e2e();
        let (flow, mut subscription, _reservation) = self.open_flow(job, None)?;
        let mut setup = self.setup(&e2e, flow, origin_of(job.route), Vec::new());
        setup.policy.adaptive_waits = false;
        let prober = self
            .run_plan(&e2e, setup, &mut subscription, &mut |_| {})
            .await?;
        Ok((
            E2eProbe::from_samples(&e2e_samples(&prober)),
            prober.stats().clone(),
        ))
    }

    /// The prober's setup for `request` over `flow`.
    fn setup(
        &self,
        request: &TraceRequest,
        flow: ProbeFlow,
        origin: Origin,
        observers: Vec<Observer>,
    ) -> Setup {
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
            plan: Plan {
                first_ttl: request.first_ttl,
                max_ttl: request.max_ttl,
                attempts: request.queries,
                timeout: request.timeout,
                spacing: request.spacing,
            },
            policy,
            flow,
            origin,
            // Set when admitted.
            deadline: MonotonicTime::now(),
            observers,
            branching: request.paths > 1 || request.multipath.is_some(),
        }
    }

    /// Admits one plan and drives it to its end.
    async fn run_plan(
        &self,
        request: &TraceRequest,
        setup: Setup,
        subscription: &mut FlowSubscription,
        observe: &mut (dyn FnMut(&Prober) + Send),
    ) -> Result<Prober, TraceError> {
        let via = request.egress.is_pinned().then_some(SendVia {
            ifindex: setup.origin.ifindex,
            source: setup.origin.source,
        });
        let mut prober = self.admit(request, setup).await?;
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

    /// The total deadline a request gets with this tracer's router budgets.
    pub fn deadline_for(&self, request: &TraceRequest) -> Duration {
        request.total_deadline(self.knowledge.prior())
    }

    /// Admits a trace unless responders it will ask are known to be at
    /// their limit (or the probe rail is backed up) so that its probes could
    /// not leave before its deadline; then it waits up to `admission_wait`
    /// for them, and is refused after that. Nothing known, nothing refused:
    /// a prior is not a limit. The check and the reservation of the first
    /// window are one step, so two traces arriving together cannot both
    /// count on the same budget. The record says how long it waited.
    async fn admit(&self, request: &TraceRequest, setup: Setup) -> Result<Prober, TraceError> {
        let deadline = request.total_deadline(self.knowledge.prior());
        let arrived = tokio::time::Instant::now();
        let waited_until = arrived + request.admission_wait;
        let mut setup = Some(setup);
        let mut waited = false;
        loop {
            let wait = {
                let _admission = self.admission.locked();
                let wait = self.predicted_wait(request, setup.as_ref().expect("kept").origin);
                // Room for the probes' own waits after the last one leaves.
                if wait + request.timeout <= deadline {
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

    /// How long the request's first probes would wait for responders known
    /// to be at their limit, and for the rail, if it started now.
    fn predicted_wait(&self, request: &TraceRequest, origin: Origin) -> Duration {
        let now = MonotonicTime::now();
        let routers = Ttl::range(request.first_ttl, request.max_ttl)
            .filter_map(|ttl| {
                self.knowledge
                    .limited_wait(RouterKey::Position(origin, ttl), now)
            })
            .max()
            .unwrap_or_default();
        let hops = u32::from(request.max_ttl.get() - request.first_ttl.get()) + 1;
        let attempts = u32::from(request.queries);
        routers.max(self.rail.backlog(now, hops * attempts))
    }

    /// Picks a flow no other trace uses and registers it with the capture.
    /// Reserves a flow to the job's target (a source port, or an echo
    /// identifier), `pinned` when given, and registers it with the capture.
    /// A flow as the request's TCP method wants it: inside a connection for
    /// `sack` (and `prefer_sack` when the destination allows it), else a
    /// flow of its own.
    async fn open_any_flow(
        &self,
        job: &Job<'_>,
        pinned: Option<u16>,
    ) -> Result<(ProbeFlow, FlowSubscription, FlowHold), TraceError> {
        let method = job.request.tcp_method;
        if job.request.protocol != Protocol::Tcp || method == TcpMethod::Syn {
            return self.open_flow(job, pinned);
        }
        match self.open_in_connection(job, pinned).await {
            Err(TraceError::Connection(e)) if method == TcpMethod::PreferSack && e.falls_back() => {
                tracing::debug!(
                    host = job.request.host,
                    "prefer_sack: {e}; probing with SYNs"
                );
                self.open_flow(job, pinned)
            }
            other => other,
        }
    }

    /// A TCP flow inside a connection the kernel opens to the destination
    /// (see [`connection`]).
    async fn open_in_connection(
        &self,
        job: &Job<'_>,
        pinned: Option<u16>,
    ) -> Result<(ProbeFlow, FlowSubscription, FlowHold), TraceError> {
        let source = SocketAddr::new(job.route.source, pinned.unwrap_or(0));
        let device = job.request.egress.interface.as_deref();
        let (socket, port) =
            connection::bind(source, device).map_err(|e| match (pinned, e.kind()) {
                (Some(p), std::io::ErrorKind::AddrInUse) => {
                    TraceError::InvalidRequest(format!("source port {p} is in use"))
                }
                _ => TraceError::Port(e),
            })?;
        let destination = SocketAddr::new(job.target, job.port);
        let flow = ProbeFlow::tcp(SocketAddr::new(job.route.source, port), destination)
            .map_err(|e| TraceError::InvalidRequest(e.to_string()))?
            .with_secret(flow_secret(job.request));
        let mut subscription = self.capture.register(flow.flow_key())?;
        self.capture.want_tcp_acks(&mut subscription)?;
        let handshake = (job.request.timeout * 2).max(Duration::from_secs(1));
        let open = connection::open(socket, destination, &mut subscription, handshake).await?;
        let flow = flow.in_connection(open.connection);
        Ok((flow, subscription, FlowHold::Connection { _open: open }))
    }

    fn open_flow(
        &self,
        job: &Job<'_>,
        pinned: Option<u16>,
    ) -> Result<(ProbeFlow, FlowSubscription, FlowHold), TraceError> {
        let (protocol, route, target) = (job.request.protocol, job.route, job.target);
        let mut last_err = None;
        for _ in 0..FLOW_ATTEMPTS {
            let (flow, reservation) = match protocol {
                Protocol::Icmp => {
                    let id = pinned.unwrap_or_else(random_u16);
                    let flow = ProbeFlow::icmp(route.source, target, id);
                    (flow, None)
                }
                Protocol::Tcp | Protocol::Udp => {
                    let r = ports::reserve_port(protocol, route.source, pinned.unwrap_or(0))
                        .map_err(|e| match (pinned, e.kind()) {
                            (Some(p), std::io::ErrorKind::AddrInUse) => {
                                TraceError::InvalidRequest(format!("source port {p} is in use"))
                            }
                            _ => TraceError::Port(e),
                        })?;
                    let src = SocketAddr::new(route.source, r.port);
                    let dst = SocketAddr::new(target, job.port);
                    let flow = if protocol == Protocol::Tcp {
                        ProbeFlow::tcp(src, dst)
                    } else {
                        ProbeFlow::udp(src, dst)
                    };
                    (flow, Some(r))
                }
            };
            let mut flow = flow
                .map_err(|e| TraceError::InvalidRequest(e.to_string()))?
                .with_secret(flow_secret(job.request));
            if let Some(size) = job.request.probe_size {
                flow = flow
                    .with_size(size)
                    .map_err(|e| TraceError::InvalidRequest(e.to_string()))?;
            }
            match self.capture.register(flow.flow_key()) {
                Ok(sub) => {
                    let hold = reservation
                        .map_or(FlowHold::Nothing, |r| FlowHold::Port { _reservation: r });
                    return Ok((flow, sub, hold));
                }
                Err(e @ CaptureError::FlowInUse(_)) if pinned.is_none() => last_err = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last_err.expect("loop ran").into())
    }

    async fn fill_reverse_dns(&self, runs: &mut [Run]) {
        for run in runs {
            if let Some(name) = self.rdns.lookup(run.destination.ip_address).await {
                run.destination.reverse_dns = vec![name];
            }
            for hop in &mut run.hops {
                if let Some(ip) = hop.ip_address
                    && let Some(name) = self.rdns.lookup(ip).await
                {
                    hop.reverse_dns = vec![name];
                }
            }
        }
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
    request.egress.check().map_err(TraceError::InvalidRequest)
}

fn origin_of(route: &Route) -> Origin {
    Origin {
        source: route.source,
        ifindex: route.interface.index,
        gateway: route.gateway,
    }
}

/// What identifies a flow besides its addresses: the source port, or the
/// echo identifier.
pub(crate) fn flow_id(flow: &ProbeFlow) -> u16 {
    flow.source_port()
        .map(|p| p.0)
        .or(flow.icmp_identifier())
        .unwrap_or(0)
}

/// One run per attempt: per TTL up to where the path ended, what came back.
/// Probes in flight for an MDA trace's scout flow.
const SCOUT_WINDOW: usize = 2;

/// What one trace works on: the request and where it goes.
struct Job<'a> {
    request: &'a TraceRequest,
    route: &'a Route,
    target: IpAddr,
    port: u16,
    test_run_id: Uuid,
    /// Where a live trace publishes its progress.
    progress: Option<&'a ProgressSender>,
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

/// What keeps a flow's source port ours while it runs (dropped with it).
enum FlowHold {
    /// ICMP: the echo identifier needs nothing held.
    Nothing,
    Port {
        _reservation: ports::PortReservation,
    },
    Connection {
        _open: connection::OpenConnection,
    },
}

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

/// `queries` runs of `syn_socket` probes (see [`syn_socket`]).
async fn connect_runs(
    request: &TraceRequest,
    route: &Route,
    target: IpAddr,
    port: u16,
) -> Result<Vec<Run>, TraceError> {
    let destination = SocketAddr::new(target, port);
    socket_runs(request, route, destination, |source, plan| async move {
        syn_socket::run(source, destination, plan)
            .await
            .map_err(TraceError::Send)
    })
    .await
}

/// `queries` runs of datagram probes without privilege (see [`dgram`]).
async fn dgram_runs(
    kind: dgram::Kind,
    request: &TraceRequest,
    route: &Route,
    target: IpAddr,
    port: u16,
) -> Result<Vec<Run>, TraceError> {
    let destination = SocketAddr::new(target, port);
    socket_runs(request, route, destination, |source, plan| async move {
        dgram::run(kind, source, destination, plan)
            .await
            .map_err(|e| match dgram::explain(kind, &e) {
                Some(why) => TraceError::Unprivileged(why),
                None => TraceError::Send(e),
            })
    })
    .await
}

/// `queries` runs by ordinary sockets, one probe at a time, each from a
/// source port or echo id of its own (the request's flow id for the first,
/// when set); `run` probes one run from a source and says which port or id
/// it got.
async fn socket_runs<F, Fut>(
    request: &TraceRequest,
    route: &Route,
    destination: SocketAddr,
    run: F,
) -> Result<Vec<Run>, TraceError>
where
    F: Fn(SocketAddr, syn_socket::Plan) -> Fut,
    Fut: Future<Output = Result<(u16, Vec<HopObservation>), TraceError>>,
{
    let plan = syn_socket::Plan {
        first_ttl: request.first_ttl,
        max_ttl: request.max_ttl,
        timeout: request.timeout,
        device: request.egress.interface.clone(),
    };
    let mut runs = Vec::new();
    for attempt in 0..request.queries {
        let pinned = request
            .flow_id
            .map_or(0, |id| id.wrapping_add(u16::from(attempt)));
        let (id, observations) = run(SocketAddr::new(route.source, pinned), plan.clone()).await?;
        let mut traced = Run::from_observations(
            SocketAddr::new(route.source, id),
            destination,
            &observations,
        );
        traced.flow_id = Some(id);
        runs.push(traced);
    }
    Ok(runs)
}

/// The address to trace: the one the caller resolved, or the host's.
async fn target_of(request: &TraceRequest) -> Result<IpAddr, TraceError> {
    Ok(match request.resolved {
        Some(addr) => addr,
        None => {
            resolve_target(&request.host, request.family, RESOLVE_TIMEOUT)
                .await?
                .addr
        }
    })
}

/// A `tcp_method=syn_socket` trace without a [`Tracer`]: no capture, no raw
/// socket, so no privilege — what the CLI runs for `--tcp-method
/// syn_socket`. Reverse DNS and end-to-end probes are not part of it.
pub async fn trace_unprivileged(request: &TraceRequest) -> Result<NetworkPath, TraceError> {
    validate(request)?;
    if request.paths > 1 || request.multipath.is_some() || request.pmtu {
        return Err(TraceError::InvalidRequest(
            "tracing without privilege probes one flow: no paths, multipath or pmtu".into(),
        ));
    }
    let target = target_of(request).await?;
    let route = RouteCache::new()
        .await?
        .lookup_pinned(target, &request.egress)
        .await?;
    let port = request
        .port
        .or(request.protocol.default_port().map(|p| p.0))
        .unwrap_or(0);
    let protocol = request.protocol;
    let mut runs = match protocol {
        Protocol::Tcp => connect_runs(request, &route, target, port).await?,
        Protocol::Udp => dgram_runs(dgram::Kind::Udp, request, &route, target, port).await?,
        Protocol::Icmp => dgram_runs(dgram::Kind::Icmp, request, &route, target, 0).await?,
    };
    for run in &mut runs {
        run.fingerprint = Some(graph::run_fingerprint(run));
    }
    let path_fingerprint =
        graph::set_fingerprint(runs.iter().filter_map(|r| r.fingerprint.as_deref()));
    let outcome = FlowOutcome::by_connect(&runs);
    let mut path = NetworkPath::new(
        protocol,
        PathSource {
            hostname: hostname(),
            via: Some(via_of(&route)),
            public_ip: None,
        },
        PathDestination {
            hostname: request.host.clone(),
            port: if protocol == Protocol::Icmp { 0 } else { port },
        },
        runs,
        E2eProbe::from_samples(&[]),
    );
    if protocol == Protocol::Tcp {
        path.tcp_method = Some("syn_socket".into());
    }
    path.probing = Some(outcome.probing);
    path.path_fingerprint = Some(path_fingerprint);
    Ok(path)
}

/// The path graph of the flows so far.
fn graph_of(job: &Job<'_>, outcomes: &[FlowOutcome], first_ttl: u8) -> Graph {
    Graph::build(job.route.source, first_ttl, &flow_paths(outcomes))
}

/// `count` flow ids from `first` on (wrapping), or `count` random ones.
fn consecutive_ids(count: usize, first: Option<u16>) -> Vec<Option<u16>> {
    (0..count)
        .map(|i| first.map(|id| id.wrapping_add(i as u16)))
        .collect()
}

/// One path per flow, from every outcome that probed it (MDA probes a flow
/// again one TTL further when a router it crossed lacks flows), in the
/// order flows were first sent.
fn flow_paths(outcomes: &[FlowOutcome]) -> Vec<FlowPath> {
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
fn runs_by_flow(outcomes: &[FlowOutcome]) -> Vec<Run> {
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
fn fill_skipped_prefix(runs: &mut [Run], first_ttl: Ttl, job: &Job<'_>) {
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

/// A fresh secret for a flow of `request`. TCP sequence numbers are kept in
/// probe order ([`FlowSecret::with_ids_in_order`]): SYNs to the destination
/// then clear a half-open request left by a lost RST instead of being
/// ignored by it.
fn flow_secret(request: &TraceRequest) -> FlowSecret {
    let secret = FlowSecret::random();
    if request.protocol != Protocol::Tcp {
        return secret;
    }
    let attempts = request.queries.max(request.e2e_queries);
    secret.with_ids_in_order(ProbeId::new(request.max_ttl, attempts.saturating_sub(1)))
}

/// The RTT samples of an end-to-end plan: one per probe at its TTL that got
/// its full chance (an answer from the destination, or silence for the whole
/// wait). A probe never sent, cut short or rate limited is no sample of loss;
/// a router answering at that TTL means the destination did not.
fn e2e_samples(prober: &Prober) -> Vec<Option<Duration>> {
    let ttl = prober.plan().max_ttl;
    (0..prober.plan().attempts)
        .filter_map(
            |attempt| match &prober.probes().get(&ProbeKey { attempt, ttl })?.status {
                Status::Answered(answer) if answer.destination => Some(answer.rtt),
                Status::Answered(_) => Some(None),
                Status::Unanswered {
                    reason: NoAnswer::Timeout,
                    ..
                } => Some(None),
                _ => None,
            },
        )
        .collect()
}

fn runs_of(prober: &Prober, source: TimestampSource, now: MonotonicTime) -> Vec<Run> {
    let flow = prober.flow();
    let src = SocketAddr::new(flow.source(), flow.source_port().map_or(0, |p| p.0));
    let dst = SocketAddr::new(
        flow.destination(),
        flow.destination_port().map_or(0, |p| p.0),
    );
    let plan = prober.plan();
    (0..plan.attempts)
        .map(|attempt| {
            let observations: Vec<HopObservation> = Ttl::range(plan.first_ttl, prober.last_ttl())
                .map(|ttl| HopObservation {
                    ttl,
                    attempts: vec![outcome(prober, ProbeKey { attempt, ttl }, source, now)],
                })
                .collect();
            Run::from_observations(src, dst, &observations)
        })
        .collect()
}

fn outcome(
    prober: &Prober,
    key: ProbeKey,
    source: TimestampSource,
    now: MonotonicTime,
) -> AttemptOutcome {
    let Some(probe) = prober.probes().get(&key) else {
        return AttemptOutcome::default();
    };
    match &probe.status {
        Status::Answered(answer) => AttemptOutcome {
            responder: Some(answer.from),
            rtt: answer.rtt,
            icmp_type: answer.icmp_type,
            icmp_code: answer.icmp_code,
            tcp_answer: answer.tcp_answer(),
            reply_ttl: Some(answer.reply_ttl),
            is_destination: answer.destination,
            timestamp_source: Some(source),
            mpls_labels: answer.mpls_labels.clone(),
            rewritten: answer.rewritten.clone(),
            ..AttemptOutcome::default()
        },
        Status::Shared(hop) => AttemptOutcome {
            responder: Some(hop.responder),
            rtt: hop.rtt,
            icmp_type: hop.icmp_type,
            icmp_code: hop.icmp_code,
            reply_ttl: Some(hop.reply_ttl),
            timestamp_source: Some(source),
            shared: Some(SharedHop {
                test_run_id: hop.by.test_run_id,
                run_id: hop.by.run_id,
                protocol: hop.by.protocol,
                destination: hop.by.destination,
                flow_id: hop.by.flow_id,
                age: (now.since(hop.observed_at).unwrap_or_default().as_secs_f64() * 1e6).round()
                    / 1e3,
            }),
            ..AttemptOutcome::default()
        },
        Status::Unanswered { reason, waited } => AttemptOutcome::unanswered(*reason, *waited),
        // The prober settles every probe it reports; anything else was cut off.
        _ => AttemptOutcome::unanswered(NoAnswer::CutShort, None),
    }
}

fn probing_of(prober: &Prober) -> Probing {
    let stats = prober.stats();
    Probing {
        probes_sent: stats.probes_sent,
        reprobes: stats.reprobes,
        probes_not_sent: stats.not_sent.values().sum(),
        shared_hops: stats.shared_hops,
        degraded: prober.degraded().into_iter().map(str::to_string).collect(),
        admission_wait: (!stats.admission_wait.is_zero())
            .then(|| (stats.admission_wait.as_secs_f64() * 1e6).round() / 1e3),
    }
}

fn via_of(route: &Route) -> Via {
    Via {
        interface: PathInterface {
            name: route.interface.name.clone(),
            hardware_addr: route
                .interface
                .mac
                .map(|m| m.to_string())
                .unwrap_or_default(),
            mtu: Some(route.interface.mtu),
        },
        gateway: route.gateway,
    }
}

fn log_outcome(host: &str, prober: &Prober) {
    let stats = prober.stats();
    let ignored = stats.ignored;
    if ignored != Ignored::default() {
        tracing::debug!(host, ignored = ?ignored.by_reason(), "packets ignored during trace");
    }
    let degraded = prober.degraded();
    if !degraded.is_empty() {
        tracing::debug!(
            host,
            ?degraded,
            not_sent = stats.not_sent.values().sum::<u64>(),
            "trace degraded: some hops have no answer for reasons other than silence"
        );
    }
}

fn random_u16() -> u16 {
    // No entropy source: time-based is still unique enough for flow ids.
    getrandom::u32().unwrap_or_else(|_| MonotonicTime::now().as_nanos() as u32) as u16
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}
