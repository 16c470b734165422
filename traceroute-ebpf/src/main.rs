//! TC programs of traceroute-agent.
//!
//! `capture_ingress` runs on every packet arriving on an interface the agent
//! watches, keeps the ones that answer probes and hands them to userspace with a
//! kernel timestamp through the `EVENTS` ring buffer. Everything else passes
//! untouched: the programs never drop or modify traffic.
#![no_std]
#![no_main]

mod capture;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier proves the programs cannot panic; this is never reached.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
