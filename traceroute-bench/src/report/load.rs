//! The load benchmark's part of the report: a table per number of targets.

use serde_json::{Value, json};

use super::table;
use crate::load::{IN_FLIGHT, LoadBench, LoadRun, MAX_TTL};
use crate::truth::Tally;

/// The shown repetition's (median) wall time, with min-max when repeated.
fn wall_text(r: &LoadRun) -> String {
    match crate::spread(&r.walls) {
        Some(s) if r.walls.len() > 1 => format!("{:.2} s ({:.2}-{:.2})", r.wall_s, s.min, s.max),
        _ => format!("{:.2} s", r.wall_s),
    }
}

pub fn section(l: &LoadBench) -> String {
    let mut out = format!(
        "## Load: many traces at once, fanout lab (src - gw - d1..d4), kernel default ICMP rate limits\n\n\
         One agent service in src (`--pps {pps}`), {IN_FLIGHT} API requests in flight \
         (ICMP, 1 query, max TTL {MAX_TTL}; 503 BUSY retried after Retry-After); scamper traces \
         the same list at its default rate and at {pps} pps. Ground truth per target: gw \
         ({gw}) at TTL 1, the target itself at TTL 2. Like any Linux router by default, gw \
         sends src a burst of 6 time-exceeded, then one per second.\n\n\
         - hops found: expected answers reported with the right address (of them shared: \
         taken from another trace)\n\
         - invented loss: an expected answer reported as silence without a `rate_limited` \
         or `not_sent` marker (hops, and traces with any)\n\
         - probes: packets leaving src's interface toward the lab (nftables egress counter); \
         in brackets what the tool says it sent\n\
         - CPU: user + system time of the process over the run, per trace; peak RSS: VmHWM \
         (agent, reset before each run) or ru_maxrss (scamper)\n\
         - repeated sizes: each row is the repetition with the median wall time; its wall \
         cell adds the min-max over all repetitions\n",
        pps = l.pps,
        gw = l.gateway,
    );
    for size in &l.sizes {
        out += &format!("\n### {} targets\n\n", size.targets);
        let headers = [
            "tool",
            "wall",
            "traces/s",
            "hops found",
            "shared",
            "invented loss",
            "probes",
            "CPU/trace",
            "peak RSS",
            "notes",
        ];
        let rows: Vec<Vec<String>> = size.runs.iter().map(|r| row(r, size.targets)).collect();
        out += &table(&headers, &rows);
        out += "\nCommands (in src's namespace):\n\n";
        for r in &size.runs {
            out += &format!("- {}: `{}`\n", r.tool, r.command);
        }
    }
    out
}

fn row(r: &LoadRun, targets: usize) -> Vec<String> {
    if let Some(reason) = &r.unavailable {
        let mut row = vec![r.tool.clone()];
        row.extend(std::iter::repeat_n("-".to_string(), 8));
        row.push(format!("unavailable: {reason}"));
        return row;
    }
    let t = &r.tally;
    let percent = |a: u64, b: u64| {
        if b == 0 {
            "-".to_string()
        } else {
            format!("{:.0}%", 100.0 * a as f64 / b as f64)
        }
    };
    let mut probes = r.probes_counted.to_string();
    if let Some(reported) = r.probes_reported {
        probes += &format!(" ({reported})");
    }
    vec![
        r.tool.clone(),
        wall_text(r),
        r.traces_per_s(targets)
            .map_or("-".into(), |v| format!("{v:.1}")),
        format!(
            "{}/{} ({})",
            t.found,
            t.expected,
            percent(t.found, t.expected)
        ),
        t.shared.to_string(),
        format!("{} hops in {} traces", t.invented, t.traces_with_invented),
        probes,
        r.cpu_ms_per_trace(targets)
            .map_or("-".into(), |ms| format!("{ms:.2} ms")),
        r.usage.map_or("-".into(), |u| {
            format!("{:.1} MiB", u.peak_rss_kib as f64 / 1024.0)
        }),
        notes(r, t),
    ]
}

fn notes(r: &LoadRun, t: &Tally) -> String {
    let mut notes = Vec::new();
    if !r.note.is_empty() {
        notes.push(r.note.clone());
    }
    if !t.unanswered.is_empty() {
        let by_marker: Vec<String> = t
            .unanswered
            .iter()
            .map(|(m, n)| format!("{m} {n}"))
            .collect();
        notes.push(format!("unanswered by marker: {}", by_marker.join(", ")));
    }
    if t.wrong > 0 {
        notes.push(format!("{} wrong addresses", t.wrong));
    }
    if r.busy_retries > 0 {
        notes.push(format!("{} BUSY retries", r.busy_retries));
    }
    for (reason, n) in &r.failures {
        notes.push(format!("{n} failed: {reason}"));
    }
    notes.join("; ")
}

pub fn json(l: &LoadBench) -> Value {
    let sizes: Vec<Value> = l
        .sizes
        .iter()
        .map(|size| {
            let tools: Vec<Value> = size
                .runs
                .iter()
                .map(|r| {
                    let t = &r.tally;
                    json!({
                        "tool": r.tool,
                        "command": r.command,
                        "available": r.unavailable.is_none(),
                        "unavailable_reason": r.unavailable,
                        "wall_s": r.wall_s,
                        "wall_s_every_repetition": r.walls,
                        "hops_found_every_repetition": r.found,
                        "traces_per_s": r.traces_per_s(size.targets),
                        "traces_judged": t.traces,
                        "expected_answers": t.expected,
                        "hops_found": t.found,
                        "hops_found_shared": t.shared,
                        "wrong_addresses": t.wrong,
                        "unanswered_by_marker": t.unanswered,
                        "invented_loss_hops": t.invented,
                        "traces_with_invented_loss": t.traces_with_invented,
                        "probes_counted": r.probes_counted,
                        "probes_reported_by_tool": r.probes_reported,
                        "cpu_s": r.usage.map(|u| u.cpu_s),
                        "cpu_ms_per_trace": r.cpu_ms_per_trace(size.targets),
                        "peak_rss_kib": r.usage.map(|u| u.peak_rss_kib),
                        "failures": r.failures,
                        "busy_retries": r.busy_retries,
                        "note": r.note,
                    })
                })
                .collect();
            json!({"targets": size.targets, "tools": tools})
        })
        .collect();
    json!({
        "topology": "fanout",
        "agent_pps": l.pps,
        "in_flight": IN_FLIGHT,
        "max_ttl": MAX_TTL,
        "gateway": l.gateway.to_string(),
        "sizes": sizes,
    })
}
