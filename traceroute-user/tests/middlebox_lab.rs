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

/// (ttl, address) of every hop of every run, and whether each run reached.
fn runs_of(record: &Value) -> Vec<(bool, Vec<String>)> {
    record["traceroute"]["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| {
            let hops = run["hops"].as_array().unwrap();
            (
                run["destination_reached"] == true,
                hops.iter()
                    .map(|h| h["ip_address"].as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn inside_a_connection_the_trace_sees_the_real_path_behind_a_syn_proxy() {
    let lab = Lab::up(&traceroute_lab::named::synproxy()).unwrap();
    let dst = lab.primary("dst", Family::V4).unwrap().to_string();
    let real = expected(&lab, "src", "dst", dst.parse().unwrap());
    for method in ["sack", "prefer_sack"] {
        let record = trace(
            &lab,
            "src",
            &[&dst, "-T", "-p", "80", "--tcp-method", method, "-q", "2"],
        )
        .record;
        assert_eq!(record["tcp_method"], "sack", "{method}");
        for (reached, hops) in runs_of(&record) {
            assert!(reached, "{method}: {record:#}");
            assert_eq!(hops, real, "{method}");
        }
        // Kernel timestamps on both sides, also for segments of a connection.
        let hop = &record["traceroute"]["runs"][0]["hops"][3];
        assert_eq!(hop["timestamp_source"], "kernel");
    }
}

#[test]
fn inside_a_connection_the_trace_passes_a_syn_rate_limit_that_syn_probes_do_not() {
    let lab = Lab::up(&traceroute_lab::named::synlimit()).unwrap();
    let dst = lab.primary("dst", Family::V4).unwrap().to_string();
    let real = expected(&lab, "src", "dst", dst.parse().unwrap());
    assert_eq!(real.len(), 4);
    // One handshake, one of fw's 3 SYNs: every hop, every run.
    let args = [&dst[..], "-T", "-p", "443", "-q", "3", "--tcp-method"];
    let sack = trace(&lab, "src", &[&args[..], &["sack"]].concat()).record;
    assert_eq!(sack["tcp_method"], "sack");
    for (reached, hops) in runs_of(&sack) {
        assert!(reached, "{sack:#}");
        assert_eq!(hops, real);
    }
    // SYN probes: the 2 SYNs fw still lets through reach r3; the rest are
    // dropped. What the trace reports must be true: answered hops are the
    // real ones, the others say why they have no answer, and it does not
    // claim the destination.
    let syn = trace(&lab, "src", &[&args[..], &["syn"]].concat()).record;
    assert_eq!(syn["tcp_method"], "syn");
    for run in syn["traceroute"]["runs"].as_array().unwrap() {
        assert_eq!(run["destination_reached"], false, "{run:#}");
        for hop in run["hops"].as_array().unwrap() {
            let ttl = hop["ttl"].as_u64().unwrap() as usize;
            match hop["ip_address"].as_str().unwrap() {
                "" => assert!(hop["no_answer"].is_string(), "{hop}"),
                addr => assert_eq!(Some(&addr.to_string()), real.get(ttl - 1), "{hop}"),
            }
        }
    }
}

#[test]
fn sack_needs_an_open_port_that_allows_sack_and_prefer_sack_falls_back() {
    let topology = traceroute_lab::named::chain().sysctl("dst", "net.ipv4.tcp_sack", "0");
    let lab = Lab::up(&topology).unwrap();
    let dst = lab.primary("dst", Family::V4).unwrap().to_string();
    // Port 80 is open but dst does not allow SACK; 81 is closed (RST).
    for (port, why) in [
        ("80", "does not allow SACK"),
        ("81", "refused the connection"),
    ] {
        let out = run(
            &lab,
            "src",
            &[&dst, "-T", "-p", port, "--tcp-method", "sack"],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{port}: {stderr}");
        assert!(stderr.contains(why), "{port}: {stderr}");
        let record = trace(
            &lab,
            "src",
            &[
                &dst,
                "-T",
                "-p",
                port,
                "--tcp-method",
                "prefer_sack",
                "-q",
                "1",
            ],
        )
        .record;
        assert_eq!(record["tcp_method"], "syn", "{port}");
        assert_eq!(record["traceroute"]["runs"][0]["destination_reached"], true);
    }
}
