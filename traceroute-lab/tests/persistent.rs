//! Persistent labs: up / list / down round trip through a real keeper
//! process. `harness = false` because the keeper is this binary re-executed,
//! and its `main` must hand over to `keeper::maybe_run` first.

use std::path::Path;
use std::process::Command;

use traceroute_lab::keeper::{self, STATE_DIR, down_persistent, list_persistent, up_persistent_as};

fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

fn main() {
    keeper::maybe_run();
    // Behave like a libtest binary towards `--list` and name filters.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("persistent_round_trip: test");
        return;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if !filters.is_empty()
        && !filters
            .iter()
            .any(|f| "persistent_round_trip".contains(f.as_str()))
    {
        return;
    }
    // A name of our own, so a developer's `lab up delay` is never touched.
    let name = format!("t{}", std::process::id());
    let lab = up_persistent_as("delay", &name).expect("up_persistent");
    assert!(lab.ready);
    assert_eq!(lab.topology, "delay");
    let namespaces: Vec<String> = lab.nodes.iter().map(|n| n.namespace.clone()).collect();
    assert_eq!(namespaces.len(), 4);
    for ns in &namespaces {
        assert!(ns.starts_with(&format!("trl-{name}-")), "{ns}");
        assert!(netns_exists(ns), "{ns} exists");
    }
    assert!(Path::new(STATE_DIR).join(format!("{name}.json")).exists());

    let listed = list_persistent().unwrap();
    assert!(
        listed.iter().any(|l| l.name == name && l.pid == lab.pid),
        "{listed:?}"
    );
    let err = up_persistent_as("delay", &name).unwrap_err().to_string();
    assert!(err.contains("already up"), "{err}");

    // The keeper's delay forwarders are alive: ~40 ms across the lab.
    let dst = lab
        .nodes
        .iter()
        .find(|n| n.name == "dst")
        .unwrap()
        .interfaces[0]
        .ipv4
        .unwrap();
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &format!("trl-{name}-src"),
            "ping",
            "-n",
            "-c",
            "2",
            "-i",
            "0.2",
            "-W",
            "2",
        ])
        .arg(dst.to_string())
        .output()
        .expect("ping (Debian package iputils-ping)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let avg: f64 = text
        .lines()
        .find(|l| l.contains("min/avg/max"))
        .unwrap()
        .split('/')
        .nth(4)
        .unwrap()
        .parse()
        .unwrap();
    assert!((35.0..80.0).contains(&avg), "avg {avg} ms");

    assert!(down_persistent(&name).unwrap(), "something was torn down");
    for ns in &namespaces {
        assert!(!netns_exists(ns), "{ns} removed");
    }
    assert!(!Path::new(STATE_DIR).join(format!("{name}.json")).exists());
    assert!(
        !Path::new(&format!("/proc/{}", lab.pid)).exists() || is_zombie(lab.pid),
        "keeper exited"
    );
    assert!(!list_persistent().unwrap().iter().any(|l| l.name == name));
    assert!(!down_persistent(&name).unwrap(), "nothing left to remove");

    assert!(up_persistent_as("no-such-topology", &name).is_err());
    assert!(up_persistent_as("delay", "bad-name").is_err());
    println!("persistent lab round trip: ok");
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
    })
}
