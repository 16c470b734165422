//! `traceroute-agent`: command-line front end.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

mod cli;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use serde::Serialize;
use std::io::IsTerminal;

use traceroute_user::capture::ebpf::EbpfCapture;
use traceroute_user::capture::interface;
use traceroute_user::reply::Summary;
use traceroute_user::service::config::{Config, LogFormat};
use traceroute_user::trace::TraceError;
use traceroute_user::trace::request::PROBES_PER_SECOND;

use cli::CaptureArg;

#[derive(Parser)]
#[command(
    name = "traceroute-agent",
    version,
    about = "eBPF-assisted network path agent"
)]
struct Cli {
    /// Log lines on stderr: text, or one JSON object per line for log
    /// shippers (default: the config's `log_format`, else text).
    #[arg(long, value_enum, global = true)]
    log_format: Option<LogFormatArg>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Trace the path to HOST and print a NetworkPath record (JSON) or a table.
    Trace(cli::trace::TraceArgs),
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
    },
    /// Run as a service: HTTP API (Unix socket, optional TCP), scheduled
    /// targets written as JSON lines, Prometheus metrics. SIGHUP reloads the
    /// config and reopens the output file; SIGTERM stops gracefully.
    Serve(Box<ServeArgs>),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff), generated from these definitions.
    Man,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Completions { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(
                *shell,
                &mut command,
                "traceroute-agent",
                &mut std::io::stdout(),
            );
            return ExitCode::SUCCESS;
        }
        Command::Man => {
            return match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("traceroute-agent: writing the man page: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    // A one-shot trace keeps its stderr for problems; the others narrate.
    let level = match cli.command {
        Command::Trace(_) => "warn",
        _ => "info",
    };
    let format = log_format(&cli);
    init_logging(level, format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("traceroute-agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Trace(args) => cli::trace::trace(args).await,
            Command::Capture {
                interfaces,
                count,
                seconds,
                registered_only,
                stats,
            } => capture(interfaces, count, seconds, registered_only, stats)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Serve(args) => serve(*args).await,
            Command::Completions { .. } | Command::Man => Ok(ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line, one record: a config error's snippet would otherwise
            // be several lines a log shipper reads as several events.
            let message = traceroute_user::error::one_line(&chain(&e));
            match format {
                LogFormat::Json => tracing::error!("{message}"),
                LogFormat::Text => eprintln!("traceroute-agent: {message}"),
            }
            if let Some(missing) = e
                .downcast_ref::<TraceError>()
                .and_then(TraceError::missing_privilege)
            {
                eprintln!(
                    "traceroute-agent: {missing}: run as root (sudo), under the systemd unit, or grant \
                     them with `setcap cap_net_raw,cap_net_admin,cap_bpf,cap_perfmon+ep {}`",
                    std::env::current_exe()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|_| "traceroute-agent".into())
                );
            }
            // Bad input is a usage error, like clap's own: exit code 2.
            e.downcast_ref::<TraceError>()
                .map_or(ExitCode::FAILURE, |t| ExitCode::from(t.code().exit_code()))
        }
    }
}

/// The error and its causes, each said once: a cause whose text its
/// message already contains is not repeated.
fn chain(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

/// The log format: the flag, else the service config's `log_format` (a
/// config that does not load is reported by `serve` itself), else text.
fn log_format(cli: &Cli) -> LogFormat {
    match (cli.log_format, &cli.command) {
        (Some(LogFormatArg::Text), _) => LogFormat::Text,
        (Some(LogFormatArg::Json), _) => LogFormat::Json,
        (None, Command::Serve(args)) => args
            .config
            .as_deref()
            .and_then(|path| Config::load(path).ok())
            .map_or(LogFormat::Text, |c| c.log_format),
        (None, _) => LogFormat::Text,
    }
}

fn init_logging(default_level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder
            .with_ansi(IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
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

async fn capture(
    interfaces: Vec<String>,
    count: Option<u64>,
    seconds: Option<Duration>,
    registered_only: bool,
    stats: bool,
) -> anyhow::Result<()> {
    let _stats_on = stats
        .then(traceroute_user::capture::ebpf::enable_run_time_stats)
        .transpose()
        .context("enabling BPF run-time statistics")?;
    let mut capture = EbpfCapture::load().context("loading the eBPF capture")?;
    capture.capture_unregistered(!registered_only)?;
    for ifname in &interfaces {
        capture.attach(ifname)?;
    }
    let mut events = capture.events(4096)?;
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

/// `serve` flags: each overrides the config file's value.
#[derive(clap::Args, Clone)]
struct ServeArgs {
    /// TOML config file (re-read on SIGHUP).
    #[arg(short, long)]
    config: Option<std::path::PathBuf>,
    /// Unix socket path of the API.
    #[arg(long)]
    socket: Option<std::path::PathBuf>,
    /// No Unix socket (then --listen is required).
    #[arg(long, conflicts_with = "socket")]
    no_socket: bool,
    /// Permission bits of the socket file (octal).
    #[arg(long, value_parser = parse_mode)]
    socket_mode: Option<u32>,
    /// Group of the socket file (name or id).
    #[arg(long)]
    socket_group: Option<String>,
    /// Also serve the API on this TCP address (loopback unless --allow-non-loopback).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Allow a non-loopback --listen address (the API has no authentication).
    #[arg(long)]
    allow_non_loopback: bool,
    /// Reply capture: eBPF, sockets, or eBPF with fallback to sockets.
    #[arg(long, value_enum)]
    capture: Option<CaptureArg>,
    /// Safety rail: most probes per second across all traces.
    #[arg(long, value_parser = clap::value_parser!(u32).range(i64::from(PROBES_PER_SECOND.min)..=i64::from(PROBES_PER_SECOND.max)))]
    pps: Option<u32>,
    /// `namespace` of every record.
    #[arg(long)]
    namespace: Option<String>,
    /// Append the JSON lines of scheduled runs to this file instead of stdout.
    #[arg(long)]
    output: Option<std::path::PathBuf>,
    /// Most API traces at once (more get 503 + Retry-After).
    #[arg(long)]
    max_concurrent: Option<usize>,
    /// How long in-flight traces may finish after SIGTERM (e.g. 10s).
    #[arg(long, value_parser = parse_duration_arg)]
    shutdown_grace: Option<Duration>,
    /// Validate the config (file and flags) and exit without starting:
    /// 0 and a summary when it is valid, 2 and the reason when not.
    #[arg(long)]
    check_config: bool,
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .map_err(|_| format!("invalid octal mode {s:?}"))
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    traceroute_user::service::config::parse_duration(s)
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    use traceroute_user::service;
    let config_file = args.config.clone();
    let check_only = args.check_config;
    let overrides = move |c: &mut service::Config| {
        let a = &args;
        if let Some(s) = &a.socket {
            c.api.socket = s.clone();
        }
        if a.no_socket {
            c.api.socket = Default::default();
        }
        if let Some(m) = a.socket_mode {
            c.api.socket_mode = m;
        }
        if let Some(g) = &a.socket_group {
            c.api.socket_group = Some(g.clone());
        }
        if let Some(l) = a.listen {
            c.api.listen = Some(l);
        }
        if a.allow_non_loopback {
            c.api.allow_non_loopback = true;
        }
        if let Some(m) = a.capture {
            c.capture = m.into();
        }
        if let Some(p) = a.pps {
            c.probes_per_second = p;
        }
        if let Some(n) = &a.namespace {
            c.namespace = n.clone();
        }
        if let Some(o) = &a.output {
            c.output.path = Some(o.clone());
        }
        if let Some(m) = a.max_concurrent {
            c.api.max_concurrent_traces = m;
        }
        if let Some(g) = a.shutdown_grace {
            c.shutdown_grace = g;
        }
    };
    let options = service::Options {
        config_file,
        overrides: Box::new(overrides),
    };
    if check_only {
        return Ok(check_config(&options).await);
    }
    service::run(options).await.map(|()| ExitCode::SUCCESS)
}

/// `serve --check-config`: loads and validates exactly as a start (or a
/// SIGHUP reload) would, touching nothing.
async fn check_config(options: &traceroute_user::service::Options) -> ExitCode {
    let name = options
        .config_file
        .as_ref()
        .map_or("built-in defaults".to_string(), |p| p.display().to_string());
    let loaded = match options.load() {
        Ok(config) => match traceroute_user::route::RouteCache::new().await {
            Ok(routes) => traceroute_user::service::check_targets_here(&config, &routes)
                .await
                .map(|()| config),
            Err(e) => Err(anyhow::Error::new(e).context("reading the route table")),
        },
        Err(e) => Err(e),
    };
    match loaded {
        Ok(config) => {
            let listen = config
                .api
                .listen
                .map(|a| format!(", TCP {a}"))
                .unwrap_or_default();
            println!(
                "config OK: {name}: {} target(s), API socket {:?}{listen}, capture {:?}, output {}",
                config.targets.len(),
                config.api.socket,
                config.capture,
                config
                    .output
                    .path
                    .as_ref()
                    .map_or("stdout".to_string(), |p| p.display().to_string()),
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "traceroute-agent: config not valid: {}",
                traceroute_user::error::one_line(&chain(&e))
            );
            ExitCode::from(2)
        }
    }
}
