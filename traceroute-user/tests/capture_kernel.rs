//! The kernel classifier on crafted packets, run with BPF_PROG_TEST_RUN (no
//! attachment needed), and the userspace twin used by the socket fallback on the
//! same packets. Needs root (CAP_BPF).

mod common;

use std::collections::HashMap;

use common::packets::{self, Case, V};
use traceroute_agent::capture::classify::classify;
use traceroute_agent::capture::ebpf::EbpfCapture;
use traceroute_agent::clock::MonotonicTime;
use traceroute_common::{Counter, Direction, EventKind, FlowKey};

/// TC_ACT_UNSPEC: "carry on" — the programs must never drop or redirect.
const PASS: i32 = -1;

fn registered_flows() -> HashMap<FlowKey, u32> {
    let mut flows = HashMap::new();
    for (i, v) in [V::Four, V::Six].into_iter().enumerate() {
        let base = 100 * (i as u32 + 1);
        flows.insert(packets::udp_flow(v), base + 1);
        flows.insert(packets::tcp_flow(v), base + 2);
        flows.insert(packets::echo_flow(v), base + 3);
    }
    flows
}

fn direction(case: &Case) -> Direction {
    if case.egress {
        Direction::Egress
    } else {
        Direction::Ingress
    }
}

fn load_with(flows: &HashMap<FlowKey, u32>) -> EbpfCapture {
    let mut capture = EbpfCapture::load().expect("loading the eBPF programs (are we root?)");
    for (flow, cookie) in flows {
        capture.insert_flow(flow, *cookie).unwrap();
    }
    capture
}

#[tokio::test]
async fn kernel_classifier_handles_every_case() {
    let flows = registered_flows();
    let mut capture = load_with(&flows);
    let cases = packets::corpus();
    assert!(cases.len() > 50, "corpus too small: {}", cases.len());
    for case in &cases {
        let before = MonotonicTime::now();
        let (verdict, events) = capture
            .test_run(direction(case), &packets::ethernet(&case.packet))
            .unwrap();
        let after = MonotonicTime::now();
        assert_eq!(verdict, PASS, "{}: verdict", case.name);
        match case.expect {
            None => assert!(events.is_empty(), "{}: unexpected {events:?}", case.name),
            Some((kind, flow)) => {
                assert_eq!(events.len(), 1, "{}: events {events:?}", case.name);
                let ev = &events[0];
                assert_eq!(ev.kind, kind, "{}", case.name);
                assert_eq!(ev.cookie, flows[&flow], "{}: cookie", case.name);
                assert_eq!(ev.direction, direction(case), "{}", case.name);
                assert_eq!(ev.packet_len as usize, case.packet.len(), "{}", case.name);
                let n = case.packet.len().min(traceroute_common::CAPTURE_BYTES);
                assert_eq!(ev.bytes, case.packet[..n], "{}: bytes", case.name);
                assert!(
                    before <= ev.timestamp && ev.timestamp <= after,
                    "{}: kernel timestamp {:?} outside [{before:?}, {after:?}]",
                    case.name,
                    ev.timestamp
                );
            }
        }
    }
    let counters = capture.counters().unwrap();
    let expected_matches = cases
        .iter()
        .filter(|c| matches!(c.expect, Some((k, _)) if k != EventKind::Probe))
        .count() as u64;
    let expected_probes = cases
        .iter()
        .filter(|c| matches!(c.expect, Some((EventKind::Probe, _))))
        .count() as u64;
    assert_eq!(counters[Counter::PacketsSeen.name()], cases.len() as u64);
    assert_eq!(counters[Counter::PacketsMatched.name()], expected_matches);
    assert_eq!(counters[Counter::ProbesStamped.name()], expected_probes);
    // The two crafted fragments, plus garbage whose random bytes look like one.
    assert!(counters[Counter::Fragments.name()] >= 2, "{counters:?}");
    assert!(counters[Counter::Malformed.name()] >= 1, "{counters:?}");
    assert_eq!(counters[Counter::RingBufferFull.name()], 0);
}

#[tokio::test]
async fn nothing_reaches_userspace_without_registered_flows() {
    let mut capture = load_with(&HashMap::new());
    for case in packets::corpus() {
        let (verdict, events) = capture
            .test_run(direction(&case), &packets::ethernet(&case.packet))
            .unwrap_or_else(|e| panic!("{}: {e:?}", case.name));
        assert_eq!(verdict, PASS, "{}", case.name);
        assert!(events.is_empty(), "{}: {events:?}", case.name);
    }
}

#[tokio::test]
async fn removed_flows_are_no_longer_captured() {
    let flows = registered_flows();
    let mut capture = load_with(&flows);
    let probe = packets::udp_probe(V::Four, 1);
    let frame = packets::ethernet(&packets::time_exceeded(V::Four, &probe, 28));
    assert_eq!(
        capture
            .test_run(Direction::Ingress, &frame)
            .unwrap()
            .1
            .len(),
        1
    );
    capture.remove_flow(&packets::udp_flow(V::Four)).unwrap();
    assert!(
        capture
            .test_run(Direction::Ingress, &frame)
            .unwrap()
            .1
            .is_empty()
    );
}

#[test]
fn userspace_twin_agrees_with_the_corpus() {
    let flows = registered_flows();
    for case in packets::corpus() {
        let got =
            classify(&case.packet, direction(&case), false).filter(|(_, f)| flows.contains_key(f));
        assert_eq!(got, case.expect, "{}", case.name);
    }
}

/// While a trace probes inside a connection (`Setting::TcpAcks` on), the
/// flow's bare ACKs count: ours with data as probes, the destination's as
/// replies. The kernel and its twin agree on the whole corpus that way too.
#[tokio::test]
async fn with_tcp_acks_on_the_flows_bare_acks_are_taken_by_both() {
    let flows = registered_flows();
    let mut capture = load_with(&flows);
    capture.set_tcp_acks(true).unwrap();
    let twin =
        |packet: &[u8], dir| classify(packet, dir, true).filter(|(_, f)| flows.contains_key(f));
    for case in packets::corpus() {
        let (_, events) = capture
            .test_run(direction(&case), &packets::ethernet(&case.packet))
            .unwrap();
        let kernel = events.first().map(|e| e.kind);
        let userspace = twin(&case.packet, direction(&case)).map(|(k, _)| k);
        assert_eq!(kernel, userspace, "{}", case.name);
    }
    for v in [packets::V::Four, packets::V::Six] {
        let theirs = packets::tcp_reply(v, false, true, false);
        let (_, events) = capture
            .test_run(Direction::Ingress, &packets::ethernet(&theirs))
            .unwrap();
        assert_eq!(events.len(), 1, "{v:?}");
        assert_eq!(events[0].kind, EventKind::TcpAck);
        assert_eq!(
            twin(&theirs, Direction::Ingress),
            Some((EventKind::TcpAck, packets::tcp_flow(v)))
        );
    }
    // Off again: nothing of it.
    capture.set_tcp_acks(false).unwrap();
    let theirs = packets::tcp_reply(packets::V::Four, false, true, false);
    let (_, events) = capture
        .test_run(Direction::Ingress, &packets::ethernet(&theirs))
        .unwrap();
    assert!(events.is_empty());
}

#[test]
fn userspace_twin_survives_every_prefix() {
    for case in packets::corpus() {
        for n in 0..case.packet.len() {
            let _ = classify(&case.packet[..n], direction(&case), true);
        }
    }
}

#[tokio::test]
async fn run_time_statistics_count_every_program_run() {
    let _stats = traceroute_agent::capture::ebpf::enable_run_time_stats().unwrap();
    let flows = registered_flows();
    let mut capture = load_with(&flows);
    let probe = packets::udp_probe(V::Four, 1);
    let reply = packets::ethernet(&packets::time_exceeded(V::Four, &probe, 28));
    for _ in 0..25 {
        capture.test_run(Direction::Ingress, &reply).unwrap();
    }
    let stats = capture.program_stats().unwrap();
    let ingress = stats
        .iter()
        .find(|s| s.program == "capture_ingress")
        .unwrap();
    let egress = stats
        .iter()
        .find(|s| s.program == "capture_egress")
        .unwrap();
    assert_eq!(ingress.runs, 25, "{stats:?}");
    assert!(ingress.ns_per_run().unwrap() > 0.0);
    assert_eq!(egress.runs, 0);
    assert_eq!(egress.ns_per_run(), None);
}
