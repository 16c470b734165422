//! Path MTU per hop, the bookkeeping between rounds. Probes padded to a size
//! go out with DF (IPv6 never fragments in flight); a router whose next link
//! is smaller answers "fragmentation needed" / "packet too big" with that
//! link's MTU. The tracer starts at the interface MTU and, while some TTL
//! did not fit, probes again from the first such TTL at the MTU reported
//! (or the next RFC 1191 plateau when none was given). The tracer sends;
//! this module reads the rounds' runs and merges them.

pub(in crate::trace) mod run;

use std::net::IpAddr;

use crate::path::Run;

/// Most rounds: one per bottleneck, and no path has this many.
pub const MAX_ROUNDS: usize = 8;

/// RFC 1191 MTU plateaus, for routers that report no MTU (largest first).
const PLATEAUS: [u32; 10] = [32000, 17914, 8166, 4352, 2002, 1492, 1280, 1006, 508, 296];

/// A probe that did not fit: its TTL, who said so and the MTU given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Report {
    pub ttl: u8,
    pub from: IpAddr,
    pub mtu: Option<u32>,
}

/// Every "too big" answer in `runs`, lowest TTL first.
pub fn reports(runs: &[Run]) -> Vec<Report> {
    let mut out: Vec<Report> = runs
        .iter()
        .flat_map(|run| &run.hops)
        .filter_map(|hop| {
            hop.too_big.map(|t| Report {
                ttl: hop.ttl.get(),
                from: t.from,
                mtu: t.mtu,
            })
        })
        .collect();
    out.sort_by_key(|r| r.ttl);
    out
}

/// The next probe size after `size` did not fit: the smallest MTU reported
/// below `size`, else the next plateau below it; `None` below `min` (the
/// smallest probe, or IPv6's 1280).
pub fn next_size(size: u32, reports: &[Report], min: u32) -> Option<u32> {
    let reported = reports
        .iter()
        .filter_map(|r| r.mtu)
        .filter(|m| *m < size)
        .min();
    let next = reported.or_else(|| PLATEAUS.into_iter().find(|p| *p < size))?;
    (next >= min).then_some(next)
}

/// Marks each answered hop of `runs` that has no size yet as reached by
/// probes of `size` bytes.
pub fn stamp(runs: &mut [Run], size: u32) {
    for hop in runs.iter_mut().flat_map(|run| &mut run.hops) {
        if hop.ip_address.is_some() && hop.path_mtu.is_none() {
            hop.path_mtu = Some(size);
        }
    }
}

/// Replaces the hops from TTL `from_ttl` on of each run in `merged` with the
/// hops of the same attempt in `round` (probed from `from_ttl`); the
/// round decides whether the destination was reached.
pub fn merge(merged: &mut [Run], round: Vec<Run>, from_ttl: u8) {
    for (run, again) in merged.iter_mut().zip(round) {
        run.hops.retain(|h| h.ttl.get() < from_ttl);
        run.hops.extend(again.hops);
        run.destination_reached = again.destination_reached;
        run.suspected_middlebox = again.suspected_middlebox;
    }
}

/// Gives the routers that sent `reports` their next link's MTU, at their
/// own hop (before the TTL they answered for).
pub fn mark_reporters(runs: &mut [Run], reports: &[Report]) {
    for report in reports {
        let Some(mtu) = report.mtu else { continue };
        for hop in runs.iter_mut().flat_map(|run| &mut run.hops) {
            if hop.ip_address == Some(report.from) && hop.ttl.get() < report.ttl {
                hop.next_hop_mtu = Some(hop.next_hop_mtu.map_or(mtu, |m| m.min(mtu)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;
    use crate::path::{AttemptOutcome, HopObservation, NoAnswer};
    use crate::probe::Ttl;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([198, 18, last, 2])
    }

    /// A run: answered routers `ip(1)..` for `answered` TTLs, then probes
    /// too big for `ip(bottleneck)`'s next link.
    fn run(answered: u8, too_big_until: u8, bottleneck: u8, mtu: Option<u32>) -> Run {
        let obs: Vec<HopObservation> = (1..=too_big_until)
            .map(|t| HopObservation {
                ttl: Ttl::new(t).unwrap(),
                attempts: vec![if t <= answered {
                    AttemptOutcome::answered(ip(t), Duration::from_micros(100))
                } else {
                    AttemptOutcome::unanswered(
                        NoAnswer::TooBig {
                            from: ip(bottleneck),
                            mtu,
                        },
                        Some(Duration::from_micros(90)),
                    )
                }],
            })
            .collect();
        let s: SocketAddr = "198.18.0.5:40000".parse().unwrap();
        let d: SocketAddr = "198.18.9.9:33434".parse().unwrap();
        Run::from_observations(s, d, &obs)
    }

    #[test]
    fn a_bottleneck_is_found_merged_and_marked() {
        // Round 1 at 1500: hops 1 and 2 answer; from TTL 3 on, hop 2's
        // next link (1400) is too small.
        let mut merged = vec![run(2, 5, 2, Some(1400))];
        stamp(&mut merged, 1500);
        let found = reports(&merged);
        assert_eq!(
            found[0],
            Report {
                ttl: 3,
                from: ip(2),
                mtu: Some(1400)
            }
        );
        assert_eq!(next_size(1500, &found, 68), Some(1400));
        mark_reporters(&mut merged, &found);
        // Round 2 at 1400 from TTL 3: everything answers.
        let mut round = vec![run(5, 5, 0, None)];
        round[0].hops.retain(|h| h.ttl.get() >= 3);
        stamp(&mut round, 1400);
        merge(&mut merged, round, 3);
        let hops = &merged[0].hops;
        let sizes: Vec<Option<u32>> = hops.iter().map(|h| h.path_mtu).collect();
        assert_eq!(
            sizes,
            [Some(1500), Some(1500), Some(1400), Some(1400), Some(1400)]
        );
        let marked: Vec<Option<u32>> = hops.iter().map(|h| h.next_hop_mtu).collect();
        assert_eq!(marked, [None, Some(1400), None, None, None]);
        assert!(reports(&merged).is_empty());
    }

    #[test]
    fn without_a_reported_mtu_the_next_plateau_is_tried_down_to_the_minimum() {
        let silent_mtu = [Report {
            ttl: 3,
            from: ip(2),
            mtu: None,
        }];
        assert_eq!(next_size(1500, &silent_mtu, 68), Some(1492));
        assert_eq!(next_size(1492, &silent_mtu, 68), Some(1280));
        assert_eq!(next_size(1280, &silent_mtu, 1280), None, "IPv6 minimum");
        // A report no smaller than the size that failed is no help.
        let bogus = [Report {
            ttl: 3,
            from: ip(2),
            mtu: Some(9000),
        }];
        assert_eq!(next_size(1500, &bogus, 68), Some(1492));
    }
}
