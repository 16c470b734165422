//! `cargo xtask demo`: the main job on a built-in lab.
//!
//! Brings up the `chain` topology (src — r1 — r2 — r3 (silent) — r4 — dst) in
//! network namespaces, and runs `traceroute-agent trace` from src to dst: a TCP
//! trace as a table, a UDP trace as the NetworkPath JSON record, and an ICMP
//! trace over IPv6. The lab is torn down at the end (also on failure).

use std::process::Command;

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
    println!("demo: bringing up lab `chain`: src - r1 - r2 - r3 (silent) - r4 - dst");
    let lab = Lab::up(&traceroute_lab::named::chain()).context("bringing up the lab")?;
    let dst4 = lab.primary("dst", Family::V4)?.to_string();
    let dst6 = lab.primary("dst", Family::V6)?.to_string();

    section(&format!("TCP SYN trace to {dst4}:80, as a table"));
    agent(
        &lab,
        &["trace", &dst4, "-T", "-p", "80", "--format", "table"],
    )?;

    section(&format!(
        "UDP trace to {dst4}, as the NetworkPath JSON record"
    ));
    let out = agent(&lab, &["trace", &dst4, "-U", "--format", "json", "-q", "1"])?;
    let record: serde_json::Value =
        serde_json::from_slice(&out).context("the agent printed no JSON record")?;
    println!("{}", serde_json::to_string_pretty(&record)?);

    section(&format!("ICMP echo trace to {dst6} over IPv6"));
    agent(&lab, &["trace", &dst6, "-I", "--format", "table"])?;

    drop(lab);
    println!("\ndemo: lab torn down");
    Ok(())
}

fn section(title: &str) {
    println!("\n=== {title} ===\n");
}

/// Runs the agent in the lab's `src` namespace; prints its table output.
fn agent(lab: &Lab, args: &[&str]) -> Result<Vec<u8>> {
    let mut cmd: Command = lab.command("src", agent_binary().to_str().context("agent path")?)?;
    let out = cmd
        .args(args)
        .output()
        .context("running traceroute-agent")?;
    if !out.status.success() {
        bail!(
            "traceroute-agent {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if args.contains(&"table") {
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
    Ok(out.stdout)
}
