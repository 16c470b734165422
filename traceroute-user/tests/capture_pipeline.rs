//! The eBPF pipeline end to end: the agent binary attaches its TC programs to a
//! veth in a lab namespace, traffic crosses, the events arrive through the ring
//! buffer with plausible kernel timestamps, and nothing stays attached after the
//! agent exits — on its own or on SIGTERM, or, for a one-shot trace whose
//! detach is left to a keeper process, a grace period later. Needs root.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use traceroute_agent::capture::ebpf::EbpfCapture;
use traceroute_agent::clock::MonotonicTime;
use traceroute_lab::{Lab, Topology};

const AGENT: &str = env!("CARGO_BIN_EXE_traceroute-agent");

fn pair() -> Lab {
    Lab::up(&Topology::new("pair").host("a").host("b").link("a", "b")).expect("lab up")
}

/// Starts `traceroute-agent capture` in node `a` and waits until it is attached.
fn start_capture(lab: &Lab, ifname: &str, extra: &[&str]) -> Child {
    let mut cmd = lab.command("a", AGENT).unwrap();
    cmd.args(["capture", "--interface", ifname])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn agent");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("agent: {line}");
            if line.contains("capture ready") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("agent did not report `capture ready`");
    child
}

fn attached(lab: &Lab, ifname: &str) -> Vec<String> {
    let ifname = ifname.to_string();
    lab.in_netns("a", move || EbpfCapture::tcx_programs(&ifname))
        .unwrap()
        .expect("query TCX")
        .into_iter()
        .map(|(d, name)| format!("{d:?}:{name}"))
        .collect()
}

#[test]
fn ping_produces_stamped_probe_and_reply_events() {
    let lab = pair();
    let ifname = lab.ifname("a", "b").unwrap().to_string();
    let b = lab.primary_v4("b").unwrap().to_string();
    let start = MonotonicTime::now();
    let child = start_capture(&lab, &ifname, &["--count", "6"]);
    assert_eq!(
        attached(&lab, &ifname),
        vec!["Ingress:capture_ingress", "Egress:capture_egress"]
    );

    let ping = lab
        .exec("a", "ping", ["-c", "3", "-i", "0.2", "-W", "1", &b])
        .unwrap();
    assert!(ping.status.success(), "ping failed: {ping:?}");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "agent failed: {out:?}");
    let end = MonotonicTime::now();

    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(events.len(), 6, "{events:#?}");
    let mut last_ts = start.as_nanos();
    let mut probe_ts = Vec::new();
    for (i, ev) in events.iter().enumerate() {
        let ts = ev["timestamp_ns"].as_u64().unwrap();
        assert!(
            ts > last_ts && ts < end.as_nanos(),
            "event {i}: timestamp {ts} out of order or range"
        );
        last_ts = ts;
        assert_eq!(ev["interface"], ifname.as_str());
        assert_eq!(ev["protocol"], 1);
        if i % 2 == 0 {
            assert_eq!(ev["direction"], "egress", "{ev}");
            assert_eq!(ev["kind"], "probe");
            assert_eq!(ev["icmp_type"], 8);
            assert_eq!(ev["dst"], b.as_str());
            probe_ts.push(ts);
        } else {
            assert_eq!(ev["direction"], "ingress", "{ev}");
            assert_eq!(ev["kind"], "echo_reply");
            assert_eq!(ev["icmp_type"], 0);
            assert_eq!(ev["src"], b.as_str());
            let rtt_ns = ts - probe_ts.last().unwrap();
            assert!(rtt_ns < 50_000_000, "RTT across one veth of {rtt_ns} ns");
        }
    }
    // ping -i 0.2: the probes leave about 200 ms apart.
    for w in probe_ts.windows(2) {
        let gap_ms = (w[1] - w[0]) / 1_000_000;
        assert!((150..1000).contains(&gap_ms), "probe gap {gap_ms} ms");
    }
    assert!(
        attached(&lab, &ifname).is_empty(),
        "programs left attached after exit"
    );
}

#[test]
fn sigterm_detaches_and_exits_cleanly() {
    let lab = pair();
    let ifname = lab.ifname("a", "b").unwrap().to_string();
    let child = start_capture(&lab, &ifname, &[]);
    assert_eq!(attached(&lab, &ifname).len(), 2);
    // SAFETY: plain kill(2) on our child (ip netns exec execs the agent in place).
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "agent exit on SIGTERM: {:?}",
        out.status
    );
    assert!(attached(&lab, &ifname).is_empty());
}

#[test]
fn a_one_shot_trace_returns_before_its_detach_and_the_detach_still_happens() {
    let lab = pair();
    let ifname = lab.ifname("a", "b").unwrap().to_string();
    let b = lab.primary_v4("b").unwrap().to_string();
    let out = lab
        .command("a", AGENT)
        .unwrap()
        .args(["trace", "--local", "--capture", "ebpf", "-n", "-q", "1"])
        .args(["--format", "json", &b])
        .output()
        .unwrap();
    // output() returned: the keeper holds no end of the command's pipes.
    assert!(out.status.success(), "{out:?}");
    let record: Value = serde_json::from_slice(&out.stdout).expect("the record");
    assert_eq!(record["capture"]["method"], "ebpf");
    assert_eq!(record["traceroute"]["runs"][0]["destination_reached"], true);
    // The keeper closes the links once the command is gone: two grace
    // periods, tens of milliseconds; a keeper that never let go fails here.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !attached(&lab, &ifname).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "programs still attached 10 s after the trace returned: {:?}",
            attached(&lab, &ifname)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn unrelated_traffic_is_not_captured_without_diagnostics() {
    // The library capture (no diagnostic mode) sees only registered flows: a ping
    // flood across the link must produce no event at all.
    let lab = pair();
    let ifname = lab.ifname("a", "b").unwrap().to_string();
    let b = lab.primary_v4("b").unwrap().to_string();
    let lab_ref = &lab;
    let (counters, events) = lab
        .in_netns("a", move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut cap = EbpfCapture::load().unwrap();
                cap.attach(&ifname).unwrap();
                let mut rx = cap.events(1024).unwrap();
                let _ = lab_ref.exec("a", "ping", ["-f", "-c", "300", "-W", "1", &b]);
                tokio::time::sleep(Duration::from_millis(100)).await;
                // Egress events wait for a drain: ask, so none can hide.
                cap.drain().now();
                tokio::time::sleep(Duration::from_millis(20)).await;
                let mut n = 0;
                while rx.try_recv().is_ok() {
                    n += 1;
                }
                (cap.counters().unwrap(), n)
            })
        })
        .unwrap();
    assert_eq!(events, 0);
    assert!(counters["packets_seen"] >= 600, "{counters:?}");
    assert_eq!(counters["packets_matched"], 0);
    assert_eq!(counters["probes_stamped"], 0);
}
