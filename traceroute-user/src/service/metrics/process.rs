//! The standard `process_*` metrics every Prometheus client library exports
//! (CPU seconds, resident and virtual memory, open and maximum file
//! descriptors, start time), read from `/proc/self` at scrape time.
//!
//! Hand-written: it is a few fields of `/proc/self/stat`, and the crates that
//! do it (`procfs`, or `prometheus`'s process collector) would bring a second
//! metrics library or a large dependency tree for them.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

#[derive(Debug)]
pub struct ProcessCollector;

/// What `/proc/self` says about this process.
#[derive(Debug, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: f64,
    pub virtual_bytes: f64,
    pub start_time_seconds: f64,
    pub open_fds: f64,
    pub max_fds: f64,
}

impl ProcessStats {
    pub fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let ticks = sysconf(nix::unistd::SysconfVar::CLK_TCK)?;
        let page = sysconf(nix::unistd::SysconfVar::PAGE_SIZE)?;
        let mut stats = parse_stat(&stat, &boot, ticks, page)?;
        stats.open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as f64;
        stats.max_fds = parse_max_fds(&limits).unwrap_or(0.0);
        Some(stats)
    }
}

fn sysconf(var: nix::unistd::SysconfVar) -> Option<f64> {
    nix::unistd::sysconf(var).ok().flatten().map(|v| v as f64)
}

/// CPU, memory and start time from `/proc/self/stat` (fields after the
/// command name, which may hold spaces and parentheses) and `btime` from
/// `/proc/stat`.
fn parse_stat(stat: &str, proc_stat: &str, ticks: f64, page: f64) -> Option<ProcessStats> {
    let after_comm = &stat[stat.rfind(')')? + 2..];
    // Field 3 (state) is index 0 here; utime is field 14, stime 15,
    // starttime 22, vsize 23, rss 24.
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
    let boot_time = proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse::<f64>()
        .ok()?;
    Some(ProcessStats {
        cpu_seconds: (field(14)? + field(15)?) / ticks,
        resident_bytes: field(24)? * page,
        virtual_bytes: field(23)?,
        start_time_seconds: boot_time + field(22)? / ticks,
        open_fds: 0.0,
        max_fds: 0.0,
    })
}

fn parse_max_fds(limits: &str) -> Option<f64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    let m = encoder.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(s) = ProcessStats::read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(s.cpu_seconds);
        let m = encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?;
        cpu.encode(m)?;
        gauge(
            &mut encoder,
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            s.resident_bytes,
        )?;
        gauge(
            &mut encoder,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            s.virtual_bytes,
        )?;
        gauge(
            &mut encoder,
            "process_open_fds",
            "Number of open file descriptors",
            s.open_fds,
        )?;
        gauge(
            &mut encoder,
            "process_max_fds",
            "Maximum number of open file descriptors",
            s.max_fds,
        )?;
        gauge(
            &mut encoder,
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds",
            s.start_time_seconds,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_a_command_name_with_spaces_and_parentheses() {
        // pid (comm) state ppid ... utime=14 stime=15 ... starttime=22 vsize=23 rss=24
        let mut fields = vec!["0"; 50];
        fields[14 - 3] = "250";
        fields[15 - 3] = "50";
        fields[22 - 3] = "1000";
        fields[23 - 3] = "4096000";
        fields[24 - 3] = "10";
        let stat = format!("42 (a (b) c) {}", fields.join(" "));
        let s = parse_stat(&stat, "cpu 1 2\nbtime 1700000000\n", 100.0, 4096.0).unwrap();
        assert_eq!(s.cpu_seconds, 3.0);
        assert_eq!(s.resident_bytes, 40960.0);
        assert_eq!(s.virtual_bytes, 4096000.0);
        assert_eq!(s.start_time_seconds, 1700000010.0);
        let limits = "Limit  Soft Limit  Hard Limit  Units\nMax open files            1024                 524288               files\n";
        assert_eq!(parse_max_fds(limits), Some(1024.0));
    }

    #[test]
    fn this_process_can_be_read() {
        let s = ProcessStats::read().expect("/proc/self");
        assert!(s.resident_bytes > 0.0 && s.open_fds >= 3.0 && s.max_fds >= s.open_fds);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(s.start_time_seconds <= now + 1.0 && s.start_time_seconds > now - 86400.0 * 365.0);
    }
}
