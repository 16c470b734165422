//! `traceroute-agent`: command-line front end.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde::Serialize;
use traceroute_user::capture::ebpf::EbpfCapture;
use traceroute_user::capture::interface;
use traceroute_user::packet::PacketSummary;

#[derive(Parser)]
#[command(
    name = "traceroute-agent",
    version,
    about = "eBPF-assisted network path agent"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attach the kernel capture to interfaces and print every probe- or
    /// reply-like packet it sees (ICMP errors and echo, TCP SYN-ACK/RST, outgoing
    /// TCP/UDP/echo) as JSON lines: a diagnostic showing the eBPF pipeline works.
    Capture {
        /// Interface to attach to (repeatable).
        #[arg(short, long = "interface", required = true)]
        interfaces: Vec<String>,
        /// Stop after this many events.
        #[arg(short = 'c', long)]
        count: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long)]
        seconds: Option<f64>,
    },
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("traceroute-agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Capture {
                interfaces,
                count,
                seconds,
            } => capture(interfaces, count, seconds).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("traceroute-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

/// One line of `capture` output.
#[derive(Serialize)]
struct CaptureLine {
    timestamp_ns: u64,
    interface: Option<String>,
    ifindex: u32,
    direction: &'static str,
    kind: &'static str,
    packet_len: u32,
    captured_len: usize,
    #[serde(flatten)]
    summary: Option<PacketSummary>,
}

async fn capture(
    interfaces: Vec<String>,
    count: Option<u64>,
    seconds: Option<f64>,
) -> anyhow::Result<()> {
    let mut capture = EbpfCapture::load().context("loading the eBPF capture")?;
    capture.capture_unregistered(true)?;
    for ifname in &interfaces {
        capture.attach(ifname)?;
    }
    let mut events = capture.events(4096)?;
    let deadline =
        seconds.map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    let mut seen = 0u64;
    let mut stdout = std::io::stdout().lock();
    tracing::info!("capture ready");
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        if count.is_some_and(|c| seen >= c) {
            break;
        }
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let packet = tokio::select! {
            p = events.recv() => match p { Some(p) => p, None => break },
            _ = sleep => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        };
        seen += 1;
        let line = CaptureLine {
            timestamp_ns: packet.timestamp.as_nanos(),
            interface: interface::ifname(packet.ifindex),
            ifindex: packet.ifindex,
            direction: match packet.direction {
                traceroute_common::Direction::Ingress => "ingress",
                traceroute_common::Direction::Egress => "egress",
            },
            kind: traceroute_user::capture::kind_name(packet.kind),
            packet_len: packet.packet_len,
            captured_len: packet.bytes.len(),
            summary: PacketSummary::parse(&packet.bytes),
        };
        serde_json::to_writer(&mut stdout, &line)?;
        stdout.write_all(b"\n")?;
        stdout.flush()?;
    }
    for (name, value) in capture.counters()? {
        tracing::info!(counter = name, value, "capture counter");
    }
    Ok(())
}
