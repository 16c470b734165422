//! Scheduled targets of `traceroute-agent serve`: exact JSON line counts,
//! rotation on SIGHUP without losing a line, config reload (good and bad),
//! and a clean SIGTERM in the middle of traces (exit 0, socket removed, no
//! TCX program left). Needs root.

mod common;
mod service_support;

use std::collections::HashSet;
use std::time::Duration;

use common::agent::{assert_valid, expected};
use service_support::{Agent, client_query, eventually, hop_addrs, lines};
use traceroute_agent::capture::ebpf::EbpfCapture;
use traceroute_lab::{Family, Hook, Lab, Proto};

fn target(host: &str, protocol: &str, interval: &str, count: Option<u32>, tag: &str) -> String {
    let count = count.map(|c| format!("count = {c}\n")).unwrap_or_default();
    format!(
        "[[targets]]\nhost = \"{host}\"\nprotocol = \"{protocol}\"\ninterval = \"{interval}\"\n\
         queries = 1\nmax_ttl = 8\ntimeout = \"300ms\"\ntags = [\"{tag}\"]\n{count}"
    )
}

fn header(output: &std::path::Path) -> String {
    format!(
        // The named labs' routers do not rate-limit ICMP; tell the agent so.
        "namespace = \"sched\"\ntags = [\"agent:lab\"]\ncapture = \"ebpf\"\nprobes_per_second = 2000\n\
         router_icmp_burst = 10000\nrouter_icmp_per_second = 10000\n\
         [output]\npath = \"{}\"\n",
        output.display()
    )
}

/// Every line is one complete, valid record; returns them parsed.
fn records(lines: &[String]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("partial line? {e}: {l}"));
            assert_valid(&v);
            v
        })
        .collect()
}

#[test]
fn targets_produce_exactly_the_expected_lines() {
    let lab = Lab::up(&traceroute_lab::named::chain()).unwrap();
    let dir = service_support::TempDir::new("sched");
    let out = dir.path("paths.jsonl");
    let v4 = lab.primary("dst", Family::V4).unwrap();
    let v6 = lab.primary("dst", Family::V6).unwrap();
    let r2 = lab.addr("r2", "r1", Family::V4).unwrap();
    let config = [
        header(&out),
        target(&v4.to_string(), "tcp", "1s", Some(3), "t:v4"),
        target(&v6.to_string(), "icmp", "1s", Some(3), "t:v6"),
        target(&r2.to_string(), "udp", "700ms", Some(4), "t:r2"),
    ]
    .join("\n");
    let mut agent = Agent::start_with(&lab, "src", Some(&config), &[]);
    let want_total = 3 + 3 + 4;
    assert!(
        eventually(Duration::from_secs(20), || lines(&out).len() >= want_total),
        "only {} lines:\n{}",
        lines(&out).len(),
        agent.log()
    );
    // No more than that, even after another interval.
    std::thread::sleep(Duration::from_millis(1500));
    let all = records(&lines(&out));
    assert_eq!(all.len(), want_total);
    let mut ids = HashSet::new();
    for (tag, host, n) in [("t:v4", v4, 3), ("t:v6", v6, 3), ("t:r2", r2, 4)] {
        let mine: Vec<_> = all
            .iter()
            .filter(|r| r["tags"] == serde_json::json!(["agent:lab", tag]))
            .collect();
        assert_eq!(mine.len(), n, "{tag}");
        for r in mine {
            assert_eq!(r["namespace"], "sched");
            assert!(!r["source"]["hostname"].as_str().unwrap().is_empty());
            assert_eq!(r["destination"]["hostname"], host.to_string());
            let want = if tag == "t:r2" {
                vec![
                    lab.addr("r1", "src", Family::V4).unwrap().to_string(),
                    r2.to_string(),
                ]
            } else {
                expected(&lab, "src", "dst", host)
            };
            assert_eq!(hop_addrs(r, 0), want, "{tag}");
            ids.insert(r["test_run_id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(ids.len(), want_total, "every run is its own record");
    assert_eq!(
        agent.metric("traceroute_agent_runs_total", "origin=\"schedule\""),
        want_total as f64
    );
    let status = agent.stop();
    assert!(status.success(), "{status}\n{}", agent.log());
}

#[test]
fn sighup_rotation_loses_no_line_and_reload_applies_targets() {
    let lab = Lab::up(&traceroute_lab::named::chain()).unwrap();
    let dir = service_support::TempDir::new("rotate");
    let out = dir.path("paths.jsonl");
    let rotated = dir.path("paths.jsonl.1");
    let dst = lab.primary("dst", Family::V4).unwrap().to_string();
    let r1 = lab.addr("r1", "src", Family::V4).unwrap().to_string();
    let config = [
        header(&out),
        target(&dst, "udp", "300ms", Some(12), "a"),
        target(&dst, "icmp", "300ms", Some(12), "b"),
    ]
    .join("\n");
    let mut agent = Agent::start_with(&lab, "src", Some(&config), &[]);
    assert!(eventually(Duration::from_secs(10), || lines(&out).len() >= 4));
    std::fs::rename(&out, &rotated).unwrap();
    agent.signal(libc::SIGHUP);
    assert!(
        eventually(Duration::from_secs(10), || lines(&out).len() >= 2),
        "no lines in the new file after SIGHUP:\n{}",
        agent.log()
    );
    // Every run ends up in exactly one of the files, complete.
    assert!(
        eventually(Duration::from_secs(20), || lines(&rotated).len()
            + lines(&out).len()
            >= 24),
        "{} + {} lines",
        lines(&rotated).len(),
        lines(&out).len()
    );
    std::thread::sleep(Duration::from_millis(800));
    let old = records(&lines(&rotated));
    let new = records(&lines(&out));
    assert_eq!(old.len() + new.len(), 24, "{} + {}", old.len(), new.len());
    assert!(!old.is_empty() && !new.is_empty());

    // A broken config is refused and the running one kept.
    let config_path = agent.dir.path("config.toml");
    std::fs::write(&config_path, "this is = not [toml").unwrap();
    agent.signal(libc::SIGHUP);
    assert!(eventually(Duration::from_secs(5), || agent
        .log()
        .contains("config reload failed")));
    assert_eq!(agent.get("/health").status, 200);

    // A good one replaces the targets: a new target starts writing.
    let config = [header(&out), target(&r1, "udp", "300ms", Some(2), "c")].join("\n");
    std::fs::write(&config_path, config).unwrap();
    agent.signal(libc::SIGHUP);
    assert!(
        eventually(Duration::from_secs(10), || records(&lines(&out))
            .iter()
            .filter(|r| r["tags"] == serde_json::json!(["agent:lab", "c"]))
            .count()
            == 2),
        "{}",
        agent.log()
    );
    assert_eq!(agent.get("/health").json()["targets"], 1);
    let status = agent.stop();
    assert!(status.success(), "{status}");
}

#[test]
fn sigterm_during_traces_exits_cleanly_and_detaches() {
    // dst drops UDP: traces to it wait out every timeout.
    let lab = Lab::up(&traceroute_lab::named::chain().drop_proto("dst", Proto::Udp, Hook::Input))
        .unwrap();
    let dir = service_support::TempDir::new("term");
    let out = dir.path("paths.jsonl");
    let dst = lab.primary("dst", Family::V4).unwrap();
    let slow = format!(
        "[[targets]]\nhost = \"{dst}\"\nprotocol = \"udp\"\ninterval = \"1s\"\nqueries = 1\n\
         max_ttl = 8\ntimeout = \"20s\"\n"
    );
    let quick = target(&dst.to_string(), "icmp", "200ms", None, "quick");
    let config = [header(&out), slow, quick].join("\n");
    let mut agent = Agent::start_with(&lab, "src", Some(&config), &[]);
    // An API trace in flight too.
    let socket = agent.socket.clone();
    let q = client_query(0, 8, 20_000_000_000, "UDP", 1);
    let api = std::thread::spawn(move || {
        service_support::try_get(&socket, &format!("/traceroute/{dst}?{q}"))
    });
    assert!(
        eventually(Duration::from_secs(10), || {
            agent.metric("traceroute_agent_traces_in_flight", "origin=\"api\"") == 1.0
                && agent.metric("traceroute_agent_traces_in_flight", "origin=\"schedule\"") >= 1.0
                && !lines(&out).is_empty()
        }),
        "{}",
        agent.get("/metrics").text()
    );
    let ifaces: Vec<String> = lab
        .interfaces("src")
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    let attached = |lab: &Lab| {
        let ifaces = ifaces.clone();
        lab.in_netns("src", move || {
            ifaces
                .iter()
                .flat_map(|i| EbpfCapture::tcx_programs(i).unwrap())
                .count()
        })
        .unwrap()
    };
    assert!(attached(&lab) > 0, "the capture is attached while running");

    let started = std::time::Instant::now();
    let status = agent.stop();
    assert!(status.success(), "exit {status}\n{}", agent.log());
    // Grace is 3 s (set by the test support), then cancellation.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    let reply = api.join().unwrap().expect("the API client got an answer");
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.json()["code"], "SHUTTING_DOWN");
    assert_eq!(attached(&lab), 0, "TCX programs left behind");
    assert!(!agent.socket.exists(), "socket file left behind");
    // Whatever was written is complete lines.
    records(&lines(&out));
    let log = agent.log();
    assert!(log.contains("grace period over"), "{log}");
    assert!(log.contains("stopped"), "{log}");
}

#[test]
fn a_route_change_between_runs_is_marked_and_counted() {
    let lab = Lab::up(&traceroute_lab::named::diamond(2)).unwrap();
    let dir = service_support::TempDir::new("change");
    let out = dir.path("paths.jsonl");
    let dst = lab.primary("dst", Family::V4).unwrap();
    let prefix = lab.subnet("r3", "dst", Family::V4).unwrap().to_string();
    let via = |branch: &str| lab.addr(branch, "r1", Family::V4).unwrap().to_string();
    let pin = |branch: &str| {
        let out = lab
            .exec(
                "r1",
                "ip",
                ["route", "replace", &prefix, "via", &via(branch)],
            )
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    pin("b1");
    // A pinned flow: through ECMP a new random flow per run would look like
    // a path change; here only the route can change the path.
    let config = format!(
        "{}{}flow_id = 43000\n",
        header(&out),
        target(&dst.to_string(), "udp", "400ms", None, "t:change")
    );
    let mut agent = Agent::start_with(&lab, "src", Some(&config), &[]);
    assert!(eventually(Duration::from_secs(10), || lines(&out).len() >= 2));
    pin("b2");
    let changed = |v: &serde_json::Value| v.get("path_change").is_some();
    assert!(
        eventually(Duration::from_secs(10), || records(&lines(&out))
            .iter()
            .any(changed)),
        "no record marked the change"
    );
    let labels = format!("target=\"{dst}\",protocol=\"UDP\"");
    assert_eq!(
        agent.metric("traceroute_agent_path_changes_total", &labels),
        1.0
    );
    assert_eq!(
        agent.metric("traceroute_agent_target_distinct_paths", &labels),
        1.0
    );
    assert!(agent.stop().success());
    let all = records(&lines(&out));
    let at = all.iter().position(changed).unwrap();
    let change = &all[at]["path_change"];
    assert_eq!(change["previous"], all[at - 1]["path_fingerprint"]);
    assert_eq!(change["current"], all[at]["path_fingerprint"]);
    assert_ne!(change["previous"], change["current"]);
    // Before and after the change, runs keep their path: marked once.
    assert_eq!(all.iter().filter(|v| changed(v)).count(), 1);
    let b1 = lab.addr("b1", "r1", Family::V4).unwrap().to_string();
    let b2 = lab.addr("b2", "r1", Family::V4).unwrap().to_string();
    assert_eq!(hop_addrs(&all[at - 1], 0)[1], b1);
    assert_eq!(hop_addrs(&all[at], 0)[1], b2);
}
