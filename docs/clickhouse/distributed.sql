-- A sharded store: run on EVERY server of the cluster, after schema.sql.
-- The tables schema.sql made become each shard's local tables, and
-- `paths`/`hops` become Distributed tables over them, so the agents' config
-- and every query in queries/ stay the same. The cluster (here
-- `traceroute_cluster`) is the servers' <remote_servers> entry; the agents
-- may write to any server.
--
-- Both tables shard by the record's identity: a batch sent twice lands on
-- the same shard, where ReplacingMergeTree keeps one row, and FINAL in the
-- queries is applied on each shard.

RENAME TABLE traceroute.paths TO traceroute.paths_local, traceroute.hops TO traceroute.hops_local;

CREATE TABLE traceroute.paths AS traceroute.paths_local
ENGINE = Distributed(traceroute_cluster, traceroute, paths_local, sipHash64(test_run_id));

CREATE TABLE traceroute.hops AS traceroute.hops_local
ENGINE = Distributed(traceroute_cluster, traceroute, hops_local, sipHash64(test_run_id));
