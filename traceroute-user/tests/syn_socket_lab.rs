//! `tcp_method=syn_socket`: TCP probes by connect() with a TTL per socket.
//! The CLI runs it as `nobody` with no capability at all (no raw socket, no
//! capture) and must find every hop of the chain lab over IPv4 and IPv6, to
//! an open and to a closed port; the service answers the same through the
//! API. Needs root (labs, setpriv).

mod common;
mod service_support;

use common::agent::{as_nobody, assert_user_stamped_runs, assert_valid, expected};
use serde_json::Value;
use service_support::Agent;
use traceroute_lab::{Family, Lab};

fn check(record: &Value, want: &[String], what: &str) {
    assert_valid(record);
    assert_eq!(record["tcp_method"], "syn_socket", "{what}");
    assert_user_stamped_runs(record, want, what);
}

#[test]
fn without_any_privilege_connect_probes_find_every_hop() {
    let lab = Lab::up(&traceroute_lab::named::chain()).unwrap();
    for family in [Family::V4, Family::V6] {
        let dst = lab.primary("dst", family).unwrap();
        let want = expected(&lab, "src", "dst", dst);
        for port in ["80", "81"] {
            let d = dst.to_string();
            let out = as_nobody(
                &lab,
                "src",
                &["--tcp-method", "syn_socket", "-T", "-p", port, &d],
            );
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{dst}:{port}: {stderr}");
            let record: Value = serde_json::from_slice(&out.stdout).unwrap();
            check(&record, &want, &format!("nobody {dst}:{port}"));
        }
    }
    let agent = Agent::start_with(&lab, "src", Some("capture = \"ebpf\"\n"), &[]);
    let dst = lab.primary("dst", Family::V4).unwrap();
    let r = agent.get(&format!(
        "/traceroute/{dst}?protocol=TCP&port=80&tcp_method=syn_socket&traceroute_queries=1&timeout=300000000"
    ));
    assert_eq!(r.status, 200, "{}", r.text());
    check(&r.json(), &expected(&lab, "src", "dst", dst), "API");
}
