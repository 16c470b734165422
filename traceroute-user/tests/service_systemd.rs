//! packaging/traceroute-agent.service: `systemd-analyze verify` accepts it,
//! `systemd-analyze security` rates it at most 3.0 ("OK"), and it grants
//! exactly the four capabilities the agent needs to an unprivileged user.
//! The unit is checked from a temp copy whose ExecStart points at the test
//! binary (verify wants the executable to exist); nothing is installed.

mod service_support;

use std::path::PathBuf;
use std::process::Command;

use service_support::{AGENT, TempDir};

fn packaging() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../packaging")
}

fn unit_text() -> String {
    std::fs::read_to_string(packaging().join("traceroute-agent.service")).unwrap()
}

fn analyze() -> Command {
    assert!(
        Command::new("systemd-analyze")
            .arg("--version")
            .output()
            .is_ok(),
        "systemd-analyze is missing: apt-get install -y systemd"
    );
    Command::new("systemd-analyze")
}

/// The unit with its paths pointing at this build; returns the unit path.
fn staged_unit(dir: &TempDir, binary: &str) -> PathBuf {
    let config = packaging().join("config.toml");
    let text = unit_text()
        .replace("/usr/local/bin/traceroute-agent", binary)
        .replace(
            "/etc/traceroute-agent/config.toml",
            config.to_str().unwrap(),
        );
    let path = dir.path("traceroute-agent.service");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    let dir = TempDir::new("unit");
    let unit = staged_unit(&dir, AGENT);
    let out = analyze()
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "verify failed: {stderr}");
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("traceroute-agent"))
        .collect();
    assert!(ours.is_empty(), "verify warnings: {ours:#?}");

    // verify does check: a missing executable is an error.
    let bad = staged_unit(&dir, "/nonexistent/traceroute-agent");
    let out = analyze()
        .args(["verify", "--man=no"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn unit_exposure_is_ok() {
    let dir = TempDir::new("unit");
    let unit = staged_unit(&dir, AGENT);
    let out = analyze()
        .args(["security", "--offline=yes", "--threshold=30", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_default();
    assert!(
        out.status.success(),
        "exposure above 3.0: {summary}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{summary}");
}

#[test]
fn unit_grants_exactly_the_needed_capabilities_to_a_system_user() {
    let text = unit_text();
    let value = |key: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::to_string)
            .collect()
    };
    let caps = "CAP_NET_RAW CAP_NET_ADMIN CAP_BPF CAP_PERFMON";
    assert_eq!(value("AmbientCapabilities"), [caps]);
    assert_eq!(value("CapabilityBoundingSet"), [caps]);
    assert_eq!(value("NoNewPrivileges"), ["yes"]);
    // Far above api.max_connections: idle clients cannot exhaust descriptors.
    let nofile: usize = value("LimitNOFILE")[0].parse().unwrap();
    assert!(
        nofile >= 16 * traceroute_agent::service::config::ApiConfig::default().max_connections,
        "LimitNOFILE={nofile}"
    );
    assert_eq!(value("ProtectSystem"), ["strict"]);
    assert_eq!(value("User"), ["traceroute-agent"]);
    assert_eq!(value("RuntimeDirectory"), ["traceroute-agent"]);
    assert_eq!(
        value("RestrictAddressFamilies"),
        ["AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_PACKET"]
    );
    for key in [
        "ProtectHome",
        "PrivateTmp",
        "ProtectKernelTunables",
        "LockPersonality",
        "MemoryDenyWriteExecute",
        "RestrictNamespaces",
    ] {
        assert_eq!(value(key), ["yes"], "{key}");
    }
    assert!(
        value("SystemCallFilter")
            .iter()
            .any(|f| f.split_whitespace().any(|s| s == "bpf")),
        "the bpf syscall must be allowed"
    );
    // The default socket lives in the RuntimeDirectory.
    assert!(
        traceroute_agent::service::config::DEFAULT_SOCKET.starts_with("/run/traceroute-agent/")
    );
    // ExecStart runs `serve` with the installed config.
    assert_eq!(
        value("ExecStart"),
        ["/usr/local/bin/traceroute-agent serve --config /etc/traceroute-agent/config.toml"]
    );
}
