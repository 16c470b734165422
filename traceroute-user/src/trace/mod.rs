//! A trace from request to `NetworkPath`: resolve the target, look up the route,
//! reserve a flow, probe (see [`engine`]), and assemble the record.

pub mod engine;
pub mod pacer;
pub mod ports;
pub mod sender;
pub mod state;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::time::Instant;

use crate::capture::{Capture, CaptureError, CaptureMode, FlowSubscription};
use crate::path::{
    AttemptOutcome, CaptureInfo, CaptureMethod, E2eProbe, HopObservation,
    Interface as PathInterface, NetworkPath, PathDestination, PathSource, Run, TimestampSource,
    Via,
};
use crate::probe::{ProbeFlow, Protocol, Ttl};
use crate::resolve::{FamilyPreference, ResolveError, ReverseDns, resolve_target};
use crate::route::{Route, RouteCache, RouteError};
use engine::Engine;
pub use engine::{Ignored, TraceStats};
use pacer::Pacer;
use sender::ProbeSender;
use state::{Plan, ProbeKey, Status, TraceState};

/// What to trace and how.
#[derive(Clone, Debug)]
pub struct TraceRequest {
    /// Host name or literal address.
    pub host: String,
    pub protocol: Protocol,
    /// Destination port (TCP/UDP); the protocol's default when `None`.
    pub port: Option<u16>,
    /// Lowest TTL probed: 1 for a trace; `max_ttl` for end-to-end probes that
    /// should only reach the destination.
    pub first_ttl: Ttl,
    pub max_ttl: Ttl,
    /// Independent runs (one probe per hop each): `traceroute.runs[]`.
    pub queries: u8,
    /// How long one probe may wait for its answer.
    pub timeout: Duration,
    /// Bound on the whole trace; derived from the other limits when `None`.
    pub deadline: Option<Duration>,
    pub family: FamilyPreference,
    pub reverse_dns: bool,
}

impl TraceRequest {
    pub fn new(host: impl Into<String>, protocol: Protocol) -> Self {
        Self {
            host: host.into(),
            protocol,
            port: None,
            first_ttl: Ttl::MIN,
            max_ttl: Ttl::new(30).expect("nonzero"),
            queries: 3,
            timeout: Duration::from_secs(1),
            deadline: None,
            family: FamilyPreference::Any,
            reverse_dns: false,
        }
    }

    /// The default total deadline: time to send every probe at the pacing rate,
    /// plus one timeout, plus slack.
    fn total_deadline(&self, probes_per_second: u32) -> Duration {
        self.deadline.unwrap_or_else(|| {
            let hops = u32::from(self.max_ttl.get().saturating_sub(self.first_ttl.get())) + 1;
            let probes = hops * u32::from(self.queries);
            Duration::from_secs(1) * probes / probes_per_second.max(1)
                + self.timeout
                + Duration::from_secs(1)
        })
    }
}

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
}

impl TraceError {
    /// The error code of the HTTP API contract (DESIGN.md §4).
    pub fn code(&self) -> &'static str {
        match self {
            TraceError::InvalidRequest(_) => "INVALID_REQUEST",
            TraceError::Resolve(e) => e.code(),
            TraceError::Route(e) => e.code(),
            TraceError::Capture(_) => "UNKNOWN",
            TraceError::Send(e) | TraceError::Port(e) => match e.raw_os_error() {
                Some(libc::EPERM | libc::EACCES) => "DENIED",
                Some(libc::ENETUNREACH) => "NETUNREACH",
                Some(libc::EHOSTUNREACH) => "HOSTUNREACH",
                _ => "UNKNOWN",
            },
        }
    }
}

/// Settings of the process-wide tracer.
#[derive(Clone, Copy, Debug)]
pub struct TracerConfig {
    pub capture: CaptureMode,
    /// Probes per second across all traces.
    pub probes_per_second: u32,
}

impl Default for TracerConfig {
    fn default() -> Self {
        Self {
            capture: CaptureMode::Auto,
            probes_per_second: 200,
        }
    }
}

/// Everything traces share: capture, route cache, raw sockets, pacing.
pub struct Tracer {
    capture: Capture,
    routes: RouteCache,
    sender: ProbeSender,
    pacer: Pacer,
    rdns: ReverseDns,
    probes_per_second: u32,
    hostname: String,
}

/// How many times a flow is re-drawn when another trace holds it.
const FLOW_ATTEMPTS: usize = 16;

impl Tracer {
    /// Starts the capture (watching every interface that is up) and the route cache.
    pub async fn new(config: TracerConfig) -> Result<Self, TraceError> {
        let capture = Capture::start(config.capture)?;
        let watched = capture.watch_all_interfaces()?;
        tracing::debug!(?watched, "capture watching interfaces");
        Ok(Self {
            capture,
            routes: RouteCache::new().await?,
            sender: ProbeSender::new(),
            pacer: Pacer::new(config.probes_per_second),
            rdns: ReverseDns::new(),
            probes_per_second: config.probes_per_second,
            hostname: hostname(),
        })
    }

    pub fn capture(&self) -> &Capture {
        &self.capture
    }

    pub fn routes(&self) -> &RouteCache {
        &self.routes
    }

    /// Runs one trace.
    pub async fn trace(&self, request: &TraceRequest) -> Result<NetworkPath, TraceError> {
        self.trace_with_stats(request).await.map(|(path, _)| path)
    }

    /// Runs one trace and also says what it took (probes, answers by kind,
    /// ignored packets), for metrics.
    pub async fn trace_with_stats(
        &self,
        request: &TraceRequest,
    ) -> Result<(NetworkPath, TraceStats), TraceError> {
        if request.queries == 0 {
            return Err(TraceError::InvalidRequest(
                "queries must be at least 1".into(),
            ));
        }
        if request.first_ttl > request.max_ttl {
            return Err(TraceError::InvalidRequest(
                "the first TTL is above the maximum TTL".into(),
            ));
        }
        let resolved =
            resolve_target(&request.host, request.family, Duration::from_secs(5)).await?;
        let target = resolved.addr;
        let route = self.routes.lookup(target).await?;
        self.capture.watch_interface(&route.interface.name)?;
        let port = request
            .port
            .or(request.protocol.default_port().map(|p| p.0))
            .unwrap_or(0);
        let (flow, mut subscription, _reservation) =
            self.open_flow(request.protocol, &route, target, port)?;

        let plan = Plan {
            first_ttl: request.first_ttl,
            max_ttl: request.max_ttl,
            attempts: request.queries,
            timeout: request.timeout,
        };
        let engine = Engine {
            flow: &flow,
            sender: &self.sender,
            pacer: &self.pacer,
            plan,
            deadline: Instant::now() + request.total_deadline(self.probes_per_second),
        };
        let (state, stats) = engine
            .run(&mut subscription)
            .await
            .map_err(TraceError::Send)?;
        drop(subscription);
        log_ignored(&request.host, stats.ignored);

        let mut runs = runs_of(&state, &flow, self.capture.source());
        if request.reverse_dns {
            self.fill_reverse_dns(&mut runs).await;
        }
        let mut path = NetworkPath::new(
            request.protocol,
            PathSource {
                hostname: self.hostname.clone(),
                via: Some(via_of(&route)),
            },
            PathDestination {
                hostname: request.host.clone(),
                port: if request.protocol == Protocol::Icmp {
                    0
                } else {
                    port
                },
            },
            runs,
            E2eProbe::from_samples(&[]),
        );
        path.capture = Some(CaptureInfo {
            method: match self.capture.source() {
                TimestampSource::Kernel => CaptureMethod::Ebpf,
                TimestampSource::Socket => CaptureMethod::Socket,
            },
        });
        Ok((path, stats))
    }

    /// Picks a flow no other trace uses and registers it with the capture.
    fn open_flow(
        &self,
        protocol: Protocol,
        route: &Route,
        target: IpAddr,
        port: u16,
    ) -> Result<(ProbeFlow, FlowSubscription, Option<ports::PortReservation>), TraceError> {
        let mut last_err = None;
        for _ in 0..FLOW_ATTEMPTS {
            let (flow, reservation) = match protocol {
                Protocol::Icmp => {
                    let id = random_u16();
                    let flow = ProbeFlow::icmp(route.source, target, id);
                    (flow, None)
                }
                Protocol::Tcp | Protocol::Udp => {
                    let r = ports::reserve(protocol, route.source).map_err(TraceError::Port)?;
                    let src = SocketAddr::new(route.source, r.port);
                    let dst = SocketAddr::new(target, port);
                    let flow = if protocol == Protocol::Tcp {
                        ProbeFlow::tcp(src, dst).map(|f| f.with_salt(random_u16()))
                    } else {
                        ProbeFlow::udp(src, dst)
                    };
                    (flow, Some(r))
                }
            };
            let flow = flow.map_err(|e| TraceError::InvalidRequest(e.to_string()))?;
            match self.capture.register(flow.flow_key()) {
                Ok(sub) => return Ok((flow, sub, reservation)),
                Err(e @ CaptureError::FlowInUse(_)) => last_err = Some(e),
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

/// One run per attempt: per TTL up to where the path ended, what came back.
fn runs_of(state: &TraceState, flow: &ProbeFlow, source: TimestampSource) -> Vec<Run> {
    let src = SocketAddr::new(flow.source(), flow.source_port().map_or(0, |p| p.0));
    let dst = SocketAddr::new(
        flow.destination(),
        flow.destination_port().map_or(0, |p| p.0),
    );
    (0..state.plan().attempts)
        .map(|attempt| {
            let observations: Vec<HopObservation> =
                Ttl::range(state.plan().first_ttl, state.last_ttl())
                    .map(|ttl| HopObservation {
                        ttl,
                        attempts: vec![outcome(state, ProbeKey { attempt, ttl }, source)],
                    })
                    .collect();
            Run::from_observations(src, dst, &observations)
        })
        .collect()
}

fn outcome(state: &TraceState, key: ProbeKey, source: TimestampSource) -> AttemptOutcome {
    let Some(probe) = state.probes().get(&key) else {
        return AttemptOutcome::silent();
    };
    let Status::Answered(answer) = &probe.status else {
        return AttemptOutcome::silent();
    };
    AttemptOutcome {
        responder: Some(answer.from),
        rtt: probe.rtt(),
        icmp_type: answer.icmp_type,
        icmp_code: answer.icmp_code,
        reply_ttl: Some(answer.reply_ttl),
        is_destination: answer.destination,
        timestamp_source: Some(source),
        mpls_labels: answer.mpls_labels.clone(),
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

fn log_ignored(host: &str, ignored: Ignored) {
    if ignored != Ignored::default() {
        tracing::debug!(
            host,
            malformed = ignored.malformed,
            unmatched = ignored.unmatched,
            duplicates = ignored.duplicates,
            "packets ignored during trace"
        );
    }
}

fn random_u16() -> u16 {
    let mut b = [0u8; 2];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n == 2 {
        u16::from_ne_bytes(b)
    } else {
        // No entropy source: time-based is still unique enough for flow ids.
        (crate::capture::MonotonicTime::now().as_nanos() & 0xffff) as u16
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
