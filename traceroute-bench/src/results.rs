//! The committed report: `bench/results/<date>.md`, the raw figures beside
//! it as `<date>.json`, and its pictures in `<date>/`. The headline section
//! states the ratios the README quotes, each computed from this run alone.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

use super::accuracy::Accuracy;
use super::idle::IdleService;
use super::load::LoadBench;
use super::multipath::MultipathBench;
use super::plots::{self, Row, Series};
use super::routers::{self, RoutersBench};

use super::trace::{Interface, Proto, TraceBench, agent_name, traceroute_name};
use super::{Spread, median};

/// Where a full run's report goes: `bench/results/<date>`, no extension.
pub fn stem(root: &Path, date: &str) -> PathBuf {
    root.join("bench").join("results").join(date)
}

/// Today's date (UTC) as `YYYY-MM-DD`.
pub fn today() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|d| d.len() == 10)
        .unwrap_or_else(|| "undated".into())
}

/// Writes `<stem>.md`, `<stem>.json` and the SVGs in `<stem>/`; the markdown
/// links the pictures relative to itself.
pub fn write(stem: &Path, markdown: &str, json: &Value) -> Result<()> {
    let drawn = draw(stem, json)?;
    let name = stem
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut text = markdown.to_string();
    if !drawn.is_empty() {
        text += "\n## Pictures\n\n";
        for (file, caption) in drawn {
            text += &format!("![{caption}]({name}/{file})\n\n");
        }
    }
    std::fs::write(stem.with_extension("md"), text).context("writing the report")?;
    let json = serde_json::to_string_pretty(json)? + "\n";
    std::fs::write(stem.with_extension("json"), json).context("writing the raw figures")?;
    Ok(())
}

/// Draws the pictures of a report's raw figures again (`--replot FILE.json`),
/// into the directory beside it; the markdown's links stay as they are.
pub fn replot(json_path: &Path) -> Result<()> {
    let text = std::fs::read_to_string(json_path)
        .with_context(|| format!("reading {}", json_path.display()))?;
    let json: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a report's JSON", json_path.display()))?;
    let drawn = draw(&json_path.with_extension(""), &json)?;
    println!(
        "bench: {} pictures drawn in {}",
        drawn.len(),
        json_path.with_extension("").display()
    );
    Ok(())
}

/// Draws every picture the figures allow into the directory `stem`; returns
/// (file, caption) of each.
fn draw(stem: &Path, json: &Value) -> Result<Vec<(String, String)>> {
    std::fs::create_dir_all(stem).with_context(|| format!("creating {}", stem.display()))?;
    let mut drawn = Vec::new();
    for lab in array(&json["trace"]) {
        let name = lab["topology"].as_str().unwrap_or("lab");
        let rows: Vec<Row> = array(&lab["tools"])
            .iter()
            .filter(|t| t["setting"] == "defaults" && t["unavailable_reason"].is_null())
            .map(|t| Row {
                label: t["tool"].as_str().unwrap_or("?").to_string(),
                values: numbers(&t["wall_s"]),
            })
            .collect();
        let file = format!("trace-time-{name}.svg");
        let caption = format!(
            "Wall time of one trace, {name} lab ({}), each tool at its defaults: every run a dot, the median a bar",
            lab["path"].as_str().unwrap_or("")
        );
        let title = format!("One trace, {name} lab, every tool at its defaults");
        plots::strips(&stem.join(&file), &title, "seconds (log)", &rows)?;
        drawn.push((file, caption));
    }
    let conditions = array(&json["accuracy"]["conditions"]);
    if !conditions.is_empty() {
        let mut rows = Vec::new();
        for c in &conditions {
            let condition = c["condition"].as_str().unwrap_or("?");
            for t in array(&c["tools"]) {
                rows.push(Row {
                    label: format!("{} ({condition})", t["tool"].as_str().unwrap_or("?")),
                    values: numbers(&t["error_us"]).iter().map(|e| e.abs()).collect(),
                });
            }
            rows.push(Row {
                label: format!("delay element excess ({condition})"),
                values: numbers(&c["element_excess_us_all"])
                    .iter()
                    .map(|e| e.abs())
                    .collect(),
            });
        }
        let file = "rtt-error.svg".to_string();
        let caption =
            "RTT error per probe: |reported - wire| in µs (log), and the delay element's own excess"
                .to_string();
        plots::strips(
            &stem.join(&file),
            "RTT error per probe, and the delay element's excess",
            "µs (log)",
            &rows,
        )?;
        drawn.push((file, caption));
    }
    let sizes = array(&json["load"]["sizes"]);
    if !sizes.is_empty() {
        let mut tools: Vec<String> = Vec::new();
        for size in &sizes {
            for t in array(&size["tools"]) {
                let name = t["tool"].as_str().unwrap_or("?").to_string();
                if !tools.contains(&name) {
                    tools.push(name);
                }
            }
        }
        let series = |y: &dyn Fn(&Value) -> Option<f64>| -> Vec<Series> {
            tools
                .iter()
                .map(|tool| Series {
                    name: tool.clone(),
                    points: sizes
                        .iter()
                        .filter_map(|s| {
                            let t = array(&s["tools"])
                                .into_iter()
                                .find(|t| t["tool"].as_str() == Some(tool.as_str()))?;
                            if t["available"] == false {
                                return None;
                            }
                            Some((s["targets"].as_f64()?, y(&t)?))
                        })
                        .collect(),
                })
                .collect()
        };
        let file = "load-traces-per-second.svg".to_string();
        let caption = "Traces per second against the number of targets (fanout lab, default ICMP rate limits)".to_string();
        plots::lines(
            &stem.join(&file),
            "Traces per second against the number of targets",
            "targets (log)",
            "traces per second",
            &series(&|t| t["traces_per_s"].as_f64()),
        )?;
        drawn.push((file, caption));
        let file = "load-hops-found.svg".to_string();
        let caption =
            "Hops found, % of the ground truth, against the number of targets".to_string();
        plots::lines(
            &stem.join(&file),
            "Hops found against the number of targets",
            "targets (log)",
            "% of expected hops found",
            &series(&|t| {
                let expected = t["expected_answers"].as_f64().filter(|e| *e > 0.0)?;
                Some(100.0 * t["hops_found"].as_f64()? / expected)
            }),
        )?;
        drawn.push((file, caption));
    }
    Ok(drawn)
}

fn array(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

fn numbers(v: &Value) -> Vec<f64> {
    array(v).iter().filter_map(Value::as_f64).collect()
}

/// Every input of the headline.
pub struct Headline<'a> {
    pub trace: &'a [TraceBench],
    pub accuracy: &'a Accuracy,
    pub throughput_ratio: Option<f64>,
    pub ns_per_packet: Option<f64>,
    pub idle: &'a IdleService,
    pub load: Option<&'a LoadBench>,
    pub multipath: Option<&'a MultipathBench>,
    pub routers: Option<&'a RoutersBench>,
}

/// The figures the README quotes, each with its peer from the same run.
pub fn headline(h: &Headline<'_>) -> String {
    let mut lines = Vec::new();
    for t in h.trace {
        let agent = t.at_defaults(&agent_name(Interface::Cli, Proto::Udp));
        let peer = t.at_defaults(&traceroute_name(Proto::Udp));
        if let (Some(a), Some(p)) = (agent, peer)
            && let (Some(aw), Some(pw)) = (a.wall(), p.wall())
        {
            lines.push(format!(
                    "One trace, `{}` lab, both at their defaults: the agent's CLI (UDP) takes {} s, \
                     Linux traceroute {} s: **{:.2}x** its time; all hops in every run: agent {}, traceroute {}.",
                    t.lab.name,
                    fmt_spread(aw, 2),
                    fmt_spread(pw, 2),
                    aw.median / pw.median,
                    yes_no(t.complete(a)),
                    yes_no(t.complete(p)),
                ));
        }
    }
    if let Some(idle) = h.accuracy.conditions.iter().find(|c| c.name == "idle") {
        let abs_median = |tool: &str| {
            let t = idle.tools.iter().find(|t| t.tool.starts_with(tool))?;
            let abs: Vec<f64> = t.error_us.iter().map(|e| e.abs()).collect();
            median(&abs)
        };
        if let (Some(ebpf), Some(tr)) = (abs_median("agent (eBPF"), abs_median("traceroute")) {
            lines.push(format!(
                "RTT error against the wire, idle: eBPF-stamped {ebpf:.1} µs, socket-stamped {}, \
                 ping {}, traceroute {tr:.1} µs (medians of |error|).",
                abs_median("agent (socket").map_or("-".into(), |v| format!("{v:.1} µs")),
                abs_median("ping").map_or("-".into(), |v| format!("{v:.1} µs")),
            ));
        }
    }
    if let (Some(r), Some(ns)) = (h.throughput_ratio, h.ns_per_packet) {
        lines.push(format!(
            "Capture attached: iperf3 throughput {:.1} % of detached; {ns:.0} ns of kernel time per packet (ingress program).",
            r * 100.0
        ));
    }
    if let Some(row) = h.idle.rows.last() {
        lines.push(format!(
            "The service with {} scheduled targets at rest: {:.1} MiB resident, {:.2} % of a core.",
            row.targets,
            row.rss_kib as f64 / 1024.0,
            row.cpu_percent
        ));
    }
    if let Some(load) = h.load
        && let Some(size) = load.sizes.last()
    {
        let find = |prefix: &str| size.runs.iter().find(|r| r.tool.starts_with(prefix));
        if let (Some(a), Some(s)) = (find("agent"), find("scamper"))
            && let (Some(at), Some(st)) =
                (a.traces_per_s(size.targets), s.traces_per_s(size.targets))
        {
            lines.push(format!(
                        "{} targets at once: the agent service {at:.1} traces/s, {} ({:.2}x); hops found {} / {} of {}.",
                        size.targets,
                        format_args!("{} {st:.1} traces/s", s.tool),
                        at / st,
                        a.tally.found,
                        s.tally.found,
                        a.tally.expected,
                    ));
        }
    }
    if let Some(mp) = h.multipath {
        let find = |prefix: &str| mp.tools.iter().find(|t| t.name.starts_with(prefix));
        if let (Some(a), Some(s)) = (find("agent MDA, defaults"), find("scamper tracelb"))
            && let (Some(at), Some(st)) = (a.seconds, s.seconds)
        {
            lines.push(format!(
                    "Multipath (nested diamond), both at defaults: agent MDA {} s, scamper tracelb {} s ({:.2}x); probes {} vs {}.",
                    fmt_spread(at, 2),
                    fmt_spread(st, 2),
                    at.median / st.median,
                    a.probes.map_or("-".into(), |p| format!("{:.0}", p.median)),
                    s.probes.map_or("-".into(), |p| format!("{:.0}", p.median)),
                ));
        }
    }
    if let Some(r) = h.routers {
        lines.extend(routers::headline(r));
    }
    let mut out = String::from("## Headline\n\n");
    for line in lines {
        out += &format!("- {line}\n");
    }
    out
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// `median (min-max)`.
pub fn fmt_spread(s: Spread, decimals: usize) -> String {
    format!(
        "{:.d$} ({:.d$}-{:.d$})",
        s.median,
        s.min,
        s.max,
        d = decimals
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_live_under_bench_results_by_date() {
        let stem = stem(Path::new("/repo"), "2026-12-01");
        assert_eq!(stem, Path::new("/repo/bench/results/2026-12-01"));
        assert_eq!(
            stem.with_extension("md"),
            Path::new("/repo/bench/results/2026-12-01.md")
        );
        assert_eq!(today().len(), 10);
    }

    #[test]
    fn pictures_are_drawn_from_the_raw_figures() {
        let json = serde_json::json!({
            "trace": [{"topology": "chain", "path": "src - dst", "tools": [
                {"tool": "agent CLI UDP", "setting": "defaults", "unavailable_reason": null, "wall_s": [0.1, 0.2]},
                {"tool": "mtr ICMP", "setting": "matched", "unavailable_reason": null, "wall_s": [7.0]},
            ]}],
            "accuracy": {"conditions": [{"condition": "idle", "element_excess_us_all": [50.0],
                "tools": [{"tool": "ping", "error_us": [-20.0, 30.0]}]}]},
            "load": {"sizes": [
                {"targets": 64, "tools": [{"tool": "agent service", "available": true,
                    "traces_per_s": 800.0, "hops_found": 128, "expected_answers": 128}]},
                {"targets": 256, "tools": [{"tool": "agent service", "available": true,
                    "traces_per_s": 900.0, "hops_found": 512, "expected_answers": 512}]},
            ]},
        });
        let stem = std::env::temp_dir().join(format!("xtask-results-{}", std::process::id()));
        let drawn = draw(&stem, &json).unwrap();
        let files: Vec<&str> = drawn.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            files,
            [
                "trace-time-chain.svg",
                "rtt-error.svg",
                "load-traces-per-second.svg",
                "load-hops-found.svg"
            ]
        );
        let trace = std::fs::read_to_string(stem.join("trace-time-chain.svg")).unwrap();
        assert!(
            trace.contains("agent CLI UDP") && !trace.contains("mtr ICMP"),
            "defaults only"
        );
        let errors = std::fs::read_to_string(stem.join("rtt-error.svg")).unwrap();
        assert_eq!(errors.matches("<circle").count(), 3);
        let _ = std::fs::remove_dir_all(&stem);
    }

    #[test]
    fn spreads_read_median_first() {
        let s = Spread {
            median: 1.234,
            min: 1.0,
            max: 2.0,
        };
        assert_eq!(fmt_spread(s, 2), "1.23 (1.00-2.00)");
    }
}
