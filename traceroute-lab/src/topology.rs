//! Declarative description of a lab: nodes, links and per-node features.
//!
//! A [`Topology`] is plain data; nothing touches the system until
//! [`Lab::up`](crate::Lab::up). Node names are checked there too, so the
//! builder methods can be chained without `?` at every step.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use crate::LabError;

/// What a node does with packets that are not addressed to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// Never forwards; routes only its own traffic.
    Host,
    /// Forwards (v4 and v6), hashes ECMP on L4 ports and answers ICMP errors
    /// from the interface the offending packet came in on.
    Router,
}

/// Address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// Transport protocol selector for firewall rules and listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    /// ICMP and ICMPv6 (neighbour discovery stays allowed so IPv6 keeps working).
    Icmp,
}

/// Netfilter hook a drop rule is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// Packets addressed to the node itself.
    Input,
    /// Packets the node routes through.
    Forward,
    /// Packets the node originates.
    Output,
}

/// ICMP rate-limit sysctls of one namespace; `None` keeps the kernel default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IcmpRateLimit {
    /// `net.ipv4.icmp_ratelimit` (ms between errors to one peer; 0 = off).
    pub ratelimit_ms: Option<u32>,
    /// `net.ipv4.icmp_msgs_per_sec` (global budget, shared with ICMPv6).
    pub msgs_per_sec: Option<u32>,
    /// `net.ipv4.icmp_msgs_burst`.
    pub msgs_burst: Option<u32>,
    /// `net.ipv6.icmp.ratelimit` (ms between errors to one peer; 0 = off).
    pub v6_ratelimit_ms: Option<u32>,
}

impl IcmpRateLimit {
    /// No per-peer limit and a global budget far above anything a test sends,
    /// so parallel tracers see every hop.
    pub const UNLIMITED: IcmpRateLimit = IcmpRateLimit {
        ratelimit_ms: Some(0),
        msgs_per_sec: Some(1_000_000),
        msgs_burst: Some(1_000_000),
        v6_ratelimit_ms: Some(0),
    };

    /// Whatever the kernel gives a new network namespace: nothing is set.
    /// Real routers rate-limit, and so do these. On Linux 6.18 a fresh
    /// namespace has `net.ipv4.icmp_ratelimit=1000` (per peer: a burst of
    /// 6 errors, then one per second — time-exceeded and unreachable, see
    /// `icmp_ratemask`), `net.ipv4.icmp_msgs_per_sec=1000`,
    /// `net.ipv4.icmp_msgs_burst=50` (global budget) and
    /// `net.ipv6.icmp.ratelimit=100` (older kernels: 1000). The values are
    /// the namespace's, not copied from the host's.
    pub const KERNEL_DEFAULT: IcmpRateLimit = IcmpRateLimit {
        ratelimit_ms: None,
        msgs_per_sec: None,
        msgs_burst: None,
        v6_ratelimit_ms: None,
    };

    /// The sysctl names this type sets, in the order `sysctls` lists them.
    pub const KEYS: [&'static str; 4] = [
        "net.ipv4.icmp_ratelimit",
        "net.ipv4.icmp_msgs_per_sec",
        "net.ipv4.icmp_msgs_burst",
        "net.ipv6.icmp.ratelimit",
    ];

    pub(crate) fn sysctls(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut push = |key: &str, v: Option<u32>| {
            if let Some(v) = v {
                out.push((key.to_string(), v.to_string()));
            }
        };
        let [v4, per_sec, burst, v6] = Self::KEYS;
        push(v4, self.ratelimit_ms);
        push(per_sec, self.msgs_per_sec);
        push(burst, self.msgs_burst);
        push(v6, self.v6_ratelimit_ms);
        out
    }
}

/// An IP prefix such as `198.18.3.0/24` or `2001:db8:0:3::/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl Prefix {
    pub fn new(addr: IpAddr, len: u8) -> Result<Prefix, LabError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(LabError::Topology(format!(
                "prefix length {len} too long for {addr}"
            )));
        }
        Ok(Prefix {
            addr: mask(addr, len),
            len,
        })
    }

    pub fn family(&self) -> Family {
        if self.addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.len) == self.addr
    }
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            IpAddr::V6((bits & m).into())
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Prefix {
    type Err = LabError;
    fn from_str(s: &str) -> Result<Prefix, LabError> {
        let bad = || LabError::Topology(format!("bad prefix {s:?} (want ADDR/LEN)"));
        let (addr, len) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let len: u8 = len.parse().map_err(|_| bad())?;
        Prefix::new(addr, len)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct NodeSpec {
    pub name: String,
    pub kind: NodeKind,
}

#[derive(Debug, Clone)]
pub(crate) struct LinkSpec {
    pub a: String,
    pub b: String,
    pub delay: Option<Duration>,
}

#[derive(Debug, Clone)]
pub(crate) struct StaticRoute {
    pub node: String,
    pub prefix: String,
    pub via: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct DropRule {
    pub node: String,
    pub proto: Proto,
    pub hook: Hook,
}

/// A declared network: build it with chained calls, then pass it to
/// [`Lab::up`](crate::Lab::up).
///
/// Addressing is automatic and deterministic. Links are numbered from 1 in the
/// order they are declared; link `i` gets `198.18.i.0/24` and
/// `2001:db8:0:i::/64` (i in hex), the first endpoint `.1`/`::1`, the second
/// `.2`/`::2`. Links on the inside of a NAT router use `198.19.i.0/24` and
/// `2001:db8:1:i::/64` instead, and nodes outside get no route to them.
///
/// Routes are shortest paths over the link graph (hosts never transit), with
/// ECMP next-hop groups where several neighbours are equally close, hashed
/// on the 5-tuple so different flows may take different branches while each
/// flow keeps to one.
///
/// Extra target addresses ([`targets`](Self::targets)) come from
/// `198.19.128.0/17`: the k-th node given targets (0-based, in the order of
/// the `targets` calls) owns the block `198.19.(128 + 4k).0/22` and its
/// targets are the block's first addresses from `.1` on.
#[derive(Debug, Clone)]
pub struct Topology {
    pub(crate) name: String,
    pub(crate) nodes: Vec<NodeSpec>,
    pub(crate) links: Vec<LinkSpec>,
    pub(crate) ipv4: bool,
    pub(crate) ipv6: bool,
    pub(crate) silent: Vec<String>,
    pub(crate) tcp_listen: Vec<(String, u16)>,
    pub(crate) udp_echo: Vec<(String, u16)>,
    pub(crate) nat: Vec<(String, String)>,
    pub(crate) dscp_rewrites: Vec<(String, u8)>,
    pub(crate) source_rewrites: Vec<(String, String, String)>,
    pub(crate) syn_proxies: Vec<(String, u16)>,
    pub(crate) syn_limits: Vec<(String, u16, u32, u32)>,
    pub(crate) link_mtus: Vec<(String, String, u32)>,
    pub(crate) rate_limits: Vec<(String, IcmpRateLimit)>,
    pub(crate) default_rate_limit: Option<IcmpRateLimit>,
    pub(crate) drops: Vec<DropRule>,
    pub(crate) static_routes: Vec<StaticRoute>,
    pub(crate) sysctls: Vec<(String, String, String)>,
    pub(crate) targets: Vec<(String, u16)>,
    pub(crate) slow_icmp: Vec<(String, Duration)>,
}

impl Topology {
    /// `name` is informational (shown in errors and persistent-lab state).
    pub fn new(name: &str) -> Topology {
        Topology {
            name: name.to_string(),
            nodes: Vec::new(),
            links: Vec::new(),
            ipv4: true,
            ipv6: true,
            silent: Vec::new(),
            tcp_listen: Vec::new(),
            udp_echo: Vec::new(),
            nat: Vec::new(),
            dscp_rewrites: Vec::new(),
            source_rewrites: Vec::new(),
            syn_proxies: Vec::new(),
            syn_limits: Vec::new(),
            link_mtus: Vec::new(),
            rate_limits: Vec::new(),
            default_rate_limit: None,
            drops: Vec::new(),
            static_routes: Vec::new(),
            sysctls: Vec::new(),
            targets: Vec::new(),
            slow_icmp: Vec::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Node names in declaration order.
    pub fn node_names(&self) -> Vec<&str> {
        self.nodes.iter().map(|n| n.name.as_str()).collect()
    }

    /// Adds an end host.
    pub fn host(mut self, name: &str) -> Topology {
        self.nodes.push(NodeSpec {
            name: name.to_string(),
            kind: NodeKind::Host,
        });
        self
    }

    /// Adds a router.
    pub fn router(mut self, name: &str) -> Topology {
        self.nodes.push(NodeSpec {
            name: name.to_string(),
            kind: NodeKind::Router,
        });
        self
    }

    /// Connects two nodes with a veth pair.
    pub fn link(mut self, a: &str, b: &str) -> Topology {
        self.links.push(LinkSpec {
            a: a.to_string(),
            b: b.to_string(),
            delay: None,
        });
        self
    }

    /// Connects two nodes with a link that delays every packet by `delay` in
    /// each direction (so a ping across it gains twice `delay`).
    ///
    /// There is no `sch_netem` here, so each endpoint routes its egress over
    /// this link through a TUN device served by a forwarder thread; endpoints
    /// of delayed links therefore get forwarding enabled even if they are hosts.
    pub fn link_delayed(mut self, a: &str, b: &str, delay: Duration) -> Topology {
        self.links.push(LinkSpec {
            a: a.to_string(),
            b: b.to_string(),
            delay: Some(delay),
        });
        self
    }

    /// Sets the MTU of the `a`–`b` link (both ends); IPv6 needs 1280 at
    /// least. Routers answer bigger packets with "fragmentation needed" /
    /// "packet too big".
    pub fn link_mtu(mut self, a: &str, b: &str, mtu: u32) -> Topology {
        self.link_mtus.push((a.to_string(), b.to_string(), mtu));
        self
    }

    /// Enables or disables IPv4 addressing (on by default).
    pub fn ipv4(mut self, on: bool) -> Topology {
        self.ipv4 = on;
        self
    }

    /// Enables or disables IPv6 addressing (on by default).
    pub fn ipv6(mut self, on: bool) -> Topology {
        self.ipv6 = on;
        self
    }

    /// The node still forwards but never sends time-exceeded or unreachable
    /// errors, so traceroute shows `*` for it.
    pub fn silent(mut self, node: &str) -> Topology {
        self.silent.push(node.to_string());
        self
    }

    /// A TCP listener on `[::]:port` (v4 and v6). Each accepted connection is
    /// sent the peer address as one text line and closed; peers are recorded
    /// (see [`Lab::peers`](crate::Lab::peers)). Other TCP ports answer RST.
    pub fn tcp_listen(mut self, node: &str, port: u16) -> Topology {
        self.tcp_listen.push((node.to_string(), port));
        self
    }

    /// A UDP socket on `[::]:port` that echoes every datagram and records the
    /// peer. Other UDP ports answer ICMP port-unreachable.
    pub fn udp_echo(mut self, node: &str, port: u16) -> Topology {
        self.udp_echo.push((node.to_string(), port));
        self
    }

    /// Masquerades (v4 and v6, with `fully-random` source ports) everything
    /// `router` sends towards `outside`. Links on the other side of `router`
    /// become private (198.19.x.x) and nodes on the outside get no route
    /// back to them. Linux translates the probe quoted in ICMP errors back
    /// (RFC 5508), so the rewrite does not show in quotes.
    pub fn nat(mut self, router: &str, outside: &str) -> Topology {
        self.nat.push((router.to_string(), outside.to_string()));
        self
    }

    /// `router` sets the DSCP of every packet it forwards to `dscp` (v4 and
    /// v6), as a re-marking router does.
    pub fn rewrite_dscp(mut self, router: &str, dscp: u8) -> Topology {
        self.dscp_rewrites.push((router.to_string(), dscp));
        self
    }

    /// `router` is a SYN-proxy firewall (nft `synproxy`) for TCP `port`: it
    /// answers every SYN it forwards to that port itself, with a SYN-ACK
    /// from the destination's address, and opens the connection to the
    /// destination only once the client completes the handshake.
    pub fn syn_proxy(mut self, router: &str, port: u16) -> Topology {
        self.syn_proxies.push((router.to_string(), port));
        self
    }

    /// `router` is a firewall with SYN-flood protection for TCP `port`: it
    /// forwards `burst` SYNs, then `per_minute` a minute, and drops the rest;
    /// every other segment (established traffic) passes.
    pub fn syn_limit(mut self, router: &str, port: u16, per_minute: u32, burst: u32) -> Topology {
        self.syn_limits
            .push((router.to_string(), port, per_minute, burst));
        self
    }

    /// A stateless NAT: `router` rewrites the IPv4 source of `host`'s
    /// packets leaving towards `outside` to its own address on that link,
    /// and the destination of what comes back to that address to `host`.
    /// Nothing translates the probes quoted in ICMP errors, so routers past
    /// `router` quote the rewritten source (what a NAT without RFC 5508
    /// support shows).
    pub fn rewrite_source(mut self, router: &str, outside: &str, host: &str) -> Topology {
        self.source_rewrites
            .push((router.to_string(), outside.to_string(), host.to_string()));
        self
    }

    /// Sets ICMP rate-limit sysctls in `node`'s namespace.
    pub fn icmp_rate_limit(mut self, node: &str, limit: IcmpRateLimit) -> Topology {
        self.rate_limits.push((node.to_string(), limit));
        self
    }

    /// Rate-limit applied to every node that has no explicit
    /// [`icmp_rate_limit`](Self::icmp_rate_limit).
    pub fn icmp_rate_limit_all(mut self, limit: IcmpRateLimit) -> Topology {
        self.default_rate_limit = Some(limit);
        self
    }

    /// Drops `proto` (v4 and v6) at `hook` in `node`.
    pub fn drop_proto(mut self, node: &str, proto: Proto, hook: Hook) -> Topology {
        self.drops.push(DropRule {
            node: node.to_string(),
            proto,
            hook,
        });
        self
    }

    /// Replaces (same prefix) or adds a route at `node` towards `prefix` via
    /// the given neighbours (several make an ECMP group). The family follows
    /// the prefix; gateways are the neighbours' addresses on the shared link.
    pub fn static_route(mut self, node: &str, prefix: &str, via: &[&str]) -> Topology {
        self.static_routes.push(StaticRoute {
            node: node.to_string(),
            prefix: prefix.to_string(),
            via: via.iter().map(ToString::to_string).collect(),
        });
        self
    }

    /// Gives `node` `count` extra IPv4 addresses (1..=1022) to be traced to,
    /// routed to it like its own links: every other node gets a route for
    /// the node's `/22` target block along the same shortest paths (ECMP
    /// included). The addresses sit on the node's loopback, so the node
    /// answers ping, TCP ([`tcp_listen`](Self::tcp_listen) binds all
    /// addresses) and UDP from the address that was probed. At most 32
    /// nodes per topology; IPv4 only. See [`Lab::targets`](crate::Lab::targets)
    /// and [`Lab::path_to`](crate::Lab::path_to).
    pub fn targets(mut self, node: &str, count: u16) -> Topology {
        self.targets.push((node.to_string(), count));
        self
    }

    /// `node` has a slow control plane: every ICMP/ICMPv6 error it
    /// originates (time-exceeded, destination-unreachable including
    /// fragmentation-needed and port-unreachable, packet-too-big,
    /// parameter-problem) leaves `delay` late, as on a busy router whose CPU
    /// makes the errors. Packets it forwards and everything else it sends
    /// (echo replies, TCP answers, its own traffic) are not delayed. A probe
    /// expiring at `node` therefore shows an RTT about `delay` above the
    /// path's, while a ping through or to it does not.
    ///
    /// Built from the [`link_delayed`](Self::link_delayed) element: an
    /// nftables route chain marks the errors on output, a policy rule sends
    /// marked packets into a TUN device whose forwarder holds them for
    /// `delay` (giving back the TTL the detour costs), and the node forwards
    /// them on from there, so it gets forwarding enabled even if it is a
    /// host. Needs `nft`. At most one call per node; `delay` must be above
    /// zero. The ICMP rate limits still apply when the error is made, not
    /// when it leaves.
    pub fn slow_icmp(mut self, node: &str, delay: Duration) -> Topology {
        self.slow_icmp.push((node.to_string(), delay));
        self
    }

    /// Any other sysctl, e.g. `("net.ipv4.ip_default_ttl", "32")`.
    pub fn sysctl(mut self, node: &str, key: &str, value: &str) -> Topology {
        self.sysctls
            .push((node.to_string(), key.to_string(), value.to_string()));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_default_sets_nothing() {
        assert!(IcmpRateLimit::KERNEL_DEFAULT.sysctls().is_empty());
        assert_eq!(IcmpRateLimit::KERNEL_DEFAULT, IcmpRateLimit::default());
        let keys: Vec<String> = IcmpRateLimit::UNLIMITED
            .sysctls()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, IcmpRateLimit::KEYS);
    }
}
