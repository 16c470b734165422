-- traceroute-agent's tables in ClickHouse: one row per record (`paths`) and
-- one row per hop per run (`hops`). Runs on ClickHouse 18.16 (Debian 12's
-- package) and on current releases. Apply with
--   clickhouse-client --multiquery < docs/clickhouse/schema.sql
-- or statement by statement over HTTP (what the tests do).
--
-- Exactly once in the tables: the agent sends a batch again until the store
-- has taken it (at least once on the wire); ReplacingMergeTree keeps one row
-- per sorting key, and each key ends with the row's identity (the record's
-- test_run_id; for a hop also its run and TTL). Duplicates live until the
-- next merge: read with FINAL (as every query in queries/ does), or run
-- OPTIMIZE TABLE ... FINAL.
--
-- Ordering keys: queries ask per agent and target over a time window, and
-- per router address over a time window; the keys put each agent's target's
-- rows together in time order, and `hops` sorts by address first so that a
-- router's rows are adjacent.
--
-- Retention: partitions by day. Current releases (19.6 and later) delete old
-- rows by themselves with the TTL in retention.sql; on 18.16 drop a day with
--   ALTER TABLE traceroute.hops DROP PARTITION 20261201
-- (cron, or the agent's operator).

CREATE DATABASE IF NOT EXISTS traceroute;

CREATE TABLE IF NOT EXISTS traceroute.paths
(
    timestamp_ms UInt64,
    test_run_id String,
    agent_namespace String,
    agent_hostname String,
    agent_version String,
    target String,
    destination_ip String,
    destination_port UInt16,
    protocol String,
    path_fingerprint String,
    reached UInt8,
    runs UInt8,
    hop_count_avg Float64,
    hop_count_min UInt32,
    hop_count_max UInt32,
    e2e_sent UInt32,
    e2e_received UInt32,
    e2e_loss_percentage Float64,
    e2e_rtt_avg_ms Float64,
    e2e_jitter_ms Float64,
    tags Array(String),
    incomplete UInt8,
    -- Computed when read, never stored or sent (an ALIAS, not MATERIALIZED:
    -- 18.16's Distributed tables cannot insert into MATERIALIZED columns).
    time DateTime ALIAS toDateTime(intDiv(timestamp_ms, 1000))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(toDateTime(intDiv(timestamp_ms, 1000)))
ORDER BY (agent_namespace, agent_hostname, target, protocol, timestamp_ms, test_run_id);

CREATE TABLE IF NOT EXISTS traceroute.hops
(
    timestamp_ms UInt64,
    test_run_id String,
    run_id String,
    agent_namespace String,
    agent_hostname String,
    target String,
    protocol String,
    ttl UInt8,
    ip_address String,
    rtt_ms Float64,
    probes UInt8,
    answers UInt8,
    rtts_ms Array(Float64),
    reached UInt8,
    no_answer String,
    reply_ttl UInt8,
    icmp_type UInt8,
    icmp_code UInt8,
    mpls_labels Array(UInt32),
    fingerprint String,
    -- Computed when read, never stored or sent (an ALIAS, not MATERIALIZED:
    -- 18.16's Distributed tables cannot insert into MATERIALIZED columns).
    time DateTime ALIAS toDateTime(intDiv(timestamp_ms, 1000))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(toDateTime(intDiv(timestamp_ms, 1000)))
ORDER BY (ip_address, timestamp_ms, test_run_id, run_id, ttl);
