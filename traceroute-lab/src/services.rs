//! Listening sockets inside lab namespaces: a TCP acceptor and a UDP echo.
//!
//! A thread enters the namespace and binds there (the socket keeps that
//! namespace), then serves until the lab sets `stop`; dropping the socket as
//! the thread ends closes the port.

use std::io::{ErrorKind, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::LabError;
use crate::netns::enter_netns;

const POLL_MS: u16 = 50;

/// Peer addresses a listener has seen, v4 peers in plain (not mapped) form.
pub(crate) type Peers = Arc<Mutex<Vec<SocketAddr>>>;

fn record(peers: &Peers, peer: SocketAddr) {
    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
    peers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(peer);
}

fn readable(fd: impl AsFd) -> bool {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::from(POLL_MS)).is_ok_and(|n| n > 0)
}

/// Binds with `bind` inside `ns` on a new thread, then runs `serve` there.
fn spawn<S, B, F>(ns: &str, label: String, bind: B, serve: F) -> Result<JoinHandle<()>, LabError>
where
    B: FnOnce() -> std::io::Result<S> + Send + 'static,
    F: FnOnce(S) + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    let ns = ns.to_string();
    let context = format!("{label} in {ns}");
    let handle = std::thread::Builder::new()
        .name(label)
        .spawn(move || {
            let bound = enter_netns(&ns).and_then(|()| bind().map_err(LabError::io(context)));
            match bound {
                Ok(sock) => {
                    let _ = tx.send(Ok(()));
                    serve(sock);
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        })
        .map_err(LabError::io("spawning listener thread"))?;
    match rx.recv() {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => {
            let _ = handle.join();
            Err(e)
        }
        Err(_) => Err(LabError::Topology(
            "listener thread died during setup".into(),
        )),
    }
}

/// How long an accepted connection stays open without the client closing it.
const HOLD: Duration = Duration::from_secs(10);

/// TCP on `[::]:port`: each connection gets the peer address as one line,
/// then stays open until the client closes it.
pub(crate) fn tcp_listen(
    ns: &str,
    port: u16,
    stop: Arc<AtomicBool>,
    peers: Peers,
) -> Result<JoinHandle<()>, LabError> {
    let bind = move || {
        let l = TcpListener::bind((Ipv6Addr::UNSPECIFIED, port))?;
        l.set_nonblocking(true)?;
        Ok(l)
    };
    let serve = move |l: TcpListener| {
        while !stop.load(Ordering::Relaxed) {
            if !readable(&l) {
                continue;
            }
            match l.accept() {
                Ok((mut stream, peer)) => {
                    record(&peers, peer);
                    // Like a real server, the connection stays open until
                    // the client closes it (or HOLD passes): a trace inside
                    // the connection (tcp_method sack) needs it open.
                    std::thread::spawn(move || {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
                        let _ = stream.set_read_timeout(Some(HOLD));
                        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
                        let _ = writeln!(stream, "{peer}");
                        let _ = std::io::copy(&mut stream, &mut std::io::sink());
                    });
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => std::thread::sleep(Duration::from_millis(POLL_MS as u64)),
            }
        }
    };
    spawn(ns, format!("tcp{port}"), bind, serve)
}

/// UDP echo on `[::]:port`.
pub(crate) fn udp_echo(
    ns: &str,
    port: u16,
    stop: Arc<AtomicBool>,
    peers: Peers,
) -> Result<JoinHandle<()>, LabError> {
    let bind = move || {
        let s = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, port))?;
        s.set_read_timeout(Some(Duration::from_millis(POLL_MS as u64)))?;
        Ok(s)
    };
    let serve = move |s: UdpSocket| {
        let mut buf = vec![0u8; 65536];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, peer)) = s.recv_from(&mut buf) {
                record(&peers, peer);
                let _ = s.send_to(&buf[..n], peer);
            }
        }
    };
    spawn(ns, format!("udp{port}"), bind, serve)
}
