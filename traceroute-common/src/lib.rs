//! Types shared by the kernel (eBPF) and user side of traceroute-agent.
//!
//! Everything here is `#[repr(C)]` plain data: the eBPF programs write it into
//! ring buffers and read it from maps, userspace reads and writes the same bytes.
//! The layout tests at the bottom pin sizes and offsets, because a silent change
//! on one side only would corrupt every event.
#![no_std]

/// Bytes of the packet copied into an event, counted from the start of the
/// IP header. Enough for an outer IPv4 header with options (60) + ICMP (8) +
/// quoted IPv4 header with options (60) + quoted TCP header with options (60),
/// and for the IPv6 equivalent (40 + 8 + 40 + 60 + extension headers).
pub const CAPTURE_BYTES: usize = 256;

/// Direction in which a TC program saw a packet.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Ingress = 0,
    Egress = 1,
}

impl Direction {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Ingress),
            1 => Some(Self::Egress),
            _ => None,
        }
    }
}

/// One packet seen by a capture program, handed to userspace through the
/// `EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CaptureEvent {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds when the program ran.
    pub timestamp_ns: u64,
    /// Interface the packet was seen on.
    pub ifindex: u32,
    /// Length of the whole packet from the IP header on (may exceed `captured_len`).
    pub packet_len: u32,
    /// Bytes of `data` that are valid.
    pub captured_len: u16,
    /// [`Direction`] as u8.
    pub direction: u8,
    /// IP version of the outer header (4 or 6).
    pub ip_version: u8,
    pub _reserved: [u8; 4],
    /// The packet from its IP header on.
    pub data: [u8; CAPTURE_BYTES],
}

impl CaptureEvent {
    pub fn direction(&self) -> Option<Direction> {
        Direction::from_u8(self.direction)
    }

    /// The captured bytes, starting at the outer IP header.
    pub fn packet(&self) -> &[u8] {
        let n = usize::from(self.captured_len).min(CAPTURE_BYTES);
        &self.data[..n]
    }
}

/// Slots of the per-CPU `COUNTERS` array. Userspace sums the CPUs.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Every packet the programs ran on.
    PacketsSeen = 0,
    /// Packets that matched and were sent to userspace.
    PacketsMatched = 1,
    /// Matched packets lost because the ring buffer was full.
    RingBufferFull = 2,
    /// IP packets too short or inconsistent to parse.
    Malformed = 3,
    /// Copying packet bytes failed.
    LoadFailed = 4,
}

impl Counter {
    pub const COUNT: u32 = 5;
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::PacketsSeen,
        Counter::PacketsMatched,
        Counter::RingBufferFull,
        Counter::Malformed,
        Counter::LoadFailed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Counter::PacketsSeen => "packets_seen",
            Counter::PacketsMatched => "packets_matched",
            Counter::RingBufferFull => "ring_buffer_full",
            Counter::Malformed => "malformed",
            Counter::LoadFailed => "load_failed",
        }
    }
}

/// Per-interface settings userspace writes into the `INTERFACES` map before
/// attaching. Without an entry, an Ethernet header is assumed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InterfaceConfig {
    /// Bytes before the IP header: 14 for Ethernet, 0 for L3 devices (tun, wireguard).
    pub l2_len: u32,
}

/// Name of the ring buffer map in the eBPF object.
pub const EVENTS_MAP: &str = "EVENTS";
/// Name of the per-CPU counter array.
pub const COUNTERS_MAP: &str = "COUNTERS";
/// Name of the per-interface configuration map.
pub const INTERFACES_MAP: &str = "INTERFACES";
/// Name of the ingress classifier.
pub const INGRESS_PROGRAM: &str = "capture_ingress";

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] data without padding holes that matter; any bit
    // pattern is a valid value.
    unsafe impl aya::Pod for super::CaptureEvent {}
    unsafe impl aya::Pod for super::InterfaceConfig {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn capture_event_layout_is_pinned() {
        assert_eq!(offset_of!(CaptureEvent, timestamp_ns), 0);
        assert_eq!(offset_of!(CaptureEvent, ifindex), 8);
        assert_eq!(offset_of!(CaptureEvent, packet_len), 12);
        assert_eq!(offset_of!(CaptureEvent, captured_len), 16);
        assert_eq!(offset_of!(CaptureEvent, direction), 18);
        assert_eq!(offset_of!(CaptureEvent, ip_version), 19);
        assert_eq!(offset_of!(CaptureEvent, data), 24);
        assert_eq!(size_of::<CaptureEvent>(), 24 + CAPTURE_BYTES);
        assert_eq!(size_of::<CaptureEvent>() % 8, 0);
    }

    #[test]
    fn interface_config_layout_is_pinned() {
        assert_eq!(size_of::<InterfaceConfig>(), 4);
    }

    #[test]
    fn counters_are_dense() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as u32, i as u32, "{}", c.name());
        }
    }

    #[test]
    fn direction_round_trips() {
        for d in [Direction::Ingress, Direction::Egress] {
            assert_eq!(Direction::from_u8(d as u8), Some(d));
        }
        assert_eq!(Direction::from_u8(7), None);
    }

    #[test]
    fn packet_is_bounded_by_captured_len() {
        let mut ev = CaptureEvent {
            timestamp_ns: 0,
            ifindex: 0,
            packet_len: 0,
            captured_len: 10,
            direction: 0,
            ip_version: 4,
            _reserved: [0; 4],
            data: [0; CAPTURE_BYTES],
        };
        assert_eq!(ev.packet().len(), 10);
        ev.captured_len = u16::MAX;
        assert_eq!(ev.packet().len(), CAPTURE_BYTES);
    }
}
