//! Shell completions and the man page come from the clap definitions, so
//! they cannot drift from the flags; and `--log-format json` (or the
//! config's `log_format`) makes every log line one JSON object. The first
//! two need no privilege; the last runs the service in a lab (root).

mod common;
mod service_support;

use std::process::{Command, Stdio};

use common::agent::AGENT;
use serde_json::Value;
use service_support::Agent;

fn agent_stdout(args: &[&str]) -> String {
    let out = Command::new(AGENT).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn completions_name_the_flags_and_bash_accepts_them() {
    let bash = agent_stdout(&["completions", "bash"]);
    for flag in [
        "--tcp-method",
        "--pmtu",
        "--multipath",
        "--log-format",
        "--config",
    ] {
        assert!(bash.contains(flag), "bash completion lacks {flag}");
    }
    let mut check = Command::new("bash")
        .arg("-n")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut check.stdin.take().unwrap(), bash.as_bytes()).unwrap();
    assert!(
        check.wait().unwrap().success(),
        "bash -n refuses the script"
    );
    for shell in ["zsh", "fish"] {
        assert!(
            agent_stdout(&["completions", shell]).contains("tcp-method"),
            "{shell}"
        );
    }
}

#[test]
fn the_man_page_renders() {
    let page = agent_stdout(&["man"]);
    assert!(page.contains(".TH traceroute-agent 1"), "{page}");
    let mut groff = Command::new("groff")
        .args(["-man", "-Tutf8"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("groff (Debian groff-base)");
    std::io::Write::write_all(&mut groff.stdin.take().unwrap(), page.as_bytes()).unwrap();
    let out = groff.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["traceroute-agent", "trace", "serve", "completions"] {
        assert!(text.contains(word), "man page lacks {word}: {text}");
    }
}

fn assert_json_lines(log: &str, what: &str) {
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "{what}: no log lines");
    for line in lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{what}: {e}: {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{what}: {line}"
        );
    }
}

#[test]
fn log_lines_are_json_objects_when_asked_by_flag_or_config() {
    let lab = traceroute_lab::Lab::up(&traceroute_lab::named::chain()).unwrap();
    let mut agent = Agent::start_with(&lab, "src", None, &["--log-format", "json"]);
    agent.stop();
    assert_json_lines(&agent.log(), "--log-format json");
    let mut agent = Agent::start_with(&lab, "src", Some("log_format = \"json\"\n"), &[]);
    agent.stop();
    let log = agent.log();
    assert_json_lines(&log, "log_format in the config");
    assert!(log.contains("\"message\""), "{log}");
}

#[test]
fn a_config_error_is_one_log_record() {
    let dir = service_support::TempDir::new("badconfig");
    let config = dir.path("bad.toml");
    // toml reports this with a multi-line snippet.
    std::fs::write(&config, "namespace = \"a\"\n[[targets]]\nhost = 5\n").unwrap();
    for (format, json) in [("json", true), ("text", false)] {
        let out = std::process::Command::new(common::agent::AGENT)
            .args(["--log-format", format, "serve", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{format}: {stderr}");
        assert!(lines[0].contains("host"), "{stderr}");
        if json {
            let v: serde_json::Value = serde_json::from_str(lines[0]).expect("a JSON record");
            assert_eq!(v["level"], "ERROR", "{v}");
        }
    }
    // --check-config: the same verdict without starting, exit 2 and one line.
    let out = std::process::Command::new(common::agent::AGENT)
        .args(["serve", "--check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("traceroute-agent: config not valid:") && stderr.lines().count() == 1,
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    let good = dir.path("good.toml");
    std::fs::write(
        &good,
        "namespace = \"a\"\n[[targets]]\nhost = \"198.18.0.1\"\ninterval = \"10s\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(common::agent::AGENT)
        .args([
            "serve",
            "--check-config",
            "--socket",
            "/nonexistent/dir/a.sock",
            "--config",
        ])
        .arg(&good)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("config OK:") && stdout.contains("1 target(s)"),
        "{stdout}"
    );
    // Nothing was started: the socket's directory was never needed.
    assert!(!std::path::Path::new("/nonexistent/dir").exists());
}

#[test]
fn a_busy_service_logs_attachments_once_and_traces_only_at_debug() {
    let lab = traceroute_lab::Lab::up(&traceroute_lab::named::chain()).unwrap();
    let dst = lab
        .primary("dst", traceroute_lab::Family::V4)
        .unwrap()
        .to_string();
    let config = format!(
        "router_icmp_burst = 10000\nrouter_icmp_per_second = 10000\n\
         [[targets]]\nhost = \"{dst}\"\nprotocol = \"udp\"\ninterval = \"200ms\"\n\
         queries = 1\nmax_ttl = 8\ntimeout = \"300ms\"\ncount = 8\n"
    );
    let mut agent = Agent::start_with(&lab, "src", Some(&config), &["--log-format", "json"]);
    assert!(service_support::eventually(
        std::time::Duration::from_secs(20),
        || agent.metric("traceroute_agent_runs_total", "origin=\"schedule\"") >= 8.0
    ));
    // An API trace too.
    assert_eq!(
        agent.get(&format!("/traceroute/{dst}?max_ttl=8")).status,
        200
    );
    agent.stop();
    let log = agent.log();
    let messages: Vec<String> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| v["message"].as_str().unwrap_or_default().to_string())
        .collect();
    let attached = messages.iter().filter(|m| *m == "capture attached").count();
    // src has two interfaces (lo, to-r1): attached once each at start.
    assert!(
        attached <= 2,
        "{attached} attach lines for 9 traces:\n{log}"
    );
    assert!(
        !messages.iter().any(|m| m == "traceroute"),
        "per-trace lines at info:\n{log}"
    );
    assert!(
        messages.len() < 15,
        "{} lines for 9 traces:\n{log}",
        messages.len()
    );
}
