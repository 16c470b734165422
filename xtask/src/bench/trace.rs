//! Benchmark 1: one trace through a chain with a silent hop, the agent
//! side by side with its peers, each process timed from outside, each tool
//! twice: at its own defaults (only name resolution turned off) and at
//! matched settings (3 probes per hop, max TTL 30, 1 s wait). Next to the
//! wall time: the probes each run sent, counted on src's interface, and
//! the hops it found against the lab's ground truth.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use traceroute_lab::{Family, Lab};

use super::counter::ProbeCounter;
use super::peers::Unavailable;
use super::{Spread, spread};
use crate::util::agent_binary;

/// How a tool is configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    /// The tool's own defaults; only reverse DNS is turned off (`-n`).
    Defaults,
    /// 3 probes per hop, max TTL 30, 1 s wait, for every tool.
    Matched,
}

impl Setting {
    pub const ALL: [Setting; 2] = [Setting::Defaults, Setting::Matched];

    pub fn label(self) -> &'static str {
        match self {
            Setting::Defaults => "defaults",
            Setting::Matched => "matched",
        }
    }
}

/// A run that takes longer than this is killed and counted as a failure.
const TIMEOUT_S: u32 = 120;

/// One tool's timed runs.
pub struct Measurement {
    /// Short name, e.g. "agent UDP".
    pub tool: String,
    pub setting: Setting,
    /// The command line run in src's namespace.
    pub command: String,
    /// Wall time of each run, in seconds.
    pub wall_s: Vec<f64>,
    /// Probes each run sent, counted on src's interface.
    pub probes: Vec<u64>,
    /// Probes the agent says each run sent (`probing.probes_sent` of its
    /// record), when its records carry it.
    pub probes_reported: Vec<u64>,
    /// Hops found in each run: the address per TTL, `*` for silence.
    pub hops: Vec<Vec<String>>,
    /// Extra facts, e.g. the agent's capture method.
    pub note: String,
    /// Why the tool could not be measured.
    pub unavailable: Option<String>,
}

impl Measurement {
    pub fn wall(&self) -> Option<Spread> {
        spread(&self.wall_s)
    }

    pub fn probes_sent(&self) -> Option<Spread> {
        let v: Vec<f64> = self.probes.iter().map(|&p| p as f64).collect();
        spread(&v)
    }

    /// Runs whose hops equal `expected`.
    pub fn matching_runs(&self, expected: &[String]) -> usize {
        self.hops
            .iter()
            .filter(|h| h.as_slice() == expected)
            .count()
    }
}

/// The whole trace benchmark.
pub struct TraceBench {
    pub runs: u32,
    pub destination: IpAddr,
    /// Ground truth: the lab's hops, then the destination.
    pub expected: Vec<String>,
    /// Every tool at every setting; per setting the agent's UDP trace
    /// first: every ratio is relative to it.
    pub measurements: Vec<Measurement>,
}

impl TraceBench {
    /// The agent's UDP trace at `setting`.
    fn baseline(&self, setting: Setting) -> Option<&Measurement> {
        self.measurements.iter().find(|m| m.setting == setting)
    }

    /// Median wall time of `m` over the agent's UDP median at the same setting.
    pub fn ratio(&self, m: &Measurement) -> Option<f64> {
        Some(m.wall()?.median / self.baseline(m.setting)?.wall()?.median)
    }

    /// Median probes of `m` over the agent's UDP median at the same setting.
    pub fn probe_ratio(&self, m: &Measurement) -> Option<f64> {
        let base = self.baseline(m.setting)?.probes_sent()?.median;
        (base > 0.0).then_some(m.probes_sent()?.median / base)
    }
}

/// How to run one tool and read its output.
struct Tool {
    name: &'static str,
    /// Debian package of a peer; `None` for the agent, whose failures abort the bench.
    package: Option<&'static str>,
    program: String,
    args: Vec<String>,
}

impl Tool {
    fn agent(name: &'static str, dst: &str, protocol: &[&str], matched: &[&str]) -> Tool {
        let mut args = vec!["trace", dst, "--format", "json"];
        args.extend(protocol);
        args.extend(matched);
        Tool {
            name,
            package: None,
            program: agent_binary().to_string_lossy().into_owned(),
            args: args.into_iter().map(String::from).collect(),
        }
    }

    fn peer(name: &'static str, package: &'static str, program: &str, args: &[&str]) -> Tool {
        Tool {
            name,
            package: Some(package),
            program: program.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn command_line(&self) -> String {
        let program = if self.package.is_none() {
            "traceroute-agent"
        } else {
            &self.program
        };
        let quoted = self.args.iter().map(|a| {
            if a.contains(' ') {
                format!("\"{a}\"")
            } else {
                a.clone()
            }
        });
        std::iter::once(program.to_string())
            .chain(quoted)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Every tool at `setting`. Defaults: the plain command plus `-n` (the
/// agent does no reverse DNS by default; `--format json` only picks the
/// output). Matched: 3 probes per hop, 1 s wait, max TTL 30 for all.
fn tools(dst: &str, setting: Setting) -> Vec<Tool> {
    let matched = setting == Setting::Matched;
    let pick = |flags: &'static [&'static str]| if matched { flags } else { &[] };
    let agent_matched = pick(&["-q", "3", "--timeout-ms", "1000", "-m", "30"]);
    let tr_matched = pick(&["-w", "1", "-q", "3", "-m", "30"]);
    let mtr_matched = pick(&["--report-cycles", "3", "-m", "30"]);
    let scamper_matched = if matched { " -q 3 -w 1 -m 30" } else { "" };
    let agent = |name, protocol: &[&str]| Tool::agent(name, dst, protocol, agent_matched);
    let tr = |name, extra: &[&str]| {
        let mut args = vec!["-n"];
        args.extend(extra);
        args.extend(tr_matched);
        args.push(dst);
        Tool::peer(name, "traceroute", "traceroute", &args)
    };
    let mut tcptraceroute = vec!["-n"];
    tcptraceroute.extend(tr_matched);
    tcptraceroute.extend([dst, "80"]);
    let mtr = |name, extra: &[&str]| {
        let mut args = vec!["-n", "--report"];
        args.extend(mtr_matched);
        args.extend(extra);
        args.push(dst);
        Tool::peer(name, "mtr-tiny", "mtr", &args)
    };
    let scamper = |name, method: &str| {
        let command = format!("trace -P {method}{scamper_matched}");
        Tool::peer(name, "scamper", "scamper", &["-c", &command, "-i", dst])
    };
    vec![
        agent("agent UDP", &["-U"]),
        agent("agent TCP:80", &["-T", "-p", "80"]),
        agent("agent ICMP", &["-I"]),
        tr("traceroute UDP", &[]),
        tr("traceroute TCP:80", &["-T", "-p", "80"]),
        tr("traceroute ICMP", &["-I"]),
        Tool::peer(
            "tcptraceroute",
            "tcptraceroute",
            "tcptraceroute",
            &tcptraceroute,
        ),
        mtr("mtr ICMP", &[]),
        mtr("mtr TCP:80", &["--tcp", "-P", "80"]),
        scamper("scamper UDP-paris", "udp-paris"),
        scamper("scamper ICMP-paris", "icmp-paris"),
    ]
}

pub fn run(runs: u32, unavailable: &Unavailable) -> Result<TraceBench> {
    println!("bench: lab `chain`: src - r1 - r2 - r3 (silent) - r4 - dst");
    let lab = Lab::up(&traceroute_lab::named::chain()).context("bringing up the chain lab")?;
    let counter = ProbeCounter::install(&lab, "src", lab.ifname("src", "r1")?)?;
    let destination = lab.primary("dst", Family::V4)?;
    let mut expected: Vec<String> = lab
        .expected_hops("src", "dst", Family::V4)?
        .into_iter()
        .map(|hop| hop.map_or("*".to_string(), |a| a.to_string()))
        .collect();
    expected.push(destination.to_string());

    let dst = destination.to_string();
    let tools: Vec<(Setting, Tool)> = Setting::ALL
        .iter()
        .flat_map(|&s| tools(&dst, s).into_iter().map(move |t| (s, t)))
        .collect();
    let mut measurements: Vec<Measurement> = tools
        .iter()
        .map(|(setting, t)| Measurement {
            tool: t.name.to_string(),
            setting: *setting,
            command: t.command_line(),
            wall_s: Vec::new(),
            probes: Vec::new(),
            probes_reported: Vec::new(),
            hops: Vec::new(),
            note: String::new(),
            unavailable: t.package.and_then(|p| unavailable.get(p).cloned()),
        })
        .collect();

    // Round-robin, so background load spreads over all tools alike.
    for run in 1..=runs {
        println!("bench: trace run {run}/{runs}");
        for ((_, tool), m) in tools.iter().zip(&mut measurements) {
            if m.unavailable.is_some() {
                continue;
            }
            let before = counter.read(&lab)?;
            let outcome = time_once(&lab, tool);
            let probes = counter.read(&lab)? - before;
            match outcome {
                Ok(once) => {
                    m.wall_s.push(once.wall_s);
                    m.probes.push(probes);
                    m.probes_reported.extend(once.probes_reported);
                    m.hops.push(once.hops);
                    m.note = once.note;
                }
                Err(reason) if tool.package.is_none() => {
                    bail!("the agent failed: `{}`: {reason}", m.command)
                }
                Err(reason) => {
                    println!("bench: {} failed, leaving it out: {reason}", tool.name);
                    m.unavailable = Some(format!("failed: {reason}"));
                }
            }
        }
    }
    Ok(TraceBench {
        runs,
        destination,
        expected,
        measurements,
    })
}

/// What one run of a tool gave.
struct Once {
    wall_s: f64,
    hops: Vec<String>,
    note: String,
    probes_reported: Option<u64>,
}

/// Runs `tool` once in src's namespace.
fn time_once(lab: &Lab, tool: &Tool) -> Result<Once, String> {
    let mut cmd = lab.command("src", "timeout").map_err(|e| e.to_string())?;
    cmd.arg(TIMEOUT_S.to_string())
        .arg(&tool.program)
        .args(&tool.args);
    let start = Instant::now();
    let out = cmd.output().map_err(|e| format!("starting: {e}"))?;
    let wall = start.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.code() == Some(124) {
        return Err(format!("timed out after {TIMEOUT_S} s"));
    }
    if !out.status.success() {
        return Err(format!(
            "{}: {}",
            out.status,
            error_line(&tool.program, &out.stderr)
        ));
    }
    let (hops, note, probes_reported) = if tool.package.is_none() {
        let (hops, note) = agent_hops(&stdout)?;
        (hops, note, agent_probes(&stdout))
    } else {
        (text_hops(&stdout), String::new(), None)
    };
    if hops.is_empty() {
        return Err(format!("no hops in its output: {:?}", stdout.trim()));
    }
    Ok(Once {
        wall_s: wall,
        hops,
        note,
        probes_reported,
    })
}

/// `probing.probes_sent` of the agent's record, where it has one.
fn agent_probes(json: &str) -> Option<u64> {
    let path: serde_json::Value = serde_json::from_str(json.trim()).ok()?;
    path["probing"]["probes_sent"].as_u64()
}

/// The line of `stderr` that names the problem: the first mentioning an
/// error or starting with `program:`, else the first one.
fn error_line(program: &str, stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let name = program.rsplit('/').next().unwrap_or(program);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let telling =
        |l: &&&str| l.to_lowercase().contains("error") || l.starts_with(&format!("{name}:"));
    let line = lines.iter().find(telling).or(lines.first());
    line.map_or("(no message)".to_string(), |l| l.to_string())
}

/// Hops of the agent's NetworkPath JSON, per TTL the first address any run
/// saw; the note names the capture method.
fn agent_hops(json: &str) -> Result<(Vec<String>, String), String> {
    let path: serde_json::Value =
        serde_json::from_str(json.trim()).map_err(|e| format!("output is not JSON: {e}"))?;
    let runs = path["traceroute"]["runs"]
        .as_array()
        .ok_or("no traceroute.runs in its output")?;
    let mut by_ttl: BTreeMap<u64, String> = BTreeMap::new();
    for hop in runs.iter().filter_map(|r| r["hops"].as_array()).flatten() {
        let Some(ttl) = hop["ttl"].as_u64() else {
            continue;
        };
        let ip = hop["ip_address"].as_str().unwrap_or("");
        let entry = by_ttl.entry(ttl).or_insert_with(|| "*".to_string());
        if entry == "*" && !ip.is_empty() {
            *entry = ip.to_string();
        }
    }
    let max = by_ttl.keys().last().copied().unwrap_or(0);
    let hops = (1..=max)
        .map(|ttl| by_ttl.get(&ttl).cloned().unwrap_or_else(|| "*".into()))
        .collect();
    let method = path["capture"]["method"].as_str().unwrap_or("?");
    Ok((hops, format!("capture: {method}")))
}

/// Hops of traceroute-style text: lines starting with the TTL (`3`, or mtr's
/// `3.|--`), then the first address on the line, or `*` (also for mtr's `???`).
fn text_hops(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.next()?.trim_end_matches(".|--").parse::<u8>().ok()?;
            Some(
                words
                    .find_map(|w| w.parse::<IpAddr>().ok())
                    .map_or("*".to_string(), |a| a.to_string()),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(hops: &[&str]) -> Vec<String> {
        hops.iter().map(|h| h.to_string()).collect()
    }

    const EXPECTED: &[&str] = &["198.18.1.2", "198.18.2.2", "*", "198.18.4.2", "198.18.5.2"];

    #[test]
    fn picks_the_telling_stderr_line() {
        let clap = b"error: unexpected argument '--bogus' found\n\nUsage: x\n\nFor more information, try '--help'.\n";
        assert_eq!(
            error_line("/x/traceroute-agent", clap),
            "error: unexpected argument '--bogus' found"
        );
        let mtr = b"mtr: unrecognized option '--bogus'\nSee the 'man 8 mtr' for details.\n";
        assert_eq!(error_line("mtr", mtr), "mtr: unrecognized option '--bogus'");
        let agent = b" WARN something\ntraceroute-agent: no route to host\n";
        assert_eq!(
            error_line("/x/traceroute-agent", agent),
            "traceroute-agent: no route to host"
        );
        assert_eq!(error_line("tr", b"Bad option\n"), "Bad option");
        assert_eq!(error_line("tr", b""), "(no message)");
    }

    #[test]
    fn reads_traceroute() {
        let out = "traceroute to 198.18.5.2 (198.18.5.2), 30 hops max, 60 byte packets
 1  198.18.1.2  0.898 ms  0.804 ms  0.776 ms
 2  198.18.2.2  0.719 ms  0.659 ms  0.632 ms
 3  * * *
 4  * 198.18.4.2  0.316 ms  0.281 ms
 5  198.18.5.2  0.249 ms  0.190 ms  0.155 ms
";
        assert_eq!(text_hops(out), v(EXPECTED));
    }

    #[test]
    fn reads_tcptraceroute_and_scamper() {
        let tcp = "Tracing the path to 198.18.5.2 on TCP port 80 (http), 30 hops max
 1  198.18.1.2  0.100 ms  0.057 ms  0.086 ms
 2  198.18.2.2  0.110 ms  0.123 ms  0.098 ms
 3  * * *
 4  198.18.4.2  0.130 ms  0.136 ms  0.111 ms
 5  198.18.5.2 [open]  0.128 ms  0.120 ms  0.155 ms
";
        assert_eq!(text_hops(tcp), v(EXPECTED));
        let scamper = "traceroute from 198.18.1.1 to 198.18.5.2
 1  198.18.1.2  0.048 ms
 2  198.18.2.2  0.079 ms
 3  *
 4  198.18.4.2  0.115 ms
 5  198.18.5.2  0.122 ms
";
        assert_eq!(text_hops(scamper), v(EXPECTED));
    }

    #[test]
    fn reads_mtr() {
        let out = "Start: 2026-11-25T00:35:26+0000
HOST: vm                          Loss%   Snt   Last   Avg  Best  Wrst StDev
  1.|-- 198.18.1.2                 0.0%     3    0.1   0.1   0.1   0.1   0.0
  2.|-- 198.18.2.2                 0.0%     3    0.1   0.1   0.1   0.1   0.0
  3.|-- ???                       100.0     3    0.0   0.0   0.0   0.0   0.0
  4.|-- 198.18.4.2                 0.0%     3    0.2   0.1   0.1   0.2   0.0
  5.|-- 198.18.5.2                 0.0%     3    0.1   0.1   0.1   0.1   0.0
";
        assert_eq!(text_hops(out), v(EXPECTED));
    }

    #[test]
    fn reads_agent_json_across_runs() {
        let json = r#"{"traceroute":{"runs":[
            {"hops":[{"ttl":1,"ip_address":"198.18.1.2"},{"ttl":2,"ip_address":""},
                     {"ttl":3,"ip_address":""},{"ttl":5,"ip_address":"198.18.5.2"}]},
            {"hops":[{"ttl":1,"ip_address":"198.18.1.2"},{"ttl":2,"ip_address":"198.18.2.2"},
                     {"ttl":3,"ip_address":""},{"ttl":4,"ip_address":"198.18.4.2"}]}]},
            "capture":{"method":"ebpf"}}"#;
        let (hops, note) = agent_hops(json).unwrap();
        assert_eq!(hops, v(EXPECTED));
        assert_eq!(note, "capture: ebpf");
        assert!(agent_hops("not json").is_err());
        assert_eq!(agent_probes(json), None, "today's records");
        assert_eq!(agent_probes(r#"{"probing":{"probes_sent":27}}"#), Some(27));
    }

    #[test]
    fn defaults_add_only_numeric_output() {
        let commands = |s| -> Vec<String> {
            tools("198.18.5.2", s)
                .iter()
                .map(Tool::command_line)
                .collect()
        };
        let defaults = commands(Setting::Defaults);
        assert_eq!(
            defaults[0],
            "traceroute-agent trace 198.18.5.2 --format json -U"
        );
        assert!(defaults.contains(&"traceroute -n 198.18.5.2".to_string()));
        assert!(defaults.contains(&"tcptraceroute -n 198.18.5.2 80".to_string()));
        assert!(defaults.contains(&"mtr -n --report 198.18.5.2".to_string()));
        assert!(defaults.contains(&"scamper -c \"trace -P udp-paris\" -i 198.18.5.2".to_string()));
        let matched = commands(Setting::Matched);
        assert!(matched.contains(&"traceroute -n -w 1 -q 3 -m 30 198.18.5.2".to_string()));
        assert!(matched.contains(
            &"mtr -n --report --report-cycles 3 -m 30 --tcp -P 80 198.18.5.2".to_string()
        ));
        assert_eq!(defaults.len(), matched.len());
    }
}
