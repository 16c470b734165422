//! CPU time and peak memory of a process: from /proc while it runs (the
//! agent service), from wait4(2) when it ends (a peer run to completion).

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// CPU seconds (user + system) and peak resident memory.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    pub cpu_s: f64,
    pub peak_rss_kib: u64,
}

/// utime + stime of a running process, in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let ticks = cpu_ticks(&stat).context("odd /proc/PID/stat")?;
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100)
        .max(1);
    Ok(ticks as f64 / per_second as f64)
}

/// VmHWM (peak resident set) of a running process, in KiB.
pub fn peak_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status_kib(&status, "VmHWM").context("no VmHWM in /proc/PID/status")
}

/// VmRSS (current resident set) of a running process, in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status_kib(&status, "VmRSS").context("no VmRSS in /proc/PID/status")
}

/// Resets VmHWM to the current RSS (`clear_refs` 5), so the next reading
/// is the peak of what follows. False if the kernel refused.
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Waits for `child` (killed after `timeout`) and returns its exit status
/// with the CPU time and peak RSS of it and its reaped descendants.
pub fn wait_with_usage(mut child: Child, timeout: Duration) -> Result<(ExitStatus, Usage)> {
    let pid = child.id() as libc::pid_t;
    let deadline = Instant::now() + timeout;
    let mut status = 0;
    // Hand-written: neither std nor nix offers wait4(2), the one call that
    // gives the usage of this child alone (getrusage sums all children).
    // SAFETY: rusage is plain data; zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: our own child; status and usage are valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        if r < 0 {
            bail!("wait4({pid}): {}", std::io::Error::last_os_error());
        }
        if Instant::now() > deadline {
            // Not reaped yet, so the pid is still this child's.
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Reaped by hand: `child` must not be waited for again.
    drop(child);
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let used = Usage {
        cpu_s: seconds(usage.ru_utime) + seconds(usage.ru_stime),
        peak_rss_kib: usage.ru_maxrss.max(0) as u64,
    };
    Ok((ExitStatus::from_raw(status), used))
}

/// Fields 14 and 15 (utime, stime) of /proc/PID/stat, counted after the
/// parenthesised command name, which may itself contain spaces.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `Key:   1234 kB` of /proc/PID/status.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    let value = status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?;
    value.trim().trim_end_matches("kB").trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_ticks_after_the_command_name() {
        let stat = "4242 (tokio (rt) 1) S 1 4242 4242 0 -1 4194560 1234 0 0 0 150 27 0 0 20 0 9 0 100 1000 200";
        assert_eq!(cpu_ticks(stat), Some(177));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn reads_kib_from_status() {
        let status = "Name:\tagent\nVmPeak:\t  900 kB\nVmHWM:\t   12345 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(status_kib(status, "VmHWM"), Some(12345));
        assert_eq!(status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn own_process_has_usage() {
        let me = std::process::id();
        assert!(cpu_seconds(me).unwrap() >= 0.0);
        assert!(peak_rss_kib(me).unwrap() > 0);
    }

    #[test]
    fn measures_a_child() {
        let child = std::process::Command::new("true").spawn().unwrap();
        let (status, usage) = wait_with_usage(child, Duration::from_secs(10)).unwrap();
        assert!(status.success());
        assert!(usage.peak_rss_kib > 0);
    }
}
