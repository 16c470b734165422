//! Scenario tests of the probing engine in simulated networks (see
//! [`super::sim`]): deterministic, virtual time, no root. Each checks what
//! the record would say, above all that no hop is reported silent unless its
//! probe was sent and waited its full time.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;
use std::time::Duration;

use traceroute_common::EventKind;

use super::prober::{ProbeKey, Prober, Status};
use super::sim::*;
use crate::path::NoAnswer;
use crate::probe::{Protocol, Ttl, build_probe};

const DST: Ipv4Addr = Ipv4Addr::new(198, 18, 5, 2);

fn r(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, n, 2)
}

fn key(attempt: u8, ttl: u8) -> ProbeKey {
    ProbeKey {
        attempt,
        ttl: Ttl::new(ttl).unwrap(),
    }
}

fn status(p: &Prober, attempt: u8, ttl: u8) -> &Status {
    &p.probes()[&key(attempt, ttl)].status
}

fn answered_by(p: &Prober, attempt: u8, ttl: u8) -> Option<IpAddr> {
    match status(p, attempt, ttl) {
        Status::Answered(a) => Some(a.from),
        Status::Shared(h) => Some(h.responder),
        _ => None,
    }
}

fn no_answer(p: &Prober, attempt: u8, ttl: u8) -> Option<NoAnswer> {
    match status(p, attempt, ttl) {
        Status::Unanswered { reason, .. } => Some(*reason),
        _ => None,
    }
}

/// src — gw — r2 — r3 — r4 — dst, 0.1 ms per hop, no rate limits.
fn chain(world: &mut World) -> Vec<usize> {
    let mut path = vec![world.router(Router::new(GATEWAY, 0.1))];
    for n in 2..=4 {
        path.push(world.router(Router::new(r(n), 0.1 * f64::from(n))));
    }
    world.host(DST, &path, Host::new(0.5));
    path
}

/// Routers `silent` (indexes into the world) and the destination answer nothing.
fn silence_from(world: &mut World, silent: &[usize]) {
    for i in silent {
        world.routers[*i].silent = true;
    }
    world.hosts.get_mut(&IpAddr::from(DST)).unwrap().silent = true;
}

/// A trace to [`DST`] from flow 40001, starting at [`t0`].
fn to_dst(protocol: Protocol, plan: super::prober::Plan, deadline: Duration) -> Prober {
    prober(flow(protocol, DST, 40001), plan, t0(), deadline)
}

/// Every unanswered probe up to the end: none may be silent unless it waited
/// its full wait (the whole timeout, or what `commons`' knowledge allows).
fn assert_no_invented_silence(p: &Prober, commons: &Commons) {
    for (k, probe) in p.probes() {
        if k.ttl > p.last_ttl() {
            continue;
        }
        if let Status::Unanswered {
            reason: NoAnswer::Timeout,
            waited,
        } = &probe.status
        {
            let waited = waited.expect("a timed-out probe was sent");
            let due = p.wait_for(*k, commons.shared());
            assert!(
                waited >= due.min(p.plan().timeout),
                "{k:?} reported silent after {waited:?} < {due:?}"
            );
        }
    }
}

/// Every silent probe waited the whole timeout: nothing was known of it.
fn assert_silences_waited_the_timeout(p: &Prober) {
    for (k, probe) in p.probes() {
        if let Status::Unanswered {
            reason: NoAnswer::Timeout,
            waited,
        } = &probe.status
        {
            let waited = waited.expect("a timed-out probe was sent");
            assert!(
                waited >= p.plan().timeout,
                "{k:?} silent after {waited:?} on first contact"
            );
        }
    }
}

/// A world and the process that traces through it (its knowledge kept
/// from one trace to the next).
struct Sim {
    world: Rc<RefCell<World>>,
    commons: Commons,
    next_flow: u16,
}

impl Sim {
    fn new(world: World) -> Sim {
        Sim {
            world: Rc::new(RefCell::new(world)),
            commons: Commons::new(),
            next_flow: 40001,
        }
    }

    /// A new process: nothing known, the world as it is.
    fn restart(&mut self) {
        self.commons = Commons::new();
    }

    fn now(&self) -> crate::clock::MonotonicTime {
        self.world.borrow().now
    }

    /// Lets virtual time pass (routers refill).
    fn idle(&mut self, d: Duration) {
        let mut world = self.world.borrow_mut();
        world.now = world.now + d;
    }

    /// One trace to `dst` from now on, to its end; returns it and how long
    /// it took.
    fn trace(
        &mut self,
        protocol: Protocol,
        dst: Ipv4Addr,
        plan: super::prober::Plan,
        deadline: Duration,
    ) -> (Prober, Duration) {
        let flow_id = self.next_flow;
        self.next_flow += 1;
        let start = self.now();
        let mut p = prober(flow(protocol, dst, flow_id), plan, start, deadline);
        run_one(&self.world, &self.commons, &mut p);
        let took = self.now().since(start).unwrap_or_default();
        (p, took)
    }

    fn router(&self, index: usize) -> Router {
        self.world.borrow().routers[index].clone()
    }
}

/// One trace per target, each from its start, all in one world.
struct Traces {
    protocol: Protocol,
    plan: super::prober::Plan,
    deadline: Duration,
}

impl Traces {
    fn run(
        &self,
        world: &mut World,
        targets: &[Ipv4Addr],
        starts: &[crate::clock::MonotonicTime],
    ) -> Vec<Prober> {
        let mut probers: Vec<Prober> = targets
            .iter()
            .zip(starts)
            .enumerate()
            .map(|(i, (t, start))| {
                let flow_id = 20000 + i as u16;
                prober(
                    flow(self.protocol, *t, flow_id),
                    self.plan,
                    *start,
                    self.deadline,
                )
            })
            .collect();
        run_many(world, &Commons::new(), &mut probers, starts);
        probers
    }
}

fn run(world: World, prober: Prober) -> (World, Prober) {
    let (world, prober, _) = run_with(world, prober);
    (world, prober)
}

/// [`run`], also returning the process's knowledge after the trace.
fn run_with(world: World, mut prober: Prober) -> (World, Prober, Commons) {
    let world = Rc::new(RefCell::new(world));
    let commons = Commons::new();
    run_one(&world, &commons, &mut prober);
    let world = Rc::try_unwrap(world).ok().expect("one owner").into_inner();
    (world, prober, commons)
}

#[test]
fn a_silent_hop_met_first_waits_the_whole_timeout_and_once_more_then_knowledge_makes_it_quick() {
    let mut world = World::new();
    let path = chain(&mut world);
    world.routers[path[2]].silent = true;
    // Port unreachables without a limit: this is about the silent hop.
    world.hosts.get_mut(&IpAddr::from(DST)).unwrap().limiter = Limiter::new(0, 1);
    let mut sim = Sim::new(world);
    let (p, took) = sim.trace(Protocol::Udp, DST, plan(30, 3, 1000), secs(5));
    for a in 0..3 {
        assert_eq!(answered_by(&p, a, 1), Some(GATEWAY.into()));
        assert_eq!(no_answer(&p, a, 3), Some(NoAnswer::Timeout));
        assert_eq!(answered_by(&p, a, 5), Some(DST.into()));
    }
    assert_eq!(p.end_ttl(), Ttl::new(5));
    // First contact: nothing says how late its answer may come, and a
    // silence below answering hops may be a spent budget: the whole
    // timeout, then one probe of the TTL again after a refill.
    assert_silences_waited_the_timeout(&p);
    assert_eq!(p.stats().reprobes, 1, "one re-check of the silent TTL");
    assert!(took >= secs(2), "{took:?}");
    assert!(p.degraded().is_empty());
    // The place is known silent now: the next trace gives up from the
    // later hops' RTTs (the 10 ms floor) and asks nothing again.
    let (p, took) = sim.trace(Protocol::Udp, DST, plan(30, 3, 1000), secs(5));
    for a in 0..3 {
        assert_eq!(no_answer(&p, a, 3), Some(NoAnswer::Timeout));
    }
    assert_eq!(p.stats().reprobes, 0);
    assert!(took < Duration::from_millis(20), "{took:?}");
    assert_no_invented_silence(&p, &sim.commons);
}

#[test]
fn a_silent_tail_waits_the_full_timeout() {
    let mut world = World::new();
    let path = chain(&mut world);
    silence_from(&mut world, &path[1..]);
    let p = to_dst(Protocol::Udp, plan(6, 1, 1000), secs(5));
    let (world, p, commons) = run_with(world, p);
    for ttl in 2..=6 {
        assert_eq!(no_answer(&p, 0, ttl), Some(NoAnswer::Timeout));
    }
    assert!(world.elapsed() >= Duration::from_millis(1000));
    assert_eq!(
        p.stats().reprobes,
        0,
        "nothing answered beyond: no re-check"
    );
    assert_no_invented_silence(&p, &commons);
}

#[test]
fn routers_at_linux_rate_limits_answer_every_probe_after_one_overshoot() {
    let mut world = World::new();
    let path = chain(&mut world);
    for i in &path {
        world.routers[*i] = world.routers[*i].clone().limited(Limiter::linux());
    }
    // 10 runs: 10 probes per router, 4 beyond a Linux router's burst.
    let p = to_dst(Protocol::Tcp, plan(30, 10, 1000), secs(8));
    let (world, p, commons) = run_with(world, p);
    for a in 0..10 {
        for ttl in 1..=4 {
            assert!(
                answered_by(&p, a, ttl).is_some(),
                "attempt {a} ttl {ttl}: {:?}",
                status(&p, a, ttl)
            );
        }
        assert_eq!(answered_by(&p, a, 5), Some(DST.into()));
    }
    // Each router answered its whole budget, so the budget grew; the
    // probes beyond its real limit went unanswered, showed the limit, and
    // were asked again one per second. No router was overshot twice.
    for i in &path {
        let held_back = world.routers[*i].limiter.as_ref().unwrap().suppressed;
        assert!(held_back <= 6, "router {i} dropped {held_back} answers");
    }
    assert!(world.elapsed() >= Duration::from_secs(4));
    let view = commons.knowledge.view(world.now);
    for r in view.responders.iter().filter(|r| r.address != DST) {
        assert_eq!(r.state, "limited", "{r:?}");
        assert_eq!(r.budget.burst, 6);
    }
    assert_no_invented_silence(&p, &commons);
}

#[test]
fn a_router_stricter_than_linux_is_reprobed_after_refill_never_called_silent() {
    let mut world = World::new();
    let path = chain(&mut world);
    // Answers 2, then one per second: the prior expects 6.
    world.routers[path[1]] = world.routers[path[1]]
        .clone()
        .limited(Limiter::new(1000, 2));
    let p = to_dst(Protocol::Tcp, plan(30, 4, 1000), secs(5));
    let (world, p, commons) = run_with(world, p);
    for a in 0..4 {
        let answered = answered_by(&p, a, 2).is_some();
        let limited = no_answer(&p, a, 2) == Some(NoAnswer::RateLimited);
        assert!(answered || limited, "attempt {a}: {:?}", status(&p, a, 2));
    }
    assert!(
        p.stats().reprobes >= 1,
        "the missing answers were asked again"
    );
    assert!(
        (0..4).filter(|a| answered_by(&p, *a, 2).is_some()).count() >= 3,
        "re-probes after the refill were answered"
    );
    assert!(world.elapsed() >= Duration::from_secs(1));
    assert_no_invented_silence(&p, &commons);
}

#[test]
fn a_gateway_shared_by_1000_traces_is_asked_a_handful_of_times() {
    let mut world = World::new();
    let gw = world.router(Router::new(GATEWAY, 0.2).limited(Limiter::linux()));
    let targets: Vec<Ipv4Addr> = (0..1000u16)
        .map(|i| Ipv4Addr::new(198, 19, (i / 250) as u8, (i % 250) as u8 + 1))
        .collect();
    for t in &targets {
        world.host(*t, &[gw], Host::new(0.5));
    }
    // Started 10 ms apart, as a scheduler spreads them.
    let starts: Vec<_> = (0..1000u64)
        .map(|i| t0() + Duration::from_millis(10 * i))
        .collect();
    let traces = Traces {
        protocol: Protocol::Tcp,
        plan: plan(8, 3, 1000),
        deadline: secs(3),
    };
    let probers = traces.run(&mut world, &targets, &starts);
    let asked = world.routers[gw].asked;
    assert!(asked <= 12, "the gateway was asked {asked} times");
    assert_eq!(world.routers[gw].limiter.as_ref().unwrap().suppressed, 0);
    let mut shared = 0;
    for (p, t) in probers.iter().zip(&targets) {
        for a in 0..3 {
            assert_eq!(answered_by(p, a, 1), Some(GATEWAY.into()));
            assert_eq!(
                answered_by(p, a, 2),
                Some((*t).into()),
                "{:?}",
                status(p, a, 2)
            );
            shared += usize::from(matches!(status(p, a, 1), Status::Shared(_)));
        }
        assert_silences_waited_the_timeout(p);
    }
    assert!(shared >= 2950, "{shared} of 3000 first hops were shared");
    assert!(
        world.elapsed() < Duration::from_secs(11),
        "{:?}",
        world.elapsed()
    );
}

#[test]
fn a_trace_waiting_for_the_shared_gateway_ends_as_soon_as_it_is_published() {
    let mut world = World::new();
    let gw = world.router(Router::new(GATEWAY, 5.0));
    let targets = [Ipv4Addr::new(198, 19, 0, 1), Ipv4Addr::new(198, 19, 0, 2)];
    for t in &targets {
        world.host(*t, &[gw], Host::new(0.5));
    }
    // Both start together: the first asks the gateway (5 ms away), the second
    // has its destination's answer in 0.5 ms and waits only for the gateway.
    let traces = Traces {
        protocol: Protocol::Icmp,
        plan: plan(8, 1, 1000),
        deadline: secs(3),
    };
    let probers = traces.run(&mut world, &targets, &[t0(), t0()]);
    assert!(matches!(status(&probers[1], 0, 1), Status::Shared(_)));
    for p in &probers {
        let took = p.finished_at().unwrap().since(t0()).unwrap();
        assert!(took < Duration::from_millis(10), "{took:?}");
    }
}

#[test]
fn router_budget_exhaustion_gives_not_sent_or_rate_limited_never_silent() {
    let mut world = World::new();
    let gw = world.router(Router::new(GATEWAY, 0.2).limited(Limiter::linux()));
    let r2 = world.router(Router::new(r(2), 0.3).limited(Limiter::linux()));
    let targets: Vec<Ipv4Addr> = (1..=20).map(|i| Ipv4Addr::new(198, 19, 0, i)).collect();
    for t in &targets {
        world.host(*t, &[gw, r2], Host::new(0.5));
    }
    // The first trace finds r2; the others start once it is known.
    let starts: Vec<_> = (0..20u64)
        .map(|i| t0() + Duration::from_millis(if i == 0 { 0 } else { 10 }))
        .collect();
    let traces = Traces {
        protocol: Protocol::Icmp,
        plan: plan(8, 3, 500),
        deadline: secs(2),
    };
    let probers = traces.run(&mut world, &targets, &starts);
    let (mut answered, mut unanswered) = (0, 0);
    for p in &probers {
        for a in 0..3 {
            match no_answer(p, a, 2) {
                None => answered += 1,
                // Never sent for want of a token, or sent on a budget that
                // was growing and found r2 out of answers: never "silent".
                Some(NoAnswer::NotSent(_) | NoAnswer::RateLimited) => unanswered += 1,
                other => panic!("TTL 2 of a trace: {other:?}"),
            }
        }
        assert_silences_waited_the_timeout(p);
    }
    // r2 gives 6 at once and 1 per second: about 7 in the 1.5 s a probe
    // may leave.
    assert!((6..=9).contains(&answered), "{answered} answered");
    assert_eq!(answered + unanswered, 60);
    // Learning its budget cost r2 one overshoot at most.
    let held_back = world.routers[r2].limiter.as_ref().unwrap().suppressed;
    assert!(held_back <= 8, "r2 dropped {held_back}");
    // Once first samples wait, nobody's further samples go before them.
    let traces_answered = probers
        .iter()
        .filter(|p| (0..3).any(|a| answered_by(p, a, 2).is_some()))
        .count();
    assert!(traces_answered >= 3, "{traces_answered} of {answered}");
}

#[test]
fn a_reply_after_give_up_is_still_taken_while_the_trace_runs() {
    let mut world = World::new();
    let path = chain(&mut world);
    // A silent destination keeps the trace running for its timeout.
    world.hosts.get_mut(&IpAddr::from(DST)).unwrap().silent = true;
    let r2 = path[1];
    let mut sim = Sim::new(world);
    // Known to answer in 0.2 ms...
    sim.trace(Protocol::Udp, DST, plan(6, 1, 500), secs(5));
    // ... it now takes 60 ms: given up at the 10 ms floor (and asked
    // again), its answer still counts when it comes.
    sim.world.borrow_mut().routers[r2].rtt = Duration::from_millis(60);
    let (p, _) = sim.trace(Protocol::Udp, DST, plan(6, 1, 500), secs(5));
    match status(&p, 0, 2) {
        Status::Answered(a) => assert_eq!(a.rtt, Some(Duration::from_millis(60))),
        other => panic!("late answer lost: {other:?}"),
    }
}

#[test]
fn a_slow_capture_pipeline_does_not_turn_late_deliveries_into_silence() {
    let mut world = World::new();
    let path = chain(&mut world);
    // TTL 2 answers in 3 ms, the later hops in under 1.
    world.routers[path[1]].rtt = Duration::from_millis(3);
    let mut sim = Sim::new(world);
    sim.trace(Protocol::Tcp, DST, plan(30, 3, 1000), secs(5));
    // Known now, TTL 2 is given up after 10 ms (the floor over 3 x 3 ms),
    // but every packet reaches us 30 ms late.
    sim.world.borrow_mut().delivery_delay = Duration::from_millis(30);
    let (p, _) = sim.trace(Protocol::Tcp, DST, plan(30, 3, 1000), secs(5));
    for a in 0..3 {
        match status(&p, a, 2) {
            Status::Answered(ans) => assert_eq!(ans.rtt, Some(Duration::from_millis(3))),
            other => panic!("attempt {a}: {other:?}"),
        }
    }
    assert_eq!(p.stats().reprobes, 0, "no answer was taken for lost");
}

#[test]
fn recent_jitter_raises_the_give_up_floor() {
    // r2 is known to answer in 0.2 ms; now it takes 30 ms.
    let slow_r2 = |sim: &mut Sim| {
        sim.trace(Protocol::Tcp, DST, plan(30, 1, 1000), secs(5));
        sim.world.borrow_mut().routers[1].rtt = Duration::from_millis(30);
    };
    let mut world = World::new();
    chain(&mut world);
    let mut sim = Sim::new(world);
    slow_r2(&mut sim);
    // Other traces just saw a responder answer 40 ms later than its best:
    // the floor is four times that, and r2's answer comes within it.
    let busy = IpAddr::from([198, 18, 9, 9]);
    let now = sim.now();
    sim.commons
        .jitter
        .observe(busy, Duration::from_millis(1), now);
    sim.commons
        .jitter
        .observe(busy, Duration::from_millis(41), now);
    let (p, _) = sim.trace(Protocol::Tcp, DST, plan(30, 1, 1000), secs(5));
    assert_eq!(
        answered_by(&p, 0, 2),
        Some(r(2).into()),
        "{:?}",
        status(&p, 0, 2)
    );
    assert_eq!(p.stats().reprobes, 0);

    assert_eq!(p.probes()[&key(0, 2)].gave_up_after, None);

    // Without that jitter the same hop is given up at the 10 ms floor: a
    // responder known to answer there is suspected of holding back, not
    // called silent, and is to be asked again a second later; its late
    // answer comes first and counts.
    let mut world = World::new();
    chain(&mut world);
    let mut sim = Sim::new(world);
    slow_r2(&mut sim);
    let (p, _) = sim.trace(Protocol::Tcp, DST, plan(30, 1, 1000), secs(5));
    assert_eq!(answered_by(&p, 0, 2), Some(r(2).into()));
    let given_up = p.probes()[&key(0, 2)].gave_up_after.unwrap();
    assert!(given_up < Duration::from_millis(20), "{given_up:?}");
}

#[test]
fn replies_arriving_in_reverse_order_each_find_their_probe() {
    let mut world = World::new();
    let path = chain(&mut world);
    for (n, i) in path.iter().enumerate() {
        world.routers[*i].rtt = Duration::from_millis(8 - 2 * n as u64);
    }
    world.hosts.get_mut(&IpAddr::from(DST)).unwrap().rtt = Duration::from_micros(100);
    let p = to_dst(Protocol::Udp, plan(30, 2, 1000), secs(5));
    let (_, p) = run(world, p);
    for a in 0..2 {
        for (ttl, addr) in [(1, GATEWAY), (2, r(2)), (3, r(3)), (4, r(4)), (5, DST)] {
            assert_eq!(answered_by(&p, a, ttl), Some(addr.into()), "ttl {ttl}");
        }
        let rtt = p.probes()[&key(a, 1)].rtt().unwrap();
        assert_eq!(rtt, Duration::from_millis(8));
    }
}

#[test]
fn duplicate_replies_are_counted_and_change_nothing() {
    let mut world = World::new();
    let path = chain(&mut world);
    world.routers[path[1]].duplicates = true;
    let p = to_dst(Protocol::Udp, plan(30, 3, 1000), secs(5));
    let (_, p) = run(world, p);
    assert_eq!(p.stats().ignored.duplicates, 3);
    for a in 0..3 {
        assert_eq!(answered_by(&p, a, 2), Some(r(2).into()));
    }
}

#[test]
fn forged_replies_are_ignored_and_counted() {
    let flow = flow(Protocol::Tcp, DST, 40001);
    let mut p = prober(flow, plan(30, 1, 1000), t0(), secs(5));
    let commons = Commons::new();
    let mut world = World::new();
    chain(&mut world);
    // Let the first window out.
    while let super::prober::Action::Send { key, reprobe } = p.poll(t0(), commons.shared()) {
        p.on_sent(key, t0());
        let _ = reprobe;
    }
    let feed = |p: &mut Prober, kind, bytes: Vec<u8>, at_us: u64| {
        let packet = crate::capture::CapturedPacket {
            timestamp: t0() + Duration::from_micros(at_us),
            stamp: crate::capture::Stamp::Stack,
            ifindex: 2,
            direction: traceroute_common::Direction::Ingress,
            kind,
            cookie: 1,
            packet_len: bytes.len() as u32,
            bytes,
        };
        p.on_packet(&packet, commons.shared());
    };
    // A time exceeded for a probe that was never sent (TTL 20 is beyond the window).
    let unsent = build_probe(&flow, Ttl::new(20).unwrap(), 0);
    feed(
        &mut p,
        EventKind::TimeExceeded,
        icmp_error(r(9).into(), 11, 0, &unsent),
        50,
    );
    // A SYN-ACK whose ack does not carry our salt.
    let wrong_salt = {
        let b = etherparse::PacketBuilder::ipv4(DST.octets(), SRC.octets(), 60)
            .tcp(80, 40001, 9, 1024)
            .syn()
            .ack(0x1111_0000 | 0x0104);
        let mut out = Vec::new();
        b.write(&mut out, &[]).unwrap();
        out
    };
    feed(&mut p, EventKind::TcpSynAck, wrong_salt, 60);
    // A quote of probe 4 whose IPv4 ID is not the keyed one (forged).
    let mut wrong_ip_id = build_probe(&flow, Ttl::new(4).unwrap(), 0);
    wrong_ip_id[4] ^= 0x40;
    feed(
        &mut p,
        EventKind::TimeExceeded,
        icmp_error(r(4).into(), 11, 0, &wrong_ip_id),
        62,
    );
    // A quote of probe 5 claiming it arrived with TTL 9: it left with 5.
    let mut raised_ttl = build_probe(&flow, Ttl::new(5).unwrap(), 0);
    raised_ttl[8] = 9;
    feed(
        &mut p,
        EventKind::TimeExceeded,
        icmp_error(r(5).into(), 11, 0, &raised_ttl),
        64,
    );
    // A well-formed answer stamped before its probe left.
    let probe3 = build_probe(&flow, Ttl::new(3).unwrap(), 0);
    let early = icmp_error(r(3).into(), 11, 0, &probe3);
    let packet = crate::capture::CapturedPacket {
        timestamp: t0().saturating_sub(Duration::from_millis(1)),
        stamp: crate::capture::Stamp::Stack,
        ifindex: 2,
        direction: traceroute_common::Direction::Ingress,
        kind: EventKind::TimeExceeded,
        cookie: 1,
        packet_len: early.len() as u32,
        bytes: early,
    };
    p.on_packet(&packet, commons.shared());
    // Garbage.
    feed(&mut p, EventKind::TcpRst, vec![0x45, 0, 1], 70);
    let ignored = p.stats().ignored;
    assert_eq!(ignored.unmatched, 1, "a probe never sent");
    assert_eq!(
        ignored.wrong_secret, 2,
        "a SYN-ACK without our salt, a wrong IP ID"
    );
    assert_eq!(
        ignored.implausible, 1,
        "a quote with a TTL above the sent one"
    );
    assert_eq!(ignored.before_probe, 1, "stamped before the probe left");
    assert_eq!(ignored.malformed, 1);
    assert!(p.stats().answers.is_empty());
    assert_eq!(*status(&p, 0, 3), Status::InFlight);
}

#[test]
fn an_unreachable_mid_path_ends_the_trace_there() {
    let mut world = World::new();
    let path = chain(&mut world);
    world.routers[path[2]].unreachable = Some(0);
    let p = to_dst(Protocol::Udp, plan(30, 3, 1000), secs(5));
    let (world, p) = run(world, p);
    assert_eq!(p.end_ttl(), Ttl::new(3));
    match status(&p, 0, 3) {
        Status::Answered(a) => assert!(a.terminal && !a.destination),
        other => panic!("{other:?}"),
    }
    assert!(world.sent.iter().all(|(_, _, ttl)| *ttl <= 16));
    assert!(world.elapsed() < Duration::from_millis(20));
}

#[test]
fn rst_and_syn_ack_at_the_destination_both_end_the_path() {
    for open in [true, false] {
        let mut world = World::new();
        chain(&mut world);
        world.hosts.get_mut(&IpAddr::from(DST)).unwrap().tcp_open = open;
        let p = to_dst(Protocol::Tcp, plan(30, 3, 1000), secs(5));
        let (_, p) = run(world, p);
        for a in 0..3 {
            match status(&p, a, 5) {
                Status::Answered(ans) => {
                    assert!(ans.destination);
                    let want = if open {
                        EventKind::TcpSynAck
                    } else {
                        EventKind::TcpRst
                    };
                    assert_eq!(ans.kind, want);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(p.end_ttl(), Ttl::new(5));
    }
}

#[test]
fn a_deadline_before_the_wait_is_over_gives_cut_short_not_silent() {
    let mut world = World::new();
    let path = chain(&mut world);
    silence_from(&mut world, &path[2..]);
    let p = to_dst(Protocol::Udp, plan(6, 1, 1000), Duration::from_millis(300));
    let (_, p) = run(world, p);
    assert_eq!(answered_by(&p, 0, 2), Some(r(2).into()));
    for ttl in 3..=6 {
        assert_eq!(no_answer(&p, 0, ttl), Some(NoAnswer::CutShort), "ttl {ttl}");
    }
    assert_eq!(p.degraded(), ["cut_short"]);
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// End-to-end probes: a plan that starts and ends at TTL 64.
fn e2e_plan(attempts: u8) -> super::prober::Plan {
    let ttl = Ttl::new(64).unwrap();
    super::prober::Plan {
        first_ttl: ttl,
        max_ttl: ttl,
        ..plan(64, attempts, 1000)
    }
}

/// End-to-end probes as the tracer runs them: spaced, full waits.
fn e2e_prober(protocol: Protocol, attempts: u8, spacing: Duration, deadline: Duration) -> Prober {
    let plan = super::prober::Plan {
        spacing,
        ..e2e_plan(attempts)
    };
    let policy = super::prober::Policy {
        adaptive_waits: false,
        ..Default::default()
    };
    super::sim::prober_with(flow(protocol, DST, 40001), plan, policy, t0(), deadline)
}

#[test]
fn end_to_end_probes_are_spread_and_each_loss_waited_the_full_timeout() {
    let mut world = World::new();
    chain(&mut world);
    let p = e2e_prober(Protocol::Icmp, 5, Duration::from_millis(200), secs(5));
    let (_, p, commons) = run_with(world, p);
    assert_eq!(super::e2e_samples(&p).len(), 5);
    let start = t0();
    for (key, probe) in p.probes() {
        let due = start + Duration::from_millis(200) * u32::from(key.attempt);
        let sent = probe.sends[0].at;
        assert!(
            sent >= due && sent <= due + Duration::from_millis(5),
            "{key:?} sent {sent:?}, due {due:?}"
        );
        // RTTs of 0.5 ms were seen, yet a probe gets the whole timeout (a
        // trace's probes would give up after 10 ms).
        assert_eq!(p.wait_for(*key, commons.shared()), secs(1));
    }
    // A silent destination: every probe is a loss only after the full
    // second, not after a wait guessed from RTTs seen before.
    let mut world = World::new();
    chain(&mut world);
    silence_from(&mut world, &[]);
    let p = e2e_prober(Protocol::Icmp, 3, Duration::from_millis(10), secs(5));
    let (_, p) = run(world, p);
    assert_eq!(super::e2e_samples(&p), vec![None, None, None]);
    for (key, probe) in p.probes() {
        match &probe.status {
            Status::Unanswered {
                reason: NoAnswer::Timeout,
                waited: Some(waited),
            } => assert!(*waited >= secs(1), "{key:?} waited {waited:?}"),
            other => panic!("{key:?}: {other:?}"),
        }
    }
}

#[test]
fn end_to_end_probes_give_one_duration_sample_per_probe() {
    let mut world = World::new();
    chain(&mut world);
    let p = to_dst(Protocol::Icmp, e2e_plan(5), secs(5));
    let (_, p) = run(world, p);
    let samples = super::e2e_samples(&p);
    assert_eq!(samples.len(), 5);
    for rtt in &samples {
        // The destination answers in 0.5 ms: the sample is the engine's
        // Duration, not a millisecond rounded into a record and back.
        assert_eq!(*rtt, Some(Duration::from_micros(500)));
    }
    // Nothing below TTL 64 was sent.
    assert!(p.probes().keys().iter().all(|k| k.ttl.get() == 64));
}

#[test]
fn silent_end_to_end_probes_are_loss_and_unsent_ones_are_no_sample() {
    let mut world = World::new();
    chain(&mut world);
    silence_from(&mut world, &[]);
    let p = to_dst(Protocol::Udp, e2e_plan(3), secs(5));
    let (_, p) = run(world, p);
    assert_eq!(super::e2e_samples(&p), vec![None, None, None]);
    // A deadline too short for any probe to go out: no samples at all, not
    // three losses.
    let mut world = World::new();
    chain(&mut world);
    let p = to_dst(Protocol::Udp, e2e_plan(3), Duration::ZERO);
    let (_, p) = run(world, p);
    assert!(
        super::e2e_samples(&p).is_empty(),
        "{:?}",
        super::e2e_samples(&p)
    );
}

/// The bound a whole trace of `request` gets with routers at the defaults.
fn request_deadline(request: &super::TraceRequest) -> Duration {
    super::prober::Plan::of(request).deadline(
        super::budget::Rate::ROUTER_DEFAULT,
        request.mode().flows(),
    )
}

/// The deadline a request of `queries` at the defaults gets.
fn cli_deadline(queries: u8) -> Duration {
    super::TraceRequest::new("198.18.5.2", Protocol::Udp)
        .with_queries(queries)
        .map(|r| request_deadline(&r))
        .unwrap()
}

/// `count` targets behind the routers `path`, from 198.19.0.1 on.
fn targets_behind(world: &mut World, path: &[usize], count: u8) -> Vec<Ipv4Addr> {
    (1..=count)
        .map(|i| {
            let t = Ipv4Addr::new(198, 19, 0, i);
            world.host(t, path, Host::new(0.5));
            t
        })
        .collect()
}

fn every_hop_answered(p: &Prober, hops: u8) -> bool {
    (0..p.plan().attempts).all(|a| (1..=hops).all(|ttl| answered_by(p, a, ttl).is_some()))
}

#[test]
fn routers_without_limits_grow_budgets_and_64_concurrent_10_query_traces_all_complete() {
    let mut world = World::new();
    let path = chain(&mut world);
    let targets = targets_behind(&mut world, &path, 64);
    let mut sim = Sim::new(world);
    // One trace after another, 3 queries each: the prior (6 at once, then
    // 1/s) would hold the third one for seconds; budgets that grew do not.
    let mut took = Vec::new();
    for _ in 0..5 {
        let (p, t) = sim.trace(Protocol::Tcp, DST, plan(30, 3, 1000), secs(4));
        assert!(every_hop_answered(&p, 5), "{:?}", p.probes());
        assert_silences_waited_the_timeout(&p);
        took.push(t);
    }
    assert!(
        took.iter().all(|t| *t < Duration::from_millis(50)),
        "{took:?}"
    );
    let now = sim.now();
    let view = sim.commons.knowledge.view(now);
    let r2 = view
        .responders
        .iter()
        .find(|v| v.address == IpAddr::from(r(2)))
        .unwrap();
    assert_eq!(r2.state, "grown", "{r2:?}");
    // 64 traces of 10 queries at once, from a cold start: 640 probes per
    // router, every one answered.
    sim.restart();
    let start = sim.now();
    let mut probers: Vec<Prober> = targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let flow = flow(Protocol::Tcp, *t, 20000 + i as u16);
            prober(flow, plan(30, 10, 1000), start, secs(7))
        })
        .collect();
    let starts = vec![start; probers.len()];
    run_many(
        &mut sim.world.borrow_mut(),
        &sim.commons,
        &mut probers,
        &starts,
    );
    for p in &probers {
        assert!(every_hop_answered(p, 5), "{:?}", p.degraded());
    }
    // As fast as the process's own rail (2000 probes a second) lets the
    // probes out: no router budget held anything back.
    let took = sim.now().since(start).unwrap();
    let sent: u64 = probers.iter().map(|p| p.stats().probes_sent).sum();
    let rail = Duration::from_secs_f64(sent as f64 / 2000.0);
    assert!(
        took < rail + Duration::from_millis(100),
        "{took:?} for {sent} probes"
    );
    // Nothing is known to be at its limit: admission refuses nobody.
    let now = sim.now();
    for ttl in 1..=5 {
        let position = super::knowledge::RouterKey::Position(origin(), Ttl::new(ttl).unwrap());
        assert_eq!(sim.commons.knowledge.limited_wait(position, now), None);
    }
}

#[test]
fn slow_control_planes_are_found_on_first_contact_and_the_second_trace_is_quick() {
    let slow_world = || {
        let mut world = World::new();
        let path = chain(&mut world);
        // Forwarding in microseconds, but r2's own errors come 30 ms late
        // and r3's 120 ms late.
        world.routers[path[1]].rtt = Duration::from_millis(30);
        world.routers[path[2]].rtt = Duration::from_millis(120);
        // As the lab's `slow`: nothing rate limits, the destination neither.
        world.hosts.get_mut(&IpAddr::from(DST)).unwrap().limiter = Limiter::new(0, 1);
        world
    };
    let mut sim = Sim::new(slow_world());
    for protocol in [Protocol::Udp, Protocol::Tcp, Protocol::Icmp] {
        sim.restart();
        let (p, _) = sim.trace(protocol, DST, plan(30, 3, 1000), secs(4));
        assert!(every_hop_answered(&p, 5), "{protocol}: {:?}", p.probes());
        // Known now: the next trace ends when the slowest answer is in.
        let (p, took) = sim.trace(protocol, DST, plan(30, 3, 1000), secs(4));
        assert!(every_hop_answered(&p, 5));
        assert!(took <= Duration::from_millis(180), "{protocol}: {took:?}");
    }
}

#[test]
fn linux_routers_spent_by_another_process_are_still_found() {
    let mut world = World::new();
    let gw = world.router(Router::new(GATEWAY, 0.1).limited(Limiter::linux()));
    let r2 = world.router(Router::new(r(2), 0.2).limited(Limiter::linux()));
    let r3 = world.router(Router::new(r(3), 0.3).limited(Limiter::linux()));
    let routers = [gw, r2, r3];
    let targets = targets_behind(&mut world, &routers, 20);
    let mut sim = Sim::new(world);
    // One CLI trace after another, each a new process that knows nothing,
    // through routers the previous ones spent.
    let mut found = 0;
    for t in &targets {
        sim.restart();
        let (p, _) = sim.trace(Protocol::Tcp, *t, plan(30, 3, 1000), cli_deadline(3));
        for ttl in 1..=3 {
            found += usize::from((0..3).any(|a| answered_by(&p, a, ttl).is_some()));
            for a in 0..3 {
                assert_ne!(
                    no_answer(&p, a, ttl),
                    Some(NoAnswer::Timeout),
                    "a spent router reported silent"
                );
            }
        }
        assert_eq!(p.end_ttl(), Ttl::new(4));
    }
    assert!(found >= 54, "{found} of 60 (trace, router) pairs");
    for r in routers {
        assert!(
            sim.router(r).limiter.unwrap().suppressed > 0,
            "they were spent"
        );
    }
}

#[test]
fn a_rate_limited_destination_is_never_placed_beyond_its_distance() {
    let mut world = World::new();
    let path = chain(&mut world);
    for i in &path {
        world.routers[*i] = world.routers[*i].clone().limited(Limiter::linux());
    }
    let mut sim = Sim::new(world);
    // The same UDP target three times back to back, each a new process:
    // by the third, every router and the destination's port unreachables
    // are spent.
    for n in 0..3 {
        sim.restart();
        let (p, _) = sim.trace(Protocol::Udp, DST, plan(30, 3, 1000), cli_deadline(3));
        let mut runs = super::runs_of(&p, crate::path::TimestampSource::Kernel, sim.now());
        crate::path::DistanceUncertain::mark(&mut runs);
        let end = p.end_ttl().map(Ttl::get);
        match end {
            Some(5) => assert!(runs.iter().all(|r| r.distance_uncertain.is_none())),
            Some(beyond) if beyond > 5 => {
                let mark = runs[0].distance_uncertain.clone().expect("marked");
                assert!(mark.silent.contains(&Ttl::new(5).unwrap()), "{mark:?}");
                assert_eq!(mark.estimate, 5);
                let count = crate::path::model::HopCount::from_runs(&runs);
                assert_eq!(count.max, 0, "no hop count that is wrong");
            }
            other => panic!("trace {n}: the destination at {other:?}"),
        }
        assert_eq!(end, Some(5), "trace {n}: re-probes found it");
    }
}

#[test]
fn what_is_known_ages_out() {
    let mut world = World::new();
    let path = chain(&mut world);
    world.routers[path[2]].silent = true;
    let mut sim = Sim::new(world);
    let (_, took) = sim.trace(Protocol::Tcp, DST, plan(30, 3, 1000), secs(5));
    assert!(took >= secs(2), "first contact: {took:?}");
    let (_, took) = sim.trace(Protocol::Tcp, DST, plan(30, 3, 1000), secs(5));
    assert!(took < Duration::from_millis(20), "known: {took:?}");
    // A silent place gets its full wait again now and then.
    sim.idle(super::knowledge::RECHECK_SILENCE + secs(1));
    let (p, took) = sim.trace(Protocol::Tcp, DST, plan(30, 3, 1000), secs(5));
    assert!(took >= secs(1), "re-checked: {took:?}");
    assert_silences_waited_the_timeout(&p);
    // Unused for long enough, everything is forgotten.
    sim.idle(super::knowledge::FORGET_AFTER + secs(1));
    let now = sim.now();
    assert_eq!(
        sim.commons.knowledge.totals(now),
        super::knowledge::Totals::default()
    );
    let (_, took) = sim.trace(Protocol::Tcp, DST, plan(30, 3, 1000), secs(5));
    assert!(took >= secs(2), "a first contact again: {took:?}");
}

#[test]
fn a_router_that_starts_limiting_mid_run_is_backed_off_and_still_found() {
    let mut world = World::new();
    let path = chain(&mut world);
    let r2 = path[1];
    let mut sim = Sim::new(world);
    for _ in 0..4 {
        let (p, _) = sim.trace(Protocol::Tcp, DST, plan(30, 10, 1000), secs(7));
        assert!(every_hop_answered(&p, 5));
    }
    let state = |sim: &Sim| {
        let now = sim.now();
        let view = sim.commons.knowledge.view(now);
        let r = view
            .responders
            .iter()
            .find(|v| v.address == IpAddr::from(r(2)));
        r.map(|v| v.state).unwrap_or("unknown")
    };
    assert_eq!(state(&sim), "grown");
    // r2 starts limiting as Linux does.
    sim.world.borrow_mut().routers[r2].limiter = Some(Limiter::linux());
    let (p, _) = sim.trace(Protocol::Tcp, DST, plan(30, 10, 1000), secs(7));
    assert_eq!(state(&sim), "limited");
    for a in 0..10 {
        assert_ne!(no_answer(&p, a, 2), Some(NoAnswer::Timeout), "attempt {a}");
    }
    let answered = (0..10).filter(|a| answered_by(&p, *a, 2).is_some()).count();
    assert!(answered >= 6, "{answered}");
    // Known to limit: admission sees the wait, and the next trace is paced
    // within its budget instead of overshooting again.
    let now = sim.now();
    let position = super::knowledge::RouterKey::Position(origin(), Ttl::new(2).unwrap());
    assert!(sim.commons.knowledge.limited_wait(position, now).is_some());
    sim.idle(secs(10));
    let before = sim.router(r2).limiter.unwrap().suppressed;
    let (p, _) = sim.trace(Protocol::Tcp, DST, plan(30, 3, 1000), secs(4));
    assert!(every_hop_answered(&p, 5));
    assert_eq!(sim.router(r2).limiter.unwrap().suppressed, before);
}

#[test]
fn end_to_end_losses_at_a_known_destination_are_samples_not_re_probes() {
    let mut world = World::new();
    chain(&mut world);
    let mut sim = Sim::new(world);
    // A trace first: the destination is known to answer at TTL 5.
    sim.trace(Protocol::Tcp, DST, plan(30, 1, 1000), secs(4));
    sim.world
        .borrow_mut()
        .hosts
        .get_mut(&IpAddr::from(DST))
        .unwrap()
        .silent = true;
    let start = sim.now();
    let flow = flow(Protocol::Tcp, DST, 40100);
    let plan = super::prober::Plan {
        spacing: Duration::from_millis(10),
        ..e2e_plan(3)
    };
    let policy = super::prober::Policy {
        adaptive_waits: false,
        ..Default::default()
    };
    let mut p = prober_with(flow, plan, policy, start, secs(5));
    run_one(&sim.world, &sim.commons, &mut p);
    // Each silence waited the whole second and is a loss: not a responder
    // to ask again.
    assert_eq!(super::e2e_samples(&p), vec![None, None, None]);
    assert_eq!(p.stats().reprobes, 0);
}

#[test]
fn a_known_destination_distance_spares_the_probes_beyond_it() {
    let mut world = World::new();
    chain(&mut world);
    let mut sim = Sim::new(world);
    // First contact: the whole first window goes out, far beyond TTL 5.
    let (p, _) = sim.trace(Protocol::Udp, DST, plan(30, 1, 1000), secs(4));
    assert_eq!(p.end_ttl(), Ttl::new(5));
    let beyond = |sim: &Sim| {
        sim.world
            .borrow()
            .sent
            .iter()
            .filter(|(_, _, ttl)| *ttl > 5)
            .count()
    };
    let first = beyond(&sim);
    assert!(first >= 10, "{first}");
    // Known now: nothing beyond it leaves before TTL 5 has answered, and
    // then nothing is needed there.
    let (p, _) = sim.trace(Protocol::Udp, DST, plan(30, 1, 1000), secs(4));
    assert_eq!(p.end_ttl(), Ttl::new(5));
    assert!((1..=5).all(|ttl| answered_by(&p, 0, ttl).is_some()));
    assert_eq!(beyond(&sim), first, "no probe beyond the destination");
}

#[test]
fn flows_of_one_trace_hashed_unevenly_over_limited_routers_report_no_silence() {
    // Two Linux routers at TTL 2 behind the gateway. A multi-flow trace's
    // first 12 flows split evenly between them: all 12 answered, so the
    // TTL's shared budget grows past one router's. Its next 8 flows, two
    // seconds later, all hash to r2a, which has refilled 2 answers while
    // the grown budget counts 8.
    let mut world = World::new();
    let gw = world.router(Router::new(GATEWAY, 0.1).limited(Limiter::linux()));
    let a = world.router(Router::new(r(2), 0.2).limited(Limiter::linux()));
    let b = world.router(Router::new(r(3), 0.2).limited(Limiter::linux()));
    let trace = uuid::Uuid::new_v4();
    // The deadline such a request gets: paths 20, one query.
    let deadline = super::TraceRequest::new("198.19.0.1", Protocol::Tcp)
        .with_queries(1)
        .and_then(|r| r.with_paths(20))
        .map(|r| request_deadline(&r))
        .unwrap();
    let mut starts = Vec::new();
    let mut probers: Vec<Prober> = (0..20u8)
        .map(|i| {
            let target = Ipv4Addr::new(198, 19, 0, i + 1);
            let via = if i < 12 && i % 2 == 1 { b } else { a };
            world.host(target, &[gw, via], Host::new(0.5));
            let start = if i < 12 { t0() } else { at(2000) };
            starts.push(start);
            let flow = flow(Protocol::Tcp, target, 30000 + u16::from(i));
            let observers = vec![super::share::Observer {
                test_run_id: trace,
                run_id: uuid::Uuid::new_v4(),
                protocol: Protocol::Tcp,
                destination: target.into(),
                flow_id: 30000 + u16::from(i),
            }];
            Prober::new(super::prober::Setup {
                plan: plan(4, 1, 1000),
                policy: super::prober::Policy::default(),
                flow,
                origin: origin(),
                deadline: start + deadline,
                observers,
                branching: true,
            })
        })
        .collect();
    let commons = Commons::new();
    run_many(&mut world, &commons, &mut probers, &starts);
    let mut answered = 0;
    for p in &probers {
        match no_answer(p, 0, 2) {
            None => answered += 1,
            Some(NoAnswer::RateLimited | NoAnswer::NotSent(_)) => {}
            other => panic!("TTL 2 of a flow: {other:?}"),
        }
        assert_silences_waited_the_timeout(p);
    }
    assert!(answered >= 16, "{answered} of 20 flows answered at TTL 2");
}
