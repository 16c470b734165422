-- Targets whose distance (TTL of the destination's answer) or destination
-- RTT moved: the last 10 minutes against the 50 before them. A target shows
-- when its median distance changed, or its median RTT doubled or halved
-- (and moved by more than 1 ms).
SELECT
    agent_namespace,
    agent_hostname,
    target,
    protocol,
    medianIf(ttl, recent = 0) AS distance_before,
    medianIf(ttl, recent = 1) AS distance_now,
    round(medianIf(rtt_ms, recent = 0), 3) AS rtt_ms_before,
    round(medianIf(rtt_ms, recent = 1), 3) AS rtt_ms_now
FROM
(
    SELECT agent_namespace, agent_hostname, target, protocol, ttl, rtt_ms,
        time > now() - INTERVAL 10 MINUTE AS recent
    FROM traceroute.hops FINAL
    WHERE time > now() - INTERVAL 1 HOUR AND reached = 1
)
GROUP BY agent_namespace, agent_hostname, target, protocol
HAVING countIf(recent = 0) > 0 AND countIf(recent = 1) > 0
    AND (distance_now != distance_before
        OR (abs(rtt_ms_now - rtt_ms_before) > 1
            AND (rtt_ms_now > 2 * rtt_ms_before OR rtt_ms_now < rtt_ms_before / 2)))
ORDER BY agent_namespace, agent_hostname, target
