//! Benchmark 3: many traces at once. In the `fanout` lab (src — gw —
//! d1..d4, 1024 target addresses, the kernel's default ICMP rate limits)
//! one agent service in src answers N API requests (ICMP, one query, max
//! TTL 8) with at most 32 in flight, and scamper traces the same N targets
//! from a list, once at its default rate and once at the agent's. For each:
//! traces per second, hops found against the ground truth (shared ones
//! apart), invented loss, probes sent (counted on src's interface), CPU per
//! trace and peak RSS.

pub mod scamper;
pub mod service;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use traceroute_lab::{Family, Lab, named};

use super::REFILL;
use super::counter::ProbeCounter;
use super::peers::Unavailable;
use super::process::Usage;
use super::truth::Tally;

/// Traces the client keeps in flight: the service's default
/// `api.max_concurrent_traces`.
pub const IN_FLIGHT: usize = 32;

/// Requests (or scamper tasks) as given to each tool.
pub const MAX_TTL: u8 = 8;

pub struct LoadBench {
    /// Probes per second of the agent, and of scamper's matched run.
    pub pps: u32,
    /// The router every trace crosses, from src's side.
    pub gateway: IpAddr,
    pub sizes: Vec<SizeResult>,
}

/// All tools for one number of targets.
pub struct SizeResult {
    pub targets: usize,
    pub runs: Vec<LoadRun>,
}

/// One tool tracing all targets of one size.
pub struct LoadRun {
    pub tool: String,
    pub command: String,
    /// Of the repetition shown: the one with the median wall time.
    pub wall_s: f64,
    /// Wall time of every repetition.
    pub walls: Vec<f64>,
    /// Hops found in every repetition.
    pub found: Vec<u64>,
    pub tally: Tally,
    /// Counted on src's interface while the tool ran.
    pub probes_counted: u64,
    /// What the tool says it sent (the agent's `probing.probes_sent`,
    /// scamper's `probe_count`), when every record says it.
    pub probes_reported: Option<u64>,
    pub usage: Option<Usage>,
    /// Targets without a record, by reason.
    pub failures: BTreeMap<String, u64>,
    /// 503 BUSY answers retried.
    pub busy_retries: u64,
    pub note: String,
    pub unavailable: Option<String>,
}

impl LoadRun {
    fn new(tool: String, command: String) -> LoadRun {
        LoadRun {
            tool,
            command,
            wall_s: 0.0,
            walls: Vec::new(),
            found: Vec::new(),
            tally: Tally::default(),
            probes_counted: 0,
            probes_reported: None,
            usage: None,
            failures: BTreeMap::new(),
            busy_retries: 0,
            note: String::new(),
            unavailable: None,
        }
    }

    pub fn traces_per_s(&self, targets: usize) -> Option<f64> {
        (self.unavailable.is_none() && self.wall_s > 0.0).then(|| targets as f64 / self.wall_s)
    }

    pub fn cpu_ms_per_trace(&self, targets: usize) -> Option<f64> {
        Some(self.usage?.cpu_s * 1000.0 / targets as f64)
    }
}

/// The targets of one size and the ground truth of each.
pub struct Targets {
    pub addrs: Vec<IpAddr>,
    /// Per target: the answering address per TTL (`None`: silent), the
    /// target itself last.
    pub truth: Vec<Vec<Option<IpAddr>>>,
}

impl Targets {
    fn new(lab: &Lab, addrs: &[IpAddr]) -> Result<Targets> {
        let truth = addrs
            .iter()
            .map(|&t| {
                let mut hops = lab.expected_hops_to("src", t)?;
                hops.push(Some(t));
                Ok(hops)
            })
            .collect::<Result<_>>()?;
        Ok(Targets {
            addrs: addrs.to_vec(),
            truth,
        })
    }

    pub fn truth_of(&self, target: IpAddr) -> Option<&[Option<IpAddr>]> {
        let i = self.addrs.iter().position(|&a| a == target)?;
        Some(&self.truth[i])
    }
}

/// A directory for sockets, lists and outputs, removed on drop.
pub struct WorkDir(pub PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn run(
    sizes: &[usize],
    pps: u32,
    repeats: u32,
    unavailable: &Unavailable,
) -> Result<LoadBench> {
    println!("bench: lab `fanout`: src - gw - {{d1..d4}}, 1024 targets, default ICMP rate limits");
    let lab = Lab::up(&named::fanout()).context("bringing up the fanout lab")?;
    let counter = ProbeCounter::install(&lab, "src", lab.ifname("src", "gw")?)?;
    let gateway = lab.addr("gw", "src", Family::V4)?;
    let all = interleaved(&lab)?;
    let dir = WorkDir(std::env::temp_dir().join(format!("xtask-bench-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).context("creating the bench's temp dir")?;

    let agent = service::Service::start(&lab, &dir, Some(pps))?;
    let mut results = Vec::new();
    for &n in sizes {
        let n = n.min(all.len());
        let targets = Targets::new(&lab, &all[..n])?;
        // One list per tool, one entry per repetition.
        let mut by_tool: Vec<Vec<LoadRun>> = vec![Vec::new(), Vec::new(), Vec::new()];
        for rep in 1..=repeats {
            println!("bench: load, {n} targets, repetition {rep}/{repeats}: agent service");
            std::thread::sleep(REFILL);
            by_tool[0].push(agent.trace_all(&lab, &counter, &targets)?);
            for (i, rate) in [None, Some(pps)].into_iter().enumerate() {
                println!("bench: load, {n} targets: {}", scamper::name(rate));
                std::thread::sleep(REFILL);
                by_tool[i + 1].push(scamper::run(
                    &lab,
                    &counter,
                    &dir,
                    &targets,
                    rate,
                    unavailable.get("scamper"),
                )?);
            }
        }
        let runs = by_tool.into_iter().filter_map(median_run).collect();
        results.push(SizeResult { targets: n, runs });
    }
    agent.stop(&lab)?;
    Ok(LoadBench {
        pps,
        gateway,
        sizes: results,
    })
}

/// The repetition with the median wall time (the lower middle one of an
/// even count), carrying every repetition's wall time and hops found.
fn median_run(mut runs: Vec<LoadRun>) -> Option<LoadRun> {
    let walls: Vec<f64> = runs.iter().map(|r| r.wall_s).collect();
    let found: Vec<u64> = runs.iter().map(|r| r.tally.found).collect();
    runs.sort_by(|a, b| a.wall_s.total_cmp(&b.wall_s));
    let middle = runs.len().checked_sub(1)? / 2;
    let mut run = runs.swap_remove(middle);
    run.walls = walls;
    run.found = found;
    Some(run)
}

/// The fanout targets round-robin over d1..d4, so any prefix of the list
/// spreads over all four hosts.
pub(super) fn interleaved(lab: &Lab) -> Result<Vec<IpAddr>> {
    let lists = ["d1", "d2", "d3", "d4"]
        .iter()
        .map(|d| lab.targets(d))
        .collect::<Result<Vec<_>, _>>()?;
    let longest = lists.iter().map(Vec::len).max().unwrap_or(0);
    Ok((0..longest)
        .flat_map(|i| lists.iter().filter_map(move |l| l.get(i).copied()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_repetition_is_shown_with_every_wall_time() {
        let run = |wall: f64, found: u64| {
            let mut r = LoadRun::new("agent service".into(), "cmd".into());
            r.wall_s = wall;
            r.tally.found = found;
            r
        };
        let shown = median_run(vec![run(3.0, 10), run(1.0, 12), run(2.0, 11)]).unwrap();
        assert_eq!((shown.wall_s, shown.tally.found), (2.0, 11));
        assert_eq!(shown.walls, [3.0, 1.0, 2.0]);
        assert_eq!(shown.found, [10, 12, 11]);
        assert!(median_run(Vec::new()).is_none());
        let two = median_run(vec![run(4.0, 1), run(2.0, 2)]).unwrap();
        assert_eq!(two.wall_s, 2.0, "the lower middle of an even count");
    }
}
