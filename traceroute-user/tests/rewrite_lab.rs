//! What the quotes in ICMP errors show about the path. In the `rewrite` lab
//! r1 re-marks DSCP and r2 is a stateless NAT (no quote translation): each
//! must be reported at the first hop past it, for UDP, TCP and ICMP, with
//! every hop still correct. In the `nat` lab the NAT masquerades with
//! connection tracking and fully-random ports: it translates the quotes
//! back (RFC 5508), so the trace through it must be correct and report no
//! rewrite it cannot see. Needs root.

mod common;

use common::agent::{expected, hops, trace};
use serde_json::{Value, json};
use traceroute_lab::{Family, Lab};

const PROTOCOLS: [(&str, &[&str]); 3] = [
    ("UDP", &["-U"]),
    ("TCP", &["-T", "-p", "80"]),
    ("ICMP", &["-I"]),
];

fn rewritten(record: &Value) -> Vec<Value> {
    record["traceroute"]["runs"][0]["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.get("rewritten").cloned().unwrap_or(Value::Null))
        .collect()
}

#[test]
fn dscp_re_marking_and_a_stateless_nat_show_at_the_first_hop_past_them() {
    let lab = Lab::up(&traceroute_lab::named::rewrite()).unwrap();
    let nat_address = lab.ipv4("r2", "r3").unwrap().to_string();
    for family in [Family::V4, Family::V6] {
        let dst = lab.primary("dst", family).unwrap();
        let want = expected(&lab, "src", "dst", dst);
        assert_eq!(want.len(), 4);
        for (name, flags) in PROTOCOLS {
            let mut args = vec![dst.to_string(), "-q".into(), "1".into()];
            args.extend(flags.iter().map(ToString::to_string));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let record = trace(&lab, "src", &args).record;
            let got: Vec<String> = hops(&record, 0).into_iter().map(|h| h.1).collect();
            assert_eq!(got, want, "{name} {dst}: hops");
            let marked = json!({"dscp": 8});
            // Past the NAT (IPv4 only: it rewrites IPv4 sources).
            let past_nat = if family == Family::V4 {
                json!({"dscp": 8, "source_address": nat_address})
            } else {
                marked.clone()
            };
            // The destination quotes the probe only in a port unreachable
            // (UDP); SYN-ACKs and echo replies quote nothing.
            let at_dst = if name == "UDP" {
                past_nat.clone()
            } else {
                Value::Null
            };
            assert_eq!(
                rewritten(&record),
                vec![Value::Null, marked, past_nat, at_dst],
                "{name} {dst}: {record:#}"
            );
        }
    }
}

#[test]
fn a_masquerade_with_fully_random_ports_is_traced_through_and_not_invented() {
    let lab = Lab::up(&traceroute_lab::named::nat()).unwrap();
    for family in [Family::V4, Family::V6] {
        let dst = lab.primary("dst", family).unwrap();
        let want = expected(&lab, "src", "dst", dst);
        for (name, flags) in PROTOCOLS {
            let mut args = vec![dst.to_string(), "-q".into(), "2".into()];
            args.extend(flags.iter().map(ToString::to_string));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let record = trace(&lab, "src", &args).record;
            for run in 0..2 {
                let got: Vec<String> = hops(&record, run).into_iter().map(|h| h.1).collect();
                assert_eq!(got, want, "{name} {dst} run {run}");
            }
            assert!(
                rewritten(&record).iter().all(Value::is_null),
                "{name} {dst}: {record:#}"
            );
        }
    }
}
