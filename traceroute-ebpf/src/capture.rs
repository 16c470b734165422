//! Packet selection and hand-off to userspace.

use aya_ebpf::{
    bindings::TC_ACT_UNSPEC,
    helpers::bpf_ktime_get_ns,
    macros::{classifier, map},
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::TcContext,
};
use aya_log_ebpf::debug;
use traceroute_common::{CAPTURE_BYTES, CaptureEvent, Counter, Direction, InterfaceConfig};

const ETH_HDR_LEN: u32 = 14;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;

/// 4 MiB: room for ~14k events while userspace catches up.
#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

#[map(name = "INTERFACES")]
static INTERFACES: HashMap<u32, InterfaceConfig> = HashMap::with_max_entries(256, 0);

/// Continue with the next program / normal processing (TCX_NEXT under TCX).
const PASS: i32 = TC_ACT_UNSPEC;

#[classifier]
pub fn capture_ingress(ctx: TcContext) -> i32 {
    count(Counter::PacketsSeen);
    let _ = capture(&ctx, Direction::Ingress);
    PASS
}

#[inline(always)]
fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *slot += 1 };
    }
}

/// Where the IP header starts on this interface.
#[inline(always)]
fn l3_offset(ctx: &TcContext) -> u32 {
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: read-only lookup of a plain value.
    match unsafe { INTERFACES.get(&ifindex) } {
        Some(cfg) => cfg.l2_len,
        None => ETH_HDR_LEN,
    }
}

#[inline(always)]
fn capture(ctx: &TcContext, direction: Direction) -> Result<(), ()> {
    let l3 = l3_offset(ctx);
    let first: u8 = ctx.load(l3 as usize).map_err(|_| ())?;
    let version = first >> 4;
    let protocol: u8 = match version {
        4 => ctx.load(l3 as usize + 9).map_err(|_| ())?,
        6 => ctx.load(l3 as usize + 6).map_err(|_| ())?,
        _ => return Err(()),
    };
    let wanted = match version {
        4 => protocol == IPPROTO_ICMP,
        _ => protocol == IPPROTO_ICMPV6,
    };
    if !wanted {
        return Err(());
    }
    submit(ctx, l3, version, direction)
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

/// Copies the packet from its IP header into a ring buffer event.
#[inline(always)]
fn submit(ctx: &TcContext, l3: u32, version: u8, direction: Direction) -> Result<(), ()> {
    let Some(mut entry) = EVENTS.reserve::<CaptureEvent>(0) else {
        count(Counter::RingBufferFull);
        return Err(());
    };
    let ev = entry.as_mut_ptr();
    let total = ctx.len();
    let packet_len = total.saturating_sub(l3);
    // SAFETY: `ev` points at reserved ring buffer memory of the right size.
    let copied = unsafe {
        (*ev).timestamp_ns = bpf_ktime_get_ns();
        (*ev).ifindex = (*ctx.skb.skb).ifindex;
        (*ev).packet_len = packet_len;
        (*ev).direction = direction as u8;
        (*ev).ip_version = version;
        (*ev)._reserved = [0; 4];
        load_prefix(ctx, l3, packet_len, &mut (*ev).data)
    };
    match copied {
        Ok(n) => {
            unsafe { (*ev).captured_len = n.min(CAPTURE_BYTES) as u16 };
            entry.submit(0);
            count(Counter::PacketsMatched);
            debug!(ctx, "captured {} bytes, ip version {}", n, version);
            Ok(())
        }
        Err(_) => {
            entry.discard(0);
            count(Counter::LoadFailed);
            Err(())
        }
    }
}
