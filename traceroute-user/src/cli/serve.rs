//! `serve`: the flags that override the service config, and
//! `--check-config`.

use std::process::ExitCode;
use std::time::Duration;

use crate::trace::request::PROBES_PER_SECOND;

use crate::capture::CaptureMode;

use super::{capture_choices, error_chain};

/// `serve` flags: each overrides the config file's value.
#[derive(clap::Args, Clone)]
pub struct ServeArgs {
    /// TOML config file (re-read on SIGHUP).
    #[arg(short, long)]
    pub config: Option<std::path::PathBuf>,
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
    #[arg(long, value_parser = capture_choices())]
    capture: Option<CaptureMode>,
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
    crate::service::config::parse_duration(s)
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    use crate::service;
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
            c.capture = m;
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
async fn check_config(options: &crate::service::Options) -> ExitCode {
    let name = options
        .config_file
        .as_ref()
        .map_or("built-in defaults".to_string(), |p| p.display().to_string());
    let loaded = match options.load() {
        Ok(config) => match crate::route::RouteCache::new().await {
            Ok(routes) => crate::service::check_targets_here(&config, &routes)
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
                crate::error::one_line(&error_chain(&e))
            );
            ExitCode::from(2)
        }
    }
}
