//! The CLI through a running agent: an unprivileged member of the socket's
//! group traces with the service's kernel stamps and gets what an
//! in-process run prints; flags the API cannot express are refused with the
//! reason. Needs root (to run the service and drop to `nobody`).

mod common;
mod service_support;

use std::os::unix::fs::PermissionsExt;
use std::process::Output;

use serde_json::Value;
use service_support::{AGENT, Agent, hop_addrs};
use traceroute_lab::{Family, Lab};

/// The agent in src, its socket for the `nogroup` group only.
fn agent(lab: &Lab) -> Agent {
    let agent = Agent::start_with(
        lab,
        "src",
        Some("capture = \"ebpf\"\n[api]\nsocket_group = \"nogroup\"\n"),
        &[],
    );
    // nobody reaches the socket through its directory.
    std::fs::set_permissions(&agent.dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    agent
}

/// `traceroute-agent trace ARGS` in src, as nobody:nogroup without any
/// capability.
fn trace_as_nobody(lab: &Lab, args: &[&str]) -> Output {
    common::agent::trace_as_nobody(lab, "src", args)
}

fn trace_as_root(lab: &Lab, args: &[&str]) -> Output {
    let mut cmd = lab.command("src", AGENT).unwrap();
    cmd.arg("trace").args(args);
    cmd.output().unwrap()
}

/// The table without its RTT columns: what must not differ between runs.
fn table_without_rtts(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            l.split_whitespace()
                .take_while(|w| w.parse::<f64>().is_err() || !w.contains('.'))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

#[test]
fn an_unprivileged_member_of_the_group_traces_through_the_agent_as_root_does_here() {
    let lab = Lab::up(&traceroute_lab::named::chain()).unwrap();
    let agent = agent(&lab);
    let socket = agent.socket.to_str().unwrap().to_string();
    let dst = lab.primary("dst", Family::V4).unwrap().to_string();
    let want = common::agent::expected(&lab, "src", "dst", dst.parse().unwrap());
    let out = trace_as_nobody(
        &lab,
        &[
            &dst, "-U", "-q", "2", "--agent", &socket, "--format", "json",
        ],
    );
    assert!(
        out.status.success(),
        "{}\nagent log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        agent.log()
    );
    let record: Value = serde_json::from_slice(&out.stdout).unwrap();
    common::agent::assert_valid(&record);
    assert_eq!(hop_addrs(&record, 0), want);
    assert_eq!(record["capture"]["method"], "ebpf");
    let first = &record["traceroute"]["runs"][0]["hops"][0];
    assert_eq!(first["timestamp_source"], "kernel_receive", "{first}");
    // The agent ran it.
    assert!(agent.metric("traceroute_agent_runs_total", "origin=\"api\"") >= 1.0);
    // The same table as root's in-process run, RTTs aside.
    let table = ["-U", "-q", "2", "--format", "table"];
    let through = trace_as_nobody(
        &lab,
        &[&[dst.as_str(), "--agent", &socket][..], &table[..]].concat(),
    );
    let here = trace_as_root(&lab, &[&[dst.as_str(), "--local"][..], &table[..]].concat());
    assert!(through.status.success() && here.status.success());
    assert_eq!(table_without_rtts(&through), table_without_rtts(&here));
}

#[test]
fn what_the_api_cannot_express_is_refused_with_the_reason() {
    let lab = Lab::up(&traceroute_lab::named::chain()).unwrap();
    let agent = agent(&lab);
    let socket = agent.socket.to_str().unwrap().to_string();
    let dst = lab.primary("dst", Family::V4).unwrap().to_string();
    for (flags, why) in [
        (vec!["-f", "2"], "-f cannot go through the agent"),
        (vec!["-w", "1,3,10"], "-w cannot go through the agent"),
        (
            vec!["--capture", "socket"],
            "--capture cannot go through the agent",
        ),
        (vec!["-c", "20"], "-c cannot go through the agent"),
    ] {
        let out = trace_as_nobody(
            &lab,
            &[&[dst.as_str(), "--agent", &socket][..], &flags[..]].concat(),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(
            stderr.contains(why) && stderr.contains("--local"),
            "{flags:?}: {stderr}"
        );
    }
    // An agent that is not there is an error when asked for by name.
    let missing = agent.dir.path("none.sock");
    let out = trace_as_root(&lab, &[&dst, "--agent", missing.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("none.sock"));
    // An agent that routes in another network namespace (r1's) refuses to
    // trace for a caller in src before it probes, and names why.
    let elsewhere = Agent::start_with(&lab, "r1", Some("capture = \"ebpf\"\n"), &[]);
    let out = trace_as_root(
        &lab,
        &[
            &dst,
            "--agent",
            elsewhere.socket.to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("another network namespace"));
    assert_eq!(
        elsewhere.metric("traceroute_agent_runs_total", "origin=\"api\""),
        0.0,
        "the other namespace's agent traced"
    );
    // The agent's own refusals keep their exit code: a bad request is 2.
    let out = trace_as_nobody(&lab, &[&dst, "--agent", &socket, "-T", "--pmtu"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
