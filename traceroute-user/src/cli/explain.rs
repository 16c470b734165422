//! `trace --explain`: what the trace learnt of each responder, on stderr,
//! so that the record on stdout stays as it is.

use std::fmt::Write as _;
use std::io::Write;

use crate::trace::knowledge::view::KnowledgeView;

/// Prints `view` to stderr.
pub fn print(view: &KnowledgeView) -> std::io::Result<()> {
    let mut err = std::io::stderr().lock();
    err.write_all(render(view).as_bytes())?;
    err.flush()
}

/// `view` as text: one line per responder, position and silent place.
pub fn render(view: &KnowledgeView) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "responders (a budget starts at {} at once, then {:.2}/s, and is learnt from there):",
        view.prior.burst, view.prior.per_second
    );
    if view.responders.is_empty() {
        let _ = writeln!(out, "  none answered");
    }
    for r in &view.responders {
        let latency = match (r.latency_median, r.latency_max) {
            (Some(median), Some(max)) => format!(
                "answers in {median:.3} ms (median of {}, slowest {max:.3} ms)",
                r.latency_samples
            ),
            _ => "no answer timed".to_string(),
        };
        let _ = writeln!(
            out,
            "  {:<39} {:<7} budget {} at once, {:.2}/s; {} in use; {}",
            r.address.to_string(),
            r.state,
            r.budget.burst,
            r.budget.per_second,
            r.in_use,
            latency
        );
    }
    if !view.positions.is_empty() {
        let _ = writeln!(out, "positions (who answers a TTL from this host):");
        for p in &view.positions {
            let _ = writeln!(
                out,
                "  from {} (if {}), TTL {:>3}: {}",
                p.source, p.ifindex, p.ttl, p.address
            );
        }
    }
    if !view.silent_places.is_empty() {
        let _ = writeln!(
            out,
            "silent places (waited their full time for nothing; later traces give up sooner there):"
        );
        for s in &view.silent_places {
            let side = |a: Option<std::net::IpAddr>| a.map_or("-".to_string(), |a| a.to_string());
            let _ = writeln!(
                out,
                "  {} hop(s) after {} (before {}): {} silence(s)",
                s.offset,
                side(s.before),
                side(s.after),
                s.silences
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::knowledge::view::{BudgetView, PlaceView, ResponderView};

    #[test]
    fn every_responder_and_silent_place_gets_a_line() {
        let view = KnowledgeView {
            prior: BudgetView {
                burst: 6,
                per_second: 0.98,
            },
            responders: vec![ResponderView {
                address: "198.18.2.2".parse().unwrap(),
                state: "limited",
                budget: BudgetView {
                    burst: 6,
                    per_second: 0.98,
                },
                in_use: 6,
                proven: 0,
                growths: 1,
                limits: 1,
                limited_ago: Some(0.5),
                latency_samples: 3,
                latency_median: Some(30.1),
                latency_max: Some(30.4),
            }],
            positions: Vec::new(),
            silent_places: vec![PlaceView {
                source: "198.18.1.1".parse().unwrap(),
                ifindex: 2,
                before: Some("198.18.2.2".parse().unwrap()),
                after: None,
                offset: 1,
                silences: 3,
                last_full_ago: 0.2,
            }],
        };
        let text = render(&view);
        assert!(text.contains("198.18.2.2"), "{text}");
        assert!(text.contains("limited"), "{text}");
        assert!(text.contains("median of 3, slowest 30.400 ms"), "{text}");
        assert!(
            text.contains("1 hop(s) after 198.18.2.2 (before -): 3 silence(s)"),
            "{text}"
        );
    }
}
