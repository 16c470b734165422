//! Part 3: many targets behind the same routers. In `fanout_deep` (the
//! kernel's default limits) and `fanout_deep_unlimited`, 20 targets (5 on
//! each of d1..d4; 8 in `--quick`) lie behind gw, r2 and r3. (a) all of them through the API at once
//! to a fresh service, then a second round right after; (b) fresh CLI
//! processes one after another; (c) Linux traceroute over the same ones
//! one after another; (d) scamper tracing them as a list. Each counts the
//! (trace, router) pairs found over the three shared routers. In the
//! limited lab each of (a)-(d) starts after a refill.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Instant;

use anyhow::{Context, Result};
use traceroute_lab::{Lab, named};

use super::{
    LabSpec, Peer, api_path, at_once, cli, cli_args, found, process, refill_if, service, workdir,
};
use crate::counter::ProbeCounter;
use crate::load::interleaved;
use crate::peers::Unavailable;
use crate::trace::text_hops;

/// One lab of part 3.
pub struct FanoutLab {
    pub name: &'static str,
    pub limited: bool,
    pub targets: Vec<IpAddr>,
    /// The shared routers gw, r2, r3 (their addresses facing src).
    pub routers: Vec<String>,
    pub rows: Vec<FanRow>,
}

impl FanoutLab {
    /// (trace, router) pairs there are to find.
    pub fn pairs_total(&self) -> usize {
        self.targets.len() * self.routers.len()
    }

    pub fn row(&self, prefix: &str) -> Option<&FanRow> {
        self.rows.iter().find(|r| r.what.starts_with(prefix))
    }
}

/// One way of tracing all targets.
#[derive(Debug, Default)]
pub struct FanRow {
    pub what: String,
    pub command: String,
    /// From the first trace's start to the last one's end.
    pub wall_s: f64,
    pub probes: u64,
    /// (trace, router) pairs found.
    pub pairs: usize,
    /// Targets with a result.
    pub traced: usize,
    /// 503 BUSY answers (API only; not retried).
    pub busy: usize,
    /// Other requests without a record, by status and code.
    pub failed: BTreeMap<String, usize>,
    /// Why the tool has no result at all.
    pub failure: Option<String>,
}

const LABS: [LabSpec; 2] = [
    LabSpec {
        name: "fanout_deep",
        topology: named::fanout_deep,
        limited: true,
    },
    LabSpec {
        name: "fanout_deep_unlimited",
        topology: named::fanout_deep_unlimited,
        limited: false,
    },
];

/// Both labs, `targets` spread over d1..d4 (20 in a full run: 5 each).
pub fn run(targets: usize, unavailable: &Unavailable) -> Result<Vec<FanoutLab>> {
    LABS.iter()
        .map(|&spec| run_lab(spec, targets, unavailable))
        .collect()
}

fn run_lab(spec: LabSpec, count: usize, unavailable: &Unavailable) -> Result<FanoutLab> {
    let LabSpec { name, limited, .. } = spec;
    println!("bench: routers, lab `{name}`: src - gw - r2 - r3 - {{d1..d4}}, {count} targets");
    let (lab, counter) = spec.up("gw")?;
    let targets: Vec<IpAddr> = interleaved(&lab)?.into_iter().take(count).collect();
    // Per target: the routers before it (gw, r2, r3).
    let truth: Vec<Vec<String>> = targets
        .iter()
        .map(|&t| {
            Ok(lab
                .expected_hops_to("src", t)?
                .into_iter()
                .map(|h| h.map_or_else(|| "*".to_string(), |a| a.to_string()))
                .collect())
        })
        .collect::<Result<_>>()?;
    let routers = truth.first().cloned().unwrap_or_default();
    let dir = workdir(name)?;
    let mut rows = Vec::new();

    // (a) Through the API, all at once, twice.
    println!("bench: routers, {name}: {count} API requests at once, two rounds");
    let paths: Vec<String> = targets
        .iter()
        .map(|t| api_path(&t.to_string(), None))
        .collect();
    let agent = service(&lab, &dir, None)?;
    for round in ["first round", "second round, right after"] {
        let (answers, wall_s, probes) = at_once(&lab, &counter, &agent, &paths)?;
        let mut row = FanRow {
            what: format!("agent API, {count} at once, {round}"),
            command: format!(
                "traceroute-agent serve --socket S; {count} x GET {} at once",
                api_path("TARGET", None)
            ),
            wall_s,
            probes,
            ..FanRow::default()
        };
        for (a, routers) in answers.iter().zip(&truth) {
            match &a.record {
                Some(record) => {
                    row.traced += 1;
                    row.pairs += found::pairs(&found::agent_hops(record), routers);
                }
                None if a.busy() => row.busy += 1,
                None => {
                    *row.failed
                        .entry(a.failure().unwrap_or_default())
                        .or_default() += 1;
                }
            }
        }
        rows.push(row);
    }
    agent.stop(&lab)?;

    // (b) Fresh CLI processes, one after another.
    println!("bench: routers, {name}: {count} CLI traces one after another");
    refill_if(limited);
    let mut row = FanRow {
        what: format!("agent CLI, {count} processes one after another"),
        command: format!(
            "traceroute-agent {} (per target)",
            cli_args("TARGET", "-T").join(" ")
        ),
        ..FanRow::default()
    };
    let start = Instant::now();
    for (t, routers) in targets.iter().zip(&truth) {
        let once = cli(&lab, &counter, &cli_args(&t.to_string(), "-T"))?;
        row.probes += once.probes;
        row.traced += 1;
        row.pairs += found::pairs(&once.hops, routers);
    }
    row.wall_s = start.elapsed().as_secs_f64();
    rows.push(row);

    // (c) Linux traceroute at its defaults (UDP), one after another.
    println!("bench: routers, {name}: traceroute over the {count} targets one after another");
    refill_if(limited);
    let mut row = FanRow {
        what: "traceroute, one after another".into(),
        command: "traceroute -n TARGET (per target)".into(),
        failure: unavailable
            .get("traceroute")
            .map(|r| format!("unavailable: {r}")),
        ..FanRow::default()
    };
    let start = Instant::now();
    for (t, routers) in targets.iter().zip(&truth) {
        if row.failure.is_some() {
            break;
        }
        let tr = Peer {
            tool: "traceroute",
            package: "traceroute",
            program: "traceroute",
            args: vec!["-n".into(), t.to_string()],
            read: text_hops,
        };
        match super::peer(&lab, &counter, &tr)? {
            Ok(once) => {
                row.probes += once.probes;
                row.traced += 1;
                row.pairs += found::pairs(&once.hops, routers);
            }
            Err(reason) => row.failure = Some(format!("failed: {reason}")),
        }
    }
    row.wall_s = start.elapsed().as_secs_f64();
    rows.push(row);

    // (d) scamper: the list, traced in parallel as scamper does.
    println!("bench: routers, {name}: scamper over the {count} targets as a list");
    refill_if(limited);
    rows.push(scamper(
        &lab,
        &counter,
        &dir.0,
        &targets,
        &truth,
        unavailable,
    )?);
    Ok(FanoutLab {
        name,
        limited,
        targets,
        routers,
        rows,
    })
}

/// scamper at its defaults over `targets` as a list (`-f`).
fn scamper(
    lab: &Lab,
    counter: &ProbeCounter,
    dir: &std::path::Path,
    targets: &[IpAddr],
    truth: &[Vec<String>],
    unavailable: &Unavailable,
) -> Result<FanRow> {
    let list = dir.join("targets.txt");
    let mut row = FanRow {
        what: "scamper, the list".into(),
        command: "scamper -O json -c trace -f targets.txt".into(),
        failure: unavailable
            .get("scamper")
            .map(|r| format!("unavailable: {r}")),
        ..FanRow::default()
    };
    if row.failure.is_some() {
        return Ok(row);
    }
    let lines: Vec<String> = targets.iter().map(IpAddr::to_string).collect();
    std::fs::write(&list, lines.join("\n") + "\n").context("writing the target list")?;
    let args: Vec<String> = ["-O", "json", "-c", "trace", "-f"]
        .iter()
        .map(ToString::to_string)
        .chain([list.to_string_lossy().into_owned()])
        .collect();
    let (out, wall_s, probes) = process(lab, counter, "scamper", &args)?;
    row.wall_s = wall_s;
    row.probes = probes;
    if !out.status.success() {
        row.failure = Some(format!("failed: {}", out.status));
        return Ok(row);
    }
    for (dst, hops) in found::scamper_traces(&String::from_utf8_lossy(&out.stdout)) {
        if let Some(i) = targets.iter().position(|&t| t == dst) {
            row.traced += 1;
            row.pairs += found::pairs(&hops, &truth[i]);
        }
    }
    Ok(row)
}
