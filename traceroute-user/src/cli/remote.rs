//! A trace through the running agent: the CLI's flags as the HTTP API's
//! query, sent over the service's Unix socket, its streamed answer printed as
//! an in-process trace prints. It needs no capability beyond the socket's
//! group and loads no programs, and the trace gets what the service has
//! learnt of the routers on the way.

use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixStream;
use tokio::sync::watch;

use super::progress::{LiveTable, Outcome};
use crate::error::ErrorCode;
use crate::path::NetworkPath;
use crate::route::network_namespace;
use crate::service::api::NAMESPACE_HEADER;
use crate::service::config::DEFAULT_SOCKET;
use crate::service::stream::CONTENT_TYPE;
use crate::trace::Progress;

/// What went wrong, as the agent said it (or reaching it).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct AgentError {
    pub code: ErrorCode,
    pub message: String,
    /// The agent could not be reached, or routes in another network
    /// namespace: tracing in-process is right unless it was asked for.
    pub local_instead: bool,
}

impl AgentError {
    fn new(code: ErrorCode, message: impl Into<String>) -> AgentError {
        AgentError {
            code,
            message: message.into(),
            local_instead: false,
        }
    }
}

/// Where a trace runs.
#[derive(Debug, PartialEq)]
pub enum Place {
    Here,
    /// Through the agent listening on `socket`; `asked`: named by `--agent`
    /// (otherwise the service's default socket, which may not serve us).
    Agent {
        socket: PathBuf,
        asked: bool,
    },
}

/// Where `trace` runs: `--local`, here; `--agent SOCKET`, through that agent;
/// otherwise through the agent on the default socket when there is one. The
/// agent refuses a trace from another network namespace before it probes
/// (the request names the caller's), and without `--agent` that refusal, or
/// a socket nobody answers on, means tracing here.
pub fn choose(agent: Option<&Path>, local: bool) -> Place {
    match (local, agent) {
        (true, _) => Place::Here,
        (false, Some(socket)) => Place::Agent {
            socket: socket.to_path_buf(),
            asked: true,
        },
        (false, None) if Path::new(DEFAULT_SOCKET).exists() => Place::Agent {
            socket: PathBuf::from(DEFAULT_SOCKET),
            asked: false,
        },
        (false, None) => Place::Here,
    }
}

async fn send(
    socket: &Path,
    target: &str,
    accept: &str,
) -> Result<hyper::Response<hyper::body::Incoming>, AgentError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| unreachable(socket, e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(socket, e))?;
    tokio::spawn(connection);
    let request = hyper::Request::get(target)
        .header(header::HOST, "localhost")
        .header(header::ACCEPT, accept)
        .header(header::USER_AGENT, "traceroute-agent-cli")
        .body(Empty::<Bytes>::new())
        .map_err(|e| AgentError::new(ErrorCode::InvalidRequest, e.to_string()))?;
    sender
        .send_request(request)
        .await
        .map_err(|e| unreachable(socket, e))
}

fn unreachable(socket: &Path, e: impl std::fmt::Display) -> AgentError {
    AgentError {
        local_instead: true,
        ..AgentError::new(
            ErrorCode::Unknown,
            format!("the agent on {}: {e}", socket.display()),
        )
    }
}

/// Traces `host` with `query` through the agent on `socket`, feeding `live`
/// (when given) as hops settle, until the record comes or Ctrl-C (which
/// closes the connection: the agent cancels the trace).
pub async fn trace(
    socket: &Path,
    host: &str,
    query: &str,
    live: Option<LiveTable>,
) -> anyhow::Result<Outcome> {
    let started = std::time::Instant::now();
    let ours = network_namespace();
    let target = match ours {
        Some(ns) => format!("/traceroute/{host}?{query}&network_namespace={ns}"),
        None => format!("/traceroute/{host}?{query}"),
    };
    let response = send(socket, &target, CONTENT_TYPE).await?;
    tracing::debug!(ms = ms_since(started), status = %response.status(), "agent answered");
    if response.status() != hyper::StatusCode::OK {
        let theirs = response
            .headers()
            .get(NAMESPACE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let body = response.into_body().collect().await?.to_bytes();
        let mut refused = refusal(&body);
        refused.local_instead = theirs.is_some() && theirs != ours;
        return Err(refused.into());
    }
    let (progress, snapshots) = watch::channel::<Option<Progress>>(None);
    let printer = live.map(|table| tokio::spawn(table.follow(snapshots.clone(), None)));
    let mut body = response.into_body();
    let mut reader = Events::default();
    let ended = loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
            _ = tokio::signal::ctrl_c() => break None,
        };
        let Some(frame) = frame else {
            break Some(Err(AgentError::new(
                ErrorCode::Unknown,
                "the agent ended its answer before the record",
            )));
        };
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        match reader.take(&data, &progress) {
            Ok(Some(path)) => {
                tracing::debug!(ms = ms_since(started), "record received");
                break Some(Ok(path));
            }
            Ok(None) => {}
            Err(e) => break Some(Err(e)),
        }
    };
    drop(body);
    let last = snapshots.borrow().as_ref().map(|p| p.path.clone());
    drop(progress);
    let live = match printer {
        Some(task) => task.await.ok(),
        None => None,
    };
    match ended {
        None => Ok(Outcome::Interrupted { path: last, live }),
        Some(Ok(path)) => Ok(Outcome::Finished { path, live }),
        Some(Err(e)) => Err(e.into()),
    }
}

/// The error an agent answered with instead of a trace.
fn refusal(body: &[u8]) -> AgentError {
    let v: Value = serde_json::from_slice(body).unwrap_or_default();
    let code = v["code"].as_str().unwrap_or_default();
    AgentError::new(
        ErrorCode::ALL
            .into_iter()
            .find(|c| c.as_str() == code)
            .unwrap_or(ErrorCode::Unknown),
        v["message"]
            .as_str()
            .unwrap_or("the agent refused the trace"),
    )
}

/// The streamed answer read line by line into the record so far.
#[derive(Default)]
struct Events {
    pending: Vec<u8>,
    so_far: Option<NetworkPath>,
}

impl Events {
    /// Takes a piece of the answer, publishing each settled TTL to
    /// `progress`; the record once it has come.
    fn take(
        &mut self,
        data: &[u8],
        progress: &watch::Sender<Option<Progress>>,
    ) -> Result<Option<NetworkPath>, AgentError> {
        self.pending.extend_from_slice(data);
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let event: Value = serde_json::from_slice(&line).map_err(|e| {
                AgentError::new(ErrorCode::Unknown, format!("a malformed event: {e}"))
            })?;
            let record = || serde_json::from_value::<NetworkPath>(event["record"].clone());
            match event["event"].as_str() {
                Some("start") => {
                    let mut path = record().map_err(malformed)?;
                    path.incomplete = true;
                    self.so_far = Some(path);
                }
                Some("hop") => {
                    let Some(path) = self.so_far.as_mut() else {
                        continue;
                    };
                    let hops = event["hops"].as_array().cloned().unwrap_or_default();
                    for (run, hop) in path.traceroute.runs.iter_mut().zip(hops) {
                        run.hops
                            .push(serde_json::from_value(hop).map_err(malformed)?);
                    }
                    progress.send_replace(Some(Progress {
                        path: path.clone(),
                        settled_through: event["ttl"].as_u64().and_then(|t| u8::try_from(t).ok()),
                    }));
                }
                Some("record") => return record().map(Some).map_err(malformed),
                Some("error") => return Err(refusal(&line)),
                _ => {}
            }
        }
        Ok(None)
    }
}

fn ms_since(t: std::time::Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn malformed(e: serde_json::Error) -> AgentError {
    AgentError::new(ErrorCode::Unknown, format!("a malformed event: {e}"))
}
