-- Retention on ClickHouse 19.6 and later: rows older than 30 days are
-- deleted by the server's merges. (18.16 has no TTL: drop whole days there,
--   ALTER TABLE traceroute.paths DROP PARTITION 20261101
-- and the same for traceroute.hops, from cron.) On a sharded store, run this
-- on every server against paths_local and hops_local.

ALTER TABLE traceroute.paths MODIFY TTL toDateTime(intDiv(timestamp_ms, 1000)) + INTERVAL 30 DAY;

ALTER TABLE traceroute.hops MODIFY TTL toDateTime(intDiv(timestamp_ms, 1000)) + INTERVAL 30 DAY;
