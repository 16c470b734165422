//! The peer tools the bench compares against, installed from Debian when
//! missing. A peer that cannot be installed is reported, not fatal.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::util::debian_package_installed;

/// Debian package and the program it provides.
const PEERS: &[(&str, &str)] = &[
    ("traceroute", "traceroute"),
    ("tcptraceroute", "tcptraceroute"),
    ("mtr-tiny", "mtr"),
    ("scamper", "scamper"),
    ("iperf3", "iperf3"),
    ("dublin-traceroute", "dublin-traceroute"),
    // Not peers: the wire truth and the tool the accuracy bench compares.
    ("tcpdump", "tcpdump"),
    ("iputils-ping", "ping"),
];

/// The Debian packages of every peer and measuring tool.
pub fn packages() -> impl Iterator<Item = &'static str> {
    PEERS.iter().map(|(package, _)| *package)
}

/// Why each unusable peer package cannot be used, by package name.
pub type Unavailable = BTreeMap<&'static str, String>;

/// Installs the missing peers; returns the ones still unusable, with the reason.
pub fn ensure() -> Unavailable {
    let apt = Path::new("/usr/bin/apt-get").exists() && Path::new("/usr/bin/dpkg-query").exists();
    let missing: Vec<&'static str> = PEERS
        .iter()
        .filter(|(package, program)| !installed(package, program, apt))
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        println!("bench: peer tools present");
        return Unavailable::new();
    }
    if !apt {
        return missing
            .into_iter()
            .map(|p| (p, "not installed, and no apt-get here".to_string()))
            .collect();
    }
    println!("bench: installing peer tools: {}", missing.join(" "));
    let _ = Command::new("apt-get").args(["update", "-q"]).output();
    let mut unavailable = Unavailable::new();
    for package in missing {
        if let Err(reason) = apt_install(package) {
            println!("bench: {package} unavailable: {reason}");
            unavailable.insert(package, reason);
        }
    }
    unavailable
}

/// One package at a time, so one failure leaves the others usable.
fn apt_install(package: &str) -> Result<(), String> {
    let out = Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .map_err(|e| format!("starting apt-get: {e}"))?;
    if out.status.success() && debian_package_installed(package) {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let reason = stderr
        .lines()
        .rfind(|l| l.starts_with("E:"))
        .unwrap_or("apt-get install failed");
    Err(reason.to_string())
}

/// On Debian the package decides (traceroute ships a `tcptraceroute` wrapper
/// that is not the real one); elsewhere the program on PATH does.
fn installed(package: &str, program: &str, apt: bool) -> bool {
    if apt {
        debian_package_installed(package)
    } else {
        traceroute_lab::require_tool(program).is_ok()
    }
}
