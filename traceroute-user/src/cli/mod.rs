//! The command line's own parts: one file per subcommand (`trace` with its
//! output formats, live progress and `--explain`; `capture`; `serve`) and
//! what several share.

pub mod capture;
pub mod explain;
pub mod progress;
pub mod serve;
pub mod trace;

use traceroute_agent::capture::CaptureMode;

/// `--capture`: the library's [`CaptureMode`] as the CLI spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CaptureArg {
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
