//! What a trace found, as the routers section counts it: who answered each
//! TTL (in any run of a record), the (trace, router) pairs found, whether a
//! record has every hop in every run, and where each run put the
//! destination.

use std::net::IpAddr;

use serde_json::Value;

use crate::load::scamper;
use crate::truth::{Observed, agent_runs, judge};

/// Who answered each TTL in any of `runs`: the first address seen there,
/// `*` where nobody did, up to the highest TTL any run reported.
pub fn merged(runs: &[Vec<Observed>]) -> Vec<String> {
    let max = runs.iter().flatten().map(|h| h.ttl).max().unwrap_or(0);
    (1..=max)
        .map(|ttl| {
            runs.iter()
                .flatten()
                .filter(|h| h.ttl == ttl)
                .find_map(|h| h.addr)
                .map_or_else(|| "*".to_string(), |a| a.to_string())
        })
        .collect()
}

/// [`merged`] of an agent record.
pub fn agent_hops(record: &Value) -> Vec<String> {
    merged(&agent_runs(record))
}

/// Each trace of scamper's JSON lines (`-O json`): its destination and
/// who answered each TTL (scamper lists answers only).
pub fn scamper_traces(text: &str) -> Vec<(IpAddr, Vec<String>)> {
    scamper::traces(text)
        .iter()
        .filter_map(|t| {
            let dst = t["dst"].as_str()?.parse().ok()?;
            Some((dst, merged(&[scamper::hops(t)])))
        })
        .collect()
}

/// The hops of the first trace in scamper's JSON lines.
pub fn scamper_hops(text: &str) -> Vec<String> {
    scamper_traces(text)
        .into_iter()
        .next()
        .map(|(_, hops)| hops)
        .unwrap_or_default()
}

/// (trace, router) pairs found in one trace: the expected routers (by TTL,
/// from 1) that `hops` has at their TTL.
pub fn pairs(hops: &[String], routers: &[String]) -> usize {
    routers
        .iter()
        .zip(hops)
        .filter(|(want, got)| *want != "*" && want == got)
        .count()
}

/// Runs whose hop at `ttl` (from 1) is `want`.
pub fn runs_with(runs: &[Vec<String>], ttl: usize, want: &str) -> usize {
    runs.iter()
        .filter(|hops| ttl >= 1 && hops.get(ttl - 1).is_some_and(|h| h == want))
        .count()
}

/// Runs whose hops start with every entry of `truth` (routers, then the
/// destination).
pub fn runs_complete(runs: &[Vec<String>], truth: &[String]) -> usize {
    runs.iter()
        .filter(|hops| hops.len() >= truth.len() && hops[..truth.len()] == *truth)
        .count()
}

/// How the runs of one agent record compare with the ground truth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completeness {
    /// Every run has every expected answer.
    Every,
    /// Some are missing, each marked `rate_limited` or `not_sent`.
    Excused,
    /// Some are reported as silence without such a marker, or with a
    /// wrong address, or the record has no runs.
    Missing,
}

/// Judges every run of `record` against `truth` (per TTL, the destination
/// last).
pub fn completeness(record: &Value, truth: &[Option<IpAddr>]) -> Completeness {
    let runs = agent_runs(record);
    if runs.is_empty() {
        return Completeness::Missing;
    }
    let mut verdict = Completeness::Every;
    for run in &runs {
        let t = judge(run, truth);
        if t.found == t.expected {
            continue;
        }
        if t.invented > 0 || t.wrong > 0 {
            return Completeness::Missing;
        }
        verdict = Completeness::Excused;
    }
    verdict
}

/// Where one run of a record put the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// TTL of the run's last hop.
    pub last_ttl: u64,
    /// The run says the destination may be nearer (`distance_uncertain`).
    pub uncertain: bool,
}

/// Every run's [`Placement`].
pub fn placements(record: &Value) -> Vec<Placement> {
    let runs = record["traceroute"]["runs"].as_array();
    runs.into_iter()
        .flatten()
        .map(|run| Placement {
            last_ttl: run["hops"]
                .as_array()
                .and_then(|h| h.iter().filter_map(|h| h["ttl"].as_u64()).max())
                .unwrap_or(0),
            uncertain: run.get("distance_uncertain").is_some_and(|d| !d.is_null()),
        })
        .collect()
}

/// Runs that put the destination beyond `distance` without saying that
/// the distance is uncertain.
pub fn too_far(placements: &[Placement], distance: u64) -> usize {
    placements
        .iter()
        .filter(|p| p.last_ttl > distance && !p.uncertain)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(ttl: u8, addr: &str) -> Observed {
        Observed {
            ttl,
            addr: addr.parse().ok(),
            shared: false,
            no_answer: None,
        }
    }

    fn v(hops: &[&str]) -> Vec<String> {
        hops.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn merges_runs_per_ttl() {
        let runs = vec![
            vec![hop(1, "198.18.1.2"), hop(2, ""), hop(4, "198.18.4.2")],
            vec![hop(1, "198.18.1.2"), hop(2, "198.18.2.2")],
        ];
        assert_eq!(
            merged(&runs),
            v(&["198.18.1.2", "198.18.2.2", "*", "198.18.4.2"])
        );
        assert!(merged(&[]).is_empty());
    }

    #[test]
    fn counts_pairs_and_runs() {
        let routers = v(&["198.18.1.2", "198.18.2.2", "198.18.3.2"]);
        let all = v(&["198.18.1.2", "198.18.2.2", "198.18.3.2", "198.19.128.1"]);
        let missed = v(&["198.18.1.2", "*", "*", "198.19.128.1"]);
        assert_eq!(pairs(&all, &routers), 3);
        assert_eq!(pairs(&missed, &routers), 1);
        assert_eq!(pairs(&v(&["198.18.1.2"]), &routers), 1, "a short trace");
        assert_eq!(pairs(&v(&["*"]), &v(&["*"])), 0, "silence is no pair");
        let runs = vec![all.clone(), missed, all.clone()];
        assert_eq!(runs_with(&runs, 2, "198.18.2.2"), 2);
        assert_eq!(runs_with(&runs, 1, "198.18.1.2"), 3);
        assert_eq!(runs_with(&runs, 9, "198.18.1.2"), 0);
        assert_eq!(runs_with(&runs, 0, "198.18.1.2"), 0);
        assert_eq!(runs_complete(&runs, &all), 2);
        let longer = v(&[
            "198.18.1.2",
            "198.18.2.2",
            "198.18.3.2",
            "198.19.128.1",
            "*",
        ]);
        assert_eq!(runs_complete(&[longer], &all), 1, "a silent tail after dst");
    }

    #[test]
    fn reads_scamper_lists() {
        let text = r#"{"type":"cycle-start"}
{"type":"trace","dst":"198.19.128.1","hops":[{"addr":"198.18.1.2","probe_ttl":1},{"addr":"198.18.3.2","probe_ttl":3},{"addr":"198.19.128.1","probe_ttl":4}]}
{"type":"trace","dst":"198.19.132.1","hops":[]}
"#;
        let traces = scamper_traces(text);
        assert_eq!(traces.len(), 2);
        assert_eq!(
            traces[0].1,
            v(&["198.18.1.2", "*", "198.18.3.2", "198.19.128.1"])
        );
        assert!(traces[1].1.is_empty());
        assert_eq!(scamper_hops(text), traces[0].1);
        assert!(scamper_hops("").is_empty());
    }

    fn record(runs: &str) -> Value {
        serde_json::from_str(&format!(r#"{{"traceroute": {{"runs": {runs}}}}}"#)).unwrap()
    }

    #[test]
    fn judges_records_run_by_run() {
        let truth: Vec<Option<IpAddr>> = ["198.18.1.2", "198.18.4.2"]
            .iter()
            .map(|a| a.parse().ok())
            .collect();
        let every = record(
            r#"[{"hops": [{"ttl": 1, "ip_address": "198.18.1.2"}, {"ttl": 2, "ip_address": "198.18.4.2"}]}]"#,
        );
        assert_eq!(completeness(&every, &truth), Completeness::Every);
        let excused = record(
            r#"[{"hops": [{"ttl": 1, "ip_address": "198.18.1.2"}, {"ttl": 2, "ip_address": "198.18.4.2"}]},
                {"hops": [{"ttl": 1, "ip_address": "", "no_answer": "rate_limited"}, {"ttl": 2, "ip_address": "198.18.4.2"}]}]"#,
        );
        assert_eq!(completeness(&excused, &truth), Completeness::Excused);
        let invented = record(
            r#"[{"hops": [{"ttl": 1, "ip_address": "", "no_answer": "timeout"}, {"ttl": 2, "ip_address": "198.18.4.2"}]}]"#,
        );
        assert_eq!(completeness(&invented, &truth), Completeness::Missing);
        assert_eq!(
            completeness(&serde_json::json!({}), &truth),
            Completeness::Missing
        );
    }

    #[test]
    fn finds_destinations_placed_too_far() {
        let r = record(
            r#"[{"hops": [{"ttl": 1}, {"ttl": 4}]},
                {"hops": [{"ttl": 1}, {"ttl": 6}]},
                {"hops": [{"ttl": 6}], "distance_uncertain": {"answered_at": 6, "silent": [4, 5], "estimate": 4}}]"#,
        );
        let p = placements(&r);
        assert_eq!(
            p,
            [
                Placement {
                    last_ttl: 4,
                    uncertain: false
                },
                Placement {
                    last_ttl: 6,
                    uncertain: false
                },
                Placement {
                    last_ttl: 6,
                    uncertain: true
                },
            ]
        );
        assert_eq!(too_far(&p, 4), 1, "only the run that says nothing");
        assert_eq!(too_far(&p, 6), 0);
        assert!(placements(&serde_json::json!({})).is_empty());
    }
}
