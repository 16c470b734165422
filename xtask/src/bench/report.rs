//! The bench report: one markdown rendering (printed and written to
//! report.md) and the same numbers as JSON (report.json).

mod load;

use serde_json::{Value, json};

use super::Spread;
use super::load::LoadBench;
use super::throughput::Throughput;
use super::trace::{Measurement, Setting, TraceBench};

pub struct Report {
    pub trace: TraceBench,
    pub throughput: Throughput,
    pub load: Option<LoadBench>,
}

pub fn markdown(report: &Report) -> String {
    let mut out = String::from("# traceroute-agent bench\n\n");
    out += &trace_section(&report.trace);
    out += "\n";
    out += &throughput_section(&report.throughput);
    if let Some(l) = &report.load {
        out += "\n";
        out += &load::section(l);
    }
    out
}

fn trace_section(t: &TraceBench) -> String {
    let mut out = format!(
        "## One trace: chain lab with a silent hop (src - r1 - r2 - r3 (silent) - r4 - dst)\n\n\
         {} runs per tool and setting, one process per trace, timed from outside; destination {}.\n\
         Expected hops: {}\n\
         Probes: packets leaving src's interface toward the lab during the run (UDP, TCP SYN, \
         ICMP echo request; counted by nftables on the egress hook, so ARP and neighbour \
         discovery are not included). Medians, (min-max) over the runs; ratios against the \
         agent's UDP trace at the same setting.\n",
        t.runs,
        t.destination,
        t.expected.join(" ")
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
            "/ agent UDP",
            "probes",
            "/ agent UDP",
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
fn spread_text(s: Option<Spread>, decimals: usize, unit: &str) -> String {
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

fn ratio_text(r: Option<f64>) -> String {
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
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
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

pub fn json(report: &Report) -> Value {
    let t = &report.trace;
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
                "ratio_to_agent_udp": t.ratio(m),
                "probes_sent": m.probes,
                "probes": spread_json(m.probes_sent()),
                "probe_ratio_to_agent_udp": t.probe_ratio(m),
                "probes_reported_by_tool": m.probes_reported,
                "hops": m.hops,
                "runs_with_expected_hops": m.matching_runs(&t.expected),
                "note": m.note,
            })
        })
        .collect();
    let tp = &report.throughput;
    json!({
        "trace": {
            "topology": "chain",
            "destination": t.destination.to_string(),
            "runs": t.runs,
            "expected_hops": t.expected,
            "probes_counted": "packets leaving src's interface to lab addresses: UDP, TCP SYN, ICMP echo request (nftables egress hook)",
            "tools": tools,
        },
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
            .map(|s| s.to_string())
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
    fn pads_tables() {
        let t = table(&["x", "long"], &[vec!["abc".into(), "d".into()]]);
        assert_eq!(t, "| x   | long |\n| --- | ---- |\n| abc | d    |\n");
    }
}
