-- Paths that changed, per agent and target, in the last hour: each change
-- with when it was seen, the fingerprints before and after, and the hops of
-- the record before and of the record after (TTL, address; '' = silent).
-- (One JOIN per SELECT: ClickHouse 18.16 takes no more; every joined
-- subquery named: current releases want that.)
SELECT
    agent_namespace,
    agent_hostname,
    target,
    protocol,
    changed_at_ms,
    fingerprint_before,
    fingerprint_after,
    hops_before,
    hops AS hops_after
FROM
(
    SELECT
        agent_namespace,
        agent_hostname,
        target,
        protocol,
        changed_at_ms,
        fingerprint_before,
        fingerprint_after,
        after_run,
        hops AS hops_before
    FROM
    (
        SELECT
            agent_namespace,
            agent_hostname,
            target,
            protocol,
            change.1 AS changed_at_ms,
            change.2 AS fingerprint_before,
            change.3 AS fingerprint_after,
            change.4 AS before_run,
            change.5 AS after_run
        FROM
        (
            SELECT
                agent_namespace,
                agent_hostname,
                target,
                protocol,
                arraySort(r -> r.1, groupArray((timestamp_ms, path_fingerprint, test_run_id))) AS runs
            FROM traceroute.paths FINAL
            WHERE time > now() - INTERVAL 1 HOUR AND path_fingerprint != ''
            GROUP BY agent_namespace, agent_hostname, target, protocol
        )
        ARRAY JOIN arrayMap(
            i -> (runs[i].1, runs[i - 1].2, runs[i].2, runs[i - 1].3, runs[i].3),
            arrayFilter(i -> i > 1 AND runs[i].2 != runs[i - 1].2, arrayEnumerate(runs))
        ) AS change
    ) AS changes
    ANY LEFT JOIN
    (
        SELECT test_run_id AS before_run, arraySort(groupUniqArray((ttl, ip_address))) AS hops
        FROM traceroute.hops FINAL
        WHERE time > now() - INTERVAL 1 HOUR
        GROUP BY test_run_id
    ) AS hops_of_before USING before_run
) AS changes_with_before
ANY LEFT JOIN
(
    SELECT test_run_id AS after_run, arraySort(groupUniqArray((ttl, ip_address))) AS hops
    FROM traceroute.hops FINAL
    WHERE time > now() - INTERVAL 1 HOUR
    GROUP BY test_run_id
) AS hops_of_after USING after_run
ORDER BY agent_namespace, agent_hostname, target, changed_at_ms
