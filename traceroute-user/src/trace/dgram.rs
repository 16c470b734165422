//! Traces without privilege over UDP and ICMP, the way `traceroute`'s
//! default mode and `tracepath` do: a plain UDP socket, or a datagram ICMP
//! ("ping") socket, per run, its TTL set per probe and `IP_RECVERR` on, so
//! the kernel queues each router's time-exceeded or unreachable on the
//! socket's error queue with the router's address and the probe as sent.
//! No raw socket, no capture: no capability is needed (ICMP needs the
//! user's group in `net.ipv4.ping_group_range`).
//!
//! Probes go one at a time from one source port or echo id (Paris); each
//! carries a token and its TTL in its payload, and an error is taken only
//! for the probe it quotes, so a late answer to an earlier probe is never
//! read as the current one. RTTs are read on the user-space clock around
//! the send and the wake-up; there are no reply TTLs.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use std::os::fd::AsRawFd;

use nix::sys::socket::{MsgFlags, setsockopt, sockopt};
use socket2::{Domain, Protocol as SockProtocol, SockAddr, Socket, Type};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::syn_socket::{self, Plan, QueuedError, read_error_queue};
use crate::path::{AttemptOutcome, HopObservation, NoAnswer, TimestampSource};
use crate::probe::Ttl;

/// The two kinds of datagram probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Udp,
    Icmp,
}

/// ICMP echo reply types.
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REPLY_V6: u8 = 129;
const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REQUEST_V6: u8 = 128;
/// Destination unreachable types: the path ends there.
const UNREACHABLE_V4: u8 = 3;
const UNREACHABLE_V6: u8 = 1;

/// Why a datagram socket could not be had.
pub fn explain(kind: Kind, e: &io::Error) -> Option<String> {
    let denied = matches!(
        e.raw_os_error(),
        Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EPROTONOSUPPORT)
    );
    (kind == Kind::Icmp && denied).then(|| {
        "ICMP without privilege needs a datagram ICMP socket, which the kernel allows only \
         to groups in net.ipv4.ping_group_range (e.g. sysctl -w net.ipv4.ping_group_range=\"0 \
         2147483647\"); or trace with -U or -T"
            .to_string()
    })
}

/// One run from `source` (port or echo id 0: any) to `destination`: the
/// port or id it got, and one observation per TTL up to the destination or
/// a router's unreachable.
pub async fn run(
    kind: Kind,
    source: SocketAddr,
    destination: SocketAddr,
    plan: Plan,
) -> io::Result<(u16, Vec<HopObservation>)> {
    let socket = open(kind, source, destination, plan.device.as_deref())?;
    let local = socket
        .local_addr()?
        .as_socket()
        .map_or(source.port(), |a| a.port());
    // SAFETY: the socket2 Socket owns its descriptor and keeps it open,
    // unchanged, for as long as the AsyncFd (which owns the Socket) lives.
    let socket =
        unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE | Interest::ERROR) }
            .map_err(|e| e.into_parts().1)?;
    let token: u32 = getrandom::u32().unwrap_or(0x5452_4147);
    let mut observations = Vec::new();
    for ttl in Ttl::range(plan.first_ttl, plan.max_ttl) {
        let (outcome, ends) = probe(kind, &socket, destination, token, ttl, plan.timeout).await?;
        observations.push(HopObservation {
            ttl,
            attempts: vec![outcome],
        });
        if ends {
            break;
        }
    }
    Ok((local, observations))
}

fn open(
    kind: Kind,
    source: SocketAddr,
    destination: SocketAddr,
    device: Option<&str>,
) -> io::Result<Socket> {
    let v6 = destination.is_ipv6();
    let protocol = match (kind, v6) {
        (Kind::Udp, _) => SockProtocol::UDP,
        (Kind::Icmp, false) => SockProtocol::ICMPV4,
        (Kind::Icmp, true) => SockProtocol::ICMPV6,
    };
    let socket = Socket::new(
        Domain::for_address(destination),
        Type::DGRAM,
        Some(protocol),
    )?;
    // A ping socket's port is the echo identifier.
    syn_socket::bind(&socket, source, device)?;
    if v6 {
        setsockopt(&socket, sockopt::Ipv6RecvErr, &true)?;
    } else {
        setsockopt(&socket, sockopt::Ipv4RecvErr, &true)?;
    }
    socket.connect(&SockAddr::from(destination))?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// The payload of the probe at `ttl`: "TRAG", the run's token, the TTL.
fn payload(token: u32, ttl: Ttl) -> [u8; 9] {
    let mut p = [0u8; 9];
    p[..4].copy_from_slice(b"TRAG");
    p[4..8].copy_from_slice(&token.to_be_bytes());
    p[8] = ttl.get();
    p
}

/// Whether `sent` (the datagram the kernel hands back: the UDP payload, or
/// the ICMP echo with its 8-byte header) is the probe at `ttl`.
fn quotes(kind: Kind, sent: &[u8], token: u32, ttl: Ttl) -> bool {
    let body = match kind {
        Kind::Udp => sent,
        Kind::Icmp => sent.get(8..).unwrap_or_default(),
    };
    body == payload(token, ttl)
}

/// One probe at `ttl`: what came back, and whether the path ends here.
async fn probe(
    kind: Kind,
    socket: &AsyncFd<Socket>,
    destination: SocketAddr,
    token: u32,
    ttl: Ttl,
    timeout: Duration,
) -> io::Result<(AttemptOutcome, bool)> {
    let s = socket.get_ref();
    if destination.is_ipv6() {
        s.set_unicast_hops_v6(u32::from(ttl.get()))?;
    } else {
        s.set_ttl_v4(u32::from(ttl.get()))?;
    }
    let data = payload(token, ttl);
    let mut packet = Vec::with_capacity(8 + data.len());
    if kind == Kind::Icmp {
        // Type, code, checksum and identifier are the kernel's to fill in;
        // the sequence number is the TTL.
        let echo = if destination.is_ipv6() {
            ECHO_REQUEST_V6
        } else {
            ECHO_REQUEST_V4
        };
        packet.extend_from_slice(&[echo, 0, 0, 0, 0, 0, 0, ttl.get()]);
    }
    packet.extend_from_slice(&data);
    // An earlier probe's late error still queued would fail this send
    // (the socket's pending error): take those first.
    while read_error_queue(s)?.is_some() {}
    let sent = Instant::now();
    s.send(&packet)?;
    let deadline = tokio::time::Instant::from_std(sent + timeout);
    loop {
        let ready = match tokio::time::timeout_at(
            deadline,
            socket.ready(Interest::READABLE | Interest::ERROR),
        )
        .await
        {
            Ok(ready) => ready?,
            Err(_) => {
                let silent = AttemptOutcome::unanswered(NoAnswer::Timeout, Some(timeout));
                return Ok((silent, false));
            }
        };
        let rtt = sent.elapsed();
        let mut guard = ready;
        // A router's (or the destination's) ICMP error for this probe.
        if let Some(QueuedError {
            from,
            icmp_type,
            icmp_code,
            sent: quoted,
        }) = read_error_queue(s)?
        {
            if !quotes(kind, &quoted, token, ttl) {
                continue; // an earlier probe's late answer
            }
            let is_destination = from == destination.ip();
            let ends = is_destination
                || icmp_type == UNREACHABLE_V4 && destination.is_ipv4()
                || icmp_type == UNREACHABLE_V6 && destination.is_ipv6();
            let outcome = AttemptOutcome {
                icmp_type: Some(icmp_type),
                icmp_code: Some(icmp_code),
                is_destination,
                timestamp_source: Some(TimestampSource::User),
                ..AttemptOutcome::answered(from, rtt)
            };
            return Ok((outcome, ends));
        }
        // An answer on the socket itself: an echo reply, or a UDP service's.
        let mut buf = [0u8; 1500];
        match nix::sys::socket::recv(s.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT)
            .map_err(io::Error::from)
        {
            Ok(n) => {
                let reply = &buf[..n];
                let ours = match kind {
                    Kind::Udp => true,
                    Kind::Icmp => {
                        matches!(reply.first(), Some(&ECHO_REPLY_V4) | Some(&ECHO_REPLY_V6))
                            && quotes(kind, reply, token, ttl)
                    }
                };
                if ours {
                    let outcome = AttemptOutcome {
                        icmp_type: match kind {
                            Kind::Icmp => reply.first().copied(),
                            Kind::Udp => None,
                        },
                        icmp_code: (kind == Kind::Icmp).then_some(0),
                        is_destination: true,
                        timestamp_source: Some(TimestampSource::User),
                        ..AttemptOutcome::answered(destination.ip(), rtt)
                    };
                    return Ok((outcome, true));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => guard.clear_ready(),
            // ECONNREFUSED and friends are reported through the error queue.
            Err(e) if e.raw_os_error().is_some_and(|c| c != libc::EBADF) => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_is_taken_only_for_the_probe_it_quotes() {
        let ttl = |t| Ttl::new(t).unwrap();
        let sent = payload(0xdead_beef, ttl(3));
        assert!(quotes(Kind::Udp, &sent, 0xdead_beef, ttl(3)));
        // A late answer to TTL 2, or another run's probe, is not TTL 3's.
        assert!(!quotes(
            Kind::Udp,
            &payload(0xdead_beef, ttl(2)),
            0xdead_beef,
            ttl(3)
        ));
        assert!(!quotes(Kind::Udp, &sent, 0x1234_5678, ttl(3)));
        // ICMP: the kernel hands back the echo with its 8-byte header.
        let mut echo = vec![8, 0, 0x12, 0x34, 0, 7, 0, 3];
        echo.extend_from_slice(&sent);
        assert!(quotes(Kind::Icmp, &echo, 0xdead_beef, ttl(3)));
        assert!(!quotes(Kind::Icmp, &sent, 0xdead_beef, ttl(3)));
        assert!(!quotes(Kind::Icmp, &echo[..4], 0xdead_beef, ttl(3)));
    }

    #[test]
    fn a_denied_ping_socket_is_explained() {
        let denied = io::Error::from_raw_os_error(libc::EACCES);
        assert!(
            explain(Kind::Icmp, &denied)
                .unwrap()
                .contains("ping_group_range")
        );
        assert!(explain(Kind::Udp, &denied).is_none());
        assert!(explain(Kind::Icmp, &io::Error::from_raw_os_error(libc::ENETUNREACH)).is_none());
    }
}
