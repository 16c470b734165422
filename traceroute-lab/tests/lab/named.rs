//! The named topologies all come up; the IPv6-only one works end to end.

use std::net::SocketAddr;

use traceroute_lab::{Family, Lab, NAMES, named};

use crate::common::{pings, tcp_connect, traceroute};

#[test]
fn every_named_topology_comes_up_and_reaches_dst() {
    std::thread::scope(|s| {
        for &name in NAMES {
            s.spawn(move || {
                let lab = Lab::up(&named(name).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(lab.topology_name(), name);
                for family in [Family::V4, Family::V6] {
                    // The fan-outs have no `dst`; their targets are the
                    // destinations.
                    let dst = match lab.primary("dst", family) {
                        Ok(dst) => dst,
                        Err(_) if name.starts_with("fanout") && family == Family::V4 => {
                            *lab.targets("d4").unwrap().last().unwrap()
                        }
                        Err(_) => continue,
                    };
                    assert!(
                        pings(&lab, "src", dst),
                        "{name}: src reaches {dst} over {family}"
                    );
                }
            });
        }
    });
    assert!(named("nope").is_none());
}

#[test]
fn ipv6_only_chain() {
    let lab = Lab::up(&named::ipv6()).unwrap();
    assert!(lab.primary("dst", Family::V4).is_err(), "no IPv4 at all");
    let dst = lab.primary("dst", Family::V6).unwrap();
    assert_eq!(dst.to_string(), "2001:db8:0:4::2");
    let hops = traceroute(&lab, "src", &["-6", "-n", "-q1", "-w1", &dst.to_string()]);
    let mut expected = lab.expected_hops("src", "dst", Family::V6).unwrap();
    expected.push(Some(dst));
    assert_eq!(hops, expected);
    assert_eq!(hops.len(), 4);
    let line = tcp_connect(&lab, "src", SocketAddr::new(dst, 80)).unwrap();
    assert!(line.starts_with("[2001:db8:0:1::1]:"), "{line}");
    let out = lab
        .exec("r1", "ip", ["-4", "addr", "show", "dev", "to-r2"])
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("inet "),
        "no IPv4 address configured"
    );
}
