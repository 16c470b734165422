//! The HTTP API (docs/HTTP_API.md): a drop-in for the system-probe traceroute
//! module, plus `/health` and `/metrics`.
//!
//! Routing and parameter parsing are done here by hand rather than with
//! extractors, so that every bad input — unknown paths and methods included —
//! gets the same `{"code", "message"}` JSON body. docs/HTTP_API.md
//! documents every parameter and status code; the table in
//! [`status_of`] is the contract.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use axum::{Extension, Router};
use serde::Serialize;

use super::metrics::{Format as MetricsFormat, Origin};
use super::{API_ADMISSION_WAIT, API_RESOLVE_SLOTS, ServiceError, Shared, stream};
use crate::clock::MonotonicTime;
use crate::error::{ErrorCode, UnknownName};
use crate::probe::Protocol;
use crate::resolve;
use crate::resolve::FamilyPreference;
use crate::route::{Egress, network_namespace};
use crate::trace::mda::{Confidence, MdaRule};
use crate::trace::request::{self, Bounds, OutOfRange};
use crate::trace::request::{Mode, Multipath, TraceParams};
use crate::trace::{Call, RESOLVE_TIMEOUT, TcpMethod};

/// Longest path (`/traceroute/<host>`, percent-encoded) accepted.
pub const MAX_PATH: usize = 1024;
/// Longest query string accepted.
/// Longest `client_id`, in characters.
pub const MAX_CLIENT_ID: usize = 256;
/// Longest query string accepted: room for every parameter at its longest,
/// including a `client_id` of [`MAX_CLIENT_ID`] 4-byte characters
/// percent-encoded (12 bytes each), so no valid request is refused as too long.
pub const MAX_QUERY: usize = 4096;

const TRACE_PREFIX: &str = "/traceroute/";
/// Every answer names the agent's network namespace (the inode of
/// `/proc/self/ns/net`): a caller tells by it whether the agent routes as it
/// does.
pub const NAMESPACE_HEADER: &str = "x-agent-network-namespace";
/// What the agent learnt of each responder (see `trace::knowledge`).
const RESPONDERS: &str = "/debug/responders";

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

/// The HTTP status of an error code.
pub fn status_of(code: ErrorCode) -> StatusCode {
    StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: ErrorCode,
    message: &'a str,
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error_response(e: &ServiceError) -> Response {
    let body = serde_json::to_vec(&ErrorBody {
        code: e.code,
        message: &e.message,
    })
    .unwrap_or_default();
    let mut r = json_response(status_of(e.code), body);
    match e.code {
        ErrorCode::Busy => {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        ErrorCode::MethodNotAllowed => {
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET"));
        }
        _ => {}
    }
    r
}

fn invalid(message: impl Into<String>) -> ServiceError {
    ServiceError::new(ErrorCode::InvalidRequest, message)
}

/// A request the connection's head guard refused before routing; its
/// synthetic stand-in carries the reason.
#[derive(Clone)]
pub struct Rejected(pub ServiceError);

async fn handle(
    State(shared): State<Arc<Shared>>,
    rejected: Option<Extension<Rejected>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let outcome = match rejected {
        Some(Extension(Rejected(e))) => Err(e),
        None => route(&shared, &method, &uri, &headers).await,
    };
    let mut response = outcome.unwrap_or_else(|e| error_response(&e));
    if let Some(ns) = network_namespace() {
        response
            .headers_mut()
            .insert(NAMESPACE_HEADER, HeaderValue::from(ns));
    }
    shared.metrics.http_answer(response.status().as_u16());
    response
}

async fn route(
    shared: &Arc<Shared>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Response, ServiceError> {
    let path = uri.path();
    let query = uri.query().unwrap_or("");
    if path.len() > MAX_PATH || query.len() > MAX_QUERY {
        return Err(ServiceError::new(
            ErrorCode::UriTooLong,
            format!("path is limited to {MAX_PATH} bytes and the query string to {MAX_QUERY}"),
        ));
    }
    let known = path == "/health"
        || path == "/metrics"
        || path == RESPONDERS
        || path.starts_with(TRACE_PREFIX);
    if !known {
        return Err(ServiceError::new(
            ErrorCode::NotFound,
            "no such endpoint (GET /traceroute/{host}, /health, /metrics, /debug/responders)",
        ));
    }
    if method != Method::GET {
        return Err(ServiceError::new(
            ErrorCode::MethodNotAllowed,
            format!("{method} is not allowed; use GET"),
        ));
    }
    match path {
        "/health" => Ok(health(shared)),
        RESPONDERS => {
            let view = shared.tracer.knowledge().view(MonotonicTime::now());
            let body = serde_json::to_vec(&view).map_err(|e| {
                ServiceError::new(ErrorCode::Unknown, format!("encoding the view: {e}"))
            })?;
            Ok(json_response(StatusCode::OK, body))
        }
        "/metrics" => {
            let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
            let format = MetricsFormat::negotiate(accept);
            let mut r = Response::new(Body::from(shared.metrics.render(format)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            );
            Ok(r)
        }
        _ => traceroute(shared, &path[TRACE_PREFIX.len()..], query, headers).await,
    }
}

fn health(shared: &Shared) -> Response {
    #[derive(Serialize)]
    struct Health {
        status: &'static str,
        version: &'static str,
        capture: crate::capture::CaptureMethod,
        api_traces_in_flight: usize,
        targets: usize,
        /// The inode of the agent's network namespace: the CLI goes
        /// through an agent only when it shares its routes.
        network_namespace: Option<u64>,
    }
    let config = shared.config();
    let stopping = shared.is_stopping();
    let body = Health {
        status: if stopping { "stopping" } else { "ok" },
        version: env!("CARGO_PKG_VERSION"),
        capture: shared.tracer.capture().method(),
        api_traces_in_flight: shared.api_in_flight(),
        targets: config.targets.len(),
        network_namespace: crate::route::network_namespace(),
    };
    let status = if stopping {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    json_response(status, serde_json::to_vec(&body).unwrap_or_default())
}

/// The parsed query of `/traceroute/{host}`.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    pub protocol: Protocol,
    pub port: Option<u16>,
    pub max_ttl: u8,
    /// Per-probe wait; `None` (absent or 0): the default wait, and the whole
    /// trace may take up to `max_ttl` times it, as the Go client has it.
    pub timeout: Option<Duration>,
    pub queries: u8,
    pub e2e_queries: u8,
    pub reverse_dns: bool,
    pub client_id: String,
    /// Flows at once (`paths`).
    pub paths: u16,
    /// `multipath=mda`: MDA at this confidence (`confidence`), by this rule
    /// (`mda_rule`).
    pub multipath: Option<Multipath>,
    /// `flow_id` (or `source_port`): the first flow's identifier.
    pub flow_id: Option<u16>,
    /// `pmtu=true`: path MTU per hop.
    pub pmtu: bool,
    /// How TCP probes are sent.
    pub tcp_method: TcpMethod,
    /// `source` and `interface`: where probes leave from (the CLI's `-s`
    /// and `-i`).
    pub egress: Egress,
    /// `stream=true`: answer as NDJSON events while the trace settles (see
    /// [`super::stream`]).
    pub stream: bool,
    /// `network_namespace`: the caller's (the CLI's); a trace is refused
    /// when the agent routes in another one.
    pub network_namespace: Option<u64>,
    /// Parameters not acted on: unknown ones, and repeats (the first value
    /// wins), as Go's `URL.Query().Get` treats them. Logged, not refused, so
    /// newer clients keep working.
    pub ignored: Vec<String>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            protocol: request::DEFAULT_PROTOCOL,
            port: None,
            max_ttl: request::MAX_TTL.default,
            timeout: None,
            queries: request::QUERIES.default,
            e2e_queries: request::E2E_QUERIES.default,
            paths: request::PATHS.default,
            multipath: None,
            flow_id: None,
            reverse_dns: false,
            client_id: String::new(),
            pmtu: false,
            tcp_method: TcpMethod::Syn,
            egress: Egress::default(),
            stream: false,
            network_namespace: None,
            ignored: Vec::new(),
        }
    }
}

/// A number of `bounds`, or `None` for 0 ("the default").
fn nonzero_within(key: &str, value: &str, bounds: Bounds<u8>) -> Result<Option<u8>, ServiceError> {
    let n = number(key, value, u64::from(bounds.max))?;
    if n == 0 {
        return Ok(None);
    }
    let n = u8::try_from(n).unwrap_or(u8::MAX);
    bounds
        .check(key, n)
        .map(Some)
        .map_err(|e: OutOfRange| invalid(e.to_string()))
}

/// A decimal number, digits only (no sign, no spaces), at most `max`.
fn number(key: &str, value: &str, max: u64) -> Result<u64, ServiceError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(format!(
            "{key} must be a non-negative integer, got {:?}",
            shown(value)
        )));
    }
    match value.parse::<u64>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(invalid(format!(
            "{key} is out of range (at most {max}), got {}",
            shown(value)
        ))),
    }
}

/// Go's `strconv.ParseBool` spellings.
fn boolean(key: &str, value: &str) -> Result<bool, ServiceError> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(invalid(format!(
            "{key} must be true or false, got {:?}",
            shown(value)
        ))),
    }
}

/// At most 64 characters of user input in messages.
fn shown(value: &str) -> String {
    let mut s: String = value.chars().take(64).collect();
    if s.len() < value.len() {
        s.push('…');
    }
    s
}

/// Parses the query string of `/traceroute/{host}`. Empty values mean "the
/// default" (as do zeros for port, max_ttl, timeout and traceroute_queries,
/// which is what the system-probe client sends when nothing is configured).
/// Unknown and repeated parameters are ignored (first value wins) and listed
/// in [`Params::ignored`], as the Go module does; a bad value is an error.
pub fn parse_params(query: &str) -> Result<Params, ServiceError> {
    let mut p = Params::default();
    let mut confidence = None;
    let mut rule = None;
    let mut seen = HashSet::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        // `flow_id` and `source_port` are one parameter.
        let canonical = if key == "source_port" {
            "flow_id".into()
        } else {
            key.clone()
        };
        if !seen.insert(canonical) {
            p.ignored.push(shown(&key));
            continue;
        }
        let v = value.as_ref();
        let empty = v.is_empty();
        match key.as_ref() {
            "protocol" if !empty => {
                p.protocol = v.parse().map_err(|e: UnknownName| invalid(e.to_string()))?;
            }
            "port" if !empty => {
                let n = number("port", v, 65535)?;
                p.port = (n != 0).then_some(n as u16);
            }
            "max_ttl" if !empty => {
                // 0 means "the default", as the system-probe client sends it.
                if let Some(n) = nonzero_within("max_ttl", v, request::MAX_TTL)? {
                    p.max_ttl = n;
                }
            }
            "timeout" if !empty => {
                // Nanoseconds, as Go's time.Duration.
                let max = request::TIMEOUT.max.as_nanos() as u64;
                let n = number("timeout", v, max)
                    .map_err(|e| invalid(format!("{} (nanoseconds)", e.message)))?;
                if n != 0 {
                    p.timeout = Some(
                        request::TIMEOUT
                            .check("timeout", Duration::from_nanos(n))
                            .map_err(|e| invalid(format!("{e} (nanoseconds: {n})")))?,
                    );
                }
            }
            "tcp_method" if !empty => {
                p.tcp_method = v.parse().map_err(|e: UnknownName| invalid(e.to_string()))?;
            }
            "traceroute_queries" if !empty => {
                if let Some(n) = nonzero_within("traceroute_queries", v, request::QUERIES)? {
                    p.queries = n;
                }
            }
            "e2e_queries" if !empty => {
                let max = u64::from(request::E2E_QUERIES.max);
                p.e2e_queries = number("e2e_queries", v, max)? as u8;
            }
            "reverse_dns" if !empty => p.reverse_dns = boolean("reverse_dns", v)?,
            "pmtu" if !empty => p.pmtu = boolean("pmtu", v)?,
            "stream" if !empty => p.stream = boolean("stream", v)?,
            "network_namespace" if !empty => {
                p.network_namespace = Some(number("network_namespace", v, u64::MAX)?);
            }
            "paths" if !empty => {
                let n = number("paths", v, u64::from(request::PATHS.max))?;
                if n != 0 {
                    p.paths = request::PATHS
                        .check("paths", n as u16)
                        .map_err(|e| invalid(e.to_string()))?;
                }
            }
            "multipath" if !empty => match v.to_ascii_lowercase().as_str() {
                "mda" => {
                    p.multipath.get_or_insert(Multipath::DEFAULT);
                }
                "none" | "off" => p.multipath = None,
                _ => {
                    return Err(invalid(format!(
                        "unknown multipath {:?} (mda or none)",
                        shown(v)
                    )));
                }
            },
            "confidence" if !empty => {
                confidence = Some(match v {
                    "95" | "0.95" => Confidence::P95,
                    "99" | "0.99" => Confidence::P99,
                    _ => {
                        return Err(invalid(format!(
                            "confidence must be 95 or 99, got {:?}",
                            shown(v)
                        )));
                    }
                });
            }
            "mda_rule" if !empty => {
                rule = Some(v.parse::<MdaRule>().map_err(|e| invalid(e.to_string()))?);
            }
            "flow_id" | "source_port" if !empty => {
                let n = number(&key, v, 65535)?;
                if n == 0 {
                    return Err(invalid(format!("{key} must be 1..=65535")));
                }
                p.flow_id = Some(n as u16);
            }
            "source" if !empty => {
                p.egress.source = Some(v.parse().map_err(|_| {
                    invalid(format!(
                        "source must be an IP address of this host, got {:?}",
                        shown(v)
                    ))
                })?);
            }
            "interface" if !empty => p.egress.interface = Some(v.to_string()),
            "client_id" => {
                if v.chars().count() > MAX_CLIENT_ID || v.chars().any(char::is_control) {
                    return Err(invalid(format!(
                        "client_id must be at most {MAX_CLIENT_ID} printable characters"
                    )));
                }
                p.client_id = v.to_string();
            }
            // Sent by newer system-probe clients. Every trace here is Paris
            // already (one flow keeps its header fields from TTL to TTL), so
            // `tcp_syn_paris_traceroute_mode=true` is honoured by default;
            // there is no Windows driver.
            "tcp_syn_paris_traceroute_mode" | "disable_windows_driver" if !empty => {
                boolean(&key, v)?;
            }
            "protocol"
            | "port"
            | "max_ttl"
            | "timeout"
            | "tcp_method"
            | "traceroute_queries"
            | "e2e_queries"
            | "reverse_dns"
            | "pmtu"
            | "stream"
            | "network_namespace"
            | "tcp_syn_paris_traceroute_mode"
            | "disable_windows_driver"
            | "paths"
            | "multipath"
            | "confidence"
            | "mda_rule"
            | "flow_id"
            | "source_port"
            | "source"
            | "interface" => {}
            other => p.ignored.push(shown(other)),
        }
    }
    match (&mut p.multipath, confidence, rule) {
        (Some(mda), confidence, rule) => {
            mda.confidence = confidence.unwrap_or(mda.confidence);
            mda.rule = rule.unwrap_or(mda.rule);
        }
        (None, Some(_), _) => return Err(invalid("confidence applies to multipath=mda only")),
        (None, _, Some(_)) => return Err(invalid("mda_rule applies to multipath=mda only")),
        (None, None, None) => {}
    }
    Mode::from_switches(p.paths, p.multipath, p.pmtu).map_err(|e| invalid(e.to_string()))?;
    p.egress.check().map_err(invalid)?;
    Ok(p)
}

/// The `{host}` path segment, percent-decoded and validated.
pub fn parse_host(raw: &str) -> Result<String, ServiceError> {
    if raw.is_empty() {
        return Err(invalid("missing host: GET /traceroute/{host}"));
    }
    if raw.contains('/') {
        return Err(invalid("the host must be a single path segment"));
    }
    let host = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| invalid("the host is not valid UTF-8"))?;
    if resolve::parse_literal(&host)
        .map_err(|e| invalid(e.to_string()))?
        .is_none()
    {
        resolve::validate_host(&host).map_err(|e| invalid(e.to_string()))?;
    }
    Ok(host.into_owned())
}

/// The address of a host name (`None` for an address literal), resolved
/// within [`API_RESOLVE_SLOTS`] lookups at once and [`RESOLVE_TIMEOUT`].
async fn resolve_name(
    shared: &Shared,
    host: &str,
    family: FamilyPreference,
) -> Result<Option<IpAddr>, ServiceError> {
    if resolve::parse_literal(host)
        .map_err(|e| invalid(e.to_string()))?
        .is_some()
    {
        return Ok(None);
    }
    let Ok(_lookup) = shared.resolve_slots.try_acquire() else {
        return Err(ServiceError::new(
            ErrorCode::Busy,
            format!(
                "{API_RESOLVE_SLOTS} name lookups are already waiting for the resolver; retry later"
            ),
        ));
    };
    let resolved = resolve::resolve_target(host, family, RESOLVE_TIMEOUT)
        .await
        .map_err(|e| ServiceError::new(e.code(), e.to_string()))?;
    Ok(Some(resolved.addr))
}

async fn traceroute(
    shared: &Arc<Shared>,
    raw_host: &str,
    query: &str,
    headers: &HeaderMap,
) -> Result<Response, ServiceError> {
    let started = Instant::now();
    let host = parse_host(raw_host)?;
    let params = parse_params(query)?;
    if let Some(theirs) = params.network_namespace
        && Some(theirs) != network_namespace()
    {
        return Err(ServiceError::new(
            ErrorCode::NotSupported,
            "this agent routes in another network namespace than the caller: its trace would not be the caller's",
        ));
    }
    if shared.is_stopping() {
        return Err(ServiceError::new(
            ErrorCode::ShuttingDown,
            "the agent is shutting down",
        ));
    }
    // Names are resolved before a trace slot is taken, with slots and a
    // timeout of their own: a slow resolver never holds up traces of
    // addresses.
    // A pinned source decides the family a name resolves to.
    let family = match params.egress.source {
        Some(IpAddr::V4(_)) => FamilyPreference::V4,
        Some(IpAddr::V6(_)) => FamilyPreference::V6,
        None => FamilyPreference::Any,
    };
    let resolved = match resolve_name(shared, &host, family).await {
        Ok(resolved) => resolved,
        Err(e) => {
            // A name that does not resolve is a failed run, as it was when the
            // tracer resolved it; a refused lookup slot is not a run.
            if e.code != ErrorCode::Busy {
                shared
                    .metrics
                    .start(params.protocol, Origin::Api)
                    .finish(Some(e.code));
            }
            return Err(e);
        }
    };
    let Ok(permit) = Arc::clone(&shared.api_slots).try_acquire_owned() else {
        return Err(ServiceError::new(
            ErrorCode::Busy,
            "too many traces in flight; retry later",
        ));
    };
    let config = shared.config();
    if !params.ignored.is_empty() {
        tracing::info!(
            client_id = params.client_id,
            ignored = ?params.ignored,
            "ignored unknown or repeated query parameters"
        );
    }
    let request = TraceParams {
        port: params.port,
        max_ttl: params.max_ttl,
        queries: params.queries,
        timeout: params.timeout.unwrap_or(request::TIMEOUT.default),
        e2e_queries: params.e2e_queries,
        paths: params.paths,
        multipath: params.multipath,
        pmtu: params.pmtu,
        flow_id: params.flow_id,
        tcp_method: params.tcp_method,
        egress: params.egress.clone(),
        reverse_dns: params.reverse_dns,
        ..TraceParams::new(host.clone(), params.protocol)
    }
    .build()
    .map_err(|e| invalid(e.to_string()))?;
    // Without a timeout the Go module gives the whole trace `max_ttl` times
    // the default wait; it may take that long when router budgets ask for it.
    let mut deadline = shared.tracer.deadline_for(&request);
    if params.timeout.is_none() {
        deadline = deadline.max(request::TIMEOUT.default * u32::from(params.max_ttl));
    }
    // Probing stops early enough to leave room for resolution and reverse DNS.
    let limit = config.api.request_timeout;
    let probing = limit.mul_f64(0.8);
    // A probe's own wait must fit in the time a request may probe: no
    // retry could ever make it, so it is no BUSY but a bad request.
    if request.timeout > probing {
        return Err(invalid(format!(
            "timeout ({:?} per probe) does not fit in this agent's api.request_timeout ({:?}): probing may take 80 % of it ({:?}); ask for a shorter timeout",
            request.timeout, limit, probing
        )));
    }
    let call = Call {
        deadline: Some(deadline.min(probing)),
        admission_wait: API_ADMISSION_WAIT,
        resolved,
    };
    if stream::wanted(headers, params.stream) {
        tracing::debug!(client_id = params.client_id, host, "traceroute, streamed");
        return Ok(stream::respond(
            Arc::clone(shared),
            request,
            call,
            limit,
            permit,
        ));
    }
    let _permit = permit;
    let result = shared
        .trace(&request, &call, &[], Origin::Api, limit, None)
        .await;
    let ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(path) => {
            // Per-trace lines are debug: at fleet scale they are the metrics'
            // job (runs_total, trace_duration_seconds).
            tracing::debug!(
                client_id = params.client_id,
                host,
                protocol = %params.protocol,
                ms,
                "traceroute"
            );
            let body = serde_json::to_vec(&path).map_err(|e| {
                ServiceError::new(ErrorCode::Unknown, format!("encoding the record: {e}"))
            })?;
            Ok(json_response(StatusCode::OK, body))
        }
        Err(e) => {
            tracing::warn!(
                client_id = params.client_id,
                host,
                protocol = %params.protocol,
                code = e.code.as_str(),
                ms,
                "traceroute failed: {}",
                e.message
            );
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_callers_network_namespace_is_a_number() {
        let p = parse_params("network_namespace=4026531840").unwrap();
        assert_eq!(p.network_namespace, Some(4_026_531_840));
        assert_eq!(parse_params("").unwrap().network_namespace, None);
        let e = parse_params("network_namespace=net:[4026531840]").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn source_and_interface_pin_the_egress() {
        let p = parse_params("source=198.18.2.1&interface=wan1").unwrap();
        assert_eq!(p.egress.source, Some("198.18.2.1".parse().unwrap()));
        assert_eq!(p.egress.interface.as_deref(), Some("wan1"));
        assert_eq!(parse_params("").unwrap().egress, Egress::default());
        for (query, why) in [
            ("source=gw.example", "source must be an IP address"),
            ("source=224.0.0.1", "cannot be a source address"),
            ("interface=a%2Fb", "not an interface name"),
            ("interface=0123456789abcdef", "not an interface name"),
        ] {
            let err = parse_params(query).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidRequest, "{query}");
            assert!(err.message.contains(why), "{query}: {}", err.message);
        }
    }

    #[test]
    fn system_probe_client_query() {
        let p = parse_params(
            "client_id=abc&port=443&max_ttl=20&timeout=500000000&protocol=TCP&traceroute_queries=2",
        )
        .unwrap();
        assert_eq!(p.protocol, Protocol::Tcp);
        assert_eq!(p.port, Some(443));
        assert_eq!(p.max_ttl, 20);
        assert_eq!(p.timeout, Some(Duration::from_millis(500)));
        assert_eq!(p.queries, 2);
        assert_eq!(p.client_id, "abc");
        // Zeros mean defaults, as the Go client sends them.
        let p =
            parse_params("port=0&max_ttl=0&timeout=0&protocol=udp&traceroute_queries=0").unwrap();
        assert_eq!(p, Params::default());
        assert_eq!(parse_params("").unwrap(), Params::default());
    }

    #[test]
    fn unknown_and_repeated_parameters_are_ignored_first_value_wins() {
        let p = parse_params("port=80&maxttl=5&port=81&source_port=4000&flow_id=5000&=1").unwrap();
        assert_eq!(p.port, Some(80));
        assert_eq!(p.flow_id, Some(4000), "source_port and flow_id are one");
        assert_eq!(p.max_ttl, request::MAX_TTL.default);
        assert_eq!(p.ignored, ["maxttl", "port", "flow_id", ""]);
        // Up to 255, as Go's ParseUint(.., 8); 256 is refused.
        assert_eq!(parse_params("max_ttl=255").unwrap().max_ttl, 255);
        assert!(parse_params("max_ttl=256").is_err());
        // timeout 0 or absent: the default wait, marked unset.
        assert_eq!(parse_params("timeout=0").unwrap().timeout, None);
    }

    #[test]
    fn the_longest_valid_query_fits_the_query_limit() {
        // 256 four-byte characters, percent-encoded: 3072 bytes.
        let client_id: String = std::iter::repeat_n("%F0%9D%84%9E", MAX_CLIENT_ID).collect();
        let query = format!(
            "client_id={client_id}&port=65535&max_ttl=255&timeout=30000000000&protocol=ICMP\
             &traceroute_queries=10&e2e_queries=100&reverse_dns=false&tcp_method=prefer_sack\
             &tcp_syn_paris_traceroute_mode=false&disable_windows_driver=false"
        );
        assert!(query.len() <= MAX_QUERY, "{} > {MAX_QUERY}", query.len());
        let p = parse_params(&query).unwrap();
        assert_eq!(p.client_id.chars().count(), MAX_CLIENT_ID);
    }

    #[test]
    fn statuses() {
        assert_eq!(
            status_of(ErrorCode::InvalidRequest),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(status_of(ErrorCode::Dns), StatusCode::BAD_GATEWAY);
        assert_eq!(status_of(ErrorCode::Timeout), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(status_of(ErrorCode::Busy), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            status_of(ErrorCode::Denied),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            status_of(ErrorCode::Unknown),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn hosts() {
        assert_eq!(parse_host("198.18.0.1").unwrap(), "198.18.0.1");
        assert_eq!(parse_host("%5B2001:db8::1%5D").unwrap(), "[2001:db8::1]");
        assert_eq!(parse_host("dst.lab.example").unwrap(), "dst.lab.example");
        for bad in ["", "..", "a%2Fb", "a/b", "%ff", "127.1", "a%00b", "x%20y"] {
            assert_eq!(
                parse_host(bad).unwrap_err().code,
                ErrorCode::InvalidRequest,
                "{bad}"
            );
        }
    }
}
