//! The command line: `trace` (with its output formats, live progress and
//! `--explain`), `capture` and `serve`, one file each, and what they share.
//! The binary's `main` calls [`main`]; this module parses, sets up logging
//! and the runtime, and turns errors into messages and exit codes. It is the
//! edge: anyhow is used here, typed errors below.

mod capture;
mod explain;
mod progress;
mod remote;
mod serve;
mod teardown;
mod trace;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{CommandFactory, Parser, Subcommand};

use crate::capture::CaptureMode;
use crate::service::config::{Config, LogFormat};
use crate::trace::TraceError;
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
    Trace(trace::TraceArgs),
    /// Attach the kernel capture to interfaces and print every probe- or
    /// reply-like packet it sees (ICMP errors and echo, TCP SYN-ACK/RST, outgoing
    /// TCP/UDP/echo) as JSON lines: a diagnostic showing the eBPF pipeline works.
    Capture(capture::CaptureArgs),
    /// Run as a service: HTTP API (Unix socket, optional TCP), scheduled
    /// targets written as JSON lines, Prometheus metrics. SIGHUP reloads the
    /// config and reopens the output file; SIGTERM stops gracefully.
    Serve(Box<serve::ServeArgs>),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff), generated from these definitions.
    Man,
}

/// Runs the command line: parses it, sets up logging and the runtime, runs
/// the subcommand and turns its error into a message and an exit code.
pub fn main() -> ExitCode {
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
            Command::Trace(args) => trace::trace(args).await,
            Command::Capture(args) => capture::capture(args).await.map(|()| ExitCode::SUCCESS),
            Command::Serve(args) => serve::serve(*args).await,
            Command::Completions { .. } | Command::Man => Ok(ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line, one record: a config error's snippet would otherwise
            // be several lines a log shipper reads as several events.
            let message = crate::error::one_line(&error_chain(&e));
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
            let code = e
                .downcast_ref::<TraceError>()
                .map(TraceError::code)
                .or_else(|| e.downcast_ref::<remote::AgentError>().map(|a| a.code));
            code.map_or(ExitCode::FAILURE, |c| ExitCode::from(c.exit_code()))
        }
    }
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

/// A flag's parser for one of the library's enums: `names` are what `--help`
/// and completions list, the enum's own `FromStr` (the one the API and the
/// config use too) reads the value.
pub fn choices<T>(
    names: impl IntoIterator<Item = PossibleValue>,
) -> impl TypedValueParser<Value = T>
where
    T: std::str::FromStr + Clone + Send + Sync + 'static,
    T::Err: std::fmt::Debug,
{
    PossibleValuesParser::new(names)
        .map(|name| name.parse::<T>().expect("only a listed name gets through"))
}

/// `--capture`'s parser: auto (eBPF when it loads, sockets otherwise),
/// ebpf or socket.
pub fn capture_choices() -> impl TypedValueParser<Value = CaptureMode> {
    choices::<CaptureMode>(CaptureMode::ALL.map(|m| PossibleValue::new(m.as_str())))
}

/// The error and its causes, each said once: a cause whose text its
/// message already contains is not repeated.
pub fn error_chain(e: &anyhow::Error) -> String {
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
