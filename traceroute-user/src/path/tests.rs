use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::{Value, json};

use super::model::{CaptureMethod, HopCount, RttStats};
use super::schema::validate;
use super::*;
use crate::path::MplsLabel;
use crate::probe::{Protocol, Ttl};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ttl(v: u8) -> Ttl {
    Ttl::new(v).unwrap()
}

fn ms(v: f64) -> Duration {
    Duration::from_secs_f64(v / 1000.0)
}

fn router(last: u8, rtt_ms: f64) -> AttemptOutcome {
    AttemptOutcome {
        icmp_type: Some(11),
        icmp_code: Some(0),
        reply_ttl: Some(255 - last),
        timestamp_source: Some(TimestampSource::Kernel),
        ..AttemptOutcome::answered(ip(&format!("198.18.{last}.1")), ms(rtt_ms))
    }
}

fn destination(rtt_ms: f64) -> AttemptOutcome {
    AttemptOutcome {
        is_destination: true,
        reply_ttl: Some(61),
        timestamp_source: Some(TimestampSource::Kernel),
        ..AttemptOutcome::answered(ip("198.19.0.9"), ms(rtt_ms))
    }
}

fn observations() -> Vec<HopObservation> {
    vec![
        HopObservation {
            ttl: ttl(1),
            attempts: vec![router(1, 0.42), router(1, 0.38), router(1, 0.51)],
        },
        HopObservation {
            ttl: ttl(2),
            attempts: vec![AttemptOutcome::silent(); 3],
        },
        HopObservation {
            ttl: ttl(3),
            attempts: vec![
                destination(1.5),
                AttemptOutcome::silent(),
                destination(1.25),
            ],
        },
        // Beyond the destination: dropped.
        HopObservation {
            ttl: ttl(4),
            attempts: vec![destination(1.4)],
        },
    ]
}

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub(crate) fn record() -> NetworkPath {
    let run1 = Run::from_observations(
        sock("198.18.0.5:40001"),
        sock("198.19.0.9:443"),
        &observations(),
    );
    let mut obs2 = observations();
    obs2.truncate(2);
    let run2 = Run::from_observations(sock("198.18.0.5:40002"), sock("198.19.0.9:443"), &obs2);
    let mut path = NetworkPath::new(
        Protocol::Tcp,
        PathSource {
            hostname: "h1".into(),
            via: Some(Via {
                interface: Interface {
                    name: "eth0".into(),
                    hardware_addr: "0a:1b:2c:3d:4e:5f".into(),
                    mtu: Some(1500),
                },
                gateway: Some(ip("198.18.0.1")),
            }),
            public_ip: None,
        },
        PathDestination {
            hostname: "target.lab".into(),
            port: 443,
        },
        vec![run1, run2],
        E2eProbe::from_samples(&[Some(ms(12.7)), None, Some(ms(13.1)), Some(ms(12.5))]),
    );
    path.traceroute.runs[0].destination.reverse_dns = vec!["target.lab".into()];
    path.capture = Some(CaptureInfo {
        method: CaptureMethod::Ebpf,
    });
    path
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

fn set(names: &[&'static str]) -> BTreeSet<&'static str> {
    names.iter().copied().collect()
}

#[test]
fn built_record_validates() {
    let value = serde_json::to_value(record()).unwrap();
    assert_eq!(validate(&value), Ok(()));
}

#[test]
fn serialization_uses_the_contract_field_names() {
    let v = serde_json::to_value(record()).unwrap();
    assert_eq!(
        keys(&v),
        set(&[
            "timestamp",
            "agent_version",
            "namespace",
            "test_run_id",
            "protocol",
            "source",
            "destination",
            "traceroute",
            "e2e_probe",
            "tags",
            "capture"
        ])
    );
    assert!(
        v["timestamp"].as_u64().unwrap() > 1_700_000_000_000,
        "milliseconds"
    );
    assert_eq!(v["protocol"], "TCP");
    assert_eq!(v["namespace"], "default");
    assert_eq!(v["agent_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["tags"], json!([]));
    assert_eq!(v["source"]["hostname"], "h1");
    assert_eq!(v["source"]["via"]["interface"]["name"], "eth0");
    assert_eq!(
        v["source"]["via"]["interface"]["hardware_addr"],
        "0a:1b:2c:3d:4e:5f"
    );
    assert_eq!(v["source"]["via"]["gateway"], "198.18.0.1");
    assert_eq!(
        v["destination"],
        json!({"hostname": "target.lab", "port": 443})
    );
    assert_eq!(v["capture"], json!({"method": "ebpf"}));

    let tr = &v["traceroute"];
    assert_eq!(keys(tr), set(&["runs", "hop_count"]));
    assert_eq!(tr["hop_count"], json!({"avg": 2.0, "min": 1, "max": 3}));
    let run = &tr["runs"][0];
    assert_eq!(
        keys(run),
        set(&[
            "run_id",
            "source",
            "destination",
            "hops",
            "destination_reached"
        ])
    );
    assert_eq!(
        run["source"],
        json!({"ip_address": "198.18.0.5", "port": 40001})
    );
    assert_eq!(
        run["destination"],
        json!({"ip_address": "198.19.0.9", "port": 443, "reverse_dns": ["target.lab"]})
    );
    assert_eq!(run["destination_reached"], true);

    let hops = run["hops"].as_array().unwrap();
    assert_eq!(hops.len(), 3, "stops at the destination");
    assert_eq!(hops[0]["ttl"], 1);
    assert_eq!(hops[0]["ip_address"], "198.18.1.1");
    assert_eq!(hops[0]["rtt"], 0.38);
    assert_eq!(hops[0]["reachable"], true);
    assert_eq!(hops[0]["rtts"], json!([0.42, 0.38, 0.51]));
    assert_eq!(hops[0]["icmp_type"], 11);
    assert_eq!(hops[0]["icmp_code"], 0);
    assert_eq!(hops[0]["reply_ttl"], 254);
    assert_eq!(hops[0]["timestamp_source"], "kernel");
    // The silent hop, exactly as the contract shows it (plus per-attempt
    // nulls and why it has no answer).
    assert_eq!(
        hops[1],
        json!({"ttl": 2, "ip_address": "", "reachable": false, "rtts": [null, null, null],
               "no_answer": "timeout"})
    );
    assert_eq!(hops[2]["ip_address"], "198.19.0.9");
    assert_eq!(hops[2]["rtt"], 1.25);
    assert_eq!(hops[2]["rtts"], json!([1.5, null, 1.25]));
    assert!(hops[2].get("icmp_type").is_none());

    let e2e = &v["e2e_probe"];
    assert_eq!(
        keys(e2e),
        set(&[
            "rtts",
            "packets_sent",
            "packets_received",
            "packet_loss_percentage",
            "jitter",
            "rtt"
        ])
    );
    // One entry per probe, 0 for the lost one; loss as a fraction (Go client).
    assert_eq!(e2e["rtts"], json!([12.7, 0.0, 13.1, 12.5]));
    assert_eq!(e2e["packets_sent"], 4);
    assert_eq!(e2e["packets_received"], 3);
    assert_eq!(e2e["packet_loss_percentage"], 0.25);
    assert_eq!(e2e["jitter"], 0.5);
    assert_eq!(e2e["rtt"], json!({"avg": 12.767, "min": 12.5, "max": 13.1}));
}

#[test]
fn record_round_trips_through_json() {
    let path = record();
    let text = serde_json::to_string(&path).unwrap();
    assert!(!text.contains('\n'), "one line");
    let back: NetworkPath = serde_json::from_str(&text).unwrap();
    assert_eq!(back, path);
}

#[test]
fn the_design_example_parses_and_validates() {
    // The original contract's example record verbatim, with real UUIDs in place of the "uuid" placeholder.
    let v = json!({"timestamp": 1731000000000u64, "agent_version": "0.1.0", "namespace": "default",
     "test_run_id": "6f1c2f4e-8a51-4a63-9d43-8f0f1e2d3c4b", "protocol": "TCP",
     "source": {"hostname": "h1", "via": {"interface": {"name": "eth0", "hardware_addr": "0a:00:00:00:00:01"}}},
     "destination": {"hostname": "example.com", "port": 443},
     "traceroute": {"runs": [{"run_id": "0b7d8a7e-1a2b-4c3d-8e9f-0a1b2c3d4e5f",
         "source": {"ip_address": "198.18.0.5", "port": 40001},
         "destination": {"ip_address": "198.18.9.34", "port": 443, "reverse_dns": ["example.com"]},
         "hops": [{"ttl": 1, "ip_address": "198.18.0.1", "rtt": 0.42, "reachable": true},
                  {"ttl": 2, "ip_address": "", "reachable": false}]}],
       "hop_count": {"avg": 2, "min": 2, "max": 2}},
     "e2e_probe": {"rtts": [12.7], "packets_sent": 1, "packets_received": 1,
       "packet_loss_percentage": 0.0, "jitter": 0.0, "rtt": {"avg": 12.7, "min": 12.7, "max": 12.7}},
     "tags": []});
    assert_eq!(validate(&v), Ok(()));
    let path: NetworkPath = serde_json::from_value(v).unwrap();
    let hops = &path.traceroute.runs[0].hops;
    assert_eq!(hops[1].ip_address, None);
    assert_eq!(hops[0].rtt, Some(0.42));
    assert_eq!(path.traceroute.hop_count.avg, 2.0);
}

fn hop(v: &mut Value, i: usize) -> &mut Value {
    &mut v["traceroute"]["runs"][0]["hops"][i]
}

/// Applies `mutate` to a valid record and expects the schema to refuse it.
fn assert_rejected(what: &str, mutate: impl FnOnce(&mut Value)) {
    let mut v = serde_json::to_value(record()).unwrap();
    mutate(&mut v);
    assert!(validate(&v).is_err(), "{what} was accepted: {v}");
}

#[test]
fn broken_records_fail_validation() {
    assert_rejected("made-up name for a silent hop", |v| {
        hop(v, 1)["ip_address"] = json!("hop-2.unknown");
    });
    assert_rejected("'*' for a silent hop", |v| {
        hop(v, 1)["ip_address"] = json!("*");
    });
    assert_rejected("rtt on a silent hop", |v| hop(v, 1)["rtt"] = json!(1.0));
    assert_rejected("reachable hop without address", |v| {
        hop(v, 0)["ip_address"] = json!("");
    });
    assert_rejected("negative rtt", |v| hop(v, 0)["rtt"] = json!(-0.1));
    assert_rejected("negative attempt rtt", |v| hop(v, 0)["rtts"][1] = json!(-3));
    assert_rejected("ttl 0", |v| hop(v, 0)["ttl"] = json!(0));
    assert_rejected("ttl 256", |v| hop(v, 0)["ttl"] = json!(256));
    assert_rejected("string ttl", |v| hop(v, 0)["ttl"] = json!("1"));
    assert_rejected("unknown hop field", |v| hop(v, 0)["icmptype"] = json!(11));
    assert_rejected("bad timestamp source", |v| {
        hop(v, 0)["timestamp_source"] = json!("userspace");
    });
    assert_rejected("interface without a role", |v| {
        hop(v, 0)["interface_info"] = json!([{"ifindex": 3}]);
    });
    assert_rejected("interface name longer than RFC 5837 allows", |v| {
        hop(v, 0)["interface_info"] = json!([{"role": "incoming", "name": "x".repeat(64)}]);
    });
    assert_rejected("missing run_id", |v| {
        v["traceroute"]["runs"][0]
            .as_object_mut()
            .unwrap()
            .remove("run_id");
    });
    assert_rejected("run_id not a uuid", |v| {
        v["traceroute"]["runs"][0]["run_id"] = json!("run-1");
    });
    assert_rejected("bad run source ip", |v| {
        v["traceroute"]["runs"][0]["source"]["ip_address"] = json!("198.18.0.300");
    });
    assert_rejected("lowercase protocol", |v| v["protocol"] = json!("tcp"));
    assert_rejected("missing e2e_probe", |v| {
        v.as_object_mut().unwrap().remove("e2e_probe");
    });
    assert_rejected("loss above 1 (a fraction)", |v| {
        v["e2e_probe"]["packet_loss_percentage"] = json!(1.2);
    });
    assert_rejected("port out of range", |v| {
        v["destination"]["port"] = json!(70000);
    });
    assert_rejected("timestamp in seconds as float", |v| {
        v["timestamp"] = json!(1731000000.5);
    });
    assert_rejected("bad MAC", |v| {
        v["source"]["via"]["interface"]["hardware_addr"] = json!("zz:00");
    });
    assert_rejected("unknown top-level field", |v| v["extra"] = json!(1));
}

#[test]
fn validation_errors_say_where() {
    let mut v = serde_json::to_value(record()).unwrap();
    v["traceroute"]["runs"][0]["hops"][0]["rtt"] = json!(-1);
    let errors = validate(&v).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("/traceroute/runs/0/hops/0/rtt")),
        "{errors:?}"
    );
}

#[test]
fn hop_prefers_the_most_frequent_responder() {
    let a = AttemptOutcome::answered(ip("198.18.1.1"), ms(2.0));
    let b = AttemptOutcome::answered(ip("198.18.2.1"), ms(1.0));
    let obs = HopObservation {
        ttl: ttl(5),
        attempts: vec![b.clone(), a.clone(), a.clone(), AttemptOutcome::silent()],
    };
    let hop = Hop::from_observation(&obs);
    assert_eq!(hop.ip_address, Some(ip("198.18.1.1")));
    assert_eq!(hop.rtt, Some(2.0), "rtt comes from the chosen responder");
    assert_eq!(hop.other_ip_addresses, vec![ip("198.18.2.1")]);
    assert_eq!(hop.rtts, vec![Some(1.0), Some(2.0), Some(2.0), None]);
    // On a tie the first responder wins.
    let tie = HopObservation {
        ttl: ttl(5),
        attempts: vec![b, a],
    };
    assert_eq!(
        Hop::from_observation(&tie).ip_address,
        Some(ip("198.18.2.1"))
    );
}

#[test]
fn hop_details_come_from_the_fastest_answer() {
    let label = MplsLabel {
        label: 16005,
        exp: 0,
        bottom_of_stack: true,
        ttl: 1,
    };
    let slow = AttemptOutcome {
        icmp_code: Some(1),
        ..router(7, 9.0)
    };
    let fast = AttemptOutcome {
        mpls_labels: vec![label],
        timestamp_source: Some(TimestampSource::Socket),
        ..router(7, 3.0)
    };
    let hop = Hop::from_observation(&HopObservation {
        ttl: ttl(7),
        attempts: vec![slow, fast],
    });
    assert_eq!(hop.rtt, Some(3.0));
    assert_eq!(hop.icmp_code, Some(0));
    assert_eq!(hop.mpls_labels, vec![label]);
    assert_eq!(hop.timestamp_source, Some(TimestampSource::Socket));
    let v = serde_json::to_value(&hop).unwrap();
    assert_eq!(
        v["mpls_labels"],
        json!([{"label": 16005, "exp": 0, "bottom_of_stack": true, "ttl": 1}])
    );
}

#[test]
fn answered_without_rtt_is_reachable_without_rtt() {
    let hop = Hop::from_observation(&HopObservation {
        ttl: ttl(2),
        attempts: vec![AttemptOutcome {
            responder: Some(ip("2001:db8::1")),
            ..AttemptOutcome::silent()
        }],
    });
    assert!(hop.reachable);
    assert_eq!(hop.rtt, None);
    assert_eq!(
        serde_json::to_value(&hop).unwrap()["ip_address"],
        "2001:db8::1"
    );
}

#[test]
fn run_orders_hops_and_counts_them() {
    let mut obs = observations();
    obs.reverse();
    let run = Run::from_observations(sock("[2001:db8::5]:0"), sock("[2001:db8::9]:0"), &obs);
    let ttls: Vec<u8> = run.hops.iter().map(|h| h.ttl.get()).collect();
    assert_eq!(ttls, vec![1, 2, 3]);
    assert!(run.destination_reached);
    assert_eq!(run.hop_count(), 3);

    // Not reached: count to the last hop that answered.
    let mut obs = observations();
    obs.truncate(2);
    obs.push(HopObservation {
        ttl: ttl(3),
        attempts: vec![AttemptOutcome::silent()],
    });
    let run = Run::from_observations(sock("198.18.0.5:1"), sock("198.19.0.9:2"), &obs);
    assert!(!run.destination_reached);
    assert_eq!(run.hops.len(), 3);
    assert_eq!(run.hop_count(), 1);

    let silent = Run::from_observations(sock("198.18.0.5:1"), sock("198.19.0.9:2"), &[]);
    assert_eq!(silent.hop_count(), 0);
    assert_ne!(silent.run_id, run.run_id);
}

#[test]
fn hop_count_over_runs() {
    assert_eq!(
        HopCount::from_runs(&[]),
        HopCount {
            avg: 0.0,
            min: 0,
            max: 0
        }
    );
    let runs = &record().traceroute.runs;
    assert_eq!((runs[0].hop_count(), runs[1].hop_count()), (3, 1));
    let three = [runs[0].clone(), runs[1].clone(), runs[1].clone()];
    assert_eq!(HopCount::from_runs(&three).avg, 1.667);

    // As the Go client counts: a run where nothing answered counts all its
    // hops, and a run without hops does not lower `min`.
    let mut silent = runs[1].clone();
    for hop in &mut silent.hops {
        hop.ip_address = None;
        hop.reachable = false;
    }
    assert_eq!(silent.hop_count(), 2);
    let mut empty = runs[1].clone();
    empty.hops.clear();
    let counts = HopCount::from_runs(&[runs[0].clone(), empty]);
    assert_eq!((counts.min, counts.max, counts.avg), (3, 3, 1.5));
}

#[test]
fn e2e_statistics() {
    let none = E2eProbe::from_samples(&[]);
    assert_eq!(
        (none.packets_sent, none.packet_loss_percentage, none.jitter),
        (0, 0.0, 0.0)
    );
    assert_eq!(none.rtt, RttStats::default());

    let lost = E2eProbe::from_samples(&[None, None]);
    assert_eq!(lost.packet_loss_percentage, 1.0);
    assert_eq!((lost.packets_received, lost.rtts), (0, vec![0.0, 0.0]));

    // An answer faster than the record's resolution is still not "lost".
    let fast = E2eProbe::from_samples(&[Some(Duration::from_nanos(100))]);
    assert_eq!((fast.rtts, fast.packets_received), (vec![0.001], 1));

    let one = E2eProbe::from_samples(&[Some(ms(12.7))]);
    assert_eq!(one.jitter, 0.0);
    assert_eq!(
        one.rtt,
        RttStats {
            avg: 12.7,
            min: 12.7,
            max: 12.7
        }
    );

    // |20-10| + |15-20| = 15 over 2 differences.
    let e = E2eProbe::from_samples(&[Some(ms(10.0)), Some(ms(20.0)), None, Some(ms(15.0))]);
    assert_eq!(e.jitter, 7.5);
    assert_eq!(e.packet_loss_percentage, 0.25);
    assert_eq!(e.rtts, vec![10.0, 20.0, 0.0, 15.0]);
    assert_eq!(
        e.rtt,
        RttStats {
            avg: 15.0,
            min: 10.0,
            max: 20.0
        }
    );
}

#[test]
fn ipv6_record_validates() {
    let obs = vec![HopObservation {
        ttl: ttl(1),
        attempts: vec![AttemptOutcome {
            is_destination: true,
            ..AttemptOutcome::answered(ip("2001:db8::9"), Duration::from_micros(250))
        }],
    }];
    let run = Run::from_observations(sock("[2001:db8::5]:0"), sock("[2001:db8::9]:0"), &obs);
    let path = NetworkPath::new(
        Protocol::Icmp,
        PathSource {
            hostname: "h6".into(),
            via: None,
            public_ip: None,
        },
        PathDestination {
            hostname: "2001:db8::9".into(),
            port: 0,
        },
        vec![run],
        E2eProbe::from_samples(&[]),
    );
    let v = serde_json::to_value(&path).unwrap();
    assert_eq!(validate(&v), Ok(()));
    assert_eq!(v["protocol"], "ICMP");
    assert_eq!(v["traceroute"]["runs"][0]["hops"][0]["rtt"], 0.25);
    assert!(v["source"].get("via").is_none());
}

#[test]
fn unanswered_hops_say_why_and_shared_hops_say_whose() {
    let obs = vec![
        HopObservation {
            ttl: ttl(1),
            attempts: vec![AttemptOutcome {
                shared: Some(SharedHop {
                    test_run_id: uuid::Uuid::nil(),
                    run_id: uuid::Uuid::nil(),
                    protocol: Protocol::Tcp,
                    destination: ip("198.18.5.2"),
                    flow_id: 40001,
                    age: 12.5,
                }),
                ..router(1, 0.2)
            }],
        },
        HopObservation {
            ttl: ttl(2),
            attempts: vec![AttemptOutcome::unanswered(
                NoAnswer::NotSent(NotSentReason::RouterBudget),
                None,
            )],
        },
        HopObservation {
            ttl: ttl(3),
            attempts: vec![AttemptOutcome::unanswered(
                NoAnswer::RateLimited,
                Some(ms(10.0)),
            )],
        },
        HopObservation {
            ttl: ttl(4),
            attempts: vec![destination(1.0)],
        },
    ];
    let run = Run::from_observations(sock("198.18.0.5:1"), sock("198.19.0.9:2"), &obs);
    let mut path = record();
    path.traceroute.runs = vec![run];
    path.probing = Some(Probing {
        probes_sent: 3,
        reprobes: 1,
        probes_not_sent: 1,
        shared_hops: 1,
        degraded: vec!["rate_limited".into(), "router_budget".into()],
        admission_wait: Some(250.0),
    });
    let v = serde_json::to_value(&path).unwrap();
    validate(&v).unwrap();
    let hops = &v["traceroute"]["runs"][0]["hops"];
    assert_eq!(hops[0]["shared"]["flow_id"], 40001);
    assert_eq!(hops[0]["shared"]["age"], 12.5);
    assert_eq!(hops[1]["no_answer"], "not_sent");
    assert_eq!(hops[1]["not_sent_reason"], "router_budget");
    assert!(hops[1].get("waited").is_none(), "never sent, never waited");
    assert_eq!(hops[1]["not_waited"], 1, "neither answered nor lost");
    assert_eq!(hops[2]["no_answer"], "rate_limited");
    assert_eq!(hops[2]["waited"], 10.0);
    assert!(hops[2].get("not_waited").is_none(), "sent and waited: a loss");
    assert!(hops[3].get("no_answer").is_none());
    assert_eq!(
        v["probing"]["degraded"],
        json!(["rate_limited", "router_budget"])
    );
    let back: NetworkPath = serde_json::from_value(v).unwrap();
    assert_eq!(back, path);
}

/// A run of routers at TTL 1..n-1 and a destination answer at TTL n, each
/// with the given reply TTL.
fn run_with_reply_ttls(reply_ttls: &[u8]) -> Run {
    let n = reply_ttls.len();
    let obs: Vec<HopObservation> = reply_ttls
        .iter()
        .enumerate()
        .map(|(i, reply_ttl)| {
            let last = i + 1 == n;
            let addr = if last {
                ip("198.19.0.9")
            } else {
                ip(&format!("198.18.{}.2", i + 1))
            };
            HopObservation {
                ttl: ttl(i as u8 + 1),
                attempts: vec![AttemptOutcome {
                    is_destination: last,
                    reply_ttl: Some(*reply_ttl),
                    ..AttemptOutcome::answered(addr, Duration::from_micros(100))
                }],
            }
        })
        .collect();
    Run::from_observations(sock("198.18.0.5:40001"), sock("198.19.0.9:80"), &obs)
}

#[test]
fn a_destination_answering_from_too_near_is_a_suspected_middlebox() {
    // A genuine destination 4 hops away: 64 - 3.
    assert_eq!(
        run_with_reply_ttls(&[64, 63, 62, 61]).suspected_middlebox,
        None
    );
    // Windows (128) and network gear (255) initial TTLs are read as such.
    assert_eq!(
        run_with_reply_ttls(&[255, 254, 125]).suspected_middlebox,
        None
    );
    // A SYN proxy at hop 2 answers the TTL-3 probe in the destination's
    // name: its reply TTL is the one of hop 2.
    let m = run_with_reply_ttls(&[64, 63, 63])
        .suspected_middlebox
        .unwrap();
    assert_eq!(
        (m.ttl.get(), m.reply_ttl, m.distance, m.likely),
        (3, 63, 2, Some(ip("198.18.2.2")))
    );
    let v = serde_json::to_value(&m).unwrap();
    assert_eq!(
        v,
        json!({"ttl": 3, "reply_ttl": 63, "distance": 2, "likely": "198.18.2.2"})
    );
}

#[test]
fn a_destination_that_may_be_nearer_than_it_answered_is_marked_and_not_counted() {
    let router = |ttl: u8, n: u8| HopObservation {
        ttl: self::ttl(ttl),
        attempts: vec![AttemptOutcome {
            reply_ttl: Some(65 - ttl),
            ..AttemptOutcome::answered(IpAddr::from([198, 18, n, 2]), Duration::from_millis(1))
        }],
    };
    let silent = |ttl: u8| HopObservation {
        ttl: self::ttl(ttl),
        attempts: vec![AttemptOutcome::silent()],
    };
    let destination = |ttl: u8, reply_ttl: u8| HopObservation {
        ttl: self::ttl(ttl),
        attempts: vec![AttemptOutcome {
            reply_ttl: Some(reply_ttl),
            is_destination: true,
            ..AttemptOutcome::answered(IpAddr::from([198, 18, 9, 2]), Duration::from_millis(1))
        }],
    };
    let src = sock("198.18.1.1:40000");
    let dst = sock("198.18.9.2:33434");
    // 3 routers, TTLs 4 and 5 silent, the destination at 6 with a reply TTL
    // that puts it 4 hops away: it may be at 4.
    let obs = vec![
        router(1, 1),
        router(2, 2),
        router(3, 3),
        silent(4),
        silent(5),
        destination(6, 61),
    ];
    let mut runs = vec![Run::from_observations(src, dst, &obs)];
    DistanceUncertain::mark(&mut runs);
    let mark = runs[0].distance_uncertain.clone().expect("marked");
    assert_eq!(mark.answered_at, ttl(6));
    assert_eq!(mark.silent, [ttl(4), ttl(5)]);
    assert_eq!(mark.estimate, 4);
    assert!(
        runs[0].suspected_middlebox.is_none(),
        "said as uncertainty instead"
    );
    let count = HopCount::from_runs(&runs);
    assert_eq!((count.min, count.max), (0, 0), "no hop count that is wrong");
    let mut record = record();
    record.traceroute.runs = runs;
    validate(&serde_json::to_value(&record).unwrap()).unwrap();
    // Every TTL before it answered, or the reply TTL agrees: nothing to say.
    for obs in [
        vec![
            router(1, 1),
            router(2, 2),
            router(3, 3),
            router(4, 4),
            router(5, 5),
            destination(6, 59),
        ],
        vec![
            router(1, 1),
            router(2, 2),
            router(3, 3),
            silent(4),
            silent(5),
            destination(6, 59),
        ],
    ] {
        let mut runs = vec![Run::from_observations(src, dst, &obs)];
        DistanceUncertain::mark(&mut runs);
        assert!(runs[0].distance_uncertain.is_none(), "{:?}", runs[0]);
    }
}

#[test]
fn interface_information_reaches_the_hop_and_the_schema_accepts_it() {
    let info = InterfaceInfo {
        role: InterfaceRole::Incoming,
        ifindex: Some(7),
        address: Some(ip("198.18.1.1")),
        name: Some("eth1".into()),
        mtu: Some(1400),
    };
    let mut obs = observations();
    obs[0].attempts[1].interface_info = vec![info.clone()];
    let run = Run::from_observations(
        "198.18.0.5:40001".parse().unwrap(),
        "198.19.0.9:33434".parse().unwrap(),
        &obs,
    );
    // The hop shows what its best answer (the fastest) carried.
    assert_eq!(run.hops[0].interface_info, vec![info]);
    let mut v = serde_json::to_value(record()).unwrap();
    hop(&mut v, 0)["interface_info"] = serde_json::to_value(&run.hops[0].interface_info).unwrap();
    assert_eq!(
        hop(&mut v, 0)["interface_info"],
        json!([{"role": "incoming", "ifindex": 7, "address": "198.18.1.1", "name": "eth1", "mtu": 1400}])
    );
    assert_eq!(validate(&v), Ok(()));
}
