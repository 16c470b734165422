//! `cargo xtask install`: the agent as a system service.
//!
//! Installs the release binary to /usr/local/bin, the systemd unit to
//! /etc/systemd/system, the sample config to /etc/traceroute-agent/config.toml
//! (an existing config is never overwritten), and creates the unprivileged
//! `traceroute-agent` system user the unit runs as. `--destdir DIR` stages
//! everything under DIR instead (packaging; no user, no systemctl).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util::{is_root, root, run};

pub const USER: &str = "traceroute-agent";

#[derive(clap::Args)]
pub struct InstallArgs {
    /// Stage the files under this directory instead of /.
    #[arg(long)]
    pub destdir: Option<PathBuf>,
    /// Install this binary instead of building target/release/traceroute-agent.
    #[arg(long)]
    pub bin: Option<PathBuf>,
}

/// Copies `from` to `to` via a temporary file and a rename, so a running
/// binary or a reader never sees half a file.
fn install_file(from: &Path, to: &Path, mode: u32) -> Result<()> {
    let dir = to.parent().context("destination has no directory")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        to.file_name().unwrap_or_default().to_string_lossy()
    ));
    fs::copy(from, &tmp).with_context(|| format!("copying {}", from.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
    fs::rename(&tmp, to).with_context(|| format!("installing {}", to.display()))?;
    println!("install: {}", to.display());
    Ok(())
}

fn user_exists(name: &str) -> bool {
    Command::new("getent")
        .args(["passwd", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn run_install(args: InstallArgs) -> Result<()> {
    let staged = args.destdir.is_some();
    if !staged && !is_root() {
        bail!("installing to / needs root: sudo -E cargo xtask install (or --destdir DIR)");
    }
    let binary = crate::release_binary(args.bin)?;
    let dest = args.destdir.unwrap_or_else(|| PathBuf::from("/"));
    let at = |p: &str| dest.join(p.trim_start_matches('/'));
    let packaging = root().join("packaging");

    if !staged && !user_exists(USER) {
        println!("install: creating system user {USER}");
        run(Command::new("useradd").args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            "--comment",
            "traceroute-agent service",
            USER,
        ]))?;
    }

    install_file(&binary, &at("/usr/local/bin/traceroute-agent"), 0o755)?;
    install_file(
        &packaging.join("traceroute-agent.service"),
        &at("/etc/systemd/system/traceroute-agent.service"),
        0o644,
    )?;
    let config = at("/etc/traceroute-agent/config.toml");
    if config.exists() {
        println!("install: keeping the existing {}", config.display());
    } else {
        install_file(&packaging.join("config.toml"), &config, 0o640)?;
        if !staged {
            run(Command::new("chgrp").arg(USER).arg(&config))?;
        }
    }

    if !staged && Path::new("/run/systemd/system").exists() {
        run(Command::new("systemctl").arg("daemon-reload"))?;
    }
    println!(
        "install: done. Start it with: systemctl enable --now traceroute-agent\n\
         API socket: /run/traceroute-agent/traceroute-agent.sock, mode 0660, group {USER}: \
         add the users of the API to that group"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_install_places_every_file_and_keeps_an_edited_config() {
        let dest = std::env::temp_dir().join(format!("trl-install-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dest);
        let bin = std::env::current_exe().unwrap();
        let args = || InstallArgs {
            destdir: Some(dest.clone()),
            bin: Some(bin.clone()),
        };
        run_install(args()).unwrap();
        let mode = |p: &str| fs::metadata(dest.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("usr/local/bin/traceroute-agent"), 0o755);
        assert_eq!(mode("etc/systemd/system/traceroute-agent.service"), 0o644);
        assert_eq!(mode("etc/traceroute-agent/config.toml"), 0o640);
        let unit =
            fs::read_to_string(dest.join("etc/systemd/system/traceroute-agent.service")).unwrap();
        assert!(unit.contains("ExecStart=/usr/local/bin/traceroute-agent serve"));

        let config = dest.join("etc/traceroute-agent/config.toml");
        fs::write(&config, "# edited by the operator\n").unwrap();
        run_install(args()).unwrap();
        assert_eq!(
            fs::read_to_string(&config).unwrap(),
            "# edited by the operator\n"
        );
        fs::remove_dir_all(&dest).unwrap();
    }
}
