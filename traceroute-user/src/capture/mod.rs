//! Capture: seeing replies (and our own probes leaving) with kernel timestamps.

pub mod classify;
pub mod ebpf;
mod hub;
pub mod interface;
pub mod socket;

pub use hub::{
    Capture, CaptureError, CaptureMethod, CaptureMode, FlowSubscription, is_permission, kind_name,
};

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
