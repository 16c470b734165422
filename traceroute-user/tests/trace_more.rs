//! Tracer properties beyond single traces: many concurrent traces in one process
//! without cross-talk, and the fallback to socket capture when eBPF is not
//! allowed. Needs root.

mod common;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use common::agent::{AGENT, assert_valid, hops};
use traceroute_agent::capture::CaptureMode;
use traceroute_agent::probe::Protocol;
use traceroute_agent::resolve::FamilyPreference;
use traceroute_agent::trace::budget::Rate;
use traceroute_agent::trace::request::TraceParams;
use traceroute_agent::trace::{Call, Tracer, TracerConfig};
use traceroute_lab::{Family, Lab};

#[test]
fn fifty_concurrent_traces_each_match_their_own_ground_truth() {
    let lab = Lab::up(&common::topologies::long_chain("long")).unwrap();
    // (target, protocol, expected addresses) for every router, v4 x 3 protocols + v6 x 2.
    let mut cases: Vec<(IpAddr, Protocol, Vec<String>)> = Vec::new();
    for (family, protocols) in [
        (
            Family::V4,
            vec![Protocol::Udp, Protocol::Tcp, Protocol::Icmp],
        ),
        (Family::V6, vec![Protocol::Udp, Protocol::Icmp]),
    ] {
        let path: Vec<IpAddr> = lab
            .path("src", "r10", family)
            .unwrap()
            .into_iter()
            .map(|hops| hops[0].addr)
            .collect();
        let last = lab.addr("r10", "r9", family).unwrap();
        let all: Vec<IpAddr> = path.into_iter().chain([last]).collect();
        for k in 0..all.len() {
            let want: Vec<String> = all[..=k].iter().map(ToString::to_string).collect();
            for p in &protocols {
                cases.push((all[k], *p, want.clone()));
            }
        }
    }
    assert_eq!(cases.len(), 50);
    let results = lab
        .in_netns("src", move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let tracer = Arc::new(
                    Tracer::new(TracerConfig {
                        capture: CaptureMode::Ebpf,
                        probes_per_second: 5000,
                        // The lab's routers have ICMP rate limiting off: this
                        // test is about correlating 50 traces at once.
                        router_rate: Rate {
                            burst: 10_000,
                            per_second: 100_000.0,
                        },
                        ..TracerConfig::default()
                    })
                    .await
                    .unwrap(),
                );
                let mut set = tokio::task::JoinSet::new();
                for (i, (target, protocol, want)) in cases.into_iter().enumerate() {
                    let tracer = tracer.clone();
                    set.spawn(async move {
                        let req = TraceParams {
                            max_ttl: 15,
                            family: FamilyPreference::Any,
                            ..TraceParams::new(target.to_string(), protocol)
                        }
                        .build()
                        .unwrap();
                        let call = Call {
                            deadline: Some(Duration::from_secs(20)),
                            ..Call::default()
                        };
                        let (path, _) = tracer.trace_with_stats(&req, &call).await.unwrap();
                        (i, protocol, want, serde_json::to_value(&path).unwrap())
                    });
                }
                let mut out = Vec::new();
                while let Some(r) = set.join_next().await {
                    out.push(r.unwrap());
                }
                out
            })
        })
        .unwrap();
    assert_eq!(results.len(), 50);
    for (i, protocol, want, record) in results {
        assert_valid(&record);
        for run in 0..3 {
            let got: Vec<String> = hops(&record, run).into_iter().map(|h| h.1).collect();
            assert_eq!(got, want, "case {i} ({protocol:?}) run {run}");
        }
    }
}

/// Runs the agent in `src` with CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN removed
/// from its bounding set: root, but not allowed to load eBPF programs.
fn trace_without_bpf(lab: &Lab, args: &[&str]) -> std::process::Output {
    let mut cmd = lab.command("src", "setpriv").unwrap();
    cmd.args([
        "--bounding-set",
        "-bpf,-perfmon,-sys_admin",
        "--",
        AGENT,
        "trace",
        "--format",
        "json",
    ])
    .args(args);
    cmd.output().unwrap()
}

#[test]
fn without_cap_bpf_auto_falls_back_to_socket_capture() {
    let lab = Lab::up(&traceroute_lab::named::chain()).unwrap();
    let dst = lab.primary("dst", Family::V4).unwrap();
    let want = common::agent::expected(&lab, "src", "dst", dst);
    let d = dst.to_string();

    let out = trace_without_bpf(&lab, &[&d, "-T", "--capture", "auto"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_valid(&record);
    assert_eq!(record["capture"]["method"], "socket");
    let got: Vec<String> = hops(&record, 0).into_iter().map(|h| h.1).collect();
    assert_eq!(got, want);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("falling back to socket capture"),
        "the fallback is logged"
    );

    let out = trace_without_bpf(&lab, &[&d, "-T", "--capture", "ebpf"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("eBPF"), "{stderr}");
    assert!(stderr.contains("CAP_BPF"), "names the capability: {stderr}");
}

#[test]
fn without_cap_net_raw_the_error_names_the_capability_once() {
    let lab = Lab::up(&traceroute_lab::named::chain()).unwrap();
    let dst = lab.primary("dst", Family::V4).unwrap().to_string();
    let out = lab
        .command("src", "setpriv")
        .unwrap()
        .args([
            "--bounding-set",
            "-net_raw",
            "--",
            AGENT,
            "trace",
            "--format",
            "json",
        ])
        .args([dst.as_str(), "-T", "--capture", "socket"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("CAP_NET_RAW"), "{stderr}");
    assert!(stderr.contains("setcap"), "says how to grant it: {stderr}");
    assert_eq!(
        stderr.matches("Operation not permitted").count(),
        1,
        "the cause is said once: {stderr}"
    );
}
