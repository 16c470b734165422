//! Probing that learns each router, against real kernels: routers whose
//! control plane sends their own errors tens or hundreds of milliseconds late
//! are found on first contact; Linux routers whose budgets earlier processes
//! spent are still found, and a rate-limited destination is never placed
//! beyond where it is. Needs root.

mod common;
mod service_support;

use common::agent::{assert_valid, run, trace};
use serde_json::Value;
use service_support::Agent;
use traceroute_lab::named::{SLOW_R2, SLOW_R3};
use traceroute_lab::{Family, Lab};

/// Who answered each TTL of `record` in any run (empty when nobody did).
fn found(record: &Value) -> Vec<String> {
    let mut by_ttl: Vec<String> = Vec::new();
    for run in record["traceroute"]["runs"].as_array().unwrap() {
        for hop in run["hops"].as_array().unwrap() {
            let i = hop["ttl"].as_u64().unwrap() as usize - 1;
            if by_ttl.len() <= i {
                by_ttl.resize(i + 1, String::new());
            }
            let addr = hop["ip_address"].as_str().unwrap();
            if by_ttl[i].is_empty() {
                by_ttl[i] = addr.to_string();
            }
        }
    }
    by_ttl
}

/// The fastest RTT (ms) of `record`'s hop at `ttl`, over its runs.
fn rtt_at(record: &Value, ttl: u64) -> f64 {
    record["traceroute"]["runs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["hops"].as_array().unwrap())
        .filter(|h| h["ttl"] == ttl)
        .filter_map(|h| h["rtt"].as_f64())
        .fold(f64::INFINITY, f64::min)
}

/// Every hop of every run that has no answer.
fn unanswered(record: &Value) -> Vec<Value> {
    record["traceroute"]["runs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["hops"].as_array().unwrap())
        .filter(|h| h["ip_address"] == "")
        .cloned()
        .collect()
}

#[test]
fn slow_control_planes_are_found_on_first_contact_by_the_cli_and_the_api() {
    let lab = Lab::up(&traceroute_lab::named::slow()).unwrap();
    for family in [Family::V4, Family::V6] {
        let dst = lab.primary("dst", family).unwrap();
        let want = common::agent::expected(&lab, "src", "dst", dst);
        // A fresh process, at the defaults.
        let dst_text = dst.to_string();
        for protocol in ["-T", "-U", "-I"] {
            let record = trace(&lab, "src", &[&dst_text, protocol]).record;
            assert_eq!(found(&record), want, "{family} {protocol}");
            assert!(unanswered(&record).is_empty(), "{record}");
            assert!(rtt_at(&record, 2) >= (SLOW_R2.as_secs_f64() * 1e3) * 0.8);
            assert!(rtt_at(&record, 3) >= (SLOW_R3.as_secs_f64() * 1e3) * 0.9);
        }
    }
    // The service: found on first contact too, and what it learnt of them
    // is visible.
    let agent = Agent::start_with(&lab, "src", Some("capture = \"ebpf\"\n"), &[]);
    let dst = lab.primary("dst", Family::V4).unwrap();
    let want = common::agent::expected(&lab, "src", "dst", dst);
    let query = service_support::client_query(80, 8, 1_000_000_000, "TCP", 3);
    for _ in 0..2 {
        let reply = agent.get(&format!("/traceroute/{dst}?{query}"));
        assert_eq!(reply.status, 200, "{}", reply.text());
        let record = reply.json();
        assert_valid(&record);
        for run in 0..3 {
            assert_eq!(service_support::hop_addrs(&record, run), want, "run {run}");
        }
    }
    let view = agent.get("/debug/responders").json();
    let median = |addr: &str| {
        view["responders"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["address"] == addr)
            .and_then(|r| r["latency_median"].as_f64())
            .unwrap_or_else(|| panic!("{addr} unknown: {view}"))
    };
    assert!(median(&want[1]) >= 25.0, "{view}");
    assert!(median(&want[2]) >= 110.0, "{view}");
    assert!(median(&want[0]) < 10.0, "{view}");
}

#[test]
fn linux_routers_that_earlier_processes_spent_are_still_found() {
    let lab = Lab::up(&traceroute_lab::named::three_limited()).unwrap();
    let targets: Vec<String> = lab
        .targets("dst")
        .unwrap()
        .into_iter()
        .take(10)
        .map(|t| t.to_string())
        .collect();
    let dst = lab.primary("dst", Family::V4).unwrap();
    let mut routers = common::agent::expected(&lab, "src", "dst", dst);
    routers.pop();
    // One CLI trace after another, each a new process that knows nothing,
    // through routers the previous ones left spent.
    let mut pairs = 0;
    for target in &targets {
        let record = trace(&lab, "src", &[target, "-T"]).record;
        let hops = found(&record);
        for (ttl, router) in routers.iter().enumerate() {
            pairs += usize::from(hops.get(ttl) == Some(router));
        }
        for hop in unanswered(&record) {
            assert_ne!(
                hop["no_answer"], "timeout",
                "a spent router called silent: {hop}"
            );
        }
    }
    assert!(pairs >= 27, "{pairs} of 30 (trace, router) pairs found");
}

#[test]
fn the_same_udp_target_three_times_back_to_back_is_never_placed_too_far() {
    let lab = Lab::up(&traceroute_lab::named::three_limited()).unwrap();
    let dst = lab.primary("dst", Family::V4).unwrap();
    let want = common::agent::expected(&lab, "src", "dst", dst);
    let dst = dst.to_string();
    // Every router and the destination's port unreachables at Linux's
    // limits, spent more with each trace.
    for n in 0..3 {
        let out = run(&lab, "src", &[&dst, "-U"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let record: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_valid(&record);
        let hops = found(&record);
        for run in record["traceroute"]["runs"].as_array().unwrap() {
            let last = run["hops"].as_array().unwrap().last().unwrap();
            let ttl = last["ttl"].as_u64().unwrap() as usize;
            assert!(
                ttl <= want.len() || run.get("distance_uncertain").is_some(),
                "trace {n}: the destination placed at TTL {ttl}: {run}"
            );
        }
        assert_eq!(hops, want, "trace {n}: every router and the destination");
        for hop in unanswered(&record) {
            assert_ne!(hop["no_answer"], "timeout", "trace {n}: {hop}");
        }
    }
}
