//! The `chain` topology: routes, the silent router, open/closed ports.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};

use traceroute_lab::{Family, Lab, named};

use crate::common::{tcp_connect, traceroute, udp_roundtrip};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn traceroute_v4_shows_declared_routers_and_star_at_silent() {
    let lab = Lab::up(&named::chain()).unwrap();
    let dst = lab.primary("dst", Family::V4).unwrap();
    let hops = traceroute(&lab, "src", &["-n", "-q1", "-w1", &dst.to_string()]);
    let mut expected = lab.expected_hops("src", "dst", Family::V4).unwrap();
    expected.push(Some(dst));
    assert_eq!(hops, expected);
    // The documented addressing, independently of the ground-truth helper.
    assert_eq!(
        hops,
        [
            Some(ip("198.18.1.2")),
            Some(ip("198.18.2.2")),
            None,
            Some(ip("198.18.4.2")),
            Some(ip("198.18.5.2"))
        ]
    );
}

#[test]
fn traceroute_v6_shows_declared_routers_and_star_at_silent() {
    let lab = Lab::up(&named::chain()).unwrap();
    let dst = lab.primary("dst", Family::V6).unwrap();
    let hops = traceroute(&lab, "src", &["-6", "-n", "-q1", "-w1", &dst.to_string()]);
    let mut expected = lab.expected_hops("src", "dst", Family::V6).unwrap();
    expected.push(Some(dst));
    assert_eq!(hops, expected);
    assert_eq!(hops[2], None, "r3 is silent");
    assert_eq!(hops[0], Some(ip("2001:db8:0:1::2")));
}

#[test]
fn reverse_path_ground_truth() {
    let lab = Lab::up(&named::chain()).unwrap();
    let src = lab.primary("src", Family::V4).unwrap();
    let hops = traceroute(&lab, "dst", &["-n", "-q1", "-w1", &src.to_string()]);
    let mut expected = lab.expected_hops("dst", "src", Family::V4).unwrap();
    expected.push(Some(src));
    assert_eq!(hops, expected);
    assert_eq!(
        hops[0],
        Some(ip("198.18.5.1")),
        "r4 answers from its interface facing dst"
    );
}

#[test]
fn open_port_accepts_closed_port_refuses() {
    let lab = Lab::up(&named::chain()).unwrap();
    for family in [Family::V4, Family::V6] {
        let dst = lab.primary("dst", family).unwrap();
        let line = tcp_connect(&lab, "src", SocketAddr::new(dst, 80)).expect("port 80 is open");
        // The listener tells the peer what it saw: no NAT here, so src itself.
        let seen: SocketAddr = line.parse().unwrap();
        assert_eq!(seen.ip(), lab.primary("src", family).unwrap());
        let err = tcp_connect(&lab, "src", SocketAddr::new(dst, 81)).unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::ConnectionRefused,
            "{family}: port 81 must answer RST"
        );
        let err = udp_roundtrip(&lab, "src", SocketAddr::new(dst, 9)).unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::ConnectionRefused,
            "{family}: closed UDP port must answer port-unreachable"
        );
    }
}

#[test]
fn udp_traceroute_to_fixed_closed_port_ends_at_dst() {
    let lab = Lab::up(&named::chain()).unwrap();
    let dst = lab.primary("dst", Family::V4).unwrap().to_string();
    // -U: one fixed destination port; reaching dst ends with port-unreachable.
    let hops = traceroute(&lab, "src", &["-n", "-U", "-p", "9", "-q1", "-w1", &dst]);
    assert_eq!(hops.last(), Some(&Some(ip(&dst))));
    assert_eq!(hops.len(), 5);
}

#[test]
fn accessors() {
    let lab = Lab::up(&named::chain()).unwrap();
    assert!(lab.namespace("r1").unwrap().starts_with(lab.prefix()));
    assert_eq!(lab.ifname("r1", "r2").unwrap(), "to-r2");
    assert_eq!(lab.ipv4("r2", "r1").unwrap().to_string(), "198.18.2.2");
    assert_eq!(lab.ipv6("r2", "r3").unwrap().to_string(), "2001:db8:0:3::1");
    assert_eq!(
        lab.subnet("r2", "r3", Family::V4).unwrap().to_string(),
        "198.18.3.0/24"
    );
    assert!(lab.ipv4("src", "dst").is_err());
    assert!(lab.namespace("nope").is_err());
    let ifaces = lab.interfaces("r1").unwrap();
    assert_eq!(
        ifaces.iter().map(|i| i.peer.as_str()).collect::<Vec<_>>(),
        ["src", "r2"]
    );
    // The interface really exists in the namespace under that name.
    let out = lab
        .exec("r1", "ip", ["-br", "addr", "show", "dev", "to-r2"])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("198.18.2.1/24") && text.contains("2001:db8:0:2::1/64"),
        "{text}"
    );
}
