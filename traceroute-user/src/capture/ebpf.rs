//! Loads the embedded TC programs, attaches them, and streams their events.

use std::collections::BTreeMap;

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::{SchedClassifier, TcAttachType, tc::SchedClassifierLinkId};
use aya::{Ebpf, EbpfLoader};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use traceroute_common::{
    COUNTERS_MAP, CaptureEvent, Counter, EVENTS_MAP, INGRESS_PROGRAM, INTERFACES_MAP,
    InterfaceConfig,
};

use super::CapturedPacket;
use super::interface;

/// The eBPF object built by build.rs; empty when the agent was built without
/// the BPF toolchain.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/traceroute-ebpf.o"));

#[derive(Debug, thiserror::Error)]
pub enum EbpfCaptureError {
    #[error("this binary was built without the eBPF programs (run `cargo xtask setup`, then rebuild)")]
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

/// The loaded programs. Dropping it detaches every attachment and unloads the
/// programs (TCX links and the maps live as long as their file descriptors).
pub struct EbpfCapture {
    ebpf: Ebpf,
    attached: BTreeMap<String, SchedClassifierLinkId>,
    log_task: Option<JoinHandle<()>>,
}

impl EbpfCapture {
    /// Loads the programs into the kernel (nothing is attached yet).
    pub fn load() -> Result<Self, EbpfCaptureError> {
        if EBPF_OBJECT.is_empty() {
            return Err(EbpfCaptureError::NotBuiltIn);
        }
        let mut ebpf = EbpfLoader::new().load(EBPF_OBJECT)?;
        // aya-log forwards the programs' log lines to the `log` facade, which
        // tracing-subscriber turns into the agent's own log records.
        let log_task = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(logger) => Some(tokio::spawn(forward_logs(logger))),
            Err(e) => {
                tracing::debug!("eBPF programs have no log channel: {e}");
                None
            }
        };
        let program: &mut SchedClassifier = ebpf
            .program_mut(INGRESS_PROGRAM)
            .ok_or(EbpfCaptureError::Program {
                name: INGRESS_PROGRAM,
                source: aya::programs::ProgramError::UnexpectedProgramType,
            })?
            .try_into()
            .map_err(|source| EbpfCaptureError::Program {
                name: INGRESS_PROGRAM,
                source,
            })?;
        program.load().map_err(|source| EbpfCaptureError::Program {
            name: INGRESS_PROGRAM,
            source,
        })?;
        Ok(Self {
            ebpf,
            attached: BTreeMap::new(),
            log_task,
        })
    }

    /// Attaches the ingress program to `ifname` (idempotent).
    pub fn attach(&mut self, ifname: &str) -> Result<(), EbpfCaptureError> {
        if self.attached.contains_key(ifname) {
            return Ok(());
        }
        let iface_err = |source| EbpfCaptureError::Interface {
            name: ifname.to_string(),
            source,
        };
        let ifindex = interface::ifindex(ifname).map_err(iface_err)?;
        let l2_len = interface::l2_header_len(ifname).map_err(iface_err)?;
        let mut interfaces: BpfHashMap<_, u32, InterfaceConfig> = BpfHashMap::try_from(
            self.ebpf
                .map_mut(INTERFACES_MAP)
                .ok_or(EbpfCaptureError::MissingMap(INTERFACES_MAP))?,
        )
        .map_err(|source| EbpfCaptureError::Map {
            name: INTERFACES_MAP,
            source,
        })?;
        interfaces
            .insert(ifindex, InterfaceConfig { l2_len }, 0)
            .map_err(|source| EbpfCaptureError::Map {
                name: INTERFACES_MAP,
                source,
            })?;

        let program: &mut SchedClassifier = self
            .ebpf
            .program_mut(INGRESS_PROGRAM)
            .expect("loaded in load()")
            .try_into()
            .expect("checked in load()");
        // Kernels before 6.6 have no TCX and need a clsact qdisc; an existing one is fine.
        let tcx = aya::util::KernelVersion::new(6, 6, 0);
        if aya::util::KernelVersion::current().is_ok_and(|v| v < tcx) {
            let _ = aya::programs::tc::qdisc_add_clsact(ifname);
        }
        let link = program
            .attach(ifname, TcAttachType::Ingress)
            .map_err(|source| EbpfCaptureError::Attach {
                interface: ifname.to_string(),
                source,
            })?;
        tracing::info!(interface = ifname, ifindex, l2_len, "capture attached (ingress)");
        self.attached.insert(ifname.to_string(), link);
        Ok(())
    }

    /// Interfaces the programs are attached to.
    pub fn interfaces(&self) -> impl Iterator<Item = &str> {
        self.attached.keys().map(String::as_str)
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
        tokio::spawn(read_ring(fd, tx));
        Ok(rx)
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
        if let Ok(program) = <&mut SchedClassifier>::try_from(
            self.ebpf
                .program_mut(INGRESS_PROGRAM)
                .expect("loaded in load()"),
        ) {
            for (ifname, link) in std::mem::take(&mut self.attached) {
                match program.detach(link) {
                    Ok(()) => tracing::info!(interface = ifname, "capture detached"),
                    Err(e) => tracing::warn!(interface = ifname, "detaching capture: {e}"),
                }
            }
        }
        if let Some(task) = self.log_task.take() {
            task.abort();
        }
    }
}

async fn read_ring(mut fd: AsyncFd<RingBuf<MapData>>, tx: mpsc::Sender<CapturedPacket>) {
    loop {
        let mut guard = match fd.readable_mut().await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!("ring buffer poll failed: {e}");
                return;
            }
        };
        let ring = guard.get_inner_mut();
        while let Some(item) = ring.next() {
            let Some(packet) = decode_event(&item) else {
                tracing::warn!(len = item.len(), "ignoring malformed capture event");
                continue;
            };
            if tx.send(packet).await.is_err() {
                return;
            }
        }
        guard.clear_ready();
    }
}

fn decode_event(bytes: &[u8]) -> Option<CapturedPacket> {
    if bytes.len() < size_of::<CaptureEvent>() {
        return None;
    }
    // SAFETY: length checked; CaptureEvent is plain data valid for any bits;
    // read_unaligned because ring buffer records are only 8-byte aligned by contract.
    let event: CaptureEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    CapturedPacket::from_event(&event)
}

async fn forward_logs(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    // SAFETY: the logger owns its ring buffer fd for as long as the AsyncFd lives.
    let Ok(mut fd) = (unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }) else {
        return;
    };
    loop {
        let Ok(mut guard) = fd.readable_mut().await else {
            return;
        };
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}
