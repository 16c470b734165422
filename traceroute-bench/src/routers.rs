//! Routers of every kind: the agent (which learns each router's answer
//! budget and latency) beside its peers through routers that differ.
//!
//! 1. Slow control planes (`slow`, `slow_limited`: r2 sends its own ICMP
//!    errors 30 ms late, r3 120 ms late): a fresh CLI trace, a fresh
//!    service's first and second API request, traceroute, scamper and mtr
//!    at their defaults; which routers each found ([`slow`]).
//! 2. Unlimited routers (`three`, and `three_limited` for contrast): API
//!    requests alternating with traceroute back to back, and 64 API traces
//!    of 10 queries at once ([`three`]).
//! 3. Fan-out behind shared routers (`fanout_deep`, `fanout_deep_unlimited`):
//!    20 targets behind gw, r2 and r3 traced at once through the API, one
//!    after another by fresh CLI processes and by traceroute, and as a list
//!    by scamper: the (trace, router) pairs found ([`fanout`]); and one UDP
//!    target traced three times back to back in `three_limited`: never
//!    placed beyond its distance.
//! 4. MDA at its defaults on the nested diamond with unlimited routers
//!    beside the run with limits switched off by hand, and with Linux's
//!    limits beside scamper tracelb ([`mda`]).
//!
//! Every measurement names the tool, its settings, the time, the probes
//! counted on src's interface and what it found against the lab's ground
//! truth. Peers run at their defaults (reverse DNS off). "After a refill":
//! each timed run starts [`REFILL`] after the last probe of anything else,
//! so every router's budget is full; "back to back": a tool's runs follow
//! each other at once (a block of them starts after a refill in labs with
//! limits, so it inherits no other tool's spending). The section states its
//! targets with the figure and whether it is met; it fails only when the
//! agent itself fails.

mod fanout;
mod found;
mod mda;
mod report;
mod slow;
mod three;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use traceroute_lab::{Lab, Topology};

pub use report::{headline, json, section};

use super::counter::ProbeCounter;
use super::load::WorkDir;
use super::load::service::Service;
use super::peers::Unavailable;
use super::trace::error_line;
use super::{REFILL, Spread, agent_binary, spread};

/// A process that runs longer than this is stopped (and the run failed).
const TIMEOUT_S: u32 = 120;
/// Longer than the service's own request timeout (60 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);

/// How big the section is: a full run, or `--quick`'s smoke run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scale {
    /// Runs per tool and condition where a figure is a median.
    pub runs: u32,
    /// Part 2 (b): API requests at once, and the service's
    /// `max_concurrent_traces`.
    pub concurrent: usize,
    /// Part 3: targets behind the shared routers, spread over d1..d4.
    pub targets: usize,
    /// Part 4 in `nested_limited`, where the agent and tracelb take tens
    /// of seconds each.
    pub mda_limited: bool,
}

impl Scale {
    pub fn new(runs: u32, quick: bool) -> Scale {
        if quick {
            Scale {
                runs,
                concurrent: 16,
                targets: 8,
                mda_limited: false,
            }
        } else {
            Scale {
                runs,
                concurrent: 64,
                targets: 20,
                mda_limited: true,
            }
        }
    }
}

/// The whole section.
pub struct RoutersBench {
    pub scale: Scale,
    pub slow: Vec<slow::SlowLab>,
    pub three: Vec<three::ThreeLab>,
    pub fanout: Vec<fanout::FanoutLab>,
    pub mda: mda::Mda,
    /// Seconds each part took, in order.
    pub part_s: Vec<f64>,
}

/// Runs the section's four parts, one lab after another.
pub fn run(scale: Scale, unavailable: &Unavailable) -> Result<RoutersBench> {
    let mut part_s = Vec::new();
    let mut lap = Instant::now();
    let mut took = |part: &str| {
        part_s.push(lap.elapsed().as_secs_f64());
        println!(
            "bench: routers, {part} took {:.0} s",
            lap.elapsed().as_secs_f64()
        );
        lap = Instant::now();
    };
    let slow = slow::run(scale.runs, unavailable)?;
    took("part 1 (slow control planes)");
    let three = three::run(scale.concurrent, unavailable)?;
    took("part 2 (unlimited routers)");
    let fanout = fanout::run(scale.targets, unavailable)?;
    took("part 3 (fan-out)");
    let mda = mda::run(scale.runs, scale.mda_limited, unavailable)?;
    took("part 4 (MDA)");
    Ok(RoutersBench {
        scale,
        slow,
        three,
        fanout,
        mda,
        part_s,
    })
}

/// A lab of the section: its name, its topology, and whether its routers
/// keep the kernel's default ICMP limits.
#[derive(Clone, Copy)]
struct LabSpec {
    name: &'static str,
    topology: fn() -> Topology,
    limited: bool,
}

impl LabSpec {
    /// The lab up, with a probe counter on src's interface towards
    /// `first_hop`.
    fn up(&self, first_hop: &str) -> Result<(Lab, ProbeCounter)> {
        let lab = Lab::up(&(self.topology)())
            .with_context(|| format!("bringing up the {} lab", self.name))?;
        let counter = ProbeCounter::install(&lab, "src", lab.ifname("src", first_hop)?)?;
        Ok((lab, counter))
    }
}

/// Whether each timed run waits for the routers' budgets to refill first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    Refill,
    BackToBack,
}

impl Condition {
    pub fn label(self) -> &'static str {
        match self {
            Condition::Refill => "after a refill",
            Condition::BackToBack => "back to back",
        }
    }
}

/// Sleeps [`REFILL`] when `limited`: routers without limits have no budget
/// to refill.
fn refill_if(limited: bool) {
    if limited {
        std::thread::sleep(REFILL);
    }
}

/// One tool at one setting in one condition, over its runs.
pub struct Measured {
    pub tool: String,
    /// The command run in src's namespace, or the API request.
    pub command: String,
    pub condition: Condition,
    pub wall_s: Vec<f64>,
    pub probes: Vec<u64>,
    /// Per run: who answered each TTL, `*` where nobody did.
    pub hops: Vec<Vec<String>>,
    /// Per run, for the agent: its record.
    pub records: Vec<Value>,
    /// Why runs are missing (a peer that failed or is not installed).
    pub failure: Option<String>,
}

impl Measured {
    fn new(tool: &str, command: String, condition: Condition) -> Measured {
        Measured {
            tool: tool.to_string(),
            command,
            condition,
            wall_s: Vec::new(),
            probes: Vec::new(),
            hops: Vec::new(),
            records: Vec::new(),
            failure: None,
        }
    }

    fn push(&mut self, once: Once) {
        self.wall_s.push(once.wall_s);
        self.probes.push(once.probes);
        self.hops.push(once.hops);
        self.records.extend(once.record);
    }

    /// Records a peer's run, or why it failed (its later runs are skipped).
    fn push_peer(&mut self, once: Result<Once, String>) {
        match once {
            Ok(once) => self.push(once),
            Err(reason) => {
                println!("bench: {} failed, leaving it out: {reason}", self.tool);
                self.failure = Some(format!("failed: {reason}"));
            }
        }
    }

    pub fn runs(&self) -> usize {
        self.wall_s.len()
    }

    pub fn wall(&self) -> Option<Spread> {
        spread(&self.wall_s)
    }

    pub fn probes_sent(&self) -> Option<Spread> {
        let v: Vec<f64> = self.probes.iter().map(|&p| p as f64).collect();
        spread(&v)
    }
}

/// What one run gave.
struct Once {
    wall_s: f64,
    /// Counted on src's interface meanwhile.
    probes: u64,
    hops: Vec<String>,
    record: Option<Value>,
}

/// A peer the section runs: Debian package, program, arguments, and how
/// its output reads as hops per TTL.
struct Peer {
    tool: &'static str,
    package: &'static str,
    program: &'static str,
    args: Vec<String>,
    read: fn(&str) -> Vec<String>,
}

impl Peer {
    fn command(&self) -> String {
        let args = self.args.iter().map(|a| {
            if a.contains(' ') {
                format!("\"{a}\"")
            } else {
                a.clone()
            }
        });
        std::iter::once(self.program.to_string())
            .chain(args)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A [`Measured`] for this peer, failed at once when it is not installed.
    fn measured(&self, condition: Condition, unavailable: &Unavailable) -> Measured {
        let mut m = Measured::new(self.tool, self.command(), condition);
        m.failure = unavailable
            .get(self.package)
            .map(|r| format!("unavailable: {r}"));
        m
    }

    /// One run of the peer into `m`, unless it already failed.
    fn once_into(&self, lab: &Lab, counter: &ProbeCounter, m: &mut Measured) -> Result<()> {
        if m.failure.is_none() {
            m.push_peer(peer(lab, counter, self)?);
        }
        Ok(())
    }
}

/// `program args` in src, timed from outside, with the probes counted
/// meanwhile; stopped after [`TIMEOUT_S`] (exit status 124).
fn process(
    lab: &Lab,
    counter: &ProbeCounter,
    program: &str,
    args: &[String],
) -> Result<(Output, f64, u64)> {
    let mut cmd = lab.command("src", "timeout")?;
    cmd.arg(TIMEOUT_S.to_string())
        .arg(program)
        .args(args)
        .stdin(Stdio::null());
    let before = counter.read(lab)?;
    let start = Instant::now();
    let out = cmd
        .output()
        .with_context(|| format!("starting {program}"))?;
    let wall = start.elapsed().as_secs_f64();
    Ok((out, wall, counter.read(lab)? - before))
}

/// The agent CLI's arguments at its defaults: `trace DST --format json`
/// and the protocol flag.
fn cli_args(dst: &str, protocol: &str) -> Vec<String> {
    ["trace", dst, "--format", "json", protocol]
        .map(String::from)
        .to_vec()
}

/// One `traceroute-agent ARGS` process; its failure fails the bench.
fn cli(lab: &Lab, counter: &ProbeCounter, args: &[String]) -> Result<Once> {
    let program = agent_binary().to_string_lossy().into_owned();
    let (out, wall_s, probes) = process(lab, counter, &program, args)?;
    let shown = format!("traceroute-agent {}", args.join(" "));
    if out.status.code() == Some(124) {
        bail!("the agent did not finish within {TIMEOUT_S} s: `{shown}`");
    }
    if !out.status.success() {
        bail!(
            "the agent failed: `{shown}`: {}: {}",
            out.status,
            error_line(&program, &out.stderr)
        );
    }
    let record: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("the agent printed no JSON record: `{shown}`"))?;
    Ok(Once {
        wall_s,
        probes,
        hops: found::agent_hops(&record),
        record: Some(record),
    })
}

/// One run of a peer; its failure is reported, not fatal.
fn peer(lab: &Lab, counter: &ProbeCounter, p: &Peer) -> Result<Result<Once, String>> {
    let (out, wall_s, probes) = process(lab, counter, p.program, &p.args)?;
    if out.status.code() == Some(124) {
        return Ok(Err(format!("did not finish within {TIMEOUT_S} s")));
    }
    if !out.status.success() {
        return Ok(Err(format!(
            "{}: {}",
            out.status,
            error_line(p.program, &out.stderr)
        )));
    }
    let hops = (p.read)(&String::from_utf8_lossy(&out.stdout));
    if hops.is_empty() {
        return Ok(Err("no hops in its output".into()));
    }
    Ok(Ok(Once {
        wall_s,
        probes,
        hops,
        record: None,
    }))
}

/// `GET /traceroute/DST?protocol=TCP&port=80`, with `traceroute_queries`
/// when given (else the API's default, 3).
fn api_path(dst: &str, queries: Option<u32>) -> String {
    let queries = queries.map_or(String::new(), |q| format!("&traceroute_queries={q}"));
    format!("/traceroute/{dst}?protocol=TCP&port=80{queries}")
}

/// One API request, timed as its client sees it (connecting to the last
/// byte of the answer); anything but a record fails the bench.
fn api(lab: &Lab, counter: &ProbeCounter, service: &Service, path: &str) -> Result<Once> {
    let before = counter.read(lab)?;
    let start = Instant::now();
    let response = service.get(path, REQUEST_TIMEOUT);
    let wall_s = start.elapsed().as_secs_f64();
    let probes = counter.read(lab)? - before;
    let response = match response {
        Ok(r) if r.status == 200 => r,
        Ok(r) => bail!(
            "the agent service answered `GET {path}` with {} {}\n{}",
            r.status,
            String::from_utf8_lossy(&r.body).trim(),
            service.log_text()
        ),
        Err(e) => bail!(
            "the agent service did not answer `GET {path}`: {e}\n{}",
            service.log_text()
        ),
    };
    let record: Value =
        serde_json::from_slice(&response.body).context("the service's 200 has no JSON record")?;
    Ok(Once {
        wall_s,
        probes,
        hops: found::agent_hops(&record),
        record: Some(record),
    })
}

/// One answer of requests sent all at once.
pub struct Answer {
    pub status: Option<u16>,
    /// The error body's `code` (`BUSY`...).
    pub code: Option<String>,
    pub record: Option<Value>,
    /// Why there is no HTTP answer.
    pub error: Option<String>,
}

impl Answer {
    /// Why there is no record, as a short key: `503 BUSY`, `504 TIMEOUT`,
    /// the I/O error.
    pub fn failure(&self) -> Option<String> {
        if self.record.is_some() {
            return None;
        }
        Some(match (self.status, &self.code, &self.error) {
            (Some(s), Some(code), _) => format!("{s} {code}"),
            (Some(s), None, _) => s.to_string(),
            (None, _, Some(e)) => e.clone(),
            (None, _, None) => "no answer".into(),
        })
    }

    pub fn busy(&self) -> bool {
        self.status == Some(503) && self.code.as_deref() == Some("BUSY")
    }
}

/// Every path of `paths` requested at once, one connection and thread
/// each: the answers in order, the seconds until the last one, and the
/// probes counted meanwhile. No request is retried. Fails the bench only
/// when no request got a record.
fn at_once(
    lab: &Lab,
    counter: &ProbeCounter,
    service: &Service,
    paths: &[String],
) -> Result<(Vec<Answer>, f64, u64)> {
    let before = counter.read(lab)?;
    let start = Instant::now();
    let answers: Vec<Answer> = std::thread::scope(|s| {
        let handles: Vec<_> = paths
            .iter()
            .map(|p| s.spawn(move || service.get(p, REQUEST_TIMEOUT)))
            .collect();
        handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(Ok(r)) => Answer {
                    status: Some(r.status),
                    code: r.error_code(),
                    record: (r.status == 200)
                        .then(|| serde_json::from_slice(&r.body).ok())
                        .flatten(),
                    error: None,
                },
                Ok(Err(e)) => Answer {
                    status: None,
                    code: None,
                    record: None,
                    error: Some(e.to_string()),
                },
                Err(_) => Answer {
                    status: None,
                    code: None,
                    record: None,
                    error: Some("the client thread panicked".into()),
                },
            })
            .collect()
    });
    let wall = start.elapsed().as_secs_f64();
    let probes = counter.read(lab)? - before;
    if answers.iter().all(|a| a.record.is_none()) {
        let first = answers
            .first()
            .and_then(Answer::failure)
            .unwrap_or_default();
        bail!(
            "the agent service answered none of {} requests with a record (first: {first})\n{}",
            answers.len(),
            service.log_text()
        );
    }
    Ok((answers, wall, probes))
}

/// A fresh work directory for one lab's services, removed on drop.
fn workdir(lab: &str) -> Result<WorkDir> {
    let dir = WorkDir(
        std::env::temp_dir().join(format!("xtask-bench-routers-{lab}-{}", std::process::id())),
    );
    std::fs::create_dir_all(&dir.0).context("creating the bench's temp dir")?;
    Ok(dir)
}

/// A service config file in `dir` with `text`.
fn config(dir: &WorkDir, text: &str) -> Result<std::path::PathBuf> {
    let path = dir.0.join("agent.toml");
    std::fs::write(&path, text).context("writing the service's config")?;
    Ok(path)
}

/// Starts the agent service in src, with `config` when given.
fn service(lab: &Lab, dir: &WorkDir, config: Option<&Path>) -> Result<Service> {
    Service::start_with(lab, dir, None, config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_commands() {
        assert_eq!(
            api_path("198.18.4.2", None),
            "/traceroute/198.18.4.2?protocol=TCP&port=80"
        );
        assert_eq!(
            api_path("198.18.4.2", Some(10)),
            "/traceroute/198.18.4.2?protocol=TCP&port=80&traceroute_queries=10"
        );
        assert_eq!(
            cli_args("198.18.5.2", "-T").join(" "),
            "trace 198.18.5.2 --format json -T"
        );
        let p = Peer {
            tool: "scamper",
            package: "scamper",
            program: "scamper",
            args: ["-O", "json", "-c", "trace -P udp-paris", "-i", "198.18.5.2"]
                .map(String::from)
                .to_vec(),
            read: found::scamper_hops,
        };
        assert_eq!(
            p.command(),
            "scamper -O json -c \"trace -P udp-paris\" -i 198.18.5.2"
        );
        let mut unavailable = Unavailable::new();
        unavailable.insert("scamper", "no apt-get".into());
        let m = p.measured(Condition::Refill, &unavailable);
        assert_eq!(m.failure.as_deref(), Some("unavailable: no apt-get"));
    }

    #[test]
    fn answers_say_why_they_have_no_record() {
        let busy = Answer {
            status: Some(503),
            code: Some("BUSY".into()),
            record: None,
            error: None,
        };
        assert!(busy.busy());
        assert_eq!(busy.failure().as_deref(), Some("503 BUSY"));
        let gone = Answer {
            status: None,
            code: None,
            record: None,
            error: Some("connection reset".into()),
        };
        assert!(!gone.busy());
        assert_eq!(gone.failure().as_deref(), Some("connection reset"));
        let ok = Answer {
            status: Some(200),
            code: None,
            record: Some(serde_json::json!({})),
            error: None,
        };
        assert_eq!(ok.failure(), None);
    }
}
