//! The bench report: one markdown rendering (printed and written to
//! report.md) and the same numbers as JSON (report.json).

mod load;

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::load::LoadBench;
use super::throughput::Throughput;
use super::trace::{Measurement, Setting, Target, TraceBench};
use super::{REFILL, Spread, median};

pub struct Report {
    /// What the agent was built from.
    pub build: String,
    /// One per lab.
    pub trace: Vec<TraceBench>,
    pub throughput: Throughput,
    pub load: Option<LoadBench>,
}

/// The load benchmark's section alone (`--only-load`).
pub fn load_section(l: &LoadBench) -> String {
    load::section(l)
}

/// The load benchmark's JSON alone (`--only-load`).
pub fn load_json(l: &LoadBench) -> Value {
    load::json(l)
}

pub fn markdown(report: &Report) -> String {
    let mut out = format!("Agent built from {}.\n\n", report.build);
    out += &targets_section(&report.trace);
    for t in &report.trace {
        out += "\n";
        out += &trace_section(t);
    }
    out += "\n";
    out += &throughput_section(&report.throughput);
    if let Some(l) = &report.load {
        out += "\n";
        out += &load::section(l);
    }
    out
}

fn targets_section(benches: &[TraceBench]) -> String {
    let mut out = String::from(
        "## Targets: one trace, the agent against Linux traceroute, both at their defaults\n\n\
         Ratio: the agent's median wall time over traceroute's, same protocol (UDP: \
         `traceroute -n`, TCP: `traceroute -n -T -p 80`, ICMP: `traceroute -n -I`). \
         Every router keeps the kernel's default ICMP rate limits. `met`: the ratio is \
         within the target and the agent found every hop in every run (equal \
         completeness); `all hops`: runs that found every expected hop.\n\n",
    );
    let headers = [
        "goal",
        "lab",
        "agent",
        "protocol",
        "agent wall",
        "traceroute wall",
        "ratio",
        "target",
        "met",
        "agent: all hops",
        "traceroute: all hops",
        "probes (agent / traceroute)",
    ];
    let mut rows = Vec::new();
    for t in benches {
        for target in t.targets() {
            rows.push(target_row(t, &target));
        }
    }
    out += &table(&headers, &rows);
    out
}

fn target_row(t: &TraceBench, target: &Target<'_>) -> Vec<String> {
    let wall = |m: Option<&Measurement>| spread_text(m.and_then(Measurement::wall), 3, " s");
    let found = |m: Option<&Measurement>| match m {
        Some(m) if m.unavailable.is_none() => {
            let all = m.matching_runs(&t.expected);
            let mark = if t.complete(m) { "yes" } else { "NO" };
            format!("{mark} ({all}/{})", t.runs)
        }
        Some(m) => format!("- ({})", m.unavailable.as_deref().unwrap_or("")),
        None => "-".into(),
    };
    let ratio = target.ratio();
    let met = match (target.limit, ratio, target.agent) {
        (None, _, _) => "-".to_string(),
        (Some(limit), Some(r), Some(agent)) => {
            let complete = t.complete(agent);
            match (r <= limit, complete) {
                (true, true) => "yes".into(),
                (false, true) => "no".into(),
                (true, false) => "no (missed hops)".into(),
                (false, false) => "no (slower, missed hops)".into(),
            }
        }
        _ => "not measured".into(),
    };
    vec![
        t.lab.goal.to_string(),
        t.lab.name.to_string(),
        target.interface.label().to_string(),
        target.proto.label().to_string(),
        wall(target.agent),
        wall(target.traceroute),
        ratio_text(ratio),
        target
            .limit
            .map_or("-".into(), |l| format!("<= {}", ratio_text(Some(l)))),
        met,
        found(target.agent),
        found(target.traceroute),
        format!(
            "{} / {}",
            spread_text(target.agent.and_then(Measurement::probes_sent), 0, ""),
            spread_text(target.traceroute.and_then(Measurement::probes_sent), 0, "")
        ),
    ]
}

fn trace_section(t: &TraceBench) -> String {
    let limits: Vec<String> = t
        .rate_limits
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mut out = format!(
        "## One trace: `{}` lab {} ({})\n\n\
         {} runs per tool and setting, round-robin over the tools; destination {}. \
         Expected hops: {}\n\n\
         - ICMP rate limits of every node (the kernel's defaults, as read in r1): {}. \
         A router answers src a burst of 6 errors, then one per second; before every \
         timed run the bench pauses {} s, so every tool meets every router with a full \
         budget.\n\
         - agent CLI: one `traceroute-agent trace` process per trace, timed from outside. \
         agent API: one `{}` in src for the whole lab, started before the first run; each \
         request timed as its client sees it (connecting to its Unix socket to the last \
         byte of the answer). Its first request after starting (ICMP: {} s) was not \
         timed.{} Peers: one \
         process per trace.\n\
         - Load average (1 min) before the timed runs: {}.\n\
         - Probes: packets leaving src's interface toward the lab during the run (UDP, TCP \
         SYN, ICMP echo request; counted by nftables on the egress hook, so ARP and \
         neighbour discovery are not included).\n\
         - Medians, (min-max) over the runs; ratios against the agent CLI's UDP trace at \
         the same setting.\n",
        t.lab.name,
        t.lab.goal,
        t.lab.path,
        t.runs,
        t.destination,
        t.expected.join(" "),
        if limits.is_empty() {
            "-".to_string()
        } else {
            limits.join(", ")
        },
        REFILL.as_secs(),
        t.service.command,
        t.service
            .warmup_s
            .iter()
            .map(|w| format!("{w:.3}"))
            .collect::<Vec<_>>()
            .join(", "),
        restarts_text(&t.service.restarts),
        t.load_average.map_or("-".into(), |l| format!(
            "median {:.2}, {:.2}-{:.2} ({} CPUs)",
            l.median,
            l.min,
            l.max,
            std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
        )),
    );
    for setting in Setting::ALL {
        out += &match setting {
            Setting::Defaults => {
                "\n### Each tool at its own defaults (only reverse DNS off)\n\n".to_string()
            }
            Setting::Matched => {
                "\n### Matched: 3 probes per hop, max TTL 30, 1 s wait\n\n".to_string()
            }
        };
        let headers = [
            "tool",
            "wall time",
            "/ agent CLI UDP",
            "probes",
            "/ agent CLI UDP",
            "hops",
            "notes",
        ];
        let of_setting = || t.measurements.iter().filter(|m| m.setting == setting);
        let rows: Vec<Vec<String>> = of_setting().map(|m| trace_row(t, m)).collect();
        out += &table(&headers, &rows);
        out += "\nCommands (in src's namespace):\n\n";
        for m in of_setting() {
            out += &format!("- {}: `{}`\n", m.tool, m.command);
        }
    }
    out
}

/// `median (min-max)` with `unit` after each number, `-` without values.
pub(super) fn spread_text(s: Option<Spread>, decimals: usize, unit: &str) -> String {
    let Some(s) = s else {
        return "-".into();
    };
    let n = |v: f64| format!("{v:.decimals$}");
    if n(s.min) == n(s.max) {
        format!("{}{unit}", n(s.median))
    } else {
        format!("{}{unit} ({}-{})", n(s.median), n(s.min), n(s.max))
    }
}

pub(super) fn ratio_text(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.2}x"))
}

fn trace_row(t: &TraceBench, m: &Measurement) -> Vec<String> {
    if let Some(reason) = &m.unavailable {
        let mut row = vec![m.tool.clone()];
        row.extend(std::iter::repeat_n("-".to_string(), 5));
        row.push(format!("unavailable: {reason}"));
        return row;
    }
    let matching = m.matching_runs(&t.expected);
    let mut hops = format!("{matching}/{} ok", m.hops.len());
    if let Some(wrong) = m.hops.iter().find(|h| **h != t.expected) {
        hops += &format!(", got {}", compact_hops(wrong));
    }
    let mut note = m.note.clone();
    if !m.probes_reported.is_empty() {
        let reported: Vec<String> = m.probes_reported.iter().map(u64::to_string).collect();
        note += &format!("; says it sent {}", reported.join(", "));
    }
    note += &probing_note(&m.records);
    vec![
        m.tool.clone(),
        spread_text(m.wall(), 3, " s"),
        ratio_text(t.ratio(m)),
        spread_text(m.probes_sent(), 0, ""),
        ratio_text(t.probe_ratio(m)),
        hops,
        note,
    ]
}

fn restarts_text(restarts: &[String]) -> String {
    if restarts.is_empty() {
        return String::new();
    }
    format!(
        " It was started again {} time(s), each time with an untimed first request: {}.",
        restarts.len(),
        restarts.join("; ")
    )
}

/// What the agent's records say beyond the hops: re-probes, probes not
/// sent, why a record is degraded, and per TTL the unanswered hops' markers
/// with how long they waited (`3: timeout 400ms`), over all runs.
fn probing_note(records: &[Value]) -> String {
    let mut out = String::new();
    let sum = |key: &str| -> u64 {
        records
            .iter()
            .filter_map(|r| r["probing"][key].as_u64())
            .sum()
    };
    for (key, label) in [("reprobes", "re-probes"), ("probes_not_sent", "not sent")] {
        let n = sum(key);
        if n > 0 {
            out += &format!("; {label} {n}");
        }
    }
    let mut degraded: Vec<&str> = records
        .iter()
        .filter_map(|r| r["probing"]["degraded"].as_array())
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    degraded.sort_unstable();
    degraded.dedup();
    if !degraded.is_empty() {
        out += &format!("; degraded: {}", degraded.join(", "));
    }
    // Per TTL and marker: how many hops, and the range of their waits.
    type Waits = (u64, Option<(f64, f64)>);
    let mut unanswered: BTreeMap<(u64, String), Waits> = BTreeMap::new();
    for record in records {
        let runs = record["traceroute"]["runs"]
            .as_array()
            .into_iter()
            .flatten();
        for hop in runs.filter_map(|r| r["hops"].as_array()).flatten() {
            let (Some(ttl), Some(marker)) = (hop["ttl"].as_u64(), hop["no_answer"].as_str()) else {
                continue;
            };
            let (count, waits) = unanswered.entry((ttl, marker.to_string())).or_default();
            *count += 1;
            if let Some(w) = hop["waited"].as_f64() {
                *waits = Some(waits.map_or((w, w), |(lo, hi)| (lo.min(w), hi.max(w))));
            }
        }
    }
    if !unanswered.is_empty() {
        let hops: Vec<String> = unanswered
            .iter()
            .map(|((ttl, marker), (count, waits))| {
                let waited = match waits {
                    Some((lo, hi)) if format!("{lo:.0}") == format!("{hi:.0}") => {
                        format!(", waited {lo:.0} ms")
                    }
                    Some((lo, hi)) => format!(", waited {lo:.0}-{hi:.0} ms"),
                    None => String::new(),
                };
                format!("TTL {ttl} {marker} x{count}{waited}")
            })
            .collect();
        out += &format!("; unanswered: {}", hops.join("; "));
    }
    out
}

/// Hop list with long runs of silence shortened: `a b *x27`.
fn compact_hops(hops: &[String]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < hops.len() {
        let run = hops[i..].iter().take_while(|h| **h == hops[i]).count();
        if hops[i] == "*" && run > 3 {
            parts.push(format!("*x{run}"));
        } else {
            parts.extend(hops[i..i + run].iter().cloned());
        }
        i += run;
    }
    parts.join(" ")
}

fn ns(v: Option<f64>) -> String {
    v.map_or("-".into(), |ns| format!("{ns:.1} ns"))
}

fn throughput_section(t: &Throughput) -> String {
    let mut out = String::from(
        "## What the capture costs other traffic: iperf3 TCP a -> b across one veth\n\n",
    );
    if let Some(reason) = &t.unavailable {
        return out + &format!("Unavailable: {reason}\n");
    }
    out += &format!(
        "{} s per transfer, {} alternations (without, then with \
         `traceroute-agent capture --registered-only` on a's interface).\n\n",
        t.seconds,
        t.without_bps.len()
    );
    let gbps = |v: Option<f64>| v.map_or("-".into(), |b| format!("{:.2} Gbit/s", b / 1e9));
    let runs = |v: &[f64]| {
        v.iter()
            .map(|b| format!("{:.2}", b / 1e9))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let rows = vec![
        vec![
            "without capture".into(),
            gbps(t.median_without()),
            runs(&t.without_bps),
        ],
        vec![
            "with capture".into(),
            gbps(t.median_with()),
            runs(&t.with_bps),
        ],
    ];
    out += &table(&["", "median", "runs (Gbit/s)"], &rows);
    let seen: Vec<String> = t.packets_seen.iter().map(u64::to_string).collect();
    out += &format!(
        "\nRatio with/without: {} (run-to-run spread without the capture: {})\n\
         Packets the programs saw per run with the capture: {}\n\n\
         Kernel time per packet (BPF run-time statistics, median over the runs): \
         ingress program {}, egress program {}\n",
        t.ratio().map_or("-".into(), |r| format!("{r:.3}")),
        t.spread_without()
            .map_or("-".into(), |s| format!("{:.0}%", s * 100.0)),
        seen.join(", "),
        ns(t.median_ns("capture_ingress")),
        ns(t.median_ns("capture_egress")),
    );
    out += &format!(
        "iperf3 CPU (sender + receiver, % of a core), median without / with: {} / {} (ratio {})

{}
",
        median(&t.without_cpu).map_or("-".into(), |c| format!("{c:.0}")),
        median(&t.with_cpu).map_or("-".into(), |c| format!("{c:.0}")),
        t.cpu_ratio().map_or("-".into(), |r| format!("{r:.3}")),
        match t.effect_exceeds_spread() {
            Some(true) =>
                "The throughput change is larger than the run-to-run spread of either side: it is an effect.",
            Some(false) =>
                "The throughput change is within the run-to-run spread: over this many alternations the capture's cost does not show above the noise. The kernel time per packet above is the measurable cost.",
            None => "",
        }
    );
    out
}

/// A markdown table padded to line up in a terminal too.
pub(super) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(headers.iter().map(ToString::to_string).collect());
    out += &line(widths.iter().map(|w| "-".repeat(*w)).collect());
    for row in rows {
        out += &line(row.clone());
    }
    out
}

/// `{"median", "min", "max"}` or null.
pub(super) fn spread_json(s: Option<Spread>) -> Value {
    s.map_or(
        Value::Null,
        |s| json!({"median": s.median, "min": s.min, "max": s.max}),
    )
}

fn trace_json(t: &TraceBench) -> Value {
    let tools: Vec<Value> = t
        .measurements
        .iter()
        .map(|m| {
            json!({
                "tool": m.tool,
                "setting": m.setting.label(),
                "command": m.command,
                "available": m.unavailable.is_none(),
                "unavailable_reason": m.unavailable,
                "wall_s": m.wall_s,
                "wall": spread_json(m.wall()),
                "ratio_to_agent_cli_udp": t.ratio(m),
                "probes_sent": m.probes,
                "probes": spread_json(m.probes_sent()),
                "probe_ratio_to_agent_cli_udp": t.probe_ratio(m),
                "probes_reported_by_tool": m.probes_reported,
                "hops": m.hops,
                "runs_with_expected_hops": m.matching_runs(&t.expected),
                "note": m.note,
                "records": m.records,
            })
        })
        .collect();
    let limits: serde_json::Map<String, Value> = t
        .rate_limits
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({
        "topology": t.lab.name,
        "path": t.lab.path,
        "goal": t.lab.goal,
        "icmp_rate_limits": limits,
        "pause_before_each_run_s": REFILL.as_secs_f64(),
        "agent_service": t.service.command,
        "agent_service_warmup_s": t.service.warmup_s,
        "agent_service_restarts": t.service.restarts,
        "load_average_1min": spread_json(t.load_average),
        "destination": t.destination.to_string(),
        "runs": t.runs,
        "expected_hops": t.expected,
        "probes_counted": "packets leaving src's interface to lab addresses: UDP, TCP SYN, ICMP echo request (nftables egress hook)",
        "tools": tools,
    })
}

fn targets_json(t: &TraceBench) -> Vec<Value> {
    let complete = |m: Option<&Measurement>| m.map(|m| t.complete(m));
    t.targets()
        .iter()
        .map(|target| {
            let ratio = target.ratio();
            json!({
                "goal": t.lab.goal,
                "topology": t.lab.name,
                "agent": target.interface.label(),
                "protocol": target.proto.label(),
                "agent_wall": spread_json(target.agent.and_then(Measurement::wall)),
                "traceroute_wall": spread_json(target.traceroute.and_then(Measurement::wall)),
                "ratio": ratio,
                "target_max_ratio": target.limit,
                "agent_found_all_hops": complete(target.agent),
                "traceroute_found_all_hops": complete(target.traceroute),
                "met": target.limit.zip(ratio).zip(complete(target.agent))
                    .map(|((limit, r), all)| r <= limit && all),
            })
        })
        .collect()
}

pub fn json(report: &Report) -> Value {
    let tp = &report.throughput;
    json!({
        "agent_build": report.build,
        "targets": report.trace.iter().flat_map(targets_json).collect::<Vec<_>>(),
        "trace": report.trace.iter().map(trace_json).collect::<Vec<_>>(),
        "load": report.load.as_ref().map(load::json),
        "throughput": {
            "available": tp.unavailable.is_none(),
            "unavailable_reason": tp.unavailable,
            "seconds_per_run": tp.seconds,
            "without_capture_bps": tp.without_bps,
            "with_capture_bps": tp.with_bps,
            "median_without_bps": tp.median_without(),
            "median_with_bps": tp.median_with(),
            "ratio_with_to_without": tp.ratio(),
            "without_capture_cpu_percent": tp.without_cpu,
            "with_capture_cpu_percent": tp.with_cpu,
            "cpu_ratio_with_to_without": tp.cpu_ratio(),
            "effect_exceeds_spread": tp.effect_exceeds_spread(),
            "spread_without_capture": tp.spread_without(),
            "packets_seen_with_capture": tp.packets_seen,
            "ns_per_packet_with_capture": tp.ns_per_packet,
            "median_ns_per_packet_ingress": tp.median_ns("capture_ingress"),
            "median_ns_per_packet_egress": tp.median_ns("capture_egress"),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compacts_long_silences_only() {
        let hops: Vec<String> = ["a", "*", "b", "*", "*", "*", "*", "*"]
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(compact_hops(&hops), "a * b *x5");
    }

    #[test]
    fn spreads_as_text() {
        let s = |median, min, max| Some(Spread { median, min, max });
        assert_eq!(
            spread_text(s(0.24, 0.231, 0.262), 3, " s"),
            "0.240 s (0.231-0.262)"
        );
        assert_eq!(spread_text(s(45.0, 45.0, 45.0), 0, ""), "45");
        assert_eq!(spread_text(None, 0, ""), "-");
    }

    #[test]
    fn summarises_agent_records() {
        let record: Value = serde_json::from_str(
            r#"{"probing": {"probes_sent": 16, "reprobes": 1, "probes_not_sent": 0,
                            "degraded": ["rate_limited"]},
                "traceroute": {"runs": [
                  {"hops": [{"ttl": 1, "ip_address": "198.18.1.2"},
                            {"ttl": 3, "ip_address": "", "no_answer": "timeout", "waited": 400.2}]},
                  {"hops": [{"ttl": 3, "ip_address": "", "no_answer": "timeout", "waited": 400.2},
                            {"ttl": 2, "ip_address": "", "no_answer": "rate_limited"}]}]}}"#,
        )
        .unwrap();
        assert_eq!(
            probing_note(&[record.clone(), record]),
            "; re-probes 2; degraded: rate_limited; unanswered: TTL 2 rate_limited x2; \
             TTL 3 timeout x4, waited 400 ms"
        );
        let waits = json!({"traceroute": {"runs": [{"hops": [
            {"ttl": 3, "no_answer": "timeout", "waited": 11.4},
            {"ttl": 3, "no_answer": "timeout", "waited": 13.2}]}]}});
        assert_eq!(
            probing_note(&[waits]),
            "; unanswered: TTL 3 timeout x2, waited 11-13 ms"
        );
        assert_eq!(probing_note(&[]), "");
        assert_eq!(probing_note(&[json!({"probing": {"degraded": []}})]), "");
    }

    #[test]
    fn pads_tables() {
        let t = table(&["x", "long"], &[vec!["abc".into(), "d".into()]]);
        assert_eq!(t, "| x   | long |\n| --- | ---- |\n| abc | d    |\n");
    }
}
