//! Multipath discovery in labs whose routers spread flows by L4 hash: MDA
//! must find every branch and the destination (also behind a silent router
//! inside the diamond) within the stopping rule's flow budget, for UDP and
//! TCP over IPv4 and IPv6; a fixed number of flows gives one consistent path
//! per flow; DOT and SVG name every router. Needs root.
//!
//! Routers are compared by name, through the lab's address plan: a router
//! answers from the interface a probe came in on (IPv4) or the one its reply
//! leaves by (IPv6), so one router can show several addresses.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};

use common::agent::{AGENT, assert_valid, run, trace};
use serde_json::Value;
use traceroute_lab::{Family, Lab};

/// The lab's router budget in these labs: ICMP is not rate limited, so the
/// agent may assume so too (the defaults model Linux's 6 then 1/s).
const UNLIMITED: [&str; 4] = [
    "--router-icmp-burst",
    "100000",
    "--router-icmp-per-second",
    "100000",
];

/// Router names per TTL that the lab's routing allows from src to dst.
fn expected_routers(lab: &Lab, family: Family) -> BTreeMap<u64, BTreeSet<String>> {
    lab.path("src", "dst", family)
        .unwrap()
        .into_iter()
        .enumerate()
        .map(|(i, hops)| (i as u64 + 1, hops.into_iter().map(|h| h.node).collect()))
        .collect()
}

/// Router names per TTL in the record's graph (silent positions as `*`).
fn graph_routers(lab: &Lab, record: &Value) -> BTreeMap<u64, BTreeSet<String>> {
    let mut out: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for node in record["multipath"]["nodes"].as_array().expect("nodes") {
        let ttl = node["ttl"].as_u64().unwrap();
        if ttl == 0 || node["destination"] == true {
            continue;
        }
        let address = node["ip_address"].as_str().unwrap();
        let name = if address.is_empty() {
            "*".to_string()
        } else {
            lab.owner(address.parse().unwrap())
                .unwrap_or_else(|| panic!("{address} belongs to no lab node"))
                .to_string()
        };
        out.entry(ttl).or_default().insert(name);
    }
    out
}

fn mda(lab: &Lab, protocol: &str, family: Family, extra: &[&str]) -> Value {
    let dst = lab.primary("dst", family).unwrap().to_string();
    let family_flag = if family == Family::V4 { "-4" } else { "-6" };
    let mut args = vec![
        dst.as_str(),
        protocol,
        family_flag,
        "--multipath",
        "mda",
        "--timeout-ms",
        "500",
        // Reproducible flows: the lab's routers hash with fixed seeds, so
        // these flow ids take the same branches in every run.
        "--flow-id",
        "41000",
    ];
    args.extend(UNLIMITED);
    args.extend(extra);
    trace(lab, "src", &args).record
}

#[test]
fn mda_finds_every_branch_of_diamonds_within_the_stopping_rule() {
    // (topology, most flows the rule should need at 95 % with some slack)
    for (topology, max_flows) in [
        (traceroute_lab::named::diamond(2), 40),
        (traceroute_lab::named::diamond(4), 80),
        (traceroute_lab::named::nested(), 160),
    ] {
        let lab = Lab::up(&topology).unwrap();
        for family in [Family::V4, Family::V6] {
            let want = expected_routers(&lab, family);
            for protocol in ["-U", "-T"] {
                let what = format!("{} {protocol} {family:?}", lab.topology_name());
                let record = mda(&lab, protocol, family, &[]);
                let graph = &record["multipath"];
                assert_eq!(graph["method"], "mda", "{what}");
                assert_eq!(graph["complete"], true, "{what}: {graph:#}");
                assert_eq!(graph_routers(&lab, &record), want, "{what}");
                let dst = lab.primary("dst", family).unwrap().to_string();
                assert!(
                    graph["nodes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|n| n["destination"] == true && n["ip_address"] == dst.as_str()),
                    "{what}: destination missing"
                );
                let flows = graph["flows"].as_u64().unwrap();
                assert!(
                    flows >= 6 && flows <= max_flows,
                    "{what}: {flows} flows (rule budget {max_flows})"
                );
                // One run per flow, every flow id distinct.
                let runs = record["traceroute"]["runs"].as_array().unwrap();
                let ids: BTreeSet<u64> = runs
                    .iter()
                    .map(|r| r["flow_id"].as_u64().unwrap())
                    .collect();
                assert_eq!(ids.len() as u64, flows, "{what}");
            }
        }
    }
}

/// Flows the graph saw at each TTL, and the addresses found there.
fn per_ttl(record: &Value) -> BTreeMap<u64, (u64, BTreeSet<String>)> {
    let mut out: BTreeMap<u64, (u64, BTreeSet<String>)> = BTreeMap::new();
    for node in record["multipath"]["nodes"].as_array().expect("nodes") {
        let entry = out.entry(node["ttl"].as_u64().unwrap()).or_default();
        entry.0 += node["flows"].as_u64().unwrap();
        entry
            .1
            .insert(node["ip_address"].as_str().unwrap().to_string());
    }
    out
}

/// In the nested diamond each m answers from the interface its probe came
/// by: 8 addresses at TTL 3, all before r4. The full rule wants 6 flows
/// beyond each (48 answers from r4); the lite rule sees 8 routers alike,
/// none splitting, and wants 11 beyond the TTL, 2 each. Both find the same
/// addresses, and the record says which rule ran.
#[test]
fn the_lite_rule_finds_the_same_diamond_with_fewer_answers_where_paths_converge() {
    let lab = Lab::up(&traceroute_lab::named::nested()).unwrap();
    let full = mda(&lab, "-U", Family::V4, &["--mda-rule", "full"]);
    let lite = mda(&lab, "-U", Family::V4, &[]);
    assert_eq!(full["multipath"]["rule"], "full");
    assert_eq!(lite["multipath"]["rule"], "lite");
    for record in [&full, &lite] {
        assert_eq!(record["multipath"]["complete"], true);
    }
    let (full, lite) = (per_ttl(&full), per_ttl(&lite));
    let addresses = |t: &BTreeMap<u64, (u64, BTreeSet<String>)>| -> Vec<usize> {
        t.values().map(|(_, a)| a.len()).collect()
    };
    assert_eq!(addresses(&full), [1, 1, 4, 8, 2, 1], "{full:?}");
    assert_eq!(addresses(&lite), addresses(&full), "{lite:?}");
    assert!(full[&4].0 >= 48, "full rule: {} flows at TTL 4", full[&4].0);
    assert!(
        lite[&4].0 * 2 <= full[&4].0,
        "lite rule: {} flows at TTL 4, full {}",
        lite[&4].0,
        full[&4].0
    );
}

#[test]
fn mda_finds_the_destination_behind_a_silent_router_in_the_diamond() {
    let lab = Lab::up(&traceroute_lab::named::nested_silent()).unwrap();
    let record = mda(&lab, "-U", Family::V4, &[]);
    let routers = graph_routers(&lab, &record);
    assert!(routers[&2].contains("*"), "a2 shows as silent: {routers:?}");
    assert!(
        routers[&2].is_superset(&BTreeSet::from(["a1".into(), "a3".into(), "a4".into()])),
        "{routers:?}"
    );
    assert_eq!(
        routers[&3],
        BTreeSet::from(["m1".to_string(), "m2".to_string()])
    );
    // Flows through a2 waited their full time there: silent, not
    // "rate limited" because other flows got answers at TTL 2.
    let silent_hops: Vec<&Value> = record["traceroute"]["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["hops"][1])
        .filter(|h| h["ip_address"] == "")
        .collect();
    assert!(!silent_hops.is_empty());
    assert!(
        silent_hops.iter().all(|h| h["no_answer"] == "timeout"),
        "{silent_hops:?}"
    );
    // Flows of the first round go all the way: those through the silent a2
    // found the destination behind it (later rounds stop where nothing is
    // left to map).
    let dst = lab.primary("dst", Family::V4).unwrap().to_string();
    let through_a2: Vec<&Value> = record["traceroute"]["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["hops"][1]["ip_address"] == "")
        .filter(|r| r["hops"].as_array().unwrap().len() >= 5)
        .collect();
    assert!(!through_a2.is_empty(), "a flow probed past the silent a2");
    assert!(
        through_a2.iter().all(|r| r["destination_reached"] == true),
        "flows through the silent a2 reached {dst}"
    );
}

#[test]
fn fixed_flows_each_follow_one_consistent_path_and_pictures_name_every_router() {
    let lab = Lab::up(&traceroute_lab::named::diamond(4)).unwrap();
    let dst = lab.primary("dst", Family::V4).unwrap().to_string();
    let mut args = vec![
        dst.as_str(),
        "-U",
        "--paths",
        "8",
        "-q",
        "2",
        "--timeout-ms",
        "500",
    ];
    args.extend(UNLIMITED);
    let record = trace(&lab, "src", &args).record;
    let runs = record["traceroute"]["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 16, "8 flows × 2 queries");
    // Both runs of a flow took the same path (Paris), and every path is one
    // the lab's routing allows.
    let mut by_flow: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for run in runs {
        by_flow
            .entry(run["flow_id"].as_u64().unwrap())
            .or_default()
            .insert(run["fingerprint"].as_str().unwrap().to_string());
    }
    assert_eq!(by_flow.len(), 8);
    assert!(by_flow.values().all(|f| f.len() == 1), "{by_flow:?}");
    assert_eq!(record["multipath"]["method"], "flows");
    let want = expected_routers(&lab, Family::V4);
    for (ttl, routers) in graph_routers(&lab, &record) {
        assert!(routers.is_subset(&want[&ttl]), "TTL {ttl}: {routers:?}");
    }

    // Pictures of an MDA trace: dot parses the DOT, the SVG is XML that
    // names every router of the graph. At 95 % one branch of a 4-way split
    // goes unseen in about one run in 20, as the stopping rule allows; each
    // picture is its own run, so they ask for 99 % (about one in 80), and a
    // picture missing a router is drawn once more: a trace that missed a
    // branch does not repeat it, a writer that drops a router does.
    let common = [
        dst.as_str(),
        "-U",
        "--multipath",
        "mda",
        "--confidence",
        "99",
        "--timeout-ms",
        "500",
    ];
    let picture = |format: &str| {
        let mut args = common.to_vec();
        args.extend(UNLIMITED);
        let mut cmd = lab.command("src", AGENT).unwrap();
        cmd.args(["trace", "--format", format]).args(&args);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let addresses: Vec<String> = ["b1", "b2", "b3", "b4"]
        .iter()
        .map(|router| lab.addr(router, "r1", Family::V4).unwrap().to_string())
        .collect();
    let drawn = |format: &str| {
        let first = picture(format);
        if addresses.iter().all(|a| first.contains(a.as_str())) {
            first
        } else {
            picture(format)
        }
    };
    let dot = drawn("dot");
    let mut render = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("Graphviz dot (Debian package graphviz; cargo xtask setup installs it)");
    use std::io::Write;
    render
        .stdin
        .take()
        .unwrap()
        .write_all(dot.as_bytes())
        .unwrap();
    let rendered = render.wait_with_output().unwrap();
    assert!(
        rendered.status.success(),
        "dot refused the DOT: {}\n{dot}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let svg = drawn("svg");
    let names = xml_texts(&svg);
    for router in ["b1", "b2", "b3", "b4"] {
        let address = lab.addr(router, "r1", Family::V4).unwrap().to_string();
        assert!(
            names.iter().any(|t| t == &address),
            "SVG names {router} ({address}): {names:?}"
        );
        assert!(dot.contains(&address), "DOT names {router}");
    }
    let flows = picture("flows");
    assert!(flows.contains("distinct path(s)"), "{flows}");
    assert!(
        flows.lines().filter(|l| l.starts_with("path ")).count() >= 4,
        "{flows}"
    );
}

/// The text contents of an XML document, checking it is well formed.
fn xml_texts(xml: &str) -> Vec<String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut texts = Vec::new();
    let mut depth = 0i32;
    loop {
        match reader.read_event().expect("well-formed XML") {
            quick_xml::events::Event::Start(_) => depth += 1,
            quick_xml::events::Event::End(_) => depth -= 1,
            quick_xml::events::Event::Text(t) => {
                texts.push(t.into_inner().into_owned());
            }
            quick_xml::events::Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(depth, 0, "every element closed");
    texts
}

#[test]
fn a_pinned_flow_uses_its_source_port_and_a_taken_one_is_refused() {
    let lab = Lab::up(&traceroute_lab::named::diamond(2)).unwrap();
    let dst = lab.primary("dst", Family::V4).unwrap().to_string();
    let record = trace(&lab, "src", &[&dst, "-U", "--flow-id", "45678", "-q", "1"]).record;
    assert_valid(&record);
    assert_eq!(record["traceroute"]["runs"][0]["source"]["port"], 45678);
    assert_eq!(record["traceroute"]["runs"][0]["flow_id"], 45678);
    // The same port held by another socket in src: a clear usage error.
    let held = lab
        .in_netns("src", || {
            std::net::UdpSocket::bind("0.0.0.0:45679").unwrap()
        })
        .unwrap();
    let out = run(
        &lab,
        "src",
        &[&dst, "-U", "--source-port", "45679", "-q", "1"],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("45679 is in use"));
    drop(held);
}

#[test]
fn flows_through_rate_limited_routers_report_no_silence_that_is_not_there() {
    // Kernel default ICMP limits on every router (6 at once, then 1/s) and
    // the agent's default prior: 16 flows at once, through routers whose
    // budgets are learnt as the flows go, never report a silence that is not
    // there.
    let lab = Lab::up(&traceroute_lab::named::nested_limited()).unwrap();
    let dst = lab.primary("dst", Family::V4).unwrap().to_string();
    let record = trace(
        &lab,
        "src",
        &[
            &dst,
            "-U",
            "--paths",
            "16",
            "-q",
            "1",
            "-m",
            "5",
            "--flow-id",
            "43100",
        ],
    )
    .record;
    let runs = record["traceroute"]["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 16);
    let hops: Vec<(u64, &serde_json::Value)> = runs
        .iter()
        .flat_map(|r| {
            let flow = r["flow_id"].as_u64().unwrap();
            r["hops"].as_array().unwrap().iter().map(move |h| (flow, h))
        })
        .collect();
    // Learning the routers' budgets costs an overshoot, asked again after
    // a refill; what could not be asked again in time says so.
    let silent: Vec<(u64, &serde_json::Value)> = hops
        .iter()
        .filter(|(_, h)| h["no_answer"] == "timeout")
        .copied()
        .collect();
    assert!(
        silent.is_empty(),
        "invented silence (flow, hop): {silent:?}"
    );
    let answered = hops.iter().filter(|(_, h)| h["ip_address"] != "").count();
    assert!(
        answered * 10 >= hops.len() * 9,
        "{answered} of {} hops answered",
        hops.len()
    );
    for run in runs {
        let last = run["hops"].as_array().unwrap().last().unwrap();
        assert!(
            run["destination_reached"] == true
                || ["rate_limited", "not_sent"].contains(&last["no_answer"].as_str().unwrap_or("")),
            "{run}"
        );
    }
}
