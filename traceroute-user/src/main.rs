//! `traceroute-agent`: the command line. It lives in the library's `cli`
//! module, beside the engine it drives.

fn main() -> std::process::ExitCode {
    traceroute_agent::cli::main()
}
