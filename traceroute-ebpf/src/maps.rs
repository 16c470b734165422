//! Maps shared with userspace and small accessors.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
    programs::TcContext,
};
use traceroute_common::{
    Counter, FlowKey, FlowValue, InterfaceConfig, MAX_FLOWS, Setting, UNREGISTERED_COOKIE,
};

/// 4 MiB: room for ~14k events while userspace catches up.
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

#[map(name = "INTERFACES")]
pub static INTERFACES: HashMap<u32, InterfaceConfig> = HashMap::with_max_entries(256, 0);

/// In-flight probe flows, written by userspace.
#[map(name = "FLOWS")]
pub static FLOWS: HashMap<FlowKey, FlowValue> = HashMap::with_max_entries(MAX_FLOWS, 0);

#[map(name = "SETTINGS")]
pub static SETTINGS: Array<u32> = Array::with_max_entries(Setting::COUNT, 0);

const ETH_HDR_LEN: u32 = 14;

/// The cookie of `flow`, or the diagnostic cookie when unregistered packets are wanted.
#[inline(always)]
pub fn cookie_of(flow: &FlowKey) -> Option<u32> {
    // SAFETY: read-only lookups of plain data.
    if let Some(v) = unsafe { FLOWS.get(flow) } {
        return Some(v.cookie);
    }
    match SETTINGS.get(Setting::CaptureUnregistered as u32) {
        Some(&on) if on != 0 => Some(UNREGISTERED_COOKIE),
        _ => None,
    }
}

/// Bare TCP ACKs are wanted (a trace probes inside a connection).
#[inline(always)]
pub fn tcp_acks_wanted() -> bool {
    matches!(SETTINGS.get(Setting::TcpAcks as u32), Some(&on) if on != 0)
}

#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *slot += 1 };
    }
}

/// Where the IP header starts on this interface (Ethernet unless told otherwise).
#[inline(always)]
pub fn l3_offset(ctx: &TcContext) -> u32 {
    // SAFETY: the context pointer is valid for the program's run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: read-only lookup of plain data.
    match unsafe { INTERFACES.get(&ifindex) } {
        Some(cfg) => cfg.l2_len,
        None => ETH_HDR_LEN,
    }
}
