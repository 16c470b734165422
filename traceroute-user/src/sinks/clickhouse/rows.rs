//! A record as the store's rows: one `paths` row per record and one `hops`
//! row per hop per run, in ClickHouse's `JSONEachRow` format.
//!
//! Types are the ones every ClickHouse since 18.16 reads: addresses and ids
//! are strings, times milliseconds since the epoch (the tables derive their
//! `DateTime` columns), absent values zero or empty. Each row carries its
//! identity (the record's `test_run_id`, and for a hop the run and TTL), which
//! is the tables' deduplication key: a batch sent twice is one set of rows.

use serde::Serialize;

use crate::path::{Hop, NetworkPath, Run};

/// One record: what was traced, from where, whether it arrived, and how.
#[derive(Debug, Serialize)]
pub struct PathRow<'a> {
    pub timestamp_ms: u64,
    pub test_run_id: String,
    /// The agent: its config's namespace and its host's name.
    pub agent_namespace: &'a str,
    pub agent_hostname: &'a str,
    pub agent_version: &'a str,
    pub target: &'a str,
    pub destination_ip: String,
    pub destination_port: u16,
    pub protocol: &'static str,
    pub path_fingerprint: &'a str,
    pub reached: u8,
    pub runs: u8,
    pub hop_count_avg: f64,
    pub hop_count_min: u32,
    pub hop_count_max: u32,
    pub e2e_sent: u32,
    pub e2e_received: u32,
    pub e2e_loss_percentage: f64,
    pub e2e_rtt_avg_ms: f64,
    pub e2e_jitter_ms: f64,
    pub tags: &'a [String],
    pub incomplete: u8,
}

/// One hop of one run.
#[derive(Debug, Serialize)]
pub struct HopRow<'a> {
    pub timestamp_ms: u64,
    pub test_run_id: String,
    pub run_id: String,
    pub agent_namespace: &'a str,
    pub agent_hostname: &'a str,
    pub target: &'a str,
    pub protocol: &'static str,
    pub ttl: u8,
    /// `""` when no answer named a responder.
    pub ip_address: String,
    /// Milliseconds, the lowest of the answered attempts; 0 when none.
    pub rtt_ms: f64,
    /// Attempts at this TTL that were sent and given their full wait, and
    /// how many of them were answered: loss is `1 - answers / probes`.
    pub probes: u8,
    pub answers: u8,
    /// RTTs of the answered attempts (ms).
    pub rtts_ms: Vec<f64>,
    pub reached: u8,
    /// Why there is no answer (`timeout`, `rate_limited`, …); `""` if answered.
    pub no_answer: String,
    pub reply_ttl: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub mpls_labels: Vec<u32>,
    pub fingerprint: &'a str,
}

/// The record's `paths` row.
pub fn path_row(path: &NetworkPath) -> PathRow<'_> {
    let runs = &path.traceroute.runs;
    let e2e = &path.e2e_probe;
    PathRow {
        timestamp_ms: path.timestamp,
        test_run_id: path.test_run_id.to_string(),
        agent_namespace: &path.namespace,
        agent_hostname: &path.source.hostname,
        agent_version: &path.agent_version,
        target: &path.destination.hostname,
        destination_ip: runs
            .first()
            .map(|r| r.destination.ip_address.to_string())
            .unwrap_or_default(),
        destination_port: path.destination.port,
        protocol: path.protocol.as_str(),
        path_fingerprint: path.path_fingerprint.as_deref().unwrap_or(""),
        reached: u8::from(runs.iter().any(|r| r.destination_reached)),
        runs: u8::try_from(runs.len()).unwrap_or(u8::MAX),
        hop_count_avg: path.traceroute.hop_count.avg,
        hop_count_min: path.traceroute.hop_count.min,
        hop_count_max: path.traceroute.hop_count.max,
        e2e_sent: e2e.packets_sent,
        e2e_received: e2e.packets_received,
        e2e_loss_percentage: e2e.packet_loss_percentage,
        e2e_rtt_avg_ms: e2e.rtt.avg,
        e2e_jitter_ms: e2e.jitter,
        tags: &path.tags,
        incomplete: u8::from(path.incomplete),
    }
}

/// The record's `hops` rows, run by run, TTL by TTL.
pub fn hop_rows(path: &NetworkPath) -> impl Iterator<Item = HopRow<'_>> {
    path.traceroute
        .runs
        .iter()
        .flat_map(move |run| run.hops.iter().map(move |hop| hop_row(path, run, hop)))
}

fn hop_row<'a>(path: &'a NetworkPath, run: &'a Run, hop: &'a Hop) -> HopRow<'a> {
    let answered: Vec<f64> = hop.rtts.iter().flatten().copied().collect();
    // A hop without per-attempt RTTs had one attempt. Attempts never sent,
    // or cut short, are no loss: they are not counted.
    let attempts = hop.rtts.len().max(1);
    let probes = attempts.saturating_sub(usize::from(hop.not_waited));
    let answers = if hop.rtts.is_empty() {
        usize::from(hop.rtt.is_some())
    } else {
        answered.len()
    };
    HopRow {
        timestamp_ms: path.timestamp,
        test_run_id: path.test_run_id.to_string(),
        run_id: run.run_id.to_string(),
        agent_namespace: &path.namespace,
        agent_hostname: &path.source.hostname,
        target: &path.destination.hostname,
        protocol: path.protocol.as_str(),
        ttl: hop.ttl.get(),
        ip_address: hop.ip_address.map(|a| a.to_string()).unwrap_or_default(),
        rtt_ms: hop.rtt.unwrap_or(0.0),
        probes: u8::try_from(probes).unwrap_or(u8::MAX),
        answers: u8::try_from(answers).unwrap_or(u8::MAX),
        rtts_ms: if hop.rtts.is_empty() {
            hop.rtt.into_iter().collect()
        } else {
            answered
        },
        reached: u8::from(hop.reachable && hop.ip_address == Some(run.destination.ip_address)),
        no_answer: hop
            .no_answer
            .and_then(|k| serde_json::to_value(k).ok())
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        reply_ttl: hop.reply_ttl.unwrap_or(0),
        icmp_type: hop.icmp_type.unwrap_or(0),
        icmp_code: hop.icmp_code.unwrap_or(0),
        mpls_labels: hop.mpls_labels.iter().map(|l| l.label).collect(),
        fingerprint: run.fingerprint.as_deref().unwrap_or(""),
    }
}

/// Appends `rows` to `out`, one JSON object per line.
pub fn push_json_lines<T: Serialize>(
    out: &mut Vec<u8>,
    rows: impl IntoIterator<Item = T>,
) -> serde_json::Result<()> {
    for row in rows {
        serde_json::to_writer(&mut *out, &row)?;
        out.push(b'\n');
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_becomes_one_path_row_and_a_row_per_hop_of_each_run() {
        let path = crate::path::tests::record();
        let row = path_row(&path);
        assert_eq!(row.test_run_id, path.test_run_id.to_string());
        assert_eq!(row.target, "target.lab");
        assert_eq!(row.protocol, "TCP");
        assert_eq!(row.runs, 2);
        assert_eq!(row.reached, 1);
        assert_eq!(row.destination_ip, "198.19.0.9");
        assert_eq!(row.e2e_sent, 4);
        assert_eq!(row.e2e_received, 3);

        let hops: Vec<HopRow<'_>> = hop_rows(&path).collect();
        let want: usize = path.traceroute.runs.iter().map(|r| r.hops.len()).sum();
        assert_eq!(hops.len(), want);
        let first_run = path.traceroute.runs[0].run_id.to_string();
        for (hop, row) in path.traceroute.runs[0].hops.iter().zip(&hops) {
            assert_eq!(row.run_id, first_run);
            assert_eq!(row.ttl, hop.ttl.get());
            assert_eq!(
                row.ip_address,
                hop.ip_address.map(|a| a.to_string()).unwrap_or_default()
            );
            // Loss is countable: every attempt, and those answered.
            assert!(row.answers <= row.probes);
            assert_eq!(usize::from(row.answers), row.rtts_ms.len());
            assert_eq!(row.no_answer.is_empty(), hop.ip_address.is_some());
        }
        // The destination's row says so; no other does.
        assert_eq!(
            hops.iter()
                .filter(|h| h.run_id == first_run && h.reached == 1)
                .count(),
            1
        );

        // A probe never sent is no loss: it is not counted as a probe.
        let mut unsent = path.clone();
        let hop = &mut unsent.traceroute.runs[0].hops[0];
        hop.rtts = vec![Some(1.0), None, None];
        hop.not_waited = 1;
        let row = hop_rows(&unsent).next().unwrap();
        assert_eq!((row.probes, row.answers), (2, 1));

        // JSON lines without nulls: 18.16 reads no null into these columns.
        let mut out = Vec::new();
        push_json_lines(&mut out, [row]).unwrap();
        push_json_lines(&mut out, hops).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1 + want);
        assert!(!text.contains("null"), "{text}");
    }
}
