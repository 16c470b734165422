//! Running the agent binary inside lab namespaces and reading its records.

use std::net::IpAddr;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;
use traceroute_lab::Lab;

pub const AGENT: &str = env!("CARGO_BIN_EXE_traceroute-agent");

/// A finished `traceroute-agent trace`.
pub struct Traced {
    pub record: Value,
    pub elapsed: Duration,
}

/// Runs `traceroute-agent trace --format json ARGS` in `node`; the trace must
/// succeed and its record must validate against the schema.
pub fn trace(lab: &Lab, node: &str, args: &[&str]) -> Traced {
    let start = Instant::now();
    let out = run(lab, node, args);
    let elapsed = start.elapsed();
    assert!(
        out.status.success(),
        "trace {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().count(),
        1,
        "one JSON line expected: {stdout}"
    );
    let record: Value = serde_json::from_str(&stdout).expect("JSON record");
    assert_valid(&record);
    // No lab but `synproxy` (traced with `run`) has a box answering for the
    // destination: a suspicion anywhere else is a false alarm.
    for run in record["traceroute"]["runs"]
        .as_array()
        .into_iter()
        .flatten()
    {
        assert!(
            run.get("suspected_middlebox").is_none(),
            "false middlebox alarm: {run:#}"
        );
    }
    Traced { record, elapsed }
}

/// Runs the agent's `trace` command in `node` and returns whatever happened.
pub fn run(lab: &Lab, node: &str, args: &[&str]) -> Output {
    let mut cmd = lab.command(node, AGENT).unwrap();
    cmd.args(["trace", "--format", "json"]).args(args);
    cmd.output().expect("run agent")
}

/// `traceroute-agent trace --format json -q 2 --timeout-ms 300 ARGS` in
/// `node` as user nobody with every capability dropped.
pub fn as_nobody(lab: &Lab, node: &str, args: &[&str]) -> Output {
    let defaults = ["--format", "json", "-q", "2", "--timeout-ms", "300"];
    trace_as_nobody(lab, node, &[&defaults[..], args].concat())
}

/// `traceroute-agent trace ARGS` in `node` as nobody:nogroup with every
/// capability dropped.
pub fn trace_as_nobody(lab: &Lab, node: &str, args: &[&str]) -> Output {
    lab.command(node, "setpriv")
        .unwrap()
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
            AGENT,
            "trace",
        ])
        .args(args)
        .output()
        .unwrap()
}

pub fn assert_valid(record: &Value) {
    if let Err(errors) = traceroute_agent::path::schema::validate(record) {
        panic!("record violates the schema: {errors:#?}\n{record:#}");
    }
}

/// (ttl, ip_address, rtt) of every hop of run `i`.
pub fn hops(record: &Value, i: usize) -> Vec<(u64, String, Option<f64>)> {
    record["traceroute"]["runs"][i]["hops"]
        .as_array()
        .expect("hops")
        .iter()
        .map(|h| {
            (
                h["ttl"].as_u64().unwrap(),
                h["ip_address"].as_str().unwrap().to_string(),
                h["rtt"].as_f64(),
            )
        })
        .collect()
}

pub fn runs(record: &Value) -> usize {
    record["traceroute"]["runs"].as_array().map_or(0, Vec::len)
}

pub fn reached(record: &Value, i: usize) -> bool {
    record["traceroute"]["runs"][i]["destination_reached"] == true
}

/// The addresses a trace from `from` to `to` must show: routers (empty string
/// for a silent one) then the destination.
pub fn expected(lab: &Lab, from: &str, to: &str, dst: IpAddr) -> Vec<String> {
    let family = if dst.is_ipv6() {
        traceroute_lab::Family::V6
    } else {
        traceroute_lab::Family::V4
    };
    let mut out: Vec<String> = lab
        .expected_hops(from, to, family)
        .unwrap()
        .into_iter()
        .map(|h| h.map(|a| a.to_string()).unwrap_or_default())
        .collect();
    out.push(dst.to_string());
    out
}

/// Every run of a trace made without capture (connect() or datagram
/// sockets) reached the destination over exactly `want`, its silent hops
/// waited their full time, and its RTTs are user-space readings.
pub fn assert_user_stamped_runs(record: &Value, want: &[String], what: &str) {
    for run in record["traceroute"]["runs"].as_array().unwrap() {
        assert_eq!(run["destination_reached"], true, "{what}: {run:#}");
        let hops = run["hops"].as_array().unwrap();
        let got: Vec<&str> = hops
            .iter()
            .map(|h| h["ip_address"].as_str().unwrap())
            .collect();
        assert_eq!(got, want, "{what}");
        for hop in hops {
            if hop["ip_address"] == "" {
                assert_eq!(hop["no_answer"], "timeout", "{what}: {hop}");
            } else {
                assert_eq!(hop["timestamp_source"], "user", "{what}: {hop}");
            }
        }
    }
}
