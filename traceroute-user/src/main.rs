//! `traceroute-agent`: command-line front end.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use serde::Serialize;
use std::io::IsTerminal;

use traceroute_user::capture::CaptureMode;
use traceroute_user::capture::ebpf::EbpfCapture;
use traceroute_user::capture::interface;
use traceroute_user::probe::Protocol;
use traceroute_user::reply::Summary;
use traceroute_user::resolve::{self, FamilyPreference};
use traceroute_user::service::config::{Config, LogFormat};
use traceroute_user::sinks;
use traceroute_user::trace::TcpMethod;
use traceroute_user::trace::budget::Rate;
use traceroute_user::trace::mda::Confidence;
use traceroute_user::trace::request::{MAX_TTL, PATHS, PROBES_PER_SECOND, QUERIES, TIMEOUT};
use traceroute_user::trace::{TraceError, TraceRequest, Tracer, TracerConfig};

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
    Trace(TraceArgs),
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
    init_logging(level, log_format(&cli));
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("traceroute-agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Trace(args) => trace(args).await,
            Command::Capture {
                interfaces,
                count,
                seconds,
                registered_only,
                stats,
            } => capture(interfaces, count, seconds, registered_only, stats).await,
            Command::Serve(args) => serve(*args).await,
            Command::Completions { .. } | Command::Man => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("traceroute-agent: {}", chain(&e));
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Json,
    Table,
    /// The path graph in Graphviz DOT (`dot -Tsvg` renders it).
    Dot,
    /// The path graph as a standalone SVG.
    Svg,
    /// One row per distinct path, with its flows.
    Flows,
}

/// `--tcp-method`: the library's [`TcpMethod`] as the CLI spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum TcpMethodArg {
    /// Bare SYNs.
    Syn,
    /// One handshake, then segments inside the connection (needs SACK).
    Sack,
    /// `sack`, or SYNs when the destination refuses or has no SACK.
    #[value(name = "prefer_sack")]
    PreferSack,
    /// SYNs by connect(), a socket per probe with its TTL: no privilege
    /// needed (one probe at a time; user-space RTTs).
    #[value(name = "syn_socket")]
    SynSocket,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum MultipathArg {
    /// Multipath detection: flows until every router's next hops are known
    /// at --confidence.
    Mda,
}

/// `--capture`: the library's [`CaptureMode`] as the CLI spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum CaptureArg {
    /// eBPF when it loads, sockets otherwise.
    Auto,
    Ebpf,
    Socket,
}

impl From<CaptureArg> for CaptureMode {
    fn from(arg: CaptureArg) -> CaptureMode {
        match arg {
            CaptureArg::Auto => CaptureMode::Auto,
            CaptureArg::Ebpf => CaptureMode::Ebpf,
            CaptureArg::Socket => CaptureMode::Socket,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ProtocolArg {
    Tcp,
    Udp,
    Icmp,
}

#[derive(clap::Args)]
struct TraceArgs {
    /// Host name or IP address to trace.
    host: String,
    /// Probe protocol.
    #[arg(long, value_enum, default_value = "udp")]
    protocol: ProtocolArg,
    /// Same as --protocol tcp.
    #[arg(short = 'T', conflicts_with_all = ["udp", "icmp"])]
    tcp: bool,
    /// Same as --protocol udp.
    #[arg(short = 'U', conflicts_with_all = ["tcp", "icmp"])]
    udp: bool,
    /// Same as --protocol icmp.
    #[arg(short = 'I', conflicts_with_all = ["tcp", "udp"])]
    icmp: bool,
    /// Destination port (default: TCP 80, UDP 33434).
    #[arg(short, long, value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,
    /// Highest TTL probed.
    #[arg(short, long, default_value_t = MAX_TTL.default,
          value_parser = clap::value_parser!(u8).range(i64::from(MAX_TTL.min)..=i64::from(MAX_TTL.max)))]
    max_ttl: u8,
    /// Independent runs, one probe per hop each (traceroute.runs[]).
    #[arg(short, long, default_value_t = QUERIES.default,
          value_parser = clap::value_parser!(u8).range(i64::from(QUERIES.min)..=i64::from(QUERIES.max)))]
    queries: u8,
    /// How long one probe waits for its answer, in milliseconds.
    #[arg(long, default_value_t = TIMEOUT.default.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(TIMEOUT.min.as_millis() as u64..=TIMEOUT.max.as_millis() as u64))]
    timeout_ms: u64,
    /// Output format (default: table on a terminal, JSON otherwise).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Reply capture: eBPF, sockets, or eBPF with fallback to sockets.
    #[arg(long, value_enum, default_value = "auto")]
    capture: CaptureArg,
    /// Use IPv4 only.
    #[arg(short = '4', conflicts_with = "ipv6")]
    ipv4: bool,
    /// Use IPv6 only.
    #[arg(short = '6')]
    ipv6: bool,
    /// Resolve hop addresses to names.
    #[arg(long)]
    reverse_dns: bool,
    /// Trace N flows at once (different source ports or echo ids), so
    /// load balancers spread them over their branches; runs = N × queries.
    #[arg(long, default_value_t = PATHS.default,
          value_parser = clap::value_parser!(u16).range(i64::from(PATHS.min)..=i64::from(PATHS.max)))]
    paths: u16,
    /// Find every branch: MDA sends as many flows as needed (one run each).
    #[arg(long, value_enum, conflicts_with = "paths")]
    multipath: Option<MultipathArg>,
    /// MDA's confidence, in percent: 95 or 99.
    #[arg(long, default_value = "95", value_parser = ["95", "99"])]
    confidence: String,
    /// TCP probes: bare SYNs, segments inside a connection the kernel opens
    /// first (passes stateful firewalls), or that with SYNs as fallback.
    #[arg(long, value_enum, default_value = "syn")]
    tcp_method: TcpMethodArg,
    /// Path MTU per hop: probes start at the interface MTU and shrink
    /// wherever a router says they do not fit (UDP or ICMP, one flow).
    #[arg(long, conflicts_with_all = ["multipath", "tcp"])]
    pmtu: bool,
    /// Pin the flows: the first one's source port (TCP/UDP) or echo id
    /// (ICMP); more flows (--paths, MDA) take the next ids.
    #[arg(long, visible_alias = "source-port")]
    flow_id: Option<u16>,
    /// ICMP errors a router answers at once (burst) before its rate limit:
    /// the budget probing assumes (Linux: 6).
    #[arg(long, default_value_t = Rate::LINUX_ICMP.burst, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    router_icmp_burst: u32,
    /// ICMP errors per second a router answers after its burst (Linux: 1).
    #[arg(long, default_value_t = Rate::LINUX_ICMP.per_second)]
    router_icmp_per_second: f64,
    /// Safety rail: most probes per second (each router's ICMP budget paces probing).
    #[arg(long, default_value_t = PROBES_PER_SECOND.default,
          value_parser = clap::value_parser!(u32).range(i64::from(PROBES_PER_SECOND.min)..=i64::from(PROBES_PER_SECOND.max)))]
    pps: u32,
}

impl TraceArgs {
    fn protocol(&self) -> Protocol {
        match (self.tcp, self.udp, self.icmp, self.protocol) {
            (true, _, _, _) => Protocol::Tcp,
            (_, true, _, _) => Protocol::Udp,
            (_, _, true, _) => Protocol::Icmp,
            (_, _, _, ProtocolArg::Tcp) => Protocol::Tcp,
            (_, _, _, ProtocolArg::Udp) => Protocol::Udp,
            (_, _, _, ProtocolArg::Icmp) => Protocol::Icmp,
        }
    }
}

async fn trace(args: TraceArgs) -> anyhow::Result<()> {
    // A bad host is a usage error: say so before loading anything.
    if resolve::parse_literal(&args.host)
        .map_err(TraceError::from)?
        .is_none()
    {
        resolve::validate_host(&args.host).map_err(TraceError::from)?;
    }
    // clap checked the ranges already (built from the same bounds).
    let mut request = TraceRequest::new(args.host.clone(), args.protocol())
        .with_max_ttl(args.max_ttl)?
        .with_queries(args.queries)?
        .with_timeout(Duration::from_millis(args.timeout_ms))?
        .with_paths(args.paths)?;
    request.port = args.port;
    request.flow_id = args.flow_id;
    if !(0.01..=100_000.0).contains(&args.router_icmp_per_second) {
        return Err(TraceError::InvalidRequest(
            "--router-icmp-per-second must be 0.01..=100000".into(),
        )
        .into());
    }
    if args.multipath.is_some() {
        let percent = args.confidence.parse().unwrap_or(0);
        request.multipath =
            Some(Confidence::from_percent(percent).ok_or_else(|| {
                TraceError::InvalidRequest("--confidence must be 95 or 99".into())
            })?);
    }
    request.reverse_dns = args.reverse_dns;
    request.pmtu = args.pmtu;
    request.tcp_method = match args.tcp_method {
        TcpMethodArg::Syn => TcpMethod::Syn,
        TcpMethodArg::Sack => TcpMethod::Sack,
        TcpMethodArg::PreferSack => TcpMethod::PreferSack,
        TcpMethodArg::SynSocket => TcpMethod::SynSocket,
    };
    if let Some(conflict) = request.pmtu_conflict() {
        return Err(TraceError::InvalidRequest(conflict.into()).into());
    }
    request.family = match (args.ipv4, args.ipv6) {
        (true, _) => FamilyPreference::V4,
        (_, true) => FamilyPreference::V6,
        _ => FamilyPreference::Any,
    };
    let path = if request.protocol == Protocol::Tcp && request.tcp_method.by_connect() {
        // No capture, no raw socket: nothing that needs a privilege.
        traceroute_user::trace::trace_by_connect(&request).await?
    } else {
        run_tracer(&args, &request).await?
    };
    let format = args.format.unwrap_or(if std::io::stdout().is_terminal() {
        Format::Table
    } else {
        Format::Json
    });
    let mut stdout = std::io::stdout().lock();
    match format {
        Format::Json => sinks::write_json_line(&mut stdout, &path)?,
        Format::Table => stdout.write_all(sinks::table::render(&path).as_bytes())?,
        Format::Dot => stdout.write_all(sinks::graph::dot(&path).as_bytes())?,
        Format::Svg => stdout.write_all(sinks::graph::svg(&path).as_bytes())?,
        Format::Flows => stdout.write_all(sinks::graph::flows_table(&path).as_bytes())?,
    }
    Ok(())
}

/// One trace through a [`Tracer`] (capture and raw sockets).
async fn run_tracer(
    args: &TraceArgs,
    request: &TraceRequest,
) -> anyhow::Result<traceroute_user::path::NetworkPath> {
    let tracer = Tracer::new(TracerConfig {
        capture: args.capture.into(),
        probes_per_second: args.pps,
        router_rate: Rate::router(args.router_icmp_burst, args.router_icmp_per_second),
        // Replies come back where the probes leave; attaching to that one
        // interface is what makes a one-shot trace start fast.
        watch_all_interfaces: false,
        ..TracerConfig::default()
    })
    .await?;
    Ok(tracer.trace(request).await?)
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

async fn capture(
    interfaces: Vec<String>,
    count: Option<u64>,
    seconds: Option<f64>,
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
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .map_err(|_| format!("invalid octal mode {s:?}"))
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    traceroute_user::service::config::parse_duration(s)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    use traceroute_user::service;
    let config_file = args.config.clone();
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
    service::run(service::Options {
        config_file,
        overrides: Box::new(overrides),
    })
    .await
}
