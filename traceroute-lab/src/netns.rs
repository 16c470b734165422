//! Namespace plumbing: running tools, entering namespaces, stale cleanup.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

use crate::LabError;

/// Where `ip netns` keeps its namespace handles.
pub(crate) const NETNS_DIR: &str = "/run/netns";

/// `ip netns add`/`del` race on the first mount of /run/netns; serialize them.
static NETNS_LOCK: Mutex<()> = Mutex::new(());

/// Debian package providing a tool, for error messages.
fn package_of(tool: &str) -> &str {
    match tool {
        "ip" | "tc" | "ss" => "iproute2",
        "nft" => "nftables",
        "sysctl" | "ps" | "pkill" => "procps",
        "ping" => "iputils-ping",
        "traceroute" => "traceroute",
        "tcptraceroute" => "tcptraceroute",
        "mtr" => "mtr-tiny",
        "scamper" => "scamper",
        "dublin-traceroute" => "dublin-traceroute",
        "hping3" => "hping3",
        "nc" => "netcat-openbsd",
        "tcpdump" => "tcpdump",
        "curl" => "curl",
        "clickhouse-server" => "clickhouse-server",
        other => other,
    }
}

/// Finds `tool` on PATH (plus the sbin directories root tools live in), or
/// says which Debian package to install.
pub fn require_tool(tool: &str) -> Result<PathBuf, LabError> {
    if tool.contains('/') {
        return Ok(PathBuf::from(tool));
    }
    let path = std::env::var("PATH").unwrap_or_default();
    let dirs = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"]);
    for dir in dirs.filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(tool);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(LabError::MissingTool {
        tool: tool.to_string(),
        package: package_of(tool).to_string(),
    })
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a configuration command; a non-zero exit is an error carrying stderr.
pub(crate) fn run(cmd: &mut Command, stdin: Option<&str>) -> Result<Output, LabError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    require_tool(&program)?;
    let what = describe(cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(LabError::io(format!("spawning `{what}`")))?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(input.as_bytes())
            .map_err(LabError::io(format!("writing to `{what}`")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(LabError::io(format!("waiting for `{what}`")))?;
    if !out.status.success() {
        let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if let Some(input) = stdin {
            stderr = format!("{stderr}\n--- input ---\n{input}");
        }
        return Err(LabError::Command {
            command: what,
            status: out.status.to_string(),
            stderr,
        });
    }
    Ok(out)
}

/// Moves the calling thread (only it: network namespaces are per thread)
/// into namespace `ns`. Sockets it opens afterwards stay in `ns` for good.
pub fn enter_netns(ns: &str) -> Result<(), LabError> {
    let path = Path::new(NETNS_DIR).join(ns);
    let file = File::open(&path).map_err(LabError::io(format!("opening {}", path.display())))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| LabError::Io {
        context: format!("setns into {ns}"),
        source: e.into(),
    })
}

pub(crate) fn list_netns() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

pub(crate) fn add_netns(name: &str) -> Result<(), LabError> {
    let _guard = NETNS_LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    run(Command::new("ip").args(["netns", "add", name]), None).map(drop)
}

pub(crate) fn del_netns(name: &str) -> Result<(), LabError> {
    let _guard = NETNS_LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !Path::new(NETNS_DIR).join(name).exists() {
        return Ok(());
    }
    run(Command::new("ip").args(["netns", "del", name]), None).map(drop)
}

/// Start time of a process (clock ticks since boot), to tell a live owner
/// from a recycled pid. `None` if it does not exist or is a zombie.
pub(crate) fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: state is field 3, starttime 22.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

pub(crate) fn pid_alive(pid: u32, start_time: Option<u64>) -> bool {
    match (process_start_time(pid), start_time) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(now), Some(expected)) => now == expected,
    }
}

/// Owner pid of an ephemeral lab namespace `trl<pid>-<n>-<node>`.
pub(crate) fn ephemeral_owner(ns: &str) -> Option<u32> {
    let rest = ns.strip_prefix("trl")?;
    let (pid, rest) = rest.split_once('-')?;
    let (n, _node) = rest.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// Removes every lab namespace (`trl…`) for which `stale` holds; returns
/// their names.
pub(crate) fn remove_namespaces(stale: impl Fn(&str) -> bool) -> Result<Vec<String>, LabError> {
    let mut removed = Vec::new();
    for ns in list_netns() {
        if ns.starts_with("trl") && stale(&ns) {
            del_netns(&ns)?;
            removed.push(ns);
        }
    }
    Ok(removed)
}

/// Whether `ns` is an ephemeral lab namespace of a process that is gone
/// (e.g. a test run killed with SIGKILL).
pub(crate) fn orphaned_ephemeral(ns: &str) -> bool {
    ephemeral_owner(ns).is_some_and(|pid| !pid_alive(pid, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_owner_pid() {
        assert_eq!(ephemeral_owner("trl123-4-src"), Some(123));
        assert_eq!(ephemeral_owner("trl123-4-my-node"), Some(123));
        assert_eq!(ephemeral_owner("trl-chain-src"), None);
        assert_eq!(ephemeral_owner("other"), None);
    }

    #[test]
    fn own_process_is_alive() {
        let me = std::process::id();
        let start = process_start_time(me);
        assert!(start.is_some());
        assert!(pid_alive(me, start));
        assert!(!pid_alive(me, start.map(|s| s + 1)));
    }

    #[test]
    fn missing_tool_names_package() {
        let err = require_tool("definitely-not-a-tool-xyz")
            .unwrap_err()
            .to_string();
        assert!(err.contains("definitely-not-a-tool-xyz"), "{err}");
        assert!(matches!(
            require_tool("nft"),
            Ok(_) | Err(LabError::MissingTool { .. })
        ));
    }
}
