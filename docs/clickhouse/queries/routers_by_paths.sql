-- Routers ranked by how many (agent, target) paths crossed them in the last
-- hour (the destinations themselves left out).
SELECT
    ip_address AS router,
    uniqExact(agent_namespace, agent_hostname, target) AS paths,
    uniqExact(agent_namespace, agent_hostname) AS agents
FROM traceroute.hops FINAL
WHERE time > now() - INTERVAL 1 HOUR AND ip_address != '' AND reached = 0
GROUP BY router
ORDER BY paths DESC, router
LIMIT 100
