//! The fleet path: one agent shipping its scheduled records to ClickHouse
//! (Debian's clickhouse-server in a lab node), at 1000 targets per minute.
//!
//! Three phases of a minute or so each, the agent's own metrics and
//! /proc figures read at their edges:
//!
//! - steady: the store up; records and rows shipped, and the agent's CPU per
//!   1000 records (tracing included: what a fleet sizes hosts by);
//! - outage: the store down; what the spool holds after the minute, per
//!   record and extrapolated to an hour, and the agent's memory;
//! - drain: the store back; how fast the backlog goes (rows per second one
//!   agent ships) and the CPU that costs per 1000 records.
//!
//! For scale, the store's own intake: the same rows posted by curl in one
//! request (what a log shipper could at best reach).

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use traceroute_lab::clickhouse::Store;
use traceroute_lab::{IcmpRateLimit, Lab, Topology};

use super::load::WorkDir;
use super::{agent_binary, http, process};

const SCHEMA: &str = include_str!("../../docs/clickhouse/schema.sql");
/// Target addresses on dst, and UDP ports per address: 1000 targets.
const ADDRESSES: u16 = 20;
const PORTS: u16 = 50;
const INTERVAL_S: u64 = 60;
const PHASE: Duration = Duration::from_secs(INTERVAL_S);

pub struct ClickHouseBench {
    pub targets: usize,
    pub steady: Phase,
    pub outage: Phase,
    /// From the store's return to the first spooled batch taken.
    pub retry_wait_s: f64,
    /// Rows of the backlog per second, once the shipper was at it.
    pub drain_rows_per_s: f64,
    /// CPU with the store up less with it down, per 1000 records sent.
    pub shipping_cpu_ms_per_1000: f64,
    pub spool_bytes: f64,
    pub spooled_records: f64,
    pub rss_before_outage_kib: u64,
    pub rss_after_outage_kib: u64,
    pub json_line_bytes: f64,
    /// Rows and seconds of curl's one-request insert of the same rows.
    pub curl_rows: u64,
    pub curl_s: f64,
}

/// Figures between two moments.
#[derive(Default, Clone, Copy)]
pub struct Phase {
    pub seconds: f64,
    pub records: f64,
    pub rows: f64,
    pub cpu_s: f64,
}

impl Phase {
    fn cpu_ms_per_1000(&self) -> f64 {
        if self.records > 0.0 {
            self.cpu_s * 1000.0 / self.records * 1000.0
        } else {
            0.0
        }
    }

    fn rows_per_s(&self) -> f64 {
        self.rows / self.seconds.max(1e-9)
    }
}

struct Reading {
    at: Instant,
    records: f64,
    rows: f64,
    cpu_s: f64,
}

struct Agent {
    child: Child,
    socket: std::path::PathBuf,
}

impl Agent {
    fn metric(&self, name: &str) -> Result<f64> {
        let reply =
            http::get(&self.socket, "/metrics", Duration::from_secs(10)).context("GET /metrics")?;
        let text = String::from_utf8_lossy(&reply.body);
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0))
    }

    fn read(&self) -> Result<Reading> {
        Ok(Reading {
            at: Instant::now(),
            records: self.metric("traceroute_agent_clickhouse_records_sent_total")?,
            rows: self.metric("traceroute_agent_clickhouse_rows_sent_total")?,
            cpu_s: process::cpu_seconds(self.child.id())?,
        })
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn between(a: &Reading, b: &Reading) -> Phase {
    Phase {
        seconds: (b.at - a.at).as_secs_f64(),
        records: b.records - a.records,
        rows: b.rows - a.rows,
        cpu_s: b.cpu_s - a.cpu_s,
    }
}

pub fn run() -> Result<ClickHouseBench> {
    println!("bench: clickhouse, lab `fleet`: 1000 targets a minute, one agent, one store");
    let lab = Lab::up(
        &Topology::new("chbench")
            .host("src")
            .router("r1")
            .host("dst")
            .host("store")
            .link("src", "r1")
            .link("r1", "dst")
            .link("r1", "store")
            .targets("dst", ADDRESSES)
            .icmp_rate_limit_all(IcmpRateLimit::UNLIMITED),
    )
    .context("clickhouse bench lab")?;
    let mut store = Store::start(&lab, "store", &[]).context("clickhouse-server")?;
    store.apply(&lab, SCHEMA).map_err(anyhow::Error::msg)?;
    let dir = WorkDir(std::env::temp_dir().join(format!("xtask-bench-ch-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0)?;
    let password = dir.0.join("password");
    std::fs::write(&password, traceroute_lab::clickhouse::PASSWORD)?;
    let jsonl = dir.0.join("paths.jsonl");
    let mut config = format!(
        "namespace = \"bench\"\n[output]\npath = \"{}\"\n[output.clickhouse]\nurl = \"{}\"\n\
         user = \"agent\"\npassword_file = \"{}\"\nspool_dir = \"{}\"\n",
        jsonl.display(),
        store.url(),
        password.display(),
        dir.0.join("spool").display()
    );
    let addresses = lab.targets("dst")?;
    for address in &addresses {
        for port in 0..PORTS {
            config.push_str(&format!(
                "[[targets]]\nhost = \"{address}\"\nprotocol = \"udp\"\nport = {}\ninterval = \"{INTERVAL_S}s\"\n",
                33434 + port
            ));
        }
    }
    let targets = addresses.len() * usize::from(PORTS);
    let config_path = dir.0.join("config.toml");
    std::fs::write(&config_path, config)?;
    let socket = dir.0.join("agent.sock");
    let child = lab
        .command("src", &agent_binary().to_string_lossy())?
        .args(["serve", "--socket"])
        .arg(&socket)
        .arg("--config")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the agent")?;
    let agent = Agent { child, socket };
    wait_for(&agent.socket)?;

    // One interval to reach the steady rate (every target's first run
    // falls at a random point of it), then the steady minute.
    println!("bench: clickhouse, warming up ({INTERVAL_S} s)");
    std::thread::sleep(PHASE);
    let a = agent.read()?;
    println!("bench: clickhouse, steady ({INTERVAL_S} s)");
    std::thread::sleep(PHASE);
    let b = agent.read()?;
    let rss_before_outage_kib = process::rss_kib(agent.child.id())?;
    store.down();
    println!("bench: clickhouse, store down ({INTERVAL_S} s)");
    std::thread::sleep(PHASE);
    let c = agent.read()?;
    let spool_bytes = agent.metric("traceroute_agent_clickhouse_spool_bytes")?;
    let rss_after_outage_kib = process::rss_kib(agent.child.id())?;
    // The records of the outage: the spool's batches hold them.
    let spool = dir.0.join("spool");
    let backlog = batches(&spool)?;
    let spooled_records: f64 = backlog.iter().map(|b| b.records).sum();
    store.up(&lab).context("clickhouse-server back")?;
    let up = Instant::now();
    println!(
        "bench: clickhouse, store back, draining {} batches",
        backlog.len()
    );
    // The backlog goes once the shipper's next attempt comes (its backoff),
    // oldest batch first; timed from the first batch gone to the last.
    let gone = |b: &Batch| !b.path.exists();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !backlog.first().is_some_and(gone) {
        if Instant::now() > deadline {
            bail!("the spool did not drain in 5 minutes");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let first_gone = Instant::now();
    while !backlog.iter().all(gone) {
        if Instant::now() > deadline {
            bail!("the spool did not drain in 5 minutes");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let drained = Instant::now();
    let shipped_rows: f64 = backlog.iter().skip(1).map(|b| b.rows).sum();
    let retry_wait_s = (first_gone - up).as_secs_f64();
    let drain_rows_per_s = shipped_rows / (drained - first_gone).as_secs_f64().max(1e-6);
    drop(agent);
    // Shipping's own CPU: the steady minute's less the outage minute's (the
    // same tracing and spooling, nothing sent), per 1000 records sent.
    let steady = between(&a, &b);
    let outage = between(&b, &c);
    let shipping_cpu_ms_per_1000 =
        (steady.cpu_s - outage.cpu_s * steady.seconds / outage.seconds).max(0.0) * 1000.0
            / steady.records.max(1.0)
            * 1000.0;

    let lines = std::fs::read_to_string(&jsonl).unwrap_or_default();
    let json_line_bytes = lines.len() as f64 / lines.lines().count().max(1) as f64;
    // The store's own intake: the rows again, into a copy, in one request.
    let (curl_rows, curl_s) = curl_reference(&lab, &store, &dir.0)?;
    Ok(ClickHouseBench {
        targets,
        steady,
        outage,
        retry_wait_s,
        drain_rows_per_s,
        shipping_cpu_ms_per_1000,
        spool_bytes,
        spooled_records,
        rss_before_outage_kib,
        rss_after_outage_kib,
        json_line_bytes,
        curl_rows,
        curl_s,
    })
}

fn wait_for(socket: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while http::get(socket, "/health", Duration::from_secs(1)).map_or(true, |r| r.status != 200) {
        if Instant::now() > deadline {
            bail!("the agent did not come up");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

struct Batch {
    path: std::path::PathBuf,
    records: f64,
    rows: f64,
}

/// The spool's batches, oldest first (each file's header says how many
/// records; each further line is a row).
fn batches(spool: &Path) -> Result<Vec<Batch>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(spool).context("the spool")? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "batch") {
            let text = std::fs::read(&path)?;
            let header = text.split(|b| *b == b'\n').next().unwrap_or_default();
            let header: Value = serde_json::from_slice(header).unwrap_or_default();
            let lines = text.iter().filter(|b| **b == b'\n').count();
            out.push(Batch {
                path,
                records: header["records"].as_f64().unwrap_or(0.0),
                rows: lines.saturating_sub(1) as f64,
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn curl_reference(lab: &Lab, store: &Store, dir: &Path) -> Result<(u64, f64)> {
    let copy = SCHEMA.replace("traceroute.", "traceroute_copy.").replace(
        "CREATE DATABASE IF NOT EXISTS traceroute;",
        "CREATE DATABASE IF NOT EXISTS traceroute_copy;",
    );
    store.apply(lab, &copy).map_err(anyhow::Error::msg)?;
    let rows = store
        .query(lab, "SELECT * FROM traceroute.hops FORMAT JSONEachRow")
        .map_err(anyhow::Error::msg)?;
    let count = rows.lines().count() as u64;
    let file = dir.join("hops.json");
    std::fs::write(&file, rows + "\n")?;
    let started = Instant::now();
    store
        .insert(lab, "traceroute_copy.hops", &file)
        .map_err(anyhow::Error::msg)?;
    Ok((count, started.elapsed().as_secs_f64()))
}

pub fn section(b: &ClickHouseBench) -> String {
    let hour_mib = b.spool_bytes / b.outage.seconds.max(1.0) * 3600.0 / (1 << 20) as f64;
    format!(
        "## Fleet: records into ClickHouse\n\n\
         One agent, {} UDP targets each traced every {INTERVAL_S} s (3 runs per record, the \
         default) in an unlimited lab, shipping to Debian's clickhouse-server 18.16 in a lab node \
         (`[output.clickhouse]` at its defaults: batches of 1000 records or 5 s, retries from 1 s \
         doubling to 60 s).\n\n\
         | figure | value |\n|---|---|\n\
         | steady: records shipped in {:.0} s | {:.0} ({:.0} rows) |\n\
         | steady: agent CPU per 1000 records (tracing and shipping) | {:.0} ms |\n\
         | agent CPU in the minute with the store up / down | {:.2} / {:.2} s |\n\
         | outage of {:.0} s: records spooled | {:.0} |\n\
         | outage: spool on disk | {:.0} KiB, {:.0} bytes a record |\n\
         | **spool per hour of outage at 1000 targets a minute** | **{:.0} MiB** (the default bound, 1 GiB, holds {:.1} h) |\n\
         | agent memory (RSS) before / after the outage | {} / {} KiB |\n\
         | store back: wait for the shipper's next attempt (its backoff) | {:.1} s |\n\
         | **rows per second one agent ships** (the backlog, once at it) | **{:.0}** |\n\
         | shipping CPU per 1000 records (store up less store down) | {} |\n\
         | the same records as JSON lines (a log shipper's input) | {:.0} bytes a record |\n\n\
         For scale, the store's own intake of the same hop rows posted by curl in one request: \
         {} rows in {:.3} s, {:.0} rows/s. The agent sends a batch as two inserts on fresh \
         connections, one batch at a time; the store creates a part per insert.\n",
        b.targets,
        b.steady.seconds,
        b.steady.records,
        b.steady.rows,
        b.steady.cpu_ms_per_1000(),
        b.steady.cpu_s,
        b.outage.cpu_s,
        b.outage.seconds,
        b.spooled_records,
        b.spool_bytes / 1024.0,
        b.spool_bytes / b.spooled_records.max(1.0),
        hour_mib,
        1024.0 / hour_mib.max(1e-9),
        b.rss_before_outage_kib,
        b.rss_after_outage_kib,
        b.retry_wait_s,
        b.drain_rows_per_s,
        // /proc counts CPU in 10 ms ticks: a difference of one tick or
        // less is not a measurement.
        if (b.steady.cpu_s - b.outage.cpu_s).abs() <= 0.01 {
            format!(
                "below what /proc resolves (10 ms over {:.0} records)",
                b.steady.records
            )
        } else {
            format!("{:.0} ms", b.shipping_cpu_ms_per_1000)
        },
        b.json_line_bytes,
        b.curl_rows,
        b.curl_s,
        b.curl_rows as f64 / b.curl_s.max(1e-9),
    )
}

pub fn json(b: &ClickHouseBench) -> Value {
    let phase = |p: &Phase| {
        json!({"seconds": p.seconds, "records": p.records, "rows": p.rows, "cpu_s": p.cpu_s,
               "rows_per_s": p.rows_per_s(), "cpu_ms_per_1000_records": p.cpu_ms_per_1000()})
    };
    json!({
        "targets": b.targets, "interval_s": INTERVAL_S,
        "steady": phase(&b.steady), "outage": phase(&b.outage),
        "retry_wait_s": b.retry_wait_s, "drain_rows_per_s": b.drain_rows_per_s,
        "shipping_cpu_ms_per_1000_records": b.shipping_cpu_ms_per_1000,
        "spool_bytes_after_outage": b.spool_bytes, "spooled_records": b.spooled_records,
        "rss_before_outage_kib": b.rss_before_outage_kib, "rss_after_outage_kib": b.rss_after_outage_kib,
        "json_line_bytes": b.json_line_bytes,
        "curl_reference": {"rows": b.curl_rows, "seconds": b.curl_s},
    })
}
