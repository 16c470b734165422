//! From a finished prober to the record: runs of hops, probing counts, the
//! source's interface, reverse DNS.

use std::net::SocketAddr;
use std::time::Duration;

use super::prober::{Prober, Status};
use super::{Ignored, Job, ProbeKey, Tracer};
use crate::capture::CaptureMethod;
use crate::clock::MonotonicTime;
use crate::path::{
    AttemptOutcome, CaptureInfo, E2eProbe, HopObservation, Interface as PathInterface, NetworkPath,
    NoAnswer, PathDestination, PathSource, Probing, Run, SharedHop, TimestampSource, Via,
};
use crate::probe::{Protocol, Ttl};
use crate::route::Route;

impl Tracer {
    /// A record of `runs` for `job`: source, destination, capture.
    pub(in crate::trace) fn record(
        &self,
        job: &Job<'_>,
        runs: Vec<Run>,
        e2e_probe: E2eProbe,
    ) -> NetworkPath {
        let protocol = job.request.protocol;
        let mut path = NetworkPath::new(
            protocol,
            PathSource {
                hostname: self.hostname.clone(),
                via: Some(via_of(job.route)),
                public_ip: None,
            },
            PathDestination {
                hostname: job.request.host.clone(),
                port: if protocol == Protocol::Icmp {
                    0
                } else {
                    job.port
                },
            },
            runs,
            e2e_probe,
        );
        path.test_run_id = job.test_run_id;
        path.capture = Some(CaptureInfo {
            method: self.capture.method(),
        });
        path
    }

    pub(in crate::trace) async fn fill_reverse_dns(&self, runs: &mut [Run]) {
        for run in runs {
            if let Some(name) = self.rdns.lookup(run.destination.ip_address).await {
                run.destination.reverse_dns = vec![name];
            }
            for hop in &mut run.hops {
                if let Some(ip) = hop.ip_address
                    && let Some(name) = self.rdns.lookup(ip).await
                {
                    hop.reverse_dns = vec![name];
                }
            }
        }
    }
}

/// One run per attempt: per TTL up to where the path ended, what came back.
pub(in crate::trace) fn runs_of(
    prober: &Prober,
    source: TimestampSource,
    now: MonotonicTime,
) -> Vec<Run> {
    let flow = prober.flow();
    let src = SocketAddr::new(flow.source(), flow.source_port().map_or(0, |p| p.0));
    let dst = SocketAddr::new(
        flow.destination(),
        flow.destination_port().map_or(0, |p| p.0),
    );
    let plan = prober.plan();
    (0..plan.attempts)
        .map(|attempt| {
            let observations: Vec<HopObservation> = Ttl::range(plan.first_ttl, prober.last_ttl())
                .map(|ttl| HopObservation {
                    ttl,
                    attempts: vec![outcome(prober, ProbeKey { attempt, ttl }, source, now)],
                })
                .collect();
            Run::from_observations(src, dst, &observations)
        })
        .collect()
}

pub(in crate::trace) fn outcome(
    prober: &Prober,
    key: ProbeKey,
    source: TimestampSource,
    now: MonotonicTime,
) -> AttemptOutcome {
    let Some(probe) = prober.probes().get(&key) else {
        return AttemptOutcome::default();
    };
    match &probe.status {
        Status::Answered(answer) => AttemptOutcome {
            responder: Some(answer.from),
            rtt: answer.rtt,
            icmp_type: answer.icmp_type,
            icmp_code: answer.icmp_code,
            tcp_answer: answer.tcp_answer(),
            reply_ttl: Some(answer.reply_ttl),
            is_destination: answer.destination,
            timestamp_source: Some(match source {
                TimestampSource::Kernel => TimestampSource::of(CaptureMethod::Ebpf, answer.stamp),
                source => source,
            }),
            mpls_labels: answer.mpls_labels.clone(),
            interface_info: answer.interface_info.clone(),
            rewritten: answer.rewritten.clone(),
            ..AttemptOutcome::default()
        },
        Status::Shared(hop) => AttemptOutcome {
            responder: Some(hop.responder),
            rtt: hop.rtt,
            icmp_type: hop.icmp_type,
            icmp_code: hop.icmp_code,
            reply_ttl: Some(hop.reply_ttl),
            timestamp_source: Some(source),
            shared: Some(SharedHop {
                test_run_id: hop.by.test_run_id,
                run_id: hop.by.run_id,
                protocol: hop.by.protocol,
                destination: hop.by.destination,
                flow_id: hop.by.flow_id,
                age: (now.since(hop.observed_at).unwrap_or_default().as_secs_f64() * 1e6).round()
                    / 1e3,
            }),
            ..AttemptOutcome::default()
        },
        Status::Unanswered { reason, waited } => AttemptOutcome::unanswered(*reason, *waited),
        // The prober settles every probe it reports; anything else was cut off.
        _ => AttemptOutcome::unanswered(NoAnswer::CutShort, None),
    }
}

pub(in crate::trace) fn probing_of(prober: &Prober) -> Probing {
    let stats = prober.stats();
    Probing {
        probes_sent: stats.probes_sent,
        reprobes: stats.reprobes,
        probes_not_sent: stats.not_sent.values().sum(),
        shared_hops: stats.shared_hops,
        degraded: prober.degraded().into_iter().map(str::to_string).collect(),
        admission_wait: (!stats.admission_wait.is_zero())
            .then(|| (stats.admission_wait.as_secs_f64() * 1e6).round() / 1e3),
    }
}

pub(in crate::trace) fn via_of(route: &Route) -> Via {
    Via {
        interface: PathInterface {
            name: route.interface.name.clone(),
            hardware_addr: route
                .interface
                .mac
                .map(|m| m.to_string())
                .unwrap_or_default(),
            mtu: Some(route.interface.mtu),
        },
        gateway: route.gateway,
    }
}

pub(in crate::trace) fn log_outcome(host: &str, prober: &Prober) {
    let stats = prober.stats();
    let ignored = stats.ignored;
    if ignored != Ignored::default() {
        tracing::debug!(host, ignored = ?ignored.by_reason(), "packets ignored during trace");
    }
    let degraded = prober.degraded();
    if !degraded.is_empty() {
        tracing::debug!(
            host,
            ?degraded,
            not_sent = stats.not_sent.values().sum::<u64>(),
            "trace degraded: some hops have no answer for reasons other than silence"
        );
    }
}

pub(in crate::trace) fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The RTT samples of an end-to-end plan: one per probe at its TTL that got
/// its full chance (an answer from the destination, or silence for the whole
/// wait). A probe never sent, cut short or rate limited is no sample of loss;
/// a router answering at that TTL means the destination did not.
pub(in crate::trace) fn e2e_samples(prober: &Prober) -> Vec<Option<Duration>> {
    let ttl = prober.plan().max_ttl;
    (0..prober.plan().attempts)
        .filter_map(
            |attempt| match &prober.probes().get(&ProbeKey { attempt, ttl })?.status {
                Status::Answered(answer) if answer.destination => Some(answer.rtt),
                Status::Answered(_) => Some(None),
                Status::Unanswered {
                    reason: NoAnswer::Timeout,
                    ..
                } => Some(None),
                _ => None,
            },
        )
        .collect()
}
