//! The hops one trace reported, judged against the lab's ground truth.
//!
//! Ground truth is one entry per TTL: the address that answers there, or
//! `None` for a router declared silent; the last entry is the destination.
//! A hop is *found* when the trace reported the right address at the right
//! TTL. An expected answer the trace reports as silence is *invented loss*
//! unless the trace says why it has no answer (`"no_answer": "not_sent"` or
//! `"rate_limited"` on the agent's hop): the router does answer, so "silent"
//! is not what happened.

use std::collections::BTreeMap;
use std::net::IpAddr;

/// One hop as a tool reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub ttl: u8,
    /// `None`: no answer.
    pub addr: Option<IpAddr>,
    /// Taken from another trace (the agent's `"shared"`).
    pub shared: bool,
    /// Why there is no answer (the agent's `"no_answer"`).
    pub no_answer: Option<String>,
}

/// `no_answer` markers that say the silence is not the router's.
const EXCUSED: &[&str] = &["not_sent", "rate_limited"];

/// What one or many traces found, against the ground truth.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub traces: u64,
    /// Answers the ground truth expects (answering routers and the destination).
    pub expected: u64,
    /// Reported with the right address.
    pub found: u64,
    /// Of `found`: hops the trace took from another trace.
    pub shared: u64,
    /// Reported with an address that is not the expected one.
    pub wrong: u64,
    /// Expected answers reported as no answer, by `no_answer` marker (`-`: none).
    pub unanswered: BTreeMap<String, u64>,
    /// Unanswered without a `not_sent` or `rate_limited` marker.
    pub invented: u64,
    /// Traces with at least one invented loss.
    pub traces_with_invented: u64,
}

impl Tally {
    pub fn add(&mut self, other: &Tally) {
        self.traces += other.traces;
        self.expected += other.expected;
        self.found += other.found;
        self.shared += other.shared;
        self.wrong += other.wrong;
        for (marker, n) in &other.unanswered {
            *self.unanswered.entry(marker.clone()).or_default() += n;
        }
        self.invented += other.invented;
        self.traces_with_invented += other.traces_with_invented;
    }
}

/// Judges one trace (one run of it) against `expected`.
pub fn judge(hops: &[Observed], expected: &[Option<IpAddr>]) -> Tally {
    let mut tally = Tally {
        traces: 1,
        ..Tally::default()
    };
    for (i, want) in expected.iter().enumerate() {
        let Some(want) = want else {
            continue; // a silent router: nothing to find
        };
        tally.expected += 1;
        let at: Vec<&Observed> = hops
            .iter()
            .filter(|h| usize::from(h.ttl) == i + 1)
            .collect();
        if let Some(hop) = at.iter().find(|h| h.addr == Some(*want)) {
            tally.found += 1;
            tally.shared += u64::from(hop.shared);
        } else if at.iter().any(|h| h.addr.is_some()) {
            tally.wrong += 1;
        } else {
            let marker = at.iter().find_map(|h| h.no_answer.clone());
            if !marker.as_deref().is_some_and(|m| EXCUSED.contains(&m)) {
                tally.invented += 1;
            }
            *tally
                .unanswered
                .entry(marker.unwrap_or_else(|| "-".into()))
                .or_default() += 1;
        }
    }
    tally.traces_with_invented = u64::from(tally.invented > 0);
    tally
}

/// The hops of every run of an agent `NetworkPath` record.
pub fn agent_runs(record: &serde_json::Value) -> Vec<Vec<Observed>> {
    let runs = record["traceroute"]["runs"].as_array();
    runs.into_iter()
        .flatten()
        .map(|run| {
            let hops = run["hops"].as_array().into_iter().flatten();
            hops.filter_map(|hop| {
                Some(Observed {
                    ttl: u8::try_from(hop["ttl"].as_u64()?).ok()?,
                    addr: hop["ip_address"].as_str().and_then(|s| s.parse().ok()),
                    shared: hop["shared"].is_object(),
                    no_answer: hop["no_answer"].as_str().map(String::from),
                })
            })
            .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn hop(ttl: u8, addr: &str) -> Observed {
        Observed {
            ttl,
            addr: (!addr.is_empty()).then(|| ip(addr)),
            shared: false,
            no_answer: None,
        }
    }

    /// gw, a silent router, the destination.
    fn truth() -> Vec<Option<IpAddr>> {
        vec![Some(ip("198.18.1.2")), None, Some(ip("198.19.128.1"))]
    }

    #[test]
    fn finds_every_expected_answer() {
        let hops = [hop(1, "198.18.1.2"), hop(2, ""), hop(3, "198.19.128.1")];
        let t = judge(&hops, &truth());
        assert_eq!((t.expected, t.found, t.invented, t.wrong), (2, 2, 0, 0));
        assert_eq!(t.traces_with_invented, 0);
    }

    #[test]
    fn silence_at_an_answering_router_is_invented_loss() {
        let t = judge(&[hop(1, ""), hop(3, "198.19.128.1")], &truth());
        assert_eq!((t.found, t.invented, t.traces_with_invented), (1, 1, 1));
        assert_eq!(t.unanswered.get("-"), Some(&1));
        // Not reporting the TTL at all (scamper lists answers only) is the same.
        let t = judge(&[hop(3, "198.19.128.1")], &truth());
        assert_eq!(t.invented, 1);
    }

    #[test]
    fn markers_excuse_some_silences() {
        let marked = |m: &str| Observed {
            no_answer: Some(m.to_string()),
            ..hop(1, "")
        };
        for (marker, invented) in [
            ("rate_limited", 0),
            ("not_sent", 0),
            ("timeout", 1),
            ("cut_short", 1),
        ] {
            let t = judge(&[marked(marker), hop(3, "198.19.128.1")], &truth());
            assert_eq!(t.invented, invented, "{marker}");
            assert_eq!(t.unanswered.get(marker), Some(&1));
        }
    }

    #[test]
    fn counts_shared_and_wrong_hops() {
        let shared = Observed {
            shared: true,
            ..hop(1, "198.18.1.2")
        };
        let t = judge(&[shared, hop(3, "198.18.9.9")], &truth());
        assert_eq!((t.found, t.shared, t.wrong, t.invented), (1, 1, 1, 0));
    }

    #[test]
    fn adds_up() {
        let mut total = Tally::default();
        total.add(&judge(&[hop(1, ""), hop(3, "198.19.128.1")], &truth()));
        total.add(&judge(&[hop(1, "198.18.1.2")], &truth()));
        assert_eq!(total.traces, 2);
        assert_eq!((total.expected, total.found, total.invented), (4, 2, 2));
        assert_eq!(total.traces_with_invented, 2);
        assert_eq!(total.unanswered.get("-"), Some(&2));
    }

    #[test]
    fn reads_agent_records() {
        let record: serde_json::Value = serde_json::from_str(
            r#"{"traceroute": {"runs": [{"hops": [
                {"ttl": 1, "ip_address": "", "reachable": false, "no_answer": "rate_limited"},
                {"ttl": 2, "ip_address": "198.19.128.1", "reachable": true,
                 "shared": {"test_run_id": "x", "age": 3.5}}]}]},
              "probing": {"probes_sent": 3}}"#,
        )
        .unwrap();
        let runs = agent_runs(&record);
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0][0].addr, None);
        assert_eq!(runs[0][0].no_answer.as_deref(), Some("rate_limited"));
        assert!(runs[0][1].shared);
        let t = judge(
            &runs[0],
            &[Some(ip("198.18.1.2")), Some(ip("198.19.128.1"))],
        );
        assert_eq!((t.found, t.shared, t.invented), (1, 1, 0));
        assert!(agent_runs(&serde_json::json!({})).is_empty());
    }
}
