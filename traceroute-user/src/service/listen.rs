//! The API's listeners: a Unix socket (default) and, when configured, TCP.
//!
//! The socket file is created with the configured mode (umask applied around
//! `bind`, so it never exists with wider permissions) and group; a stale file
//! left by a dead agent is removed first, but a socket some live process still
//! answers on is not (two agents never share a path). The file is removed when
//! the server stops, unless another process has bound the path since.

use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use nix::sys::stat::{Mode, umask};
use nix::unistd::Group;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;

use super::api::Rejected;
use super::config::ApiConfig;
use super::head_guard::{HeadGuard, MAX_HEADER_BYTES, Verdict};
use crate::sync::LockExt;

pub struct Listeners {
    unix: Option<(UnixListener, SocketFile)>,
    tcp: Option<TcpListener>,
    max_connections: usize,
}

/// A client must send a request's headers within this time after connecting
/// or after its previous answer; slow and idle connections are closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Refused connections are logged at most this often.
const REFUSED_LOG_EVERY: Duration = Duration::from_secs(10);
/// At the connection cap, a new connection waits at most this long for the
/// room the connection shed for it makes.
const SHED_WAIT: Duration = Duration::from_millis(500);

/// Every open connection, with what says whether it is serving a request,
/// and a way to close it: at the cap, the connection that has waited longest
/// for a request (idle, or dripping its head) makes room for a new one, so
/// that connections held open without asking anything cannot lock others
/// out.
#[derive(Default)]
struct Connections {
    open: std::sync::Mutex<std::collections::HashMap<u64, Open>>,
    next: std::sync::atomic::AtomicU64,
}

struct Open {
    verdict: Arc<Verdict>,
    shed: Arc<tokio::sync::Notify>,
}

impl Connections {
    fn add(&self, verdict: Arc<Verdict>) -> (u64, Arc<tokio::sync::Notify>) {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let shed = Arc::new(tokio::sync::Notify::new());
        self.open.locked().insert(
            id,
            Open {
                verdict,
                shed: Arc::clone(&shed),
            },
        );
        (id, shed)
    }

    fn remove(&self, id: u64) {
        self.open.locked().remove(&id);
    }

    /// Closes the connection that has waited longest for a request; false
    /// when every connection is serving one.
    fn shed_idlest(&self) -> bool {
        let mut open = self.open.locked();
        let idlest = open
            .iter()
            .filter_map(|(id, o)| Some((*id, o.verdict.waiting_since()?)))
            .min_by_key(|(_, since)| *since)
            .map(|(id, _)| id);
        match idlest.and_then(|id| open.remove(&id)) {
            Some(o) => {
                o.shed.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Removes the socket file on drop, if it is still the one we created: a
/// newer agent that took the path over while we were exiting keeps its socket.
struct SocketFile {
    path: PathBuf,
    /// (device, inode) of the file we bound.
    identity: (u64, u64),
}

fn identity(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let path = &self.path;
        match std::fs::symlink_metadata(path) {
            Ok(meta) if identity(&meta) != self.identity => {
                tracing::info!(path = %path.display(), "socket now belongs to another process; left in place");
                return;
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::warn!(path = %path.display(), "checking socket: {e}");
                return;
            }
        }
        match std::fs::remove_file(path) {
            Ok(()) => tracing::debug!(path = %path.display(), "socket removed"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %path.display(), "removing socket: {e}"),
        }
    }
}

impl Listeners {
    /// Binds everything configured (must run inside the runtime).
    pub fn open(config: &ApiConfig) -> anyhow::Result<Listeners> {
        let unix = if config.socket.as_os_str().is_empty() {
            None
        } else {
            Some(bind_unix(
                &config.socket,
                config.socket_mode,
                config.socket_group.as_deref(),
            )?)
        };
        let tcp = match config.listen {
            Some(addr) => {
                let std = std::net::TcpListener::bind(addr)
                    .with_context(|| format!("listening on {addr}"))?;
                std.set_nonblocking(true)?;
                tracing::info!(%addr, "API listening on TCP");
                Some(TcpListener::from_std(std)?)
            }
            None => None,
        };
        Ok(Listeners {
            unix,
            tcp,
            max_connections: config.max_connections,
        })
    }

    /// Serves `router` on every listener until `shutdown` completes and
    /// the open connections are done (or `drain` passed); then removes the
    /// socket file.
    /// `on_shed` is told each time an idle connection is closed to make
    /// room for a new one.
    pub fn serve(
        self,
        router: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
        on_shed: Arc<dyn Fn() + Send + Sync>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let slots = Arc::new(Semaphore::new(self.max_connections));
        let connections = Arc::new(Connections::default());
        async move {
            let mut tasks = tokio::task::JoinSet::new();
            let mut socket_file = None;
            if let Some((listener, file)) = self.unix {
                socket_file = Some(file);
                let listener = Arc::new(listener);
                tasks.spawn(accept_loop(
                    move || {
                        let listener = Arc::clone(&listener);
                        async move { listener.accept().await.map(|(s, _)| s) }
                    },
                    router.clone(),
                    Room {
                        slots: Arc::clone(&slots),
                        connections: Arc::clone(&connections),
                        on_shed: Arc::clone(&on_shed),
                    },
                    rx.clone(),
                ));
            }
            if let Some(listener) = self.tcp {
                let listener = Arc::new(listener);
                tasks.spawn(accept_loop(
                    move || {
                        let listener = Arc::clone(&listener);
                        async move { listener.accept().await.map(|(s, _)| s) }
                    },
                    router,
                    Room {
                        slots: Arc::clone(&slots),
                        connections: Arc::clone(&connections),
                        on_shed,
                    },
                    rx.clone(),
                ));
            }
            shutdown.await;
            let _ = tx.send(true);
            while tasks.join_next().await.is_some() {}
            drop(socket_file);
        }
    }
}

/// The connection cap, shared by every listener, and how room is made.
struct Room {
    slots: Arc<Semaphore>,
    connections: Arc<Connections>,
    on_shed: Arc<dyn Fn() + Send + Sync>,
}

impl Room {
    /// A slot for a new connection: a free one, or one an idle connection
    /// gives up for it.
    async fn slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
            return Some(permit);
        }
        if !self.connections.shed_idlest() {
            return None;
        }
        (self.on_shed)();
        tokio::time::timeout(SHED_WAIT, Arc::clone(&self.slots).acquire_owned())
            .await
            .ok()?
            .ok()
    }
}

/// Accepts connections until `stop`, serving each with timeouts and within
/// the room's slots; then waits for the open ones to finish their requests.
async fn accept_loop<S, A, F>(
    mut accept: A,
    router: Router,
    room: Room,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    A: FnMut() -> F,
    F: Future<Output = io::Result<S>>,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut refused = 0u64;
    let mut last_log: Option<tokio::time::Instant> = None;
    loop {
        let stream = tokio::select! {
            accepted = accept() => match accepted {
                Ok(stream) => stream,
                Err(e) => {
                    // Out of descriptors (EMFILE) and the like: back off briefly.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
        };
        let Some(permit) = room.slot().await else {
            refused += 1;
            if last_log.is_none_or(|t| t.elapsed() >= REFUSED_LOG_EVERY) {
                tracing::warn!(
                    refused,
                    "connection limit (api.max_connections) reached with every connection serving a request: closing new connections"
                );
                last_log = Some(tokio::time::Instant::now());
            }
            drop(stream);
            continue;
        };
        let verdict = Verdict::new();
        let (id, shed) = room.connections.add(Arc::clone(&verdict));
        let io = hyper_util::rt::TokioIo::new(HeadGuard::new(stream, Arc::clone(&verdict)));
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
            if let Some(rejection) = verdict.rejection_for(request.uri().path()) {
                request.extensions_mut().insert(Rejected(rejection.clone()));
            }
            tower_service::Service::call(&mut router.clone(), request)
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            // The guard enforces the limit with a JSON answer; hyper's own
            // (bare) one is only a backstop above it.
            .max_header_size(2 * MAX_HEADER_BYTES)
            .serve_connection(io, service);
        let connection = graceful.watch(connection);
        let connections = Arc::clone(&room.connections);
        tokio::spawn(async move {
            tokio::select! {
                ended = connection => {
                    if let Err(e) = ended {
                        tracing::debug!("connection ended: {e}");
                    }
                }
                () = shed.notified() => tracing::debug!("idle connection shed for a new one"),
            }
            connections.remove(id);
            drop(permit);
        });
    }
    graceful.shutdown().await;
}

fn bind_unix(
    path: &Path,
    mode: u32,
    group: Option<&str>,
) -> anyhow::Result<(UnixListener, SocketFile)> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!(
                    "{} is in use by a running process (another agent?)",
                    path.display()
                );
            }
            tracing::info!(path = %path.display(), "removing stale socket");
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale socket {}", path.display()))?;
        }
        Ok(_) => bail!(
            "{} exists and is not a socket; refusing to replace it",
            path.display()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("checking {}", path.display())),
    }
    // The mask is process-wide: it is restored right after bind, before any
    // other file is created (the service binds before it starts anything).
    let old = umask(Mode::from_bits_truncate(!mode & 0o777));
    let bound = std::os::unix::net::UnixListener::bind(path);
    umask(old);
    let std = bound.with_context(|| format!("binding {}", path.display()))?;
    let meta =
        std::fs::symlink_metadata(path).with_context(|| format!("checking {}", path.display()))?;
    let file = SocketFile {
        path: path.to_path_buf(),
        identity: identity(&meta),
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))?;
    if let Some(group) = group {
        let gid = group_id(group)?;
        std::os::unix::fs::chown(path, None, Some(gid))
            .with_context(|| format!("chgrp {group} {}", path.display()))?;
    }
    std.set_nonblocking(true)?;
    tracing::info!(path = %path.display(), mode = format!("{mode:o}"), "API listening on unix socket");
    Ok((UnixListener::from_std(std)?, file))
}

/// A group name or numeric id.
fn group_id(group: &str) -> anyhow::Result<u32> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    match Group::from_name(group).with_context(|| format!("looking up group {group:?}"))? {
        Some(g) => Ok(g.gid.as_raw()),
        None => bail!("unknown group {group:?}"),
    }
}
