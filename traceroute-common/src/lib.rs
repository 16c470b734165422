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

/// What a captured packet is, as decided by the capture program.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// One of our probes leaving (egress).
    Probe = 1,
    /// ICMP time exceeded / ICMPv6 time exceeded quoting one of our probes.
    TimeExceeded = 2,
    /// ICMP / ICMPv6 destination unreachable (any code) quoting one of our probes.
    DestUnreachable = 3,
    /// TCP SYN-ACK from a destination we probe.
    TcpSynAck = 4,
    /// TCP RST from a destination we probe.
    TcpRst = 5,
    /// ICMP / ICMPv6 echo reply to one of our echo probes.
    EchoReply = 6,
    /// ICMPv6 packet too big quoting one of our probes (ICMPv4 says it as a
    /// destination unreachable, code 4: "fragmentation needed").
    PacketTooBig = 7,
    /// A bare TCP ACK from a destination we probe inside an established
    /// connection (its SACK blocks name the probe); only while
    /// [`Setting::TcpAcks`] is on.
    TcpAck = 8,
}

impl EventKind {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Probe,
            2 => Self::TimeExceeded,
            3 => Self::DestUnreachable,
            4 => Self::TcpSynAck,
            5 => Self::TcpRst,
            6 => Self::EchoReply,
            7 => Self::PacketTooBig,
            8 => Self::TcpAck,
            _ => return None,
        })
    }
}

/// `BPF_SKB_CLOCK_REALTIME` (`BPF_SKB_TSTAMP_UNSPEC` before 6.11): the
/// value of `__sk_buff.tstamp_type` when `tstamp` is a receive stamp.
pub const STACK_CLOCK_REALTIME: u8 = 0;

/// One packet seen by a capture program, handed to userspace through the
/// `EVENTS` ring buffer. Ingress events always wake the reader (even when
/// undrained egress events sit before them); egress events (our own sends)
/// do not, as the wake-up would delay the packet after its stamp: whoever
/// sends asks the reader to drain the ring.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CaptureEvent {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds when the program ran.
    pub timestamp_ns: u64,
    /// Ingress only: the stack's own receive stamp (`__sk_buff.tstamp`), taken
    /// when the packet was queued to the stack, before the softirq that runs
    /// TC ingress; the same stamp a socket's SO_TIMESTAMPNS reports. On the
    /// clock `stack_clock` names; 0 when the kernel took none (receive
    /// timestamping is off until some socket asks for it) or egress.
    pub stack_stamp_ns: u64,
    /// Interface the packet was seen on.
    pub ifindex: u32,
    /// Length of the whole packet from the IP header on (may exceed `captured_len`).
    pub packet_len: u32,
    /// [`FlowValue::cookie`] of the flow the packet belongs to.
    pub cookie: u32,
    /// Bytes of `data` that are valid.
    pub captured_len: u16,
    /// [`Direction`] as u8.
    pub direction: u8,
    /// IP version of the outer header (4 or 6).
    pub ip_version: u8,
    /// [`EventKind`] as u8.
    pub kind: u8,
    /// `__sk_buff.tstamp_type`: [`STACK_CLOCK_REALTIME`] for a receive stamp;
    /// anything else is a delivery time set by a sender (EDT), not a receive
    /// stamp.
    pub stack_clock: u8,
    pub _reserved: [u8; 6],
    /// The packet from its IP header on.
    pub data: [u8; CAPTURE_BYTES],
}

impl CaptureEvent {
    pub fn direction(&self) -> Option<Direction> {
        Direction::from_u8(self.direction)
    }

    pub fn kind(&self) -> Option<EventKind> {
        EventKind::from_u8(self.kind)
    }

    /// The stack's receive stamp on CLOCK_REALTIME, when the kernel took
    /// one for this (ingress) packet. User space converts it to
    /// CLOCK_MONOTONIC with the offset between the two clocks, read when the
    /// event is decoded (the offset only changes when the wall clock is
    /// stepped), and falls back to `timestamp_ns` where there is none.
    pub fn stack_stamp_realtime_ns(&self) -> Option<u64> {
        (self.direction == Direction::Ingress as u8
            && self.stack_clock == STACK_CLOCK_REALTIME
            && self.stack_stamp_ns != 0)
            .then_some(self.stack_stamp_ns)
    }

    /// The captured bytes, starting at the outer IP header.
    pub fn packet(&self) -> &[u8] {
        let n = usize::from(self.captured_len).min(CAPTURE_BYTES);
        &self.data[..n]
    }
}

/// IP protocol numbers the capture understands.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
}

/// ICMP and ICMPv6 messages the capture and the decoder handle, and how both
/// classifiers (kernel and userspace) read them.
pub mod icmp {
    use super::EventKind;

    pub const V4_ECHO_REPLY: u8 = 0;
    pub const V4_DEST_UNREACHABLE: u8 = 3;
    pub const V4_ECHO_REQUEST: u8 = 8;
    pub const V4_TIME_EXCEEDED: u8 = 11;
    pub const V6_DEST_UNREACHABLE: u8 = 1;
    pub const V6_PACKET_TOO_BIG: u8 = 2;
    /// ICMPv4 destination unreachable code: fragmentation needed and DF set.
    pub const V4_FRAGMENTATION_NEEDED: u8 = 4;
    pub const V6_TIME_EXCEEDED: u8 = 3;
    pub const V6_ECHO_REQUEST: u8 = 128;
    pub const V6_ECHO_REPLY: u8 = 129;
    /// Type, code, checksum and 4 bytes that depend on the type.
    pub const HEADER_LEN: usize = 8;

    /// The echo request type of IP version `ip_version` (4 or 6).
    #[inline(always)]
    pub const fn echo_request(ip_version: u8) -> u8 {
        if ip_version == 4 {
            V4_ECHO_REQUEST
        } else {
            V6_ECHO_REQUEST
        }
    }

    /// What an ICMP message of type `ty` is as a reply to a probe; `None`
    /// for every type we do not take.
    #[inline(always)]
    pub const fn reply_kind(ip_version: u8, ty: u8) -> Option<EventKind> {
        match (ip_version, ty) {
            (4, V4_ECHO_REPLY) | (6, V6_ECHO_REPLY) => Some(EventKind::EchoReply),
            (4, V4_TIME_EXCEEDED) | (6, V6_TIME_EXCEEDED) => Some(EventKind::TimeExceeded),
            (4, V4_DEST_UNREACHABLE) | (6, V6_DEST_UNREACHABLE) => Some(EventKind::DestUnreachable),
            (6, V6_PACKET_TOO_BIG) => Some(EventKind::PacketTooBig),
            _ => None,
        }
    }
}

/// TCP header facts both classifiers use.
pub mod tcp {
    /// Offset of the flags byte in the TCP header.
    pub const FLAGS_OFFSET: usize = 13;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;

    /// A bare SYN (no ACK, no RST): what our TCP probes are.
    #[inline(always)]
    pub const fn is_bare_syn(flags: u8) -> bool {
        flags & (SYN | ACK | RST) == SYN
    }

    /// An ACK without SYN or RST: how a destination answers the probes
    /// of a trace inside an established connection (with SACK blocks).
    #[inline(always)]
    pub const fn is_bare_ack(flags: u8) -> bool {
        flags & (SYN | ACK | RST) == ACK
    }

    /// What a segment with `flags` is as an answer to a SYN probe.
    #[inline(always)]
    pub const fn reply_kind(flags: u8) -> Option<super::EventKind> {
        if flags & RST != 0 {
            Some(super::EventKind::TcpRst)
        } else if flags & (SYN | ACK) == SYN | ACK {
            Some(super::EventKind::TcpSynAck)
        } else {
            None
        }
    }
}

/// Identifies one probe flow: what load balancers hash, seen from our side.
///
/// For TCP and UDP: the remote (destination) address, our source port and the
/// destination port. For ICMP echo: the destination and the echo identifier in
/// `local_port` (`remote_port` is 0). IPv4 addresses occupy the first 4 bytes of
/// `remote_addr`, the rest is zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub remote_addr: [u8; 16],
    pub local_port: u16,
    pub remote_port: u16,
    /// IP protocol of the probes: TCP, UDP, ICMP or ICMPv6.
    pub protocol: u8,
    /// 4 or 6.
    pub ip_version: u8,
    pub _pad: [u8; 2],
}

impl FlowKey {
    pub fn v4(remote: [u8; 4], protocol: u8, local_port: u16, remote_port: u16) -> Self {
        let mut remote_addr = [0u8; 16];
        remote_addr[..4].copy_from_slice(&remote);
        Self {
            remote_addr,
            local_port,
            remote_port,
            protocol,
            ip_version: 4,
            _pad: [0; 2],
        }
    }

    pub fn v6(remote: [u8; 16], protocol: u8, local_port: u16, remote_port: u16) -> Self {
        Self {
            remote_addr: remote,
            local_port,
            remote_port,
            protocol,
            ip_version: 6,
            _pad: [0; 2],
        }
    }
}

/// What userspace stores for a registered flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowValue {
    /// Copied into every event of the flow so userspace routes it to its trace
    /// without parsing.
    pub cookie: u32,
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
    /// Our probes stamped on egress.
    ProbesStamped = 5,
    /// IP fragments (never ours, passed untouched).
    Fragments = 6,
}

impl Counter {
    pub const COUNT: u32 = 7;
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::PacketsSeen,
        Counter::PacketsMatched,
        Counter::RingBufferFull,
        Counter::Malformed,
        Counter::LoadFailed,
        Counter::ProbesStamped,
        Counter::Fragments,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Counter::PacketsSeen => "packets_seen",
            Counter::PacketsMatched => "packets_matched",
            Counter::RingBufferFull => "ring_buffer_full",
            Counter::Malformed => "malformed",
            Counter::LoadFailed => "load_failed",
            Counter::ProbesStamped => "probes_stamped",
            Counter::Fragments => "fragments",
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
/// Name of the settings array (indexed by [`Setting`]).
pub const SETTINGS_MAP: &str = "SETTINGS";

/// Slots of the `SETTINGS` array; each holds a u32.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    /// Non-zero: also hand over packets that look like probes or replies but
    /// belong to no registered flow (cookie 0). For diagnostics only.
    CaptureUnregistered = 0,
    /// Non-zero: bare TCP ACKs are looked up too ([`EventKind::TcpAck`]).
    /// Off unless a trace probes inside a connection, so the bulk of TCP
    /// traffic costs no flow lookup.
    TcpAcks = 1,
}

impl Setting {
    pub const COUNT: u32 = 2;
}

/// Cookie of packets captured under [`Setting::CaptureUnregistered`].
pub const UNREGISTERED_COOKIE: u32 = 0;

/// Name of the in-flight flow map.
pub const FLOWS_MAP: &str = "FLOWS";
/// Name of the ingress classifier.
pub const INGRESS_PROGRAM: &str = "capture_ingress";
/// Name of the egress classifier.
pub const EGRESS_PROGRAM: &str = "capture_egress";
/// Capacity of the flow map: concurrent probe flows across all traces.
pub const MAX_FLOWS: u32 = 16384;

#[cfg(feature = "user")]
mod pod {
    // SAFETY (all four): plain #[repr(C)] data without padding holes that
    // matter; any bit pattern is a valid value (the layout tests pin them).
    // SAFETY: see above.
    unsafe impl aya::Pod for super::CaptureEvent {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::InterfaceConfig {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::FlowValue {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn capture_event_layout_is_pinned() {
        assert_eq!(offset_of!(CaptureEvent, timestamp_ns), 0);
        assert_eq!(offset_of!(CaptureEvent, stack_stamp_ns), 8);
        assert_eq!(offset_of!(CaptureEvent, ifindex), 16);
        assert_eq!(offset_of!(CaptureEvent, packet_len), 20);
        assert_eq!(offset_of!(CaptureEvent, cookie), 24);
        assert_eq!(offset_of!(CaptureEvent, captured_len), 28);
        assert_eq!(offset_of!(CaptureEvent, direction), 30);
        assert_eq!(offset_of!(CaptureEvent, ip_version), 31);
        assert_eq!(offset_of!(CaptureEvent, kind), 32);
        assert_eq!(offset_of!(CaptureEvent, stack_clock), 33);
        assert_eq!(offset_of!(CaptureEvent, data), 40);
        assert_eq!(size_of::<CaptureEvent>(), 40 + CAPTURE_BYTES);
        assert_eq!(size_of::<CaptureEvent>() % 8, 0);
    }

    #[test]
    fn flow_key_layout_is_pinned() {
        assert_eq!(offset_of!(FlowKey, remote_addr), 0);
        assert_eq!(offset_of!(FlowKey, local_port), 16);
        assert_eq!(offset_of!(FlowKey, remote_port), 18);
        assert_eq!(offset_of!(FlowKey, protocol), 20);
        assert_eq!(offset_of!(FlowKey, ip_version), 21);
        assert_eq!(size_of::<FlowKey>(), 24);
        assert_eq!(size_of::<FlowValue>(), 4);
    }

    #[test]
    fn flow_key_v4_zero_fills() {
        let k = FlowKey::v4([198, 18, 0, 1], proto::UDP, 1, 2);
        assert_eq!(&k.remote_addr[..4], &[198, 18, 0, 1]);
        assert!(k.remote_addr[4..].iter().all(|b| *b == 0));
        assert_eq!(k.ip_version, 4);
    }

    #[test]
    fn event_kinds_round_trip() {
        for v in 0..=255u8 {
            if let Some(k) = EventKind::from_u8(v) {
                assert_eq!(k as u8, v);
            }
        }
        assert_eq!(EventKind::from_u8(6), Some(EventKind::EchoReply));
        assert_eq!(EventKind::from_u8(0), None);
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
        let mut ev = event();
        assert_eq!(ev.packet().len(), 10);
        ev.captured_len = u16::MAX;
        assert_eq!(ev.packet().len(), CAPTURE_BYTES);
    }

    fn event() -> CaptureEvent {
        CaptureEvent {
            timestamp_ns: 0,
            stack_stamp_ns: 0,
            ifindex: 0,
            packet_len: 0,
            cookie: 0,
            captured_len: 10,
            direction: 0,
            ip_version: 4,
            kind: 0,
            stack_clock: 0,
            _reserved: [0; 6],
            data: [0; CAPTURE_BYTES],
        }
    }

    #[test]
    fn only_an_ingress_receive_stamp_counts_as_the_stacks() {
        let mut ev = event();
        ev.direction = Direction::Ingress as u8;
        assert_eq!(ev.stack_stamp_realtime_ns(), None, "no stamp taken");
        ev.stack_stamp_ns = 1_700_000_000_000_000_000;
        assert_eq!(ev.stack_stamp_realtime_ns(), Some(ev.stack_stamp_ns));
        ev.stack_clock = 1;
        assert_eq!(ev.stack_stamp_realtime_ns(), None, "a delivery time");
        ev.stack_clock = STACK_CLOCK_REALTIME;
        ev.direction = Direction::Egress as u8;
        assert_eq!(ev.stack_stamp_realtime_ns(), None, "egress");
    }
}
