//! A SYN-proxy firewall (`synproxy` lab: nft `synproxy` on fw, hop 2, for
//! TCP 80) answers every SYN to dst:80 itself, one hop before dst. The SYN
//! trace must flag the answer as a suspected middlebox (its reply TTL is
//! fw's) and name fw; traces the proxy does not touch (TCP 81, UDP, ICMP)
//! must reach dst at hop 4 without a flag. Needs root.

mod common;

use common::agent::{assert_valid, expected, run, trace};
use serde_json::{Value, json};
use traceroute_lab::{Family, Lab};

fn traced(lab: &Lab, args: &[&str]) -> Value {
    let out = run(lab, "src", args);
    assert!(out.status.success(), "{args:?}: {out:?}");
    let record: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_valid(&record);
    record
}

#[test]
fn a_syn_proxy_answering_for_the_destination_is_flagged_and_named() {
    let lab = Lab::up(&traceroute_lab::named::synproxy()).unwrap();
    let dst = lab.primary("dst", Family::V4).unwrap();
    let fw = lab.ipv4("fw", "r1").unwrap().to_string();
    let real = expected(&lab, "src", "dst", dst);
    assert_eq!(real.len(), 4);

    let record = traced(&lab, &[&dst.to_string(), "-T", "-p", "80", "-q", "2"]);
    for run in record["traceroute"]["runs"].as_array().unwrap() {
        let hops = run["hops"].as_array().unwrap();
        // What the SYN trace sees: dst one hop early.
        assert_eq!(hops.len(), 3, "{run:#}");
        assert_eq!(hops[2]["ip_address"], dst.to_string());
        assert_eq!(
            run["suspected_middlebox"],
            json!({"ttl": 3, "reply_ttl": 63, "distance": 2, "likely": fw}),
            "{run:#}"
        );
    }
    // The table says so too.
    let mut cmd = lab.command("src", common::agent::AGENT).unwrap();
    let out = cmd
        .args([
            "trace",
            "--format",
            "table",
            &dst.to_string(),
            "-T",
            "-p",
            "80",
            "-q",
            "1",
        ])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("a SYN proxy or firewall answering for the destination?")
            && table.contains(&format!("({fw}?)")),
        "{table}"
    );

    // Untouched by the proxy: the real path, no flag (`trace` asserts that).
    for flags in [&["-T", "-p", "81"][..], &["-U"], &["-I"]] {
        let mut args = vec![dst.to_string(), "-q".to_string(), "1".to_string()];
        args.extend(flags.iter().map(ToString::to_string));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let record = trace(&lab, "src", &args).record;
        let hops: Vec<&str> = record["traceroute"]["runs"][0]["hops"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["ip_address"].as_str().unwrap())
            .collect();
        assert_eq!(hops, real, "{flags:?}");
    }
}
