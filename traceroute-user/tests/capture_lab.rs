//! The capture in a multi-hop lab, at the library level: probes of a registered
//! flow produce exactly the expected probe and reply events with sensible
//! timestamps, in eBPF mode and in the socket fallback; unrelated traffic
//! produces none. Needs root.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use traceroute_agent::capture::{Capture, CaptureMethod, CaptureMode, CapturedPacket};
use traceroute_agent::probe::{FlowSecret, ProbeFlow, Ttl, build_probe};
use traceroute_agent::reply::Reply;
use traceroute_agent::trace::sender::ProbeSender;
use traceroute_common::{Direction, EventKind};
use traceroute_lab::{Family, Lab};

/// Sends one UDP probe per TTL 1..=6 along the chain (r3 silent) and returns
/// every event of the flow that arrives within a second, plus the capture's
/// counters.
fn probe_chain(
    lab: &Lab,
    mode: CaptureMode,
    family: Family,
) -> (Vec<CapturedPacket>, CaptureMethod) {
    let src = lab.primary("src", family).unwrap();
    let dst = lab.primary("dst", family).unwrap();
    let ifname = lab.ifname("src", "r1").unwrap().to_string();
    lab.in_netns("src", move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let capture = Capture::start(mode).unwrap();
            capture.watch_interface(&ifname).unwrap();
            let flow = chain_flow(src, dst);
            let mut sub = capture.register(flow.flow_key()).unwrap();
            let sender = ProbeSender::new();
            for ttl in 1..=6 {
                let packet = build_probe(&flow, Ttl::new(ttl).unwrap(), 0);
                sender.send(&packet, dst, None).unwrap();
                sub.sent();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let mut events = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
            while let Ok(Some(p)) = tokio::time::timeout_at(deadline, sub.recv()).await {
                events.push(p);
            }
            (events, capture.method())
        })
    })
    .unwrap()
}

/// The flow [`probe_chain`] sends, with a secret: real routers' replies must
/// pass every cross-check of [`Reply::identify`].
fn chain_flow(src: IpAddr, dst: IpAddr) -> ProbeFlow {
    ProbeFlow::udp(SocketAddr::new(src, 40123), SocketAddr::new(dst, 33434))
        .unwrap()
        .with_secret(FlowSecret::from_bits(0x0123_4567_89ab_cdef))
}

fn check_chain_events(lab: &Lab, family: Family, events: &[CapturedPacket], kernel_tx: bool) {
    let dst = lab.primary("dst", family).unwrap();
    let routers: Vec<Option<IpAddr>> = lab.expected_hops("src", "dst", family).unwrap();
    let flow = chain_flow(lab.primary("src", family).unwrap(), dst);
    let probes: Vec<&CapturedPacket> = events
        .iter()
        .filter(|e| e.kind == EventKind::Probe)
        .collect();
    let replies: Vec<&CapturedPacket> = events
        .iter()
        .filter(|e| e.kind != EventKind::Probe)
        .collect();
    assert_eq!(probes.len(), 6, "one egress stamp per probe: {events:#?}");
    assert!(probes.iter().all(|p| p.direction == Direction::Egress));
    // Routers answer time-exceeded (r3 stays silent); the destination port-unreachable
    // for every TTL that reaches it (5 and 6).
    let mut want: Vec<(u8, IpAddr, EventKind)> = routers
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.map(|a| (i as u8 + 1, a, EventKind::TimeExceeded)))
        .collect();
    want.push((5, dst, EventKind::DestUnreachable));
    want.push((6, dst, EventKind::DestUnreachable));
    let mut got: Vec<(u8, IpAddr, EventKind)> = replies
        .iter()
        .map(|e| {
            let r = Reply::parse(&e.bytes).unwrap();
            (r.identify(&flow).unwrap().ttl().get(), r.source, e.kind)
        })
        .collect();
    got.sort_by_key(|g| g.0);
    assert_eq!(got, want, "{family:?}");
    // Each reply comes after the probe it answers, and quickly (no delay links here).
    for e in &replies {
        let ttl = Reply::parse(&e.bytes)
            .unwrap()
            .identify(&flow)
            .unwrap()
            .ttl()
            .get();
        let probe = probes[usize::from(ttl) - 1];
        let rtt = e
            .timestamp
            .since(probe.timestamp)
            .expect("reply after probe");
        assert!(rtt < Duration::from_millis(50), "ttl {ttl}: {rtt:?}");
    }
    if kernel_tx {
        for w in probes.windows(2) {
            assert!(
                w[0].timestamp < w[1].timestamp,
                "egress stamps in send order"
            );
        }
    }
}

#[test]
fn ebpf_capture_sees_exactly_the_flows_probes_and_replies() {
    let lab = Lab::up(&traceroute_lab::named::chain()).unwrap();
    for family in [Family::V4, Family::V6] {
        let (events, source) = probe_chain(&lab, CaptureMode::Ebpf, family);
        assert_eq!(source, CaptureMethod::Ebpf);
        check_chain_events(&lab, family, &events, true);
    }
}

#[test]
fn socket_fallback_sees_the_same() {
    let lab = Lab::up(&traceroute_lab::named::chain()).unwrap();
    for family in [Family::V4, Family::V6] {
        let (events, source) = probe_chain(&lab, CaptureMode::Socket, family);
        assert_eq!(source, CaptureMethod::Socket);
        check_chain_events(&lab, family, &events, true);
    }
}

#[test]
fn unrelated_traffic_produces_no_events() {
    let lab = Lab::up(&traceroute_lab::named::chain()).unwrap();
    let dst = lab.primary("dst", Family::V4).unwrap();
    let src = lab.primary("src", Family::V4).unwrap();
    let ifname = lab.ifname("src", "r1").unwrap().to_string();
    let lab_ref = &lab;
    let (delivered, counters) = lab
        .in_netns("src", move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let capture = Capture::start(CaptureMode::Ebpf).unwrap();
                capture.watch_interface(&ifname).unwrap();
                // A registered flow nobody sends on, next to busy unrelated traffic.
                let flow = ProbeFlow::udp(SocketAddr::new(src, 40999), SocketAddr::new(dst, 33434))
                    .unwrap();
                let mut sub = capture.register(flow.flow_key()).unwrap();
                let d = dst.to_string();
                lab_ref
                    .exec("src", "ping", ["-f", "-c", "500", "-W", "1", &d])
                    .unwrap();
                lab_ref
                    .exec(
                        "src",
                        "traceroute",
                        ["-n", "-q", "1", "-w", "1", "-N", "16", &d],
                    )
                    .unwrap();
                lab_ref
                    .exec("src", "traceroute", ["-n", "-T", "-q", "1", "-w", "1", &d])
                    .unwrap();
                let script = format!("head -c 4000000 /dev/zero > /dev/tcp/{d}/80");
                let _ = lab_ref.exec("src", "bash", ["-c", script.as_str()]);
                let mut n = 0;
                while let Ok(Some(_)) =
                    tokio::time::timeout(Duration::from_millis(300), sub.recv()).await
                {
                    n += 1;
                }
                (n, capture.counters())
            })
        })
        .unwrap();
    assert_eq!(delivered, 0, "{counters:?}");
    assert!(counters["packets_seen"] > 1000, "{counters:?}");
    assert_eq!(counters["delivered"], 0);
    assert_eq!(counters["packets_matched"], 0);
    assert_eq!(counters["probes_stamped"], 0);
}
