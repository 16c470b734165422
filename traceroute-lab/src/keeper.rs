//! Persistent labs for manual exploration (`cargo xtask lab up|down|list`).
//!
//! Delay forwarders and listeners are threads, so a lab needs a live
//! process. [`up_persistent`] re-executes the current binary as a *keeper*
//! (the binary's `main` must call [`maybe_run`] first thing); the keeper
//! builds the lab with the fixed prefix `trl-<name>-` (so
//! `ip netns exec trl-chain-src ping ...` works), records it in
//! `/run/traceroute-lab/<name>.json`, and tears it down on SIGTERM, SIGINT
//! or SIGHUP.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::lab::{Interface, Lab};
use crate::netns::{self, pid_alive, process_start_time};
use crate::{LabError, NAMES, named};

/// Set to `<topology>:<name>` in the keeper's environment.
pub const KEEPER_ENV: &str = "TRACEROUTE_LAB_KEEPER";
/// One `<name>.json` per persistent lab.
pub const STATE_DIR: &str = "/run/traceroute-lab";

/// What the state file records about a persistent lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistentLab {
    pub name: String,
    pub topology: String,
    /// The keeper process.
    pub pid: u32,
    /// Start time of `pid`, to tell the keeper from a recycled pid.
    pub start_time: Option<u64>,
    /// False while the keeper is still building the lab.
    pub ready: bool,
    pub nodes: Vec<NodeState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    pub name: String,
    pub namespace: String,
    pub interfaces: Vec<Interface>,
    /// Extra target addresses ([`Lab::targets`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<IpAddr>,
    /// How late the node's own ICMP errors leave, in milliseconds
    /// ([`Lab::icmp_delay`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_delay_ms: Option<u64>,
}

/// If this process was started as a keeper, runs the lab until a signal and
/// exits; otherwise returns at once. Call it first thing in `main`, before
/// any threads exist (the keeper blocks signals for all its threads).
pub fn maybe_run() {
    let Ok(spec) = std::env::var(KEEPER_ENV) else {
        return;
    };
    let code = match keep(&spec) {
        Ok(()) => 0,
        Err(e) => {
            // The parent waits for one line on our stdout.
            println!("error: {e}");
            1
        }
    };
    std::process::exit(code);
}

fn keep(spec: &str) -> Result<(), LabError> {
    let (topology, name) = spec
        .split_once(':')
        .ok_or_else(|| LabError::Persistent(format!("bad {KEEPER_ENV} value {spec:?}")))?;
    let signals = block_signals();
    let topo = named(topology).ok_or_else(|| unknown_topology(topology))?;
    let prefix = format!("trl-{name}-");
    let pid = std::process::id();
    let mut state = PersistentLab {
        name: name.to_string(),
        topology: topology.to_string(),
        pid,
        start_time: process_start_time(pid),
        ready: false,
        nodes: topo
            .node_names()
            .into_iter()
            .map(|n| NodeState {
                name: n.to_string(),
                namespace: format!("{prefix}{n}"),
                interfaces: Vec::new(),
                targets: Vec::new(),
                icmp_delay_ms: None,
            })
            .collect(),
    };
    // Written before any namespace exists, so [`cleanup_stale`] knows they are ours.
    write_state(&state)?;
    let lab = match Lab::up_with_prefix(&topo, &prefix) {
        Ok(lab) => lab,
        Err(e) => {
            let _ = std::fs::remove_file(state_path(name));
            return Err(e);
        }
    };
    for node in &mut state.nodes {
        node.interfaces = lab.interfaces(&node.name)?;
        node.targets = lab.targets(&node.name)?;
        node.icmp_delay_ms = lab.icmp_delay(&node.name)?.map(|d| d.as_millis() as u64);
    }
    state.ready = true;
    write_state(&state)?;
    println!("ready");
    let _ = std::io::stdout().flush();
    detach_stdio();
    let _ = signals.wait();
    drop(lab);
    let _ = std::fs::remove_file(state_path(name));
    Ok(())
}

/// Blocks the stop signals in the calling thread (threads started later
/// inherit the mask), so that [`SigSet::wait`] receives them.
fn block_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    let _ = set.thread_block();
    set
}

/// Nobody reads our output once the parent has seen "ready".
fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(&null);
        let _ = nix::unistd::dup2_stderr(&null);
    }
}

fn unknown_topology(name: &str) -> LabError {
    LabError::Persistent(format!(
        "unknown topology {name:?} (known: {})",
        NAMES.join(", ")
    ))
}

fn state_path(name: &str) -> PathBuf {
    Path::new(STATE_DIR).join(format!("{name}.json"))
}

fn write_state(state: &PersistentLab) -> Result<(), LabError> {
    std::fs::create_dir_all(STATE_DIR).map_err(LabError::io(format!("creating {STATE_DIR}")))?;
    let path = state_path(&state.name);
    let tmp = path.with_extension("json.tmp");
    let json = serde_json::to_string_pretty(state).expect("state serializes");
    std::fs::write(&tmp, json + "\n")
        .map_err(LabError::io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, &path).map_err(LabError::io(format!("writing {}", path.display())))
}

fn read_state(path: &Path) -> Option<PersistentLab> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn all_states() -> Vec<(PathBuf, Option<PersistentLab>)> {
    let Ok(dir) = std::fs::read_dir(STATE_DIR) else {
        return Vec::new();
    };
    let mut out: Vec<_> = dir
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let s = read_state(&p);
            (p, s)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Removes lab namespaces whose owner is gone: ephemeral labs of dead
/// processes and persistent labs whose keeper died, and the dead keepers'
/// state files. Returns the namespaces removed.
pub fn cleanup_stale() -> Result<Vec<String>, LabError> {
    let live_persistent = live_namespaces();
    let removed = netns::remove_namespaces(|ns| {
        netns::orphaned_ephemeral(ns) || (ns.starts_with("trl-") && !live_persistent.contains(ns))
    })?;
    remove_dead_state_files();
    Ok(removed)
}

fn alive(s: &PersistentLab) -> bool {
    pid_alive(s.pid, s.start_time)
}

/// Namespaces owned by live keepers (also while they are starting).
fn live_namespaces() -> HashSet<String> {
    all_states()
        .into_iter()
        .filter_map(|(_, s)| s)
        .filter(alive)
        .flat_map(|s| s.nodes)
        .map(|n| n.namespace)
        .collect()
}

fn remove_dead_state_files() {
    for (path, state) in all_states() {
        if state.is_none_or(|s| !alive(&s)) {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Brings up the named topology `name` as persistent lab `name`.
pub fn up_persistent(name: &str) -> Result<PersistentLab, LabError> {
    up_persistent_as(name, name)
}

/// Brings up named topology `topology` as persistent lab `name` (letters,
/// digits, `_`), so one topology can run several times. Returns once the lab
/// is ready; the keeper process outlives the caller.
pub fn up_persistent_as(topology: &str, name: &str) -> Result<PersistentLab, LabError> {
    if !valid_name(name) {
        return Err(LabError::Persistent(format!(
            "lab name {name:?} must be 1-32 characters of [A-Za-z0-9_]"
        )));
    }
    if named(topology).is_none() {
        return Err(unknown_topology(topology));
    }
    cleanup_stale()?;
    if let Some(s) = read_state(&state_path(name)).filter(alive) {
        return Err(LabError::Persistent(format!(
            "{name} is already up (keeper pid {})",
            s.pid
        )));
    }
    let exe = std::env::current_exe().map_err(LabError::io("locating the current executable"))?;
    let mut cmd = Command::new(&exe);
    cmd.env(KEEPER_ENV, format!("{topology}:{name}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // A new session keeps the keeper alive when the terminal that started it
    // goes away or gets Ctrl-C. std has no setsid for a child: pre_exec it.
    // SAFETY: setsid is async-signal-safe and touches no memory.
    unsafe {
        cmd.pre_exec(|| {
            let _ = nix::unistd::setsid();
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(LabError::io(format!("starting keeper {}", exe.display())))?;
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut line);
    if line.trim() != "ready" {
        let _ = child.wait();
        let why = line.trim();
        let why = if why.is_empty() {
            "keeper exited without a word; does main() call traceroute_lab::keeper::maybe_run() first?"
        } else {
            why
        };
        return Err(LabError::Persistent(format!("{name}: {why}")));
    }
    // Reap the keeper when it ends, so it does not linger as our zombie.
    std::thread::spawn(move || child.wait());
    read_state(&state_path(name))
        .ok_or_else(|| LabError::Persistent(format!("{name}: keeper wrote no state")))
}

/// Stops persistent lab `name` and removes anything it left behind.
/// Returns whether there was anything to remove.
pub fn down_persistent(name: &str) -> Result<bool, LabError> {
    if !valid_name(name) {
        return Err(LabError::Persistent(format!("bad lab name {name:?}")));
    }
    let path = state_path(name);
    let state = read_state(&path);
    let mut found = path.exists();
    if let Some(s) = state.as_ref().filter(|s| alive(s)) {
        let keeper = Pid::from_raw(s.pid as i32);
        let _ = kill(keeper, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while alive(s) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if alive(s) {
            let _ = kill(keeper, Signal::SIGKILL);
        }
    }
    let prefix = format!("trl-{name}-");
    let mut leftovers: Vec<String> = netns::list_netns()
        .into_iter()
        .filter(|ns| ns.starts_with(&prefix))
        .collect();
    if let Some(s) = &state {
        leftovers.extend(s.nodes.iter().map(|n| n.namespace.clone()));
    }
    for ns in leftovers {
        if Path::new(netns::NETNS_DIR).join(&ns).exists() {
            found = true;
            netns::del_netns(&ns)?;
        }
    }
    let _ = std::fs::remove_file(&path);
    Ok(found)
}

/// Persistent labs whose keeper is alive and ready.
pub fn list_persistent() -> Result<Vec<PersistentLab>, LabError> {
    Ok(all_states()
        .into_iter()
        .filter_map(|(_, s)| s)
        .filter(|s| s.ready && alive(s))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_topology_can_be_a_persistent_lab() {
        for name in NAMES {
            assert!(valid_name(name), "{name}");
        }
        assert!(!valid_name("chain-limited"));
        assert!(!valid_name(""));
    }
}
