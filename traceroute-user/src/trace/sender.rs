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
        .map_err(|e| io::Error::new(e.kind(), e.to_string()))
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
