//! Builds the eBPF programs (crate `traceroute-ebpf`) for `bpfel-unknown-none`
//! and leaves the object in OUT_DIR, where `include_bytes_aligned!` embeds it.
//!
//! Two toolchains can do this, tried in order:
//! 1. Debian's `rustc-web` (`/usr/bin/rustc`) with the prebuilt `core` for the
//!    BPF target from `libstd-rust-web-dev-bpf`: no `-Z build-std` needed.
//! 2. A rustup nightly with `rust-src`: `cargo +nightly -Z build-std=core`.
//!
//! Both need `bpf-linker` on PATH or in `$CARGO_HOME/bin`. `cargo xtask setup`
//! installs what is missing. Without a toolchain the build still succeeds with an
//! empty object (host-only `cargo check/clippy/test` keep working) and the agent
//! falls back to socket capture, unless TRACEROUTE_REQUIRE_EBPF=1 (set by xtask).
//!
//! Hand-written rather than aya-build: aya-build 0.2.0 adds `-Z build-std` whenever
//! RUSTC_BOOTSTRAP is set, which breaks route 1.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "bpfel-unknown-none";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let ebpf_dir = root.join("traceroute-ebpf");
    let common_dir = root.join("traceroute-common");
    for p in [
        ebpf_dir.join("src"),
        ebpf_dir.join("Cargo.toml"),
        ebpf_dir.join("Cargo.lock"),
        common_dir.join("src"),
    ] {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    println!("cargo:rerun-if-env-changed=TRACEROUTE_REQUIRE_EBPF");
    println!("cargo:rerun-if-env-changed=TRACEROUTE_SKIP_EBPF");

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let object = out_dir.join("traceroute-ebpf.o");
    let required = env::var("TRACEROUTE_REQUIRE_EBPF").is_ok_and(|v| v == "1");

    if env::var("TRACEROUTE_SKIP_EBPF").is_ok_and(|v| v == "1") {
        write_placeholder(&object, "TRACEROUTE_SKIP_EBPF=1");
        return;
    }
    match build_ebpf(&ebpf_dir) {
        Ok(built) => {
            std::fs::copy(&built, &object).expect("copy eBPF object");
        }
        Err(why) if !required => write_placeholder(&object, &why),
        Err(why) => panic!("building the eBPF programs failed: {why}"),
    }
}

fn write_placeholder(object: &Path, why: &str) {
    println!(
        "cargo:warning=eBPF programs not built ({why}); the agent will use socket capture. Run `cargo xtask setup`."
    );
    std::fs::write(object, b"").expect("write placeholder object");
}

fn build_ebpf(ebpf_dir: &Path) -> Result<PathBuf, String> {
    let linker = find_bpf_linker().ok_or("bpf-linker not found")?;
    // Shared by debug, release, test and clippy builds so the BPF crate compiles once.
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| ebpf_dir.parent().unwrap().join("target"))
        .join("ebpf");
    let mut cmd = toolchain_command()?;
    cmd.current_dir(ebpf_dir)
        .args(["build", "--release", "--target", TARGET])
        .arg("--target-dir")
        .arg(&target_dir);
    let linker_dir = linker.parent().unwrap_or(Path::new("."));
    let path = env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![linker_dir.to_path_buf()];
    paths.extend(env::split_paths(&path));
    cmd.env("PATH", env::join_paths(paths).map_err(|e| e.to_string())?);
    // -Dwarnings: the crate's [lints] table is enforced here, since clippy
    // does not exist for the toolchain that builds the BPF target.
    cmd.env(
        "CARGO_ENCODED_RUSTFLAGS",
        ["-Cdebuginfo=2", "-Clink-arg=--btf", "-Dwarnings"].join("\x1f"),
    );
    let status = cmd
        .status()
        .map_err(|e| format!("running cargo for the eBPF crate: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build of traceroute-ebpf failed ({status})"));
    }
    Ok(target_dir
        .join(TARGET)
        .join("release")
        .join("traceroute-ebpf"))
}

/// Picks the toolchain that can build for the BPF target (see module docs).
fn toolchain_command() -> Result<Command, String> {
    let debian_core = Path::new("/usr/lib/rustlib").join(TARGET).join("lib");
    let debian_ok = Path::new("/usr/bin/rustc").exists()
        && Path::new("/usr/bin/cargo").exists()
        && std::fs::read_dir(&debian_core)
            .map(|mut d| {
                d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libcore-")))
            })
            .unwrap_or(false);
    if debian_ok {
        let mut cmd = Command::new("/usr/bin/cargo");
        strip_outer_cargo_env(&mut cmd);
        cmd.env("RUSTC", "/usr/bin/rustc")
            .env("RUSTC_BOOTSTRAP", "1");
        return Ok(cmd);
    }
    let nightly_src = Command::new("rustup")
        .args(["+nightly", "component", "list", "--installed"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("rust-src"))
        .unwrap_or(false);
    if nightly_src {
        let mut cmd = Command::new("rustup");
        strip_outer_cargo_env(&mut cmd);
        cmd.args(["run", "nightly", "cargo", "-Zbuild-std=core"]);
        // `rustup run` places its own cargo/rustc first on PATH.
        return Ok(cmd);
    }
    Err(format!(
        "no toolchain for {TARGET}: install Debian's rustc-web + libstd-rust-web-dev-bpf, or a rustup nightly with rust-src"
    ))
}

fn find_bpf_linker() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = env::var_os("PATH")
        .map(|p| env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join("bpf-linker"))
        .find(|p| p.is_file())
}

/// Removes the outer cargo's variables (RUSTC, RUSTFLAGS, CARGO_*, the rustup
/// toolchain...) from `cmd`: they describe the host build, not the BPF one.
fn strip_outer_cargo_env(cmd: &mut Command) {
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let inherited = (key.starts_with("CARGO_") && key != "CARGO_HOME")
            || key.starts_with("RUSTC")
            || key.starts_with("RUSTFLAGS")
            || key == "RUSTDOC"
            || key == "RUSTUP_TOOLCHAIN";
        if inherited {
            cmd.env_remove(&key);
        }
    }
}
