-- Agents that reported in the last 7 days but not in the last 10 minutes.
SELECT
    agent_namespace,
    agent_hostname,
    max(time) AS last_record,
    toUInt32(now() - last_record) AS silent_for_s
FROM traceroute.paths
WHERE time > now() - INTERVAL 7 DAY
GROUP BY agent_namespace, agent_hostname
HAVING last_record < now() - INTERVAL 10 MINUTE
ORDER BY last_record
