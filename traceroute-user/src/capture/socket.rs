//! Fallback capture without eBPF: one AF_PACKET socket (cooked, all interfaces)
//! with a classic BPF filter that lets only ICMP, ICMPv6, TCP and UDP through,
//! kernel receive timestamps (SO_TIMESTAMPNS) on every packet, and the same flow
//! classification as the kernel programs, done here.
//!
//! socket2 opens the packet socket and attaches the filter; nix reads it
//! with its timestamp control messages. The only unsafe block is tokio's
//! registration of the descriptor.

use std::io::{self, IoSliceMut};
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{
    ControlMessageOwned, LinkAddr, MsgFlags, recvmsg, setsockopt, sockopt::ReceiveTimestampns,
};
use nix::sys::time::TimeSpec;
use socket2::{Domain, Protocol, SockFilter, Socket, Type};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use traceroute_common::{CAPTURE_BYTES, Direction};

use super::{CapturedPacket, Stamp};
use crate::clock::{MonotonicTime, WallClockOffset};

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
        // tokio made registration unsafe (I/O safety): the Socket is owned by
        // the AsyncFd and closed only when it is dropped.
        // SAFETY: the descriptor stays open for the AsyncFd's whole life.
        let fd =
            unsafe { AsyncFd::register_with_interest(open_packet_socket()?, Interest::READABLE) }
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

fn open_packet_socket() -> io::Result<Socket> {
    let all = Protocol::from(i32::from((libc::ETH_P_ALL as u16).to_be()));
    let socket = Socket::new(
        Domain::PACKET,
        Type::DGRAM.nonblocking().cloexec(),
        Some(all),
    )?;
    let filter: Vec<SockFilter> = transport_filter()
        .iter()
        .map(|f| SockFilter::new(f.code, f.jt, f.jf, f.k))
        .collect();
    socket.attach_filter(&filter)?;
    setsockopt(&socket, ReceiveTimestampns, &true)?;
    // Room for bursts of replies while the runtime is busy.
    socket.set_recv_buffer_size(4 << 20)?;
    Ok(socket)
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

async fn read_loop(fd: AsyncFd<Socket>, classify: Classifier, tx: mpsc::Sender<CapturedPacket>) {
    // Socket stamps are CLOCK_REALTIME; the rest of the agent works on
    // CLOCK_MONOTONIC (the eBPF clock).
    let clock = WallClockOffset::measure();
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
                        timestamp: meta
                            .realtime_ns
                            .map_or_else(MonotonicTime::now, |ns| clock.to_monotonic(ns)),
                        stamp: if meta.realtime_ns.is_some() {
                            Stamp::Stack
                        } else {
                            Stamp::Program
                        },
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
fn recv(fd: &Socket, buf: &mut [u8]) -> io::Result<Option<Received>> {
    let capacity = buf.len();
    let mut iov = [IoSliceMut::new(buf)];
    let mut control = nix::cmsg_space!(TimeSpec);
    // MSG_TRUNC: the return value is the packet's full length.
    let msg = match recvmsg::<LinkAddr>(
        fd.as_raw_fd(),
        &mut iov,
        Some(&mut control),
        MsgFlags::MSG_TRUNC,
    ) {
        Ok(msg) => msg,
        Err(Errno::EAGAIN) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let realtime_ns = msg.cmsgs()?.find_map(|c| match c {
        ControlMessageOwned::ScmTimestampns(ts) => {
            Some(ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64)
        }
        _ => None,
    });
    let outgoing = msg
        .address
        .is_some_and(|a| a.pkttype() == libc::PACKET_OUTGOING);
    Ok(Some(Received {
        captured: msg.bytes.min(capacity),
        packet_len: msg.bytes as u32,
        ifindex: msg.address.map_or(0, |a| a.ifindex() as u32),
        direction: if outgoing {
            Direction::Egress
        } else {
            Direction::Ingress
        },
        realtime_ns,
    }))
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
}
