//! One row per hop per run: `csv` for spreadsheets and `ndjson` (one JSON
//! object per hop) for line-oriented tools. Both carry the run's identity,
//! so rows of several runs and flows can be told apart and grouped.

use std::io::{self, Write};

use serde::Serialize;

use super::hops::marker;
use crate::path::{Hop, NetworkPath, TcpAnswer};

/// A hop with the run it belongs to (`ndjson`).
#[derive(Serialize)]
struct HopLine<'a> {
    test_run_id: String,
    /// Index of the run in `traceroute.runs`.
    run: usize,
    run_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    flow_id: Option<u16>,
    destination: String,
    #[serde(flatten)]
    hop: &'a Hop,
}

/// Writes one JSON object per hop of every run.
pub fn write_ndjson(out: &mut impl Write, path: &NetworkPath) -> io::Result<()> {
    for (i, run) in path.traceroute.runs.iter().enumerate() {
        for hop in &run.hops {
            let line = HopLine {
                test_run_id: path.test_run_id.to_string(),
                run: i,
                run_id: run.run_id.to_string(),
                flow_id: run.flow_id,
                destination: run.destination.ip_address.to_string(),
                hop,
            };
            let mut bytes = serde_json::to_vec(&line).map_err(io::Error::other)?;
            bytes.push(b'\n');
            out.write_all(&bytes)?;
        }
    }
    out.flush()
}

/// A hop as a flat CSV record.
#[derive(Serialize)]
struct CsvRow {
    run: usize,
    flow_id: Option<u16>,
    ttl: u8,
    ip_address: String,
    reverse_dns: String,
    rtt_ms: Option<f64>,
    /// Every attempt's RTT, `;`-separated, empty for an unanswered one.
    rtts_ms: String,
    reachable: bool,
    icmp_type: Option<u8>,
    icmp_code: Option<u8>,
    tcp_answer: Option<&'static str>,
    marker: &'static str,
    reply_ttl: Option<u8>,
    no_answer: Option<String>,
}

/// Writes a header and one CSV record per hop of every run.
pub fn write_csv(out: &mut impl Write, path: &NetworkPath) -> io::Result<()> {
    let mut writer = csv::Writer::from_writer(out);
    for (i, run) in path.traceroute.runs.iter().enumerate() {
        for hop in &run.hops {
            let row = CsvRow {
                run: i,
                flow_id: run.flow_id,
                ttl: hop.ttl.get(),
                ip_address: hop.ip_address.map(|a| a.to_string()).unwrap_or_default(),
                reverse_dns: hop.reverse_dns.join(";"),
                rtt_ms: hop.rtt,
                rtts_ms: hop
                    .rtts
                    .iter()
                    .map(|r| r.map(|v| v.to_string()).unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(";"),
                reachable: hop.reachable,
                icmp_type: hop.icmp_type,
                icmp_code: hop.icmp_code,
                tcp_answer: hop.tcp_answer.map(TcpAnswer::as_str),
                marker: marker(hop).unwrap_or(""),
                reply_ttl: hop.reply_ttl,
                no_answer: hop
                    .no_answer
                    .and_then(|k| serde_json::to_value(k).ok())
                    .and_then(|v| v.as_str().map(str::to_string)),
            };
            writer.serialize(row).map_err(io::Error::other)?;
        }
    }
    writer.flush()
}
