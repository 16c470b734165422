//! The per-TTL report as a GitHub-flavoured markdown table, for pasting
//! into tickets and chat.

use std::fmt::Write as _;

use super::hops;
use crate::path::NetworkPath;

/// Renders `path` as a markdown table with a heading line and the stop reason.
pub fn render(path: &NetworkPath) -> String {
    let rows = hops::rows(path);
    let dest = path
        .traceroute
        .runs
        .first()
        .map(|r| r.destination.ip_address.to_string())
        .unwrap_or_default();
    let mut out = format!(
        "**traceroute to {} ({dest}), {}**\n\n| TTL | Host | Loss% | Snt | Last | Avg | Best | Wrst | StDev | Jttr |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        escape(&path.destination.hostname),
        path.protocol.as_str(),
    );
    let fmt = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |x| format!("{x:.3}"));
    for row in &rows {
        let mut host = escape(&row.host_text());
        for m in &row.markers {
            host.push(' ');
            host.push_str(&escape(m));
        }
        let _ = writeln!(
            out,
            "| {} | {host} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.ttl,
            row.loss_percent().map_or("-".into(), |l| format!("{l:.1}")),
            row.sent,
            fmt(row.last()),
            fmt(row.avg()),
            fmt(row.best()),
            fmt(row.worst()),
            fmt(row.stdev()),
            fmt(row.jitter()),
        );
    }
    let _ = writeln!(out, "\n{}", escape(&hops::stop_reason(path, &rows)));
    out
}

/// Markdown-inert text: the characters that would start markup are escaped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(
            c,
            '|' | '\\' | '*' | '_' | '[' | ']' | '<' | '>' | '`' | '!'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
