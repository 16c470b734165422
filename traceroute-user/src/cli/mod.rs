//! The command line's own parts: the `trace` subcommand (flags, output
//! formats, live progress, `--explain`) and what several subcommands share.

pub mod explain;
pub mod progress;
pub mod trace;

use traceroute_user::capture::CaptureMode;

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
