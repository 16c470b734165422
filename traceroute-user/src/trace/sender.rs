//! Sending crafted probes: raw IPv4/IPv6 sockets with IPPROTO_RAW, which tells
//! the kernel our buffer already holds the IP header (IP_HDRINCL is implied).
//! Needs CAP_NET_RAW.

use std::io;
use std::net::{IpAddr, SocketAddr};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// One raw socket per IP version, opened on first use and shared by all traces.
pub struct ProbeSender {
    v4: std::sync::OnceLock<io::Result<Socket>>,
    v6: std::sync::OnceLock<io::Result<Socket>>,
}

impl Default for ProbeSender {
    fn default() -> Self {
        Self::new()
    }
}

impl ProbeSender {
    pub fn new() -> Self {
        Self {
            v4: std::sync::OnceLock::new(),
            v6: std::sync::OnceLock::new(),
        }
    }

    fn socket(&self, ipv6: bool) -> io::Result<&Socket> {
        let (cell, domain) = if ipv6 {
            (&self.v6, Domain::IPV6)
        } else {
            (&self.v4, Domain::IPV4)
        };
        cell.get_or_init(|| {
            let s = Socket::new(domain, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW)))?;
            s.set_nonblocking(true)?;
            send_past_the_path_mtu_cache(&s, ipv6)?;
            Ok(s)
        })
        .as_ref()
        .map_err(copy_error)
    }

    /// Sends one complete IP packet to `destination`, routed by the kernel
    /// as it chooses, or out of the pinned interface from the pinned source.
    pub fn send(&self, packet: &[u8], destination: IpAddr, via: Option<SendVia>) -> io::Result<()> {
        let socket = self.socket(destination.is_ipv6())?;
        let sent = match via {
            None => socket.send_to(packet, &SockAddr::from(SocketAddr::new(destination, 0)))?,
            Some(via) => send_via(socket, packet, destination, via)?,
        };
        if sent != packet.len() {
            return Err(io::Error::other(format!(
                "short send: {sent} of {} bytes",
                packet.len()
            )));
        }
        Ok(())
    }
}

/// Where pinned probes leave: the raw socket routes by the destination
/// alone (the source in our IP header does not take part), so `-i` and `-s`
/// are handed to the kernel's route lookup as packet info, the way
/// `ip route get ADDR from SOURCE oif DEV` asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendVia {
    pub ifindex: u32,
    pub source: IpAddr,
}

/// `sendmsg` with `IP_PKTINFO` / `IPV6_PKTINFO` (interface and source).
fn send_via(
    socket: &Socket,
    packet: &[u8],
    destination: IpAddr,
    via: SendVia,
) -> io::Result<usize> {
    use nix::sys::socket::{ControlMessage, MsgFlags, SockaddrIn, SockaddrIn6, sendmsg};
    use std::os::fd::AsRawFd;
    let iov = [io::IoSlice::new(packet)];
    let fd = socket.as_raw_fd();
    let sent = match (destination, via.source) {
        (IpAddr::V4(dst), IpAddr::V4(src)) => {
            let info = libc::in_pktinfo {
                ipi_ifindex: via.ifindex as libc::c_int,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from(src).to_be(),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            let to = SockaddrIn::from(std::net::SocketAddrV4::new(dst, 0));
            sendmsg(
                fd,
                &iov,
                &[ControlMessage::Ipv4PacketInfo(&info)],
                MsgFlags::empty(),
                Some(&to),
            )
        }
        (IpAddr::V6(dst), IpAddr::V6(src)) => {
            let info = libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr {
                    s6_addr: src.octets(),
                },
                ipi6_ifindex: via.ifindex,
            };
            let to = SockaddrIn6::from(std::net::SocketAddrV6::new(dst, 0, 0, 0));
            sendmsg(
                fd,
                &iov,
                &[ControlMessage::Ipv6PacketInfo(&info)],
                MsgFlags::empty(),
                Some(&to),
            )
        }
        _ => return Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT)),
    };
    sent.map_err(io::Error::from)
}

/// Lets probes up to the interface MTU leave whatever the kernel's path MTU
/// cache says (`IP_PMTUDISC_PROBE`: DF set, cache ignored). Path MTU
/// discovery sends probes bigger than a bottleneck on purpose, and the
/// cache the routers' answers fill would refuse them with EMSGSIZE. Neither
/// socket2 nor nix has a setter for this option, hence libc.
fn send_past_the_path_mtu_cache(socket: &Socket, ipv6: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (level, name, value) = if ipv6 {
        (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_PROBE,
        )
    } else {
        (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_PROBE,
        )
    };
    let value: libc::c_int = value;
    // SAFETY: the descriptor is open (owned by `socket`), and the pointer and
    // length describe `value`, a c_int that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A copy of the socket error every later send reports. It keeps the OS
/// error number: callers map EPERM to a missing privilege.
fn copy_error(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(errno) => io::Error::from_raw_os_error(errno),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_socket_error_keeps_its_errno() {
        let denied = io::Error::from_raw_os_error(libc::EPERM);
        let copy = copy_error(&denied);
        assert_eq!(copy.raw_os_error(), Some(libc::EPERM));
        let error = crate::trace::TraceError::Send(copy);
        assert_eq!(error.code(), crate::error::ErrorCode::Denied);
        assert!(
            error
                .missing_privilege()
                .is_some_and(|m| m.contains("CAP_NET_RAW"))
        );
        let other = copy_error(&io::Error::other("no errno"));
        assert_eq!(other.to_string(), "no errno");
    }
}
