//! Target addresses (`Topology::targets`), the `fanout` and `fanout_deep`
//! topologies and `three`; and which named topologies keep the kernel's
//! default ICMP rate limits.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

use traceroute_lab::{Family, IcmpRateLimit, Lab, Topology, named};

use crate::common::{pings, sysctl, tcp_connect, traceroute};

const DESTINATIONS: [&str; 4] = ["d1", "d2", "d3", "d4"];

#[test]
fn fanout_targets_are_reachable_from_src() {
    let lab = Lab::up(&named::fanout()).unwrap();
    let src = lab.primary("src", Family::V4).unwrap();
    let gw = lab.addr("gw", "src", Family::V4).unwrap();

    // A trace first, while gw's rate-limit tokens are all there.
    let target = lab.targets("d3").unwrap()[17];
    let hops = traceroute(&lab, "src", &["-n", "-q1", "-w1", &target.to_string()]);
    assert_eq!(lab.expected_hops_to("src", target).unwrap(), [Some(gw)]);
    assert_eq!(
        hops,
        [Some(gw), Some(target)],
        "the target answers for itself"
    );
    assert_eq!(lab.owner(target), Some("d3"));

    for d in DESTINATIONS {
        let targets = lab.targets(d).unwrap();
        assert_eq!(targets.len(), usize::from(named::FANOUT_TARGETS), "{d}");
        for &t in &[targets[0], targets[100], targets[255]] {
            assert!(pings(&lab, "src", t), "ping {t} ({d})");
            assert_eq!(lab.owner(t), Some(d));
        }
        let line = tcp_connect(&lab, "src", SocketAddr::new(targets[42], 80))
            .unwrap_or_else(|e| panic!("TCP {}:80 ({d}): {e}", targets[42]));
        assert!(line.starts_with(&format!("{src}:")), "{d}: {line}");
    }
    assert!(lab.targets("src").unwrap().is_empty());
    let all: Vec<IpAddr> = DESTINATIONS
        .iter()
        .flat_map(|d| lab.targets(d).unwrap())
        .collect();
    let mut unique = all.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), all.len(), "no address is used twice");
}

#[test]
fn fanout_keeps_the_kernel_default_icmp_rate_limits() {
    let lab = Lab::up(&named::fanout()).unwrap();
    for node in lab.nodes() {
        assert_eq!(sysctl(&lab, node, "net.ipv4.icmp_ratelimit"), "1000");
        assert_eq!(sysctl(&lab, node, "net.ipv4.icmp_msgs_per_sec"), "1000");
        assert_eq!(sysctl(&lab, node, "net.ipv4.icmp_msgs_burst"), "50");
    }
    // Per peer: a burst of 6, then one per second. 20 quick probes get
    // about 6 answers; the bound leaves room for a slow machine.
    let target = lab.targets("d1").unwrap()[0];
    let answered = time_exceeded_for_ttl1_probes(&lab, target, 20);
    eprintln!("gw answered {answered} of 20 quick probes");
    assert!(
        (1..=10).contains(&answered),
        "gw answered {answered} of 20 probes"
    );
}

#[test]
fn bench_topologies_keep_the_kernel_default_icmp_rate_limits() {
    for topology in [
        named::chain_limited(),
        named::delay_silent(),
        named::fanout_deep(),
        named::slow_limited(),
        named::three_limited(),
    ] {
        let lab = Lab::up(&topology).unwrap();
        for node in lab.nodes() {
            let name = topology.name();
            assert_eq!(
                sysctl(&lab, node, "net.ipv4.icmp_ratelimit"),
                "1000",
                "{name} {node}"
            );
            assert_eq!(sysctl(&lab, node, "net.ipv4.icmp_msgs_per_sec"), "1000");
            assert_eq!(sysctl(&lab, node, "net.ipv4.icmp_msgs_burst"), "50");
            assert_ne!(sysctl(&lab, node, "net.ipv6.icmp.ratelimit"), "0");
        }
    }
    // Their unlimited twins switch limiting off.
    for topology in [
        named::chain(),
        named::fanout_deep_unlimited(),
        named::slow(),
        named::three(),
    ] {
        let lab = Lab::up(&topology).unwrap();
        for node in lab.nodes() {
            let name = topology.name();
            assert_eq!(
                sysctl(&lab, node, "net.ipv4.icmp_ratelimit"),
                "0",
                "{name} {node}"
            );
        }
    }
}

#[test]
fn fanout_deep_targets_sit_behind_three_routers() {
    let lab = Lab::up(&named::fanout_deep_unlimited()).unwrap();
    let src = lab.primary("src", Family::V4).unwrap();
    let routers: Vec<IpAddr> = [("gw", "src"), ("r2", "gw"), ("r3", "r2")]
        .iter()
        .map(|(r, towards)| lab.addr(r, towards, Family::V4).unwrap())
        .collect();
    for d in DESTINATIONS {
        let targets = lab.targets(d).unwrap();
        assert_eq!(
            targets.len(),
            usize::from(named::FANOUT_DEEP_TARGETS),
            "{d}"
        );
        let target = targets[63];
        assert_eq!(lab.owner(target), Some(d));
        let hops = traceroute(&lab, "src", &["-n", "-q1", "-w1", &target.to_string()]);
        let mut expected: Vec<Option<IpAddr>> = routers.iter().copied().map(Some).collect();
        assert_eq!(lab.expected_hops_to("src", target).unwrap(), expected);
        expected.push(Some(target));
        assert_eq!(hops, expected, "{d}");
        let line = tcp_connect(&lab, "src", SocketAddr::new(targets[7], 80))
            .unwrap_or_else(|e| panic!("TCP {}:80 ({d}): {e}", targets[7]));
        assert!(line.starts_with(&format!("{src}:")), "{d}: {line}");
        assert!(
            pings(&lab, "src", lab.primary(d, Family::V6).unwrap()),
            "{d} v6"
        );
    }
}

#[test]
fn three_routers_before_the_targets() {
    let lab = Lab::up(&named::three()).unwrap();
    let targets = lab.targets("dst").unwrap();
    assert_eq!(targets.len(), usize::from(named::THREE_TARGETS));
    assert_eq!(targets[19].to_string(), "198.19.128.20");
    for family in [Family::V4, Family::V6] {
        let dst = lab.primary("dst", family).unwrap();
        let flag = if family == Family::V4 { "-4" } else { "-6" };
        let hops = traceroute(&lab, "src", &[flag, "-n", "-q1", "-w1", &dst.to_string()]);
        let mut expected = lab.expected_hops("src", "dst", family).unwrap();
        expected.push(Some(dst));
        assert_eq!(hops, expected, "{family}");
        assert_eq!(hops.len(), 4, "{family}: r1, r2, r3, dst");
    }
    let target = targets[19];
    let hops = traceroute(&lab, "src", &["-n", "-q1", "-w1", &target.to_string()]);
    let mut expected = lab.expected_hops_to("src", target).unwrap();
    expected.push(Some(target));
    assert_eq!(hops, expected);
    assert!(
        hops.iter().all(Option::is_some),
        "no silent router: {hops:?}"
    );
    tcp_connect(&lab, "src", SocketAddr::new(target, 80)).unwrap();
}

#[test]
fn without_rate_limits_every_probe_is_answered() {
    // The control for the test above, and targets outside `fanout`.
    let topology = Topology::new("targets")
        .host("src")
        .router("r1")
        .host("dst")
        .link("src", "r1")
        .link("r1", "dst")
        .targets("dst", 3)
        .icmp_rate_limit_all(IcmpRateLimit::UNLIMITED);
    let lab = Lab::up(&topology).unwrap();
    let target = lab.targets("dst").unwrap()[2];
    assert_eq!(target.to_string(), "198.19.128.3");
    assert!(pings(&lab, "src", target));
    assert_eq!(time_exceeded_for_ttl1_probes(&lab, target, 20), 20);
}

/// Sends `probes` UDP datagrams with TTL 1 from src to `target` back to
/// back, then counts for a second the ICMP time-exceeded messages src
/// receives that quote a datagram to `target`.
fn time_exceeded_for_ttl1_probes(lab: &Lab, target: IpAddr, probes: u16) -> usize {
    lab.in_netns("src", move || {
        // SAFETY: a plain socket(2) call; the fd is owned by `icmp` below.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::IPPROTO_ICMP,
            )
        };
        assert!(
            fd >= 0,
            "raw ICMP socket: {}",
            std::io::Error::last_os_error()
        );
        // A raw socket is a datagram socket too: UdpSocket's recv and read
        // timeout are plain recv(2) and SO_RCVTIMEO.
        // SAFETY: `fd` is a fresh socket nobody else owns.
        let icmp = unsafe { UdpSocket::from_raw_fd(fd) };
        let udp = UdpSocket::bind("0.0.0.0:0").unwrap();
        udp.set_ttl(1).unwrap();
        for i in 0..probes {
            udp.send_to(b"lab probe", (target, 33434 + i)).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut count = 0;
        let mut buf = [0u8; 1500];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            icmp.set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let Ok(n) = icmp.recv(&mut buf) else { break };
            if quotes_time_exceeded_to(&buf[..n], target) {
                count += 1;
            }
        }
        count
    })
    .unwrap()
}

/// `packet` (IPv4 header, then ICMP) is a time-exceeded quoting a packet to `dst`.
fn quotes_time_exceeded_to(packet: &[u8], dst: IpAddr) -> bool {
    let ihl = usize::from(packet.first().map_or(0, |b| b & 0x0f)) * 4;
    let quoted = ihl + 8; // the quoted IPv4 header follows the ICMP header
    let Some(quoted_dst) = packet.get(quoted + 16..quoted + 20) else {
        return false;
    };
    let quoted_dst: [u8; 4] = quoted_dst.try_into().expect("4 bytes");
    packet[ihl] == 11 && IpAddr::from(quoted_dst) == dst
}
