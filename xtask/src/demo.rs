//! `cargo xtask demo`: the main job on a built-in lab.
//!
//! Brings up the `chain` topology (src — r1 — r2 — r3 (silent) — r4 — dst),
//! attaches the agent's kernel capture to src's interface, runs the classic
//! `traceroute` through the chain, and shows what the eBPF programs saw: each
//! probe leaving and each ICMP reply arriving, with kernel timestamps.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use traceroute_lab::{Family, Lab};

use crate::util::{agent_binary, is_root};
use crate::{build_release, setup};

pub fn run() -> Result<()> {
    setup::ensure()?;
    if !is_root() {
        bail!(
            "the demo creates network namespaces and loads eBPF programs: run as root (sudo -E cargo xtask demo)"
        );
    }
    build_release()?;
    let topology = traceroute_lab::named::chain();
    println!("demo: bringing up lab `chain`: src - r1 - r2 - r3 (silent) - r4 - dst");
    let lab = Lab::up(&topology).context("bringing up the lab")?;
    let dst = lab.primary("dst", Family::V4)?;
    let ifname = lab.ifname("src", "r1")?.to_string();

    let mut agent = lab.command("src", agent_binary().to_str().unwrap())?;
    agent
        .args(["capture", "--interface", &ifname, "--seconds", "8"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = agent.spawn().context("starting traceroute-agent capture")?;
    wait_for_ready(&mut child)?;

    println!("demo: traceroute -n -q 1 -w 1 {dst} (from src)\n");
    let out = lab.exec(
        "src",
        "traceroute",
        ["-n", "-q", "1", "-w", "1", &dst.to_string()],
    )?;
    print!("{}", String::from_utf8_lossy(&out.stdout));

    let _ = child.kill();
    let output = child.wait_with_output()?;
    println!(
        "\ndemo: what the kernel capture saw on src/{ifname} (kernel timestamps, CLOCK_MONOTONIC):"
    );
    let mut last_probe_ns = None;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let ts = v["timestamp_ns"].as_u64().unwrap_or(0);
        let kind = v["kind"].as_str().unwrap_or("?");
        let rtt = match (kind, last_probe_ns) {
            ("probe", _) => {
                last_probe_ns = Some(ts);
                String::new()
            }
            (_, Some(sent)) => format!(
                "{:8.3} ms after the last probe",
                ts.saturating_sub(sent) as f64 / 1e6
            ),
            _ => String::new(),
        };
        println!(
            "  {ts:>16}  {:<8} {kind:<16} {:<15} -> {:<15} ttl {:<3} {rtt}",
            v["direction"].as_str().unwrap_or("?"),
            v["src"].as_str().unwrap_or("?"),
            v["dst"].as_str().unwrap_or("?"),
            v["ttl"],
        );
    }
    drop(lab);
    println!("\ndemo: lab torn down");
    Ok(())
}

/// Waits until the agent logs that the capture is attached.
fn wait_for_ready(child: &mut std::process::Child) -> Result<()> {
    let stderr = child.stderr.take().context("agent stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("capture ready") {
                let _ = tx.send(());
            }
            if line.contains("ERROR") || line.starts_with("traceroute-agent:") {
                eprintln!("{line}");
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .context("the agent did not attach its capture within 20 s")
}
