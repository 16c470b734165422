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
            Ok(s)
        })
        .as_ref()
        .map_err(copy_error)
    }

    /// Sends one complete IP packet to `destination`.
    pub fn send(&self, packet: &[u8], destination: IpAddr) -> io::Result<()> {
        let socket = self.socket(destination.is_ipv6())?;
        let addr = SockAddr::from(SocketAddr::new(destination, 0));
        let sent = socket.send_to(packet, &addr)?;
        if sent != packet.len() {
            return Err(io::Error::other(format!(
                "short send: {sent} of {} bytes",
                packet.len()
            )));
        }
        Ok(())
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
