//! Source ports for probe flows. A real socket is bound to the port for the
//! trace's lifetime, so the kernel never hands it to another program (whose
//! traffic would then look like ours) and never gives it to a concurrent trace.

use std::io;
use std::net::{IpAddr, SocketAddr};

use socket2::{Domain, Protocol as SockProtocol, Socket, Type};

use crate::probe::Protocol;

/// Holds a port; dropping it releases the port.
pub struct PortReservation {
    _socket: Socket,
    pub port: u16,
}

/// Binds an unconnected, non-listening socket of `protocol` to port `port`
/// on `source` (0: an ephemeral one); EADDRINUSE when it is taken. A TCP
/// socket that neither listens nor connects leaves the kernel answering a
/// SYN-ACK with RST, as classic tcptraceroute does.
pub fn reserve_port(protocol: Protocol, source: IpAddr, port: u16) -> io::Result<PortReservation> {
    let domain = if source.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let (ty, proto) = match protocol {
        Protocol::Tcp => (Type::STREAM, SockProtocol::TCP),
        Protocol::Udp => (Type::DGRAM, SockProtocol::UDP),
        Protocol::Icmp => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "ICMP flows use identifiers, not ports",
            ));
        }
    };
    let socket = Socket::new(domain, ty, Some(proto))?;
    socket.bind(&SocketAddr::new(source, port).into())?;
    let port = socket
        .local_addr()?
        .as_socket()
        .map(|a| a.port())
        .ok_or_else(|| io::Error::other("bound socket has no port"))?;
    Ok(PortReservation {
        _socket: socket,
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_ports_are_distinct_and_held() {
        let lo = IpAddr::from([127, 0, 0, 1]);
        let a = reserve_port(Protocol::Udp, lo, 0).unwrap();
        let b = reserve_port(Protocol::Udp, lo, 0).unwrap();
        assert_ne!(a.port, b.port);
        assert!(
            std::net::UdpSocket::bind((lo, a.port)).is_err(),
            "port is held"
        );
        let t = reserve_port(Protocol::Tcp, lo, 0).unwrap();
        assert!(t.port > 0);
        assert!(reserve_port(Protocol::Icmp, lo, 0).is_err());
    }
}
