//! From what the tracer observed to the record: hops, runs, hop counts and
//! end-to-end statistics.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use super::model::{InterfaceInfo, MplsLabel};
use super::model::{
    DistanceUncertain, E2eProbe, Hop, HopCount, NetworkPath, NoAnswer, PathDestination, PathSource,
    Rewritten, RttStats, Run, RunDestination, RunSource, SharedHop, SuspectedMiddlebox, TcpAnswer,
    TimestampSource, TooBig, Traceroute,
};
use crate::probe::{Protocol, Ttl};

/// What one probe (one attempt at one TTL) brought back.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AttemptOutcome {
    /// Who answered; `None` when nothing came back in time.
    pub responder: Option<IpAddr>,
    /// Round-trip time; `None` when unanswered (or answered without usable timestamps).
    pub rtt: Option<Duration>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    /// How a TCP destination answered.
    pub tcp_answer: Option<TcpAnswer>,
    /// TTL / hop limit of the reply as it reached us.
    pub reply_ttl: Option<u8>,
    /// The answer came from the destination itself (SYN-ACK/RST, echo reply,
    /// port unreachable...): the trace ends at this TTL.
    pub is_destination: bool,
    pub timestamp_source: Option<TimestampSource>,
    pub mpls_labels: Vec<MplsLabel>,
    pub interface_info: Vec<InterfaceInfo>,
    /// Unanswered: why.
    pub no_answer: Option<NoAnswer>,
    /// Unanswered after being sent: how long it waited.
    pub waited: Option<Duration>,
    /// Answered for another trace (see [`SharedHop`]).
    pub shared: Option<SharedHop>,
    /// What the reply's quote shows changed (see [`Rewritten`]).
    pub rewritten: Option<Rewritten>,
}

impl AttemptOutcome {
    /// Sent, waited its full time, no answer.
    pub fn silent() -> Self {
        Self {
            no_answer: Some(NoAnswer::Timeout),
            ..Self::default()
        }
    }

    /// No answer, for `reason`.
    pub fn unanswered(reason: NoAnswer, waited: Option<Duration>) -> Self {
        Self {
            no_answer: Some(reason),
            waited,
            ..Self::default()
        }
    }

    /// An answer from `responder` after `rtt`; fill in the rest as known.
    pub fn answered(responder: IpAddr, rtt: Duration) -> Self {
        Self {
            responder: Some(responder),
            rtt: Some(rtt),
            ..Self::default()
        }
    }
}

/// Every attempt at one TTL of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct HopObservation {
    pub ttl: Ttl,
    pub attempts: Vec<AttemptOutcome>,
}

impl HopObservation {
    fn reached_destination(&self) -> bool {
        self.attempts.iter().any(|a| a.is_destination)
    }
}

/// Milliseconds, rounded to the microsecond: finer digits are noise.
fn millis(d: Duration) -> f64 {
    round_us(d.as_secs_f64() * 1000.0)
}

fn round_us(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

impl Hop {
    /// Summarises the attempts at one TTL.
    ///
    /// `ip_address` is the responder that answered most attempts (the first
    /// one on a tie); the others go to `other_ip_addresses`. `rtt` and the
    /// reply details come from that responder's fastest answer.
    pub fn from_observation(obs: &HopObservation) -> Hop {
        let mut responders: Vec<(IpAddr, usize)> = Vec::new();
        for ip in obs.attempts.iter().filter_map(|a| a.responder) {
            match responders.iter_mut().find(|(seen, _)| *seen == ip) {
                Some((_, count)) => *count += 1,
                None => responders.push((ip, 1)),
            }
        }
        let most = responders.iter().map(|(_, n)| *n).max().unwrap_or(0);
        let chosen = responders
            .iter()
            .find(|(_, n)| *n == most)
            .map(|(ip, _)| *ip);
        let from_chosen = obs
            .attempts
            .iter()
            .filter(|a| a.responder.is_some() && a.responder == chosen);
        // The fastest answer, or any answer when none has an RTT.
        let best = from_chosen.clone().min_by(|a, b| match (a.rtt, b.rtt) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        });
        // Without an answer, the most telling reason: a full wait first.
        let unanswered = obs
            .attempts
            .iter()
            .filter(|_| chosen.is_none())
            .filter_map(|a| a.no_answer.map(|r| (r, a.waited)))
            .min_by_key(|(r, _)| *r != NoAnswer::Timeout);
        Hop {
            ttl: obs.ttl,
            ip_address: chosen,
            rtt: best.and_then(|a| a.rtt).map(millis),
            reachable: chosen.is_some(),
            reverse_dns: Vec::new(),
            rtts: obs.attempts.iter().map(|a| a.rtt.map(millis)).collect(),
            icmp_type: best.and_then(|a| a.icmp_type),
            icmp_code: best.and_then(|a| a.icmp_code),
            tcp_answer: best.and_then(|a| a.tcp_answer),
            reply_ttl: best.and_then(|a| a.reply_ttl),
            timestamp_source: best.and_then(|a| a.timestamp_source),
            other_ip_addresses: responders
                .iter()
                .map(|(ip, _)| *ip)
                .filter(|ip| Some(*ip) != chosen)
                .collect(),
            mpls_labels: best.map(|a| a.mpls_labels.clone()).unwrap_or_default(),
            interface_info: best
                .map(|a| a.interface_info.clone())
                .unwrap_or_default(),
            no_answer: unanswered.map(|(r, _)| r.kind()),
            not_sent_reason: unanswered.and_then(|(r, _)| r.not_sent_reason()),
            waited: unanswered.and_then(|(_, w)| w).map(millis),
            not_waited: obs
                .attempts
                .iter()
                .filter(|a| a.rtt.is_none() && a.responder.is_none())
                .filter(|a| {
                    matches!(
                        a.no_answer,
                        Some(NoAnswer::NotSent(_) | NoAnswer::CutShort | NoAnswer::TooBig { .. })
                    )
                })
                .count()
                .try_into()
                .unwrap_or(u8::MAX),
            shared: best.and_then(|a| a.shared.clone()),
            rewritten: best.and_then(|a| a.rewritten.clone()),
            too_big: unanswered.and_then(|(r, _)| match r {
                NoAnswer::TooBig { from, mtu } => Some(TooBig { from, mtu }),
                _ => None,
            }),
            path_mtu: None,
            next_hop_mtu: None,
        }
    }
}

impl Run {
    /// A run with a fresh `run_id` from the observations of one flow.
    ///
    /// Hops are ordered by TTL and end at the first TTL the destination
    /// answered (later TTLs would only repeat it). For ICMP pass port 0.
    /// `reverse_dns` is left empty for the caller to fill.
    pub fn from_observations(
        source: SocketAddr,
        destination: SocketAddr,
        observations: &[HopObservation],
    ) -> Run {
        let mut ordered: Vec<&HopObservation> = observations.iter().collect();
        ordered.sort_by_key(|o| o.ttl);
        let mut hops = Vec::with_capacity(ordered.len());
        let mut destination_reached = false;
        for obs in ordered {
            hops.push(Hop::from_observation(obs));
            if obs.reached_destination() {
                destination_reached = true;
                break;
            }
        }
        let suspected_middlebox = if destination_reached {
            SuspectedMiddlebox::of(&hops)
        } else {
            None
        };
        Run {
            run_id: Uuid::new_v4(),
            source: RunSource {
                ip_address: source.ip(),
                port: source.port(),
            },
            destination: RunDestination {
                ip_address: destination.ip(),
                port: destination.port(),
                reverse_dns: Vec::new(),
            },
            hops,
            destination_reached,
            flow_id: None,
            fingerprint: None,
            suspected_middlebox,
            distance_uncertain: None,
        }
    }

    /// The Go client's hop count: hops up to the last one that answered
    /// (the destination, when reached), or every hop when none answered.
    pub fn hop_count(&self) -> u32 {
        let answered = self.hops.iter().rposition(|h| h.ip_address.is_some());
        let count = answered.map_or(self.hops.len(), |i| i + 1);
        u32::try_from(count).unwrap_or(u32::MAX)
    }
}

/// Initial TTLs senders use: 64 (Linux, BSD, macOS), 128 (Windows), 255
/// (much network gear).
const INITIAL_TTLS: [u8; 3] = [64, 128, 255];

/// Hops to the sender of a packet that arrived with `reply_ttl`: the
/// smallest usual initial TTL not below it, less it, plus one.
fn hops_from_reply_ttl(reply_ttl: u8) -> Option<u8> {
    let initial = INITIAL_TTLS.into_iter().find(|i| *i >= reply_ttl)?;
    Some(initial - reply_ttl + 1)
}

impl DistanceUncertain {
    /// Marks the runs of one flow (they share one path, so what any of
    /// them saw at a TTL counts for all) whose destination might be nearer
    /// than the TTL it answered at: TTLs between the last answering router
    /// and that one got no answer at all, and the answer's reply TTL puts
    /// the destination at or before one of them.
    pub fn mark(runs: &mut [Run]) {
        let Some(last) = runs
            .iter()
            .filter(|r| r.destination_reached)
            .filter_map(|r| r.hops.last())
            .min_by_key(|h| h.ttl)
            .cloned()
        else {
            return;
        };
        let Some(estimate) = last.reply_ttl.and_then(hops_from_reply_ttl) else {
            return;
        };
        let k = last.ttl;
        let destination = last.ip_address;
        let answered = |ttl: Ttl| {
            runs.iter().any(|r| {
                r.hops
                    .iter()
                    .any(|h| h.ttl == ttl && h.ip_address.is_some())
            })
        };
        let router_at = |ttl: Ttl| {
            runs.iter().any(|r| {
                r.hops
                    .iter()
                    .any(|h| h.ttl == ttl && h.ip_address.is_some() && h.ip_address != destination)
            })
        };
        let first = runs
            .iter()
            .filter_map(|r| r.hops.first())
            .map(|h| h.ttl)
            .min()
            .unwrap_or(k);
        let last_router = Ttl::range(first, k)
            .filter(|t| *t < k && router_at(*t))
            .last();
        let from = last_router
            .and_then(|t| Ttl::new(t.get() + 1))
            .unwrap_or(first);
        let silent: Vec<Ttl> = Ttl::range(from, k)
            .filter(|t| *t < k && !answered(*t))
            .collect();
        if estimate >= k.get() || !silent.iter().any(|t| t.get() >= estimate) {
            return;
        }
        let mark = DistanceUncertain {
            answered_at: k,
            silent,
            estimate,
        };
        for run in runs {
            run.distance_uncertain = Some(mark.clone());
            // The same reply TTL, read as what it most likely is here.
            run.suspected_middlebox = None;
        }
    }
}

impl SuspectedMiddlebox {
    /// Checks the last hop of a run that reached its destination: a
    /// destination `n` hops away answers with an initial TTL less `n - 1`.
    fn of(hops: &[Hop]) -> Option<SuspectedMiddlebox> {
        let last = hops.last()?;
        let reply_ttl = last.reply_ttl?;
        let distance = hops_from_reply_ttl(reply_ttl)?;
        (distance < last.ttl.get()).then(|| SuspectedMiddlebox {
            ttl: last.ttl,
            reply_ttl,
            distance,
            likely: hops
                .iter()
                .find(|h| h.ttl.get() == distance)
                .and_then(|h| h.ip_address),
        })
    }
}

impl HopCount {
    /// avg/min/max of [`Run::hop_count`] over the runs (zeros without runs;
    /// like the Go client, a run of no hops does not lower `min`). Runs
    /// whose destination may be nearer than they show
    /// ([`DistanceUncertain`]) do not count: a hop count that is wrong is
    /// worse than one that is missing.
    pub fn from_runs(runs: &[Run]) -> HopCount {
        let counts: Vec<u32> = runs
            .iter()
            .filter(|r| r.distance_uncertain.is_none())
            .map(Run::hop_count)
            .collect();
        if counts.is_empty() {
            return HopCount {
                avg: 0.0,
                min: 0,
                max: 0,
            };
        }
        let sum: f64 = counts.iter().map(|c| f64::from(*c)).sum();
        HopCount {
            avg: round_us(sum / counts.len() as f64),
            min: counts.iter().copied().filter(|c| *c > 0).min().unwrap_or(0),
            max: counts.iter().copied().max().unwrap_or(0),
        }
    }
}

impl E2eProbe {
    /// Statistics over end-to-end probes, one sample per probe sent and
    /// given its full wait (`None` when lost). As the Go client has it,
    /// `rtts` holds one entry per sample (0 for a lost one), the loss is a
    /// fraction, and RTT statistics and jitter (mean absolute difference of
    /// consecutive RTTs) are over the answered ones. No samples gives all
    /// zeros (e2e probing disabled).
    pub fn from_samples(samples: &[Option<Duration>]) -> E2eProbe {
        // An answer is never 0 ms here: 0 means lost to the Go client.
        let answered_ms = |d: Duration| millis(d).max(0.001);
        let answered: Vec<f64> = samples.iter().flatten().map(|d| answered_ms(*d)).collect();
        let rtts: Vec<f64> = samples.iter().map(|s| s.map_or(0.0, answered_ms)).collect();
        let sent = u32::try_from(samples.len()).unwrap_or(u32::MAX);
        let received = u32::try_from(answered.len()).unwrap_or(u32::MAX);
        let loss = if sent == 0 {
            0.0
        } else {
            f64::from(sent - received) / f64::from(sent)
        };
        let jitter = if answered.len() < 2 {
            0.0
        } else {
            let diffs: f64 = answered.windows(2).map(|w| (w[1] - w[0]).abs()).sum();
            diffs / (answered.len() - 1) as f64
        };
        let rtt = if answered.is_empty() {
            RttStats::default()
        } else {
            RttStats {
                avg: round_us(answered.iter().sum::<f64>() / answered.len() as f64),
                min: answered.iter().copied().fold(f64::INFINITY, f64::min),
                max: answered.iter().copied().fold(0.0, f64::max),
            }
        };
        E2eProbe {
            rtts,
            packets_sent: sent,
            packets_received: received,
            packet_loss_percentage: loss,
            jitter: round_us(jitter),
            rtt,
        }
    }
}

impl NetworkPath {
    /// A record stamped now, with a fresh `test_run_id`, this agent's version,
    /// namespace `default`, no tags, and `hop_count` computed from `runs`.
    pub fn new(
        protocol: Protocol,
        source: PathSource,
        destination: PathDestination,
        runs: Vec<Run>,
        e2e_probe: E2eProbe,
    ) -> NetworkPath {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        NetworkPath {
            timestamp,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            namespace: "default".to_string(),
            test_run_id: Uuid::new_v4(),
            protocol,
            source,
            destination,
            traceroute: Traceroute {
                hop_count: HopCount::from_runs(&runs),
                runs,
            },
            e2e_probe,
            tags: Vec::new(),
            capture: None,
            tcp_method: None,
            probing: None,
            multipath: None,
            path_fingerprint: None,
            path_change: None,
            incomplete: false,
        }
    }
}
