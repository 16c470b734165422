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
use crate::path::{NoAnswer, NotSentReason};
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
/// its full wait.
fn assert_no_invented_silence(p: &Prober) {
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
            assert!(
                waited >= p.wait_for(*k),
                "{k:?} reported silent after {waited:?} < {:?}",
                p.wait_for(*k)
            );
        }
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

fn run(world: World, mut prober: Prober) -> (World, Prober) {
    let world = Rc::new(RefCell::new(world));
    let commons = Commons::new();
    run_one(&world, &commons, &mut prober);
    let world = Rc::try_unwrap(world).ok().expect("one owner").into_inner();
    (world, prober)
}

#[test]
fn a_silent_hop_is_given_up_from_later_rtts_not_the_timeout() {
    let mut world = World::new();
    let path = chain(&mut world);
    world.routers[path[2]].silent = true;
    let p = to_dst(Protocol::Udp, plan(30, 3, 1000), secs(5));
    let (world, p) = run(world, p);
    for a in 0..3 {
        assert_eq!(answered_by(&p, a, 1), Some(GATEWAY.into()));
        assert_eq!(no_answer(&p, a, 3), Some(NoAnswer::Timeout));
        assert_eq!(answered_by(&p, a, 5), Some(DST.into()));
    }
    assert_eq!(p.end_ttl(), Ttl::new(5));
    // 3 x the slowest later RTT is 1.5 ms; the 10 ms floor decides.
    assert!(
        world.elapsed() < Duration::from_millis(20),
        "{:?}",
        world.elapsed()
    );
    assert_no_invented_silence(&p);
    assert!(p.degraded().is_empty());
}

#[test]
fn a_silent_tail_waits_the_full_timeout() {
    let mut world = World::new();
    let path = chain(&mut world);
    silence_from(&mut world, &path[1..]);
    let p = to_dst(Protocol::Udp, plan(6, 1, 1000), secs(5));
    let (world, p) = run(world, p);
    for ttl in 2..=6 {
        assert_eq!(no_answer(&p, 0, ttl), Some(NoAnswer::Timeout));
    }
    assert!(world.elapsed() >= Duration::from_millis(1000));
    assert_no_invented_silence(&p);
}

#[test]
fn routers_at_linux_rate_limits_answer_every_probe_because_budgets_pace_them() {
    let mut world = World::new();
    let path = chain(&mut world);
    for i in &path {
        world.routers[*i] = world.routers[*i].clone().limited(Limiter::linux());
    }
    // 10 runs: 10 probes per router, 4 beyond a Linux router's burst.
    let p = to_dst(Protocol::Tcp, plan(30, 10, 1000), secs(8));
    let (world, p) = run(world, p);
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
    for i in &path {
        let held_back = world.routers[*i].limiter.as_ref().unwrap().suppressed;
        assert_eq!(held_back, 0, "router {i} had to drop answers");
    }
    // The four beyond the burst come one per second.
    assert!(world.elapsed() >= Duration::from_secs(4));
    assert_no_invented_silence(&p);
}

#[test]
fn a_router_stricter_than_linux_is_reprobed_after_refill_never_called_silent() {
    let mut world = World::new();
    let path = chain(&mut world);
    // Answers 2, then one per second: our budget expects 6.
    world.routers[path[1]] = world.routers[path[1]]
        .clone()
        .limited(Limiter::new(1000, 2));
    let p = to_dst(Protocol::Tcp, plan(30, 4, 1000), secs(5));
    let (world, p) = run(world, p);
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
    assert_no_invented_silence(&p);
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
        assert_no_invented_silence(p);
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
fn router_budget_exhaustion_gives_not_sent_never_silent() {
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
    let (mut answered, mut not_sent) = (0, 0);
    for p in &probers {
        for a in 0..3 {
            match no_answer(p, a, 2) {
                None => answered += 1,
                Some(NoAnswer::NotSent(NotSentReason::RouterBudget)) => not_sent += 1,
                other => panic!("TTL 2 of a trace: {other:?}"),
            }
        }
        assert_no_invented_silence(p);
        assert!(
            p.degraded().is_empty() || p.degraded() == ["router_budget"],
            "{:?}",
            p.degraded()
        );
    }
    // r2 gives 6 at once and 1 per second: about 7 in the 1.5 s a probe may leave.
    assert!((6..=9).contains(&answered), "{answered} answered");
    assert_eq!(answered + not_sent, 60);
    assert_eq!(world.routers[r2].limiter.as_ref().unwrap().suppressed, 0);
}

#[test]
fn a_reply_after_give_up_is_still_taken_while_the_trace_runs() {
    let mut world = World::new();
    let path = chain(&mut world);
    world.routers[path[1]].rtt = Duration::from_millis(60);
    // A silent destination keeps the trace running for its timeout.
    world.hosts.get_mut(&IpAddr::from(DST)).unwrap().silent = true;
    let p = to_dst(Protocol::Udp, plan(6, 1, 500), secs(5));
    let (_, p) = run(world, p);
    match status(&p, 0, 2) {
        Status::Answered(a) => assert_eq!(a.rtt, Some(Duration::from_millis(60))),
        other => panic!("late answer lost: {other:?}"),
    }
}

#[test]
fn a_slow_capture_pipeline_does_not_turn_late_deliveries_into_silence() {
    let mut world = World::new();
    let path = chain(&mut world);
    // TTL 2 answers in 3 ms, the later hops in under 1: its give-up from
    // their RTTs is the 10 ms floor, but every packet reaches us 30 ms late.
    world.routers[path[1]].rtt = Duration::from_millis(3);
    world.delivery_delay = Duration::from_millis(30);
    let p = to_dst(Protocol::Tcp, plan(30, 3, 1000), secs(5));
    let (_, p) = run(world, p);
    for a in 0..3 {
        match status(&p, a, 2) {
            Status::Answered(ans) => assert_eq!(ans.rtt, Some(Duration::from_millis(3))),
            other => panic!("attempt {a}: {other:?}"),
        }
    }
}

#[test]
fn recent_jitter_raises_the_give_up_floor() {
    let mut world = World::new();
    let path = chain(&mut world);
    // TTL 2 answers after 30 ms, the later hops in under 1 ms.
    world.routers[path[1]].rtt = Duration::from_millis(30);
    let world = Rc::new(RefCell::new(world));
    let commons = Commons::new();
    // Other traces just saw a responder answer 40 ms later than its best.
    let busy = IpAddr::from([198, 18, 9, 9]);
    commons.jitter.observe(busy, Duration::from_millis(1), t0());
    commons
        .jitter
        .observe(busy, Duration::from_millis(41), t0());
    let mut p = to_dst(Protocol::Tcp, plan(30, 1, 1000), secs(5));
    run_one(&world, &commons, &mut p);
    assert_eq!(
        answered_by(&p, 0, 2),
        Some(r(2).into()),
        "{:?}",
        status(&p, 0, 2)
    );

    // Without that jitter the same hop is given up at the 10 ms floor.
    let mut quiet = World::new();
    let path = chain(&mut quiet);
    quiet.routers[path[1]].rtt = Duration::from_millis(30);
    let p = to_dst(Protocol::Tcp, plan(30, 1, 1000), secs(5));
    let (_, p) = run(quiet, p);
    assert_eq!(no_answer(&p, 0, 2), Some(NoAnswer::Timeout));
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
    let (_, p) = run(world, p);
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
        assert_eq!(p.wait_for(*key), secs(1));
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
    assert!(p.probes().keys().all(|k| k.ttl.get() == 64));
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
