//! Path MTU per hop in the `mtu` lab (`src — r1 —(1400)— r2 —(1300)— r3 —
//! dst`): with `--pmtu` every hop must show the size that reached it and
//! each bottleneck router the MTU of its next link, for UDP and ICMP over
//! IPv4 and IPv6, through the CLI, the API and a config target; TCP is
//! refused everywhere. Needs root.

mod common;
mod service_support;

use common::agent::{assert_valid, expected, run, trace};
use serde_json::Value;
use service_support::Agent;
use traceroute_lab::{Family, Lab};

const SIZES: [Option<u64>; 4] = [Some(1500), Some(1400), Some(1300), Some(1300)];
const REPORTED: [Option<u64>; 4] = [Some(1400), Some(1300), None, None];

fn check(record: &Value, want_hops: &[String], what: &str) {
    for run in record["traceroute"]["runs"].as_array().unwrap() {
        let hops = run["hops"].as_array().unwrap();
        let addrs: Vec<&str> = hops
            .iter()
            .map(|h| h["ip_address"].as_str().unwrap())
            .collect();
        assert_eq!(addrs, want_hops, "{what}");
        let sizes: Vec<Option<u64>> = hops.iter().map(|h| h["path_mtu"].as_u64()).collect();
        assert_eq!(sizes, SIZES, "{what}: {run:#}");
        let reported: Vec<Option<u64>> = hops.iter().map(|h| h["next_hop_mtu"].as_u64()).collect();
        assert_eq!(reported, REPORTED, "{what}: {run:#}");
        assert!(hops.iter().all(|h| h.get("too_big").is_none()), "{what}");
    }
    // Every probe that was too big was sent again smaller: nothing missing.
    assert_eq!(
        record["probing"]["degraded"],
        serde_json::json!([]),
        "{what}"
    );
}

#[test]
fn every_hop_shows_its_path_mtu_and_each_bottleneck_its_link_mtu() {
    let lab = Lab::up(&traceroute_lab::named::mtu()).unwrap();
    for family in [Family::V4, Family::V6] {
        let dst = lab.primary("dst", family).unwrap();
        let want = expected(&lab, "src", "dst", dst);
        for flag in ["-U", "-I"] {
            let record = trace(&lab, "src", &[&dst.to_string(), flag, "--pmtu", "-q", "2"]).record;
            check(&record, &want, &format!("CLI {flag} {dst}"));
        }
        // Without --pmtu, probes stay small and no size is claimed.
        let plain = trace(&lab, "src", &[&dst.to_string(), "-U", "-q", "1"]).record;
        let hops = plain["traceroute"]["runs"][0]["hops"].as_array().unwrap();
        assert!(hops.iter().all(|h| h.get("path_mtu").is_none()));
    }
    let dst = lab.primary("dst", Family::V4).unwrap().to_string();
    let out = run(&lab, "src", &[&dst, "-T", "--pmtu"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    // The API and a scheduled target.
    let output = service_support::TempDir::new("pmtu");
    let records = output.path("paths.jsonl");
    let config = format!(
        "capture = \"ebpf\"\nrouter_icmp_burst = 10000\nrouter_icmp_per_second = 10000\n\
         [output]\npath = \"{}\"\n\
         [[targets]]\nhost = \"{dst}\"\nprotocol = \"ICMP\"\ninterval = \"1s\"\ncount = 1\npmtu = true\n",
        records.display()
    );
    let agent = Agent::start_with(&lab, "src", Some(&config), &[]);
    let want = expected(&lab, "src", "dst", dst.parse().unwrap());
    let r = agent.get(&format!(
        "/traceroute/{dst}?protocol=UDP&pmtu=true&traceroute_queries=1"
    ));
    assert_eq!(r.status, 200, "{}", r.text());
    let record = r.json();
    assert_valid(&record);
    check(&record, &want, "API");
    let r = agent.get(&format!("/traceroute/{dst}?protocol=TCP&pmtu=true"));
    assert_eq!(
        (r.status, r.json()["code"].clone()),
        (400, "INVALID_REQUEST".into())
    );
    assert!(
        service_support::eventually(std::time::Duration::from_secs(20), || {
            !service_support::lines(&records).is_empty()
        }),
        "the scheduled target wrote no record"
    );
    let line = &service_support::lines(&records)[0];
    let record: Value = serde_json::from_str(line).unwrap();
    assert_valid(&record);
    check(&record, &want, "config target");
}
