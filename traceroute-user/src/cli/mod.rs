//! The command line's own parts: one file per subcommand (`trace` with its
//! output formats, live progress and `--explain`; `capture`; `serve`) and
//! what several share.

pub mod capture;
pub mod explain;
pub mod progress;
pub mod serve;
pub mod trace;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use traceroute_agent::capture::CaptureMode;

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
