//! Link delay without `sch_netem`: a TUN device plus a forwarder thread.
//!
//! The endpoint's routes over the delayed link point into the TUN device;
//! the forwarder holds each packet for the delay and writes it back, and a
//! policy rule (`iif dlyN lookup N`) sends it on over the real link. The
//! kernel decrements TTL once going into the TUN and once more going out, so
//! the forwarder gives one back; otherwise the router would show up twice.
//!
//! The same element delays a slow node's own ICMP errors
//! ([`Topology::slow_icmp`](crate::Topology::slow_icmp)): the lab routes
//! just those into a TUN device of the node (see `SLOW_ICMP_TABLE` in
//! `lab`). Going in they are not forwarded, so they lose no TTL, but
//! coming back out they are; the TTL given back covers that hop instead.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::time::TimeSpec;

use crate::LabError;
use crate::netns::enter_netns;

/// Upper bound on how long the forwarder sleeps, so it notices `stop`.
const POLL_MAX: Duration = Duration::from_millis(50);
/// How long before a release the forwarder stops sleeping and spins.
const SPIN: Duration = Duration::from_micros(400);

#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn open_tun(ifname: &str) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/net/tun")?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
        _pad: [0; 22],
    };
    if ifname.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::new(
            ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    for (dst, src) in req.name.iter_mut().zip(ifname.bytes()) {
        *dst = src as libc::c_char;
    }
    // Hand-written: no kept crate wraps TUNSETIFF without pulling in a whole
    // TUN library, and nix's ioctl macros would still be unsafe to call.
    // SAFETY: TUNSETIFF reads and writes a struct ifreq, which IfReq mirrors in size and layout.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF as _, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file)
}

/// Gives back the hop the detour through the TUN device cost: TTL / hop
/// limit + 1 (saturating) and, for IPv4, a fresh header checksum.
pub(crate) fn restore_ttl(pkt: &mut [u8]) {
    match pkt.first().map(|b| b >> 4) {
        Some(4) if pkt.len() >= 20 => {
            let ihl = usize::from(pkt[0] & 0x0f) * 4;
            if ihl < 20 || pkt.len() < ihl || pkt[8] == 255 {
                return;
            }
            pkt[8] += 1;
            pkt[10] = 0;
            pkt[11] = 0;
            let sum = checksum(&pkt[..ihl]);
            pkt[10..12].copy_from_slice(&sum.to_be_bytes());
        }
        Some(6) if pkt.len() >= 40 => {
            pkt[7] = pkt[7].saturating_add(1);
        }
        _ => {}
    }
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Creates TUN `ifname` inside `ns` and starts forwarding through it with
/// `delay`. Returns once the device exists, so it can be configured.
pub(crate) fn start(
    ns: &str,
    ifname: &str,
    delay: Duration,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, LabError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (ns, ifname) = (ns.to_string(), ifname.to_string());
    let handle = std::thread::Builder::new()
        .name(format!("delay-{ifname}"))
        .spawn(move || {
            let tun = enter_netns(&ns).and_then(|()| {
                open_tun(&ifname).map_err(LabError::io(format!("creating TUN {ifname} in {ns}")))
            });
            match tun {
                Ok(tun) => {
                    let _ = tx.send(Ok(()));
                    forward(tun, delay, &stop);
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        })
        .map_err(LabError::io("spawning delay thread"))?;
    match rx.recv() {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => {
            let _ = handle.join();
            Err(e)
        }
        Err(_) => Err(LabError::Topology("delay thread died during setup".into())),
    }
}

/// Makes the calling thread a precise timer: real-time scheduling, so busy
/// cores do not delay its wake-ups, and 1 ns timer slack instead of the
/// default 50 µs. Without these the element, not the tools under test, sets
/// the noise floor of RTTs through the link (the bench measures what is left).
/// Best effort: without CAP_SYS_NICE the link still works, less precisely.
fn make_precise() {
    // libc, not nix: nix has no sched_setscheduler wrapper.
    // SAFETY: plain syscalls on the calling thread with valid arguments.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
        let param = libc::sched_param { sched_priority: 50 };
        libc::sched_setscheduler(0, libc::SCHED_FIFO, &param);
    }
}

fn forward(mut tun: File, delay: Duration, stop: &AtomicBool) {
    make_precise();
    // Constant delay: arrival order is release order, so a FIFO suffices.
    let mut queue: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while queue.front().is_some_and(|(due, _)| *due <= now) {
            let (_, mut pkt) = queue.pop_front().expect("non-empty");
            restore_ttl(&mut pkt);
            // A failed write is a dropped packet, as on a real link.
            let _ = tun.write(&pkt);
        }
        let wait = queue.front().map_or(POLL_MAX, |(due, _)| {
            due.saturating_duration_since(now).min(POLL_MAX)
        });
        // Sleep until just before the next release, then spin (still reading
        // arrivals): waking a sleeping vCPU costs 100-300 µs here, spinning
        // a few hundred µs per packet does not.
        if wait > SPIN {
            let mut fds = [PollFd::new(tun.as_fd(), PollFlags::POLLIN)];
            let _ = ppoll(&mut fds, Some(TimeSpec::from_duration(wait - SPIN)), None);
        } else {
            std::hint::spin_loop();
        }
        loop {
            match tun.read(&mut buf) {
                Ok(n) if n > 0 => queue.push_back((Instant::now() + delay, buf[..n].to_vec())),
                Ok(_) => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_ttl_and_checksum() {
        // 20-byte header, TTL 63, proto UDP, 198.18.1.1 -> 198.18.2.2.
        let mut pkt = vec![
            0x45, 0, 0, 28, 0x12, 0x34, 0, 0, 63, 17, 0, 0, 198, 18, 1, 1, 198, 18, 2, 2, 0, 0, 0,
            0, 0, 0, 0, 0,
        ];
        let sum = checksum(&pkt[..20]);
        pkt[10..12].copy_from_slice(&sum.to_be_bytes());
        restore_ttl(&mut pkt);
        assert_eq!(pkt[8], 64);
        assert_eq!(checksum(&pkt[..20]), 0, "header checksum must verify");
    }

    #[test]
    fn ipv6_hop_limit_saturates() {
        let mut pkt = vec![0u8; 40];
        pkt[0] = 0x60;
        pkt[7] = 1;
        restore_ttl(&mut pkt);
        assert_eq!(pkt[7], 2);
        pkt[7] = 255;
        restore_ttl(&mut pkt);
        assert_eq!(pkt[7], 255);
    }

    #[test]
    fn garbage_is_left_alone() {
        let mut pkt = vec![0x45, 1, 2];
        restore_ttl(&mut pkt);
        assert_eq!(pkt, [0x45, 1, 2]);
    }
}
