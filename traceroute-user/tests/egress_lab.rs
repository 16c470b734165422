//! `-s` (source address) and `-i` (interface) on a host with two uplinks:
//! the multihomed lab sends dst's network through r1, keeps a worse route
//! through r2, and (added here) a policy rule sends traffic from src's
//! address on the r2 link through r2. A pinned trace must go where the
//! kernel sends that source or interface — first hop r2, probes from the r2
//! link's address, capture on that interface — for every way of probing
//! (eBPF or socket capture, raw SYNs, connect(), datagram sockets), over
//! IPv4 and IPv6; and what can never work exits 2 with the reason. Needs
//! root (labs).

mod common;

use common::agent::{run, trace};
use serde_json::Value;
use traceroute_lab::{Family, Lab};

/// The multihomed lab with the r2 detours in place: a worse route to dst's
/// network through r2, and a rule for src's r2-link address (table 100).
fn lab() -> Lab {
    let lab = Lab::up(&traceroute_lab::named::multihomed()).unwrap();
    let ifname = lab.ifname("src", "r2").unwrap().to_string();
    for family in [Family::V4, Family::V6] {
        let (flag, dst_net) = match family {
            Family::V4 => ("-4", "198.18.5.0/24"),
            Family::V6 => ("-6", "2001:db8:0:5::/64"),
        };
        let gw = lab.addr("r2", "src", family).unwrap().to_string();
        let mine = lab.addr("src", "r2", family).unwrap().to_string();
        for args in [
            vec![
                flag, "route", "append", dst_net, "via", &gw, "dev", &ifname, "metric", "3000",
            ],
            vec![flag, "route", "add", "default", "via", &gw, "table", "100"],
            vec![flag, "rule", "add", "from", &mine, "lookup", "100"],
        ] {
            let out = lab.exec("src", "ip", &args).unwrap();
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    lab
}

/// First hop, interface, and source address of every run of `record`.
fn first_hops(record: &Value, what: &str) -> Vec<(String, String, String)> {
    let interface = record["source"]["via"]["interface"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    record["traceroute"]["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| {
            assert_eq!(run["destination_reached"], true, "{what}: {run:#}");
            (
                run["hops"][0]["ip_address"].as_str().unwrap().to_string(),
                interface.clone(),
                run["source"]["ip_address"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn pinned_traces_leave_by_the_pinned_interface_and_source() {
    let lab = lab();
    let via_r1 = lab.ifname("src", "r1").unwrap().to_string();
    let via_r2 = lab.ifname("src", "r2").unwrap().to_string();
    // ping sockets for --unprivileged -I, as systemd sets it.
    lab.exec(
        "src",
        "sysctl",
        ["-w", "net.ipv4.ping_group_range=0 2147483647"],
    )
    .unwrap();
    for family in [Family::V4, Family::V6] {
        let dst = lab.primary("dst", family).unwrap().to_string();
        let r1 = lab.addr("r1", "src", family).unwrap().to_string();
        let r2 = lab.addr("r2", "src", family).unwrap().to_string();
        let mine_r1 = lab.addr("src", "r1", family).unwrap().to_string();
        let mine_r2 = lab.addr("src", "r2", family).unwrap().to_string();
        let by_r1 = (r1.clone(), via_r1.clone(), mine_r1);
        let by_r2 = (r2.clone(), via_r2.clone(), mine_r2.clone());

        // Unpinned: the main table's route through r1.
        let traced = trace(&lab, "src", &["-U", "-q", "1", "--timeout-ms", "500", &dst]);
        assert_eq!(first_hops(&traced.record, &dst), [by_r1], "{dst}");

        let pinned: [&[&str]; 9] = [
            &["-U", "-i", &via_r2],
            &["-I", "-s", &mine_r2],
            &["-T", "-p", "80", "-i", &via_r2],
            &["-T", "-p", "80", "-s", &mine_r2],
            &["-U", "--capture", "socket", "-s", &mine_r2],
            &["-T", "-p", "80", "--tcp-method", "sack", "-i", &via_r2],
            &[
                "-T",
                "-p",
                "80",
                "--tcp-method",
                "syn_socket",
                "-s",
                &mine_r2,
            ],
            &["-U", "--unprivileged", "-i", &via_r2],
            &["-I", "--unprivileged", "-s", &mine_r2],
        ];
        for args in pinned {
            let mut all = args.to_vec();
            all.extend(["-q", "2", "--timeout-ms", "500", &dst]);
            let traced = trace(&lab, "src", &all);
            assert_eq!(
                first_hops(&traced.record, &format!("{all:?}")),
                [by_r2.clone(), by_r2.clone()],
                "{all:?}"
            );
        }
        // Several flows and MDA keep the pin.
        let traced = trace(
            &lab,
            "src",
            &[
                "-U",
                "--paths",
                "3",
                "-q",
                "1",
                "--timeout-ms",
                "500",
                "-s",
                &mine_r2,
                &dst,
            ],
        );
        assert_eq!(
            first_hops(&traced.record, "--paths 3"),
            vec![by_r2.clone(); 3]
        );
        // Both pinned, through the interface the source's rule does not
        // name. IPv4: the interface wins the route, the source is kept,
        // and the answers to it (which come back by r2) are captured.
        // IPv6 takes the interface as a preference only and would send
        // through r2: refused, rather than traced elsewhere.
        let both = [
            "-U",
            "-q",
            "1",
            "--timeout-ms",
            "500",
            "-s",
            &mine_r2,
            "-i",
            &via_r1,
            &dst,
        ];
        match family {
            Family::V4 => {
                let traced = trace(&lab, "src", &both);
                assert_eq!(
                    first_hops(&traced.record, "-s and -i"),
                    [(r1.clone(), via_r1.clone(), mine_r2.clone())],
                    "{dst}: from the r2 address out through r1"
                );
            }
            Family::V6 => {
                let out = run(&lab, "src", &both);
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(
                    stderr.contains(&format!(
                        "no route to {dst} through {via_r1} (the kernel sends it through {via_r2})"
                    )),
                    "{stderr}"
                );
                assert!(!out.status.success());
            }
        }
    }
}

#[test]
fn what_cannot_be_pinned_exits_2_with_the_reason() {
    let lab = Lab::up(&traceroute_lab::named::multihomed()).unwrap();
    let dst = lab.primary_v4("dst").unwrap().to_string();
    let dst6 = lab.primary_v6("dst").unwrap().to_string();
    let mine6 = lab.addr("src", "r2", Family::V6).unwrap().to_string();
    // The directed broadcast of src's own subnet is not a host either.
    let mine = lab.addr("src", "r1", Family::V4).unwrap().to_string();
    let broadcast = format!("{}.255", mine.rsplit_once('.').unwrap().0);
    let mapped = format!("::ffff:{broadcast}");
    for (args, why) in [
        (
            vec![broadcast.as_str()],
            format!("{broadcast} is a broadcast address here"),
        ),
        (
            vec![mapped.as_str()],
            format!("{broadcast} is a broadcast address here"),
        ),
        (
            vec!["-s", dst.as_str(), dst.as_str()],
            format!("source address {dst} is not an address of this host"),
        ),
        (
            vec!["-i", "nope0", dst.as_str()],
            "no interface named \"nope0\"".to_string(),
        ),
        (
            vec!["-i", "eth0:1", dst.as_str()],
            "is not an interface name".to_string(),
        ),
        (
            vec!["-4", "-s", mine6.as_str(), "dst.example"],
            "of the other IP version".to_string(),
        ),
        (
            vec!["-s", mine6.as_str(), dst.as_str()],
            "are not of the same IP version".to_string(),
        ),
        (
            vec!["-s", "224.0.0.1", dst.as_str()],
            "cannot be a source address".to_string(),
        ),
    ] {
        let out = run(&lab, "src", &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(&why), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // IPv6 has no on-link guess: no route through an interface is said so.
    let to_r2 = lab.ifname("src", "r2").unwrap().to_string();
    let out = run(&lab, "src", &["-i", &to_r2, &dst6]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("no route to {dst6} through {to_r2}")),
        "{stderr}"
    );
    assert!(!out.status.success());
}
