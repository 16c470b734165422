//! Developer front door: `cargo xtask <command>`.
//!
//! Every command first runs the setup check (installing only what is missing),
//! so a fresh machine needs nothing but this repository and cargo.

mod demo;
mod install;
mod package;
mod setup;
mod test;
mod util;

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};

use util::{agent_binary, cargo, is_root, run};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Developer commands for traceroute-agent"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the eBPF toolchain and lab tools that are missing (idempotent).
    Setup,
    /// Build the agent with its eBPF programs (release).
    Build,
    /// Build, then run the agent with the privileges it needs: `cargo xtask run -- ARGS`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Everything CI checks: fmt, clippy, build, all tests including privileged ones.
    Test,
    /// Bring up a lab and show the agent at work in it.
    Demo,
    /// The agent side by side with peer tools in a lab; writes target/bench/report.{json,md}.
    /// Installs what is missing, builds the release agent, then runs the
    /// harness (the traceroute-bench crate) with ARGS: `cargo xtask bench --help`.
    #[command(disable_help_flag = true)]
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Install the agent as a systemd service: binary, unit, sample config, user.
    Install(install::InstallArgs),
    /// Build a Debian package (.deb): binary, unit, config, sysusers, logrotate, man page, completions.
    Package(package::PackageArgs),
    /// Named lab topologies for manual exploration.
    Lab {
        #[command(subcommand)]
        action: LabAction,
    },
}

#[derive(Subcommand)]
enum LabAction {
    /// Start a named topology in the background (namespaces trl-NAME-<node>).
    Up { name: String },
    /// Tear a running lab down.
    Down { name: String },
    /// List running labs, or the topologies that can be started.
    List,
}

fn main() -> ExitCode {
    // A persistent lab re-executes this binary as its keeper process.
    traceroute_lab::keeper::maybe_run();
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Setup => setup::ensure(),
        Cmd::Build => {
            setup::ensure()?;
            build_release()
        }
        Cmd::Run { args } => {
            setup::ensure()?;
            build_release()?;
            let mut cmd = if is_root() {
                Command::new(agent_binary())
            } else {
                // Raw sockets and eBPF need privileges; sudo keeps it to this process.
                let mut c = Command::new("sudo");
                c.arg("--preserve-env=RUST_LOG").arg(agent_binary());
                c
            };
            run(cmd.args(args))
        }
        Cmd::Test => test::run_all(),
        Cmd::Demo => demo::run(),
        Cmd::Install(args) => install::run_install(args),
        Cmd::Package(args) => package::run_package(args).map(|_| ()),
        Cmd::Bench { args } => bench(&args),
        Cmd::Lab { action } => lab(action),
    }
}

/// The benchmark harness, with what it measures installed and built; only
/// redrawing a report's pictures (`--replot`) or asking for help needs
/// neither.
fn bench(args: &[String]) -> Result<()> {
    let only_reads = args
        .iter()
        .any(|a| matches!(a.as_str(), "--help" | "-h") || a.starts_with("--replot"));
    if !only_reads {
        setup::ensure()?;
        build_release()?;
    }
    run(cargo()
        .args(["run", "--quiet", "-p", "traceroute-bench", "--"])
        .args(args))
}

/// Release build of the agent; the eBPF object must be embedded.
pub fn build_release() -> Result<()> {
    println!("build: cargo build --release -p traceroute-agent");
    run(cargo()
        .args(["build", "--release", "-p", "traceroute-agent"])
        .env("TRACEROUTE_REQUIRE_EBPF", "1"))
}

/// `bin` when given, else the release binary, built first (with what the
/// build needs installed); an error when the file is not there.
pub fn release_binary(bin: Option<PathBuf>) -> Result<PathBuf> {
    let binary = match bin {
        Some(b) => b,
        None => {
            setup::ensure()?;
            build_release()?;
            agent_binary()
        }
    };
    if !binary.is_file() {
        bail!("{} does not exist (cargo xtask build)", binary.display());
    }
    Ok(binary)
}

fn lab(action: LabAction) -> Result<()> {
    if !is_root() && !matches!(action, LabAction::List) {
        bail!("the lab creates network namespaces: run as root (sudo -E cargo xtask lab ...)");
    }
    match action {
        LabAction::Up { name } => {
            setup::ensure()?;
            let lab = traceroute_lab::keeper::up_persistent(&name)?;
            print_lab(&lab);
            println!(
                "explore with e.g.: ip netns exec trl-{name}-src traceroute -n <address of dst>"
            );
            println!("tear down with:    cargo xtask lab down {name}");
            Ok(())
        }
        LabAction::Down { name } => {
            if traceroute_lab::keeper::down_persistent(&name)? {
                println!("lab {name} is down");
            } else {
                println!("no lab named {name} was running");
            }
            Ok(())
        }
        LabAction::List => {
            let running = traceroute_lab::keeper::list_persistent()?;
            if running.is_empty() {
                println!("no labs running");
            }
            for lab in &running {
                print_lab(lab);
            }
            println!("topologies: {}", traceroute_lab::NAMES.join(", "));
            Ok(())
        }
    }
}

fn print_lab(lab: &traceroute_lab::keeper::PersistentLab) {
    println!(
        "lab {} (topology {}, keeper pid {}{})",
        lab.name,
        lab.topology,
        lab.pid,
        if lab.ready { "" } else { ", starting" }
    );
    for node in &lab.nodes {
        println!("  {:<6} netns {}", node.name, node.namespace);
        for i in &node.interfaces {
            let v4 = i.ipv4.map(|a| a.to_string()).unwrap_or_default();
            let v6 = i.ipv6.map(|a| a.to_string()).unwrap_or_default();
            let delay = i
                .delay_ms
                .map(|d| format!(" delay {d} ms"))
                .unwrap_or_default();
            println!(
                "         {:<10} -> {:<6} {v4:<15} {v6}{delay}",
                i.name, i.peer
            );
        }
        if let (Some(first), Some(last)) = (node.targets.first(), node.targets.last()) {
            let n = node.targets.len();
            println!("         targets    {n} addresses on lo, {first} .. {last}");
        }
    }
}
