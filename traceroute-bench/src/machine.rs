//! What a report was measured on: the machine and every tool's version, so a
//! reader can tell whether their figures should match.

use std::process::Command;

use serde_json::{Value, json};

use super::peers;

pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub os: String,
    /// (tool, version), the agent first.
    pub versions: Vec<(String, String)>,
}

impl Machine {
    pub fn read(agent_version: String) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
        let mut versions = vec![("traceroute-agent".to_string(), agent_version)];
        versions.push(("rustc".into(), first_line("rustc", &["--version"])));
        for package in peers::packages() {
            versions.push((package.to_string(), debian_version(package)));
        }
        Machine {
            cpu: field(&cpuinfo, "model name").unwrap_or_else(|| "unknown".into()),
            cores: std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
            memory_gib: field(&meminfo, "MemTotal")
                .and_then(|v| v.trim_end_matches(" kB").trim().parse::<f64>().ok())
                .map_or(0.0, |kib| kib / 1024.0 / 1024.0),
            kernel: first_line("uname", &["-r"]),
            os: field(&os, "PRETTY_NAME")
                .map(|v| v.trim_start_matches("=").trim_matches('"').to_string())
                .unwrap_or_else(|| "unknown".into()),
            versions,
        }
    }

    pub fn markdown(&self) -> String {
        let mut out = format!(
            "Machine: {}, {} cores, {:.0} GiB, kernel {}, {}.\n\nVersions: ",
            self.cpu, self.cores, self.memory_gib, self.kernel, self.os
        );
        let list: Vec<String> = self
            .versions
            .iter()
            .map(|(tool, version)| format!("{tool} {version}"))
            .collect();
        out += &list.join(", ");
        out += ".\n";
        out
    }

    pub fn json(&self) -> Value {
        let versions: serde_json::Map<String, Value> = self
            .versions
            .iter()
            .map(|(t, v)| (t.clone(), json!(v)))
            .collect();
        json!({
            "cpu": self.cpu,
            "cores": self.cores,
            "memory_gib": (self.memory_gib * 10.0).round() / 10.0,
            "kernel": self.kernel,
            "os": self.os,
            "versions": versions,
        })
    }
}

/// `key : value` (cpuinfo, meminfo) or `KEY=value` (os-release), first match.
fn field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?;
        let rest = rest.trim_start();
        let value = rest.strip_prefix(':').or_else(|| rest.strip_prefix('='))?;
        Some(value.trim().to_string())
    })
}

fn first_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unavailable".into())
}

fn debian_version(package: &str) -> String {
    let v = first_line("dpkg-query", &["-W", "-f", "${Version}", package]);
    if v.is_empty() {
        "unavailable".into()
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_of_proc_and_os_release() {
        let cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(
            field(cpuinfo, "model name").as_deref(),
            Some("AMD EPYC 7B13")
        );
        let meminfo = "MemTotal:       24598132 kB\n";
        assert_eq!(field(meminfo, "MemTotal").as_deref(), Some("24598132 kB"));
        let os = "NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
        assert_eq!(
            field(os, "PRETTY_NAME")
                .map(|v| v.trim_matches('"').to_string())
                .as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(field(os, "VERSION"), None);
    }
}
