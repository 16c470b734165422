//! Benchmark 1: one trace through a lab path with a silent hop, the agent
//! side by side with its peers, each tool twice: at its own defaults (only
//! name resolution turned off) and at matched settings (3 probes per hop,
//! max TTL 30, 1 s wait). Next to the wall time: the probes each run sent,
//! counted on src's interface, and the hops it found against the lab's
//! ground truth.
//!
//! Two labs, both with the kernel's default ICMP rate limits (real routers
//! rate-limit): `chain_limited` (direct links) and `delay_silent` (far hops
//! about 40 ms away). The agent is measured as a one-shot CLI process and
//! through the API of one `traceroute-agent serve` per lab, started before
//! the first run and kept running: each request is timed as its client
//! sees it (connect to the whole answer read). Before every timed run the
//! bench pauses [`REFILL`] so every tool finds every router's ICMP budget
//! full.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use traceroute_lab::{Family, IcmpRateLimit, Lab, Topology, named};

use super::counter::ProbeCounter;
use super::load::WorkDir;
use super::load::service::Service;
use super::peers::Unavailable;
use super::{REFILL, Spread, spread};
use crate::agent_binary;

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

/// Probe protocol, as the row names spell it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
    Icmp,
}

impl Proto {
    pub const ALL: [Proto; 3] = [Proto::Udp, Proto::Tcp, Proto::Icmp];

    pub fn label(self) -> &'static str {
        match self {
            Proto::Udp => "UDP",
            Proto::Tcp => "TCP:80",
            Proto::Icmp => "ICMP",
        }
    }
}

/// How the agent is asked for a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interface {
    /// `traceroute-agent trace`, one process per trace.
    Cli,
    /// `GET /traceroute/...` on a running `traceroute-agent serve`.
    Api,
}

impl Interface {
    pub fn label(self) -> &'static str {
        match self {
            Interface::Cli => "agent CLI",
            Interface::Api => "agent API",
        }
    }
}

/// Row name of the agent through `interface` with `proto`.
pub fn agent_name(interface: Interface, proto: Proto) -> String {
    format!("{} {}", interface.label(), proto.label())
}

/// Row name of Linux traceroute with `proto`.
pub fn traceroute_name(proto: Proto) -> String {
    format!("traceroute {}", proto.label())
}

/// A lab the trace benchmark runs in, and the targets it checks there.
pub struct LabSpec {
    /// The named topology.
    pub name: &'static str,
    pub path: &'static str,
    topology: fn() -> Topology,
    /// Which goal of the issue this lab measures, e.g. "(a)".
    pub goal: &'static str,
    /// Per agent interface: the most its median may take relative to
    /// traceroute's at its defaults (`None`: shown, no target).
    pub targets: &'static [(Interface, Option<f64>)],
}

pub const LABS: [LabSpec; 2] = [
    LabSpec {
        name: "chain_limited",
        path: "src - r1 - r2 - r3 (silent) - r4 - dst",
        topology: named::chain_limited,
        goal: "(a)",
        targets: &[(Interface::Api, Some(1.0)), (Interface::Cli, Some(2.0))],
    },
    LabSpec {
        name: "delay_silent",
        path: "src - r1 -[20 ms each way]- r2 (silent) - r3 - dst",
        topology: named::delay_silent,
        goal: "(b)",
        targets: &[(Interface::Api, Some(0.5)), (Interface::Cli, None)],
    },
];

/// A run that takes longer than this is killed and counted as a failure.
const TIMEOUT_S: u32 = 120;

/// One tool's timed runs.
pub struct Measurement {
    /// Short name, e.g. "agent CLI UDP".
    pub tool: String,
    pub setting: Setting,
    /// The command line run in src's namespace (or the API request).
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
    /// The agent's records, one per run.
    pub records: Vec<Value>,
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

    /// Measured in every one of `runs` runs, and every run found every hop.
    pub fn complete(&self, expected: &[String], runs: u32) -> bool {
        self.unavailable.is_none()
            && self.hops.len() == runs as usize
            && self.matching_runs(expected) == self.hops.len()
    }
}

/// The trace benchmark in one lab.
pub struct TraceBench {
    pub lab: &'static LabSpec,
    pub runs: u32,
    pub destination: IpAddr,
    /// Ground truth: the lab's hops, then the destination.
    pub expected: Vec<String>,
    /// The ICMP rate-limit sysctls as read in r1, `(key, value)`.
    pub rate_limits: Vec<(String, String)>,
    /// The agent service of this lab.
    pub service: ServiceFacts,
    /// The 1-minute load average before each timed run: how busy the
    /// machine was.
    pub load_average: Option<Spread>,
    /// Every tool at every setting; per setting the agent's CLI UDP trace
    /// first: every ratio is relative to it.
    pub measurements: Vec<Measurement>,
}

/// One target of the issue, as measured.
pub struct Target<'a> {
    pub interface: Interface,
    pub proto: Proto,
    /// The most `ratio` may be; `None`: no target, shown for comparison.
    pub limit: Option<f64>,
    pub agent: Option<&'a Measurement>,
    pub traceroute: Option<&'a Measurement>,
}

impl Target<'_> {
    /// Agent median over traceroute's median.
    pub fn ratio(&self) -> Option<f64> {
        Some(self.agent?.wall()?.median / self.traceroute?.wall()?.median)
    }
}

impl TraceBench {
    /// The agent's CLI UDP trace at `setting`.
    fn baseline(&self, setting: Setting) -> Option<&Measurement> {
        self.measurements.iter().find(|m| m.setting == setting)
    }

    /// Median wall time of `m` over the agent's CLI UDP median at the same setting.
    pub fn ratio(&self, m: &Measurement) -> Option<f64> {
        Some(m.wall()?.median / self.baseline(m.setting)?.wall()?.median)
    }

    /// Median probes of `m` over the agent's CLI UDP median at the same setting.
    pub fn probe_ratio(&self, m: &Measurement) -> Option<f64> {
        let base = self.baseline(m.setting)?.probes_sent()?.median;
        (base > 0.0).then_some(m.probes_sent()?.median / base)
    }

    /// The tool called `name` at its defaults.
    pub fn at_defaults(&self, name: &str) -> Option<&Measurement> {
        self.measurements
            .iter()
            .find(|m| m.setting == Setting::Defaults && m.tool == name)
    }

    /// The lab's targets: per agent interface and protocol, the agent
    /// against Linux traceroute, both at their defaults.
    pub fn targets(&self) -> Vec<Target<'_>> {
        self.lab
            .targets
            .iter()
            .flat_map(|&(interface, limit)| {
                Proto::ALL.into_iter().map(move |proto| Target {
                    interface,
                    proto,
                    limit,
                    agent: self.at_defaults(&agent_name(interface, proto)),
                    traceroute: self.at_defaults(&traceroute_name(proto)),
                })
            })
            .collect()
    }

    /// Whether `m` found every hop in every run.
    pub fn complete(&self, m: &Measurement) -> bool {
        m.complete(&self.expected, self.runs)
    }
}

/// How a tool is run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `traceroute-agent trace`; its failures abort the bench.
    Cli,
    /// A request to the agent service; its failures abort the bench.
    Api,
    /// A peer from this Debian package.
    Peer(&'static str),
}

/// How to run one tool and read its output.
struct Tool {
    name: String,
    kind: Kind,
    /// The program, or for [`Kind::Api`] the request path.
    program: String,
    args: Vec<String>,
}

impl Tool {
    fn agent(name: String, dst: &str, protocol: &[&str], matched: &[&str]) -> Tool {
        let mut args = vec!["trace", dst, "--format", "json"];
        args.extend(protocol);
        args.extend(matched);
        Tool {
            name,
            kind: Kind::Cli,
            program: agent_binary().to_string_lossy().into_owned(),
            args: args.into_iter().map(String::from).collect(),
        }
    }

    fn api(proto: Proto, dst: &str, setting: Setting) -> Tool {
        Tool {
            name: agent_name(Interface::Api, proto),
            kind: Kind::Api,
            program: api_path(dst, proto, setting),
            args: Vec::new(),
        }
    }

    fn peer(name: &str, package: &'static str, program: &str, args: &[&str]) -> Tool {
        Tool {
            name: name.to_string(),
            kind: Kind::Peer(package),
            program: program.to_string(),
            args: args.iter().map(ToString::to_string).collect(),
        }
    }

    fn package(&self) -> Option<&'static str> {
        match self.kind {
            Kind::Peer(package) => Some(package),
            Kind::Cli | Kind::Api => None,
        }
    }

    fn command_line(&self) -> String {
        let program = match self.kind {
            Kind::Cli => "traceroute-agent",
            Kind::Api => return format!("GET {} (the service's socket)", self.program),
            Kind::Peer(_) => &self.program,
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

/// The API request of one trace: the protocol (TCP to port 80), and at
/// matched settings 3 queries, max TTL 30 and a 1 s timeout, which are also
/// the API's defaults.
fn api_path(dst: &str, proto: Proto, setting: Setting) -> String {
    let protocol = match proto {
        Proto::Udp => "UDP",
        Proto::Tcp => "TCP&port=80",
        Proto::Icmp => "ICMP",
    };
    let matched = match setting {
        Setting::Defaults => "",
        Setting::Matched => "&traceroute_queries=3&max_ttl=30&timeout=1000000000",
    };
    format!("/traceroute/{dst}?protocol={protocol}{matched}")
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
    let agent = |proto, flags: &[&str]| {
        Tool::agent(agent_name(Interface::Cli, proto), dst, flags, agent_matched)
    };
    let tr = |proto, extra: &[&str]| {
        let mut args = vec!["-n"];
        args.extend(extra);
        args.extend(tr_matched);
        args.push(dst);
        Tool::peer(&traceroute_name(proto), "traceroute", "traceroute", &args)
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
        agent(Proto::Udp, &["-U"]),
        agent(Proto::Tcp, &["-T", "-p", "80"]),
        agent(Proto::Icmp, &["-I"]),
        Tool::api(Proto::Udp, dst, setting),
        Tool::api(Proto::Tcp, dst, setting),
        Tool::api(Proto::Icmp, dst, setting),
        tr(Proto::Udp, &[]),
        tr(Proto::Tcp, &["-T", "-p", "80"]),
        tr(Proto::Icmp, &["-I"]),
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

/// The trace benchmark in every lab of [`LABS`], one after the other.
pub fn run(runs: u32, unavailable: &Unavailable) -> Result<Vec<TraceBench>> {
    LABS.iter()
        .map(|spec| run_lab(spec, runs, unavailable))
        .collect()
}

fn run_lab(spec: &'static LabSpec, runs: u32, unavailable: &Unavailable) -> Result<TraceBench> {
    println!("bench: lab `{}`: {}", spec.name, spec.path);
    let lab = Lab::up(&(spec.topology)())
        .with_context(|| format!("bringing up the {} lab", spec.name))?;
    let counter = ProbeCounter::install(&lab, "src", lab.ifname("src", "r1")?)?;
    let destination = lab.primary("dst", Family::V4)?;
    let mut expected: Vec<String> = lab
        .expected_hops("src", "dst", Family::V4)?
        .into_iter()
        .map(|hop| hop.map_or("*".to_string(), |a| a.to_string()))
        .collect();
    expected.push(destination.to_string());
    let rate_limits = read_rate_limits(&lab, "r1")?;

    let dir = WorkDir(std::env::temp_dir().join(format!(
        "xtask-bench-trace-{}-{}",
        spec.name,
        std::process::id()
    )));
    std::fs::create_dir_all(&dir.0).context("creating the bench's temp dir")?;
    let dst = destination.to_string();
    let mut agent = Agent::start(&lab, &dir, &dst)?;

    let tools: Vec<(Setting, Tool)> = Setting::ALL
        .iter()
        .flat_map(|&s| tools(&dst, s).into_iter().map(move |t| (s, t)))
        .collect();
    let mut measurements: Vec<Measurement> = tools
        .iter()
        .map(|(setting, t)| Measurement {
            tool: t.name.clone(),
            setting: *setting,
            command: t.command_line(),
            wall_s: Vec::new(),
            probes: Vec::new(),
            probes_reported: Vec::new(),
            hops: Vec::new(),
            records: Vec::new(),
            note: String::new(),
            unavailable: t.package().and_then(|p| unavailable.get(p).cloned()),
        })
        .collect();

    // Round-robin, so background load spreads over all tools alike.
    let mut load = Vec::new();
    for run in 1..=runs {
        println!("bench: {} trace run {run}/{runs}", spec.name);
        for ((_, tool), m) in tools.iter().zip(&mut measurements) {
            if m.unavailable.is_some() {
                continue;
            }
            let mut attempt = measure(&lab, &counter, tool, &agent, &mut load)?;
            if let (Kind::Api, Err(reason)) = (tool.kind, &attempt.0)
                && agent.restart_if_gone(run, reason)?
            {
                attempt = measure(&lab, &counter, tool, &agent, &mut load)?;
            }
            match attempt {
                (Ok(once), probes) => {
                    m.wall_s.push(once.wall_s);
                    m.probes.push(probes);
                    m.probes_reported.extend(once.probes_reported);
                    m.hops.push(once.hops);
                    m.records.extend(once.record);
                    m.note = once.note;
                }
                (Err(reason), _) if tool.kind == Kind::Api => bail!(
                    "the agent service failed: `{}`: {reason}\n{}",
                    m.command,
                    agent.log_text()
                ),
                (Err(reason), _) if tool.kind == Kind::Cli => {
                    bail!("the agent failed: `{}`: {reason}", m.command)
                }
                (Err(reason), _) => {
                    println!("bench: {} failed, leaving it out: {reason}", tool.name);
                    m.unavailable = Some(format!("failed: {reason}"));
                }
            }
        }
    }
    let service = agent.stop()?;
    Ok(TraceBench {
        lab: spec,
        runs,
        destination,
        expected,
        rate_limits,
        service,
        load_average: spread(&load),
        measurements,
    })
}

/// One timed run of `tool` after the pause that refills the routers'
/// budgets: what it gave, and the probes counted meanwhile. The load
/// average before it goes to `load`.
fn measure(
    lab: &Lab,
    counter: &ProbeCounter,
    tool: &Tool,
    agent: &Agent<'_>,
    load: &mut Vec<f64>,
) -> Result<(Result<Once, String>, u64)> {
    std::thread::sleep(REFILL);
    load.extend(load_average());
    let before = counter.read(lab)?;
    let outcome = match tool.kind {
        Kind::Api => agent.request(&tool.program),
        Kind::Cli | Kind::Peer(_) => time_once(lab, tool),
    };
    Ok((outcome, counter.read(lab)? - before))
}

/// The lab's agent service: started once, its first request untimed (it
/// sets up what a running service has set up already), and started again
/// the same way if something outside the bench stops it.
struct Agent<'a> {
    lab: &'a Lab,
    dir: &'a WorkDir,
    dst: &'a str,
    service: Option<Service>,
    facts: ServiceFacts,
}

/// What the report says about the service.
#[derive(Clone, Debug, Default)]
pub struct ServiceFacts {
    /// How it was started.
    pub command: String,
    /// Wall time of each untimed first request (one per start).
    pub warmup_s: Vec<f64>,
    /// Why it was started again, one line per restart.
    pub restarts: Vec<String>,
}

impl<'a> Agent<'a> {
    fn start(lab: &'a Lab, dir: &'a WorkDir, dst: &'a str) -> Result<Agent<'a>> {
        let mut agent = Agent {
            lab,
            dir,
            dst,
            service: None,
            facts: ServiceFacts::default(),
        };
        agent.launch()?;
        Ok(agent)
    }

    fn launch(&mut self) -> Result<()> {
        let service = Service::start(self.lab, self.dir, None)?;
        self.facts.command = service.serve_command();
        let start = Instant::now();
        let first = api_once(
            &service,
            &api_path(self.dst, Proto::Icmp, Setting::Defaults),
        );
        self.facts.warmup_s.push(start.elapsed().as_secs_f64());
        if let Err(reason) = first {
            bail!(
                "the agent service's first request failed: {reason}\n{}",
                service.log_text()
            );
        }
        self.service = Some(service);
        Ok(())
    }

    fn request(&self, path: &str) -> Result<Once, String> {
        let service = self.service.as_ref().ok_or("the service is not running")?;
        api_once(service, path)
    }

    /// If the service is gone (it exited, or is stopping: `failure` is its
    /// 503 SHUTTING_DOWN), starts it again and returns true.
    fn restart_if_gone(&mut self, run: u32, failure: &str) -> Result<bool> {
        let Some(service) = self.service.take() else {
            return Ok(false);
        };
        if service.running() && !failure.contains("SHUTTING_DOWN") {
            self.service = Some(service);
            return Ok(false);
        }
        let log = service.log_text();
        let how = if log.contains("shutting down") {
            "by SIGTERM or SIGINT (its log says `shutting down`)".to_string()
        } else {
            format!("(its last log line: {})", log.lines().last().unwrap_or("-"))
        };
        let why = format!("stopped from outside the bench in run {run} {how}");
        println!("bench: the agent service was {why}; starting it again");
        let _ = service.stop(self.lab);
        self.facts.restarts.push(why);
        self.launch()?;
        Ok(true)
    }

    fn log_text(&self) -> String {
        self.service
            .as_ref()
            .map_or(String::new(), Service::log_text)
    }

    fn stop(mut self) -> Result<ServiceFacts> {
        if let Some(service) = self.service.take() {
            service.stop(self.lab)?;
        }
        Ok(self.facts)
    }
}

/// The 1-minute load average, from /proc/loadavg.
fn load_average() -> Option<f64> {
    parse_loadavg(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

fn parse_loadavg(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

/// The ICMP rate-limit sysctls of `node`.
fn read_rate_limits(lab: &Lab, node: &str) -> Result<Vec<(String, String)>> {
    let out = lab.exec(node, "sysctl", IcmpRateLimit::KEYS)?;
    if !out.status.success() {
        bail!(
            "sysctl in {node}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(sysctl_values(&String::from_utf8_lossy(&out.stdout)))
}

/// `key = value` lines of sysctl(8).
fn sysctl_values(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// What one run of a tool gave.
struct Once {
    wall_s: f64,
    hops: Vec<String>,
    note: String,
    probes_reported: Option<u64>,
    /// The agent's record.
    record: Option<Value>,
}

/// Longer than the service's own request timeout (60 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);

/// One API request to the service, timed as its client sees it: from
/// connecting to the last byte of the answer.
fn api_once(service: &Service, path: &str) -> Result<Once, String> {
    let start = Instant::now();
    let response = service
        .get(path, REQUEST_TIMEOUT)
        .map_err(|e| e.to_string())?;
    let wall = start.elapsed().as_secs_f64();
    if response.status != 200 {
        return Err(format!(
            "{} {}",
            response.status,
            String::from_utf8_lossy(&response.body).trim()
        ));
    }
    agent_once(wall, &String::from_utf8_lossy(&response.body))
}

/// A run of the agent: its record read.
fn agent_once(wall_s: f64, json: &str) -> Result<Once, String> {
    let (hops, note) = agent_hops(json)?;
    Ok(Once {
        wall_s,
        hops,
        note,
        probes_reported: agent_probes(json),
        record: serde_json::from_str(json.trim()).ok(),
    })
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
    let once = if tool.kind == Kind::Cli {
        agent_once(wall, &stdout)?
    } else {
        Once {
            wall_s: wall,
            hops: text_hops(&stdout),
            note: String::new(),
            probes_reported: None,
            record: None,
        }
    };
    if once.hops.is_empty() {
        return Err(format!("no hops in its output: {:?}", stdout.trim()));
    }
    Ok(once)
}

/// `probing.probes_sent` of the agent's record, where it has one.
fn agent_probes(json: &str) -> Option<u64> {
    let path: Value = serde_json::from_str(json.trim()).ok()?;
    path["probing"]["probes_sent"].as_u64()
}

/// The line of `stderr` that names the problem: the first mentioning an
/// error or starting with `program:`, else the first one.
pub(super) fn error_line(program: &str, stderr: &[u8]) -> String {
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
    line.map_or("(no message)".to_string(), ToString::to_string)
}

/// Hops of the agent's NetworkPath JSON, per TTL the first address any run
/// saw; the note names the capture method.
fn agent_hops(json: &str) -> Result<(Vec<String>, String), String> {
    let path: Value =
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
pub(super) fn text_hops(text: &str) -> Vec<String> {
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
        hops.iter().map(ToString::to_string).collect()
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
        assert!(defaults.contains(
            &"GET /traceroute/198.18.5.2?protocol=TCP&port=80 (the service's socket)".to_string()
        ));
    }

    #[test]
    fn api_requests() {
        let dst = "198.18.5.2";
        assert_eq!(
            api_path(dst, Proto::Udp, Setting::Defaults),
            "/traceroute/198.18.5.2?protocol=UDP"
        );
        assert_eq!(
            api_path(dst, Proto::Tcp, Setting::Defaults),
            "/traceroute/198.18.5.2?protocol=TCP&port=80"
        );
        assert_eq!(
            api_path(dst, Proto::Icmp, Setting::Matched),
            "/traceroute/198.18.5.2?protocol=ICMP&traceroute_queries=3&max_ttl=30&timeout=1000000000"
        );
        let names: Vec<String> = tools(dst, Setting::Defaults)
            .into_iter()
            .map(|t| t.name)
            .collect();
        for proto in Proto::ALL {
            for name in [
                agent_name(Interface::Cli, proto),
                agent_name(Interface::Api, proto),
                traceroute_name(proto),
            ] {
                assert_eq!(names.iter().filter(|n| **n == name).count(), 1, "{name}");
            }
        }
        assert_eq!(names[0], "agent CLI UDP", "the baseline comes first");
    }

    #[test]
    fn reads_loadavg() {
        assert_eq!(parse_loadavg("3.87 2.10 1.02 5/321 4242\n"), Some(3.87));
        assert_eq!(parse_loadavg(""), None);
    }

    #[test]
    fn reads_sysctl() {
        let out = "net.ipv4.icmp_ratelimit = 1000\nnet.ipv4.icmp_msgs_per_sec = 1000\n\
                   net.ipv4.icmp_msgs_burst = 50\nnet.ipv6.icmp.ratelimit = 100\n";
        let values = sysctl_values(out);
        assert_eq!(values.len(), 4);
        assert_eq!(
            values[0],
            ("net.ipv4.icmp_ratelimit".to_string(), "1000".to_string())
        );
        assert_eq!(values[3].1, "100");
        assert!(sysctl_values("").is_empty());
    }

    fn measured(tool: &str, setting: Setting, wall_s: &[f64], hops: &[&[&str]]) -> Measurement {
        Measurement {
            tool: tool.to_string(),
            setting,
            command: String::new(),
            wall_s: wall_s.to_vec(),
            probes: vec![15; wall_s.len()],
            probes_reported: Vec::new(),
            hops: hops.iter().map(|h| v(h)).collect(),
            records: Vec::new(),
            note: String::new(),
            unavailable: None,
        }
    }

    #[test]
    fn targets_compare_with_traceroute_at_its_defaults() {
        let all = EXPECTED;
        let missed: &[&str] = &["198.18.1.2", "*", "*", "198.18.4.2", "198.18.5.2"];
        let bench = TraceBench {
            lab: &LABS[0],
            runs: 2,
            destination: "198.18.5.2".parse().unwrap(),
            expected: v(EXPECTED),
            rate_limits: Vec::new(),
            service: ServiceFacts::default(),
            load_average: None,
            measurements: vec![
                measured("agent CLI UDP", Setting::Defaults, &[0.2, 0.4], &[all, all]),
                measured(
                    "agent API UDP",
                    Setting::Defaults,
                    &[0.1, 0.1],
                    &[all, missed],
                ),
                measured(
                    "traceroute UDP",
                    Setting::Defaults,
                    &[0.05, 0.15],
                    &[all, all],
                ),
                measured("traceroute UDP", Setting::Matched, &[1.0, 1.0], &[all, all]),
                measured("agent API UDP", Setting::Matched, &[9.0, 9.0], &[all, all]),
            ],
        };
        let targets = bench.targets();
        assert_eq!(targets.len(), 6, "API and CLI, three protocols");
        let api_udp = &targets[0];
        assert_eq!(
            (api_udp.interface, api_udp.proto),
            (Interface::Api, Proto::Udp)
        );
        assert_eq!(api_udp.limit, Some(1.0));
        assert_eq!(
            api_udp.ratio(),
            Some(1.0),
            "0.1 s over 0.1 s, defaults only"
        );
        assert!(!bench.complete(api_udp.agent.unwrap()), "one run missed r2");
        assert!(bench.complete(api_udp.traceroute.unwrap()));
        let cli_udp = &targets[3];
        assert_eq!(
            (cli_udp.interface, cli_udp.limit),
            (Interface::Cli, Some(2.0))
        );
        assert!((cli_udp.ratio().unwrap() - 3.0).abs() < 1e-9);
        assert!(targets[1].agent.is_none() && targets[1].ratio().is_none());
        // Fewer runs than asked for is not complete either.
        let once = measured("x", Setting::Defaults, &[0.1], &[all]);
        assert!(!bench.complete(&once));
    }
}
