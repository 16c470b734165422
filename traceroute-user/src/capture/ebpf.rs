//! Loads the embedded TC programs, attaches them, and streams their events.

use std::collections::BTreeMap;

use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::{SchedClassifier, TcAttachType, tc::SchedClassifierLinkId};
use aya::{Ebpf, EbpfLoader};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use traceroute_common::{
    COUNTERS_MAP, CaptureEvent, Counter, EGRESS_PROGRAM, EVENTS_MAP, FLOWS_MAP, FlowKey,
    FlowValue, INGRESS_PROGRAM, INTERFACES_MAP, InterfaceConfig, SETTINGS_MAP, Setting,
};

use super::CapturedPacket;
use super::interface;
use crate::clock::WallClockOffset;

/// The eBPF object built by build.rs; empty when the agent was built without
/// the BPF toolchain.
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/traceroute-ebpf.o"));

#[derive(Debug, thiserror::Error)]
pub enum EbpfCaptureError {
    #[error(
        "this binary was built without the eBPF programs (run `cargo xtask setup`, then rebuild)"
    )]
    NotBuiltIn,
    #[error("loading the eBPF programs failed: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("eBPF program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("eBPF map {0} is missing from the object")]
    MissingMap(&'static str),
    #[error("interface {name}: {source}")]
    Interface {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("attaching to {interface}: {source}")]
    Attach {
        interface: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("watching the ring buffer: {0}")]
    Poll(#[from] std::io::Error),
}

impl EbpfCaptureError {
    /// The kernel refused a privilege (EPERM/EACCES somewhere inside).
    pub fn is_permission(&self) -> bool {
        super::is_permission(self)
    }
}

/// Kernel-measured cost of one program (BPF_ENABLE_STATS run time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramStats {
    pub program: &'static str,
    pub runs: u64,
    pub run_time: std::time::Duration,
}

impl ProgramStats {
    /// Mean kernel time per packet, in nanoseconds.
    pub fn ns_per_run(&self) -> Option<f64> {
        (self.runs > 0).then(|| self.run_time.as_nanos() as f64 / self.runs as f64)
    }
}

/// Turns on the kernel's per-program run-time accounting for as long as the
/// returned descriptor lives (it costs two clock reads per program run).
pub fn enable_run_time_stats() -> Result<std::os::fd::OwnedFd, EbpfCaptureError> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .map_err(|e| EbpfCaptureError::Poll(std::io::Error::other(e.to_string())))
}

/// Both programs, with the direction each attaches to.
const PROGRAMS: [&str; 2] = [INGRESS_PROGRAM, EGRESS_PROGRAM];

fn attach_type(program: &str) -> TcAttachType {
    if program == EGRESS_PROGRAM {
        TcAttachType::Egress
    } else {
        TcAttachType::Ingress
    }
}

fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, EbpfCaptureError> {
    ebpf.program_mut(name)
        .ok_or(EbpfCaptureError::Program {
            name,
            source: aya::programs::ProgramError::UnexpectedProgramType,
        })?
        .try_into()
        .map_err(|source| EbpfCaptureError::Program { name, source })
}

/// The loaded programs. Dropping it detaches every attachment and unloads the
/// programs (TCX links and the maps live as long as their file descriptors).
pub struct EbpfCapture {
    ebpf: Ebpf,
    /// (interface index, program) -> (interface name, link). By index: an
    /// interface deleted and created again under the same name is a new
    /// interface, and is attached again.
    attached: BTreeMap<(u32, &'static str), (String, SchedClassifierLinkId)>,
    /// Asks the ring's reader to look now (egress events do not wake it).
    drain: Drain,
    /// A socket that asks for receive stamps, so the stack takes one for
    /// every packet while the capture lives (the kernel stamps only while
    /// some socket wants them); `None` if it could not be opened, and then
    /// replies carry the programs' own stamps.
    _receive_stamps: Option<std::os::fd::OwnedFd>,
}

impl EbpfCapture {
    /// Loads the programs into the kernel (nothing is attached yet).
    pub fn load() -> Result<Self, EbpfCaptureError> {
        if EBPF_OBJECT.is_empty() {
            return Err(EbpfCaptureError::NotBuiltIn);
        }
        // The programs log nothing: a log record per packet costs a wake-up
        // of its reader in the packet's path (tens of microseconds between a
        // probe's stamp and the wire, measured). The counters say what they do.
        let mut ebpf = EbpfLoader::new().load(EBPF_OBJECT)?;
        for name in PROGRAMS {
            classifier(&mut ebpf, name)?
                .load()
                .map_err(|source| EbpfCaptureError::Program { name, source })?;
        }
        Ok(Self {
            ebpf,
            attached: BTreeMap::new(),
            drain: Drain::default(),
            _receive_stamps: ask_for_receive_stamps(),
        })
    }

    /// Attaches both programs to `ifname` (idempotent).
    pub fn attach(&mut self, ifname: &str) -> Result<(), EbpfCaptureError> {
        let iface_err = |source| EbpfCaptureError::Interface {
            name: ifname.to_string(),
            source,
        };
        let ifindex = interface::ifindex(ifname).map_err(iface_err)?;
        let l2_len = interface::l2_header_len(ifname).map_err(iface_err)?;
        let map_err = |source| EbpfCaptureError::Map {
            name: INTERFACES_MAP,
            source,
        };
        let mut interfaces: BpfHashMap<_, u32, InterfaceConfig> = BpfHashMap::try_from(
            self.ebpf
                .map_mut(INTERFACES_MAP)
                .ok_or(EbpfCaptureError::MissingMap(INTERFACES_MAP))?,
        )
        .map_err(map_err)?;
        interfaces
            .insert(ifindex, InterfaceConfig { l2_len }, 0)
            .map_err(map_err)?;

        // Kernels before 6.6 have no TCX and need a clsact qdisc; an existing one is fine.
        let tcx = aya::util::KernelVersion::new(6, 6, 0);
        if aya::util::KernelVersion::current().is_ok_and(|v| v < tcx) {
            let _ = aya::programs::tc::qdisc_add_clsact(ifname);
        }
        self.forget_gone_interfaces();
        // Each TCX attachment waits for an RCU grace period (10-20 ms here);
        // attached side by side, the two overlap. (Detaching is serialised by
        // the kernel, so it gains nothing from the same trick.)
        let wanted: Vec<&'static str> = PROGRAMS
            .into_iter()
            .filter(|name| !self.attached.contains_key(&(ifindex, *name)))
            .collect();
        // Every trace asks for its interface: only a new attachment is news
        // (and worth a log line).
        if wanted.is_empty() {
            return Ok(());
        }
        let mut programs: Vec<(&'static str, &mut SchedClassifier)> = Vec::new();
        for (name, program) in self.ebpf.programs_mut() {
            if let Some(wanted) = wanted.iter().find(|w| **w == name) {
                let classifier: &mut SchedClassifier =
                    program
                        .try_into()
                        .map_err(|source| EbpfCaptureError::Program {
                            name: wanted,
                            source,
                        })?;
                programs.push((*wanted, classifier));
            }
        }
        let links: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = programs
                .into_iter()
                .map(|(name, program)| {
                    scope.spawn(move || (name, program.attach(ifname, attach_type(name))))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("attach thread"))
                .collect()
        });
        for (name, link) in links {
            let link = link.map_err(|source| EbpfCaptureError::Attach {
                interface: ifname.to_string(),
                source,
            })?;
            self.attached
                .insert((ifindex, name), (ifname.to_string(), link));
        }
        tracing::info!(interface = ifname, ifindex, l2_len, "capture attached");
        Ok(())
    }

    /// Drops what we remember of interfaces that no longer exist (the kernel
    /// detached the programs from them when they went away).
    fn forget_gone_interfaces(&mut self) {
        let gone: Vec<(u32, &'static str)> = self
            .attached
            .keys()
            .filter(|(ifindex, _)| interface::ifname(*ifindex).is_none())
            .copied()
            .collect();
        for key in gone {
            let Some((ifname, link)) = self.attached.remove(&key) else {
                continue;
            };
            if let Ok(program) = classifier(&mut self.ebpf, key.1) {
                drop(program.take_link(link));
            }
            tracing::info!(
                interface = ifname,
                ifindex = key.0,
                "interface gone; forgotten"
            );
        }
    }

    fn flows(&mut self) -> Result<BpfHashMap<&mut MapData, FlowKey, FlowValue>, EbpfCaptureError> {
        BpfHashMap::try_from(
            self.ebpf
                .map_mut(FLOWS_MAP)
                .ok_or(EbpfCaptureError::MissingMap(FLOWS_MAP))?,
        )
        .map_err(|source| EbpfCaptureError::Map {
            name: FLOWS_MAP,
            source,
        })
    }

    /// Tells the programs that packets of `flow` are ours, tagged with `cookie`.
    pub fn insert_flow(&mut self, flow: &FlowKey, cookie: u32) -> Result<(), EbpfCaptureError> {
        self.flows()?
            .insert(flow, FlowValue { cookie }, 0)
            .map_err(|source| EbpfCaptureError::Map {
                name: FLOWS_MAP,
                source,
            })
    }

    /// Diagnostics: also capture probe- and reply-like packets of unregistered
    /// flows (with cookie 0).
    pub fn capture_unregistered(&mut self, on: bool) -> Result<(), EbpfCaptureError> {
        self.set(Setting::CaptureUnregistered, on)
    }

    /// Looks bare TCP ACKs up too (traces inside a connection), or not.
    pub fn set_tcp_acks(&mut self, on: bool) -> Result<(), EbpfCaptureError> {
        self.set(Setting::TcpAcks, on)
    }

    fn set(&mut self, setting: Setting, on: bool) -> Result<(), EbpfCaptureError> {
        let map_err = |source| EbpfCaptureError::Map {
            name: SETTINGS_MAP,
            source,
        };
        let mut settings: Array<_, u32> = Array::try_from(
            self.ebpf
                .map_mut(SETTINGS_MAP)
                .ok_or(EbpfCaptureError::MissingMap(SETTINGS_MAP))?,
        )
        .map_err(map_err)?;
        settings
            .set(setting as u32, u32::from(on), 0)
            .map_err(map_err)
    }

    /// Forgets `flow`; later packets of it pass without reaching userspace.
    pub fn remove_flow(&mut self, flow: &FlowKey) -> Result<(), EbpfCaptureError> {
        self.flows()?
            .remove(flow)
            .map_err(|source| EbpfCaptureError::Map {
                name: FLOWS_MAP,
                source,
            })
    }

    /// Takes the ring buffer and forwards its events to a channel from a tokio
    /// task; call once. The task ends when the receiver is dropped.
    pub fn events(
        &mut self,
        capacity: usize,
    ) -> Result<mpsc::Receiver<CapturedPacket>, EbpfCaptureError> {
        let map = self
            .ebpf
            .take_map(EVENTS_MAP)
            .ok_or(EbpfCaptureError::MissingMap(EVENTS_MAP))?;
        let ring = RingBuf::try_from(map).map_err(|source| EbpfCaptureError::Map {
            name: EVENTS_MAP,
            source,
        })?;
        // SAFETY: the ring buffer owns its fd and keeps it open while the AsyncFd lives.
        let fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(std::io::Error::from)?;
        let (tx, rx) = mpsc::channel(capacity);
        tokio::spawn(read_ring(fd, tx, self.drain.clone()));
        Ok(rx)
    }

    /// What asks the reader of [`Self::events`] to drain the ring: call
    /// it after sending (egress events do not wake the reader).
    pub fn drain(&self) -> Drain {
        self.drain.clone()
    }

    /// Names of the TCX programs attached to `ifname` in the current network
    /// namespace, per direction (ours or anyone's): for checks that nothing is
    /// left behind (the integration tests').
    #[cfg(any(test, feature = "internals"))]
    pub fn tcx_programs(
        ifname: &str,
    ) -> Result<Vec<(traceroute_common::Direction, String)>, EbpfCaptureError> {
        use traceroute_common::Direction;
        let mut out = Vec::new();
        for (direction, attach) in [
            (Direction::Ingress, TcAttachType::Ingress),
            (Direction::Egress, TcAttachType::Egress),
        ] {
            let (_, programs) = SchedClassifier::query_tcx(ifname, attach).map_err(|source| {
                EbpfCaptureError::Attach {
                    interface: ifname.to_string(),
                    source,
                }
            })?;
            for p in programs {
                out.push((direction, p.name_as_str().unwrap_or("?").to_string()));
            }
        }
        Ok(out)
    }

    /// Runs one program on `frame` (an Ethernet frame) with BPF_PROG_TEST_RUN and
    /// returns its verdict and the events it emitted, read synchronously. For
    /// tests; only before [`Self::events`] took the ring buffer.
    #[cfg(any(test, feature = "internals"))]
    pub fn test_run(
        &mut self,
        direction: traceroute_common::Direction,
        frame: &[u8],
    ) -> Result<(i32, Vec<CapturedPacket>), EbpfCaptureError> {
        use aya::programs::{TestRun, TestRunOptions};
        use traceroute_common::Direction;
        let name = match direction {
            Direction::Ingress => INGRESS_PROGRAM,
            Direction::Egress => EGRESS_PROGRAM,
        };
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        let result = classifier(&mut self.ebpf, name)?
            .test_run(opts)
            .map_err(|source| EbpfCaptureError::Program { name, source })?;
        let mut ring = RingBuf::try_from(
            self.ebpf
                .map_mut(EVENTS_MAP)
                .ok_or(EbpfCaptureError::MissingMap(EVENTS_MAP))?,
        )
        .map_err(|source| EbpfCaptureError::Map {
            name: EVENTS_MAP,
            source,
        })?;
        let wall = WallClockOffset::measure();
        let mut events = Vec::new();
        while let Some(item) = ring.next() {
            events.extend(decode_event(&item, &wall));
        }
        Ok((result.return_value as i32, events))
    }

    /// How often each program ran and the kernel time it took in total. Only
    /// counted while BPF run-time statistics are on (see [`enable_run_time_stats`]).
    pub fn program_stats(&self) -> Result<Vec<ProgramStats>, EbpfCaptureError> {
        PROGRAMS
            .into_iter()
            .map(|name| {
                let program: &SchedClassifier = self
                    .ebpf
                    .program(name)
                    .ok_or(EbpfCaptureError::Program {
                        name,
                        source: aya::programs::ProgramError::UnexpectedProgramType,
                    })?
                    .try_into()
                    .map_err(|source| EbpfCaptureError::Program { name, source })?;
                let info = program
                    .info()
                    .map_err(|source| EbpfCaptureError::Program { name, source })?;
                Ok(ProgramStats {
                    program: name,
                    runs: info.run_count(),
                    run_time: info.run_time(),
                })
            })
            .collect()
    }

    /// Sums the per-CPU counters of the programs.
    pub fn counters(&self) -> Result<BTreeMap<&'static str, u64>, EbpfCaptureError> {
        let map_err = |source| EbpfCaptureError::Map {
            name: COUNTERS_MAP,
            source,
        };
        let array: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(
            self.ebpf
                .map(COUNTERS_MAP)
                .ok_or(EbpfCaptureError::MissingMap(COUNTERS_MAP))?,
        )
        .map_err(map_err)?;
        let mut out = BTreeMap::new();
        for counter in Counter::ALL {
            let per_cpu = array.get(&(counter as u32), 0).map_err(map_err)?;
            out.insert(counter.name(), per_cpu.iter().sum());
        }
        Ok(out)
    }
}

impl Drop for EbpfCapture {
    fn drop(&mut self) {
        for ((ifindex, name), (ifname, link)) in std::mem::take(&mut self.attached) {
            let detached = classifier(&mut self.ebpf, name).and_then(|p| {
                p.detach(link)
                    .map_err(|source| EbpfCaptureError::Program { name, source })
            });
            match detached {
                Ok(()) => tracing::debug!(interface = ifname, program = name, "detached"),
                // The interface is gone, and the kernel dropped the attachment with it.
                Err(_) if interface::ifname(ifindex).is_none() => {
                    tracing::debug!(
                        interface = ifname,
                        ifindex,
                        "interface gone before detaching"
                    );
                }
                Err(e) => tracing::warn!(interface = ifname, "detaching capture: {e}"),
            }
        }
    }
}

/// A datagram socket with SO_TIMESTAMPNS on: while it is open the kernel
/// stamps every packet it receives, in every network namespace.
fn ask_for_receive_stamps() -> Option<std::os::fd::OwnedFd> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, setsockopt, socket, sockopt};
    let opened = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .and_then(|fd| setsockopt(&fd, sockopt::ReceiveTimestampns, &true).map(|()| fd));
    match opened {
        Ok(fd) => Some(fd),
        Err(e) => {
            tracing::warn!("receive stamps not enabled ({e}): replies carry the programs' stamps");
            None
        }
    }
}

/// Asks the ring's reader to look now. The programs hand over egress events
/// (our own sends) without waking it: the wake-up's inter-processor
/// interrupt would run in the sender's path between the probe's stamp and
/// the wire. Whoever sends asks for them this way, off that path.
#[derive(Clone, Debug, Default)]
pub struct Drain(std::sync::Arc<tokio::sync::Notify>);

impl Drain {
    pub fn now(&self) {
        self.0.notify_one();
    }
}

async fn read_ring(
    mut fd: AsyncFd<RingBuf<MapData>>,
    tx: mpsc::Sender<CapturedPacket>,
    drain: Drain,
) {
    loop {
        tokio::select! {
            ready = fd.readable_mut() => {
                let mut guard = match ready {
                    Ok(g) => g,
                    Err(e) => {
                        tracing::error!("ring buffer poll failed: {e}");
                        return;
                    }
                };
                if !forward(guard.get_inner_mut(), &tx).await {
                    return;
                }
                guard.clear_ready();
            }
            () = drain.0.notified() => {
                if !forward(fd.get_mut(), &tx).await {
                    return;
                }
            }
        }
    }
}

/// Hands every event in the ring on; `false` once nobody listens.
async fn forward(ring: &mut RingBuf<MapData>, tx: &mpsc::Sender<CapturedPacket>) -> bool {
    // Read per pass: a step of the wall clock since the last one must not
    // shift the receive stamps decoded now.
    let wall = WallClockOffset::measure();
    while let Some(item) = ring.next() {
        let Some(packet) = decode_event(&item, &wall) else {
            tracing::warn!(len = item.len(), "ignoring malformed capture event");
            continue;
        };
        if tx.send(packet).await.is_err() {
            return false;
        }
    }
    true
}

fn decode_event(bytes: &[u8], wall: &WallClockOffset) -> Option<CapturedPacket> {
    if bytes.len() < size_of::<CaptureEvent>() {
        return None;
    }
    // SAFETY: length checked; CaptureEvent is plain data valid for any bits;
    // read_unaligned because ring buffer records are only 8-byte aligned by contract.
    let event: CaptureEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    CapturedPacket::from_event(&event, wall)
}

