//! The tracer end to end in lab topologies, checked against each lab's ground
//! truth. Every record is validated against the JSON schema. Needs root.

mod common;

use std::time::Duration;

use common::agent::{self, expected, hops, reached, runs, trace};
use traceroute_lab::{Family, Hook, IcmpRateLimit, Lab, Proto, Topology};

/// src - r1 - r2 - r3 - r4 - r5 - dst: six hops, TCP 80 open on dst.
fn six_hops() -> Topology {
    let mut t = Topology::new("six").host("src");
    let nodes = ["src", "r1", "r2", "r3", "r4", "r5", "dst"];
    for r in &nodes[1..6] {
        t = t.router(r);
    }
    t = t.host("dst");
    for w in nodes.windows(2) {
        t = t.link(w[0], w[1]);
    }
    t.tcp_listen("dst", 80)
        .icmp_rate_limit_all(IcmpRateLimit::UNLIMITED)
}

fn check_chain(lab: &Lab, family: Family, proto_args: &[&str]) {
    let dst = lab.primary("dst", family).unwrap();
    let want = expected(lab, "src", "dst", dst);
    let d = dst.to_string();
    let mut args = vec![d.as_str(), "--timeout-ms", "1000"];
    args.extend_from_slice(proto_args);
    let t = trace(lab, "src", &args);
    let r = &t.record;
    assert_eq!(runs(r), 3, "{r:#}");
    for i in 0..3 {
        let got: Vec<String> = hops(r, i).iter().map(|h| h.1.clone()).collect();
        assert_eq!(got, want, "{proto_args:?} {family:?} run {i}: {r:#}");
        assert!(
            reached(r, i),
            "{proto_args:?} {family:?} run {i} not reached"
        );
        for (ttl, ip, rtt) in hops(r, i) {
            let rtt = rtt.unwrap_or_else(|| panic!("hop {ttl} ({ip}) has no RTT"));
            assert!(
                rtt > 0.0 && rtt < 50.0,
                "{proto_args:?} hop {ttl} rtt {rtt} ms"
            );
        }
    }
    assert_eq!(r["destination"]["hostname"], d.as_str());
    assert_eq!(r["capture"]["method"], "ebpf");
    assert_eq!(r["traceroute"]["hop_count"]["min"], 6);
    assert_eq!(
        r["source"]["via"]["interface"]["name"],
        lab.ifname("src", "r1").unwrap()
    );
}

#[test]
fn six_hop_chain_every_protocol_and_family() {
    let lab = Lab::up(&six_hops()).unwrap();
    for family in [Family::V4, Family::V6] {
        check_chain(&lab, family, &["--protocol", "udp"]);
        check_chain(&lab, family, &["-T", "-p", "80"]);
        check_chain(&lab, family, &["-I"]);
    }
}

#[test]
fn silent_router_is_reported_and_does_not_stall_the_trace() {
    let lab = Lab::up(&traceroute_lab::named::chain()).unwrap();
    for family in [Family::V4, Family::V6] {
        let dst = lab.primary("dst", family).unwrap();
        let want = expected(&lab, "src", "dst", dst);
        assert!(
            want.contains(&String::new()),
            "chain has a silent hop: {want:?}"
        );
        let t = trace(
            &lab,
            "src",
            &[&dst.to_string(), "-T", "--timeout-ms", "1000"],
        );
        for i in 0..3 {
            let got: Vec<String> = hops(&t.record, i).iter().map(|h| h.1.clone()).collect();
            assert_eq!(got, want, "{family:?}");
            let silent = &t.record["traceroute"]["runs"][i]["hops"][2];
            assert_eq!(silent["ip_address"], "");
            assert_eq!(silent["reachable"], false);
            assert!(silent.get("rtt").is_none());
        }
        // 30 TTLs x 1 s would be the naive bound; one timeout plus slack is ours.
        assert!(
            t.elapsed < Duration::from_secs(3),
            "trace took {:?}",
            t.elapsed
        );
    }
}

#[test]
fn delay_link_shows_in_rtts() {
    let lab = Lab::up(&traceroute_lab::named::delay()).unwrap();
    let dst = lab.primary("dst", Family::V4).unwrap();
    let t = trace(&lab, "src", &[&dst.to_string(), "-I"]);
    let h = hops(&t.record, 0);
    assert_eq!(h.len(), 3, "{:#}", t.record);
    let before = h[0].2.unwrap();
    assert!(before < 10.0, "r1 is before the delay: {before} ms");
    for (ttl, ip, rtt) in &h[1..] {
        let rtt = rtt.unwrap();
        assert!(
            (38.0..80.0).contains(&rtt),
            "hop {ttl} ({ip}) behind 20 ms each way: {rtt} ms"
        );
    }
}

#[test]
fn closed_port_counts_as_reached_and_firewalled_destination_does_not() {
    let lab = Lab::up(
        &Topology::new("fw")
            .host("src")
            .router("r1")
            .host("dst")
            .host("fw")
            .link("src", "r1")
            .link("r1", "dst")
            .link("r1", "fw")
            .drop_proto("fw", Proto::Tcp, Hook::Input)
            .icmp_rate_limit_all(IcmpRateLimit::UNLIMITED),
    )
    .unwrap();
    let dst = lab.primary("dst", Family::V4).unwrap().to_string();
    let closed = trace(&lab, "src", &[&dst, "-T", "-p", "81", "-q", "1"]);
    assert!(
        reached(&closed.record, 0),
        "RST from a closed port is an answer"
    );
    let h = hops(&closed.record, 0);
    assert_eq!(h.last().unwrap().1, dst);

    let fw = lab.primary("fw", Family::V4).unwrap().to_string();
    let dropped = trace(
        &lab,
        "src",
        &[
            &fw,
            "-T",
            "-p",
            "80",
            "-q",
            "1",
            "-m",
            "4",
            "--timeout-ms",
            "300",
        ],
    );
    assert!(!reached(&dropped.record, 0), "{:#}", dropped.record);
    let h = hops(&dropped.record, 0);
    assert_eq!(
        h[0].1,
        lab.addr("r1", "src", Family::V4).unwrap().to_string()
    );
    assert!(h[1..].iter().all(|(_, ip, _)| ip.is_empty()), "{h:?}");
}

#[test]
fn ecmp_flow_sees_one_consistent_path() {
    let lab = Lab::up(&traceroute_lab::named::ecmp()).unwrap();
    let dst = lab.primary("dst", Family::V4).unwrap();
    let paths = lab.path("src", "dst", Family::V4).unwrap();
    let mut branches_seen = std::collections::HashSet::new();
    for _ in 0..16 {
        let t = trace(&lab, "src", &[&dst.to_string(), "-U", "-q", "2"]);
        let first = hops(&t.record, 0);
        for i in 1..runs(&t.record) {
            assert_eq!(
                hops(&t.record, i).iter().map(|h| &h.1).collect::<Vec<_>>(),
                first.iter().map(|h| &h.1).collect::<Vec<_>>(),
                "runs of one flow disagree"
            );
        }
        for (ttl, ip, _) in &first[..first.len() - 1] {
            let allowed: Vec<String> = paths[*ttl as usize - 1]
                .iter()
                .map(|h| h.addr.to_string())
                .collect();
            assert!(
                allowed.contains(ip),
                "hop {ttl} {ip} not on any branch {allowed:?}"
            );
        }
        branches_seen.insert(first[1].1.clone());
    }
    // 16 flows (16 source ports) over a 2-way ECMP: both branches (odds of not: 3e-5).
    assert_eq!(branches_seen.len(), 2, "{branches_seen:?}");
}

#[test]
fn bad_arguments_exit_2_and_runtime_errors_exit_1() {
    let lab = Lab::up(
        &Topology::new("args")
            .host("src")
            .host("dst")
            .link("src", "dst"),
    )
    .unwrap();
    for bad in [
        vec!["198.18.1.2", "--max-ttl", "0"],
        vec!["198.18.1.2", "--protocol", "sctp"],
        vec!["198.18.1.2", "-q", "0"],
        vec!["198.18.1.2", "--timeout-ms", "abc"],
        vec!["bad host name!"],
        vec![],
    ] {
        let out = agent::run(&lab, "src", &bad);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{bad:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.stderr.is_empty());
    }
    // No route to an address outside the lab: a runtime error, exit 1.
    let out = agent::run(&lab, "src", &["198.19.200.1", "--timeout-ms", "100"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("route"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
