//! A trace answered as it settles, as NDJSON: one `hop` event per TTL once
//! every attempt at it (and below it) has settled, then the `record`, or an
//! `error` if the trace fails after the answer began. Asked for with
//! `stream=true` or `Accept: application/x-ndjson`; without either the
//! answer is the one JSON record the Go client expects. A client that goes
//! away cancels the trace: its probes stop.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};

use super::metrics::Origin;
use super::{ServiceError, Shared};
use crate::error::ErrorCode;
use crate::path::{Hop, NetworkPath};
use crate::trace::{Call, TraceRequest};

/// The media type of a streamed answer.
pub const CONTENT_TYPE: &str = "application/x-ndjson";
/// Lines a slow client may leave unread before the trace waits for it.
const BACKLOG: usize = 64;

/// Whether the client asked for a stream: the `stream` parameter, or an
/// `Accept` header naming NDJSON.
pub fn wanted(headers: &HeaderMap, param: bool) -> bool {
    param
        || headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().starts_with(CONTENT_TYPE)))
}

/// One line of a streamed answer.
#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event<'a> {
    /// Before the first hop: the record as it will be (source, destination,
    /// protocol, capture), its runs without hops yet.
    Start { record: &'a NetworkPath },
    /// Every attempt at `ttl` and below has settled: its hops, one per run,
    /// will not change.
    Hop { ttl: u8, hops: Vec<&'a Hop> },
    /// The trace's record, as the plain answer would have been.
    Record { record: &'a NetworkPath },
    /// The trace failed after the answer began (the status was sent).
    Error { code: ErrorCode, message: &'a str },
}

/// Starts `request` and answers with its events as they come. The trace runs
/// in a task of its own holding `permit`; it ends when the trace does or
/// when the client stops reading.
pub fn respond(
    shared: Arc<Shared>,
    request: TraceRequest,
    call: Call,
    limit: Duration,
    permit: OwnedSemaphorePermit,
) -> Response {
    let (lines, body) = mpsc::channel::<Vec<u8>>(BACKLOG);
    tokio::spawn(async move {
        let _permit = permit;
        run(&shared, &request, &call, limit, &lines).await;
    });
    let stream = futures_util::stream::unfold(body, |mut body| async move {
        body.recv()
            .await
            .map(|line| (Ok::<_, Infallible>(line), body))
    });
    let mut r = Response::new(Body::from_stream(stream));
    *r.status_mut() = StatusCode::OK;
    let headers = r.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// Runs the trace, sending its events to `lines` until it ends or the
/// client goes (then the trace's future is dropped: it is cancelled).
async fn run(
    shared: &Shared,
    request: &TraceRequest,
    call: &Call,
    limit: Duration,
    lines: &mpsc::Sender<Vec<u8>>,
) {
    let (progress, mut snapshots) = watch::channel(None);
    let trace = shared.trace(request, call, &[], Origin::Api, limit, Some(&progress));
    tokio::pin!(trace);
    let mut sent_through = 0u8;
    let result = loop {
        tokio::select! {
            result = &mut trace => break result,
            Ok(()) = snapshots.changed() => {
                let settled = snapshots
                    .borrow_and_update()
                    .as_ref()
                    .and_then(|p| Some((p.settled_through?, p.path.clone())));
                if let Some((through, path)) = settled
                    && !send_hops(lines, &path, &mut sent_through, through).await
                {
                    return;
                }
            }
            () = lines.closed() => return,
        }
    };
    match result {
        Ok(path) => {
            // Multi-flow, MDA and path MTU traces settle all at once.
            let last = path.traceroute.runs.iter().flat_map(|r| &r.hops).map(|h| h.ttl.get()).max();
            if let Some(last) = last
                && !send_hops(lines, &path, &mut sent_through, last).await
            {
                return;
            }
            send(lines, &Event::Record { record: &path }).await;
        }
        Err(ServiceError { code, message }) => {
            send(lines, &Event::Error { code, message: &message }).await;
        }
    }
}

/// Sends the hops of every TTL after `sent_through` up to `through`;
/// `false` once the client has gone.
async fn send_hops(
    lines: &mpsc::Sender<Vec<u8>>,
    path: &NetworkPath,
    sent_through: &mut u8,
    through: u8,
) -> bool {
    if *sent_through == 0 && through > 0 {
        let mut skeleton = path.clone();
        for run in &mut skeleton.traceroute.runs {
            run.hops.clear();
        }
        if !send(lines, &Event::Start { record: &skeleton }).await {
            return false;
        }
    }
    while *sent_through < through {
        *sent_through += 1;
        let ttl = *sent_through;
        let hops: Vec<&Hop> = path
            .traceroute
            .runs
            .iter()
            .flat_map(|r| r.hops.iter().filter(|h| h.ttl.get() == ttl))
            .collect();
        if !hops.is_empty() && !send(lines, &Event::Hop { ttl, hops }).await {
            return false;
        }
    }
    true
}

/// Sends one event as a line; `false` once the client has gone.
async fn send(lines: &mpsc::Sender<Vec<u8>>, event: &Event<'_>) -> bool {
    let mut line = serde_json::to_vec(event).unwrap_or_default();
    line.push(b'\n');
    lines.send(line).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_is_asked_for_by_parameter_or_accept_header() {
        let mut h = HeaderMap::new();
        assert!(!wanted(&h, false));
        assert!(wanted(&h, true));
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        assert!(!wanted(&h, false));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, application/x-ndjson;q=0.9"),
        );
        assert!(wanted(&h, false));
    }

    #[test]
    fn events_are_tagged_lines() {
        let e = Event::Error {
            code: ErrorCode::Timeout,
            message: "late",
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"event":"error","code":"TIMEOUT","message":"late"}"#
        );
    }
}
