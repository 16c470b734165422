//! Capture: seeing replies (and our own probes leaving) with kernel timestamps.

pub mod classify;
pub mod ebpf;
mod hub;
pub mod interface;
pub mod socket;

pub use hub::{Capture, CaptureError, CaptureMethod, CaptureMode, FlowSubscription, kind_name};

use traceroute_common::{CaptureEvent, Direction, EventKind};

use crate::clock::MonotonicTime;

/// A packet seen by the capture, owned and detached from the ring buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedPacket {
    /// CLOCK_MONOTONIC time at which the kernel saw the packet.
    pub timestamp: MonotonicTime,
    pub ifindex: u32,
    pub direction: Direction,
    pub kind: EventKind,
    /// Cookie of the registered flow the packet belongs to.
    pub cookie: u32,
    /// Length of the packet on the wire from the IP header on.
    pub packet_len: u32,
    /// The first bytes of the packet, from the IP header on.
    pub bytes: Vec<u8>,
}

impl CapturedPacket {
    /// Copies an event out of the ring buffer; `None` for a malformed event.
    pub fn from_event(event: &CaptureEvent) -> Option<Self> {
        Some(Self {
            timestamp: MonotonicTime::from_nanos(event.timestamp_ns),
            ifindex: event.ifindex,
            direction: event.direction()?,
            kind: event.kind()?,
            cookie: event.cookie,
            packet_len: event.packet_len,
            bytes: event.packet().to_vec(),
        })
    }
}

/// Whether `err` or anything it was caused by is EPERM or EACCES.
pub fn is_permission(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(io.raw_os_error(), Some(libc::EPERM | libc::EACCES))
        {
            return true;
        }
        if e.to_string().contains("Operation not permitted") {
            return true;
        }
        next = e.source();
    }
    false
}
