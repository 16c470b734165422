//! What a person at a terminal meets: hops printed as they settle and what
//! is known on Ctrl-C (tmux drives a real terminal), traceroute's markers and
//! tcptraceroute's [open]/[closed], a folded silent tail, colour only on a
//! terminal without NO_COLOR, the csv/markdown/ndjson formats, and the
//! familiar flags (-f, -c, -N, -w, -n, -e, and the refused -A and -I -p).
//! Needs root.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::agent::{AGENT, assert_valid};
use serde_json::Value;
use traceroute_lab::{Family, Lab};

/// The chain lab with a black hole at r2 for `dst` (r1 and r2 answer,
/// nothing after), `!H` for .200 and `!X` for .201 from r2.
fn lab() -> (Lab, String) {
    let lab = Lab::up(&traceroute_lab::named::chain()).unwrap();
    let dst = lab.primary("dst", Family::V4).unwrap().to_string();
    let prefix = dst.rsplit_once('.').unwrap().0.to_string();
    for (node, args) in [
        (
            "r2",
            vec!["route", "add", "unreachable", &format!("{prefix}.200/32")],
        ),
        (
            "r2",
            vec!["route", "add", "prohibit", &format!("{prefix}.201/32")],
        ),
    ] {
        let out = lab.exec(node, "ip", args).unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (lab, dst)
}

fn black_hole(lab: &Lab, dst: &str) {
    for rule in [
        "add table inet hole".to_string(),
        "add chain inet hole fw { type filter hook forward priority 0; }".to_string(),
        format!("add rule inet hole fw ip daddr {dst} drop"),
    ] {
        let out = lab.exec("r2", "nft", [&rule]).unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `traceroute-agent trace ARGS` in src, stdout a pipe.
fn trace(lab: &Lab, args: &[&str]) -> Output {
    let mut cmd = lab.command("src", AGENT).unwrap();
    cmd.arg("trace").args(args).env_remove("NO_COLOR");
    cmd.output().expect("run agent")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A tmux session running one command in a real terminal; killed on drop.
struct Terminal {
    name: String,
}

impl Terminal {
    fn start(tag: &str, command: &str, env: &[(&str, &str)]) -> Terminal {
        let name = format!("trl-{tag}-{}", std::process::id());
        let mut cmd = Command::new("tmux");
        cmd.args(["new-session", "-d", "-s", &name, "-x", "160", "-y", "50"]);
        for (k, v) in env {
            cmd.args(["-e", &format!("{k}={v}")]);
        }
        // The exit status stays on screen after the command.
        cmd.arg(format!("{command}; echo EXIT=$?; sleep 600"));
        let out = cmd.output().expect("tmux (Debian package tmux)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Terminal { name }
    }

    /// The screen, with colour escapes when `escapes`.
    fn screen(&self, escapes: bool) -> String {
        let mut cmd = Command::new("tmux");
        cmd.args(["capture-pane", "-p", "-t", &self.name]);
        if escapes {
            cmd.arg("-e");
        }
        String::from_utf8_lossy(&cmd.output().unwrap().stdout).into_owned()
    }

    fn wait_for(&self, text: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen(false);
            if screen.contains(text) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "no {text:?} on screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn keys(&self, keys: &str) {
        Command::new("tmux")
            .args(["send-keys", "-t", &self.name, keys])
            .status()
            .unwrap();
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .status();
    }
}

fn in_src(lab: &Lab, args: &str) -> String {
    format!(
        "ip netns exec {} {AGENT} trace {args}",
        lab.namespace("src").unwrap()
    )
}

#[test]
fn hops_appear_as_they_settle_and_ctrl_c_prints_what_is_known() {
    let (lab, dst) = lab();
    black_hole(&lab, &dst);
    let r1 = lab.addr("r1", "src", Family::V4).unwrap().to_string();
    let r2 = lab.addr("r2", "r1", Family::V4).unwrap().to_string();
    // Silent hops wait 20 s: the trace is far from over when r2 shows.
    let term = Terminal::start(
        "live",
        &in_src(&lab, &format!("{dst} -w 20 -m 8 -q 2")),
        &[],
    );
    let screen = term.wait_for(&r2, Duration::from_secs(10));
    assert!(screen.contains(&r1), "{screen}");
    assert!(
        !screen.contains("EXIT="),
        "the trace ended already:\n{screen}"
    );
    assert!(!screen.contains("destination"), "{screen}");
    term.keys("C-c");
    let screen = term.wait_for("EXIT=", Duration::from_secs(10));
    assert!(
        screen.contains("interrupted: trace stopped by Ctrl-C; hops 3-8 were still waiting"),
        "{screen}"
    );
    assert!(screen.contains("EXIT=130"), "{screen}");
    // Each row once.
    assert_eq!(screen.matches(&r2).count(), 1, "{screen}");

    // JSON: the record so far, marked incomplete, unsettled hops cut short.
    let out = std::env::temp_dir().join(format!("trl-partial-{}.json", std::process::id()));
    let command = format!(
        "{} > {}",
        in_src(&lab, &format!("{dst} -w 20 -m 8 -q 1 --format json")),
        out.display()
    );
    let term = Terminal::start("json", &command, &[]);
    std::thread::sleep(Duration::from_secs(2));
    term.keys("C-c");
    term.wait_for("EXIT=130", Duration::from_secs(10));
    let record: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let _ = std::fs::remove_file(&out);
    assert_valid(&record);
    assert_eq!(record["incomplete"], true);
    let hops = record["traceroute"]["runs"][0]["hops"].as_array().unwrap();
    assert_eq!(hops[0]["ip_address"], r1.as_str());
    assert_eq!(hops[1]["ip_address"], r2.as_str());
    for hop in &hops[2..] {
        assert_eq!(hop["no_answer"], "cut_short", "{hop}");
    }
}

#[test]
fn colour_only_on_a_terminal_without_no_color_and_a_silent_tail_folds() {
    let (lab, dst) = lab();
    black_hole(&lab, &dst);
    let args = format!("{dst} -w 0.3 -m 8 -q 1");
    let term = Terminal::start("colour", &in_src(&lab, &args), &[]);
    term.wait_for("EXIT=", Duration::from_secs(20));
    let screen = term.screen(true);
    assert!(
        screen.contains("\x1b["),
        "no colour on a terminal:\n{screen}"
    );
    let plain = term.screen(false);
    assert!(plain.contains("  3-8  ???"), "{plain}");
    assert!(
        plain.contains("destination NOT reached: nothing answered after hop 2 (probed to TTL 8)"),
        "{plain}"
    );
    let term = Terminal::start("nocolour", &in_src(&lab, &args), &[("NO_COLOR", "1")]);
    term.wait_for("EXIT=", Duration::from_secs(20));
    assert!(
        !term.screen(true).contains("\x1b[3"),
        "{}",
        term.screen(true)
    );
    // A pipe gets no colour, the same folded table.
    let table = stdout(&trace(
        &lab,
        &[&dst, "-w", "0.3", "-m", "8", "-q", "1", "--format", "table"],
    ));
    assert!(
        !table.contains('\x1b') && table.contains("  3-8  ???"),
        "{table}"
    );
}

#[test]
fn markers_say_why_a_trace_stopped_and_whether_the_port_is_open() {
    let (lab, dst) = lab();
    let prefix = dst.rsplit_once('.').unwrap().0;
    let r2 = lab.addr("r2", "r1", Family::V4).unwrap().to_string();
    let q1 = ["-q", "1", "--format", "table"];
    // -m 2: one probe each reaches r2, whose unreachables have their own
    // rate limit (5, then 1/s per source) apart from icmp_ratelimit.
    for (target, marker, meaning) in [
        (format!("{prefix}.200"), "!H", "host unreachable"),
        (
            format!("{prefix}.201"),
            "!X",
            "communication administratively prohibited",
        ),
    ] {
        let table = stdout(&trace(
            &lab,
            &[&[target.as_str(), "-m", "2"][..], &q1].concat(),
        ));
        assert!(table.contains(&format!("{r2} {marker}")), "{table}");
        assert!(
            table.contains(&format!(
                "destination NOT reached: stopped at hop 2 by {r2} {marker} ({meaning})"
            )),
            "{table}"
        );
    }
    // The lab's TCP service listens on 80; 443 is closed.
    for (port, word, answer) in [("80", "[open]", "syn_ack"), ("443", "[closed]", "rst")] {
        let table = stdout(&trace(
            &lab,
            &[&[dst.as_str(), "-T", "-p", port][..], &q1].concat(),
        ));
        assert!(table.contains(&format!("{dst} {word}")), "{table}");
        assert!(
            table.contains(&format!("destination reached at hop 5 {word}")),
            "{table}"
        );
        let json = stdout(&trace(
            &lab,
            &[&dst, "-T", "-p", port, "-q", "1", "--format", "json"],
        ));
        let record: Value = serde_json::from_str(&json).unwrap();
        assert_valid(&record);
        let hops = record["traceroute"]["runs"][0]["hops"].as_array().unwrap();
        assert_eq!(hops.last().unwrap()["tcp_answer"], answer);
    }
}

#[test]
fn csv_markdown_and_ndjson_carry_every_hop() {
    let (lab, dst) = lab();
    let r1 = lab.addr("r1", "src", Family::V4).unwrap().to_string();
    let csv = stdout(&trace(&lab, &[&dst, "-q", "2", "--format", "csv"]));
    let mut lines = csv.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("run,flow_id,ttl,ip_address,")
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 10, "{csv}");
    assert_eq!(rows[0][2], "1");
    assert_eq!(rows[0][3], r1);
    assert!(rows.iter().any(|r| r[0] == "1" && r[3] == dst), "{csv}");

    let md = stdout(&trace(&lab, &[&dst, "-q", "1", "--format", "markdown"]));
    assert!(md.contains("| TTL | Host | Loss% |"), "{md}");
    assert!(md.contains(&format!("| 1 | {r1} | 0.0 | 1 |")), "{md}");
    assert!(md.contains("destination reached at hop 5"), "{md}");

    let nd = stdout(&trace(&lab, &[&dst, "-q", "2", "--format", "ndjson"]));
    let hops: Vec<Value> = nd
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(hops.len(), 10, "{nd}");
    assert_eq!(hops[0]["ttl"], 1);
    assert_eq!(hops[0]["ip_address"], r1.as_str());
    assert_eq!(hops[5]["run"], 1);
    assert!(
        hops.iter()
            .all(|h| h["test_run_id"] == hops[0]["test_run_id"])
    );
}

#[test]
fn familiar_flags_work_and_meaningless_ones_are_refused() {
    let (lab, dst) = lab();
    let record = |args: &[&str]| -> Value {
        let out = stdout(&trace(&lab, &[args, &["--format", "json"]].concat()));
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_valid(&v);
        v
    };
    // -f 3: the first hop reported is TTL 3.
    let v = record(&[&dst, "-f", "3", "-q", "1"]);
    assert_eq!(v["traceroute"]["runs"][0]["hops"][0]["ttl"], 3);
    // -c 12: more runs than --queries allows.
    let v = record(&[&dst, "-c", "12", "-N", "4", "-n"]);
    assert_eq!(v["traceroute"]["runs"].as_array().unwrap().len(), 12);
    assert!(
        v["traceroute"]["runs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["destination_reached"] == true)
    );
    // -w MAX,HERE,NEAR.
    let v = record(&[&dst, "-w", "2,3,10", "-q", "1"]);
    assert_eq!(v["traceroute"]["runs"][0]["destination_reached"], true);
    for (args, said) in [
        (
            vec![dst.as_str(), "-I", "-p", "80"],
            "--port has no meaning for ICMP",
        ),
        (
            vec![dst.as_str(), "-A"],
            "-A (AS path lookups) is not supported",
        ),
        (vec![dst.as_str(), "-w", "1,x"], "HERE must be a number"),
        (
            vec![dst.as_str(), "-f", "9", "-m", "5"],
            "first_ttl must be 1..=5",
        ),
        (vec![dst.as_str(), "-c", "101"], "101"),
        (
            vec![dst.as_str(), "-n", "--reverse-dns"],
            "cannot be used with",
        ),
    ] {
        let out = trace(&lab, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(said), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}
