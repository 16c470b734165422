//! Traces without a [`Tracer`]: TCP SYNs by connect() and UDP or ICMP by
//! datagram sockets, one probe at a time, no capture and no privilege.

use std::net::{IpAddr, SocketAddr};

use super::{
    FlowOutcome, Mode, TraceError, TraceRequest, dgram, record::hostname, record::via_of,
    syn_socket, target_of, validate,
};
use crate::path::graph;
use crate::path::{E2eProbe, HopObservation, NetworkPath, PathDestination, PathSource, Run};
use crate::probe::Protocol;
use crate::route::{Route, RouteCache};

#[cfg(doc)]
use super::Tracer;

/// `queries` runs of `syn_socket` probes (see [`syn_socket`]).
pub(in crate::trace) async fn connect_runs(
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
pub(in crate::trace) async fn dgram_runs(
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
pub(in crate::trace) async fn socket_runs<F, Fut>(
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

/// A `tcp_method=syn_socket` trace without a [`Tracer`]: no capture, no raw
/// socket, so no privilege — what the CLI runs for `--tcp-method
/// syn_socket`. Reverse DNS and end-to-end probes are not part of it.
pub async fn trace_unprivileged(request: &TraceRequest) -> Result<NetworkPath, TraceError> {
    validate(request)?;
    if request.mode != Mode::ONE_FLOW {
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
