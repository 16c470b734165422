//! Hands a matched packet to userspace through the ring buffer.

use aya_ebpf::bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
use aya_ebpf::{helpers::bpf_ktime_get_ns, programs::TcContext};
use traceroute_common::{CAPTURE_BYTES, CaptureEvent, Counter, Direction, EventKind};

use crate::classify::Match;
use crate::maps::{EVENTS, count};

#[inline(always)]
pub fn submit(ctx: &TcContext, l3: u32, direction: Direction, m: &Match, cookie: u32) {
    let Some(mut entry) = EVENTS.reserve::<CaptureEvent>(0) else {
        count(Counter::RingBufferFull);
        return;
    };
    let ev = entry.as_mut_ptr();
    let packet_len = ctx.len().saturating_sub(l3);
    // SAFETY: `ev` points at reserved ring buffer memory sized for a CaptureEvent.
    let copied = unsafe {
        (*ev).timestamp_ns = bpf_ktime_get_ns();
        // SAFETY: the context pointer is valid for the program's run.
        let skb = ctx.skb.skb;
        // On ingress the stack may have stamped the packet when it was
        // queued, before the softirq that runs this program: the stamp
        // sockets report. Reading `tstamp_type` too makes the kernel hand
        // over `tstamp` as it is (a delivery time is told apart by its type).
        let (stack_stamp, stack_clock) = match direction {
            Direction::Ingress => ((*skb).tstamp, (*skb).tstamp_type),
            Direction::Egress => (0, 0),
        };
        (*ev).stack_stamp_ns = stack_stamp;
        (*ev).stack_clock = stack_clock;
        (*ev).ifindex = (*skb).ifindex;
        (*ev).packet_len = packet_len;
        (*ev).cookie = cookie;
        (*ev).direction = direction as u8;
        (*ev).ip_version = m.ip_version;
        (*ev).kind = m.kind as u8;
        (*ev)._reserved = [0; 6];
        load_prefix(ctx, l3, packet_len, &mut (*ev).data)
    };
    match copied {
        Ok(n) => {
            // SAFETY: as above.
            unsafe { (*ev).captured_len = n as u16 };
            // Waking the reader costs an inter-processor interrupt here, in
            // the sender's path before the packet reaches the device: an
            // egress stamp would then precede the wire by it. User space
            // drains the ring after its own sends instead. A reply always
            // wakes it: the adaptive wake-up would skip it while egress
            // events nobody drained (a kernel-sent SYN) sit before it.
            let flags = match direction {
                Direction::Egress => u64::from(BPF_RB_NO_WAKEUP),
                Direction::Ingress => u64::from(BPF_RB_FORCE_WAKEUP),
            };
            entry.submit(flags);
            count(if m.kind == EventKind::Probe {
                Counter::ProbesStamped
            } else {
                Counter::PacketsMatched
            });
        }
        Err(_) => {
            entry.discard(0);
            count(Counter::LoadFailed);
        }
    }
}

/// Copies up to `CAPTURE_BYTES` of the packet from `offset` into `dst`.
///
/// The verifier insists that the length passed to `bpf_skb_load_bytes` is
/// provably in 1..=CAPTURE_BYTES in the very register used. Clamping with `min`
/// is not enough (LLVM may merge the checks away), so the length is rebuilt
/// with a mask after an optimisation barrier: `((n - 1) & 0xff) + 1`.
#[inline(always)]
fn load_prefix(
    ctx: &TcContext,
    offset: u32,
    available: u32,
    dst: &mut [u8; CAPTURE_BYTES],
) -> Result<usize, i64> {
    const _: () = assert!(CAPTURE_BYTES == 256, "the mask below assumes 256");
    if available == 0 {
        return Err(-1);
    }
    let wanted = available.min(CAPTURE_BYTES as u32);
    let len = (core::hint::black_box(wanted - 1) & 0xff) + 1;
    // SAFETY: `dst` holds CAPTURE_BYTES bytes and `len` is at most that.
    let ret = unsafe {
        aya_ebpf::helpers::generated::bpf_skb_load_bytes(
            ctx.skb.skb.cast(),
            offset,
            dst.as_mut_ptr().cast(),
            len,
        )
    };
    if ret == 0 { Ok(len as usize) } else { Err(ret) }
}
