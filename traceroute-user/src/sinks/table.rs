//! A per-hop report in the style of `mtr --report`: for each TTL the host(s)
//! that answered with traceroute's markers, loss over the runs, RTT
//! last/avg/best/worst, standard deviation and jitter; a silent tail is
//! folded into one row, and the last line says why the trace stopped.

use std::fmt::Write as _;

use super::hops::{self, TtlRow};
use crate::path::NetworkPath;

/// How the table is drawn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Style {
    /// ANSI colours (a terminal that did not ask for `NO_COLOR`).
    pub color: bool,
    /// ICMP extensions after the host: MPLS label stacks (traceroute's `-e`)
    /// and the interfaces routers describe (RFC 5837).
    pub extensions: bool,
}

impl Style {
    /// Colour when `terminal` and `NO_COLOR` is unset or empty
    /// (<https://no-color.org>).
    pub fn for_terminal(terminal: bool) -> Style {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Style {
            color: terminal && !no_color,
            extensions: false,
        }
    }

    fn paint(self, text: &str, ansi: &str) -> String {
        if self.color && !text.is_empty() {
            format!("\x1b[{ansi}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

const RED: &str = "31";
const GREEN: &str = "32";
const YELLOW: &str = "33";
const BOLD: &str = "1";
/// The host column is never narrower than this.
const MIN_HOST_WIDTH: usize = 24;

/// The first line: what was traced, how.
pub fn header(path: &NetworkPath) -> String {
    let runs = &path.traceroute.runs;
    let dest = runs
        .first()
        .map(|r| r.destination.ip_address.to_string())
        .unwrap_or_default();
    let port = match path.destination.port {
        0 => String::new(),
        p => format!(", port {p}"),
    };
    format!(
        "traceroute to {} ({dest}), {}{}{port}, {} run(s), capture: {}\n",
        path.destination.hostname,
        path.protocol.as_str(),
        path.source
            .via
            .as_ref()
            .map(|v| format!(" via {}", v.interface.name))
            .unwrap_or_default(),
        runs.len(),
        match (&path.capture, path.tcp_method.as_deref()) {
            (Some(c), _) => format!("{:?}", c.method).to_lowercase(),
            (None, Some("syn_socket")) => "none (connect() per probe)".into(),
            (None, _) => "none (datagram socket, IP_RECVERR)".into(),
        },
    )
}

/// The column titles for a host column `width` wide.
pub fn column_titles(width: usize) -> String {
    format!(
        "{:>5}  {:<width$} {:>6} {:>4} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7}\n",
        "TTL", "Host", "Loss%", "Snt", "Last", "Avg", "Best", "Wrst", "StDev", "Jttr"
    )
}

/// The host, its markers and (with `-e`) its MPLS stacks, uncoloured.
fn host_cell(row: &TtlRow, style: Style) -> String {
    let mut cell = row.host_text();
    for m in &row.markers {
        cell.push(' ');
        cell.push_str(m);
    }
    if style.extensions {
        for stack in &row.extensions {
            cell.push(' ');
            cell.push_str(stack);
        }
    }
    cell
}

/// The host column's width for these rows.
pub fn host_width(rows: &[TtlRow], style: Style) -> usize {
    rows.iter()
        .map(|r| host_cell(r, style).chars().count())
        .max()
        .unwrap_or(0)
        .max(MIN_HOST_WIDTH)
}

/// One TTL's line (`label` is the TTL, or a range for a folded tail).
pub fn row_line(row: &TtlRow, label: &str, width: usize, style: Style) -> String {
    let fmt = |v: Option<f64>, w: usize| {
        v.map_or_else(|| format!("{:>w$}", "-"), |x| format!("{x:>w$.3}"))
    };
    let cell = host_cell(row, style);
    let pad = width.saturating_sub(cell.chars().count());
    let mut host = style.paint(
        &row.host_text(),
        if row.hosts.is_empty() { RED } else { BOLD },
    );
    for m in &row.markers {
        let colour = match *m {
            "[open]" => GREEN,
            "[closed]" => YELLOW,
            _ => RED,
        };
        host.push(' ');
        host.push_str(&style.paint(m, colour));
    }
    if style.extensions {
        for stack in &row.extensions {
            host.push(' ');
            host.push_str(stack);
        }
    }
    let loss_text = match row.loss_percent() {
        // Nothing sent and waited for: no loss to speak of.
        None => format!("{:>6}", "-"),
        Some(0.0) => format!("{:>5.1}%", 0.0),
        Some(loss) if loss >= 100.0 => style.paint(&format!("{loss:>5.1}%"), RED),
        Some(loss) => style.paint(&format!("{loss:>5.1}%"), YELLOW),
    };
    format!(
        "{label:>5}  {host}{} {loss_text} {:>4} {} {} {} {} {} {}\n",
        " ".repeat(pad),
        row.sent,
        fmt(row.last(), 8),
        fmt(row.avg(), 8),
        fmt(row.best(), 8),
        fmt(row.worst(), 8),
        fmt(row.stdev(), 7),
        fmt(row.jitter(), 7),
    )
}

/// Renders `path` as a table.
pub fn render(path: &NetworkPath, style: Style) -> String {
    let rows = hops::rows(path);
    let width = host_width(&rows, style);
    let mut out = header(path);
    out.push_str(&column_titles(width));
    out.push_str(&lines(&rows, width, style, true));
    footer(path, &rows, &mut out);
    out
}

/// The lines of `rows`. A silent run of two or more rows (every probe sent
/// and waited for, nothing answered) is one line when it is the tail
/// and `fold_tail` is set.
pub fn lines(rows: &[TtlRow], width: usize, style: Style, fold_tail: bool) -> String {
    let mut out = String::new();
    let answered_to = rows.iter().rposition(|r| !r.hosts.is_empty());
    let tail_from = answered_to.map_or(0, |i| i + 1);
    let tail = &rows[tail_from..];
    let fold = fold_tail && tail.len() >= 2 && tail.iter().all(|r| r.silent);
    let shown = if fold { &rows[..tail_from] } else { rows };
    for row in shown {
        out.push_str(&row_line(row, &row.ttl.to_string(), width, style));
    }
    if fold && let (Some(first), Some(last)) = (tail.first(), tail.last()) {
        let folded = TtlRow {
            sent: tail.iter().map(|r| r.sent).sum(),
            ..first.clone()
        };
        let label = format!("{}-{}", first.ttl, last.ttl);
        out.push_str(&row_line(&folded, &label, width, style));
    }
    out
}

/// The stop reason, hop count, path MTU and middlebox warning.
pub fn footer(path: &NetworkPath, rows: &[TtlRow], out: &mut String) {
    let runs = &path.traceroute.runs;
    let _ = writeln!(
        out,
        "{}; hop count avg {} (min {}, max {}); RTTs in ms",
        hops::stop_reason(path, rows),
        path.traceroute.hop_count.avg,
        path.traceroute.hop_count.min,
        path.traceroute.hop_count.max
    );
    let sizes = runs.iter().flat_map(|r| &r.hops).filter_map(|h| h.path_mtu);
    if let Some(path_mtu) = sizes.min() {
        let mut bottlenecks: Vec<(u8, String, u32)> = runs
            .iter()
            .flat_map(|r| &r.hops)
            .filter_map(|h| Some((h.ttl.get(), h.ip_address?.to_string(), h.next_hop_mtu?)))
            .collect();
        bottlenecks.sort();
        bottlenecks.dedup();
        let after: Vec<String> = bottlenecks
            .iter()
            .map(|(ttl, addr, mtu)| format!("{mtu} after hop {ttl} ({addr})"))
            .collect();
        let _ = write!(out, "path MTU {path_mtu} bytes");
        if !after.is_empty() {
            let _ = write!(out, "; link MTU {}", after.join(", "));
        }
        out.push('\n');
    }
    if let Some(m) = runs.iter().find_map(|r| r.suspected_middlebox.as_ref()) {
        let likely = m.likely.map(|a| format!(" ({a}?)")).unwrap_or_default();
        let _ = writeln!(
            out,
            "warning: the destination's answer at TTL {} has reply TTL {}, as if sent {} hops away{likely}: \
             a SYN proxy or firewall answering for the destination?",
            m.ttl, m.reply_ttl, m.distance
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ttl: u8, host: Option<&str>, silent: bool) -> TtlRow {
        TtlRow {
            ttl,
            hosts: host.map(|h| h.parse().unwrap()).into_iter().collect(),
            sent: 1,
            rtts: host.map(|_| 1.0).into_iter().collect(),
            silent,
            ..TtlRow::default()
        }
    }

    #[test]
    fn long_names_widen_the_column_and_mpls_shows_only_with_e() {
        let mut r = row(1, Some("198.18.1.1"), false);
        r.names = vec!["a-very-long-reverse-dns-name.router.example.test".into()];
        r.extensions = vec!["<MPLS:L=100,E=0,S=1,T=1>".into()];
        let plain = Style::default();
        let width = host_width(std::slice::from_ref(&r), plain);
        assert_eq!(width, r.host_text().len());
        let line = row_line(&r, "1", width, plain);
        assert!(line.contains(&format!("{} ", r.host_text())) && !line.contains("MPLS"));
        let e = Style {
            extensions: true,
            ..Style::default()
        };
        assert!(
            row_line(&r, "1", host_width(&[r.clone()], e), e).contains("<MPLS:L=100,E=0,S=1,T=1>")
        );
        assert!(!line.contains('\x1b'));
        let colour = Style {
            color: true,
            ..Style::default()
        };
        assert!(row_line(&r, "1", width, colour).contains("\x1b[1m"));
    }

    #[test]
    fn only_a_silent_tail_of_two_or_more_folds() {
        let w = MIN_HOST_WIDTH;
        let s = Style::default();
        let rows = [
            row(1, Some("198.18.1.1"), false),
            row(2, None, true),
            row(3, Some("198.18.3.1"), false),
            row(4, None, true),
            row(5, None, true),
        ];
        let text = lines(&rows, w, s, true);
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(text.lines().nth(1).unwrap().starts_with("    2  ???"));
        assert!(text.lines().nth(3).unwrap().starts_with("  4-5  ???"));
        assert!(
            text.lines().nth(3).unwrap().contains("    2 "),
            "two probes: {text}"
        );
        assert_eq!(lines(&rows[..4], w, s, true).lines().count(), 4);
        assert_eq!(lines(&rows, w, s, false).lines().count(), 5);
        // Unanswered but not silent (cut short, not sent): not folded.
        let mut open = rows.clone();
        open[4].silent = false;
        assert_eq!(lines(&open, w, s, true).lines().count(), 5);
    }
}
