//! Records into ClickHouse, for fleets: batched inserts over its HTTP
//! interface into the tables of `docs/clickhouse/schema.sql`, through an
//! on-disk spool so that nothing is lost while the store is down or refusing.
//!
//! `write` (called by the scheduler for every finished record) adds the
//! record's rows to the batch being filled; a full batch, or one older than
//! `batch_age`, is sealed into the spool. The shipper task sends spooled
//! batches oldest first (`paths`, then `hops`) and removes each once both
//! inserts were taken; on failure it waits (1 s, doubling up to `retry_max`)
//! and tries the same batch again. A batch can so reach the store twice (at
//! least once on the wire); the tables keep one row per identity (exactly
//! once in the tables).

pub mod insert;
pub mod rows;
pub mod spool;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use self::spool::{Batch, Spool};
use crate::path::NetworkPath;
use crate::sync::LockExt;

/// A password: read from the config or a file, never printed.
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

/// Where and how to ship (the config's `[output.clickhouse]`, resolved).
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// `host:port` of the HTTP interface.
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub password: Secret,
    pub batch_records: u64,
    pub batch_age: Duration,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    pub retry_max: Duration,
}

impl Options {
    fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The shipper's counters, for the metrics.
#[derive(Debug, Default)]
pub struct Stats {
    pub records_sent: AtomicU64,
    pub rows_sent: AtomicU64,
    pub batches_sent: AtomicU64,
    pub batches_failed: AtomicU64,
    /// Records dropped because the spool was full, or could not be written.
    pub records_dropped: AtomicU64,
}

/// What the metrics show of the sink at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snapshot {
    pub records_sent: u64,
    pub rows_sent: u64,
    pub batches_sent: u64,
    pub batches_failed: u64,
    pub records_dropped: u64,
    pub spool_batches: usize,
    pub spool_bytes: u64,
    /// Age (s) of the oldest record not yet in the store (filling batch included).
    pub oldest_unsent_age: f64,
}

/// The ClickHouse output. Cheap to share; `close` seals what is pending.
pub struct ClickHouseSink {
    inner: Arc<Inner>,
    shipper: Mutex<Option<JoinHandle<()>>>,
}

struct Inner {
    options: Options,
    filling: Mutex<Filling>,
    spool: Mutex<Spool>,
    stats: Stats,
    /// A batch was sealed: the shipper looks now.
    sealed: Notify,
    stop: watch::Sender<bool>,
}

#[derive(Default)]
struct Filling {
    batch: Batch,
    since: Option<Instant>,
}

impl ClickHouseSink {
    /// Opens the spool (taking over what a previous run left) and starts the
    /// shipper. Needs a runtime.
    pub fn start(options: Options) -> std::io::Result<ClickHouseSink> {
        let spool = Spool::open(&options.spool_dir, options.spool_max_bytes)?;
        let left = spool.state();
        if left.batches > 0 {
            tracing::info!(
                batches = left.batches,
                bytes = left.bytes,
                "clickhouse: sending what the spool kept from before"
            );
        }
        let inner = Arc::new(Inner {
            options,
            filling: Mutex::new(Filling::default()),
            spool: Mutex::new(spool),
            stats: Stats::default(),
            sealed: Notify::new(),
            stop: watch::channel(false).0,
        });
        let shipper = tokio::spawn(ship(Arc::clone(&inner)));
        Ok(ClickHouseSink {
            inner,
            shipper: Mutex::new(Some(shipper)),
        })
    }

    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// Adds `path`'s rows to the batch; seals it into the spool when full.
    pub fn write(&self, path: &NetworkPath) {
        let mut filling = self.inner.filling.locked();
        let batch = &mut filling.batch;
        let before = (batch.paths.len(), batch.hops.len());
        let added = rows::push_json_lines(&mut batch.paths, [rows::path_row(path)])
            .and_then(|()| rows::push_json_lines(&mut batch.hops, rows::hop_rows(path)));
        if let Err(e) = added {
            // Not reached for records the agent built; never half a record.
            batch.paths.truncate(before.0);
            batch.hops.truncate(before.1);
            self.inner.stats.records_dropped.fetch_add(1, Ordering::Relaxed);
            tracing::error!("clickhouse: a record could not be turned into rows: {e}");
            return;
        }
        if batch.records == 0 {
            batch.first_ms = path.timestamp;
            filling.since = Some(Instant::now());
        }
        filling.batch.records += 1;
        if filling.batch.records >= self.inner.options.batch_records {
            self.inner.seal(&mut filling);
        }
    }

    /// Seals the filling batch, gives the shipper [`FLUSH_ON_CLOSE`] to
    /// empty the spool, and stops it: what was not sent stays in the spool
    /// for the next start.
    pub async fn close(&self) {
        self.inner.seal(&mut self.inner.filling.locked());
        let flushed = tokio::time::timeout(FLUSH_ON_CLOSE, async {
            while self.inner.spool.locked().state().batches > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        if flushed.is_err() {
            let left = self.inner.spool.locked().state();
            tracing::warn!(
                batches = left.batches,
                bytes = left.bytes,
                "clickhouse: stopping with records in the spool; they are sent after the next start"
            );
        }
        self.inner.stop.send_replace(true);
        let shipper = self.shipper.locked().take();
        if let Some(shipper) = shipper {
            let _ = shipper.await;
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let s = &self.inner.stats;
        let spool = self.inner.spool.locked().state();
        let filling_first = {
            let f = self.inner.filling.locked();
            (f.batch.records > 0).then_some(f.batch.first_ms)
        };
        let oldest = match (spool.oldest_ms, filling_first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Snapshot {
            records_sent: s.records_sent.load(Ordering::Relaxed),
            rows_sent: s.rows_sent.load(Ordering::Relaxed),
            batches_sent: s.batches_sent.load(Ordering::Relaxed),
            batches_failed: s.batches_failed.load(Ordering::Relaxed),
            records_dropped: s.records_dropped.load(Ordering::Relaxed),
            spool_batches: spool.batches,
            spool_bytes: spool.bytes,
            oldest_unsent_age: oldest.map_or(0.0, |ms| now_ms.saturating_sub(ms) as f64 / 1000.0),
        }
    }
}

impl Drop for ClickHouseSink {
    fn drop(&mut self) {
        // Without close(): the filling batch still goes to disk.
        self.inner.seal(&mut self.inner.filling.locked());
        if let Some(shipper) = self.shipper.locked().take() {
            shipper.abort();
        }
    }
}

impl Inner {
    /// Moves the filling batch into the spool (nothing if it is empty).
    fn seal(&self, filling: &mut Filling) {
        if filling.batch.records == 0 {
            return;
        }
        let batch = std::mem::take(&mut filling.batch);
        filling.since = None;
        let pushed = self.spool.locked().push(&batch);
        match pushed {
            Ok(dropped) if dropped.batches > 0 => {
                self.stats
                    .records_dropped
                    .fetch_add(dropped.records, Ordering::Relaxed);
                tracing::error!(
                    records = dropped.records,
                    batches = dropped.batches,
                    max_bytes = self.options.spool_max_bytes,
                    "clickhouse: spool full, the oldest records are lost"
                );
            }
            Ok(_) => {}
            Err(e) => {
                self.stats
                    .records_dropped
                    .fetch_add(batch.records, Ordering::Relaxed);
                tracing::error!(
                    records = batch.records,
                    "clickhouse: writing the spool failed, these records are lost: {e}"
                );
            }
        }
        self.sealed.notify_one();
    }

    /// Seals the filling batch if it is older than `batch_age`.
    fn seal_if_old(&self) {
        let mut filling = self.filling.locked();
        if filling
            .since
            .is_some_and(|t| t.elapsed() >= self.options.batch_age)
        {
            self.seal(&mut filling);
        }
    }
}

/// How long stopping waits for the spool to empty.
pub const FLUSH_ON_CLOSE: Duration = Duration::from_secs(2);

/// The first wait after a failed send; doubled per failure up to `retry_max`.
const FIRST_RETRY: Duration = Duration::from_secs(1);

async fn ship(inner: Arc<Inner>) {
    let mut stop = inner.stop.subscribe();
    let mut backoff = FIRST_RETRY;
    // The last failure's kind, so an outage is one error line, not one per try.
    let mut failing: Option<String> = None;
    let tick = (inner.options.batch_age / 4).max(Duration::from_millis(50));
    loop {
        if *stop.borrow() {
            return;
        }
        inner.seal_if_old();
        let next = inner.spool.locked().oldest();
        let (seq, batch) = match next {
            Ok(Some(next)) => next,
            Ok(None) => {
                tokio::select! {
                    _ = inner.sealed.notified() => {}
                    _ = tokio::time::sleep(tick) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                continue;
            }
            Err(e) => {
                tracing::error!("clickhouse: a spooled batch cannot be read, set aside: {e}");
                let mut spool = inner.spool.locked();
                if let Some(seq) = spool.first() {
                    spool.set_aside(seq);
                }
                continue;
            }
        };
        let rows = count_lines(&batch.paths) + count_lines(&batch.hops);
        let sent = async {
            insert::insert(&inner.options, "paths", batch.paths).await?;
            insert::insert(&inner.options, "hops", batch.hops).await
        };
        let sent = tokio::select! {
            sent = sent => sent,
            _ = stop.wait_for(|s| *s) => return,
        };
        match sent {
            Ok(()) => {
                inner.spool.locked().remove(seq);
                let s = &inner.stats;
                s.records_sent.fetch_add(batch.records, Ordering::Relaxed);
                s.rows_sent.fetch_add(rows, Ordering::Relaxed);
                s.batches_sent.fetch_add(1, Ordering::Relaxed);
                if failing.take().is_some() {
                    tracing::info!("clickhouse: the store takes rows again");
                }
                backoff = FIRST_RETRY;
            }
            Err(e) => {
                inner.stats.batches_failed.fetch_add(1, Ordering::Relaxed);
                let kind = e.to_string();
                if failing.as_deref() != Some(kind.as_str()) {
                    if e.needs_a_person() {
                        tracing::error!(
                            database = inner.options.database,
                            user = inner.options.user,
                            "clickhouse: the store refuses our rows; check the credentials and that \
                             docs/clickhouse/schema.sql was applied (records are kept in the spool): {e}"
                        );
                    } else {
                        tracing::error!(
                            "clickhouse: sending failed, retrying (records are kept in the spool): {e}"
                        );
                    }
                    failing = Some(kind);
                } else {
                    tracing::debug!("clickhouse: still failing: {e}");
                }
                // Jittered, so that a fleet does not come back at one
                // instant; batches keep being sealed by age meanwhile.
                let until = Instant::now() + crate::random::jittered(backoff, 0.2);
                while Instant::now() < until {
                    let nap = tick.min(until.saturating_duration_since(Instant::now()));
                    tokio::select! {
                        _ = tokio::time::sleep(nap) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                    inner.seal_if_old();
                }
                backoff = (backoff * 2).min(inner.options.retry_max);
            }
        }
    }
}

fn count_lines(rows: &[u8]) -> u64 {
    rows.iter().filter(|b| **b == b'\n').count() as u64
}
