//! The service across its own lifecycle: a reload that lowers the API's
//! concurrency, a shutdown with traces still running, and a restart that
//! overlaps the old process's exit. Needs root.

mod common;
mod service_support;

use std::time::Duration;

use service_support::{Agent, client_query, eventually};
use traceroute_lab::{Family, Lab};

const CONFIG: &str = "capture = \"ebpf\"\n[api]\nmax_concurrent_traces = 32\n";

#[test]
fn health_counts_traces_in_flight_after_a_reload_lowers_the_limit() {
    let lab = Lab::up(&traceroute_lab::named::chain()).unwrap();
    let mut agent = Agent::start_with(&lab, "src", Some(CONFIG), &[]);
    let config = agent.dir.path("config.toml");
    std::fs::write(
        &config,
        "capture = \"ebpf\"\n[api]\nmax_concurrent_traces = 4\n",
    )
    .unwrap();
    agent.signal(libc::SIGHUP);
    assert!(eventually(Duration::from_secs(5), || agent
        .log()
        .contains("config reloaded")));
    let health = agent.get("/health").json();
    assert_eq!(health["api_traces_in_flight"], 0, "{health}");
    assert!(agent.stop().success());
}

#[test]
fn requests_during_the_grace_period_get_503_shutting_down() {
    let lab = Lab::up(&traceroute_lab::named::chain()).unwrap();
    let mut agent = Agent::start_with(&lab, "src", Some(CONFIG), &[]);
    // Nobody owns this address: the trace waits out its probes' timeouts.
    let nobody = "198.18.5.99";
    let q = client_query(0, 8, 1_000_000_000, "UDP", 3);
    let socket = agent.socket.clone();
    let running = std::thread::spawn(move || {
        service_support::try_get(&socket, &format!("/traceroute/{nobody}?{q}"))
    });
    assert!(eventually(Duration::from_secs(5), || agent
        .metric("traceroute_agent_traces_in_flight", "origin=\"api\"")
        == 1.0));
    agent.signal(libc::SIGTERM);
    assert!(eventually(Duration::from_secs(2), || agent
        .log()
        .contains("shutting down")));
    // A new request while that trace still runs: a clear answer, not ECONNREFUSED.
    let dst = lab.primary("dst", Family::V4).unwrap();
    let late = service_support::try_get(&agent.socket, &format!("/traceroute/{dst}"))
        .expect("still listening during the grace period");
    assert_eq!(late.status, 503, "{}", late.text());
    assert_eq!(late.json()["code"], "SHUTTING_DOWN");
    let status = agent.wait(Duration::from_secs(10));
    assert!(status.success(), "{status}\n{}", agent.log());
    let first = running
        .join()
        .unwrap()
        .expect("the running trace got an answer");
    assert!(
        [200, 503].contains(&first.status),
        "{}: {}",
        first.status,
        first.text()
    );
    assert!(!agent.socket.exists(), "socket removed at exit");
}

#[test]
fn an_exiting_agent_leaves_a_newer_agents_socket_alone() {
    let lab = Lab::up(&traceroute_lab::named::chain()).unwrap();
    let mut old = Agent::start_with(&lab, "src", Some(CONFIG), &[]);
    // A newer process found the path, took it over and bound its own socket
    // while the old one was still exiting.
    std::fs::remove_file(&old.socket).unwrap();
    let newer = std::os::unix::net::UnixListener::bind(&old.socket).unwrap();
    assert!(old.stop().success(), "{}", old.log());
    assert!(old.socket.exists(), "the newer socket was removed");
    assert!(
        std::os::unix::net::UnixStream::connect(&old.socket).is_ok(),
        "the path still reaches the newer listener"
    );
    assert!(
        old.log().contains("belongs to another process"),
        "{}",
        old.log()
    );
    drop(newer);
    std::fs::remove_file(&old.socket).unwrap();
}

#[test]
fn a_recreated_interface_is_captured_again() {
    let lab = Lab::up(&traceroute_lab::named::chain()).unwrap();
    let mut agent = Agent::start_with(&lab, "src", Some(CONFIG), &[]);
    let dst = lab.primary("dst", Family::V4).unwrap();
    let want = common::agent::expected(&lab, "src", "dst", dst);
    let target = format!(
        "/traceroute/{dst}?{}",
        client_query(80, 8, 500_000_000, "TCP", 1)
    );
    assert_eq!(
        service_support::hop_addrs(&agent.get(&target).json(), 0),
        want
    );

    // Delete src's link to r1 and make it again: same names and addresses,
    // new interface indexes.
    let (ours, theirs) = (
        lab.ifname("src", "r1").unwrap(),
        lab.ifname("r1", "src").unwrap(),
    );
    let (our_addr, gw) = (
        lab.ipv4("src", "r1").unwrap(),
        lab.ipv4("r1", "src").unwrap(),
    );
    let r1_ns = lab.namespace("r1").unwrap().to_string();
    let our_cidr = format!("{our_addr}/24");
    let gw_cidr = format!("{gw}/24");
    let gw_text = gw.to_string();
    let steps: Vec<(&str, Vec<&str>)> = vec![
        ("src", vec!["link", "del", ours]),
        (
            "src",
            vec![
                "link", "add", ours, "type", "veth", "peer", "name", theirs, "netns", &r1_ns,
            ],
        ),
        ("src", vec!["addr", "add", &our_cidr, "dev", ours]),
        ("src", vec!["link", "set", ours, "up"]),
        ("r1", vec!["addr", "add", &gw_cidr, "dev", theirs]),
        ("r1", vec!["link", "set", theirs, "up"]),
        ("src", vec!["route", "replace", "default", "via", &gw_text]),
    ];
    for (node, args) in steps {
        let out = lab.exec(node, "ip", &args).unwrap();
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The route cache follows the change; the capture attaches to the new interface.
    assert!(
        eventually(Duration::from_secs(10), || {
            let record = agent.get(&target).json();
            service_support::hop_addrs(&record, 0) == want
                && record["traceroute"]["runs"][0]["hops"][0]["timestamp_source"] == "kernel"
        }),
        "{}",
        agent.log()
    );
    assert!(agent.stop().success(), "{}", agent.log());
}

fn scheduled(output: &std::path::Path, dst: std::net::IpAddr) -> String {
    format!(
        "capture = \"ebpf\"\nrouter_icmp_burst = 10000\nrouter_icmp_per_second = 10000\n\
         [output]\npath = \"{}\"\n\
         [[targets]]\nhost = \"{dst}\"\nprotocol = \"icmp\"\ninterval = \"200ms\"\nqueries = 1\nmax_ttl = 8\n",
        output.display()
    )
}

#[test]
fn an_output_that_cannot_be_opened_is_retried_until_it_can() {
    let lab = Lab::up(&traceroute_lab::named::chain()).unwrap();
    let dir = service_support::TempDir::new("sink");
    let first = dir.path("first.jsonl");
    let dst = lab.primary("dst", Family::V4).unwrap();
    let mut agent = Agent::start_with(&lab, "src", Some(&scheduled(&first, dst)), &[]);
    assert!(eventually(Duration::from_secs(10), || {
        !service_support::lines(&first).is_empty()
    }));

    // The new file's directory does not exist yet: records stay in the old file.
    let later = dir.path("later");
    let second = later.join("second.jsonl");
    std::fs::write(agent.dir.path("config.toml"), scheduled(&second, dst)).unwrap();
    agent.signal(libc::SIGHUP);
    assert!(eventually(Duration::from_secs(5), || agent
        .metric("traceroute_agent_sink_open_failures_total", "")
        >= 1.0));
    let before = service_support::lines(&first).len();
    assert!(eventually(
        Duration::from_secs(5),
        || service_support::lines(&first).len() > before
    ));

    // Once it can be opened, the next SIGHUP switches (and so would the retry).
    std::fs::create_dir(&later).unwrap();
    agent.signal(libc::SIGHUP);
    assert!(
        eventually(Duration::from_secs(10), || !service_support::lines(&second)
            .is_empty()),
        "{}",
        agent.log()
    );
    // Its directory removed, the same path cannot be reopened on SIGHUP:
    // counted like any output that cannot be opened.
    let failures = agent.metric("traceroute_agent_sink_open_failures_total", "");
    std::fs::remove_dir_all(&later).unwrap();
    agent.signal(libc::SIGHUP);
    assert!(
        eventually(Duration::from_secs(5), || agent
            .metric("traceroute_agent_sink_open_failures_total", "")
            > failures),
        "{}",
        agent.log()
    );
    assert!(agent.stop().success());
}

#[test]
fn records_that_cannot_be_written_are_counted_as_lost() {
    let lab = Lab::up(&traceroute_lab::named::chain()).unwrap();
    let dst = lab.primary("dst", Family::V4).unwrap();
    // Every write to /dev/full fails with ENOSPC, as on a full disk.
    let full = std::path::Path::new("/dev/full");
    let mut agent = Agent::start_with(&lab, "src", Some(&scheduled(full, dst)), &[]);
    assert!(
        eventually(Duration::from_secs(10), || agent
            .metric("traceroute_agent_records_lost_total", "")
            >= 2.0),
        "{}",
        agent.log()
    );
    assert!(agent.stop().success());
}

/// `ip netns exec` gives a namespace its own /etc/netns/NS/resolv.conf.
struct NetnsResolver(std::path::PathBuf);

impl NetnsResolver {
    fn new(namespace: &str, nameserver: std::net::IpAddr) -> NetnsResolver {
        let dir = std::path::Path::new("/etc/netns").join(namespace);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("resolv.conf"),
            format!("nameserver {nameserver}\noptions timeout:10 attempts:1\n"),
        )
        .unwrap();
        NetnsResolver(dir)
    }
}

impl Drop for NetnsResolver {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_black_holed_resolver_never_starves_traces_of_addresses() {
    use traceroute_lab::{Hook, IcmpRateLimit, Proto, Topology};
    // dst drops every UDP packet: DNS queries to it are never answered.
    let topology = Topology::new("dnshole")
        .host("src")
        .router("r1")
        .host("dst")
        .link("src", "r1")
        .link("r1", "dst")
        .drop_proto("dst", Proto::Udp, Hook::Input)
        .icmp_rate_limit_all(IcmpRateLimit::UNLIMITED);
    let lab = Lab::up(&topology).unwrap();
    let dst = lab.primary("dst", Family::V4).unwrap();
    let _resolver = NetnsResolver::new(lab.namespace("src").unwrap(), dst);
    let agent = Agent::start_with(&lab, "src", Some(CONFIG), &[]);
    let socket = agent.socket.clone();
    let names: Vec<_> = (0..40)
        .map(|i| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                service_support::try_get(
                    &socket,
                    &format!("/traceroute/host{i}.blackhole.test?protocol=ICMP"),
                )
                .unwrap()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // Meanwhile a trace of an address gets a trace slot at once.
    let started = std::time::Instant::now();
    let literal = agent.get(&format!(
        "/traceroute/{dst}?protocol=ICMP&traceroute_queries=1"
    ));
    assert_eq!(literal.status, 200, "{}", literal.text());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let (mut busy, mut timeout) = (0, 0);
    for name in names {
        let reply = name.join().unwrap();
        match (reply.status, reply.json()["code"].as_str().unwrap_or("")) {
            (503, "BUSY") => busy += 1,
            (504, "TIMEOUT") => timeout += 1,
            other => panic!("a name lookup: {other:?} {}", reply.text()),
        }
    }
    assert_eq!(timeout, 16, "the lookups that got a slot timed out");
    assert_eq!(busy, 24, "the others were refused at once");
}

#[test]
fn idle_connections_make_room_for_requests_and_are_closed_in_time() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    let lab = Lab::up(&traceroute_lab::named::chain()).unwrap();
    let config = "capture = \"ebpf\"\n[api]\nmax_connections = 6\n";
    let mut agent = Agent::start_with(&lab, "src", Some(config), &[]);
    let closed_within = |stream: &mut UnixStream, limit: Duration| {
        stream.set_read_timeout(Some(limit)).unwrap();
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                // The agent closed with a dripped byte still unread in its
                // queue: Linux then resets the peer (unix_release_sock).
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    };
    // Every slot taken: idle clients, and one sending its request a byte a
    // second.
    let mut idle: Vec<UnixStream> = (0..5)
        .map(|_| UnixStream::connect(&agent.socket).unwrap())
        .collect();
    let mut slow = UnixStream::connect(&agent.socket).unwrap();
    let dripping = std::thread::spawn({
        let mut slow = slow.try_clone().unwrap();
        move || {
            for b in b"GET /health HTTP/1.1\r\nHost: x\r\n" {
                if slow.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    // A request still gets in: the connection that waited longest for one
    // (the first idle client) gives up its slot.
    let r = service_support::try_get(&agent.socket, "/health").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        closed_within(&mut idle[0], Duration::from_secs(2)),
        "the idlest connection was shed"
    );
    assert!(agent.metric("traceroute_agent_api_connections_shed_total", "") >= 1.0);
    // Header-read timeout (5 s) closes the other idle ones and the slow one.
    for stream in &mut idle[1..] {
        assert!(
            closed_within(stream, Duration::from_secs(8)),
            "idle connection left open"
        );
    }
    assert!(
        closed_within(&mut slow, Duration::from_secs(8)),
        "slow client left open"
    );
    dripping.join().unwrap();
    assert!(agent.stop().success());
}

/// An attacker holding 200 idle connections on a socket that allows 32,
/// reopening whatever the agent closes: a well-behaved client asking
/// `/health` ten times a second is still answered.
#[test]
fn the_api_stays_available_while_idle_connections_are_held() {
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::{AtomicBool, Ordering};

    let lab = Lab::up(&traceroute_lab::named::chain()).unwrap();
    let config = "capture = \"ebpf\"\n[api]\nmax_connections = 32\n";
    let agent = Agent::start_with(&lab, "src", Some(config), &[]);
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let attacker = std::thread::spawn({
        let socket = agent.socket.clone();
        let stop = std::sync::Arc::clone(&stop);
        move || {
            let mut held: Vec<UnixStream> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                // Drop what the agent closed, open what is missing.
                held.retain(|s| {
                    let _ = s.set_nonblocking(true);
                    let mut byte = [0u8; 1];
                    matches!(
                        std::io::Read::read(&mut &*s, &mut byte),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
                    )
                });
                while held.len() < 200 {
                    match UnixStream::connect(&socket) {
                        Ok(s) => held.push(s),
                        Err(_) => break,
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });
    std::thread::sleep(Duration::from_secs(1));
    let (mut asked, mut answered) = (0, 0);
    let until = std::time::Instant::now() + Duration::from_secs(6);
    while std::time::Instant::now() < until {
        asked += 1;
        let started = std::time::Instant::now();
        let ok = service_support::try_get(&agent.socket, "/health").is_ok_and(|r| r.status == 200);
        if ok && started.elapsed() < Duration::from_secs(1) {
            answered += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    attacker.join().unwrap();
    eprintln!("availability under 200 held connections: {answered} of {asked}");
    assert!(
        answered * 10 >= asked * 9,
        "{answered} of {asked} answered within 1 s"
    );
    assert!(agent.metric("traceroute_agent_api_connections_shed_total", "") > 0.0);
}
