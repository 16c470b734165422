//! The peer side of the load benchmark: scamper tracing the target list
//! (`-f`), all tasks in parallel as scamper does by default, paced by its
//! packets-per-second limit, results as JSON lines (`-O json`).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;
use traceroute_lab::Lab;

use super::{LoadRun, MAX_TTL, Targets, WorkDir};
use crate::counter::ProbeCounter;
use crate::process::wait_with_usage;
use crate::truth::{Observed, judge};

/// scamper's own default (`man scamper`, `-p`).
const DEFAULT_PPS: u32 = 20;

/// Short name: at its default rate, or at `pps`.
pub fn name(pps: Option<u32>) -> String {
    match pps {
        None => format!("scamper (default {DEFAULT_PPS} pps)"),
        Some(pps) => format!("scamper ({pps} pps, 1 s wait)"),
    }
}

/// The trace command: the request the agent gets (ICMP, one attempt per
/// hop, max TTL 8); matched runs also wait 1 s per probe like the agent
/// (scamper's default is 5 s).
fn trace_command(pps: Option<u32>) -> String {
    let wait = if pps.is_some() { " -w 1" } else { "" };
    format!("trace -P icmp-paris -q 1 -m {MAX_TTL}{wait}")
}

fn args(pps: Option<u32>, list: &Path, output: &Path) -> Vec<String> {
    let mut args: Vec<String> = vec!["-O".into(), "json".into()];
    if let Some(pps) = pps {
        args.extend(["-p".into(), pps.to_string()]);
    }
    args.extend(["-c".into(), trace_command(pps), "-f".into()]);
    args.push(list.to_string_lossy().into_owned());
    args.extend(["-o".into(), output.to_string_lossy().into_owned()]);
    args
}

/// Runs scamper once over all targets of `targets`.
pub fn run(
    lab: &Lab,
    counter: &ProbeCounter,
    dir: &WorkDir,
    targets: &Targets,
    pps: Option<u32>,
    unavailable: Option<&String>,
) -> Result<LoadRun> {
    let list = dir.0.join("targets.txt");
    let output = dir.0.join("scamper.json");
    let args = args(pps, &list, &output);
    let shown: Vec<String> = args
        .iter()
        .map(|a| match a {
            a if a.contains(' ') => format!("\"{a}\""),
            a if a.starts_with('/') => a.rsplit('/').next().unwrap_or(a).to_string(),
            a => a.clone(),
        })
        .collect();
    let mut run = LoadRun::new(name(pps), format!("scamper {}", shown.join(" ")));
    if let Some(reason) = unavailable {
        run.unavailable = Some(reason.clone());
        return Ok(run);
    }
    let lines: Vec<String> = targets.addrs.iter().map(IpAddr::to_string).collect();
    std::fs::write(&list, lines.join("\n") + "\n").context("writing the target list")?;
    let _ = std::fs::remove_file(&output);

    // Generous: every task could wait out all its hops.
    let rate = pps.unwrap_or(DEFAULT_PPS).max(1);
    let timeout = Duration::from_secs(120 + 10 * targets.addrs.len() as u64 / u64::from(rate));
    let mut cmd = lab.command("src", "scamper")?;
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let probes_before = counter.read(lab)?;
    let start = Instant::now();
    let child = cmd.spawn().context("starting scamper")?;
    let (status, usage) = wait_with_usage(child, timeout)?;
    run.wall_s = start.elapsed().as_secs_f64();
    run.probes_counted = counter.read(lab)? - probes_before;
    run.usage = Some(usage);
    if !status.success() {
        run.unavailable = Some(format!("failed: {status}"));
        return Ok(run);
    }

    let text = std::fs::read_to_string(&output).unwrap_or_default();
    let mut traced = BTreeSet::new();
    let mut reported = Some(0);
    for trace in traces(&text) {
        let Some(dst) = trace["dst"].as_str().and_then(|d| d.parse::<IpAddr>().ok()) else {
            continue;
        };
        let Some(truth) = targets.truth_of(dst) else {
            continue;
        };
        run.tally.add(&judge(&hops(&trace), truth));
        reported = reported
            .zip(trace["probe_count"].as_u64())
            .map(|(a, b)| a + b);
        traced.insert(dst);
    }
    let missing = targets.addrs.len() - traced.len();
    if missing > 0 {
        run.failures
            .insert("no trace in the output".into(), missing as u64);
    }
    run.probes_reported = reported.filter(|_| missing == 0);
    Ok(run)
}

/// The `trace` objects of scamper's JSON lines (cycle-start/stop and
/// anything unparsable are skipped).
pub(crate) fn traces(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|v| v["type"] == "trace")
        .collect()
}

/// The hops of one scamper trace: only answered probes are listed.
pub(crate) fn hops(trace: &Value) -> Vec<Observed> {
    let hops = trace["hops"].as_array().into_iter().flatten();
    hops.filter_map(|hop| {
        Some(Observed {
            ttl: u8::try_from(hop["probe_ttl"].as_u64()?).ok()?,
            addr: hop["addr"].as_str().and_then(|a| a.parse().ok()),
            shared: false,
            no_answer: None,
        })
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real output of scamper 20211212 (`-O json`), trimmed to the fields read.
    const OUTPUT: &str = r#"{"type":"cycle-start", "list_name":"default", "id":0, "hostname":"vm", "start_time":1796126976}
{"type":"trace","version":"0.1", "method":"icmp-echo-paris", "src":"198.18.1.1", "dst":"198.19.128.1", "stop_reason":"COMPLETED", "hop_count":2, "attempts":1, "hoplimit":8, "probe_count":2, "hops":[{"addr":"198.18.1.2", "probe_ttl":1, "probe_id":1, "rtt":0.190, "icmp_type":11, "icmp_code":0}, {"addr":"198.19.128.1", "probe_ttl":2, "probe_id":1, "rtt":0.210, "icmp_type":0, "icmp_code":0}]}
{"type":"trace","version":"0.1", "method":"icmp-echo-paris", "src":"198.18.1.1", "dst":"198.19.132.1", "stop_reason":"COMPLETED", "hop_count":2, "attempts":1, "hoplimit":8, "probe_count":2, "hops":[{"addr":"198.19.132.1", "probe_ttl":2, "probe_id":1, "rtt":0.982, "icmp_type":0, "icmp_code":0}]}
{"type":"cycle-stop", "list_name":"default", "id":0, "hostname":"vm", "stop_time":1796126976}
"#;

    #[test]
    fn reads_traces_and_their_hops() {
        let traces = traces(OUTPUT);
        assert_eq!(traces.len(), 2);
        let first = hops(&traces[0]);
        assert_eq!(first.len(), 2);
        assert_eq!(first[0].ttl, 1);
        assert_eq!(first[0].addr, Some("198.18.1.2".parse().unwrap()));
        // The second trace got no answer from gw: TTL 1 is simply absent.
        let second = hops(&traces[1]);
        let truth = [
            Some("198.18.1.2".parse().unwrap()),
            Some("198.19.132.1".parse().unwrap()),
        ];
        let t = judge(&second, &truth);
        assert_eq!((t.found, t.invented), (1, 1));
        assert!(super::traces("not json\n").is_empty());
    }

    #[test]
    fn builds_the_command() {
        let a = args(None, Path::new("/t/list"), Path::new("/t/out"));
        assert_eq!(
            a.join(" "),
            "-O json -c trace -P icmp-paris -q 1 -m 8 -f /t/list -o /t/out"
        );
        let a = args(Some(1000), Path::new("/t/list"), Path::new("/t/out"));
        assert!(
            a.join(" ")
                .starts_with("-O json -p 1000 -c trace -P icmp-paris -q 1 -m 8 -w 1")
        );
    }
}
