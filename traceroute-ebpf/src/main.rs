//! TC programs of traceroute-agent.
//!
//! `capture_ingress` runs on every packet arriving on a watched interface and
//! keeps the replies to our probes (ICMP time-exceeded / unreachable quoting a
//! probe, TCP SYN-ACK / RST from a probed destination, echo replies);
//! `capture_egress` stamps our probes as they leave. "Ours" means: the flow is in
//! the `FLOWS` map userspace maintains. Matches go to userspace through the
//! `EVENTS` ring buffer with a kernel timestamp; everything else costs one map
//! lookup at most and passes untouched: the programs never drop or modify traffic.
#![no_std]
#![no_main]

mod classify;
mod emit;
mod maps;

use aya_ebpf::{bindings::TC_ACT_UNSPEC, macros::classifier, programs::TcContext};
use traceroute_common::{Counter, Direction};

/// Continue with the next program / normal processing (TCX_NEXT under TCX).
const PASS: i32 = TC_ACT_UNSPEC;

#[classifier]
pub fn capture_ingress(ctx: TcContext) -> i32 {
    handle(&ctx, Direction::Ingress);
    PASS
}

#[classifier]
pub fn capture_egress(ctx: TcContext) -> i32 {
    handle(&ctx, Direction::Egress);
    PASS
}

#[inline(always)]
fn handle(ctx: &TcContext, direction: Direction) {
    maps::count(Counter::PacketsSeen);
    let l3 = maps::l3_offset(ctx);
    let Some(m) = classify::classify(ctx, l3, direction) else {
        return;
    };
    let Some(cookie) = maps::cookie_of(&m.flow) else {
        return;
    };
    emit::submit(ctx, l3, direction, &m, cookie);
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // The verifier proves the programs cannot panic; this is never reached.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
