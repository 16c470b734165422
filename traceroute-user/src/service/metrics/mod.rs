//! Prometheus metrics of the service (`GET /metrics`, OpenMetrics or the
//! classic text format by content negotiation; docs/METRICS.md lists them).
//!
//! Trace outcomes are counted here as traces finish, with the tracer's own
//! counts of probes sent and answers taken by kind (`TraceStats`, e2e probes
//! included). Scheduled targets' latest runs set per-target gauges. Capture
//! and route-cache counters are read from the tracer, and `process_*` from
//! `/proc/self`, at scrape time.

mod clickhouse;
mod exposition;
mod process;

pub use exposition::Format;

use std::sync::{Arc, Weak};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::clock::MonotonicTime;
use crate::error::ErrorCode;
use crate::path::NetworkPath;
use crate::sinks::clickhouse::ClickHouseSink;
use crate::probe::Protocol;
use crate::trace::TraceStats;
use crate::trace::Tracer;

type Labels = Vec<(&'static str, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// Where a trace came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Api,
    Schedule,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Api => "api",
            Origin::Schedule => "schedule",
        }
    }
}

fn duration_histogram() -> Histogram {
    Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0])
}

pub struct Metrics {
    registry: Registry,
    runs: Family<Labels, Counter>,
    failed: Family<Labels, Counter>,
    probes: Family<Labels, Counter>,
    not_sent: Family<Labels, Counter>,
    degraded: Family<Labels, Counter>,
    reprobes: Family<Labels, Counter>,
    shared_hops: Family<Labels, Counter>,
    rejected: Family<Labels, Counter>,
    replies: Family<Labels, Counter>,
    duration: Family<Labels, Histogram, fn() -> Histogram>,
    in_flight: Family<Labels, Gauge>,
    requests: Family<Labels, Counter>,
    records_lost: Counter,
    sink_open_failures: Counter,
    connections_shed: Counter,
    path_changes: Family<Labels, Counter>,
    targets: TargetGauges,
}

/// What people alert on, per scheduled target (labels `target`,
/// `protocol`), from its latest finished run.
#[derive(Default)]
struct TargetGauges {
    distinct_paths: Family<Labels, Gauge>,
    hop_count: Family<Labels, FloatGauge>,
    reached: Family<Labels, Gauge>,
    e2e_rtt: Family<Labels, FloatGauge>,
    e2e_loss: Family<Labels, FloatGauge>,
    last_run: Family<Labels, FloatGauge>,
}

impl TargetGauges {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "target_distinct_paths",
            "Distinct paths the target's latest scheduled run found, by target and protocol",
            self.distinct_paths.clone(),
        );
        registry.register(
            "target_hops",
            "Hops to the target in its latest scheduled run (mean over the run's flows and queries)",
            self.hop_count.clone(),
        );
        registry.register(
            "target_destination_reached",
            "1 when the target's latest scheduled run reached it, else 0",
            self.reached.clone(),
        );
        registry.register(
            "target_e2e_rtt_seconds",
            "Mean end-to-end RTT of the target's latest scheduled run (absent when no e2e probe was answered)",
            self.e2e_rtt.clone(),
        );
        registry.register(
            "target_e2e_loss_ratio",
            "End-to-end probe loss of the target's latest scheduled run, 0 to 1 (absent when none was sent)",
            self.e2e_loss.clone(),
        );
        registry.register(
            "target_last_run_timestamp_seconds",
            "When the target's latest scheduled run finished, seconds since the Unix epoch",
            self.last_run.clone(),
        );
    }

    /// Sets every gauge from a finished record; a figure the run did not
    /// measure is removed rather than left at an older run's value.
    fn set(&self, labels: &Labels, path: &NetworkPath) {
        let tr = &path.traceroute;
        self.hop_count.get_or_create(labels).set(tr.hop_count.avg);
        let reached = tr.runs.iter().any(|r| r.destination_reached);
        self.reached.get_or_create(labels).set(i64::from(reached));
        let e2e = &path.e2e_probe;
        if e2e.packets_received > 0 {
            self.e2e_rtt.get_or_create(labels).set(e2e.rtt.avg / 1000.0);
        } else {
            self.e2e_rtt.remove(labels);
        }
        if e2e.packets_sent > 0 {
            self.e2e_loss
                .get_or_create(labels)
                .set(e2e.packet_loss_percentage);
        } else {
            self.e2e_loss.remove(labels);
        }
        self.last_run
            .get_or_create(labels)
            .set(path.timestamp as f64 / 1000.0);
    }
}

impl Metrics {
    pub fn new(tracer: Weak<Tracer>, clickhouse: Weak<ClickHouseSink>) -> Metrics {
        let mut root = Registry::default();
        root.register_collector(Box::new(process::ProcessCollector));
        let registry = root.sub_registry_with_prefix("traceroute_agent");
        let runs = Family::<Labels, Counter>::default();
        let failed = Family::<Labels, Counter>::default();
        let probes = Family::<Labels, Counter>::default();
        let not_sent = Family::<Labels, Counter>::default();
        let degraded = Family::<Labels, Counter>::default();
        let reprobes = Family::<Labels, Counter>::default();
        let shared_hops = Family::<Labels, Counter>::default();
        let rejected = Family::<Labels, Counter>::default();
        let replies = Family::<Labels, Counter>::default();
        let duration = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram,
        );
        let in_flight = Family::<Labels, Gauge>::default();
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "runs",
            "Traces run, by protocol and origin (api, schedule)",
            runs.clone(),
        );
        registry.register(
            "failed_runs",
            "Traces that failed, by protocol, origin and error code",
            failed.clone(),
        );
        registry.register(
            "probes_sent",
            "Probes finished traces sent (re-probes and e2e probes included), by protocol",
            probes.clone(),
        );
        registry.register(
            "probes_not_sent",
            "Probes finished traces never sent, by reason (router_budget, probe_rate, deadline)",
            not_sent.clone(),
        );
        registry.register(
            "degraded_traces",
            "Finished traces reporting less than asked, by reason (rate_limited, cut_short, router_budget, probe_rate, deadline)",
            degraded.clone(),
        );
        registry.register(
            "reprobes",
            "Probes sent again to routers suspected of rate limiting",
            reprobes.clone(),
        );
        registry.register(
            "shared_hops",
            "Hops reported from another trace's observation of the shared gateway",
            shared_hops.clone(),
        );
        registry.register(
            "replies_rejected",
            "Packets quoting a trace's flow that were not taken, by reason (malformed, unknown_probe, wrong_secret, implausible, before_probe, duplicate)",
            rejected.clone(),
        );
        registry.register(
            "replies_matched",
            "Replies matched to probes in finished traces, by kind",
            replies.clone(),
        );
        registry.register(
            "trace_duration_seconds",
            "Time from request to finished record, by protocol",
            duration.clone(),
        );
        registry.register(
            "traces_in_flight",
            "Traces running now, by origin",
            in_flight.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP API answers by status code",
            requests.clone(),
        );
        let records_lost = Counter::default();
        registry.register(
            "records_lost",
            "Scheduled records that could not be written (disk full, I/O error)",
            records_lost.clone(),
        );
        let path_changes = Family::<Labels, Counter>::default();
        registry.register(
            "path_changes",
            "Scheduled runs whose set of paths differs from the target's previous run, by target and protocol",
            path_changes.clone(),
        );
        let targets = TargetGauges::default();
        targets.register(registry);
        let build_info = Family::<Labels, Gauge>::default();
        registry.register(
            "build_info",
            "Always 1; labels name the agent's version",
            build_info.clone(),
        );
        build_info
            .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_string())])
            .set(1);
        let connections_shed = Counter::default();
        registry.register(
            "api_connections_shed",
            "API connections waiting for a request (idle, or sending their head slowly) closed at api.max_connections to make room for a new one",
            connections_shed.clone(),
        );
        let sink_open_failures = Counter::default();
        registry.register(
            "sink_open_failures",
            "Attempts to open a newly configured output file that failed (retried every 10 s and on SIGHUP)",
            sink_open_failures.clone(),
        );
        // Make the gauges visible at 0 before the first trace.
        for origin in [Origin::Api, Origin::Schedule] {
            let _ = in_flight.get_or_create(&vec![("origin", origin.as_str().to_string())]);
        }
        registry.register_collector(Box::new(TracerCollector { tracer }));
        registry.register_collector(Box::new(clickhouse::ClickHouseCollector { sink: clickhouse }));
        Metrics {
            registry: root,
            runs,
            failed,
            probes,
            not_sent,
            degraded,
            reprobes,
            shared_hops,
            rejected,
            replies,
            duration,
            in_flight,
            requests,
            records_lost,
            sink_open_failures,
            connections_shed,
            path_changes,
            targets,
        }
    }

    /// A scheduled target's latest run: its gauges, how many distinct
    /// paths, and whether the set changed since its previous run.
    pub fn target_run(&self, target: &str, path: &NetworkPath, distinct: usize, changed: bool) {
        let labels = vec![
            ("target", target.to_string()),
            ("protocol", path.protocol.as_str().to_string()),
        ];
        self.targets.set(&labels, path);
        self.targets
            .distinct_paths
            .get_or_create(&labels)
            .set(i64::try_from(distinct).unwrap_or(i64::MAX));
        if changed {
            self.path_changes.get_or_create(&labels).inc();
        }
    }

    pub fn record_lost(&self) {
        self.records_lost.inc();
    }

    pub fn sink_open_failed(&self) {
        self.sink_open_failures.inc();
    }

    /// An idle API connection was closed to make room for a new one.
    pub fn connection_shed(&self) {
        self.connections_shed.inc();
    }

    /// The text exposition in `format`.
    pub fn render(&self, format: Format) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        match format {
            Format::OpenMetrics => out,
            Format::Classic => exposition::to_classic(&out),
        }
    }

    pub fn http_answer(&self, status: u16) {
        self.requests
            .get_or_create(&vec![("status", status.to_string())])
            .inc();
    }

    /// Counts a trace as running until the guard is dropped; a guard dropped
    /// without [`InFlight::finish`] (the client went away, shutdown) counts
    /// as a failed run with code `CANCELLED`.
    pub fn start(self: &Arc<Self>, protocol: Protocol, origin: Origin) -> InFlight {
        self.in_flight
            .get_or_create(&vec![("origin", origin.as_str().to_string())])
            .inc();
        InFlight {
            metrics: Arc::clone(self),
            protocol,
            origin,
            started: std::time::Instant::now(),
            done: false,
        }
    }

    fn finished(
        &self,
        protocol: Protocol,
        origin: Origin,
        code: Option<ErrorCode>,
        took: Duration,
    ) {
        let p = protocol.as_str().to_string();
        let o = origin.as_str().to_string();
        self.runs
            .get_or_create(&vec![("protocol", p.clone()), ("origin", o.clone())])
            .inc();
        if let Some(code) = code {
            self.failed
                .get_or_create(&vec![
                    ("protocol", p.clone()),
                    ("origin", o),
                    ("code", code.to_string()),
                ])
                .inc();
        }
        self.duration
            .get_or_create(&vec![("protocol", p)])
            .observe(took.as_secs_f64());
    }

    /// Counts the probes a trace sent and the answers it took, by kind.
    pub fn count_stats(&self, protocol: Protocol, stats: &TraceStats) {
        let p = protocol.as_str().to_string();
        for (kind, n) in &stats.answers {
            self.replies
                .get_or_create(&vec![("protocol", p.clone()), ("kind", kind.to_string())])
                .inc_by(*n);
        }
        for (reason, n) in &stats.not_sent {
            self.not_sent
                .get_or_create(&vec![
                    ("protocol", p.clone()),
                    ("reason", reason.to_string()),
                ])
                .inc_by(*n);
        }
        for reason in &stats.degraded {
            self.degraded
                .get_or_create(&vec![
                    ("protocol", p.clone()),
                    ("reason", reason.to_string()),
                ])
                .inc();
        }
        for (reason, n) in stats.ignored.by_reason() {
            self.rejected
                .get_or_create(&vec![
                    ("protocol", p.clone()),
                    ("reason", reason.to_string()),
                ])
                .inc_by(n);
        }
        let by_protocol = vec![("protocol", p)];
        self.reprobes
            .get_or_create(&by_protocol)
            .inc_by(stats.reprobes);
        self.shared_hops
            .get_or_create(&by_protocol)
            .inc_by(stats.shared_hops);
        self.probes
            .get_or_create(&by_protocol)
            .inc_by(stats.probes_sent);
    }
}

/// A running trace (see [`Metrics::start`]).
pub struct InFlight {
    metrics: Arc<Metrics>,
    protocol: Protocol,
    origin: Origin,
    started: std::time::Instant,
    done: bool,
}

impl InFlight {
    /// Records the outcome: `None` for success, else the error code.
    pub fn finish(mut self, code: Option<ErrorCode>) {
        self.done = true;
        self.metrics
            .finished(self.protocol, self.origin, code, self.started.elapsed());
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.done {
            self.metrics.finished(
                self.protocol,
                self.origin,
                Some(ErrorCode::Cancelled),
                self.started.elapsed(),
            );
        }
        self.metrics
            .in_flight
            .get_or_create(&vec![("origin", self.origin.as_str().to_string())])
            .dec();
    }
}

/// Capture and route-cache counters, read from the tracer at scrape time.
struct TracerCollector {
    tracer: Weak<Tracer>,
}

impl std::fmt::Debug for TracerCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracerCollector").finish_non_exhaustive()
    }
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    let m = encoder.encode_descriptor(name, help, None, c.metric_type())?;
    c.encode(m)
}

impl Collector for TracerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(tracer) = self.tracer.upgrade() else {
            return Ok(());
        };
        let counters = tracer.capture().counters();
        let events = counters
            .get("packets_matched")
            .or(counters.get("delivered"))
            .copied()
            .unwrap_or(0);
        counter(
            &mut encoder,
            "capture_events",
            "Packets the capture handed to userspace (kernel packets_matched in eBPF mode)",
            events,
        )?;
        counter(
            &mut encoder,
            "capture_ring_buffer_drops",
            "Matched packets lost because the eBPF ring buffer was full",
            counters.get("ring_buffer_full").copied().unwrap_or(0),
        )?;
        let c = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "capture_stats",
            "Every capture counter by name in label stat (kernel counters in eBPF mode, dispatch counters always)",
            None,
            c.metric_type(),
        )?;
        for (name, value) in &counters {
            let labels = [("stat", *name)];
            ConstCounter::new(*value).encode(family.encode_family(&labels)?)?;
        }
        counter(
            &mut encoder,
            "route_cache_refreshes",
            "Route cache invalidations caused by routing changes",
            tracer.routes().refreshes(),
        )?;
        let known = tracer.knowledge().totals(MonotonicTime::now());
        gauge(
            &mut encoder,
            "responders_known",
            "Responders the agent has learnt something about (answer budget or latency)",
            known.responders,
        )?;
        gauge(
            &mut encoder,
            "responders_limited",
            "Responders that showed an answer limit in the last 5 minutes (paced at the prior budget)",
            known.limited,
        )?;
        gauge(
            &mut encoder,
            "silent_places",
            "Places on paths known to stay silent for a full wait (later traces give up sooner there)",
            known.silent_places,
        )?;
        counter(
            &mut encoder,
            "responder_budget_growths",
            "Times a responder answered its whole budget and the budget doubled",
            known.growths,
        )?;
        counter(
            &mut encoder,
            "responder_limits",
            "Times a responder showed an answer limit and its budget fell back to the prior",
            known.limits,
        )?;
        Ok(())
    }
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    let m = encoder.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::Ignored;

    #[test]
    fn rejected_replies_and_unsent_probes_are_exposed_by_reason() {
        let metrics = Metrics::new(Weak::new(), Weak::new());
        let mut stats = TraceStats {
            probes_sent: 7,
            reprobes: 1,
            shared_hops: 2,
            ignored: Ignored {
                wrong_secret: 2,
                duplicates: 1,
                ..Ignored::default()
            },
            degraded: vec!["router_budget"],
            ..TraceStats::default()
        };
        stats.not_sent.insert("router_budget", 3);
        metrics.count_stats(Protocol::Tcp, &stats);
        let text = metrics.render(Format::OpenMetrics);
        for line in [
            "traceroute_agent_replies_rejected_total{protocol=\"TCP\",reason=\"wrong_secret\"} 2",
            "traceroute_agent_replies_rejected_total{protocol=\"TCP\",reason=\"duplicate\"} 1",
            "traceroute_agent_probes_not_sent_total{protocol=\"TCP\",reason=\"router_budget\"} 3",
            "traceroute_agent_degraded_traces_total{protocol=\"TCP\",reason=\"router_budget\"} 1",
            "traceroute_agent_reprobes_total{protocol=\"TCP\"} 1",
            "traceroute_agent_shared_hops_total{protocol=\"TCP\"} 2",
            "traceroute_agent_probes_sent_total{protocol=\"TCP\"} 7",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    fn path(e2e: &[Option<Duration>]) -> NetworkPath {
        use crate::path::{E2eProbe, PathDestination, PathSource};
        let source = PathSource {
            hostname: "h".into(),
            via: None,
            public_ip: None,
        };
        let destination = PathDestination {
            hostname: "198.18.9.1".into(),
            port: 33434,
        };
        let e2e = E2eProbe::from_samples(e2e);
        NetworkPath::new(Protocol::Udp, source, destination, Vec::new(), e2e)
    }

    #[test]
    fn target_gauges_follow_the_latest_run_and_drop_what_it_did_not_measure() {
        let metrics = Metrics::new(Weak::new(), Weak::new());
        let ms = Duration::from_millis;
        let first = path(&[Some(ms(10)), None, Some(ms(20)), None]);
        metrics.target_run("198.18.9.1", &first, 1, false);
        let text = metrics.render(Format::Classic);
        let labels = "{target=\"198.18.9.1\",protocol=\"UDP\"}";
        for line in [
            format!("traceroute_agent_target_e2e_rtt_seconds{labels} 0.015"),
            format!("traceroute_agent_target_e2e_loss_ratio{labels} 0.5"),
            format!("traceroute_agent_target_destination_reached{labels} 0"),
            format!("traceroute_agent_target_hops{labels} 0.0"),
            format!("traceroute_agent_target_distinct_paths{labels} 1"),
        ] {
            assert!(text.contains(&line), "missing {line:?} in\n{text}");
        }
        let stamp = format!(
            "traceroute_agent_target_last_run_timestamp_seconds{labels} {}",
            first.timestamp as f64 / 1000.0
        );
        assert!(text.contains(&stamp), "{text}");
        // A run whose e2e probes all went unanswered has a loss but no RTT.
        metrics.target_run("198.18.9.1", &path(&[None, None]), 1, true);
        let text = metrics.render(Format::Classic);
        assert!(
            !text.contains("traceroute_agent_target_e2e_rtt_seconds{"),
            "{text}"
        );
        assert!(text.contains(&format!(
            "traceroute_agent_target_e2e_loss_ratio{labels} 1.0"
        )));
        assert!(text.contains(&format!("traceroute_agent_path_changes_total{labels} 1")));
        assert!(text.contains("# TYPE traceroute_agent_path_changes_total counter"));
        assert!(text.contains("traceroute_agent_build_info{version=\""));
        assert!(text.contains("# TYPE process_cpu_seconds_total counter"));
        assert!(!text.contains("# EOF"));
        assert!(metrics.render(Format::OpenMetrics).ends_with("# EOF\n"));
    }
}
