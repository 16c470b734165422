//! A simulated network for the engine's scenario tests: a virtual clock,
//! routers with RTTs, silence and Linux's ICMP rate limiter, destinations
//! that answer as Linux hosts do, and reply packets built byte for byte as
//! real routers build them (so the real decoder and correlation run).
//!
//! The rate limiter here is written from the kernel's description
//! (`inet_peer_xrlim_allow`: tokens in milliseconds, each error costs
//! `icmp_ratelimit`, at most 6 of them saved up), independently of the
//! budgets the engine keeps, so a scenario catches a budget that is wrong.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;
use std::time::Duration;

use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use traceroute_common::{Direction, EventKind};

use super::budget::{ProbeRail, Rate};
use super::engine::{Network, Wake};
use super::knowledge::{Knowledge, Origin};
use super::prober::{Action, Plan, Policy, Prober, Setup, Shared};
use super::share::{HopShare, Observer, ShareConfig};
use crate::capture::{CapturedPacket, Stamp};
use crate::clock::MonotonicTime;
use crate::probe::{FlowSecret, ProbeFlow, Protocol, Ttl, build_probe};

pub const SRC: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);

/// Linux's ICMP limiter for one peer (us).
#[derive(Clone, Debug)]
pub struct Limiter {
    /// Milliseconds between errors (`icmp_ratelimit`).
    pub cost_ms: u64,
    /// How many can be saved up.
    pub burst: u64,
    tokens_ms: u64,
    last_ms: Option<u64>,
    /// Errors it held back.
    pub suppressed: u64,
}

impl Limiter {
    pub fn linux() -> Limiter {
        Limiter::new(1000, 6)
    }

    pub fn new(cost_ms: u64, burst: u64) -> Limiter {
        Limiter {
            cost_ms,
            burst,
            tokens_ms: 0,
            last_ms: None,
            suppressed: 0,
        }
    }

    fn allow(&mut self, now_ms: u64) -> bool {
        // A new peer starts with a full burst.
        let elapsed = self.last_ms.map_or(u64::MAX / 2, |l| now_ms - l);
        self.tokens_ms = (self.tokens_ms + elapsed).min(self.burst * self.cost_ms);
        self.last_ms = Some(now_ms);
        if self.tokens_ms >= self.cost_ms {
            self.tokens_ms -= self.cost_ms;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

/// A router on a simulated path.
#[derive(Clone, Debug)]
pub struct Router {
    pub addr: IpAddr,
    pub rtt: Duration,
    /// Never answers.
    pub silent: bool,
    pub limiter: Option<Limiter>,
    /// Answers with this ICMP unreachable code instead of time exceeded.
    pub unreachable: Option<u8>,
    /// Sends every answer twice.
    pub duplicates: bool,
    /// Probes that expired here.
    pub asked: u64,
}

impl Router {
    pub fn new(addr: impl Into<IpAddr>, rtt_ms: f64) -> Router {
        Router {
            addr: addr.into(),
            rtt: Duration::from_secs_f64(rtt_ms / 1000.0),
            silent: false,
            limiter: None,
            unreachable: None,
            duplicates: false,
            asked: 0,
        }
    }

    pub fn silent(mut self) -> Router {
        self.silent = true;
        self
    }

    pub fn limited(mut self, limiter: Limiter) -> Router {
        self.limiter = Some(limiter);
        self
    }
}

/// How a destination answers what reaches it.
#[derive(Clone, Debug)]
pub struct Host {
    pub rtt: Duration,
    /// TCP: SYN-ACK when open, RST when closed.
    pub tcp_open: bool,
    /// Limits its port unreachables (UDP), as any Linux host.
    pub limiter: Limiter,
    pub silent: bool,
}

impl Host {
    pub fn new(rtt_ms: f64) -> Host {
        Host {
            rtt: Duration::from_secs_f64(rtt_ms / 1000.0),
            tcp_open: true,
            limiter: Limiter::linux(),
            silent: false,
        }
    }
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Queued {
    at: MonotonicTime,
    seq: u64,
    flow_id: u16,
}

/// The simulated world: every router, every destination, the clock.
pub struct World {
    pub now: MonotonicTime,
    pub routers: Vec<Router>,
    pub hosts: HashMap<IpAddr, Host>,
    /// Router indices a probe to each destination crosses, in TTL order.
    pub paths: HashMap<IpAddr, Vec<usize>>,
    queue: BinaryHeap<Reverse<Queued>>,
    packets: HashMap<u64, CapturedPacket>,
    seq: u64,
    /// Every probe sent, as (time, destination, TTL).
    pub sent: Vec<(MonotonicTime, IpAddr, u8)>,
    /// How long after the kernel saw a packet the trace gets it (a busy
    /// capture pipeline); the packet keeps its kernel stamp.
    pub delivery_delay: Duration,
}

pub fn t0() -> MonotonicTime {
    MonotonicTime::from_nanos(100_000_000_000)
}

/// `ms` milliseconds after [`t0`].
pub fn at(ms: u64) -> MonotonicTime {
    t0() + Duration::from_millis(ms)
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

impl World {
    pub fn new() -> World {
        World {
            now: t0(),
            routers: Vec::new(),
            hosts: HashMap::new(),
            paths: HashMap::new(),
            queue: BinaryHeap::new(),
            packets: HashMap::new(),
            seq: 0,
            sent: Vec::new(),
            delivery_delay: Duration::ZERO,
        }
    }

    pub fn router(&mut self, r: Router) -> usize {
        self.routers.push(r);
        self.routers.len() - 1
    }

    /// A destination behind the routers `path`.
    pub fn host(&mut self, addr: impl Into<IpAddr>, path: &[usize], host: Host) {
        let addr = addr.into();
        self.paths.insert(addr, path.to_vec());
        self.hosts.insert(addr, host);
    }

    pub fn elapsed(&self) -> Duration {
        self.now.since(t0()).unwrap_or_default()
    }

    fn now_ms(&self) -> u64 {
        self.elapsed().as_millis() as u64
    }

    /// Delivers `bytes` to the flow `flow_id` at `at`.
    pub fn deliver(&mut self, flow_id: u16, at: MonotonicTime, kind: EventKind, bytes: Vec<u8>) {
        self.seq += 1;
        let direction = if kind == EventKind::Probe {
            Direction::Egress
        } else {
            Direction::Ingress
        };
        self.packets.insert(
            self.seq,
            CapturedPacket {
                timestamp: at,
                // As the eBPF capture stamps with receive stamps on.
                stamp: if kind == EventKind::Probe {
                    Stamp::Program
                } else {
                    Stamp::Stack
                },
                ifindex: 2,
                direction,
                kind,
                cookie: 1,
                packet_len: bytes.len() as u32,
                bytes,
            },
        );
        self.queue.push(Reverse(Queued {
            at: at + self.delivery_delay,
            seq: self.seq,
            flow_id,
        }));
    }

    /// A probe leaves now: the routers and the destination act on it.
    pub fn on_probe(&mut self, probe: &[u8]) {
        let Ok(sliced) = SlicedPacket::from_ip(probe) else {
            return;
        };
        let Some(net) = sliced.net.as_ref() else {
            return;
        };
        let Some(ipv4) = net.ipv4_ref() else {
            return;
        };
        let header = ipv4.header();
        let dst = IpAddr::from(header.destination_addr());
        let ttl = header.ttl();
        let flow_id = match &sliced.transport {
            Some(TransportSlice::Udp(u)) => u.source_port(),
            Some(TransportSlice::Tcp(t)) => t.source_port(),
            Some(TransportSlice::Icmpv4(i)) => {
                u16::from_be_bytes([i.bytes5to8()[0], i.bytes5to8()[1]])
            }
            _ => return,
        };
        self.sent.push((self.now, dst, ttl));
        let now = self.now;
        self.deliver(flow_id, now, EventKind::Probe, probe.to_vec());
        let path = self.paths.get(&dst).cloned().unwrap_or_default();
        let now_ms = self.now_ms();
        if let Some(index) = path.get(usize::from(ttl) - 1) {
            let router = &mut self.routers[*index];
            router.asked += 1;
            if router.silent || router.limiter.as_mut().is_some_and(|l| !l.allow(now_ms)) {
                return;
            }
            let (ty, code) = match router.unreachable {
                Some(code) => (3, code),
                None => (11, 0),
            };
            let reply = icmp_error(router.addr, ty, code, probe);
            let at = now + router.rtt;
            let twice = router.duplicates;
            self.deliver(flow_id, at, icmp_kind(ty), reply.clone());
            if twice {
                self.deliver(
                    flow_id,
                    at + Duration::from_micros(10),
                    icmp_kind(ty),
                    reply,
                );
            }
            return;
        }
        let Some(host) = self.hosts.get_mut(&dst) else {
            return;
        };
        if host.silent {
            return;
        }
        let at = now + host.rtt;
        match &sliced.transport {
            Some(TransportSlice::Tcp(t)) => {
                let b = PacketBuilder::ipv4(ipv4_of(dst), SRC.octets(), 64)
                    .tcp(t.destination_port(), t.source_port(), 7, 1024)
                    .ack(t.sequence_number().wrapping_add(1));
                let (b, kind) = if host.tcp_open {
                    (b.syn(), EventKind::TcpSynAck)
                } else {
                    (b.rst(), EventKind::TcpRst)
                };
                let mut out = Vec::new();
                b.write(&mut out, &[]).expect("tcp");
                self.deliver(flow_id, at, kind, out);
            }
            Some(TransportSlice::Icmpv4(echo)) => {
                let [a, b, c, d] = echo.bytes5to8();
                let b = PacketBuilder::ipv4(ipv4_of(dst), SRC.octets(), 64)
                    .icmpv4_echo_reply(u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]));
                let mut out = Vec::new();
                b.write(&mut out, echo.payload()).expect("echo");
                self.deliver(flow_id, at, EventKind::EchoReply, out);
            }
            Some(TransportSlice::Udp(_)) if host.limiter.allow(now_ms) => {
                let reply = icmp_error(dst, 3, 3, probe);
                self.deliver(flow_id, at, EventKind::DestUnreachable, reply);
            }
            _ => {}
        }
    }

    /// The next packet for `flow_id` due by `until`.
    pub fn pop(&mut self, flow_id: u16, until: MonotonicTime) -> Option<CapturedPacket> {
        let mut skipped = Vec::new();
        let mut found = None;
        while let Some(Reverse(q)) = self.queue.pop() {
            if q.at > until {
                skipped.push(q);
                break;
            }
            if q.flow_id == flow_id {
                found = self.packets.remove(&q.seq);
                break;
            }
            skipped.push(q);
        }
        for q in skipped {
            self.queue.push(Reverse(q));
        }
        found
    }

    /// The earliest time something is due, for anyone.
    pub fn next_due(&self) -> Option<MonotonicTime> {
        self.queue.peek().map(|Reverse(q)| q.at)
    }

    /// Every packet due by `until`, in order, with its flow.
    pub fn drain_due(&mut self, until: MonotonicTime) -> Vec<(u16, CapturedPacket)> {
        let mut out = Vec::new();
        while let Some(Reverse(q)) = self.queue.peek() {
            if q.at > until {
                break;
            }
            let Reverse(q) = self.queue.pop().expect("peeked");
            if let Some(p) = self.packets.remove(&q.seq) {
                out.push((q.flow_id, p));
            }
        }
        out
    }
}

fn ipv4_of(ip: IpAddr) -> [u8; 4] {
    match ip {
        IpAddr::V4(v4) => v4.octets(),
        IpAddr::V6(_) => [0; 4],
    }
}

fn icmp_kind(ty: u8) -> EventKind {
    if ty == 11 {
        EventKind::TimeExceeded
    } else {
        EventKind::DestUnreachable
    }
}

/// An ICMP error from `from` quoting the whole probe (as Linux does).
pub fn icmp_error(from: IpAddr, ty: u8, code: u8, probe: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ipv4(ipv4_of(from), SRC.octets(), 60).icmpv4_raw(ty, code, [0; 4]);
    let mut out = Vec::new();
    b.write(&mut out, probe).expect("icmp");
    out
}

/// The process-wide parts a tracer shares between its traces.
pub struct Commons {
    pub lag: super::lag::DeliveryLag,
    pub jitter: super::lag::Jitter,
    pub knowledge: Knowledge,
    pub rail: ProbeRail,
    pub share: HopShare,
}

impl Default for Commons {
    fn default() -> Self {
        Self::new()
    }
}

impl Commons {
    pub fn new() -> Commons {
        Commons {
            lag: Default::default(),
            jitter: Default::default(),
            knowledge: Knowledge::new(Rate::ROUTER_DEFAULT),
            rail: ProbeRail::new(crate::trace::request::PROBES_PER_SECOND.default),
            share: HopShare::new(ShareConfig::default()),
        }
    }

    pub fn shared(&self) -> Shared<'_> {
        Shared {
            lag: &self.lag,
            jitter: &self.jitter,
            knowledge: &self.knowledge,
            rail: &self.rail,
            share: &self.share,
        }
    }
}

/// A flow from [`SRC`] to `dst` with source port (or echo id) `flow_id`.
pub fn flow(protocol: Protocol, dst: impl Into<IpAddr>, flow_id: u16) -> ProbeFlow {
    let dst = dst.into();
    let src = IpAddr::from(SRC);
    let flow = match protocol {
        Protocol::Tcp => ProbeFlow::tcp((src, flow_id).into(), (dst, 80).into()),
        Protocol::Udp => ProbeFlow::udp((src, flow_id).into(), (dst, 33434).into()),
        Protocol::Icmp => ProbeFlow::icmp(src, dst, flow_id),
    };
    // A fixed secret per flow id keeps runs deterministic.
    let secret = FlowSecret::from_bits(0x5a5a_1234_0000_0001 ^ (u64::from(flow_id) * 0x9e37_79b9));
    flow.expect("flow").with_secret(secret)
}

pub fn origin() -> Origin {
    Origin {
        source: IpAddr::from(SRC),
        ifindex: 2,
        gateway: Some(IpAddr::from(GATEWAY)),
    }
}

/// A prober for `flow` starting at `start`, with `deadline` from then.
pub fn prober(flow: ProbeFlow, plan: Plan, start: MonotonicTime, deadline: Duration) -> Prober {
    prober_with(flow, plan, Policy::default(), start, deadline)
}

/// [`prober`] with a policy of its own.
pub fn prober_with(
    flow: ProbeFlow,
    plan: Plan,
    policy: Policy,
    start: MonotonicTime,
    deadline: Duration,
) -> Prober {
    let observers = (0..plan.attempts)
        .map(|_| Observer {
            test_run_id: uuid::Uuid::new_v4(),
            run_id: uuid::Uuid::new_v4(),
            protocol: flow.protocol(),
            destination: flow.destination(),
            flow_id: flow.source_port().map(|p| p.0).unwrap_or(0),
        })
        .collect();
    Prober::new(Setup {
        plan,
        policy,
        flow,
        origin: origin(),
        deadline: start + deadline,
        observers,
        branching: false,
    })
}

pub fn plan(max_ttl: u8, attempts: u8, timeout_ms: u64) -> Plan {
    Plan {
        first_ttl: Ttl::MIN,
        max_ttl: Ttl::new(max_ttl).expect("ttl"),
        attempts,
        timeout: Duration::from_millis(timeout_ms),
        spacing: Duration::ZERO,
    }
}

/// One trace's view of the world, as the engine's [`Network`].
pub struct SimNetwork {
    pub world: Rc<RefCell<World>>,
    pub flow_id: u16,
}

impl Network for SimNetwork {
    fn now(&self) -> MonotonicTime {
        self.world.borrow().now
    }

    fn send(&mut self, packet: &[u8], _destination: IpAddr) -> io::Result<()> {
        self.world.borrow_mut().on_probe(packet);
        Ok(())
    }

    fn ready(&mut self) -> Option<CapturedPacket> {
        let mut world = self.world.borrow_mut();
        let now = world.now;
        world.pop(self.flow_id, now)
    }

    async fn next(&mut self, until: MonotonicTime) -> Wake {
        let mut world = self.world.borrow_mut();
        match world.pop(self.flow_id, until) {
            Some(p) => {
                let delivered = p.timestamp + world.delivery_delay;
                world.now = world.now.max(delivered);
                Wake::Packet(p)
            }
            None => {
                world.now = world.now.max(until);
                Wake::Time
            }
        }
    }
}

/// Runs one trace to the end through the real engine loop in virtual time.
pub fn run_one(world: &Rc<RefCell<World>>, commons: &Commons, prober: &mut Prober) {
    let flow_id = crate::trace::flow_id(prober.flow());
    let mut network = SimNetwork {
        world: Rc::clone(world),
        flow_id,
    };
    let done = futures_util::FutureExt::now_or_never(super::engine::drive(
        prober,
        &mut network,
        commons.shared(),
    ));
    done.expect("the simulated network never blocks")
        .expect("sends do not fail");
}

/// Runs many traces at once in virtual time, each from its start time: a
/// trace is polled when its time comes or a packet for it arrives. Returns
/// when all are done.
pub fn run_many(
    world: &mut World,
    commons: &Commons,
    probers: &mut [Prober],
    starts: &[MonotonicTime],
) {
    let by_flow: BTreeMap<u16, usize> = probers
        .iter()
        .enumerate()
        .map(|(i, p)| (crate::trace::flow_id(p.flow()), i))
        .collect();
    let mut wake: Vec<Option<MonotonicTime>> = starts.iter().map(|s| Some(*s)).collect();
    let mut news = commons.share.subscribe();
    let mut grown = commons.knowledge.subscribe();
    loop {
        let now = world.now;
        for (flow_id, packet) in world.drain_due(now) {
            if let Some(i) = by_flow.get(&flow_id) {
                probers[*i].on_packet(&packet, commons.shared());
                wake[*i] = Some(now);
            }
        }
        // An answer from the gateway, or a budget that grew, wakes every
        // trace waiting for it.
        let gateway = news.has_changed().unwrap_or(false);
        let budget = grown.has_changed().unwrap_or(false);
        if gateway || budget {
            news.borrow_and_update();
            grown.borrow_and_update();
            for ((w, start), prober) in wake.iter_mut().zip(starts).zip(probers.iter_mut()) {
                if let Some(w) = w.as_mut()
                    && *start <= now
                {
                    *w = now;
                    prober.on_news();
                }
            }
        }
        // Something published may let waiting traces go on: poll everyone due.
        for (i, prober) in probers.iter_mut().enumerate() {
            if wake[i].is_none_or(|w| w > now) {
                continue;
            }
            wake[i] = loop {
                match prober.poll(now, commons.shared()) {
                    Action::Send { key, reprobe } => {
                        let packet =
                            build_probe(prober.flow(), key.ttl, key.wire_id(reprobe).attempt());
                        prober.on_sent(key, now);
                        world.on_probe(&packet);
                    }
                    Action::Wait(until) => break Some(until),
                    Action::Done => break None,
                }
            };
        }
        let next_wake = wake.iter().flatten().min().copied();
        let Some(next) = [next_wake, world.next_due()].into_iter().flatten().min() else {
            return;
        };
        if next_wake.is_none() && world.next_due().is_some() {
            // Only stray packets left for finished traces.
            world.drain_due(MonotonicTime::from_nanos(u64::MAX));
            return;
        }
        world.now = next.max(now + Duration::from_micros(1));
    }
}
