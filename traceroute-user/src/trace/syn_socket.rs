//! `tcp_method=syn_socket`: TCP probes the kernel sends itself with
//! connect(), one socket per probe with its TTL set, for hosts where raw
//! sockets are not allowed: no CAP_NET_RAW, no capture. An ICMP error for a
//! connecting socket aborts the connect and, with IP_RECVERR, waits on the
//! socket's error queue with the router's address; a SYN-ACK completes the
//! connect and a RST refuses it, both from the destination. Probes go one at
//! a time from one source port (SO_REUSEADDR), so every probe of a run is
//! the same flow (Paris), at the cost of speed: a silent hop costs its full
//! timeout, as in classic traceroute. RTTs are read on the user-space clock
//! around connect().

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg, setsockopt, sockopt};
use socket2::{Domain, Protocol as SockProtocol, SockAddr, Socket, Type};

use crate::path::{AttemptOutcome, HopObservation, NoAnswer, TcpAnswer, TimestampSource};
use crate::probe::Ttl;

/// ICMP(v6) types of the errors that end a path (destination unreachable).
const V4_UNREACHABLE: u8 = 3;
const V6_UNREACHABLE: u8 = 1;
/// `sock_extended_err.ee_origin` of errors an ICMP(v6) message caused.
const ORIGIN_ICMP: u8 = 2;
const ORIGIN_ICMP6: u8 = 3;

/// One run: the TTLs to try, one probe each.
#[derive(Clone, Debug)]
pub struct Plan {
    pub first_ttl: Ttl,
    pub max_ttl: Ttl,
    pub timeout: Duration,
    /// The interface the caller pinned (`-i`): sockets are bound to it.
    pub device: Option<String>,
}

/// Binds `socket` to `source`, and to the pinned interface, if any.
pub fn bind(socket: &Socket, source: SocketAddr, device: Option<&str>) -> io::Result<()> {
    if let Some(name) = device {
        socket.bind_device(Some(name.as_bytes()))?;
    }
    socket.bind(&SockAddr::from(source))
}

/// A run from `source` (port 0: any; the run keeps the port it gets) to
/// `destination`: the source port and one observation per TTL, up to the
/// destination or a router's "unreachable".
pub async fn run(
    source: SocketAddr,
    destination: SocketAddr,
    plan: Plan,
) -> io::Result<(u16, Vec<HopObservation>)> {
    let mut port = source.port();
    let mut observations = Vec::new();
    for ttl in Ttl::range(plan.first_ttl, plan.max_ttl) {
        let from = SocketAddr::new(source.ip(), port);
        let (outcome, bound, ends) = probe(from, destination, ttl, &plan).await?;
        port = bound;
        observations.push(HopObservation {
            ttl,
            attempts: vec![outcome],
        });
        if ends {
            break;
        }
    }
    Ok((port, observations))
}

/// One probe at `ttl`: what came back, the source port used, and whether
/// the path ends here.
async fn probe(
    source: SocketAddr,
    destination: SocketAddr,
    ttl: Ttl,
    plan: &Plan,
) -> io::Result<(AttemptOutcome, u16, bool)> {
    let timeout = plan.timeout;
    let socket = Socket::new(
        Domain::for_address(destination),
        Type::STREAM,
        Some(SockProtocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    bind(&socket, source, plan.device.as_deref())?;
    let port = socket
        .local_addr()?
        .as_socket()
        .map_or(source.port(), |a| a.port());
    if destination.is_ipv6() {
        socket.set_unicast_hops_v6(u32::from(ttl.get()))?;
        setsockopt(&socket, sockopt::Ipv6RecvErr, &true)?;
    } else {
        socket.set_ttl_v4(u32::from(ttl.get()))?;
        setsockopt(&socket, sockopt::Ipv4RecvErr, &true)?;
    }
    socket.set_nonblocking(true)?;
    // Closing sends a RST: no TIME_WAIT holding the port for the next probe.
    socket.set_linger(Some(Duration::ZERO))?;
    let sent = Instant::now();
    match socket.connect(&SockAddr::from(destination)) {
        Ok(()) => {
            let outcome = reached(destination, sent.elapsed(), TcpAnswer::SynAck);
            return Ok((outcome, port, true));
        }
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    // The connect in progress, watched by tokio (writable once it is done).
    let socket = tokio::net::TcpStream::from_std(std::net::TcpStream::from(socket))?;
    let Ok(ready) = tokio::time::timeout(timeout, socket.writable()).await else {
        return Ok((
            AttemptOutcome::unanswered(NoAnswer::Timeout, Some(timeout)),
            port,
            false,
        ));
    };
    ready?;
    let rtt = sent.elapsed();
    // A router's error first: an ICMP unreachable also refuses the connect.
    if let Some(QueuedError {
        from,
        icmp_type,
        icmp_code,
        ..
    }) = read_error_queue(&socket)?
    {
        let ends = from == destination.ip()
            || icmp_type == V4_UNREACHABLE && destination.is_ipv4()
            || icmp_type == V6_UNREACHABLE && destination.is_ipv6();
        let outcome = AttemptOutcome {
            icmp_type: Some(icmp_type),
            icmp_code: Some(icmp_code),
            is_destination: from == destination.ip(),
            timestamp_source: Some(TimestampSource::User),
            ..AttemptOutcome::answered(from, rtt)
        };
        return Ok((outcome, port, ends));
    }
    match socket.take_error()? {
        // Connected (SYN-ACK) or refused (RST): the destination answered.
        None => Ok((reached(destination, rtt, TcpAnswer::SynAck), port, true)),
        Some(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
            Ok((reached(destination, rtt, TcpAnswer::Rst), port, true))
        }
        // A local failure (no route, no neighbour): no answer to report.
        Some(e) => Err(e),
    }
}

fn reached(destination: SocketAddr, rtt: Duration, answer: TcpAnswer) -> AttemptOutcome {
    AttemptOutcome {
        is_destination: true,
        tcp_answer: Some(answer),
        timestamp_source: Some(TimestampSource::User),
        ..AttemptOutcome::answered(destination.ip(), rtt)
    }
}

/// An ICMP error the kernel queued on a socket (`IP_RECVERR`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedError {
    /// Who sent it (the offender).
    pub from: IpAddr,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// The start of what we sent that it is about, as the kernel hands it
    /// back (a datagram's payload; nothing for TCP).
    pub sent: Vec<u8>,
}

/// The next ICMP error queued on `socket`; `None` when nothing ICMP-made
/// is queued.
pub fn read_error_queue(socket: &impl AsRawFd) -> io::Result<Option<QueuedError>> {
    let mut data = [0u8; 256];
    let mut iov = [io::IoSliceMut::new(&mut data)];
    let mut space = nix::cmsg_space!(libc::sock_extended_err, libc::sockaddr_in6);
    let message = match recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_ERRQUEUE,
    ) {
        Ok(message) => message,
        Err(nix::errno::Errno::EAGAIN) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let len = message.bytes;
    let mut found = None;
    for cmsg in message.cmsgs().map_err(io::Error::from)? {
        found = match cmsg {
            ControlMessageOwned::Ipv4RecvErr(err, Some(addr)) if err.ee_origin == ORIGIN_ICMP => {
                let addr = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
                Some((IpAddr::V4(addr), err.ee_type, err.ee_code))
            }
            ControlMessageOwned::Ipv6RecvErr(err, Some(addr)) if err.ee_origin == ORIGIN_ICMP6 => {
                let addr = Ipv6Addr::from(addr.sin6_addr.s6_addr);
                Some((IpAddr::V6(addr), err.ee_type, err.ee_code))
            }
            _ => None,
        };
        if found.is_some() {
            break;
        }
    }
    Ok(found.map(|(from, icmp_type, icmp_code)| QueuedError {
        from,
        icmp_type,
        icmp_code,
        sent: data[..len.min(data.len())].to_vec(),
    }))
}
