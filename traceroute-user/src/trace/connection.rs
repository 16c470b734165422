//! The TCP connection a `tcp_method=sack` trace probes inside (see
//! `probe::sack`). A kernel socket makes the handshake, so it is a real
//! connection to every firewall on the way; the capture shows us its
//! SYN-ACK, which gives both sequence numbers and says whether the
//! destination allows SACK. The socket stays open while the trace runs and
//! is reset when dropped, so the destination keeps no state.

use std::net::SocketAddr;
use std::time::Duration;

use etherparse::{TcpOptionElement, TcpSlice};
use socket2::{Domain, Protocol as SockProtocol, SockAddr, Socket, Type};
use traceroute_common::EventKind;

use crate::capture::FlowSubscription;
use crate::probe::sack::Connection;

/// Why no connection to probe inside could be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error(
        "the destination refused the connection (RST): nothing to probe inside; use tcp_method=syn"
    )]
    Refused,
    #[error(
        "the destination does not allow SACK: its answers could not name the probes; use tcp_method=syn"
    )]
    NoSack,
    #[error("no SYN-ACK within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("opening the connection: {0}")]
    Io(#[from] std::io::Error),
}

impl ConnectionError {
    /// `prefer_sack` falls back to SYN probes for these.
    pub fn falls_back(&self) -> bool {
        matches!(self, ConnectionError::Refused | ConnectionError::NoSack)
    }
}

/// An open connection; dropping it resets it.
pub struct OpenConnection {
    socket: Socket,
    pub connection: Connection,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        // Linger 0: close with a RST, no FIN_WAIT/TIME_WAIT on either side.
        let _ = self.socket.set_linger(Some(Duration::ZERO));
    }
}

/// A socket bound to `source` (port 0: any) and to the pinned interface,
/// not yet connected, and its port.
pub fn bind(source: SocketAddr, device: Option<&str>) -> std::io::Result<(Socket, u16)> {
    let domain = Domain::for_address(source);
    let socket = Socket::new(domain, Type::STREAM, Some(SockProtocol::TCP))?;
    socket.set_nonblocking(true)?;
    super::syn_socket::bind(&socket, source, device)?;
    let port = socket
        .local_addr()?
        .as_socket()
        .map(|a| a.port())
        .ok_or_else(|| std::io::Error::other("bound socket has no port"))?;
    Ok((socket, port))
}

/// Connects `socket` to `destination` and reads the SYN-ACK from
/// `subscription` (registered for the flow, with TCP ACKs wanted).
pub async fn open(
    socket: Socket,
    destination: SocketAddr,
    subscription: &mut FlowSubscription,
    timeout: Duration,
) -> Result<OpenConnection, ConnectionError> {
    match socket.connect(&SockAddr::from(destination)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    let handshake = async {
        while let Some(packet) = subscription.recv().await {
            match packet.kind {
                EventKind::TcpRst => return Err(ConnectionError::Refused),
                EventKind::TcpSynAck => {
                    if let Some(answer) = syn_ack(&packet.bytes) {
                        return answer;
                    }
                }
                _ => {}
            }
        }
        Err(ConnectionError::Io(std::io::Error::other(
            "the capture stopped",
        )))
    };
    let connection = tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| ConnectionError::Timeout(timeout))??;
    Ok(OpenConnection { socket, connection })
}

/// Both sequence numbers from a SYN-ACK (bytes from the IP header), or why
/// it will not do; `None` when it is no TCP segment.
fn syn_ack(bytes: &[u8]) -> Option<Result<Connection, ConnectionError>> {
    let ip = etherparse::LaxIpSlice::from_slice(bytes).ok()?.0;
    let tcp = TcpSlice::from_slice(ip.payload().payload).ok()?;
    let sack = tcp
        .options_iterator()
        .any(|o| matches!(o, Ok(TcpOptionElement::SelectiveAcknowledgementPermitted)));
    if !sack {
        return Some(Err(ConnectionError::NoSack));
    }
    Some(Ok(Connection {
        next_seq: tcp.acknowledgment_number(),
        ack: tcp.sequence_number().wrapping_add(1),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn syn_ack_bytes(options: &[TcpOptionElement]) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ipv4([198, 18, 9, 9], [198, 18, 0, 5], 60)
            .tcp(80, 40000, 1000, 64240)
            .syn()
            .ack(5001)
            .options(options)
            .unwrap()
            .write(&mut out, &[])
            .unwrap();
        out
    }

    #[test]
    fn the_syn_ack_gives_both_sequence_numbers_when_sack_is_allowed() {
        let allowed = syn_ack_bytes(&[TcpOptionElement::SelectiveAcknowledgementPermitted]);
        let c = syn_ack(&allowed).unwrap().unwrap();
        assert_eq!(
            c,
            Connection {
                next_seq: 5001,
                ack: 1001
            }
        );
        let without = syn_ack_bytes(&[TcpOptionElement::MaximumSegmentSize(1460)]);
        assert!(matches!(
            syn_ack(&without),
            Some(Err(ConnectionError::NoSack))
        ));
        assert!(syn_ack(&[0u8; 10]).is_none());
    }
}
