//! `cargo xtask test`: what CI runs. Formatting, lints, the release build with
//! the eBPF programs, and every test (privileged ones included), ending with one
//! summary line.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use anyhow::{Context, Result, bail};

use crate::util::{cargo, is_root, root, run};
use crate::{build_release, setup};

pub fn run_all() -> Result<()> {
    setup::ensure()?;
    if !is_root() {
        bail!(
            "the tests create network namespaces and load eBPF programs: run as root (sudo -E cargo xtask test)"
        );
    }
    match traceroute_lab::cleanup_stale() {
        Ok(removed) if !removed.is_empty() => {
            println!("test: removed stale lab namespaces: {}", removed.join(" "));
        }
        Ok(_) => {}
        Err(e) => println!("test: could not clean up stale labs: {e}"),
    }

    println!("test: cargo fmt --check");
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo()
        .current_dir(root().join("traceroute-ebpf"))
        .args(["fmt", "--", "--check"]))?;

    println!("test: cargo clippy");
    run(cargo()
        .args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
        .env("TRACEROUTE_REQUIRE_EBPF", "1"))?;

    build_release()?;

    println!("test: cargo test --workspace");
    let summary = cargo_test()?;
    println!(
        "summary: {} passed, {} failed, {} skipped",
        summary.passed, summary.failed, summary.ignored
    );
    if summary.failed > 0 || !summary.ok {
        bail!("tests failed");
    }
    if summary.passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

#[derive(Default)]
struct Summary {
    passed: u64,
    failed: u64,
    ignored: u64,
    ok: bool,
}

/// Runs `cargo test`, echoing its output and adding up every "test result:" line.
fn cargo_test() -> Result<Summary> {
    let mut child = cargo()
        .args(["test", "--workspace", "--no-fail-fast"])
        .env("TRACEROUTE_REQUIRE_EBPF", "1")
        .stdout(Stdio::piped())
        .spawn()
        .context("starting cargo test")?;
    let stdout = child.stdout.take().expect("piped");
    let mut summary = Summary::default();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            summary.passed += count(rest, " passed");
            summary.failed += count(rest, " failed");
            summary.ignored += count(rest, " ignored");
        }
    }
    summary.ok = child.wait()?.success();
    Ok(summary)
}

/// The number before `label` in "ok. 3 passed; 0 failed; 1 ignored; ...".
fn count(result: &str, label: &str) -> u64 {
    result
        .split(';')
        .find_map(|part| {
            part.trim()
                .trim_start_matches("ok. ")
                .trim_start_matches("FAILED. ")
                .strip_suffix(label)?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn counts_cargo_test_result_lines() {
        let ok =
            "ok. 12 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.01s";
        assert_eq!(count(ok, " passed"), 12);
        assert_eq!(count(ok, " failed"), 0);
        assert_eq!(count(ok, " ignored"), 2);
        let bad = "FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out";
        assert_eq!(count(bad, " passed"), 3);
        assert_eq!(count(bad, " failed"), 1);
    }
}
