//! `traceroute-agent serve` end to end: the binary runs in a lab namespace with
//! its API on a Unix socket in a temp dir, and is called the way the
//! system-probe client calls it. Records are checked against the JSON schema
//! and the lab's ground truth. Needs root.

mod common;
mod service_support;

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::agent::{assert_valid, expected};
use service_support::{Agent, client_query, eventually, hop_addrs, request};
use traceroute_lab::{Family, Hook, Lab, Proto, Topology};

const CONFIG: &str = r#"
namespace = "lab-ns"
tags = ["env:test"]
capture = "ebpf"
probes_per_second = 2000
"#;

#[test]
fn api_answers_like_system_probe_checked_against_ground_truth() {
    let lab = Lab::up(&traceroute_lab::named::chain()).unwrap();
    let agent = Agent::start_with(&lab, "src", Some(CONFIG), &[]);
    for family in [Family::V4, Family::V6] {
        let dst = lab.primary("dst", family).unwrap();
        let want = expected(&lab, "src", "dst", dst);
        for (protocol, port) in [("TCP", 80), ("UDP", 0), ("ICMP", 0), ("udp", 33434)] {
            let q = client_query(port, 10, 500_000_000, protocol, 2);
            let r = agent.get(&format!("/traceroute/{dst}?{q}"));
            assert_eq!(r.status, 200, "{protocol} {dst}: {}", r.text());
            assert_eq!(r.header("content-type"), Some("application/json"));
            let record = r.json();
            assert_valid(&record);
            assert_eq!(record["traceroute"]["runs"].as_array().unwrap().len(), 2);
            for run in 0..2 {
                assert_eq!(hop_addrs(&record, run), want, "{protocol} {dst} run {run}");
                assert_eq!(
                    record["traceroute"]["runs"][run]["destination"]["ip_address"],
                    dst.to_string()
                );
            }
            assert_eq!(record["protocol"], protocol.to_uppercase());
            assert_eq!(record["namespace"], "lab-ns");
            assert_eq!(record["tags"], serde_json::json!(["env:test"]));
            assert_eq!(record["destination"]["hostname"], dst.to_string());
            let want_port = match (protocol, port) {
                ("ICMP", _) => 0,
                (_, 0) => 33434,
                (_, p) => p,
            };
            assert_eq!(record["destination"]["port"], want_port);
            assert_eq!(record["capture"]["method"], "ebpf");
            assert!(!record["source"]["hostname"].as_str().unwrap().is_empty());
        }
    }

    // e2e probes through the tracer: one sample per probe, all answered.
    // Unknown and repeated parameters are ignored as the Go module does
    // (the first `port` wins).
    let dst = lab.primary("dst", Family::V4).unwrap();
    let r = agent.get(&format!(
        "/traceroute/{dst}?protocol=tcp&port=80&traceroute_queries=1&e2e_queries=5&timeout=500000000\
         &port=81&newer_client_option=1&=5"
    ));
    assert_eq!(r.status, 200, "{}", r.text());
    let record = r.json();
    assert_valid(&record);
    assert_eq!(record["destination"]["port"], 80);
    assert_eq!(record["e2e_probe"]["packets_sent"], 5);
    assert_eq!(record["e2e_probe"]["packets_received"], 5);
    assert_eq!(record["e2e_probe"]["packet_loss_percentage"], 0.0);
    let rtts = record["e2e_probe"]["rtts"].as_array().unwrap();
    assert_eq!(rtts.len(), 5);
    assert!(rtts.iter().all(|r| r.as_f64().unwrap() > 0.0), "{rtts:?}");

    // MDA through the API: one path, so the stopping rule's 6 flows (n_2)
    // prove no router has a second next hop; each flow is one run.
    let r = agent.get(&format!(
        "/traceroute/{dst}?protocol=udp&multipath=mda&confidence=95&flow_id=44000&timeout=500000000"
    ));
    assert_eq!(r.status, 200, "{}", r.text());
    let record = r.json();
    assert_valid(&record);
    let graph = &record["multipath"];
    assert_eq!(
        (&graph["method"], &graph["complete"], &graph["flows"]),
        (
            &serde_json::json!("mda"),
            &serde_json::json!(true),
            &serde_json::json!(6)
        ),
        "{graph:#}"
    );
    assert_eq!(graph["confidence"], 0.95);
    assert_eq!(
        graph["rule"], "lite",
        "the default rule, said in the record"
    );
    assert_eq!(record["traceroute"]["runs"][0]["flow_id"], 44000);

    // tcp_method variants that map to SYN; IPv6 literal in brackets.
    let dst6 = lab.primary("dst", Family::V6).unwrap();
    for method in ["syn", "syn_socket", "prefer_sack", "SYN"] {
        let r = agent.get(&format!(
            "/traceroute/%5B{dst6}%5D?protocol=TCP&port=80&tcp_method={method}&traceroute_queries=1&timeout=300000000"
        ));
        assert_eq!(r.status, 200, "{method}: {}", r.text());
        assert_valid(&r.json());
    }

    let health = agent.get("/health");
    assert_eq!(health.status, 200);
    let h = health.json();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["capture"], "ebpf");

    let metrics = agent.get("/metrics");
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    let m = |name: &str, labels: &str| service_support::metric(&text, name, labels);
    assert_eq!(
        m(
            "traceroute_agent_runs_total",
            "protocol=\"TCP\",origin=\"api\""
        ),
        2.0 + 1.0 + 4.0
    );
    // 4 UDP traces above, and the MDA trace.
    assert_eq!(m("traceroute_agent_runs_total", "protocol=\"UDP\""), 5.0);
    assert_eq!(m("traceroute_agent_failed_runs_total", ""), 0.0);
    assert!(m("traceroute_agent_probes_sent_total", "protocol=\"UDP\"") >= 4.0 * 2.0 * 5.0);
    assert!(
        m(
            "traceroute_agent_replies_matched_total",
            "kind=\"time_exceeded\""
        ) > 0.0
    );
    assert!(
        m(
            "traceroute_agent_replies_matched_total",
            "kind=\"dest_unreachable\""
        ) > 0.0
    );
    assert!(
        m(
            "traceroute_agent_replies_matched_total",
            "kind=\"echo_reply\""
        ) > 0.0
    );
    // The TCP trace's SYN-ACK plus the five end-to-end probes' SYN-ACKs.
    assert!(
        m(
            "traceroute_agent_replies_matched_total",
            "kind=\"tcp_syn_ack\""
        ) >= 6.0
    );
    assert_eq!(
        m("traceroute_agent_traces_in_flight", "origin=\"api\""),
        0.0
    );
    assert!(m("traceroute_agent_capture_events_total", "") > 0.0);
    assert_eq!(
        m("traceroute_agent_capture_ring_buffer_drops_total", ""),
        0.0
    );
    assert!(text.contains("traceroute_agent_route_cache_refreshes_total"));
    assert_eq!(
        m(
            "traceroute_agent_trace_duration_seconds_count",
            "protocol=\"TCP\""
        ),
        7.0
    );
    assert!(m("traceroute_agent_http_requests_total", "status=\"200\"") >= 13.0);
}

#[test]
fn bad_inputs_get_4xx_with_a_json_code() {
    let lab = Lab::up(&traceroute_lab::named::chain()).unwrap();
    let agent = Agent::start_with(&lab, "src", Some(CONFIG), &[]);
    let dst = lab.primary("dst", Family::V4).unwrap();
    let t = format!("/traceroute/{dst}");
    let long_query = format!("{t}?client_id={}", "x".repeat(5000));
    let long_path = format!("/traceroute/{}", "a".repeat(1100));
    let long_label = format!("/traceroute/{}.example", "a".repeat(64));
    let long_client = format!("{t}?client_id={}", "c".repeat(300));
    let cases: Vec<(String, u16, &str)> = vec![
        // protocol
        (format!("{t}?protocol=SCTP"), 400, "INVALID_REQUEST"),
        (format!("{t}?protocol=tcp6"), 400, "INVALID_REQUEST"),
        // port
        (format!("{t}?port=abc"), 400, "INVALID_REQUEST"),
        (format!("{t}?port=-1"), 400, "INVALID_REQUEST"),
        (format!("{t}?port=65536"), 400, "INVALID_REQUEST"),
        (format!("{t}?port=1e3"), 400, "INVALID_REQUEST"),
        (format!("{t}?port=%2080"), 400, "INVALID_REQUEST"),
        (format!("{t}?port=%2B80"), 400, "INVALID_REQUEST"),
        // max_ttl
        (format!("{t}?max_ttl=256"), 400, "INVALID_REQUEST"),
        (format!("{t}?max_ttl=ten"), 400, "INVALID_REQUEST"),
        (format!("{t}?max_ttl=-5"), 400, "INVALID_REQUEST"),
        // timeout (nanoseconds)
        (format!("{t}?timeout=999999"), 400, "INVALID_REQUEST"),
        (format!("{t}?timeout=30000000001"), 400, "INVALID_REQUEST"),
        (format!("{t}?timeout=1s"), 400, "INVALID_REQUEST"),
        (
            format!("{t}?timeout=99999999999999999999999"),
            400,
            "INVALID_REQUEST",
        ),
        (format!("{t}?timeout=-1000"), 400, "INVALID_REQUEST"),
        (format!("{t}?timeout=1.5"), 400, "INVALID_REQUEST"),
        // runs and e2e
        (format!("{t}?traceroute_queries=11"), 400, "INVALID_REQUEST"),
        (format!("{t}?traceroute_queries=x"), 400, "INVALID_REQUEST"),
        (format!("{t}?e2e_queries=101"), 400, "INVALID_REQUEST"),
        // multipath
        (format!("{t}?paths=65"), 400, "INVALID_REQUEST"),
        (format!("{t}?multipath=tracelb"), 400, "INVALID_REQUEST"),
        (
            format!("{t}?multipath=mda&confidence=90"),
            400,
            "INVALID_REQUEST",
        ),
        (format!("{t}?confidence=99"), 400, "INVALID_REQUEST"),
        (format!("{t}?mda_rule=full"), 400, "INVALID_REQUEST"),
        (
            format!("{t}?multipath=mda&mda_rule=exact"),
            400,
            "INVALID_REQUEST",
        ),
        (format!("{t}?multipath=mda&paths=4"), 400, "INVALID_REQUEST"),
        (format!("{t}?flow_id=0"), 400, "INVALID_REQUEST"),
        (format!("{t}?flow_id=65535&paths=3"), 400, "INVALID_REQUEST"),
        (
            format!("{t}?flow_id=65300&multipath=mda"),
            400,
            "INVALID_REQUEST",
        ),
        (format!("{t}?source_port=70000"), 400, "INVALID_REQUEST"),
        (format!("{t}?reverse_dns=maybe"), 400, "INVALID_REQUEST"),
        // tcp_method
        // sack to a closed port: no connection to probe inside.
        (
            format!("{t}?protocol=TCP&port=81&tcp_method=sack"),
            400,
            "NOT_SUPPORTED",
        ),
        (format!("{t}?tcp_method=fin"), 400, "INVALID_REQUEST"),
        // client_id (unknown and repeated parameters are ignored, above);
        // a bad value in a repeat that is ignored is not looked at, but a
        // bad first value is refused.
        (long_client, 400, "INVALID_REQUEST"),
        (format!("{t}?client_id=a%0Ab"), 400, "INVALID_REQUEST"),
        (format!("{t}?port=x&port=80"), 400, "INVALID_REQUEST"),
        // hosts and path tricks
        ("/traceroute/".into(), 400, "INVALID_REQUEST"),
        ("/traceroute/..".into(), 400, "INVALID_REQUEST"),
        ("/traceroute/%2e%2e".into(), 400, "INVALID_REQUEST"),
        ("/traceroute/a%2Fb".into(), 400, "INVALID_REQUEST"),
        ("/traceroute/a/b".into(), 400, "INVALID_REQUEST"),
        ("/traceroute/../health".into(), 400, "INVALID_REQUEST"),
        ("/traceroute/127.1".into(), 400, "INVALID_REQUEST"),
        ("/traceroute/2130706433".into(), 400, "INVALID_REQUEST"),
        ("/traceroute/exa_mple.com".into(), 400, "INVALID_REQUEST"),
        ("/traceroute/%ff".into(), 400, "INVALID_REQUEST"),
        ("/traceroute/x%00y".into(), 400, "INVALID_REQUEST"),
        ("/traceroute/x%20y".into(), 400, "INVALID_REQUEST"),
        ("/traceroute/fe80::1%25eth0".into(), 400, "INVALID_REQUEST"),
        ("/traceroute/%5B2001:db8::1".into(), 400, "INVALID_REQUEST"),
        ("/traceroute/-lead.example".into(), 400, "INVALID_REQUEST"),
        // addresses no trace can go to
        ("/traceroute/233.252.0.1".into(), 400, "INVALID_REQUEST"),
        ("/traceroute/255.255.255.255".into(), 400, "INVALID_REQUEST"),
        // The directed broadcast of src's own subnet (198.18.1.0/24), as
        // itself and IPv4-mapped: the route lookup says broadcast.
        ("/traceroute/198.18.1.255".into(), 400, "INVALID_REQUEST"),
        (
            "/traceroute/::ffff:198.18.1.255".into(),
            400,
            "INVALID_REQUEST",
        ),
        ("/traceroute/0.0.0.0".into(), 400, "INVALID_REQUEST"),
        ("/traceroute/::".into(), 400, "INVALID_REQUEST"),
        ("/traceroute/ff02::1".into(), 400, "INVALID_REQUEST"),
        ("/traceroute/fe80::1".into(), 400, "INVALID_REQUEST"),
        (format!("/traceroute/{dst}:80"), 400, "INVALID_REQUEST"),
        (long_label, 400, "INVALID_REQUEST"),
        // sizes
        (long_query, 414, "URI_TOO_LONG"),
        (long_path, 414, "URI_TOO_LONG"),
        // unknown endpoints
        ("/".into(), 404, "NOT_FOUND"),
        ("/traceroute".into(), 404, "NOT_FOUND"),
        ("/nope".into(), 404, "NOT_FOUND"),
        ("/%2e%2e/etc/passwd".into(), 404, "NOT_FOUND"),
        ("/health/".into(), 404, "NOT_FOUND"),
        // well-formed, but the resolver / routing says no (5xx, see docs/HTTP_API.md)
        ("/traceroute/nonexistent.invalid".into(), 502, "DNS"),
    ];
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    for (target, status, code) in &cases {
        let r = agent.get(target);
        let body: serde_json::Value = match serde_json::from_slice(&r.body) {
            Ok(v) => v,
            Err(_) => {
                failures.push(format!("{target}: non-JSON body {:?}", r.text()));
                continue;
            }
        };
        if r.status != *status || body["code"] != *code || !body["message"].is_string() {
            failures.push(format!(
                "{:.80}: want {status} {code}, got {} {body}",
                target, r.status
            ));
        }
    }
    // Methods other than GET.
    for (method, path) in [
        ("POST", t.as_str()),
        ("DELETE", "/health"),
        ("PUT", "/metrics"),
    ] {
        let r = request(
            &agent.socket,
            &format!(
                "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ),
        )
        .unwrap();
        if r.status != 405
            || r.json()["code"] != "METHOD_NOT_ALLOWED"
            || r.header("allow") != Some("GET")
        {
            failures.push(format!("{method} {path}: {} {}", r.status, r.text()));
        }
    }
    // Errors of HTTP itself get the same JSON body (the head guard answers
    // them before hyper would with a bare status).
    let many_headers: String = (0..120).map(|i| format!("X-H{i}: v\r\n")).collect();
    for (what, raw, status, code) in [
        (
            "garbage request line",
            "HELLO\r\n\r\n".to_string(),
            400,
            "INVALID_REQUEST",
        ),
        (
            "TLS hello on the socket",
            "\u{16}\u{3}\u{1}\u{2}\u{0}\u{1}\n".to_string(),
            400,
            "INVALID_REQUEST",
        ),
        (
            "header without a colon",
            "GET /health HTTP/1.1\r\nHost: x\r\nbad header\r\n\r\n".to_string(),
            400,
            "INVALID_REQUEST",
        ),
        (
            "HTTP/2 preface",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_string(),
            400,
            "INVALID_REQUEST",
        ),
        (
            "conflicting lengths",
            "GET /health HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab".to_string(),
            400,
            "INVALID_REQUEST",
        ),
        (
            "a signed length",
            "GET /health HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello".to_string(),
            400,
            "INVALID_REQUEST",
        ),
        (
            "a coding hyper does not frame",
            "GET /health HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nhello".to_string(),
            400,
            "INVALID_REQUEST",
        ),
        (
            "120 headers",
            format!("GET /health HTTP/1.1\r\n{many_headers}\r\n"),
            431,
            "HEADERS_TOO_LARGE",
        ),
        (
            "a 420 KB header",
            format!(
                "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "a".repeat(420 * 1024)
            ),
            431,
            "HEADERS_TOO_LARGE",
        ),
    ] {
        let r = raw_exchange(&agent.socket, raw.as_bytes());
        let reply = service_support::parse_reply(&r);
        match reply {
            Ok(r)
                if r.status == status
                    && serde_json::from_slice::<serde_json::Value>(&r.body)
                        .is_ok_and(|b| b["code"] == code && b["message"].is_string()) => {}
            other => failures.push(format!("{what}: want {status} {code}, got {other:?}")),
        }
    }
    // Pipelined: the good request is answered first, then the bad one.
    let both = raw_exchange(
        &agent.socket,
        b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nbad\r\n\r\n",
    );
    let text = String::from_utf8_lossy(&both);
    let (ok, bad) = (text.find("HTTP/1.1 200"), text.find("HTTP/1.1 400"));
    if !matches!((ok, bad), (Some(a), Some(b)) if a < b) || !text.contains("INVALID_REQUEST") {
        failures.push(format!("pipelined good + bad: {text:.300}"));
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(
        agent.metric("traceroute_agent_http_requests_total", "status=\"431\"") >= 2.0,
        "guard answers are counted like any other"
    );
    // None of it ran a trace or hurt the agent.
    assert_eq!(agent.get("/health").status, 200);
    assert_eq!(
        agent.metric("traceroute_agent_runs_total", "protocol=\"UDP\""),
        3.0,
        "only the DNS and the two broadcast cases (refused by the route lookup) reached the tracer"
    );
}

/// Writes `raw` (the server may stop reading part-way) and reads until it closes.
/// A per-probe timeout that cannot fit in the time this agent lets a
/// request probe is a bad request naming both settings, answered at once
/// (not a BUSY that no retry could ever get past); an ignored parameter is
/// logged at INFO, as docs/HTTP_API.md says.
#[test]
fn a_timeout_longer_than_the_request_may_probe_is_a_bad_request_not_busy() {
    // Nothing silent on the path: the trace that fits ends at once.
    let lab = Lab::up(&traceroute_lab::named::three()).unwrap();
    let config = format!("{CONFIG}[api]\nrequest_timeout = \"30s\"\n");
    let agent = Agent::start_with(&lab, "src", Some(&config), &[]);
    let dst = lab.primary("dst", Family::V4).unwrap();
    let started = std::time::Instant::now();
    let r = agent.get(&format!(
        "/traceroute/{dst}?timeout=30000000000&max_ttl=5&traceroute_queries=1&maxttl=5"
    ));
    assert_eq!(r.status, 400, "{}", r.text());
    let body = r.json();
    assert_eq!(body["code"], "INVALID_REQUEST");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("api.request_timeout"), "{message}");
    assert!(message.contains("timeout"), "{message}");
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    // A timeout that fits is traced.
    let r = agent.get(&format!(
        "/traceroute/{dst}?timeout=20000000000&max_ttl=5&traceroute_queries=1&maxttl=5"
    ));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        agent
            .log()
            .contains("ignored unknown or repeated query parameters"),
        "{}",
        agent.log()
    );
}

fn raw_exchange(socket: &std::path::Path, raw: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(raw);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// dst drops UDP: every probe past r4 waits for its whole timeout.
fn black_hole_chain() -> Topology {
    traceroute_lab::named::chain().drop_proto("dst", Proto::Udp, Hook::Input)
}

#[test]
fn client_disconnect_cancels_its_trace() {
    let lab = Lab::up(&black_hole_chain()).unwrap();
    let agent = Agent::start_with(&lab, "src", Some(CONFIG), &[]);
    let dst = lab.primary("dst", Family::V4).unwrap();
    let in_flight = || agent.metric("traceroute_agent_traces_in_flight", "origin=\"api\"");
    // A 20 s per-hop timeout: the trace would take at least 20 s.
    let q = client_query(0, 8, 20_000_000_000, "UDP", 1);
    let mut conn = UnixStream::connect(&agent.socket).unwrap();
    write!(
        conn,
        "GET /traceroute/{dst}?{q} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || in_flight() == 1.0),
        "trace did not start"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(in_flight(), 1.0);
    let dropped = std::time::Instant::now();
    drop(conn);
    assert!(
        eventually(Duration::from_secs(2), || in_flight() == 0.0),
        "the trace kept running after the client left:\n{}",
        agent.get("/metrics").text()
    );
    assert!(dropped.elapsed() < Duration::from_secs(3));
    assert_eq!(
        agent.metric(
            "traceroute_agent_failed_runs_total",
            "origin=\"api\",code=\"CANCELLED\""
        ),
        1.0
    );
    // The flow was released: the same request works again (short timeout).
    let q = client_query(0, 6, 200_000_000, "UDP", 1);
    let r = agent.get(&format!("/traceroute/{dst}?{q}"));
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn two_hundred_concurrent_requests_no_cross_talk_bounded_memory() {
    let lab = Lab::up(&common::topologies::long_chain("svc-long")).unwrap();
    let agent = Agent::start_with(
        &lab,
        "src",
        // The lab's routers do not rate-limit ICMP; tell the agent so.
        Some(
            "capture = \"ebpf\"\nprobes_per_second = 20000\nrouter_icmp_burst = 10000\n\
             router_icmp_per_second = 10000\n[api]\nmax_concurrent_traces = 64\n",
        ),
        &[],
    );
    let path: Vec<IpAddr> = lab
        .path("src", "r10", Family::V4)
        .unwrap()
        .into_iter()
        .map(|hops| hops[0].addr)
        .collect();
    let all: Vec<IpAddr> = path
        .into_iter()
        .chain([lab.addr("r10", "r9", Family::V4).unwrap()])
        .collect();
    let protocols = ["UDP", "ICMP", "TCP"];
    let ask = |i: usize| {
        let k = i % all.len();
        let protocol = protocols[(i / all.len()) % 3];
        let q = client_query(0, 12, 1_000_000_000, protocol, 1);
        let want: Vec<String> = all[..=k].iter().map(ToString::to_string).collect();
        (format!("/traceroute/{}?{q}", all[k]), all[k], want)
    };
    // Warm up (first flows, caches), then the baseline.
    for i in 0..6 {
        let (target, _, _) = ask(i);
        assert_eq!(agent.get(&target).status, 200);
    }
    let baseline = agent.rss_kib();

    let socket = agent.socket.clone();
    let results: Vec<(usize, service_support::Reply)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..200)
            .map(|i| {
                let socket = socket.clone();
                let (target, _, _) = ask(i);
                s.spawn(move || (i, service_support::try_get(&socket, &target).unwrap()))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let (mut ok, mut busy) = (0, 0);
    for (i, r) in &results {
        let (_, dst, want) = ask(*i);
        match r.status {
            200 => {
                let record = r.json();
                assert_valid(&record);
                assert_eq!(
                    record["traceroute"]["runs"][0]["destination"]["ip_address"],
                    dst.to_string(),
                    "request {i}"
                );
                assert_eq!(record["destination"]["hostname"], dst.to_string());
                assert_eq!(hop_addrs(&record, 0), want, "request {i} to {dst}");
                ok += 1;
            }
            503 => {
                assert_eq!(r.json()["code"], "BUSY", "request {i}");
                assert_eq!(r.header("retry-after"), Some("1"));
                busy += 1;
            }
            other => panic!("request {i}: unexpected {other}: {}", r.text()),
        }
    }
    assert_eq!(ok + busy, 200);
    assert!(
        ok >= 64,
        "at least the slots' worth succeeded: {ok} ok, {busy} busy"
    );
    eprintln!("200 concurrent requests: {ok} answered, {busy} busy (503)");

    // Still up, nothing left running, memory back near the baseline.
    assert_eq!(agent.get("/health").status, 200);
    assert!(eventually(Duration::from_secs(5), || agent
        .metric("traceroute_agent_traces_in_flight", "")
        == 0.0));
    std::thread::sleep(Duration::from_secs(1));
    let after = agent.rss_kib();
    eprintln!("VmRSS: baseline {baseline} KiB, after load {after} KiB");
    assert!(
        after < baseline + 20 * 1024,
        "RSS grew from {baseline} KiB to {after} KiB"
    );
    // And a request after the storm is answered correctly.
    let (target, _, want) = ask(10);
    let r = agent.get(&target);
    assert_eq!(r.status, 200);
    assert_eq!(hop_addrs(&r.json(), 0), want);
}

#[test]
fn listeners_socket_mode_stale_socket_and_loopback_tcp() {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    let lab = Lab::up(&traceroute_lab::named::chain()).unwrap();
    // A stale socket left by a dead agent is replaced.
    let dir = service_support::TempDir::new("stale");
    let socket = dir.path("agent.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let mut cmd = lab.command("src", service_support::AGENT).unwrap();
    let mut agent = Agent::spawn(dir, &mut cmd, Some(CONFIG), &["--listen", "127.0.0.1:8089"]);
    let meta = std::fs::symlink_metadata(&agent.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert!(agent.log().contains("removing stale socket"));

    // TCP on the lab node's loopback.
    let health = lab
        .in_netns("src", || {
            let mut s = std::net::TcpStream::connect("127.0.0.1:8089").unwrap();
            s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).unwrap();
            service_support::parse_reply(&buf).unwrap()
        })
        .unwrap();
    assert_eq!(health.status, 200);

    // A second agent on the same socket refuses to start (the first is alive).
    let out = lab
        .command("src", service_support::AGENT)
        .unwrap()
        .args(["serve", "--capture", "socket", "--socket"])
        .arg(&agent.socket)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"));

    // A non-loopback TCP listener needs an explicit opt-in.
    let addr = lab.primary("src", Family::V4).unwrap();
    let out = lab
        .command("src", service_support::AGENT)
        .unwrap()
        .args(["serve", "--no-socket", "--listen", &format!("{addr}:8090")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));

    let status = agent.stop();
    assert!(status.success());
    assert!(!agent.socket.exists(), "socket removed at exit");
}

/// A config target that is a broadcast address on this host (the directed
/// broadcast of src's own subnet, as itself and IPv4-mapped) is refused at
/// load like 255.255.255.255, naming it: `--check-config` exits 2 and
/// `serve` does not start. A name or an address that is only unreachable
/// now is not refused at load.
#[test]
fn a_directed_broadcast_config_target_is_refused_at_load() {
    let lab = Lab::up(&traceroute_lab::named::three()).unwrap();
    let mine = lab.addr("src", "r1", Family::V4).unwrap().to_string();
    let broadcast = format!("{}.255", mine.rsplit_once('.').unwrap().0);
    let dir = service_support::TempDir::new("broadcast");
    let config = dir.path("agent.toml");
    let socket = dir.path("agent.sock");
    let serve = |check: bool| {
        let mut cmd = lab.command("src", common::agent::AGENT).unwrap();
        cmd.arg("serve");
        if check {
            cmd.arg("--check-config");
        }
        cmd.arg("--socket")
            .arg(&socket)
            .arg("--config")
            .arg(&config);
        cmd.output().unwrap()
    };
    for host in [broadcast.clone(), format!("::ffff:{broadcast}")] {
        std::fs::write(
            &config,
            format!(
                "namespace = \"a\"\n[[targets]]\nhost = \"198.18.250.1\"\ninterval = \"10s\"\n\
                 [[targets]]\nhost = \"{host}\"\ninterval = \"10s\"\n"
            ),
        )
        .unwrap();
        for check in [true, false] {
            let out = serve(check);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let why = format!("targets[1] ({host}): {broadcast} is a broadcast address here");
            assert!(!out.status.success(), "{host}: {stderr}");
            if check {
                assert_eq!(out.status.code(), Some(2), "{host}: {stderr}");
            }
            assert!(stderr.contains(&why), "{host} (check {check}): {stderr}");
            assert!(!socket.exists(), "{host}: no listener was left behind");
        }
    }
    // An address with no route now, and a name: accepted (their runs say why).
    std::fs::write(
        &config,
        "namespace = \"a\"\n[[targets]]\nhost = \"198.18.250.1\"\ninterval = \"10s\"\n\
         [[targets]]\nhost = \"dst.example\"\ninterval = \"10s\"\n",
    )
    .unwrap();
    let out = serve(true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
