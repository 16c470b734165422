//! What can go wrong with a trace, and the API error code of each.

use super::connection;
use crate::capture::CaptureError;
use crate::error::ErrorCode;
use crate::resolve::ResolveError;
use crate::route::RouteError;
use std::time::Duration;

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

    /// The error code of the HTTP API contract (docs/HTTP_API.md).
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
