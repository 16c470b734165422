//! ECMP with L4 hashing: flows spread over both branches, each flow is stable.

use std::collections::BTreeSet;
use std::net::IpAddr;

use traceroute_lab::{Family, Lab, named};

use crate::common::traceroute;

/// Address answering TTL 2 for the UDP flow with source port `sport`.
fn second_hop(lab: &Lab, family: Family, sport: u16) -> Option<IpAddr> {
    let dst = lab.primary("dst", family).unwrap().to_string();
    let flag = if family == Family::V4 { "-4" } else { "-6" };
    let sport = format!("--sport={sport}");
    let hops = traceroute(
        lab,
        "src",
        &[
            flag, "-n", "-U", "-q1", "-w1", "-f", "2", "-m", "2", &sport, &dst,
        ],
    );
    assert_eq!(hops.len(), 1, "only TTL 2 was probed");
    hops[0]
}

#[test]
fn flows_take_both_branches_and_each_flow_is_stable() {
    let lab = Lab::up(&named::ecmp()).unwrap();
    for family in [Family::V4, Family::V6] {
        let alternatives: BTreeSet<IpAddr> = lab.path("src", "dst", family).unwrap()[1]
            .iter()
            .map(|h| h.addr)
            .collect();
        assert_eq!(alternatives.len(), 2, "r2a and r2b");
        let seen: BTreeSet<IpAddr> = (0..24)
            .filter_map(|i| second_hop(&lab, family, 40000 + i))
            .collect();
        assert_eq!(
            seen, alternatives,
            "{family}: 24 flows should cover both branches"
        );
        for sport in [40000, 40001] {
            let first = second_hop(&lab, family, sport);
            assert!(first.is_some());
            for _ in 0..4 {
                assert_eq!(
                    second_hop(&lab, family, sport),
                    first,
                    "{family}: flow {sport} must stay on one branch"
                );
            }
        }
    }
}

#[test]
fn full_path_matches_one_of_the_alternatives() {
    let lab = Lab::up(&named::ecmp()).unwrap();
    let path = lab.path("src", "dst", Family::V4).unwrap();
    let dst = lab.primary("dst", Family::V4).unwrap();
    let hops = traceroute(
        &lab,
        "src",
        &["-n", "-U", "-q1", "-w1", "--sport=41000", &dst.to_string()],
    );
    assert_eq!(hops.len(), path.len() + 1);
    for (hop, alternatives) in hops.iter().zip(&path) {
        let addr = hop.expect("no silent routers here");
        assert!(
            alternatives.iter().any(|h| h.addr == addr),
            "{addr} not in {alternatives:?}"
        );
    }
    assert_eq!(hops.last(), Some(&Some(dst)));
    assert!(
        lab.expected_hops("src", "dst", Family::V4).is_err(),
        "multipath has no single expected path"
    );
}
