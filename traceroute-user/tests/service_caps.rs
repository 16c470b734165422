//! The service with only the capabilities the systemd unit grants, as an
//! unprivileged user: eBPF capture with CAP_BPF + CAP_PERFMON + CAP_NET_ADMIN +
//! CAP_NET_RAW; socket capture (fallback) without CAP_BPF. Needs root (to
//! drop to `nobody` and to build the lab).

mod common;
mod service_support;

use std::os::unix::fs::PermissionsExt;

use common::agent::{assert_valid, expected};
use service_support::{Agent, TempDir, client_query, hop_addrs};
use traceroute_lab::{Family, Lab};

/// Starts the agent as nobody:nogroup with exactly `caps` (ambient).
fn start_as_nobody(lab: &Lab, caps: &str) -> Agent {
    let dir = TempDir::new("caps");
    // nobody creates the socket there.
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut cmd = lab.command("src", "setpriv").unwrap();
    // Inheritable, ambient and bounding sets hold exactly `caps`.
    cmd.args([
        "--reuid=nobody".to_string(),
        "--regid=nogroup".to_string(),
        "--clear-groups".to_string(),
        format!("--inh-caps=-all,{caps}"),
        format!("--ambient-caps=-all,{caps}"),
        format!("--bounding-set=-all,{caps}"),
    ]);
    cmd.arg("--").arg(service_support::AGENT);
    Agent::spawn(dir, &mut cmd, None, &[])
}

fn caps_of(pid: i32) -> (u32, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .to_string()
    };
    let uid: u32 = field("Uid:")
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let eff = u64::from_str_radix(&field("CapEff:"), 16).unwrap();
    (uid, eff)
}

const NET_ADMIN: u64 = 1 << 12;
const NET_RAW: u64 = 1 << 13;
const PERFMON: u64 = 1 << 38;
const BPF: u64 = 1 << 39;

fn trace_ok(lab: &Lab, agent: &Agent, method: &str) {
    let dst = lab.primary("dst", Family::V4).unwrap();
    let want = expected(lab, "src", "dst", dst);
    for protocol in ["TCP", "UDP", "ICMP"] {
        let port = if protocol == "TCP" { 80 } else { 0 };
        let q = client_query(port, 10, 500_000_000, protocol, 1);
        let r = agent.get(&format!("/traceroute/{dst}?{q}"));
        assert_eq!(r.status, 200, "{protocol}: {}\n{}", r.text(), agent.log());
        let record = r.json();
        assert_valid(&record);
        assert_eq!(record["capture"]["method"], method, "{protocol}");
        assert_eq!(hop_addrs(&record, 0), want, "{protocol}");
    }
}

#[test]
fn unprivileged_user_with_the_unit_capabilities_traces_with_ebpf() {
    let lab = Lab::up(&traceroute_lab::named::chain()).unwrap();
    let mut agent = start_as_nobody(&lab, "+net_raw,+net_admin,+bpf,+perfmon");
    let (uid, eff) = caps_of(agent.pid());
    assert_ne!(uid, 0, "not root");
    assert_eq!(eff, NET_RAW | NET_ADMIN | BPF | PERFMON, "CapEff {eff:x}");
    assert_eq!(agent.get("/health").json()["capture"], "ebpf");
    trace_ok(&lab, &agent, "ebpf");
    let status = agent.stop();
    assert!(status.success(), "{status}\n{}", agent.log());
}

#[test]
fn without_cap_bpf_the_service_falls_back_to_socket_capture() {
    let lab = Lab::up(&traceroute_lab::named::chain()).unwrap();
    let mut agent = start_as_nobody(&lab, "+net_raw,+net_admin,+perfmon");
    let (uid, eff) = caps_of(agent.pid());
    assert_ne!(uid, 0);
    assert_eq!(eff & BPF, 0);
    assert_eq!(agent.get("/health").json()["capture"], "socket");
    assert!(agent.log().contains("falling back to socket capture"));
    trace_ok(&lab, &agent, "socket");
    let status = agent.stop();
    assert!(status.success(), "{status}\n{}", agent.log());
}

#[test]
fn without_cap_net_raw_a_trace_is_denied_and_names_the_capability() {
    let lab = Lab::up(&traceroute_lab::named::chain()).unwrap();
    // Kernel capture works; raw probes cannot be sent.
    let mut agent = start_as_nobody(&lab, "+net_admin,+bpf,+perfmon");
    let (_, eff) = caps_of(agent.pid());
    assert_eq!(eff & NET_RAW, 0);
    assert_eq!(agent.get("/health").json()["capture"], "ebpf");
    let dst = lab.primary("dst", Family::V4).unwrap();
    for attempt in 0..2 {
        // The second answer comes from the cached socket error.
        let r = agent.get(&format!(
            "/traceroute/{dst}?{}",
            client_query(0, 5, 200_000_000, "UDP", 1)
        ));
        let body = r.json();
        assert_eq!(
            (r.status, body["code"].as_str()),
            (500, Some("DENIED")),
            "attempt {attempt}: {body}"
        );
        assert!(
            body["message"].as_str().unwrap().contains("CAP_NET_RAW"),
            "{body}"
        );
    }
    let status = agent.stop();
    assert!(status.success(), "{status}\n{}", agent.log());
}
