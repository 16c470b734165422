//! One capture shared by every trace in the process.
//!
//! The backend (eBPF programs, or the packet socket fallback) delivers matched
//! packets tagged with the cookie of their flow; a dispatcher task routes them to
//! the trace that registered the flow. Registering a flow is what makes its
//! packets visible at all: in eBPF mode the kernel drops nothing and forwards
//! nothing else.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use traceroute_common::{Direction, EventKind, FlowKey};

use super::CapturedPacket;
use super::ebpf::{Drain, EbpfCapture, EbpfCaptureError};
use super::socket::{Classifier, SocketCapture};
use crate::sync::{LockExt, RwLockExt};

/// Which capture to use (asked for; [`CaptureMethod`] is what runs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureMode {
    /// eBPF when it loads, sockets otherwise.
    Auto,
    Ebpf,
    Socket,
}

impl CaptureMode {
    pub const ALL: [CaptureMode; 3] = [CaptureMode::Auto, CaptureMode::Ebpf, CaptureMode::Socket];

    /// Its name in every interface (`--capture`, the config's `capture`).
    pub const fn as_str(self) -> &'static str {
        match self {
            CaptureMode::Auto => "auto",
            CaptureMode::Ebpf => "ebpf",
            CaptureMode::Socket => "socket",
        }
    }
}

impl std::str::FromStr for CaptureMode {
    type Err = crate::error::UnknownName;

    fn from_str(text: &str) -> Result<CaptureMode, Self::Err> {
        CaptureMode::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(text))
            .ok_or_else(|| crate::error::UnknownName::new("capture", text, "auto, ebpf or socket"))
    }
}

/// The capture that runs. One name everywhere: records (`capture.method`),
/// `/health`, logs and the CLI say `ebpf` or `socket`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureMethod {
    /// TC programs; probes and replies stamped with `bpf_ktime_get_ns`.
    Ebpf,
    /// Packet sockets; replies stamped with SO_TIMESTAMPNS.
    Socket,
}

impl CaptureMethod {
    pub const fn as_str(self) -> &'static str {
        match self {
            CaptureMethod::Ebpf => "ebpf",
            CaptureMethod::Socket => "socket",
        }
    }
}

impl std::fmt::Display for CaptureMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    Ebpf(#[from] EbpfCaptureError),
    #[error("socket capture: {0}")]
    Socket(#[source] std::io::Error),
    #[error("flow {0:?} is already registered by another trace")]
    FlowInUse(FlowKey),
}

impl CaptureError {
    /// The capture was refused a privilege (EPERM/EACCES somewhere inside).
    pub fn is_permission(&self) -> bool {
        super::is_permission(self)
    }
}

/// Per-flow queue depth; more means something floods us with spoofed replies.
const FLOW_QUEUE: usize = 1024;

/// A cheap, cloneable handle to the process's capture.
#[derive(Clone)]
pub struct Capture {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Mutex<Backend>,
    method: CaptureMethod,
    /// Registered flows and their cookies (the socket backend classifies with it).
    flows: Arc<RwLock<HashMap<FlowKey, u32>>>,
    subscribers: Mutex<HashMap<u32, mpsc::Sender<CapturedPacket>>>,
    next_cookie: AtomicU32,
    /// Subscriptions that want bare TCP ACKs ([`Capture::want_tcp_acks`]);
    /// shared with the socket backend's classifier.
    tcp_ack_wanted_by: Arc<AtomicU32>,
    stats: Stats,
    dispatcher: Mutex<Option<JoinHandle<()>>>,
    /// The eBPF backend's ring reader, asked to look after each send.
    drain: Option<Drain>,
}

enum Backend {
    Ebpf(EbpfCapture),
    Socket(#[allow(dead_code)] SocketCapture),
}

#[derive(Default)]
struct Stats {
    delivered: AtomicU64,
    /// Packets for a flow nobody listens to any more (late replies).
    unclaimed: AtomicU64,
    /// Packets dropped because a trace's queue was full.
    overflowed: AtomicU64,
}

impl Capture {
    /// Starts the capture. `Auto` tries eBPF and falls back to sockets with a log line.
    pub fn start(mode: CaptureMode) -> Result<Self, CaptureError> {
        let flows = Arc::new(RwLock::new(HashMap::new()));
        let tcp_ack_wanted_by = Arc::new(AtomicU32::new(0));
        let (tx, rx) = mpsc::channel(8192);
        let (backend, method) = match mode {
            CaptureMode::Ebpf => (start_ebpf(tx)?, CaptureMethod::Ebpf),
            CaptureMode::Socket => (
                start_socket(&flows, &tcp_ack_wanted_by, tx)?,
                CaptureMethod::Socket,
            ),
            CaptureMode::Auto => match start_ebpf(tx.clone()) {
                Ok(b) => (b, CaptureMethod::Ebpf),
                Err(e) => {
                    let needs = if e.is_permission() {
                        " (loading and attaching it needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN)"
                    } else {
                        ""
                    };
                    tracing::warn!(
                        "eBPF capture unavailable ({e}){needs}; falling back to socket capture"
                    );
                    (
                        start_socket(&flows, &tcp_ack_wanted_by, tx)?,
                        CaptureMethod::Socket,
                    )
                }
            },
        };
        let drain = match &backend {
            Backend::Ebpf(e) => Some(e.drain()),
            Backend::Socket(_) => None,
        };
        let inner = Arc::new(Inner {
            drain,
            backend: Mutex::new(backend),
            method,
            flows,
            subscribers: Mutex::new(HashMap::new()),
            next_cookie: AtomicU32::new(1),
            tcp_ack_wanted_by,
            stats: Stats::default(),
            dispatcher: Mutex::new(None),
        });
        let task = tokio::spawn(dispatch(Arc::downgrade(&inner), rx));
        *inner.dispatcher.locked() = Some(task);
        tracing::info!(%method, "capture started");
        Ok(Self { inner })
    }

    pub fn method(&self) -> CaptureMethod {
        self.inner.method
    }

    /// Tells the capture a probe just left, so it hands over the probe's
    /// departure now (the eBPF programs do not wake user space for it).
    pub fn sent(&self) {
        if let Some(drain) = &self.inner.drain {
            drain.now();
        }
    }

    /// Makes sure probes leaving and replies arriving on `ifname` are seen.
    /// A no-op for the socket backend, which sees every interface.
    pub fn watch_interface(&self, ifname: &str) -> Result<(), CaptureError> {
        match &mut *self.inner.backend.locked() {
            Backend::Ebpf(e) => Ok(e.attach(ifname)?),
            Backend::Socket(_) => Ok(()),
        }
    }

    /// Watches every interface that is up (replies may come back on another
    /// interface than the probes left by).
    pub fn watch_all_interfaces(&self) -> Result<Vec<String>, CaptureError> {
        let mut watched = Vec::new();
        for name in super::interface::up_interfaces() {
            match self.watch_interface(&name) {
                Ok(()) => watched.push(name),
                Err(e) => tracing::warn!(interface = name, "not watching: {e}"),
            }
        }
        Ok(watched)
    }

    /// Registers a probe flow; its packets arrive on the returned subscription
    /// until it is dropped.
    pub fn register(&self, flow: FlowKey) -> Result<FlowSubscription, CaptureError> {
        let cookie = self.inner.next_cookie.fetch_add(1, Ordering::Relaxed);
        {
            let mut flows = self.inner.flows.write_locked();
            if flows.contains_key(&flow) {
                return Err(CaptureError::FlowInUse(flow));
            }
            flows.insert(flow, cookie);
        }
        let (tx, rx) = mpsc::channel(FLOW_QUEUE);
        self.inner.subscribers.locked().insert(cookie, tx);
        if let Backend::Ebpf(e) = &mut *self.inner.backend.locked()
            && let Err(err) = e.insert_flow(&flow, cookie)
        {
            self.forget(&flow, cookie);
            return Err(err.into());
        }
        Ok(FlowSubscription {
            flow,
            cookie,
            rx,
            capture: self.clone(),
            wants_tcp_acks: false,
        })
    }

    /// Also delivers bare TCP ACKs of `subscription`'s flow (a trace inside
    /// an established connection), until it is dropped. The kernel looks
    /// ACKs up only while some subscription wants them.
    pub fn want_tcp_acks(&self, subscription: &mut FlowSubscription) -> Result<(), CaptureError> {
        if subscription.wants_tcp_acks {
            return Ok(());
        }
        if self.inner.tcp_ack_wanted_by.fetch_add(1, Ordering::SeqCst) == 0 {
            self.set_tcp_acks(true)?;
        }
        subscription.wants_tcp_acks = true;
        Ok(())
    }

    fn set_tcp_acks(&self, on: bool) -> Result<(), CaptureError> {
        match &mut *self.inner.backend.locked() {
            Backend::Ebpf(e) => Ok(e.set_tcp_acks(on)?),
            Backend::Socket(_) => Ok(()),
        }
    }

    fn forget(&self, flow: &FlowKey, cookie: u32) {
        self.inner.flows.write_locked().remove(flow);
        self.inner.subscribers.locked().remove(&cookie);
        if let Backend::Ebpf(e) = &mut *self.inner.backend.locked()
            && let Err(err) = e.remove_flow(flow)
        {
            tracing::warn!("removing flow from the kernel map: {err}");
        }
    }

    /// Counters of the capture (kernel counters in eBPF mode, plus dispatch ones).
    pub fn counters(&self) -> BTreeMap<&'static str, u64> {
        let mut out = match &*self.inner.backend.locked() {
            Backend::Ebpf(e) => e.counters().unwrap_or_default(),
            Backend::Socket(_) => BTreeMap::new(),
        };
        let s = &self.inner.stats;
        out.insert("delivered", s.delivered.load(Ordering::Relaxed));
        out.insert("unclaimed", s.unclaimed.load(Ordering::Relaxed));
        out.insert("queue_overflow", s.overflowed.load(Ordering::Relaxed));
        out
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.dispatcher.locked().take() {
            task.abort();
        }
    }
}

fn start_ebpf(tx: mpsc::Sender<CapturedPacket>) -> Result<Backend, CaptureError> {
    let mut capture = EbpfCapture::load()?;
    let mut events = capture.events(8192)?;
    tokio::spawn(async move {
        while let Some(p) = events.recv().await {
            if tx.send(p).await.is_err() {
                return;
            }
        }
    });
    Ok(Backend::Ebpf(capture))
}

fn start_socket(
    flows: &Arc<RwLock<HashMap<FlowKey, u32>>>,
    tcp_ack_wanted_by: &Arc<AtomicU32>,
    tx: mpsc::Sender<CapturedPacket>,
) -> Result<Backend, CaptureError> {
    let flows = Arc::clone(flows);
    let tcp_ack_wanted_by = Arc::clone(tcp_ack_wanted_by);
    let classify: Classifier = Box::new(move |bytes: &[u8], direction: Direction| {
        let tcp_acks = tcp_ack_wanted_by.load(Ordering::Relaxed) > 0;
        let (kind, flow) = super::classify::classify(bytes, direction, tcp_acks)?;
        let cookie = *flows.read_locked().get(&flow)?;
        Some((kind, cookie))
    });
    SocketCapture::start(classify, tx)
        .map(Backend::Socket)
        .map_err(CaptureError::Socket)
}

async fn dispatch(inner: Weak<Inner>, mut rx: mpsc::Receiver<CapturedPacket>) {
    while let Some(packet) = rx.recv().await {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let tx = inner.subscribers.locked().get(&packet.cookie).cloned();
        let stats = &inner.stats;
        match tx {
            None => stats.unclaimed.fetch_add(1, Ordering::Relaxed),
            Some(tx) => match tx.try_send(packet) {
                Ok(()) => stats.delivered.fetch_add(1, Ordering::Relaxed),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    stats.overflowed.fetch_add(1, Ordering::Relaxed)
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    stats.unclaimed.fetch_add(1, Ordering::Relaxed)
                }
            },
        };
    }
}

/// Packets of one registered flow. Dropping it unregisters the flow.
pub struct FlowSubscription {
    pub flow: FlowKey,
    pub cookie: u32,
    rx: mpsc::Receiver<CapturedPacket>,
    capture: Capture,
    wants_tcp_acks: bool,
}

impl FlowSubscription {
    /// The next packet of the flow; `None` once the capture is gone.
    pub async fn recv(&mut self) -> Option<CapturedPacket> {
        self.rx.recv().await
    }

    /// Says a probe of the flow just left (see [`Capture::sent`]).
    pub fn sent(&self) {
        self.capture.sent();
    }

    /// A packet that is already queued, without waiting.
    pub fn try_recv(&mut self) -> Option<CapturedPacket> {
        self.rx.try_recv().ok()
    }

    pub fn method(&self) -> CaptureMethod {
        self.capture.method()
    }
}

impl Drop for FlowSubscription {
    fn drop(&mut self) {
        self.capture.forget(&self.flow, self.cookie);
        let acks = &self.capture.inner.tcp_ack_wanted_by;
        if self.wants_tcp_acks
            && acks.fetch_sub(1, Ordering::SeqCst) == 1
            && let Err(e) = self.capture.set_tcp_acks(false)
        {
            tracing::warn!("turning TCP ACK capture off: {e}");
        }
    }
}

/// What a kind means to a person (logs, JSON).
pub fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Probe => "probe",
        EventKind::TimeExceeded => "time_exceeded",
        EventKind::DestUnreachable => "dest_unreachable",
        EventKind::TcpSynAck => "tcp_syn_ack",
        EventKind::TcpRst => "tcp_rst",
        EventKind::EchoReply => "echo_reply",
        EventKind::PacketTooBig => "packet_too_big",
        EventKind::TcpAck => "tcp_ack",
    }
}
