//! The bench report: one markdown rendering (printed and written to
//! report.md) and the same numbers as JSON (report.json).

use serde_json::{Value, json};

use super::throughput::Throughput;
use super::trace::{Measurement, TraceBench};

pub struct Report {
    pub trace: TraceBench,
    pub throughput: Throughput,
}

pub fn markdown(report: &Report) -> String {
    let mut out = String::from("# traceroute-agent bench\n\n");
    out += &trace_section(&report.trace);
    out += "\n";
    out += &throughput_section(&report.throughput);
    out
}

fn trace_section(t: &TraceBench) -> String {
    let mut out = format!(
        "## Trace wall time: chain lab with a silent hop (src - r1 - r2 - r3 (silent) - r4 - dst)\n\n\
         {} runs per tool, one process per trace, timed from outside; destination {}.\n\
         Expected hops: {}\n\n",
        t.runs,
        t.destination,
        t.expected.join(" ")
    );
    let headers = [
        "tool",
        "median",
        "min",
        "max",
        "/ agent UDP",
        "hops",
        "notes",
    ];
    let rows: Vec<Vec<String>> = t.measurements.iter().map(|m| trace_row(t, m)).collect();
    out += &table(&headers, &rows);
    out += "\nCommands (in src's namespace):\n\n";
    for m in &t.measurements {
        out += &format!("- {}: `{}`\n", m.tool, m.command);
    }
    out
}

fn trace_row(t: &TraceBench, m: &Measurement) -> Vec<String> {
    if let Some(reason) = &m.unavailable {
        let dash = "-".to_string();
        let mut row = vec![m.tool.clone(), dash.clone(), dash.clone(), dash.clone()];
        row.extend([dash.clone(), dash, format!("unavailable: {reason}")]);
        return row;
    }
    let secs = |s: Option<f64>| s.map_or("-".into(), |s| format!("{s:.3} s"));
    let matching = m.matching_runs(&t.expected);
    let mut hops = format!("{matching}/{} ok", m.hops.len());
    if let Some(wrong) = m.hops.iter().find(|h| **h != t.expected) {
        hops += &format!(", got {}", compact_hops(wrong));
    }
    vec![
        m.tool.clone(),
        secs(m.median_s()),
        secs(m.min_s()),
        secs(m.max_s()),
        t.ratio(m).map_or("-".into(), |r| format!("{r:.2}x")),
        hops,
        m.note.clone(),
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
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
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

pub fn json(report: &Report) -> Value {
    let t = &report.trace;
    let tools: Vec<Value> = t
        .measurements
        .iter()
        .map(|m| {
            json!({
                "tool": m.tool,
                "command": m.command,
                "available": m.unavailable.is_none(),
                "unavailable_reason": m.unavailable,
                "wall_s": m.wall_s,
                "median_s": m.median_s(),
                "min_s": m.min_s(),
                "max_s": m.max_s(),
                "ratio_to_agent_udp": t.ratio(m),
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
            "tools": tools,
        },
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
    fn pads_tables() {
        let t = table(&["x", "long"], &[vec!["abc".into(), "d".into()]]);
        assert_eq!(t, "| x   | long |\n| --- | ---- |\n| abc | d    |\n");
    }
}
