//! `capture`: attach the kernel programs to interfaces and print every
//! probe- or reply-like packet they see, as JSON lines; a diagnostic that the
//! eBPF pipeline works, and the overhead benchmark's load.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use crate::capture::ebpf::EbpfCapture;
use crate::capture::interface;
use crate::reply::Summary;

/// `capture` flags.
#[derive(clap::Args)]
pub struct CaptureArgs {
    /// Interface to attach to (repeatable).
    #[arg(short, long = "interface", required = true)]
    interfaces: Vec<String>,
    /// Stop after this many events.
    #[arg(short = 'c', long)]
    count: Option<u64>,
    /// Stop after this many seconds (0 to a day).
    #[arg(long, value_parser = parse_capture_seconds)]
    seconds: Option<Duration>,
    /// Attach exactly as a trace does: only registered flows reach userspace,
    /// so nothing is printed. For measuring what the programs cost traffic.
    #[arg(long)]
    registered_only: bool,
    /// Measure the programs' kernel run time per packet (BPF run-time
    /// statistics, on while the command runs) and log it at exit.
    #[arg(long)]
    stats: bool,
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
    summary: Option<Summary>,
}

/// `capture --seconds`: a number of seconds from 0 to a day (a usage error
/// otherwise, never a panic on a value no `Duration` holds).
fn parse_capture_seconds(text: &str) -> Result<Duration, String> {
    const MAX: f64 = 86_400.0;
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| (0.0..=MAX).contains(s))
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("must be a number of seconds from 0 to {MAX}, got {text:?}"))
}

/// How often the diagnostic asks for egress events (see [`crate::capture::ebpf::Drain`]).
const DRAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(5);

pub async fn capture(args: CaptureArgs) -> anyhow::Result<()> {
    let CaptureArgs {
        interfaces,
        count,
        seconds,
        registered_only,
        stats,
    } = args;
    let _stats_on = stats
        .then(crate::capture::ebpf::enable_run_time_stats)
        .transpose()
        .context("enabling BPF run-time statistics")?;
    let mut capture = EbpfCapture::load().context("loading the eBPF capture")?;
    capture.capture_unregistered(!registered_only)?;
    for ifname in &interfaces {
        capture.attach(ifname)?;
    }
    let mut events = capture.events(4096)?;
    // Egress events do not wake the reader: ask for them every few ms, as
    // the sends they stamp are not ours to follow.
    let drain = capture.drain();
    let mut drain_tick = tokio::time::interval(DRAIN_EVERY);
    let deadline = seconds.map(|s| tokio::time::Instant::now() + s);
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
            _ = drain_tick.tick() => {
                drain.now();
                continue;
            }
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
            kind: crate::capture::kind_name(packet.kind),
            packet_len: packet.packet_len,
            captured_len: packet.bytes.len(),
            summary: Summary::parse(&packet.bytes),
        };
        serde_json::to_writer(&mut stdout, &line)?;
        stdout.write_all(b"\n")?;
        stdout.flush()?;
    }
    for (name, value) in capture.counters()? {
        tracing::info!(counter = name, value, "capture counter");
    }
    if stats {
        for p in capture.program_stats()? {
            tracing::info!(
                program = p.program,
                runs = p.runs,
                ns_per_packet = p.ns_per_run().unwrap_or(0.0),
                "program run time"
            );
        }
    }
    Ok(())
}
