//! Routers with a slow control plane (`Topology::slow_icmp`): their own
//! ICMP errors leave late, forwarding does not.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use traceroute_lab::{Family, IcmpRateLimit, Lab, Topology, named};

use crate::common::{HopRtts, namespaces_with_prefix, ping_avg_ms, traceroute_rtts};

fn flag(family: Family) -> &'static str {
    match family {
        Family::V4 => "-4",
        Family::V6 => "-6",
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Every RTT of `hop` is at least `delay` (less 5 ms) and below a second.
fn assert_late(hop: &HopRtts, delay: Duration, what: &str) {
    assert!(!hop.rtts_ms.is_empty(), "{what}: no answer: {hop:?}");
    let low = ms(delay) - 5.0;
    for &rtt in &hop.rtts_ms {
        assert!(
            (low..1000.0).contains(&rtt),
            "{what}: {rtt} ms, want {low} ms..1 s: {hop:?}"
        );
    }
}

/// Every RTT of `hop` is below 10 ms.
fn assert_prompt(hop: &HopRtts, what: &str) {
    assert!(!hop.rtts_ms.is_empty(), "{what}: no answer: {hop:?}");
    for &rtt in &hop.rtts_ms {
        assert!(rtt < 10.0, "{what}: {rtt} ms, want < 10 ms: {hop:?}");
    }
}

#[test]
fn slow_routers_answer_late_and_forward_at_once() {
    let lab = Lab::up(&named::slow()).unwrap();
    assert_eq!(lab.icmp_delay("r2").unwrap(), Some(named::SLOW_R2));
    assert_eq!(lab.icmp_delay("r3").unwrap(), Some(named::SLOW_R3));
    for node in ["src", "r1", "r4", "dst"] {
        assert_eq!(lab.icmp_delay(node).unwrap(), None, "{node}");
    }
    for family in [Family::V4, Family::V6] {
        let dst = lab.primary("dst", family).unwrap();
        let hops = traceroute_rtts(
            &lab,
            "src",
            &[flag(family), "-n", "-q3", "-w2", &dst.to_string()],
        );
        let mut expected = lab.expected_hops("src", "dst", family).unwrap();
        expected.push(Some(dst));
        let addrs: Vec<Option<IpAddr>> = hops.iter().map(|h| h.addr).collect();
        assert_eq!(addrs, expected, "{family}: each router once, none silent");
        assert_eq!(hops.len(), 5, "{family}: r1..r4, dst");
        eprintln!("{family}: {hops:?}");
        assert_prompt(&hops[0], &format!("{family} r1"));
        assert_late(&hops[1], named::SLOW_R2, &format!("{family} r2"));
        assert_late(&hops[2], named::SLOW_R3, &format!("{family} r3"));
        // r4's errors and dst's answers cross r3 and r2: forwarding is prompt.
        assert_prompt(&hops[3], &format!("{family} r4"));
        assert_prompt(&hops[4], &format!("{family} dst"));

        let avg = ping_avg_ms(&lab, "src", dst, 4);
        assert!(avg < 10.0, "{family}: ping dst through r2, r3: {avg} ms");
        // Echo replies are not errors: the slow routers answer ping at once.
        for (r, towards_src) in [("r2", "r1"), ("r3", "r2")] {
            let addr = lab.addr(r, towards_src, family).unwrap();
            let avg = ping_avg_ms(&lab, "src", addr, 3);
            assert!(avg < 10.0, "{family}: ping {r}: {avg} ms");
        }
    }
}

#[test]
fn slow_limited_is_late_within_the_rate_limits() {
    let lab = Lab::up(&named::slow_limited()).unwrap();
    for family in [Family::V4, Family::V6] {
        let dst = lab.primary("dst", family).unwrap();
        // One probe per hop: well inside every router's burst.
        let hops = traceroute_rtts(
            &lab,
            "src",
            &[flag(family), "-n", "-q1", "-w2", &dst.to_string()],
        );
        let addrs: Vec<Option<IpAddr>> = hops.iter().map(|h| h.addr).collect();
        let mut expected = lab.expected_hops("src", "dst", family).unwrap();
        expected.push(Some(dst));
        assert_eq!(addrs, expected, "{family}");
        assert_late(&hops[1], named::SLOW_R2, &format!("{family} r2"));
        assert_late(&hops[2], named::SLOW_R3, &format!("{family} r3"));
        assert_prompt(&hops[4], &format!("{family} dst"));
    }
}

#[test]
fn slow_routers_unreachables_are_late_too() {
    let lab = Lab::up(&named::slow()).unwrap();
    for family in [Family::V4, Family::V6] {
        // A UDP probe to r3's own closed port: r3 answers port-unreachable.
        let r3 = lab.addr("r3", "r2", family).unwrap();
        let hops = traceroute_rtts(
            &lab,
            "src",
            &[flag(family), "-n", "-q3", "-w2", "-f3", &r3.to_string()],
        );
        assert_eq!(hops.len(), 1, "{family}: {hops:?}");
        assert_eq!(hops[0].addr, Some(r3), "{family}");
        assert_late(
            &hops[0],
            named::SLOW_R3,
            &format!("{family} r3 unreachable"),
        );
    }
}

/// Sends one UDP datagram of `len` bytes with DF (IPv4) from `node` to
/// `target` on a connected socket and waits up to 2 s for the ICMP error it
/// raises; returns the errno and how long it took.
fn udp_error(lab: &Lab, node: &str, target: SocketAddr, len: usize) -> (Option<i32>, Duration) {
    lab.in_netns(node, move || {
        let bind: SocketAddr = if target.is_ipv4() {
            "0.0.0.0:0".parse().unwrap()
        } else {
            "[::]:0".parse().unwrap()
        };
        let s = UdpSocket::bind(bind).unwrap();
        // Probe: set DF and ignore any path MTU learnt before, so every
        // try reaches the narrow link; errors still count.
        let (level, name, value) = if target.is_ipv4() {
            (
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                libc::IP_PMTUDISC_PROBE,
            )
        } else {
            (
                libc::IPPROTO_IPV6,
                libc::IPV6_MTU_DISCOVER,
                libc::IPV6_PMTUDISC_PROBE,
            )
        };
        // SAFETY: setsockopt with a valid fd and a c_int option value.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                level,
                name,
                (&raw const value).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        s.connect(target).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let start = Instant::now();
        s.send(&vec![0u8; len]).unwrap();
        let mut buf = [0u8; 64];
        let err = s.recv(&mut buf).err().and_then(|e| e.raw_os_error());
        (err, start.elapsed())
    })
    .unwrap()
}

#[test]
fn slow_packet_too_big_is_late() {
    // r1 is slow and the r1–r2 link narrow: r1's "fragmentation needed" /
    // "packet too big" leaves late, while dst's port-unreachable, which
    // r1 forwards, does not.
    let delay = Duration::from_millis(40);
    let t = Topology::new("slow_mtu")
        .host("src")
        .router("r1")
        .router("r2")
        .host("dst")
        .link("src", "r1")
        .link("r1", "r2")
        .link("r2", "dst")
        .link_mtu("r1", "r2", 1280)
        .slow_icmp("r1", delay)
        .icmp_rate_limit_all(IcmpRateLimit::UNLIMITED);
    let lab = Lab::up(&t).unwrap();
    for family in [Family::V4, Family::V6] {
        let dst = SocketAddr::new(lab.primary("dst", family).unwrap(), 9);
        for _ in 0..3 {
            let (err, took) = udp_error(&lab, "src", dst, 100);
            assert_eq!(err, Some(libc::ECONNREFUSED), "{family}: small datagram");
            assert!(took < Duration::from_millis(10), "{family}: {took:?}");
            let (err, took) = udp_error(&lab, "src", dst, 1400);
            assert_eq!(err, Some(libc::EMSGSIZE), "{family}: big datagram");
            assert!(
                took >= delay - Duration::from_millis(5) && took < Duration::from_secs(1),
                "{family}: packet too big after {took:?}"
            );
        }
    }
}

/// Threads of this process inside the network namespace at `path`.
fn threads_in(path: &Path) -> Vec<(u32, String)> {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(path).unwrap().ino();
    let want = format!("net:[{ino}]");
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let tid: u32 = e.file_name().to_str()?.parse().ok()?;
            let ns = std::fs::read_link(e.path().join("ns/net")).ok()?;
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            (ns.to_str()? == want).then(|| (tid, comm.trim().to_string()))
        })
        .collect()
}

#[test]
fn slow_lab_leaves_no_namespace_tun_or_thread() {
    let lab = Lab::up(&named::slow()).unwrap();
    let prefix = lab.prefix().to_string();
    assert_eq!(namespaces_with_prefix(&prefix).len(), 6);
    let mut threads = Vec::new();
    for node in ["r2", "r3"] {
        let ns = lab.namespace(node).unwrap();
        let out = lab
            .exec(node, "ip", ["-o", "link", "show", "dev", "slowicmp"])
            .unwrap();
        assert!(out.status.success(), "{node} has its TUN device");
        let found = threads_in(&Path::new("/run/netns").join(ns));
        assert!(
            found.iter().any(|(_, comm)| comm == "delay-slowicmp"),
            "{node}: {found:?}"
        );
        threads.extend(found);
    }
    let out = lab
        .exec("r1", "ip", ["-o", "link", "show", "dev", "slowicmp"])
        .unwrap();
    assert!(!out.status.success(), "r1 is not slow");
    drop(lab);
    assert!(namespaces_with_prefix(&prefix).is_empty());
    for (tid, comm) in threads {
        assert!(
            !Path::new(&format!("/proc/self/task/{tid}")).exists(),
            "thread {tid} ({comm}) still runs"
        );
    }
    // Nothing leaked into the root namespace.
    let out = std::process::Command::new("ip")
        .args(["-o", "link", "show", "dev", "slowicmp"])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "no slowicmp device in the root namespace"
    );
}

#[test]
fn slow_icmp_and_a_delayed_link_add_up() {
    // r2 is slow (30 ms) and behind a link delayed 10 ms each way: its
    // errors take the TUN detour first, then the delayed link.
    let t = Topology::new("slow_delay")
        .host("src")
        .router("r1")
        .router("r2")
        .host("dst")
        .link("src", "r1")
        .link_delayed("r1", "r2", Duration::from_millis(10))
        .link("r2", "dst")
        .slow_icmp("r2", Duration::from_millis(30))
        .icmp_rate_limit_all(IcmpRateLimit::UNLIMITED);
    let lab = Lab::up(&t).unwrap();
    for family in [Family::V4, Family::V6] {
        let dst = lab.primary("dst", family).unwrap();
        let hops = traceroute_rtts(
            &lab,
            "src",
            &[flag(family), "-n", "-q3", "-w2", &dst.to_string()],
        );
        let addrs: Vec<Option<IpAddr>> = hops.iter().map(|h| h.addr).collect();
        let mut expected = lab.expected_hops("src", "dst", family).unwrap();
        expected.push(Some(dst));
        assert_eq!(addrs, expected, "{family}: each router once");
        assert_prompt(&hops[0], &format!("{family} r1"));
        assert_late(&hops[1], Duration::from_millis(50), &format!("{family} r2"));
        for &rtt in hops[1].rtts_ms.iter().chain(&hops[2].rtts_ms) {
            assert!(rtt < 100.0, "{family}: {hops:?}");
        }
        assert_late(
            &hops[2],
            Duration::from_millis(20),
            &format!("{family} dst"),
        );
        let r2 = lab.addr("r2", "r1", family).unwrap();
        let avg = ping_avg_ms(&lab, "src", r2, 3);
        assert!((18.0..45.0).contains(&avg), "{family}: ping r2: {avg} ms");
    }
}
