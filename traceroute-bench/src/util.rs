//! Where things are, and who we run as.

use std::path::PathBuf;
use std::process::Command;

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The repository root (this crate lives one level below it).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the bench crate has a parent directory")
        .to_path_buf()
}

/// The release binary of the agent (`cargo xtask bench` builds it first).
pub fn agent_binary() -> PathBuf {
    crate::target_dir().join("release/traceroute-agent")
}

/// Whether Debian's package `name` is installed.
pub fn debian_package_installed(name: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", name])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}
