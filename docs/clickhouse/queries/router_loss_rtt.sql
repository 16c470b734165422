-- Per router and 5 minutes over the last hour: probes at the TTLs where it
-- answered, how many it answered (loss), and its RTT percentiles (ms).
SELECT
    toStartOfFiveMinute(time) AS period,
    ip_address AS router,
    sum(probes) AS probes,
    sum(answers) AS answers,
    round(1 - answers / probes, 4) AS loss,
    arrayMap(q -> round(q, 3), quantilesArray(0.5, 0.9, 0.99)(rtts_ms)) AS rtt_p50_p90_p99
FROM traceroute.hops FINAL
WHERE time > now() - INTERVAL 1 HOUR AND ip_address != ''
GROUP BY period, router
ORDER BY period, router
