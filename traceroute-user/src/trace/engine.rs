//! The probing loop of one trace: asks the [`Prober`] what to do, sends what it
//! says through a [`Network`], feeds back what the network delivers, and
//! sleeps until the next thing it waits for (a send time, a give-up time, a
//! packet, or news from another trace) — never on a fixed tick.
//!
//! [`Network`] is the seam between the engine and the world: [`LiveNetwork`]
//! is raw sockets, the capture and the monotonic clock; the scenario tests
//! drive the same loop with a simulated network and a virtual clock.

use std::io;
use std::net::IpAddr;
use std::time::Duration;

use tokio::sync::watch;

use super::prober::{Action, Prober, Shared};
use super::sender::{ProbeSender, SendVia};
use crate::capture::{CapturedPacket, FlowSubscription};
use crate::clock::MonotonicTime;
use crate::probe::build_probe;

/// Probe I/O and the clock, as the engine sees them.
pub trait Network {
    /// The time on the clock the capture stamps packets with.
    fn now(&self) -> MonotonicTime;
    /// Sends one complete IP packet.
    fn send(&mut self, packet: &[u8], destination: IpAddr) -> io::Result<()>;
    /// A packet that is already waiting, without waiting for one.
    fn ready(&mut self) -> Option<CapturedPacket>;
    /// Waits for the next packet until `until`, or for news from other
    /// traces, whichever comes first.
    fn next(&mut self, until: MonotonicTime) -> impl Future<Output = Wake>;
}

/// Why [`Network::next`] returned.
pub enum Wake {
    Packet(CapturedPacket),
    /// Another trace published the gateway's answer, or a budget grew.
    News,
    /// The time came (or the capture went away).
    Time,
}

/// Runs `prober` to the end over `network` (the simulated network's tests).
#[cfg(test)]
pub async fn drive<N: Network>(
    prober: &mut Prober,
    network: &mut N,
    shared: Shared<'_>,
) -> io::Result<()> {
    drive_observed(prober, network, shared, &mut |_| {}).await
}

/// [`drive`], showing the prober to `observe` before every wait and at the end (the live
/// progress of a trace is drawn from it).
pub async fn drive_observed<N: Network>(
    prober: &mut Prober,
    network: &mut N,
    shared: Shared<'_>,
    observe: &mut (dyn FnMut(&Prober) + Send),
) -> io::Result<()> {
    loop {
        // Whatever already arrived is taken before anything is given up.
        while let Some(packet) = network.ready() {
            take(prober, network, &packet, shared);
        }
        match prober.poll(network.now(), shared) {
            Action::Done => {
                observe(prober);
                return Ok(());
            }
            Action::Send { key, reprobe } => {
                let packet = build_probe(prober.flow(), key.ttl, key.wire_id(reprobe).attempt());
                // Stamped before the call: without a kernel egress stamp the
                // RTT errs long by the syscall, never short.
                let at = network.now();
                match network.send(&packet, prober.flow().destination()) {
                    Ok(()) => prober.on_sent(key, at),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        prober.on_send_deferred(key, at);
                    }
                    Err(e) => return Err(e),
                }
            }
            Action::Wait(until) => {
                // Shown before waiting: the wait may be long, and what
                // settled up to now must not wait with it.
                observe(prober);
                match network.next(until).await {
                    Wake::Packet(packet) => take(prober, network, &packet, shared),
                    Wake::News => prober.on_news(),
                    Wake::Time => {}
                }
            }
        }
    }
}

/// Hands a packet to the prober, noting how late it came.
fn take<N: Network>(prober: &mut Prober, network: &N, packet: &CapturedPacket, shared: Shared<'_>) {
    let now = network.now();
    if let Some(lag) = now.since(packet.timestamp) {
        shared.lag.observe(lag, now);
    }
    prober.on_packet(packet, shared);
}

/// Raw sockets, the trace's capture subscription and CLOCK_MONOTONIC.
pub struct LiveNetwork<'a> {
    pub sender: &'a ProbeSender,
    /// The pinned interface and source, when the request pins either.
    pub via: Option<SendVia>,
    pub subscription: &'a mut FlowSubscription,
    /// Changes when another trace publishes a shared hop.
    pub news: watch::Receiver<u64>,
    /// Changes when a responder's budget grows (probes waiting for its
    /// tokens look again).
    pub grown: watch::Receiver<u64>,
    /// The capture went away: only the clock is left.
    pub closed: bool,
}

impl Network for LiveNetwork<'_> {
    fn now(&self) -> MonotonicTime {
        MonotonicTime::now()
    }

    fn send(&mut self, packet: &[u8], destination: IpAddr) -> io::Result<()> {
        self.sender.send(packet, destination, self.via)?;
        self.subscription.sent();
        Ok(())
    }

    fn ready(&mut self) -> Option<CapturedPacket> {
        self.subscription.try_recv()
    }

    async fn next(&mut self, until: MonotonicTime) -> Wake {
        let nap = until.since(MonotonicTime::now()).unwrap_or(Duration::ZERO);
        if nap.is_zero() {
            return Wake::Time;
        }
        let sleep = tokio::time::sleep(nap);
        tokio::select! {
            biased;
            packet = self.subscription.recv(), if !self.closed => match packet {
                Some(packet) => Wake::Packet(packet),
                None => {
                    self.closed = true;
                    Wake::Time
                }
            },
            _ = self.news.changed() => Wake::News,
            _ = self.grown.changed() => Wake::News,
            _ = sleep => Wake::Time,
        }
    }
}
