//! Multipath benchmark: mapping the nested diamond (`src — r1 — {a1..a4} —
//! {m1, m2} — r4 — dst`, every router spreading flows by L4 hash, ICMP not
//! rate limited) with the agent's MDA, `scamper tracelb` and
//! `dublin-traceroute`, each timed from outside with the probes it sent
//! (counted on src's interface), the routers it found per TTL (by name,
//! through the lab's address plan: one router answers from several
//! addresses) and whether it found the destination.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{Value, json};
use traceroute_lab::{Family, Lab, Topology};

use super::counter::ProbeCounter;
use super::peers::Unavailable;
use super::{Spread, agent_binary, spread};

/// Longest a tool may run before it is stopped and reported as such.
const TIMEOUT: Duration = Duration::from_secs(60);

/// One tool's results over the runs.
pub struct ToolResult {
    pub name: String,
    pub command: String,
    pub seconds: Option<Spread>,
    pub probes: Option<Spread>,
    /// Routers found (median over runs) of the lab's total.
    pub routers_found: Option<Spread>,
    pub destination_found: usize,
    pub runs: usize,
    /// Why it produced nothing usable, when it did not.
    pub failure: Option<String>,
}

pub struct MultipathBench {
    pub routers_expected: usize,
    pub tools: Vec<ToolResult>,
}

type Routers = BTreeMap<u64, BTreeSet<String>>;

/// (ttl, address) pairs a tool saw, as router names per TTL.
fn by_name(lab: &Lab, seen: &[(u64, IpAddr)]) -> Routers {
    let mut out = Routers::new();
    for (ttl, addr) in seen {
        if let Some(name) = lab.owner(*addr)
            && name != "dst"
        {
            out.entry(*ttl).or_default().insert(name.to_string());
        }
    }
    out
}

fn count(routers: &Routers, expected: &Routers) -> usize {
    expected
        .iter()
        .map(|(ttl, names)| {
            routers
                .get(ttl)
                .map_or(0, |found| found.intersection(names).count())
        })
        .sum()
}

/// The agent's record: graph nodes (ttl, address) and whether dst was one.
fn agent_seen(stdout: &str, dst: IpAddr) -> Seen {
    let record: Value = serde_json::from_str(stdout.trim()).ok()?;
    let nodes = record["multipath"]["nodes"].as_array()?;
    let seen: Vec<(u64, IpAddr)> = nodes
        .iter()
        .filter_map(|n| Some((n["ttl"].as_u64()?, n["ip_address"].as_str()?.parse().ok()?)))
        .filter(|(ttl, _)| *ttl > 0)
        .collect();
    let reached = seen.iter().any(|(_, a)| *a == dst);
    Some((seen, reached))
}

/// scamper's tracelb JSON: nodes with their TTL and the links' far ends.
fn tracelb_seen(stdout: &str, dst: IpAddr) -> Seen {
    let trace = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["type"] == "tracelb")?;
    let mut seen = Vec::new();
    for node in trace["nodes"].as_array().into_iter().flatten() {
        if let (Some(addr), Some(ttl)) = (
            node["addr"].as_str().and_then(|a| a.parse().ok()),
            node["q_ttl"].as_u64(),
        ) {
            seen.push((ttl, addr));
        }
        for link in node["links"].as_array().into_iter().flatten() {
            for hop in link.as_array().into_iter().flatten() {
                let addr = hop["addr"].as_str().and_then(|a| a.parse().ok());
                let ttl = hop["probes"][0]["ttl"].as_u64();
                if let (Some(addr), Some(ttl)) = (addr, ttl) {
                    seen.push((ttl, addr));
                }
            }
        }
    }
    let reached = seen.iter().any(|(_, a)| *a == dst);
    Some((seen, reached))
}

/// dublin-traceroute's trace.json: per flow, per probe TTL, who answered.
fn dublin_seen(json_text: &str, dst: IpAddr) -> Seen {
    let v: Value = serde_json::from_str(json_text).ok()?;
    let mut seen = Vec::new();
    for hops in v["flows"].as_object()?.values() {
        for hop in hops.as_array().into_iter().flatten() {
            let ttl = hop["sent"]["ip"]["ttl"].as_u64();
            let addr = hop["received"]["ip"]["src"]
                .as_str()
                .and_then(|a| a.parse().ok());
            if let (Some(ttl), Some(addr)) = (ttl, addr) {
                seen.push((ttl, addr));
            }
        }
    }
    let reached = seen.iter().any(|(_, a)| *a == dst);
    Some((seen, reached))
}

/// What a tool printed, from the files its output went to.
type Seen = Option<(Vec<(u64, IpAddr)>, bool)>;

/// Runs `cmd` with its output in files under `dir` (a pipe nobody reads
/// while waiting would stall a tool with a large result), stopping it (and
/// reporting so) after [`TIMEOUT`].
fn run_bounded(mut cmd: Command, dir: &std::path::Path) -> Result<(Output, Duration, bool)> {
    let (out_path, err_path) = (dir.join("stdout"), dir.join("stderr"));
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::from(std::fs::File::create(&out_path)?))
        .stderr(Stdio::from(std::fs::File::create(&err_path)?))
        .spawn()
        .context("starting the tool")?;
    let mut timed_out = false;
    while child.try_wait()?.is_none() {
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            timed_out = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = child.wait()?;
    let out = Output {
        status,
        stdout: std::fs::read(&out_path).unwrap_or_default(),
        stderr: std::fs::read(&err_path).unwrap_or_default(),
    };
    Ok((out, start.elapsed(), timed_out))
}

struct Tool {
    name: &'static str,
    program: String,
    args: Vec<String>,
    /// dublin-traceroute writes its result to ./trace.json.
    result_file: bool,
    parse: fn(&str, IpAddr) -> Seen,
    package: Option<&'static str>,
}

/// Flags that switch the agent's assumed router limits off by hand.
pub const HAND_UNLIMITED: &[&str] = &[
    "--router-icmp-burst",
    "100000",
    "--router-icmp-per-second",
    "100000",
];

/// A tool of a multipath measurement.
#[derive(Clone, Copy, Debug)]
pub enum Spec {
    /// `traceroute-agent trace DST -U --multipath mda --format json`, then `extra`.
    Agent {
        name: &'static str,
        extra: &'static [&'static str],
    },
    /// `scamper -O json -c tracelb -i DST`, at its defaults.
    Tracelb,
    /// `dublin-traceroute -n 16 DST`.
    Dublin,
}

impl Spec {
    fn tool(self, dst: &str) -> Tool {
        match self {
            Spec::Agent { name, extra } => Tool {
                name,
                program: agent_binary().display().to_string(),
                args: ["trace", dst, "-U", "--multipath", "mda", "--format", "json"]
                    .iter()
                    .chain(extra)
                    .map(ToString::to_string)
                    .collect(),
                result_file: false,
                parse: agent_seen,
                package: None,
            },
            Spec::Tracelb => Tool {
                name: "scamper tracelb, defaults",
                program: "scamper".into(),
                args: ["-O", "json", "-c", "tracelb", "-i", dst]
                    .map(String::from)
                    .to_vec(),
                result_file: false,
                parse: tracelb_seen,
                package: Some("scamper"),
            },
            Spec::Dublin => Tool {
                name: "dublin-traceroute -n 16",
                program: "dublin-traceroute".into(),
                args: ["-n", "16", dst].map(String::from).to_vec(),
                result_file: true,
                parse: dublin_seen,
                package: Some("dublin-traceroute"),
            },
        }
    }
}

/// The multipath benchmark: the nested diamond (unlimited ICMP) mapped by
/// the agent (routers unlimited by hand, and at its defaults), scamper
/// tracelb and dublin-traceroute.
pub fn run(runs: u32, unavailable: &Unavailable) -> Result<MultipathBench> {
    println!("bench: multipath on the nested diamond");
    let specs = [
        Spec::Agent {
            name: "agent MDA, matched (routers unlimited, as in the lab)",
            extra: HAND_UNLIMITED,
        },
        Spec::Agent {
            name: "agent MDA, defaults (starts at Linux's 6, then 1/s per router, and learns)",
            extra: &[],
        },
        Spec::Tracelb,
        Spec::Dublin,
    ];
    measure(
        &traceroute_lab::named::nested(),
        &specs,
        runs,
        None,
        unavailable,
    )
}

/// Maps the diamond of `topology` (src to dst) with every tool of `specs`,
/// `runs` times each (one tool's runs one after another), each run after
/// `pause` when given.
pub fn measure(
    topology: &Topology,
    specs: &[Spec],
    runs: u32,
    pause: Option<Duration>,
    unavailable: &Unavailable,
) -> Result<MultipathBench> {
    let lab = Lab::up(topology)?;
    let dst = lab.primary("dst", Family::V4)?;
    let r1 = lab.addr("r1", "src", Family::V4)?;
    // dublin-traceroute's packet library looks for a default route: give
    // src one into the lab (the namespace has no way out anyway).
    let _ = lab.exec(
        "src",
        "ip",
        ["route", "add", "default", "via", &r1.to_string()],
    );
    let expected = by_name(
        &lab,
        &lab.path("src", "dst", Family::V4)?
            .into_iter()
            .enumerate()
            .flat_map(|(i, hops)| hops.into_iter().map(move |h| (i as u64 + 1, h.addr)))
            .collect::<Vec<_>>(),
    );
    let routers_expected: usize = expected.values().map(BTreeSet::len).sum();
    let counter = ProbeCounter::install(&lab, "src", lab.ifname("src", "r1")?)?;
    let d = dst.to_string();
    let tools: Vec<Tool> = specs.iter().map(|s| s.tool(&d)).collect();
    let workdir = std::env::temp_dir().join(format!("xtask-mp-{}", std::process::id()));
    std::fs::create_dir_all(&workdir)?;
    let mut results = Vec::new();
    for tool in tools {
        if let Some(reason) = tool.package.and_then(|p| unavailable.get(p)) {
            results.push(ToolResult {
                name: tool.name.into(),
                command: format!("{} {}", tool.program, tool.args.join(" ")),
                seconds: None,
                probes: None,
                routers_found: None,
                destination_found: 0,
                runs: 0,
                failure: Some(reason.clone()),
            });
            continue;
        }
        let (mut secs, mut probes, mut found) = (Vec::new(), Vec::new(), Vec::new());
        let mut reached = 0;
        let mut failure = None;
        for _ in 0..runs {
            let _ = std::fs::remove_file(workdir.join("trace.json"));
            if let Some(pause) = pause {
                std::thread::sleep(pause);
            }
            let before = counter.read(&lab)?;
            let mut cmd = lab.command("src", &tool.program)?;
            cmd.args(&tool.args).current_dir(&workdir);
            let (out, took, timed_out) = run_bounded(cmd, &workdir)?;
            let sent = counter.read(&lab)? - before;
            let text = if tool.result_file {
                std::fs::read_to_string(workdir.join("trace.json")).unwrap_or_default()
            } else {
                String::from_utf8_lossy(&out.stdout).into_owned()
            };
            match (tool.parse)(&text, dst) {
                Some((seen, dst_found)) if !timed_out => {
                    secs.push(took.as_secs_f64());
                    probes.push(sent as f64);
                    found.push(count(&by_name(&lab, &seen), &expected) as f64);
                    reached += usize::from(dst_found);
                }
                _ => {
                    let why = if timed_out {
                        format!("did not finish within {} s", TIMEOUT.as_secs())
                    } else {
                        let err = String::from_utf8_lossy(&out.stderr);
                        let last = err.lines().rev().find(|l| !l.trim().is_empty());
                        format!(
                            "no result ({}): {}",
                            out.status,
                            last.unwrap_or("nothing on stderr")
                        )
                    };
                    failure.get_or_insert(why);
                    if timed_out {
                        // It will not do better in the next run.
                        break;
                    }
                }
            }
        }
        results.push(ToolResult {
            name: tool.name.into(),
            command: format!("{} {}", tool.program, tool.args.join(" ")),
            seconds: spread(&secs),
            probes: spread(&probes),
            routers_found: spread(&found),
            destination_found: reached,
            runs: secs.len(),
            failure,
        });
    }
    let _ = std::fs::remove_dir_all(&workdir);
    Ok(MultipathBench {
        routers_expected,
        tools: results,
    })
}

/// The report's section.
pub fn section(b: &MultipathBench) -> String {
    let agent = b.tools.first().and_then(|t| t.seconds).map(|s| s.median);
    let mut out = format!(
        "## Multipath: the nested diamond\n\n{} routers behind src (1, then 4, then 2, then 1), \
         L4 ECMP hashing, ICMP not rate limited. Medians (min–max) over the runs; \
         probes counted on src's interface; routers by name (one router answers from \
         several addresses).\n\n\
         | tool | time (s) | × agent | probes | routers found | destination | runs |\n\
         |---|---|---|---|---|---|---|\n",
        b.routers_expected
    );
    for t in &b.tools {
        let fmt = |s: Option<Spread>, digits: usize| {
            s.map_or("–".to_string(), |s| {
                format!(
                    "{:.digits$} ({:.digits$}–{:.digits$})",
                    s.median, s.min, s.max
                )
            })
        };
        let ratio = match (t.seconds, agent) {
            (Some(s), Some(a)) if a > 0.0 => format!("{:.1}×", s.median / a),
            _ => "–".into(),
        };
        let found = t.routers_found.map_or("–".to_string(), |s| {
            format!("{:.0} / {}", s.median, b.routers_expected)
        });
        let runs = match &t.failure {
            Some(why) if t.runs == 0 => format!("0: {why}"),
            Some(why) => format!("{} ({why})", t.runs),
            None => t.runs.to_string(),
        };
        out += &format!(
            "| {} | {} | {ratio} | {} | {found} | {} of {} | {runs} |\n",
            t.name,
            fmt(t.seconds, 2),
            fmt(t.probes, 0),
            t.destination_found,
            t.runs,
        );
    }
    out += "\nCommands:\n\n";
    for t in &b.tools {
        out += &format!("- `{}`\n", t.command);
    }
    out
}

pub fn json(b: &MultipathBench) -> Value {
    let spread_json =
        |s: Option<Spread>| s.map(|s| json!({"median": s.median, "min": s.min, "max": s.max}));
    json!({
        "routers_expected": b.routers_expected,
        "tools": b.tools.iter().map(|t| json!({
            "name": t.name,
            "command": t.command,
            "seconds": spread_json(t.seconds),
            "probes": spread_json(t.probes),
            "routers_found": spread_json(t.routers_found),
            "destination_found": t.destination_found,
            "runs": t.runs,
            "failure": t.failure,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tracelb_and_dublin_results() {
        let tracelb = r#"{"type":"cycle-start"}
{"type":"tracelb","nodes":[{"addr":"198.18.1.2","q_ttl":1,"links":[[{"addr":"198.18.2.2","probes":[{"ttl":2}]}],[{"addr":"198.18.5.2","probes":[{"ttl":2}]}]]}]}"#;
        let (seen, reached) = tracelb_seen(tracelb, "198.18.16.2".parse().unwrap()).unwrap();
        assert_eq!(seen.len(), 3);
        assert!(!reached);
        let dublin = r#"{"flows":{"33434":[{"sent":{"ip":{"ttl":1}},"received":{"ip":{"src":"198.18.1.2"}}},{"sent":{"ip":{"ttl":2}},"received":null}]}}"#;
        let (seen, _) = dublin_seen(dublin, "198.18.16.2".parse().unwrap()).unwrap();
        assert_eq!(seen, vec![(1, "198.18.1.2".parse().unwrap())]);
        assert!(agent_seen("not json", "198.18.16.2".parse().unwrap()).is_none());
    }
}
