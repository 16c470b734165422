//! Fallback capture without eBPF: one AF_PACKET socket (cooked, all interfaces)
//! with a classic BPF filter that lets only ICMP, ICMPv6, TCP and UDP through,
//! kernel receive timestamps (SO_TIMESTAMPNS) on every packet, and the same flow
//! classification as the kernel programs, done here.
//!
//! Hand-written on libc: no maintained crate covers packet sockets with cBPF
//! filters and timestamp control messages together.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use traceroute_common::{CAPTURE_BYTES, Direction};

use super::{CapturedPacket, MonotonicTime};

/// Decides whether a packet is ours: `Some((kind, cookie))`.
pub type Classifier =
    Box<dyn Fn(&[u8], Direction) -> Option<(traceroute_common::EventKind, u32)> + Send + Sync>;

/// The running fallback capture; dropping it stops the reader and closes the socket.
pub struct SocketCapture {
    task: JoinHandle<()>,
}

impl SocketCapture {
    /// Opens the socket and starts forwarding classified packets to `tx`.
    /// Needs CAP_NET_RAW.
    pub fn start(classify: Classifier, tx: mpsc::Sender<CapturedPacket>) -> io::Result<Self> {
        let fd = open_packet_socket()?;
        // SAFETY: OwnedFd keeps the descriptor open for the AsyncFd's lifetime.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(io::Error::from)?;
        let task = tokio::spawn(read_loop(fd, classify, tx));
        Ok(Self { task })
    }
}

impl Drop for SocketCapture {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn open_packet_socket() -> io::Result<OwnedFd> {
    let protocol = (libc::ETH_P_ALL as u16).to_be() as i32;
    // SAFETY: plain socket(2) call.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            protocol,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let filter = transport_filter();
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog)?;
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, &1i32)?;
    // Room for bursts of replies while the runtime is busy.
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &(4i32 << 20))?;
    Ok(fd)
}

fn setsockopt<T>(fd: &OwnedFd, level: i32, name: i32, value: &T) -> io::Result<()> {
    // SAFETY: `value` points at a live T of the given size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// cBPF over the network header (cooked socket): accept IPv4 ICMP/TCP/UDP and
/// IPv6 ICMPv6/TCP/UDP, truncated to what the classifier needs.
fn transport_filter() -> Vec<libc::sock_filter> {
    const LDB_ABS: u16 = (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16;
    const RSH_K: u16 = (libc::BPF_ALU | libc::BPF_RSH | libc::BPF_K) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let keep = CAPTURE_BYTES as u32;
    vec![
        op(LDB_ABS, 0, 0, 0),  // 0: version/IHL byte
        op(RSH_K, 0, 0, 4),    // 1: version
        op(JEQ_K, 1, 0, 4),    // 2: IPv4 -> 4
        op(JEQ_K, 5, 10, 6),   // 3: IPv6 -> 9, else drop
        op(LDB_ABS, 0, 0, 9),  // 4: IPv4 protocol
        op(JEQ_K, 7, 0, 1),    // 5: ICMP -> accept
        op(JEQ_K, 6, 0, 6),    // 6: TCP -> accept
        op(JEQ_K, 5, 0, 17),   // 7: UDP -> accept
        op(RET_K, 0, 0, 0),    // 8: drop
        op(LDB_ABS, 0, 0, 6),  // 9: IPv6 next header
        op(JEQ_K, 2, 0, 58),   // 10: ICMPv6 -> accept
        op(JEQ_K, 1, 0, 6),    // 11: TCP -> accept
        op(JEQ_K, 0, 1, 17),   // 12: UDP -> accept, else drop
        op(RET_K, 0, 0, keep), // 13: accept (first CAPTURE_BYTES bytes)
        op(RET_K, 0, 0, 0),    // 14: drop
    ]
}

async fn read_loop(fd: AsyncFd<OwnedFd>, classify: Classifier, tx: mpsc::Sender<CapturedPacket>) {
    let clock = ClockOffset::measure();
    let mut buf = [0u8; CAPTURE_BYTES];
    loop {
        let mut guard = match fd.readable().await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!("packet socket poll failed: {e}");
                return;
            }
        };
        loop {
            match recv(fd.get_ref(), &mut buf) {
                Ok(Some(meta)) => {
                    let bytes = &buf[..meta.captured];
                    let Some((kind, cookie)) = classify(bytes, meta.direction) else {
                        continue;
                    };
                    let packet = CapturedPacket {
                        timestamp: clock.to_monotonic(meta.realtime_ns),
                        ifindex: meta.ifindex,
                        direction: meta.direction,
                        kind,
                        cookie,
                        packet_len: meta.packet_len,
                        bytes: bytes.to_vec(),
                    };
                    if tx.send(packet).await.is_err() {
                        return;
                    }
                }
                Ok(None) => {
                    guard.clear_ready();
                    break;
                }
                Err(e) => {
                    tracing::warn!("packet socket receive failed: {e}");
                    guard.clear_ready();
                    break;
                }
            }
        }
    }
}

struct Received {
    captured: usize,
    packet_len: u32,
    ifindex: u32,
    direction: Direction,
    realtime_ns: Option<u64>,
}

/// One recvmsg; `Ok(None)` when nothing is queued.
fn recv(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<Option<Received>> {
    // SAFETY: all-zero is a valid sockaddr_ll / msghdr; pointers are set below.
    let mut addr: libc::sockaddr_ll = unsafe { zeroed() };
    let mut control = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (&mut addr as *mut libc::sockaddr_ll).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_ll>() as u32;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&control);
    // SAFETY: msg points at live buffers for the duration of the call.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_TRUNC) };
    if n < 0 {
        let err = io::Error::last_os_error();
        return if err.kind() == io::ErrorKind::WouldBlock {
            Ok(None)
        } else {
            Err(err)
        };
    }
    let mut realtime_ns = None;
    // SAFETY: standard cmsg walk over the control buffer recvmsg filled.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                realtime_ns = Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    let direction = if addr.sll_pkttype == libc::PACKET_OUTGOING {
        Direction::Egress
    } else {
        Direction::Ingress
    };
    Ok(Some(Received {
        captured: (n as usize).min(buf.len()),
        packet_len: n as u32,
        ifindex: addr.sll_ifindex as u32,
        direction,
        realtime_ns,
    }))
}

/// Socket timestamps are CLOCK_REALTIME; the rest of the agent works on
/// CLOCK_MONOTONIC (the eBPF clock). The offset is measured once: RTTs are
/// differences of two socket stamps, so only a clock step mid-trace could skew one.
struct ClockOffset {
    realtime_minus_monotonic: i128,
}

impl ClockOffset {
    fn measure() -> Self {
        let mono = MonotonicTime::now().as_nanos() as i128;
        let real = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        Self {
            realtime_minus_monotonic: real - mono,
        }
    }

    fn to_monotonic(&self, realtime_ns: Option<u64>) -> MonotonicTime {
        match realtime_ns {
            Some(ns) => {
                let mono = ns as i128 - self.realtime_minus_monotonic;
                MonotonicTime::from_nanos(mono.max(0) as u64)
            }
            None => MonotonicTime::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_jumps_stay_in_bounds() {
        let f = transport_filter();
        for (i, ins) in f.iter().enumerate() {
            let is_jump = ins.code & 0x07 == libc::BPF_JMP as u16;
            if is_jump {
                assert!(i + 1 + (ins.jt as usize) < f.len(), "jt of {i}");
                assert!(i + 1 + (ins.jf as usize) < f.len(), "jf of {i}");
            }
        }
        let last = f.last().unwrap();
        assert_eq!(last.code, (libc::BPF_RET | libc::BPF_K) as u16);
    }

    #[test]
    fn clock_offset_maps_now_to_now() {
        let clock = ClockOffset::measure();
        let real = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let mapped = clock.to_monotonic(Some(real));
        let now = MonotonicTime::now();
        let diff = now.as_nanos().abs_diff(mapped.as_nanos());
        assert!(diff < 50_000_000, "{diff} ns apart");
    }
}
