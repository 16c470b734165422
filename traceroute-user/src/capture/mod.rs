//! Capture: seeing replies (and our own probes leaving) with kernel timestamps.

pub mod classify;
pub mod ebpf;
mod hub;
pub mod interface;
pub mod socket;

pub use hub::{Capture, CaptureError, CaptureMethod, CaptureMode, FlowSubscription, kind_name};

use traceroute_common::{CaptureEvent, Direction, EventKind};

use crate::clock::{MonotonicTime, WallClockOffset};

/// The longest a receive stamp may precede the program that read it (the
/// softirq's backlog): a stamp further back, or after the program ran, was
/// converted across a step of the wall clock and is not used.
const MAX_STACK_LAG: std::time::Duration = std::time::Duration::from_secs(1);

/// Which reading a packet's `timestamp` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stamp {
    /// The capture's own clock: when the eBPF program ran
    /// (`bpf_ktime_get_ns`), or user space when a socket capture has none.
    Program,
    /// The stack's receive stamp, taken when the packet was queued to the
    /// stack, before the softirq that runs TC ingress and packet sockets:
    /// the stamp SO_TIMESTAMPNS reports.
    Stack,
}

/// A packet seen by the capture, owned and detached from the ring buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedPacket {
    /// CLOCK_MONOTONIC time at which the kernel saw the packet.
    pub timestamp: MonotonicTime,
    /// Which reading `timestamp` is.
    pub stamp: Stamp,
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
    /// An ingress packet's time is the stack's receive stamp, converted with
    /// `wall` (read since the last step of the wall clock), where the kernel
    /// took one; else when the program ran.
    pub fn from_event(event: &CaptureEvent, wall: &WallClockOffset) -> Option<Self> {
        let program = MonotonicTime::from_nanos(event.timestamp_ns);
        let stack = event
            .stack_stamp_realtime_ns()
            .map(|ns| wall.to_monotonic(ns))
            .filter(|&at| {
                // A microsecond of slack for the offset's own reading.
                let after = at.since(program + std::time::Duration::from_micros(1));
                let lag = program.since(at).unwrap_or_default();
                after.is_none() && lag <= MAX_STACK_LAG
            });
        let (timestamp, stamp) = match stack {
            Some(at) => (at, Stamp::Stack),
            None => (program, Stamp::Program),
        };
        Some(Self {
            timestamp,
            stamp,
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use traceroute_common::{CAPTURE_BYTES, STACK_CLOCK_REALTIME};

    use super::*;

    /// An ingress time exceeded the program saw at `program`, stamped by the
    /// stack at wall time `stack_wall_ns` (0: no stamp) on `clock`.
    fn event(program: MonotonicTime, stack_wall_ns: u64, clock: u8) -> CaptureEvent {
        CaptureEvent {
            timestamp_ns: program.as_nanos(),
            stack_stamp_ns: stack_wall_ns,
            ifindex: 2,
            packet_len: 56,
            cookie: 1,
            captured_len: 0,
            direction: Direction::Ingress as u8,
            ip_version: 4,
            kind: EventKind::TimeExceeded as u8,
            stack_clock: clock,
            _reserved: [0; 6],
            data: [0; CAPTURE_BYTES],
        }
    }

    fn wall_ns(wall: &WallClockOffset, at: MonotonicTime) -> u64 {
        // The inverse of `to_monotonic`, found from two points of it.
        let zero = wall.to_monotonic(1 << 62).as_nanos();
        (1u64 << 62) + at.as_nanos() - zero
    }

    #[test]
    fn a_reply_takes_the_stacks_receive_stamp_where_the_kernel_took_one() {
        let wall = WallClockOffset::measure();
        let program = MonotonicTime::now();
        let queued = program.saturating_sub(Duration::from_micros(40));
        let stamped = event(program, wall_ns(&wall, queued), STACK_CLOCK_REALTIME);
        let packet = CapturedPacket::from_event(&stamped, &wall).unwrap();
        assert_eq!(packet.stamp, Stamp::Stack);
        assert_eq!(packet.timestamp, queued);
        // No stamp, or a sender's delivery time: the program's own.
        for unstamped in [
            event(program, 0, STACK_CLOCK_REALTIME),
            event(program, wall_ns(&wall, queued), 1),
        ] {
            let packet = CapturedPacket::from_event(&unstamped, &wall).unwrap();
            assert_eq!((packet.stamp, packet.timestamp), (Stamp::Program, program));
        }
    }

    #[test]
    fn a_receive_stamp_across_a_wall_clock_step_is_not_used() {
        let wall = WallClockOffset::measure();
        let program = MonotonicTime::now() + Duration::from_secs(5);
        // Converted after the wall clock moved: after the program ran, or
        // further back than any softirq backlog.
        for queued in [
            program + Duration::from_millis(3),
            program.saturating_sub(MAX_STACK_LAG + Duration::from_millis(1)),
        ] {
            let ev = event(program, wall_ns(&wall, queued), STACK_CLOCK_REALTIME);
            let packet = CapturedPacket::from_event(&ev, &wall).unwrap();
            assert_eq!((packet.stamp, packet.timestamp), (Stamp::Program, program));
        }
    }
}
