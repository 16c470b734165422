//! Firewall drops, rate-limit sysctls, forwarding settings, helpers.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use traceroute_lab::{Family, Hook, IcmpRateLimit, Lab, Proto, Topology};

use crate::common::{pings, sysctl, tcp_connect, udp_roundtrip};

fn line() -> Topology {
    Topology::new("line")
        .host("src")
        .router("r1")
        .host("dst")
        .link("src", "r1")
        .link("r1", "dst")
        .tcp_listen("dst", 80)
}

#[test]
fn dropping_icmp_at_destination_blocks_ping_not_tcp() {
    let lab = Lab::up(&line().drop_proto("dst", Proto::Icmp, Hook::Input)).unwrap();
    for family in [Family::V4, Family::V6] {
        let dst = lab.primary("dst", family).unwrap();
        assert!(!pings(&lab, "src", dst), "{family}: ICMP is dropped at dst");
        assert!(
            pings(&lab, "src", lab.addr("r1", "dst", family).unwrap()),
            "{family}: r1 still answers"
        );
        tcp_connect(&lab, "src", SocketAddr::new(dst, 80))
            .unwrap_or_else(|e| panic!("{family}: TCP must pass: {e}"));
    }
}

#[test]
fn dropping_udp_at_destination_silences_closed_ports() {
    let plain = Lab::up(&line()).unwrap();
    let dropping = Lab::up(&line().drop_proto("dst", Proto::Udp, Hook::Input)).unwrap();
    for family in [Family::V4, Family::V6] {
        let target = |lab: &Lab| SocketAddr::new(lab.primary("dst", family).unwrap(), 9);
        let err = udp_roundtrip(&plain, "src", target(&plain)).unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::ConnectionRefused,
            "{family}: control"
        );
        let err = udp_roundtrip(&dropping, "src", target(&dropping)).unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{family}: expected silence, got {err}"
        );
        assert!(pings(&dropping, "src", target(&dropping).ip()));
    }
}

#[test]
fn dropping_tcp_in_forward_hook_blocks_transit_only() {
    let lab = Lab::up(&line().drop_proto("r1", Proto::Tcp, Hook::Forward)).unwrap();
    let dst = lab.primary("dst", Family::V4).unwrap();
    let err = tcp_connect(&lab, "src", SocketAddr::new(dst, 80)).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock),
        "got {err}"
    );
    assert!(pings(&lab, "src", dst));
    // r1's own (closed) ports still answer RST: input is not filtered.
    let r1 = lab.addr("r1", "src", Family::V4).unwrap();
    let err = tcp_connect(&lab, "src", SocketAddr::new(r1, 80)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
}

#[test]
fn rate_limit_and_router_sysctls_are_set_per_namespace() {
    // Millisecond values the kernel keeps in jiffies: multiples of 4 ms and
    // 10 ms read back unchanged with HZ 100, 250 and 1000.
    let limit = IcmpRateLimit {
        ratelimit_ms: Some(200),
        msgs_per_sec: Some(77),
        msgs_burst: Some(33),
        v6_ratelimit_ms: Some(600),
    };
    let topo = line()
        .icmp_rate_limit("r1", limit)
        .sysctl("dst", "net.ipv4.ip_default_ttl", "42");
    let lab = Lab::up(&topo).unwrap();
    assert_eq!(sysctl(&lab, "r1", "net.ipv4.icmp_ratelimit"), "200");
    assert_eq!(sysctl(&lab, "r1", "net.ipv4.icmp_msgs_per_sec"), "77");
    assert_eq!(sysctl(&lab, "r1", "net.ipv4.icmp_msgs_burst"), "33");
    assert_eq!(sysctl(&lab, "r1", "net.ipv6.icmp.ratelimit"), "600");
    assert_ne!(
        sysctl(&lab, "src", "net.ipv4.icmp_ratelimit"),
        "200",
        "only r1 was declared"
    );
    assert_eq!(sysctl(&lab, "dst", "net.ipv4.ip_default_ttl"), "42");
    for key in ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"] {
        assert_eq!(sysctl(&lab, "r1", key), "1", "{key} on a router");
        assert_eq!(sysctl(&lab, "src", key), "0", "{key} on a host");
    }
    // L4 (5-tuple) ECMP hashing; see base_sysctls for why policy 3.
    assert_eq!(
        sysctl(&lab, "r1", "net.ipv4.fib_multipath_hash_policy"),
        "3"
    );
    assert_eq!(
        sysctl(&lab, "r1", "net.ipv4.fib_multipath_hash_fields"),
        "55"
    );
    assert_eq!(
        sysctl(&lab, "r1", "net.ipv6.fib_multipath_hash_policy"),
        "3"
    );
}

#[test]
fn unlimited_rate_limit_helper() {
    let lab = Lab::up(&line().icmp_rate_limit_all(IcmpRateLimit::UNLIMITED)).unwrap();
    for node in ["src", "r1", "dst"] {
        assert_eq!(sysctl(&lab, node, "net.ipv4.icmp_ratelimit"), "0");
        assert_eq!(sysctl(&lab, node, "net.ipv6.icmp.ratelimit"), "0");
    }
}

#[test]
fn spawn_runs_in_the_namespace_and_stop_collects_output() {
    let lab = Lab::up(&line()).unwrap();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "ip -br addr show dev to-r1; exec sleep 30"])
        .stdout(Stdio::piped());
    let pid = lab.spawn("src", &mut cmd).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let out = lab.stop(pid).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("198.18.1.1/24"), "ran inside src: {text}");
    assert!(lab.stop(pid).is_err(), "already stopped");
}

#[test]
fn static_route_override_replaces_the_ecmp_group() {
    let dst_net = "198.18.6.0/24";
    let lab =
        Lab::up(&traceroute_lab::named::ecmp().static_route("r1", dst_net, &["r2b"])).unwrap();
    let out = lab.exec("r1", "ip", ["route", "show", dst_net]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("via 198.18.3.2 dev to-r2b") && !text.contains("nexthop"),
        "{text}"
    );
    let expected = lab.expected_hops("src", "dst", Family::V4).unwrap();
    assert_eq!(
        expected[1],
        Some(lab.addr("r2b", "r1", Family::V4).unwrap().to_owned())
    );
    let dst = lab.primary("dst", Family::V4).unwrap().to_string();
    for sport in 40000..40008 {
        let sport = format!("--sport={sport}");
        let hops = crate::common::traceroute(
            &lab,
            "src",
            &["-n", "-U", "-q1", "-w1", "-f", "2", "-m", "2", &sport, &dst],
        );
        assert_eq!(hops, [expected[1]], "every flow goes through r2b");
    }
}

#[test]
fn missing_tool_error_names_the_package() {
    let lab = Lab::up(&Topology::new("one").host("h")).unwrap();
    let err = lab
        .exec("h", "no-such-tool-for-lab", ["x"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("install the Debian package"), "{err}");
}
