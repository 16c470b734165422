//! `traceroute-agent trace`: flags (ours, and the familiar ones of
//! traceroute and mtr), output formats, live progress on a terminal and
//! partial results on Ctrl-C.

use std::io::{IsTerminal, Write};
use std::net::IpAddr;
use std::time::Duration;

use crate::capture::CaptureMode;
use crate::clock::MonotonicTime;
use crate::path::NetworkPath;
use crate::probe::Protocol;
use crate::resolve::{self, FamilyPreference};
use crate::route::Egress;
use crate::sinks;
use crate::sinks::table::Style;
use crate::trace::TcpMethod;
use crate::trace::budget::Rate;
use crate::trace::mda::{Confidence, MdaRule};
use crate::trace::request::{
    CYCLES, MAX_TTL, Mode, Multipath, PATHS, PROBES_PER_SECOND, QUERIES, TIMEOUT, TraceParams,
    WINDOW,
};
use crate::trace::{TraceError, TraceRequest, Tracer, TracerConfig};

use clap::builder::PossibleValue;

use super::progress::{LiveTable, Outcome};
use super::remote::{self, Place};
use super::{capture_choices, choices};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The NetworkPath record, one JSON line.
    Json,
    /// mtr-style report (the default on a terminal, printed as hops settle).
    Table,
    /// The report as a markdown table.
    #[value(alias = "md")]
    Markdown,
    /// One CSV row per hop per run, with a header.
    Csv,
    /// One JSON object per hop per run.
    Ndjson,
    /// The path graph in Graphviz DOT (`dot -Tsvg` renders it).
    Dot,
    /// The path graph as a standalone SVG.
    Svg,
    /// One row per distinct path, with its flows (flows MDA stopped early
    /// listed apart).
    Flows,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum MultipathArg {
    /// Multipath detection: flows until every router's next hops are known
    /// at --confidence.
    Mda,
}

#[derive(clap::Args)]
pub struct TraceArgs {
    /// Host name or IP address to trace.
    host: String,
    /// Probe protocol.
    #[arg(long, default_value = "udp",
          value_parser = choices::<Protocol>(["tcp", "udp", "icmp"].map(PossibleValue::new)))]
    protocol: Protocol,
    /// Same as --protocol tcp.
    #[arg(short = 'T', conflicts_with_all = ["udp", "icmp"])]
    tcp: bool,
    /// Same as --protocol udp.
    #[arg(short = 'U', conflicts_with_all = ["tcp", "icmp"])]
    udp: bool,
    /// Same as --protocol icmp.
    #[arg(short = 'I', conflicts_with_all = ["tcp", "udp"])]
    icmp: bool,
    /// Destination port (default: TCP 80, UDP 33434; none for ICMP).
    #[arg(short, long, value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,
    /// Highest TTL probed.
    #[arg(short, long, default_value_t = MAX_TTL.default,
          value_parser = clap::value_parser!(u8).range(i64::from(MAX_TTL.min)..=i64::from(MAX_TTL.max)))]
    max_ttl: u8,
    /// First TTL probed (traceroute's -f).
    #[arg(short = 'f', long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..))]
    first_ttl: u8,
    /// Independent runs, one probe per hop each (traceroute.runs[]).
    #[arg(short, long, default_value_t = QUERIES.default, conflicts_with = "report_cycles",
          value_parser = clap::value_parser!(u8).range(i64::from(QUERIES.min)..=i64::from(QUERIES.max)))]
    queries: u8,
    /// Runs as mtr's report cycles: like --queries, up to 100.
    #[arg(short = 'c', long,
          value_parser = clap::value_parser!(u8).range(i64::from(CYCLES.min)..=i64::from(CYCLES.max)))]
    report_cycles: Option<u8>,
    /// How long one probe waits for its answer, in milliseconds.
    #[arg(long, default_value_t = TIMEOUT.default.as_millis() as u64, conflicts_with = "wait",
          value_parser = clap::value_parser!(u64).range(TIMEOUT.min.as_millis() as u64..=TIMEOUT.max.as_millis() as u64))]
    timeout_ms: u64,
    /// traceroute's -w MAX[,HERE,NEAR], with traceroute's meaning: wait at
    /// most MAX seconds for an answer, at most HERE times an RTT already
    /// seen at the same hop, and NEAR times one of a later hop (defaults 3
    /// and 10), from the first probe on. Without -w a hop nothing is known
    /// about gets the whole timeout (a router's own answers can come much
    /// later than the next hop's).
    #[arg(short = 'w', long, value_parser = parse_wait)]
    wait: Option<Wait>,
    /// Probes in flight at once (traceroute's -N).
    #[arg(short = 'N', long = "sim-queries",
          value_parser = clap::value_parser!(u16).range(i64::from(WINDOW.min)..=i64::from(WINDOW.max)))]
    sim_queries: Option<u16>,
    /// Output format (default: table on a terminal, JSON otherwise).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Reply capture: eBPF, sockets, or eBPF with fallback to sockets (and,
    /// without the privilege for either, to --unprivileged).
    #[arg(long, default_value = "auto", value_parser = capture_choices())]
    capture: CaptureMode,
    /// Trace without any privilege: UDP and ICMP by datagram sockets with
    /// IP_RECVERR (ICMP needs net.ipv4.ping_group_range), TCP by connect().
    /// One probe at a time, user-space RTTs, no reply TTLs.
    #[arg(long, conflicts_with_all = ["paths", "multipath", "pmtu"])]
    unprivileged: bool,
    /// Source address of the probes (traceroute's -s): one of this host's.
    /// Policy routes that match on the source apply.
    #[arg(short = 's', long = "source", value_name = "ADDRESS")]
    source: Option<IpAddr>,
    /// Send probes through this interface (traceroute's -i), by its routes.
    #[arg(short = 'i', long = "interface", value_name = "NAME")]
    interface: Option<String>,
    /// Use IPv4 only.
    #[arg(short = '4', conflicts_with = "ipv6")]
    ipv4: bool,
    /// Use IPv6 only.
    #[arg(short = '6')]
    ipv6: bool,
    /// Resolve hop addresses to names.
    #[arg(long, conflicts_with = "numeric")]
    reverse_dns: bool,
    /// Do not resolve hop addresses (the default; as traceroute's -n).
    #[arg(short = 'n')]
    numeric: bool,
    /// Show ICMP extensions in the table: MPLS label stacks (traceroute's -e)
    /// and the interfaces routers describe (RFC 5837).
    #[arg(short = 'e', long = "extensions")]
    extensions: bool,
    /// After the trace, print to stderr what was learnt of each responder:
    /// its answer budget, its answer latency, and the silent places.
    #[arg(long)]
    explain: bool,
    /// AS path lookups (traceroute's -A): refused, they need an outside
    /// whois/DNS service this agent never asks.
    #[arg(short = 'A', long = "as-path-lookups")]
    as_lookups: bool,
    /// Trace N flows at once (different source ports or echo ids), so
    /// load balancers spread them over their branches; runs = N × queries.
    #[arg(long, default_value_t = PATHS.default,
          value_parser = clap::value_parser!(u16).range(i64::from(PATHS.min)..=i64::from(PATHS.max)))]
    paths: u16,
    /// Find every branch: MDA sends as many flows as needed (one run each).
    #[arg(long, value_enum, conflicts_with = "paths")]
    multipath: Option<MultipathArg>,
    /// MDA's confidence, in percent: 95 (default) or 99.
    #[arg(long, value_parser = ["95", "99"], requires = "multipath")]
    confidence: Option<String>,
    /// MDA's stopping rule: lite (per TTL where its routers look alike,
    /// else per router; the default) or full (per router).
    #[arg(long, requires = "multipath",
          value_parser = choices::<MdaRule>(["lite", "full"].map(PossibleValue::new)))]
    mda_rule: Option<MdaRule>,
    /// TCP probes: bare SYNs, segments inside a connection the kernel opens
    /// first (passes stateful firewalls), or that with SYNs as fallback.
    #[arg(long, default_value = "syn",
          value_parser = choices::<TcpMethod>(
              TcpMethod::ALL.map(|m| PossibleValue::new(m.as_str()).help(m.help()))))]
    tcp_method: TcpMethod,
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
    /// With --router-icmp-burst, what is assumed of a router nothing is
    /// known about yet; budgets are learnt from there as routers answer.
    #[arg(long, default_value_t = Rate::LINUX_ICMP.per_second)]
    router_icmp_per_second: f64,
    /// Safety rail: most probes per second (each router's ICMP budget paces probing).
    #[arg(long, default_value_t = PROBES_PER_SECOND.default,
          value_parser = clap::value_parser!(u32).range(i64::from(PROBES_PER_SECOND.min)..=i64::from(PROBES_PER_SECOND.max)))]
    pps: u32,
    /// Trace through the agent listening on this socket (default: the
    /// service's socket, when an agent answers there from this network
    /// namespace). No capability needed beyond the socket's group.
    #[arg(long, value_name = "SOCKET", conflicts_with_all = ["local", "unprivileged"])]
    agent: Option<std::path::PathBuf>,
    /// Trace in this process even when an agent is running.
    #[arg(long)]
    local: bool,
}

/// `-w MAX[,HERE,NEAR]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Wait {
    max: Duration,
    factors: Option<(f64, f64)>,
}

/// traceroute's HERE and NEAR factors when `-w` does not give them.
const TRACEROUTE_HERE: f64 = 3.0;
const TRACEROUTE_NEAR: f64 = 10.0;
/// Most a HERE or NEAR factor may be (a wait is capped by MAX anyway).
const MAX_WAIT_FACTOR: f64 = 1000.0;

fn parse_wait(text: &str) -> Result<Wait, String> {
    let parts: Vec<&str> = text.split(',').collect();
    let number = |s: &str, what: &str| -> Result<f64, String> {
        s.trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| format!("{what} must be a number of seconds or a factor, got {s:?}"))
    };
    let factor = |s: &str, what: &str| -> Result<f64, String> {
        Some(number(s, what)?)
            .filter(|v| *v <= MAX_WAIT_FACTOR)
            .ok_or_else(|| {
                format!("{what} must be a factor from 0 to {MAX_WAIT_FACTOR}, got {s:?}")
            })
    };
    let range = || {
        format!(
            "MAX must be {}..={} seconds",
            TIMEOUT.min.as_secs_f64(),
            TIMEOUT.max.as_secs_f64()
        )
    };
    let max = Duration::try_from_secs_f64(number(parts[0], "MAX")?).map_err(|_| range())?;
    if !(TIMEOUT.min..=TIMEOUT.max).contains(&max) {
        return Err(range());
    }
    let factors = match parts.len() {
        1 => None,
        2 => Some((factor(parts[1], "HERE")?, TRACEROUTE_NEAR)),
        3 => Some((factor(parts[1], "HERE")?, factor(parts[2], "NEAR")?)),
        _ => return Err("expected MAX[,HERE,NEAR]".into()),
    };
    Ok(Wait { max, factors })
}

impl TraceArgs {
    fn protocol(&self) -> Protocol {
        match (self.tcp, self.udp, self.icmp) {
            (true, _, _) => Protocol::Tcp,
            (_, true, _) => Protocol::Udp,
            (_, _, true) => Protocol::Icmp,
            _ => self.protocol,
        }
    }

    /// The HTTP API's query for what the flags ask, or the first flag the API
    /// cannot express (a usage error: `--local` traces it in-process).
    fn agent_query(&self) -> Result<String, TraceError> {
        let cannot = |flag: &str, why: &str| {
            Err(TraceError::InvalidRequest(format!(
                "{flag} cannot go through the agent ({why}); add --local to trace in this process"
            )))
        };
        if self.first_ttl != 1 {
            return cannot("-f", "the API has no first TTL");
        }
        if self.wait.is_some() {
            return cannot("-w", "the API has no wait factors; --timeout-ms can go");
        }
        if self.sim_queries.is_some() {
            return cannot("-N", "the agent's window is its own");
        }
        if self.capture != CaptureMode::Auto {
            return cannot("--capture", "the agent's capture is its own");
        }
        let literal = resolve::parse_literal(&self.host).ok().flatten().is_some();
        if (self.ipv4 || self.ipv6) && !literal {
            return cannot("-4/-6", "the API picks a name's family only by --source");
        }
        if self.explain {
            return cannot(
                "--explain",
                "the agent's knowledge is at GET /debug/responders",
            );
        }
        let budget = Rate::LINUX_ICMP;
        if self.router_icmp_burst != budget.burst
            || self.router_icmp_per_second != budget.per_second
            || self.pps != PROBES_PER_SECOND.default
        {
            return cannot(
                "--router-icmp-burst, --router-icmp-per-second and --pps",
                "router budgets and the probe rate are the agent's config",
            );
        }
        let queries = self.report_cycles.unwrap_or(self.queries);
        if queries > QUERIES.max {
            return cannot("-c", "the API takes at most 10 runs");
        }
        let protocol = self.protocol();
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("client_id", "traceroute-agent-cli")
            .append_pair("protocol", protocol.as_str())
            .append_pair("max_ttl", &self.max_ttl.to_string())
            .append_pair("traceroute_queries", &queries.to_string())
            .append_pair("timeout", &(self.timeout_ms * 1_000_000).to_string())
            .append_pair("paths", &self.paths.to_string())
            .append_pair("tcp_method", self.tcp_method.as_str());
        if let Some(port) = self.port {
            q.append_pair("port", &port.to_string());
        }
        if self.multipath.is_some() {
            q.append_pair("multipath", "mda")
                .append_pair("confidence", self.confidence.as_deref().unwrap_or("95"))
                .append_pair("mda_rule", self.mda_rule.unwrap_or_default().as_str());
        }
        if let Some(id) = self.flow_id {
            q.append_pair("flow_id", &id.to_string());
        }
        if self.pmtu {
            q.append_pair("pmtu", "true");
        }
        if let Some(source) = self.source {
            q.append_pair("source", &source.to_string());
        }
        if let Some(interface) = &self.interface {
            q.append_pair("interface", interface);
        }
        if self.reverse_dns {
            q.append_pair("reverse_dns", "true");
        }
        Ok(q.finish())
    }

    /// The request the flags ask for; a usage error (exit 2) otherwise.
    fn request(&self) -> Result<TraceRequest, TraceError> {
        let usage = |m: String| TraceError::InvalidRequest(m);
        if self.as_lookups {
            return Err(usage(
                "-A (AS path lookups) is not supported: it needs a whois or DNS service \
                 outside the host, which this agent never asks"
                    .into(),
            ));
        }
        let protocol = self.protocol();
        if protocol == Protocol::Icmp && self.port.is_some() {
            return Err(usage(
                "--port has no meaning for ICMP probes (echo requests have no port); \
                 use -T or -U to probe a port"
                    .into(),
            ));
        }
        // clap checked the ranges already (built from the same bounds).
        let timeout = self
            .wait
            .map_or(Duration::from_millis(self.timeout_ms), |w| w.max);
        if !(0.01..=100_000.0).contains(&self.router_icmp_per_second) {
            return Err(usage(
                "--router-icmp-per-second must be 0.01..=100000".into(),
            ));
        }
        let mut multipath = None;
        if self.multipath.is_some() {
            let percent = self
                .confidence
                .as_deref()
                .unwrap_or("95")
                .parse()
                .unwrap_or(0);
            multipath = Some(Multipath {
                confidence: Confidence::from_percent(percent)
                    .ok_or_else(|| usage("--confidence must be 95 or 99".into()))?,
                rule: self.mda_rule.unwrap_or_default(),
            });
        }
        TraceParams {
            port: self.port,
            first_ttl: self.first_ttl,
            max_ttl: self.max_ttl,
            queries: self.report_cycles.unwrap_or(self.queries),
            as_cycles: self.report_cycles.is_some(),
            timeout,
            paths: self.paths,
            multipath,
            pmtu: self.pmtu,
            flow_id: self.flow_id,
            tcp_method: self.tcp_method,
            window: self.sim_queries,
            // -w asks for traceroute's waits, factors or not.
            wait_factors: self
                .wait
                .map(|w| w.factors.unwrap_or((TRACEROUTE_HERE, TRACEROUTE_NEAR))),
            family: match (self.ipv4, self.ipv6) {
                (true, _) => FamilyPreference::V4,
                (_, true) => FamilyPreference::V6,
                _ => FamilyPreference::Any,
            },
            egress: Egress {
                source: self.source,
                interface: self.interface.clone(),
            },
            reverse_dns: self.reverse_dns,
            ..TraceParams::new(self.host.clone(), protocol)
        }
        .build()
        .map_err(|e| usage(e.to_string()))
    }
}

/// Runs `trace`. Exit status: 0 done, 2 bad input, 130 interrupted (after
/// printing what was known).
pub async fn trace(args: TraceArgs) -> anyhow::Result<std::process::ExitCode> {
    // A bad host is a usage error: say so before loading anything.
    if resolve::parse_literal(&args.host)
        .map_err(TraceError::from)?
        .is_none()
    {
        resolve::validate_host(&args.host).map_err(TraceError::from)?;
    }
    let request = args.request()?;
    let terminal = std::io::stdout().is_terminal();
    let format = args.format.unwrap_or(if terminal {
        Format::Table
    } else {
        Format::Json
    });
    let style = Style {
        extensions: args.extensions,
        ..Style::for_terminal(terminal)
    };
    // Hops are printed as they settle on a terminal's table.
    let live = || (format == Format::Table && terminal).then(|| LiveTable::new(style));
    if !args.unprivileged
        && let Place::Agent { socket, asked } = remote::choose(args.agent.as_deref(), args.local)
    {
        let query = args.agent_query()?;
        match remote::trace(&socket, &args.host, &query, live()).await {
            Ok(outcome) => return print(outcome, format, style),
            Err(e)
                if !asked
                    && e.downcast_ref::<remote::AgentError>()
                        .is_some_and(|a| a.local_instead) =>
            {
                tracing::debug!("tracing in this process: {e}");
            }
            Err(e) => return Err(e),
        }
    }
    let connect = request.protocol() == Protocol::Tcp && request.tcp_method().by_connect();
    if args.unprivileged || connect {
        return unprivileged(request, format, style).await;
    }
    let tracer = match Tracer::new(TracerConfig {
        capture: args.capture,
        probes_per_second: args.pps,
        router_rate: Rate::router(args.router_icmp_burst, args.router_icmp_per_second),
        // Replies come back where the probes leave; attaching to that one
        // interface is what makes a one-shot trace start fast.
        watch_all_interfaces: false,
        ..TracerConfig::default()
    })
    .await
    {
        Ok(tracer) => tracer,
        // Neither capture is allowed: what an unprivileged user can do.
        Err(e) if args.capture == CaptureMode::Auto && can_go_unprivileged(&request) => {
            let Some(missing) = e.missing_privilege() else {
                return Err(e.into());
            };
            eprintln!(
                "traceroute-agent: {missing}: tracing without privilege instead (one probe at a time, user-space RTTs; --unprivileged asks for it)"
            );
            return unprivileged(request, format, style).await;
        }
        Err(e) => return Err(e.into()),
    };
    let outcome = super::progress::run(&tracer, &request, live()).await?;
    if args.explain {
        super::explain::print(&tracer.knowledge().view(MonotonicTime::now()))?;
    }
    let code = print(outcome, format, style)?;
    // The record is out: releasing the capture is owed, not waited for.
    super::teardown::leave_to_keeper();
    drop(tracer);
    Ok(code)
}

/// Prints how a watched trace ended. Exit status: 0 done, 130 interrupted
/// (after printing what was known).
fn print(outcome: Outcome, format: Format, style: Style) -> anyhow::Result<std::process::ExitCode> {
    match outcome {
        Outcome::Finished { path, live } => {
            match live {
                Some(mut table) => table.finish(&path)?,
                None => write(format, &path, style)?,
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
        Outcome::Interrupted { path, live } => {
            match (path, live) {
                (Some(path), Some(mut table)) => table.interrupted(&path)?,
                (Some(path), None) => write(format, &path, style)?,
                (None, _) => eprintln!("traceroute-agent: interrupted before any hop settled"),
            }
            Ok(std::process::ExitCode::from(130))
        }
    }
}

/// Whether `request` can be traced without privilege: one flow, and for TCP
/// SYNs (which connect() sends), not probes inside a connection.
fn can_go_unprivileged(request: &TraceRequest) -> bool {
    request.mode() == Mode::ONE_FLOW
        && (request.protocol() != Protocol::Tcp
            || matches!(request.tcp_method(), TcpMethod::Syn | TcpMethod::SynSocket))
}

/// A trace by datagram sockets or connect(): no capability needed.
async fn unprivileged(
    mut request: TraceRequest,
    format: Format,
    style: Style,
) -> anyhow::Result<std::process::ExitCode> {
    if request.protocol() == Protocol::Tcp {
        if !matches!(request.tcp_method(), TcpMethod::Syn | TcpMethod::SynSocket) {
            return Err(TraceError::InvalidRequest(
                "--unprivileged sends TCP SYNs by connect(); sack needs privileges".into(),
            )
            .into());
        }
        request = request.by_connect();
    }
    let path = crate::trace::trace_unprivileged(&request).await?;
    write(format, &path, style)?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// Prints a finished (or interrupted) record in `format`. A reader that
/// went away (`| head`) is not an error.
pub fn write(format: Format, path: &NetworkPath, style: Style) -> std::io::Result<()> {
    match write_to(&mut std::io::stdout().lock(), format, path, style) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

fn write_to(
    stdout: &mut impl Write,
    format: Format,
    path: &NetworkPath,
    style: Style,
) -> std::io::Result<()> {
    match format {
        Format::Json => sinks::write_json_line(stdout, path)?,
        Format::Table => stdout.write_all(sinks::table::render(path, style).as_bytes())?,
        Format::Markdown => stdout.write_all(sinks::markdown::render(path).as_bytes())?,
        Format::Csv => sinks::rows::write_csv(stdout, path)?,
        Format::Ndjson => sinks::rows::write_ndjson(stdout, path)?,
        Format::Dot => stdout.write_all(sinks::graph::dot(path).as_bytes())?,
        Format::Svg => stdout.write_all(sinks::graph::svg(path).as_bytes())?,
        Format::Flows => stdout.write_all(sinks::graph::flows_table(path).as_bytes())?,
    }
    stdout.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_takes_tracerouters_max_here_near() {
        assert_eq!(
            parse_wait("2").unwrap(),
            Wait {
                max: Duration::from_secs(2),
                factors: None
            }
        );
        assert_eq!(
            parse_wait("5,3,10").unwrap(),
            Wait {
                max: Duration::from_secs(5),
                factors: Some((3.0, 10.0))
            }
        );
        assert_eq!(parse_wait("0.5,2").unwrap().factors, Some((2.0, 10.0)));
        // Far beyond the range: an error, not a panic.
        assert!(parse_wait("1e300").unwrap_err().contains("MAX must be"));
        assert!(parse_wait("1e20").is_err());
        assert!(
            parse_wait("1,1e300,3")
                .unwrap_err()
                .contains("HERE must be a factor")
        );
        assert!(
            parse_wait("1,3,1e300")
                .unwrap_err()
                .contains("NEAR must be a factor")
        );
        assert!(parse_wait("31").is_err());
        assert!(parse_wait("x").is_err());
        assert!(parse_wait("1,2,3,4").is_err());
        assert!(parse_wait("1,-2").is_err());
    }
}
