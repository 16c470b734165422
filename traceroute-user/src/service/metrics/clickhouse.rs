//! The ClickHouse output's figures, read at each scrape.

use std::sync::Weak;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;

use super::{counter, gauge};
use crate::sinks::clickhouse::ClickHouseSink;

#[derive(Debug)]
pub struct ClickHouseCollector {
    pub sink: Weak<ClickHouseSink>,
}

impl Collector for ClickHouseCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(sink) = self.sink.upgrade() else {
            return Ok(());
        };
        let s = sink.snapshot();
        for (name, help, value) in [
            ("clickhouse_records_sent", "Records the store has taken", s.records_sent),
            ("clickhouse_rows_sent", "Rows (paths and hops) the store has taken", s.rows_sent),
            ("clickhouse_batches_sent", "Batches the store has taken", s.batches_sent),
            (
                "clickhouse_batches_failed",
                "Attempts to send a batch that failed (the batch stays spooled and is sent again)",
                s.batches_failed,
            ),
            (
                "clickhouse_records_dropped",
                "Records lost: the spool was full or could not be written",
                s.records_dropped,
            ),
        ] {
            counter(&mut encoder, name, help, value)?;
        }
        gauge(
            &mut encoder,
            "clickhouse_spool_bytes",
            "Bytes of batches waiting in the spool",
            s.spool_bytes,
        )?;
        gauge(
            &mut encoder,
            "clickhouse_spool_batches",
            "Batches waiting in the spool",
            s.spool_batches as u64,
        )?;
        let age = ConstGauge::new(s.oldest_unsent_age);
        let m = encoder.encode_descriptor(
            "clickhouse_oldest_unsent_age_seconds",
            "Age of the oldest record not yet in the store (0 when none waits)",
            None,
            age.metric_type(),
        )?;
        age.encode(m)
    }
}
