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
