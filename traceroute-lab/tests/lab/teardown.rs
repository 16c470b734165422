//! Nothing is left behind: on drop, on panic, on error, after SIGKILL.

use std::panic::AssertUnwindSafe;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use traceroute_lab::{Family, Lab, Proto, Topology, cleanup_stale, named};

use crate::common::{namespaces_with_prefix, pings};

#[test]
fn drop_removes_namespaces_threads_and_processes() {
    let lab = Lab::up(&named::delay().udp_echo("dst", 7)).unwrap();
    let prefix = lab.prefix().to_string();
    assert_eq!(namespaces_with_prefix(&prefix).len(), 4);
    let pid = lab.spawn("src", Command::new("sleep").arg("60")).unwrap();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(lab);
    assert!(namespaces_with_prefix(&prefix).is_empty());
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "spawned process killed and reaped"
    );
}

#[test]
fn panic_inside_a_lab_leaves_nothing_behind() {
    let prefix = Mutex::new(String::new());
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let lab = Lab::up(&named::chain()).unwrap();
        *prefix.lock().unwrap() = lab.prefix().to_string();
        panic!("test failure inside the lab");
    }));
    assert!(result.is_err());
    let prefix = prefix.into_inner().unwrap();
    assert!(!prefix.is_empty());
    assert!(namespaces_with_prefix(&prefix).is_empty());
}

#[test]
fn failed_setup_removes_what_was_built() {
    // Two listeners on one port: the second bind fails after the namespaces,
    // links and routes exist.
    let topo = Topology::new("bad")
        .host("fail_a")
        .host("fail_b")
        .link("fail_a", "fail_b")
        .tcp_listen("fail_b", 80)
        .tcp_listen("fail_b", 80);
    let err = Lab::up(&topo).unwrap_err();
    assert!(err.to_string().contains("tcp80"), "{err}");
    let own = format!("trl{}-", std::process::id());
    let left: Vec<_> = namespaces_with_prefix(&own)
        .into_iter()
        .filter(|n| n.ends_with("-fail_a") || n.ends_with("-fail_b"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn parallel_labs_do_not_collide() {
    let prefixes = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                let lab = Lab::up(&named::chain()).unwrap();
                prefixes.lock().unwrap().push(lab.prefix().to_string());
                for family in [Family::V4, Family::V6] {
                    assert!(pings(&lab, "src", lab.primary("dst", family).unwrap()));
                }
                let dst = lab.primary("dst", Family::V4).unwrap();
                let line = crate::common::tcp_connect(&lab, "src", (dst, 80).into()).unwrap();
                assert!(line.starts_with("198.18.1.1:"), "{line}");
                assert_eq!(
                    lab.peers("dst", Proto::Tcp, 80).unwrap().len(),
                    1,
                    "each lab has its own listener"
                );
            });
        }
    });
    let mut prefixes = prefixes.into_inner().unwrap();
    prefixes.sort();
    prefixes.dedup();
    assert_eq!(prefixes.len(), 3);
    for p in &prefixes {
        assert!(namespaces_with_prefix(p).is_empty());
    }
}

#[test]
fn cleanup_stale_removes_labs_of_dead_processes_only() {
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = format!("trl{dead}-0-ghost");
    let status = Command::new("ip")
        .args(["netns", "add", &stale])
        .status()
        .unwrap();
    assert!(status.success());
    let live = Lab::up(&Topology::new("live").host("h")).unwrap();
    let removed = cleanup_stale().unwrap();
    assert!(removed.contains(&stale), "{removed:?}");
    assert!(namespaces_with_prefix(&stale).is_empty());
    assert_eq!(
        namespaces_with_prefix(live.prefix()).len(),
        1,
        "a live owner's lab is kept"
    );
    drop(live);
    std::thread::sleep(Duration::from_millis(10));
}
