//! Helpers shared by the lab tests.

use std::io::BufRead;
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use traceroute_lab::Lab;

/// Runs traceroute in `node` and returns one entry per TTL: the answering
/// address, or `None` for `*`.
pub fn traceroute(lab: &Lab, node: &str, args: &[&str]) -> Vec<Option<IpAddr>> {
    let out = lab
        .exec(node, "traceroute", args)
        .expect("running traceroute");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "traceroute {args:?} failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .skip(1)
        .map(|line| {
            let mut tokens = line.split_whitespace();
            tokens
                .next()
                .and_then(|t| t.parse::<u32>().ok())
                .unwrap_or_else(|| panic!("odd line {line:?} in\n{text}"));
            match tokens.next() {
                Some("*") | None => None,
                Some(a) => Some(
                    a.parse()
                        .unwrap_or_else(|_| panic!("odd address in {line:?}")),
                ),
            }
        })
        .collect()
}

/// One traceroute line: the (first) answering address, `None` for `*`,
/// and the RTTs in ms of the probes that were answered.
#[derive(Debug, Clone, PartialEq)]
pub struct HopRtts {
    pub addr: Option<IpAddr>,
    pub rtts_ms: Vec<f64>,
}

/// Runs traceroute in `node` and returns one [`HopRtts`] per TTL.
pub fn traceroute_rtts(lab: &Lab, node: &str, args: &[&str]) -> Vec<HopRtts> {
    let out = lab
        .exec(node, "traceroute", args)
        .expect("running traceroute");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "traceroute {args:?} failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .skip(1)
        .map(|line| {
            // " 2  198.18.2.2  30.512 ms  30.301 ms *"
            let tokens: Vec<&str> = line.split_whitespace().collect();
            tokens
                .first()
                .and_then(|t| t.parse::<u32>().ok())
                .unwrap_or_else(|| panic!("odd line {line:?} in\n{text}"));
            let addr = tokens[1..].iter().find_map(|t| t.parse().ok());
            let rtts_ms = tokens
                .windows(2)
                .filter(|w| w[1] == "ms")
                .map(|w| {
                    w[0].parse()
                        .unwrap_or_else(|_| panic!("odd RTT in {line:?}"))
                })
                .collect();
            HopRtts { addr, rtts_ms }
        })
        .collect()
}

/// Average RTT in ms reported by `ping -c count`.
pub fn ping_avg_ms(lab: &Lab, node: &str, target: IpAddr, count: u32) -> f64 {
    let (count, target) = (count.to_string(), target.to_string());
    let out = lab
        .exec(
            node,
            "ping",
            ["-n", "-c", &count, "-i", "0.2", "-W", "2", &target],
        )
        .expect("running ping");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ping {target} from {node} failed:\n{text}"
    );
    // rtt min/avg/max/mdev = 40.1/40.3/40.9/0.2 ms
    let stats = text
        .lines()
        .find(|l| l.contains("min/avg/max"))
        .unwrap_or_else(|| panic!("no rtt line in\n{text}"));
    let values = stats.split('=').nth(1).expect("rtt values").trim();
    values
        .split('/')
        .nth(1)
        .expect("avg")
        .parse()
        .expect("numeric avg")
}

/// True if one ping from `node` to `target` gets an answer within a second.
pub fn pings(lab: &Lab, node: &str, target: IpAddr) -> bool {
    let out = lab
        .exec(
            node,
            "ping",
            ["-n", "-c", "1", "-W", "1", &target.to_string()],
        )
        .expect("running ping");
    out.status.success()
}

/// TCP connect from `node`; Ok(first line the server sent) or the error.
pub fn tcp_connect(lab: &Lab, node: &str, target: SocketAddr) -> std::io::Result<String> {
    lab.in_netns(node, || {
        let s = TcpStream::connect_timeout(&target, Duration::from_secs(1))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        // The listener sends one line and keeps the connection open, as a
        // server waiting for its client would.
        let mut line = String::new();
        std::io::BufReader::new(s).read_line(&mut line)?;
        Ok(line.trim().to_string())
    })
    .expect("entering namespace")
}

/// Sends one datagram from `node` on a connected socket and waits up to a
/// second for the answer: the echoed bytes, or the error (ECONNREFUSED after
/// an ICMP port-unreachable, a timeout if nothing came back).
pub fn udp_roundtrip(lab: &Lab, node: &str, target: SocketAddr) -> std::io::Result<Vec<u8>> {
    lab.in_netns(node, || {
        let bind: SocketAddr = if target.is_ipv4() {
            "0.0.0.0:0".parse().unwrap()
        } else {
            "[::]:0".parse().unwrap()
        };
        let s = UdpSocket::bind(bind)?;
        s.connect(target)?;
        s.set_read_timeout(Some(Duration::from_secs(1)))?;
        s.send(b"traceroute-lab")?;
        let mut buf = [0u8; 64];
        let n = s.recv(&mut buf)?;
        Ok(buf[..n].to_vec())
    })
    .expect("entering namespace")
}

/// Reads a sysctl inside a node.
pub fn sysctl(lab: &Lab, node: &str, key: &str) -> String {
    let out = lab
        .exec(node, "sysctl", ["-n", key])
        .expect("running sysctl");
    assert!(
        out.status.success(),
        "sysctl {key}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Namespaces currently present whose name starts with `prefix`.
pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
