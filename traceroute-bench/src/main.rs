//! The benchmark harness: the agent side by side with its peers, in one run,
//! reported as ratios (docs/ARCHITECTURE.md, "Benchmarks"). Nothing here
//! asserts anything about speed; the bench fails only when the agent itself
//! fails. Its own crate, so that the developer tool (xtask) does not carry
//! the plotting and the measuring: `cargo xtask bench ARGS` installs what is
//! missing, builds the release agent and runs this with ARGS.
//!
//! 1. One trace through a path with a silent hop, in two labs with the
//!    kernel's default ICMP rate limits: `chain_limited` (src — r1 — r2 —
//!    r3 (silent) — r4 — dst) and `delay_silent` (src — r1 —[20 ms]— r2
//!    (silent) — r3 — dst). The agent (UDP, TCP, ICMP; as a CLI process and
//!    through the API of a running service) and classic traceroute,
//!    tcptraceroute, mtr and scamper, each at its own defaults and at
//!    matched settings, each timed from outside after a pause that refills
//!    the routers' ICMP budgets, with the probes it sent (counted on src's
//!    interface) and the hops it found checked against the lab's ground
//!    truth. The report opens with the targets: the agent's median
//!    over traceroute's at their defaults, and whether each found all hops.
//! 2. What the capture costs other traffic: iperf3 TCP throughput across a
//!    veth, alternating runs without and with the agent's programs attached.
//! 3. Load: N traces at once through one agent service in the `fanout` lab
//!    (default ICMP rate limits), beside scamper tracing the same list.
//!
//! 4. Multipath: mapping the nested diamond with the agent's MDA beside
//!    scamper tracelb and dublin-traceroute (time, probes, routers found,
//!    destination found).
//!
//! 5. Routers of every kind (`routers.rs`): slow control planes, unlimited
//!    routers, fan-out behind shared routers and MDA at its defaults, the
//!    agent (which learns each router) beside its peers at their defaults,
//!    after a refill and back to back, with the targets.
//!
//! 6. Timestamp accuracy: RTTs through a link with a known delay, per probe
//!    against the wire (tcpdump), idle and with every core busy: the agent's
//!    eBPF and socket stamps, ping and traceroute.
//! 7. The service at rest with 0, 100 and 10 000 scheduled targets.
//!
//! A full run writes `bench/results/<date>.{md,json}` and its SVG plots in
//! `bench/results/<date>/` (committed: the README quotes it); `--quick`
//! writes the same to `target/bench/quick/`. Both also go to
//! `target/bench/report.{json,md}`.
//! Every probe stays inside lab namespaces (198.18.0.0/15).

mod accuracy;
mod cli;
mod clickhouse;
mod counter;
mod http;
mod idle;
mod load;
mod machine;
mod multipath;
mod peers;
mod plots;
mod process;
mod report;
mod results;
mod routers;
mod throughput;
mod trace;
mod truth;
mod util;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;

use crate::util::{is_root, root};

/// Options of `cargo xtask bench`.
#[derive(Parser)]
#[command(
    name = "cargo xtask bench",
    bin_name = "cargo xtask bench",
    about = "The agent side by side with peer tools in a lab; writes target/bench/report.{json,md}"
)]
pub struct Options {
    /// Timed runs per tool in the trace benchmark (median, min and max are reported).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub runs: u32,
    /// Throughput alternations: each is one iperf3 run without and one with the capture.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub alternations: u32,
    /// Length of each iperf3 transfer, in seconds.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=60))]
    pub seconds: u32,
    /// Load benchmark: numbers of targets traced at once (at most 1024).
    #[arg(long, value_delimiter = ',', default_value = "64,256,1024",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub load: Vec<u16>,
    /// Repetitions of each load size (the median one is reported, with min-max).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub load_runs: u32,
    /// Skip the load benchmark.
    #[arg(long, conflicts_with = "only_load")]
    pub no_load: bool,
    /// Run only the load benchmark; its report goes to target/bench/load.{md,json}.
    #[arg(long, conflicts_with = "only_multipath")]
    pub only_load: bool,
    /// Skip the multipath benchmark.
    #[arg(long, conflicts_with = "only_multipath")]
    pub no_multipath: bool,
    /// Run only the multipath benchmark; its report goes to target/bench/multipath.{md,json}.
    #[arg(long, conflicts_with = "only_routers")]
    pub only_multipath: bool,
    /// Run only the timestamp accuracy benchmark; its report goes to
    /// target/bench/accuracy.{md,json}.
    #[arg(long, conflicts_with_all = ["only_load", "only_multipath", "only_routers"])]
    pub only_accuracy: bool,
    /// Run only the command-line benchmark (through the agent, in-process,
    /// streamed); its report goes to target/bench/cli.{md,json}.
    #[arg(long, conflicts_with_all = ["only_load", "only_multipath", "only_routers", "only_accuracy"])]
    pub only_cli: bool,
    /// Run only the fleet benchmark (records into ClickHouse, an outage and
    /// its drain); its report goes to target/bench/clickhouse.{md,json}.
    #[arg(long, conflicts_with_all = ["only_load", "only_multipath", "only_routers", "only_accuracy", "only_cli"])]
    pub only_clickhouse: bool,
    /// Skip the routers-of-every-kind benchmark.
    #[arg(long, conflicts_with = "only_routers")]
    pub no_routers: bool,
    /// Run only the routers-of-every-kind benchmark (with --quick: one run
    /// each); its report goes to target/bench/routers.{md,json}.
    #[arg(long, conflicts_with = "only_load")]
    pub only_routers: bool,
    /// Runs per tool and condition in the routers-of-every-kind benchmark.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub routers_runs: u32,
    /// Probes per second of the agent service in the load benchmark, and of
    /// scamper's matched run.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub load_pps: u32,
    /// Probes per tool and condition in the timestamp accuracy benchmark.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(3..=200))]
    pub samples: u32,
    /// Measuring window of the service at rest, per number of targets, in seconds.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub idle_seconds: u64,
    /// A short smoke run of everything (1 run per tool, few samples, small
    /// load); written to target/bench/quick/, not to bench/results/.
    #[arg(long, conflicts_with_all = ["only_load", "only_multipath"])]
    pub quick: bool,
    /// Draw the pictures of a report again from its raw figures
    /// (bench/results/DATE.json) and do nothing else.
    #[arg(long, value_name = "REPORT_JSON")]
    pub replot: Option<PathBuf>,
}

impl Options {
    /// The settings of `--quick`.
    fn quickened(mut self) -> Options {
        if self.quick {
            self.runs = 1;
            self.alternations = 2;
            self.seconds = 1;
            self.load = vec![16, 64];
            self.load_runs = 1;
            self.samples = 5;
            self.idle_seconds = 3;
            self.routers_runs = 1;
        }
        self
    }
}

fn main() -> ExitCode {
    // A persistent lab re-executes this binary as its keeper process.
    traceroute_lab::keeper::maybe_run();
    match run(Options::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(options: Options) -> Result<()> {
    if let Some(json) = &options.replot {
        return results::replot(json);
    }
    let options = options.quickened();
    if !is_root() {
        bail!(
            "the bench creates network namespaces and loads eBPF programs: run as root (sudo -E cargo xtask bench)"
        );
    }
    if !util::agent_binary().is_file() {
        bail!(
            "no release agent at {}: run the bench by `cargo xtask bench`, which builds it",
            util::agent_binary().display()
        );
    }
    let build = pin_agent()?;
    let unavailable = peers::ensure();

    if options.only_multipath {
        let mp = multipath::run(options.runs, &unavailable)?;
        return write_one(
            "multipath",
            &build,
            multipath::section(&mp),
            multipath::json(&mp),
        );
    }
    if options.only_routers {
        let routers = routers::run(
            routers::Scale::new(options.routers_runs, options.quick),
            &unavailable,
        )?;
        return write_one(
            "routers",
            &build,
            routers::section(&routers),
            routers::json(&routers),
        );
    }
    if options.only_load {
        let sizes: Vec<usize> = options.load.iter().map(|&n| usize::from(n)).collect();
        let load = load::run(&sizes, options.load_pps, options.load_runs, &unavailable)?;
        return write_one(
            "load",
            &build,
            report::load_section(&load),
            report::load_json(&load),
        );
    }
    if options.only_clickhouse {
        let ch = clickhouse::run()?;
        return write_one(
            "clickhouse",
            &build,
            clickhouse::section(&ch),
            clickhouse::json(&ch),
        );
    }
    if options.only_cli {
        let cli = cli::run()?;
        return write_one("cli", &build, cli::section(&cli), cli::json(&cli));
    }
    if options.only_accuracy {
        let accuracy = accuracy::run(options.samples, &unavailable)?;
        return write_one(
            "accuracy",
            &build,
            accuracy::section(&accuracy),
            accuracy::json(&accuracy),
        );
    }
    let machine = machine::Machine::read(agent_version());
    let trace = trace::run(options.runs, &unavailable)?;
    let accuracy = accuracy::run(options.samples, &unavailable)?;
    let throughput = throughput::run(options.alternations, options.seconds, &unavailable)?;
    let idle = idle::run(Duration::from_secs(options.idle_seconds))?;
    let load = if options.no_load {
        None
    } else {
        let sizes: Vec<usize> = options.load.iter().map(|&n| usize::from(n)).collect();
        Some(load::run(
            &sizes,
            options.load_pps,
            options.load_runs,
            &unavailable,
        )?)
    };
    let multipath = if options.no_multipath {
        None
    } else {
        Some(multipath::run(options.runs, &unavailable)?)
    };
    let routers = if options.no_routers {
        None
    } else {
        Some(routers::run(
            routers::Scale::new(options.routers_runs, options.quick),
            &unavailable,
        )?)
    };
    let date = results::today();
    let headline = results::headline(&results::Headline {
        trace: &trace,
        accuracy: &accuracy,
        throughput_ratio: throughput.ratio(),
        ns_per_packet: throughput.median_ns("capture_ingress"),
        idle: &idle,
        load: load.as_ref(),
        multipath: multipath.as_ref(),
        routers: routers.as_ref(),
    });
    let report = report::Report {
        build,
        trace,
        throughput,
        load,
    };

    let command = if options.quick {
        "cargo xtask bench --quick".to_string()
    } else {
        format!(
            "cargo xtask bench --runs {} --alternations {} --seconds {} --load-runs {} --samples {} --idle-seconds {} --routers-runs {}",
            options.runs,
            options.alternations,
            options.seconds,
            options.load_runs,
            options.samples,
            options.idle_seconds,
            options.routers_runs
        )
    };
    let mut markdown = format!(
        "# traceroute-agent bench, {date}\n\nReproduce with `sudo -E {command}` (as root). {}\n{}\n",
        machine.markdown(),
        headline
    );
    markdown += &report::markdown(&report);
    let mut json = report::json(&report);
    json["date"] = serde_json::json!(date);
    json["command"] = serde_json::json!(command);
    json["machine"] = machine.json();
    json["accuracy"] = accuracy::json(&accuracy);
    json["idle_service"] = idle::json(&idle);
    markdown += "\n";
    markdown += &accuracy::section(&accuracy);
    markdown += "\n";
    markdown += &idle::section(&idle);
    if let Some(mp) = &multipath {
        markdown += "\n";
        markdown += &multipath::section(mp);
        json["multipath"] = multipath::json(mp);
    }
    if let Some(r) = &routers {
        markdown += "\n";
        markdown += &routers::section(r);
        json["routers"] = routers::json(r);
    }
    println!("\n{markdown}");
    let stem = if options.quick {
        target_dir().join("bench").join("quick").join(&date)
    } else {
        results::stem(&root(), &date)
    };
    results::write(&stem, &markdown, &json)?;
    println!("bench: report written to {}.{{md,json}}", stem.display());
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = serde_json::to_string_pretty(&json)?;
    std::fs::write(dir.join("report.json"), json + "\n").context("writing report.json")?;
    std::fs::write(dir.join("report.md"), markdown).context("writing report.md")?;
    println!(
        "bench: report written to {}/report.{{json,md}}",
        dir.display()
    );
    Ok(())
}

/// Prints one benchmark's section and writes it with its raw figures to
/// target/bench/NAME.{md,json}.
fn write_one(name: &str, build: &str, section: String, json: serde_json::Value) -> Result<()> {
    let markdown = format!("Agent: {build}\n\n{section}");
    println!("\n{markdown}");
    let dir = target_dir().join("bench");
    let json = serde_json::to_string_pretty(&json)?;
    std::fs::write(dir.join(format!("{name}.json")), json + "\n")
        .with_context(|| format!("writing {name}.json"))?;
    std::fs::write(dir.join(format!("{name}.md")), markdown)
        .with_context(|| format!("writing {name}.md"))?;
    println!(
        "bench: {name} report written to {}/{name}.{{json,md}}",
        dir.display()
    );
    Ok(())
}

/// `traceroute-agent --version` of the binary under test.
fn agent_version() -> String {
    std::process::Command::new(agent_binary())
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

/// A Linux router answers one peer a burst of 6 ICMP errors, then one per
/// second (`net.ipv4.icmp_ratelimit`): a pause this long before each timed
/// run gives every tool the same full budget at every router.
pub const REFILL: Duration = Duration::from_secs(6);

static AGENT: OnceLock<PathBuf> = OnceLock::new();

/// The agent binary the bench runs: the copy [`pin_agent`] made, so a
/// rebuild in the working tree while the bench runs changes nothing.
pub fn agent_binary() -> PathBuf {
    AGENT.get().cloned().unwrap_or_else(util::agent_binary)
}

/// Copies the fresh release build to `target/bench/` for the whole bench
/// and says what it was built from: the commit, and the files that
/// differed from it.
fn pin_agent() -> Result<String> {
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // Not called `traceroute-agent`: a `pkill -f traceroute-agent` by
    // someone working in the tree must not stop the bench's service.
    let pinned = dir.join("agent-under-test");
    let _ = std::fs::remove_file(&pinned);
    std::fs::copy(util::agent_binary(), &pinned).context("copying the agent binary")?;
    let _ = AGENT.set(pinned);
    let git = |args: &[&str]| -> String {
        std::process::Command::new("git")
            .args(args)
            .current_dir(root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            // Not trim(): porcelain lines start with a space.
            .map(|o| String::from_utf8_lossy(&o.stdout).trim_end().to_string())
            .unwrap_or_default()
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]);
    let changed = changed_paths(&git(&["status", "--porcelain", "--untracked-files=no"]));
    Ok(if changed.is_empty() {
        format!("commit {commit}")
    } else {
        format!(
            "commit {commit} with uncommitted changes to {}",
            changed.join(", ")
        )
    })
}

/// Paths of `git status --porcelain` lines.
fn changed_paths(porcelain: &str) -> Vec<String> {
    porcelain
        .lines()
        .filter_map(|l| l.get(3..))
        .map(|p| p.rsplit(" -> ").next().unwrap_or(p).to_string())
        .collect()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// Median of a non-empty sample (mean of the middle two for an even count).
fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// Median, min and max of a sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

fn spread(values: &[f64]) -> Option<Spread> {
    Some(Spread {
        median: median(values)?,
        min: values.iter().copied().reduce(f64::min)?,
        max: values.iter().copied().reduce(f64::max)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn reads_changed_paths() {
        let porcelain =
            " M traceroute-user/src/trace/prober.rs\nM  xtask/src/bench.rs\nR  a.rs -> b.rs\n";
        assert_eq!(
            changed_paths(porcelain),
            [
                "traceroute-user/src/trace/prober.rs",
                "xtask/src/bench.rs",
                "b.rs"
            ]
        );
        assert!(changed_paths("").is_empty());
    }

    #[test]
    fn spreads() {
        assert_eq!(spread(&[]), None);
        let s = spread(&[4.0, 1.0, 3.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (3.0, 1.0, 4.0));
    }
}
