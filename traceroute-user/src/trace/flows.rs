//! Opening a trace's flows: a source port (or echo id) no other trace uses,
//! registered with the capture, or a TCP connection to probe inside; and the
//! secret each flow's probes carry.

use std::net::SocketAddr;
use std::time::Duration;

use super::{Job, TcpMethod, TraceError, TraceRequest, Tracer, connection, ports};
use crate::capture::{CaptureError, FlowSubscription};
use crate::clock::MonotonicTime;
use crate::probe::{FlowSecret, ProbeFlow, ProbeId, Protocol};

/// How many times a flow is re-drawn when another trace holds it.
pub(in crate::trace) const FLOW_ATTEMPTS: usize = 16;

impl Tracer {
    /// Picks a flow no other trace uses and registers it with the capture.
    /// Reserves a flow to the job's target (a source port, or an echo
    /// identifier), `pinned` when given, and registers it with the capture.
    /// A flow as the request's TCP method wants it: inside a connection for
    /// `sack` (and `prefer_sack` when the destination allows it), else a
    /// flow of its own.
    pub(in crate::trace) async fn open_any_flow(
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
    pub(in crate::trace) async fn open_in_connection(
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

    pub(in crate::trace) fn open_flow(
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
            if let Some(size) = job.probe_size {
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
}

/// What keeps a flow's source port ours while it runs (dropped with it).
pub(in crate::trace) enum FlowHold {
    /// ICMP: the echo identifier needs nothing held.
    Nothing,
    Port {
        _reservation: ports::PortReservation,
    },
    Connection {
        _open: connection::OpenConnection,
    },
}

/// A fresh secret for a flow of `request`. TCP sequence numbers are kept in
/// probe order ([`FlowSecret::with_ids_in_order`]): SYNs to the destination
/// then clear a half-open request left by a lost RST instead of being
/// ignored by it.
pub(in crate::trace) fn flow_secret(request: &TraceRequest) -> FlowSecret {
    let secret = FlowSecret::random();
    if request.protocol != Protocol::Tcp {
        return secret;
    }
    let attempts = request.queries.max(request.e2e_queries);
    secret.with_ids_in_order(ProbeId::new(request.max_ttl, attempts.saturating_sub(1)))
}

/// What identifies a flow besides its addresses: the source port, or the
/// echo identifier.
pub(crate) fn flow_id(flow: &ProbeFlow) -> u16 {
    flow.source_port()
        .map(|p| p.0)
        .or(flow.icmp_identifier())
        .unwrap_or(0)
}

pub(in crate::trace) fn random_u16() -> u16 {
    // No entropy source: time-based is still unique enough for flow ids.
    getrandom::u32().unwrap_or_else(|_| MonotonicTime::now().as_nanos() as u32) as u16
}

/// `count` flow ids from `first` on (wrapping), or `count` random ones.
pub(in crate::trace) fn consecutive_ids(count: usize, first: Option<u16>) -> Vec<Option<u16>> {
    (0..count)
        .map(|i| first.map(|id| id.wrapping_add(i as u16)))
        .collect()
}
