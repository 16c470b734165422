//! `cargo xtask setup`: installs what building the eBPF side and running the lab
//! need, and only what is missing. Every other command runs the same check first.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util::{is_root, run};

/// Debian packages for the eBPF build (docs/ARCHITECTURE.md, "Toolchain"): Debian's Rust built on
/// LLVM 22, a prebuilt `core` for bpfel-unknown-none, and what bpf-linker links.
const EBPF_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "libstd-rust-web-dev-bpf",
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
];

/// Debian packages the lab and the tests use: namespaces and nft for the lab,
/// ping and traceroute as ground truth, systemd-analyze for the unit file,
/// Graphviz's `dot` to check the DOT output, Go to decode records with the
/// system-probe client's structs (tests/go_client.rs), groff to render the
/// man page (tests/cli_docs.rs), Prometheus (`promtool` and a real server
/// scraping the agent) and curl to query it (tests/metrics_prometheus.rs),
/// tmux for a real terminal (tests/cli_output.rs), binutils to strip and
/// inspect the packaged binary (`cargo xtask package`), and ClickHouse's
/// server, the store the fleet tests write to (tests/clickhouse_fleet.rs).
const LAB_PACKAGES: &[&str] = &[
    "iproute2",
    "nftables",
    "iputils-ping",
    "traceroute",
    "procps",
    "systemd",
    "graphviz",
    "golang-go",
    "groff-base",
    "prometheus",
    "curl",
    "tmux",
    "binutils",
    "clickhouse-server",
];

const BPF_LINKER_VERSION: &str = "0.13.0";

/// The portable build (`cargo xtask package`): zig links against an old
/// glibc's symbol versions, driven by cargo-zigbuild. zig comes from its
/// PyPI wheel (`python3 -m ziglang`), cargo-zigbuild from crates.io.
const ZIGLANG_VERSION: &str = "0.15.2";
const CARGO_ZIGBUILD_VERSION: &str = "0.24.1";

pub fn ensure() -> Result<()> {
    let apt = Path::new("/usr/bin/apt-get").exists() && Path::new("/usr/bin/dpkg-query").exists();
    let nightly = rustup_nightly_with_src();
    let mut wanted: Vec<&str> = LAB_PACKAGES.to_vec();
    if !nightly || apt {
        wanted.extend(EBPF_PACKAGES);
    }
    if apt {
        install_debian_packages(&wanted)?;
    } else {
        check_tools_without_apt(nightly)?;
    }
    install_chdb()?;
    install_bpf_linker()
}

/// chdb (PyPI): a current ClickHouse engine in Python, so that the tests
/// run the schema and the queries on a current release too, beside the
/// Debian package's 18.16 server (tests/clickhouse_fleet.rs).
const CHDB_VERSION: &str = "4.4.0";

fn install_chdb() -> Result<()> {
    let present = || {
        Command::new("python3")
            .args([
                "-c",
                "import chdb, sys; sys.exit(chdb.__version__ != sys.argv[1])",
            ])
            .arg(CHDB_VERSION)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if present() {
        println!("setup: chdb {CHDB_VERSION} present");
        return Ok(());
    }
    println!("setup: installing chdb {CHDB_VERSION} (PyPI; about a minute)");
    pip_install(&format!("chdb=={CHDB_VERSION}"))?;
    if !present() {
        bail!("chdb {CHDB_VERSION} installed, but python3 cannot import it");
    }
    Ok(())
}

/// `python3 -m pip install WHEEL`. Debian's own python3 refuses to install
/// beside apt's packages (PEP 668); what we install is self-contained (zig)
/// or used by the tests only (chdb), so that is no risk.
fn pip_install(wheel: &str) -> Result<()> {
    let pip = |extra: &[&str]| {
        Command::new("python3")
            .args(["-m", "pip", "install", "--quiet"])
            .args(extra)
            .arg(wheel)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !pip(&[]) && !pip(&["--break-system-packages"]) {
        bail!("could not install {wheel} with python3 -m pip");
    }
    Ok(())
}

fn install_debian_packages(wanted: &[&str]) -> Result<()> {
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|p| !debian_package_installed(p))
        .collect();
    if missing.is_empty() {
        println!("setup: Debian packages present ({})", wanted.join(" "));
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages: {m}\n  install them with: sudo apt-get update && sudo apt-get install -y {m}",
            m = missing.join(" ")
        );
    }
    println!("setup: installing Debian packages: {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

pub(crate) fn debian_package_installed(name: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", name])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn check_tools_without_apt(nightly: bool) -> Result<()> {
    let mut missing = Vec::new();
    if !nightly {
        missing.push("a Rust nightly toolchain with rust-src: rustup toolchain install nightly --component rust-src");
    }
    for (tool, pkg) in [
        ("ip", "iproute2"),
        ("nft", "nftables"),
        ("ping", "iputils ping"),
        ("traceroute", "traceroute"),
        ("dot", "graphviz"),
        ("go", "golang (Go)"),
        ("groff", "groff"),
        ("promtool", "Prometheus"),
        ("curl", "curl"),
        ("tmux", "tmux"),
        ("clickhouse-server", "ClickHouse server"),
    ] {
        if which(tool).is_none() {
            missing.push(pkg);
        }
    }
    if missing.is_empty() {
        println!("setup: toolchain and lab tools present");
        Ok(())
    } else {
        bail!(
            "no apt-get here; install these with your package manager:\n  {}",
            missing.join("\n  ")
        )
    }
}

fn rustup_nightly_with_src() -> bool {
    Command::new("rustup")
        .args(["+nightly", "component", "list", "--installed"])
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("rust-src"))
        .unwrap_or(false)
}

fn install_bpf_linker() -> Result<()> {
    if let Some(path) = bpf_linker() {
        let out = Command::new(&path).arg("--version").output();
        let version = out
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        println!("setup: bpf-linker present ({version}, {})", path.display());
        return Ok(());
    }
    println!("setup: installing bpf-linker {BPF_LINKER_VERSION} (about a minute)");
    let llvm = Path::new("/usr/lib/llvm-22");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION]);
    if llvm.exists() {
        // Debian's LLVM 22 lives outside /usr; without LLVM_PREFIX the build script
        // looks in /usr and fails to link -lLLVM.
        cmd.args(["--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", llvm);
    }
    run(&mut cmd).context("cargo install bpf-linker")
}

pub fn bpf_linker() -> Option<PathBuf> {
    cargo_tool("bpf-linker")
}

/// A tool `cargo install` put in place: on PATH or in `$CARGO_HOME/bin`.
fn cargo_tool(name: &str) -> Option<PathBuf> {
    which(name).or_else(|| {
        let home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
        let p = home.join("bin").join(name);
        p.is_file().then_some(p)
    })
}

/// zig (from PyPI) and cargo-zigbuild (from crates.io), for the portable
/// binary; only `cargo xtask package` needs them.
pub fn ensure_portable_tools() -> Result<()> {
    let zig = || {
        which("zig").is_some()
            || Command::new("python3")
                .args(["-m", "ziglang", "version"])
                .output()
                .is_ok_and(|o| o.status.success())
    };
    if zig() {
        println!("setup: zig present");
    } else {
        println!("setup: installing zig {ZIGLANG_VERSION} (PyPI wheel ziglang)");
        let wheel = format!("ziglang=={ZIGLANG_VERSION}");
        pip_install(&wheel)?;
        if !zig() {
            bail!("{wheel} installed, but python3 -m ziglang does not run");
        }
    }
    if cargo_tool("cargo-zigbuild").is_some() {
        println!("setup: cargo-zigbuild present");
        return Ok(());
    }
    println!("setup: installing cargo-zigbuild {CARGO_ZIGBUILD_VERSION} (about two minutes)");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args([
        "install",
        "--locked",
        "cargo-zigbuild",
        "--version",
        CARGO_ZIGBUILD_VERSION,
    ]);
    run(&mut cmd).context("cargo install cargo-zigbuild")
}

pub fn which(tool: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}
