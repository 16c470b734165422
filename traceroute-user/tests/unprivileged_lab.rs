//! Traces with no privilege at all, as user `nobody` with every capability
//! dropped: UDP by a datagram socket with IP_RECVERR and ICMP by a datagram
//! ICMP ("ping") socket find every hop of the chain lab over IPv4 and IPv6;
//! without --unprivileged the CLI falls back to it by itself; a ping socket
//! outside net.ipv4.ping_group_range is refused with the reason. Needs root
//! (labs, setpriv, sysctl in the lab namespace).

mod common;

use std::process::Output;

use common::agent::{assert_user_stamped_runs, assert_valid, expected};
use serde_json::Value;
use traceroute_lab::{Family, Lab};

/// The agent's `trace` in src as nobody, no capabilities.
fn as_nobody(lab: &Lab, args: &[&str]) -> Output {
    common::agent::as_nobody(lab, "src", args)
}

fn ping_group_range(lab: &Lab, range: &str) {
    let out = lab
        .exec(
            "src",
            "sysctl",
            ["-w", &format!("net.ipv4.ping_group_range={range}")],
        )
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn check(out: &Output, want: &[String], what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{what}: {stderr}");
    let record: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_valid(&record);
    assert!(record.get("capture").is_none(), "{what}: {record}");
    assert_user_stamped_runs(&record, want, what);
    stderr
}

#[test]
fn nobody_traces_udp_and_icmp_over_both_families() {
    let lab = Lab::up(&traceroute_lab::named::chain()).unwrap();
    // What systemd sets on most distributions; a new namespace has "1 0".
    ping_group_range(&lab, "0 2147483647");
    for family in [Family::V4, Family::V6] {
        let dst = lab.primary("dst", family).unwrap();
        let want = expected(&lab, "src", "dst", dst);
        let d = dst.to_string();
        for protocol in ["-U", "-I"] {
            let out = as_nobody(&lab, &["--unprivileged", protocol, &d]);
            check(&out, &want, &format!("--unprivileged {protocol} {d}"));
        }
        // Without the flag: the CLI finds it has no privilege and says so.
        let out = as_nobody(&lab, &["-U", &d]);
        let stderr = check(&out, &want, &format!("auto -U {d}"));
        assert!(
            stderr.contains("needs CAP_NET_RAW: tracing without privilege instead"),
            "{stderr}"
        );
    }
}

#[test]
fn a_ping_socket_outside_ping_group_range_is_refused_with_the_reason() {
    let lab = Lab::up(&traceroute_lab::named::chain()).unwrap();
    ping_group_range(&lab, "1 0");
    let dst = lab.primary("dst", Family::V4).unwrap().to_string();
    let out = as_nobody(&lab, &["--unprivileged", "-I", &dst]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("net.ipv4.ping_group_range"), "{stderr}");
    assert!(out.stdout.is_empty());
    // UDP needs nothing of the kind.
    let want = expected(&lab, "src", "dst", dst.parse().unwrap());
    check(
        &as_nobody(&lab, &["--unprivileged", "-U", &dst]),
        &want,
        "udp",
    );
}
