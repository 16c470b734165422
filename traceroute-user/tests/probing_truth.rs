//! The probing core under overload, against real kernels: 200 scheduled
//! targets at a 100 ms interval behind a gateway that keeps Linux's default
//! ICMP rate limit (6, then 1 per second). Every record must report only what
//! happened: a hop without an answer is either silent in the lab's ground
//! truth (nothing is, in this lab) or says why it has no answer (not sent,
//! rate limited, cut short); and the shared gateway is found for every trace,
//! observed or reused from another trace (and marked so). Needs root.

mod common;
mod service_support;

use std::sync::Mutex;
use std::time::Duration;

use common::agent::assert_valid;
use service_support::{Agent, eventually, lines};
use traceroute_lab::{Family, Lab};

/// The two tests here load the CPU and the lab's routers on purpose; run
/// side by side, one's load makes the other's late answers look like
/// silence. One at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn scheduled_overload_reports_no_loss_that_did_not_happen_and_finds_the_gateway() {
    let _serial = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let lab = Lab::up(&traceroute_lab::named::fanout()).unwrap();
    let dir = service_support::TempDir::new("truth");
    let out = dir.path("paths.jsonl");
    let gw = lab.addr("gw", "src", Family::V4).unwrap();
    let mut targets = Vec::new();
    for d in ["d1", "d2", "d3", "d4"] {
        targets.extend(lab.targets(d).unwrap().into_iter().take(50));
    }
    let mut config = format!(
        "capture = \"ebpf\"\n[output]\npath = \"{}\"\n",
        out.display()
    );
    for (i, t) in targets.iter().enumerate() {
        let protocol = if i % 2 == 0 { "tcp" } else { "icmp" };
        config.push_str(&format!(
            "[[targets]]\nhost = \"{t}\"\nprotocol = \"{protocol}\"\ninterval = \"100ms\"\n\
             queries = 3\nmax_ttl = 6\ntimeout = \"500ms\"\n"
        ));
    }
    let mut agent = Agent::start_with(&lab, "src", Some(&config), &[]);
    assert!(
        eventually(Duration::from_secs(30), || lines(&out).len() >= 400),
        "only {} records:\n{}",
        lines(&out).len(),
        agent.log()
    );
    let runs = agent.metric("traceroute_agent_runs_total", "origin=\"schedule\"");
    let busy = agent.metric("traceroute_agent_failed_runs_total", "code=\"BUSY\"");
    let not_sent = agent.metric("traceroute_agent_probes_not_sent_total", "");
    let status = agent.stop();
    assert!(status.success(), "{status}\n{}", agent.log());
    // 200 targets every 100 ms is more than the gateway's budget and the
    // probe rail allow: what did not fit was refused or left unsent, and said so.
    eprintln!("{runs} runs, {busy} refused (BUSY), {not_sent} probes not sent");

    let records: Vec<serde_json::Value> = lines(&out)
        .iter()
        .map(|l| serde_json::from_str(l).expect("one record per line"))
        .collect();
    let (mut observed_gw, mut shared_gw, mut marked) = (0, 0, 0);
    for record in &records {
        assert_valid(record);
        let host: std::net::IpAddr = record["destination"]["hostname"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let truth = lab.expected_hops_to("src", host).unwrap();
        for run in record["traceroute"]["runs"].as_array().unwrap() {
            for hop in run["hops"].as_array().unwrap() {
                let ttl = hop["ttl"].as_u64().unwrap() as usize;
                let want = truth.get(ttl - 1).copied().flatten().unwrap_or(host);
                match hop["ip_address"].as_str().unwrap() {
                    "" => {
                        let why = hop["no_answer"].as_str().unwrap_or("(none)");
                        assert_ne!(
                            why, "timeout",
                            "TTL {ttl} to {host} ({}) reported silent, but {want} answers: {hop}\nrun: {run}",
                            record["protocol"]
                        );
                        assert_ne!(why, "(none)", "unanswered hop without a reason: {hop}");
                        marked += 1;
                    }
                    ip => {
                        assert_eq!(ip, want.to_string(), "TTL {ttl} to {host}: {hop}");
                        if ttl == 1 {
                            if hop.get("shared").is_some() {
                                shared_gw += 1;
                            } else {
                                observed_gw += 1;
                            }
                        }
                    }
                }
            }
            let first = &run["hops"][0];
            assert_eq!(
                first["ip_address"],
                gw.to_string(),
                "the gateway is found for every trace: {first}"
            );
        }
    }
    // Most first hops were reused rather than asked again.
    assert!(
        shared_gw > observed_gw,
        "{shared_gw} shared, {observed_gw} observed"
    );
    eprintln!(
        "{} records, gateway observed {observed_gw} / shared {shared_gw}, {marked} hops marked",
        records.len()
    );
}

/// 64 API traces of 10 queries at once through routers without a rate
/// limit: nothing is known of them at first, so nothing is refused, and
/// their budgets grow as they answer: every trace comes back with every hop.
#[test]
fn routers_without_limits_serve_64_concurrent_traces_with_every_hop() {
    let _serial = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let lab = Lab::up(&traceroute_lab::named::three()).unwrap();
    let config = "capture = \"ebpf\"\n[api]\nmax_concurrent_traces = 64\n";
    let agent = Agent::start_with(&lab, "src", Some(config), &[]);
    let dst = lab.primary("dst", Family::V4).unwrap();
    let want = common::agent::expected(&lab, "src", "dst", dst);
    let query = service_support::client_query(80, 8, 1_000_000_000, "TCP", 10);
    let target = format!("/traceroute/{dst}?{query}");
    let replies: Vec<service_support::Reply> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..64)
            .map(|_| s.spawn(|| service_support::try_get(&agent.socket, &target).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for reply in &replies {
        assert_eq!(reply.status, 200, "{}", reply.text());
        let record = reply.json();
        assert_valid(&record);
        for run in 0..10 {
            assert_eq!(service_support::hop_addrs(&record, run), want, "run {run}");
        }
        assert_eq!(record["probing"]["degraded"], serde_json::json!([]));
    }
    assert_eq!(
        agent.metric("traceroute_agent_failed_runs_total", "code=\"BUSY\""),
        0.0
    );
    // What the agent learnt: the routers answered more than the prior.
    let view = service_support::try_get(&agent.socket, "/debug/responders")
        .unwrap()
        .json();
    let grown = view["responders"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] == "grown")
        .count();
    assert!(grown >= 2, "{view}");
    assert!(agent.metric("traceroute_agent_responder_budget_growths_total", "") >= 2.0);
}

/// Routers at Linux's default limit (6 answers, then 1 a second) that the
/// agent has seen limit: 20 traces of 10 queries at once cannot all have
/// their first probes answered before their deadlines. Those that could not
/// are refused up front (503 BUSY, after a bounded wait); those admitted
/// report only what happened: no hop of an answering router is called
/// silent.
#[test]
fn known_limits_refuse_what_they_cannot_serve_and_invent_no_silence() {
    let _serial = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let lab = Lab::up(&traceroute_lab::named::three_limited()).unwrap();
    let config = "capture = \"ebpf\"\n[api]\nmax_concurrent_traces = 64\n";
    let agent = Agent::start_with(&lab, "src", Some(config), &[]);
    let dst = lab.primary("dst", Family::V4).unwrap();
    let want = common::agent::expected(&lab, "src", "dst", dst);
    let query = service_support::client_query(80, 8, 1_000_000_000, "TCP", 10);
    let target = format!("/traceroute/{dst}?{query}");
    // Learning: 10 answers asked of routers that give 6.
    let first = service_support::try_get(&agent.socket, &target).unwrap();
    assert_eq!(first.status, 200, "{}", first.text());
    let view = service_support::try_get(&agent.socket, "/debug/responders")
        .unwrap()
        .json();
    let limited = view["responders"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] == "limited")
        .count();
    assert!(limited >= 2, "{view}");
    let replies: Vec<service_support::Reply> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|_| s.spawn(|| service_support::try_get(&agent.socket, &target).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let refused = replies.iter().filter(|r| r.status == 503).count();
    assert!(refused > 0, "nothing refused");
    assert!(refused < 20, "everything refused");
    for reply in &replies {
        if reply.status == 503 {
            assert_eq!(reply.json()["code"], "BUSY", "{}", reply.text());
            assert!(reply.header("retry-after").is_some());
            continue;
        }
        assert_eq!(reply.status, 200, "{}", reply.text());
        let record = reply.json();
        assert_valid(&record);
        for run in record["traceroute"]["runs"].as_array().unwrap() {
            for (hop, want) in run["hops"].as_array().unwrap().iter().zip(&want) {
                if hop["ip_address"] == "" {
                    assert_ne!(hop["no_answer"], "timeout", "invented silence: {hop}");
                } else {
                    assert_eq!(&hop["ip_address"], want, "{hop}");
                }
            }
        }
    }
    assert_eq!(
        agent.metric("traceroute_agent_failed_runs_total", "code=\"BUSY\""),
        refused as f64
    );
}
