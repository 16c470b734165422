//! A running lab: creation, accessors and teardown.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::netns::{self, NETNS_DIR, run};
use crate::plan::{Hop, Plan};
use crate::services::{self, Peers};
use crate::topology::{Family, Hook, Proto, Topology};
use crate::{LabError, delay};

static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);
static STALE_CLEANUP: Once = Once::new();

/// Base of the policy-routing tables (and rule priorities) used by delayed
/// links: link `n` uses table `DELAY_TABLE_BASE + n`.
const DELAY_TABLE_BASE: usize = 100;

/// A slow control plane ([`Topology::slow_icmp`](crate::Topology::slow_icmp))
/// reuses the delay element. The errors cannot be told apart by routing
/// alone (`ip rule` sees the protocol, not the ICMP type), and a delayed
/// link would delay forwarded traffic too; so an nftables `route` chain on
/// output marks the node's own ICMP errors, which makes the kernel route
/// them again, and this rule sends marked packets into the TUN device. The
/// forwarder writes them back unmarked, so they take the main table from
/// there like forwarded packets (hence `accept_local`, `rp_filter=0` and
/// forwarding on the node, and the TTL the forwarder gives back).
const SLOW_ICMP_TABLE: usize = 90;
/// Firewall mark of the ICMP errors on their way into the TUN device.
const SLOW_ICMP_MARK: u32 = 0x510c;
/// The TUN device of a slow control plane (one per node at most).
const SLOW_ICMP_TUN: &str = "slowicmp";

/// One interface of a node, as reported by [`Lab::interfaces`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    /// Node on the other end of the link.
    pub peer: String,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// One-way delay of the link, in milliseconds.
    pub delay_ms: Option<u64>,
}

/// A topology brought up in network namespaces. Dropping it stops the
/// helper threads, kills spawned processes and deletes the namespaces (the
/// veths vanish with them).
pub struct Lab {
    topology: String,
    prefix: String,
    plan: Plan,
    /// Namespace name per node (same order as the plan's nodes).
    ns: Vec<String>,
    /// Namespaces actually created so far; teardown removes exactly these.
    created: Vec<String>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    children: Mutex<Vec<Child>>,
    peers: HashMap<(usize, Proto, u16), Peers>,
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("topology", &self.topology)
            .field("namespaces", &self.ns)
            .finish()
    }
}

impl Lab {
    /// Builds the lab. Namespaces are named `trl<pid>-<n>-<node>`, unique per
    /// process and call, so tests can run labs in parallel.
    pub fn up(topology: &Topology) -> Result<Lab, LabError> {
        STALE_CLEANUP.call_once(|| {
            // Persistent labs are the keeper's business (it sits above this
            // module); here only what dead test processes left behind.
            if let Err(e) = netns::remove_namespaces(netns::orphaned_ephemeral) {
                eprintln!("traceroute-lab: cleaning up stale labs: {e}");
            }
        });
        let n = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        Lab::up_with_prefix(topology, &format!("trl{}-{n}-", std::process::id()))
    }

    pub(crate) fn up_with_prefix(topology: &Topology, prefix: &str) -> Result<Lab, LabError> {
        let plan = Plan::new(topology)?;
        netns::require_tool("ip")?;
        netns::require_tool("sysctl")?;
        if plan.nodes.iter().any(|n| {
            n.silent
                || !n.drops.is_empty()
                || !n.nat_out.is_empty()
                || n.dscp_rewrite.is_some()
                || !n.source_rewrites.is_empty()
                || n.slow_icmp.is_some()
        }) {
            netns::require_tool("nft")?;
        }
        let ns = plan
            .nodes
            .iter()
            .map(|n| format!("{prefix}{}", n.name))
            .collect();
        let mut lab = Lab {
            topology: topology.name().to_string(),
            prefix: prefix.to_string(),
            plan,
            ns,
            created: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            children: Mutex::new(Vec::new()),
            peers: HashMap::new(),
        };
        // On error `lab` is dropped here, which removes what was built so far.
        lab.build()?;
        Ok(lab)
    }

    fn build(&mut self) -> Result<(), LabError> {
        for x in 0..self.plan.nodes.len() {
            let ns = self.ns[x].clone();
            if Path::new(NETNS_DIR).join(&ns).exists() {
                return Err(LabError::Topology(format!("namespace {ns} already exists")));
            }
            netns::add_netns(&ns)?;
            self.created.push(ns);
            self.sysctl(x, &self.base_sysctls(x))?;
        }
        for (k, link) in self.plan.links.iter().enumerate() {
            let ifname = |x: usize| {
                &self.plan.nodes[x]
                    .ifaces
                    .iter()
                    .find(|i| i.link == k)
                    .expect("endpoint")
                    .ifname
            };
            let (ns_a, ns_b) = (&self.ns[link.a], &self.ns[link.b]);
            let (if_a, if_b) = (ifname(link.a), ifname(link.b));
            // Created directly inside the lab namespaces, never in the root one.
            run(
                Command::new("ip").args([
                    "-n", ns_a, "link", "add", "name", if_a, "type", "veth", "peer", "name", if_b,
                    "netns", ns_b,
                ]),
                None,
            )?;
        }
        for link in &self.plan.links {
            let Some(d) = link.delay else { continue };
            for x in [link.a, link.b] {
                let handle =
                    delay::start(&self.ns[x], &tun_name(link.number), d, self.stop.clone())?;
                self.threads.push(handle);
            }
        }
        for (x, node) in self.plan.nodes.iter().enumerate() {
            if let Some(d) = node.slow_icmp {
                let handle = delay::start(&self.ns[x], SLOW_ICMP_TUN, d, self.stop.clone())?;
                self.threads.push(handle);
            }
        }
        for x in 0..self.plan.nodes.len() {
            self.sysctl(x, &self.late_sysctls(x))?;
            let ns = &self.ns[x];
            run(
                Command::new("ip").args(["-n", ns, "-batch", "-"]),
                Some(&self.address_batch(x)),
            )?;
        }
        if self.plan.ipv6 {
            for x in 0..self.plan.nodes.len() {
                self.wait_not_tentative(x)?;
            }
        }
        for x in 0..self.plan.nodes.len() {
            let ns = &self.ns[x];
            let (any, v6_rules) = self.route_batches(x);
            if !any.is_empty() {
                run(
                    Command::new("ip").args(["-n", ns, "-batch", "-"]),
                    Some(&any),
                )?;
            }
            if !v6_rules.is_empty() {
                run(
                    Command::new("ip").args(["-6", "-n", ns, "-batch", "-"]),
                    Some(&v6_rules),
                )?;
            }
            if let Some(script) = self.nft_script(x) {
                run(
                    Command::new("ip").args(["netns", "exec", ns, "nft", "-f", "-"]),
                    Some(&script),
                )?;
            }
            if !self.plan.nodes[x].syn_proxy_ports.is_empty() {
                // A handshake's last ACK must be "invalid" to connection
                // tracking for synproxy to take it; with loose pick-up it
                // is tracked mid-stream and passed on to a server that
                // never saw the SYN. (The key exists once the ruleset above
                // has loaded connection tracking.)
                let loose = [(
                    "net.netfilter.nf_conntrack_tcp_loose".to_string(),
                    "0".to_string(),
                )];
                self.sysctl(x, &loose)?;
            }
        }
        for (x, node) in self.plan.nodes.iter().enumerate() {
            for &port in &node.tcp_listen {
                let peers = Peers::default();
                self.threads.push(services::tcp_listen(
                    &self.ns[x],
                    port,
                    self.stop.clone(),
                    peers.clone(),
                )?);
                self.peers.insert((x, Proto::Tcp, port), peers);
            }
            for &port in &node.udp_echo {
                let peers = Peers::default();
                self.threads.push(services::udp_echo(
                    &self.ns[x],
                    port,
                    self.stop.clone(),
                    peers.clone(),
                )?);
                self.peers.insert((x, Proto::Udp, port), peers);
            }
        }
        Ok(())
    }

    fn sysctl(&self, x: usize, settings: &[(String, String)]) -> Result<(), LabError> {
        if settings.is_empty() {
            return Ok(());
        }
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns[x], "sysctl", "-q", "-w"]);
        cmd.args(settings.iter().map(|(k, v)| format!("{k}={v}")));
        run(&mut cmd, None).map(drop)
    }

    /// Settings needed before interfaces exist (new ones inherit `default`).
    fn base_sysctls(&self, x: usize) -> Vec<(String, String)> {
        let node = &self.plan.nodes[x];
        let mut s: Vec<(String, String)> = [
            // Addresses usable at once instead of after ~1 s of DAD.
            ("net.ipv6.conf.all.accept_dad", "0"),
            ("net.ipv6.conf.default.accept_dad", "0"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
            // ECMP on the 5-tuple (src/dst address, protocol, src/dst port).
            // Not policy 1: across veth a packet keeps the random hash of
            // the sending socket, which policy 1 reuses, so one flow would
            // take a random branch per socket. Policy 3 always reads the
            // headers, selected by `fields` (0x37 = the 5-tuple).
            ("net.ipv4.fib_multipath_hash_policy", "3"),
            ("net.ipv4.fib_multipath_hash_fields", "0x37"),
            ("net.ipv6.fib_multipath_hash_policy", "3"),
            ("net.ipv6.fib_multipath_hash_fields", "0x37"),
            // Time-exceeded comes from the interface facing the prober,
            // which makes the expected hop addresses deterministic.
            ("net.ipv4.icmp_errors_use_inbound_ifaddr", "1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        // A fixed ECMP hash seed per node (kernel 6.11+; it covers IPv6
        // too): a flow takes the same branches in every run, so a test that
        // pins its flow ids sees the same paths each time, and each router
        // hashes independently of the others, as real ones do.
        if std::path::Path::new("/proc/sys/net/ipv4/fib_multipath_hash_seed").exists() {
            let seed = 0x9e37_79b9u32.wrapping_mul(x as u32 + 1) | 1;
            s.push(("net.ipv4.fib_multipath_hash_seed".into(), seed.to_string()));
        }
        if node.forwarding {
            s.push(("net.ipv4.ip_forward".into(), "1".into()));
            s.push(("net.ipv6.conf.all.forwarding".into(), "1".into()));
        }
        if let Some(limit) = node.rate_limit {
            s.extend(limit.sysctls());
        }
        s
    }

    /// Settings that name interfaces, applied once they exist.
    fn late_sysctls(&self, x: usize) -> Vec<(String, String)> {
        let mut s = Vec::new();
        for tun in self.tuns(x) {
            // Re-injected packets the node sent itself carry its own source address.
            s.push((format!("net.ipv4.conf.{tun}.accept_local"), "1".to_string()));
            s.push((format!("net.ipv4.conf.{tun}.rp_filter"), "0".to_string()));
        }
        s.extend(self.plan.nodes[x].sysctls.iter().cloned());
        s
    }

    /// TUN devices of `x`: one per delayed link, one for slow ICMP.
    fn tuns(&self, x: usize) -> Vec<String> {
        let node = &self.plan.nodes[x];
        node.ifaces
            .iter()
            .filter(|i| self.plan.links[i.link].delay.is_some())
            .map(|i| tun_name(self.plan.links[i.link].number))
            .chain(node.slow_icmp.map(|_| SLOW_ICMP_TUN.to_string()))
            .collect()
    }

    fn address_batch(&self, x: usize) -> String {
        let mut b = String::from("link set dev lo up\n");
        for i in &self.plan.nodes[x].ifaces {
            if let Some(mtu) = i.mtu {
                let _ = writeln!(b, "link set dev {} mtu {mtu}", i.ifname);
            }
            let _ = writeln!(b, "link set dev {} up", i.ifname);
        }
        for tun in self.tuns(x) {
            let _ = writeln!(b, "link set dev {tun} up");
        }
        for i in &self.plan.nodes[x].ifaces {
            if let Some(a) = i.v4 {
                let _ = writeln!(b, "addr add {a}/24 dev {}", i.ifname);
            }
            if let Some(a) = i.v6 {
                let _ = writeln!(b, "addr add {a}/64 dev {} nodad", i.ifname);
            }
        }
        // No dummy interfaces needed (not every kernel has the module): the
        // loopback holds any number of local /32s.
        for t in &self.plan.nodes[x].targets {
            let _ = writeln!(b, "addr add {t}/32 dev lo");
        }
        b
    }

    /// Until the kernel has processed carrier-up, IPv6 addresses stay
    /// tentative and cannot be a route's preferred source.
    fn wait_not_tentative(&self, x: usize) -> Result<(), LabError> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let out = run(
                Command::new("ip").args(["-n", &self.ns[x], "-6", "addr", "show", "tentative"]),
                None,
            )?;
            if out.stdout.iter().all(u8::is_ascii_whitespace) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(LabError::Topology(format!(
                    "IPv6 addresses in {} stay tentative",
                    self.ns[x]
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Routes (both families, auto-detected by `ip`) and the IPv6 policy
    /// rules, which `ip rule` cannot infer.
    fn route_batches(&self, x: usize) -> (String, String) {
        let node = &self.plan.nodes[x];
        let (mut b, mut rules6) = (String::new(), String::new());
        let iface = |link: usize| {
            node.ifaces
                .iter()
                .find(|i| i.link == link)
                .expect("own link")
        };
        let delayed = |link: usize| self.plan.links[link].delay.is_some();
        for r in &node.routes {
            let family = r.prefix.family();
            let mut line = format!("route add {}", r.prefix);
            if let [nh] = r.nexthops.as_slice() {
                let i = iface(nh.link);
                if delayed(nh.link) {
                    let src = i.addr(family).expect("family enabled");
                    let _ = write!(
                        line,
                        " dev {} src {src}",
                        tun_name(self.plan.links[nh.link].number)
                    );
                } else {
                    let _ = write!(line, " via {} dev {}", nh.via, i.ifname);
                }
            } else {
                for nh in &r.nexthops {
                    if delayed(nh.link) {
                        let _ = write!(
                            line,
                            " nexthop dev {}",
                            tun_name(self.plan.links[nh.link].number)
                        );
                    } else {
                        let _ = write!(
                            line,
                            " nexthop via {} dev {}",
                            nh.via,
                            iface(nh.link).ifname
                        );
                    }
                }
            }
            let _ = writeln!(b, "{line}");
            for nh in r.nexthops.iter().filter(|nh| delayed(nh.link)) {
                let table = DELAY_TABLE_BASE + self.plan.links[nh.link].number;
                let _ = writeln!(
                    b,
                    "route add {} via {} dev {} table {table}",
                    r.prefix,
                    nh.via,
                    iface(nh.link).ifname
                );
            }
        }
        for i in node.ifaces.iter().filter(|i| delayed(i.link)) {
            let link = &self.plan.links[i.link];
            let (tun, table) = (tun_name(link.number), DELAY_TABLE_BASE + link.number);
            let peer = self.plan.nodes[i.peer]
                .ifaces
                .iter()
                .find(|p| p.link == i.link)
                .expect("peer end");
            for family in self.plan.families() {
                let (Some(local), Some(remote), Some(net)) =
                    (i.addr(family), peer.addr(family), link.prefix(family))
                else {
                    continue;
                };
                let (host_len, default) = match family {
                    Family::V4 => (32, "default"),
                    Family::V6 => (128, "::/0"),
                };
                // Traffic to the peer itself is delayed too; the connected
                // route is only used after the TUN detour.
                let _ = writeln!(b, "route add {remote}/{host_len} dev {tun} src {local}");
                let _ = writeln!(b, "route add {net} dev {} table {table}", i.ifname);
                // Never fall through to `main`, which would loop back into the TUN.
                let _ = writeln!(b, "route add unreachable {default} table {table}");
                let rule = format!("rule add pref {table} iif {tun} lookup {table}\n");
                match family {
                    Family::V4 => b.push_str(&rule),
                    Family::V6 => rules6.push_str(&rule),
                }
            }
        }
        if node.slow_icmp.is_some() {
            // See SLOW_ICMP_TABLE. Only marked packets (the node's own ICMP
            // errors) come here, and nothing marks what the TUN gives back.
            for family in self.plan.families() {
                let default = match family {
                    Family::V4 => "default",
                    Family::V6 => "::/0",
                };
                let _ = writeln!(
                    b,
                    "route add {default} dev {SLOW_ICMP_TUN} table {SLOW_ICMP_TABLE}"
                );
                let rule = format!(
                    "rule add pref {SLOW_ICMP_TABLE} fwmark {SLOW_ICMP_MARK:#x} lookup {SLOW_ICMP_TABLE}\n"
                );
                match family {
                    Family::V4 => b.push_str(&rule),
                    Family::V6 => rules6.push_str(&rule),
                }
            }
        }
        (b, rules6)
    }

    fn nft_script(&self, x: usize) -> Option<String> {
        let node = &self.plan.nodes[x];
        let (mut input, mut forward, mut output, mut post) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut raw_pre, mut raw_post, mut reroute) = (Vec::new(), Vec::new(), Vec::new());
        if node.slow_icmp.is_some() {
            // Only the output hook sees what the node originates; a route
            // chain re-routes a packet whose mark it changed.
            reroute.push(format!(
                "icmp type {{ destination-unreachable, time-exceeded, parameter-problem }} meta mark set {SLOW_ICMP_MARK:#x}"
            ));
            reroute.push(format!(
                "icmpv6 type {{ destination-unreachable, packet-too-big, time-exceeded, parameter-problem }} meta mark set {SLOW_ICMP_MARK:#x}"
            ));
        }
        if node.silent {
            output.push("icmp type { destination-unreachable, time-exceeded } drop".to_string());
            output.push("icmpv6 type { destination-unreachable, time-exceeded } drop".to_string());
        }
        for d in &node.drops {
            let chain = match d.hook {
                Hook::Input => &mut input,
                Hook::Forward => &mut forward,
                Hook::Output => &mut output,
            };
            match d.proto {
                Proto::Tcp => chain.push("meta l4proto tcp drop".to_string()),
                Proto::Udp => chain.push("meta l4proto udp drop".to_string()),
                Proto::Icmp => {
                    chain.push("meta l4proto icmp drop".to_string());
                    // Neighbour discovery must pass or IPv6 stops working altogether.
                    chain.push(
                        "icmpv6 type != { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert, nd-redirect } drop"
                            .to_string(),
                    );
                }
            }
        }
        for ifname in &node.nat_out {
            post.push(format!("oifname \"{ifname}\" masquerade fully-random"));
        }
        if let Some(dscp) = node.dscp_rewrite {
            forward.push(format!("meta nfproto ipv4 ip dscp set {dscp}"));
            forward.push(format!("meta nfproto ipv6 ip6 dscp set {dscp}"));
        }
        for (ifname, router, host) in &node.source_rewrites {
            raw_post.push(format!(
                "oifname \"{ifname}\" ip saddr {host} ip saddr set {router}"
            ));
            raw_pre.push(format!(
                "iifname \"{ifname}\" ip daddr {router} ip daddr set {host}"
            ));
        }
        for port in &node.syn_proxy_ports {
            // SYNs bypass connection tracking so synproxy sees them as
            // untracked and answers them; the handshake's last ACK is
            // "invalid" to conntrack until synproxy takes it.
            raw_pre.push(format!("tcp dport {port} tcp flags syn notrack"));
            forward.push(format!(
                "tcp dport {port} ct state invalid,untracked synproxy mss 1460 wscale 7 timestamp sack-perm"
            ));
            forward.push(format!("tcp dport {port} ct state invalid drop"));
        }
        for (port, per_minute, burst) in &node.syn_limits {
            forward.push(format!(
                "tcp dport {port} tcp flags & (syn | ack) == syn limit rate over {per_minute}/minute burst {burst} packets drop"
            ));
        }
        if [
            &input, &forward, &output, &post, &raw_pre, &raw_post, &reroute,
        ]
        .iter()
        .all(|rules| rules.is_empty())
        {
            return None;
        }
        let mut s = String::from("table inet traceroute_lab {\n");
        // The stateless rewrites run first on the way in (before routing)
        // and last on the way out, outside connection tracking.
        for (name, hook, kind, priority, rules) in [
            ("rewrite_in", "prerouting", "filter", "raw", &raw_pre),
            ("input", "input", "filter", "filter", &input),
            ("forward", "forward", "filter", "filter", &forward),
            ("output", "output", "filter", "filter", &output),
            ("slow_icmp", "output", "route", "mangle", &reroute),
            ("postrouting", "postrouting", "nat", "srcnat", &post),
            ("rewrite_out", "postrouting", "filter", "500", &raw_post),
        ] {
            if rules.is_empty() {
                continue;
            }
            let _ = writeln!(
                s,
                "  chain {name} {{\n    type {kind} hook {hook} priority {priority}; policy accept;"
            );
            for r in rules {
                let _ = writeln!(s, "    {r}");
            }
            s.push_str("  }\n");
        }
        s.push_str("}\n");
        Some(s)
    }

    fn node(&self, name: &str) -> Result<usize, LabError> {
        self.plan.node_index(name)
    }

    fn iface(&self, node: &str, peer: &str) -> Result<&crate::plan::Iface, LabError> {
        let (x, p) = (self.node(node)?, self.node(peer)?);
        self.plan.nodes[x]
            .ifaces
            .iter()
            .find(|i| i.peer == p)
            .ok_or_else(|| LabError::NoLink(node.to_string(), peer.to_string()))
    }

    /// Name of the topology this lab was built from.
    pub fn topology_name(&self) -> &str {
        &self.topology
    }

    /// Common prefix of this lab's namespace names.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Node names in declaration order.
    pub fn nodes(&self) -> Vec<&str> {
        self.plan.nodes.iter().map(|n| n.name.as_str()).collect()
    }

    /// Namespace of `node`, for `ip netns exec NAME ...`.
    pub fn namespace(&self, node: &str) -> Result<&str, LabError> {
        Ok(&self.ns[self.node(node)?])
    }

    /// All interfaces of `node` with their addresses, in link order.
    pub fn interfaces(&self, node: &str) -> Result<Vec<Interface>, LabError> {
        let x = self.node(node)?;
        Ok(self.plan.nodes[x]
            .ifaces
            .iter()
            .map(|i| Interface {
                name: i.ifname.clone(),
                peer: self.plan.nodes[i.peer].name.clone(),
                ipv4: i.v4,
                ipv6: i.v6,
                delay_ms: self.plan.links[i.link].delay.map(|d| d.as_millis() as u64),
            })
            .collect())
    }

    /// How late the ICMP errors `node` originates leave
    /// ([`Topology::slow_icmp`](crate::Topology::slow_icmp)); `None` if
    /// they are not delayed.
    pub fn icmp_delay(&self, node: &str) -> Result<Option<Duration>, LabError> {
        Ok(self.plan.nodes[self.node(node)?].slow_icmp)
    }

    /// Interface of `node` facing `peer` (the first one if there are several links).
    pub fn ifname(&self, node: &str, peer: &str) -> Result<&str, LabError> {
        Ok(&self.iface(node, peer)?.ifname)
    }

    /// Address of `node` on its link to `peer`.
    pub fn addr(&self, node: &str, peer: &str, family: Family) -> Result<IpAddr, LabError> {
        self.iface(node, peer)?
            .addr(family)
            .ok_or_else(|| LabError::NoAddress {
                node: node.to_string(),
                family,
            })
    }

    /// IPv4 address of `node` on its link to `peer`.
    pub fn ipv4(&self, node: &str, peer: &str) -> Result<Ipv4Addr, LabError> {
        self.iface(node, peer)?
            .v4
            .ok_or_else(|| LabError::NoAddress {
                node: node.to_string(),
                family: Family::V4,
            })
    }

    /// IPv6 address of `node` on its link to `peer`.
    pub fn ipv6(&self, node: &str, peer: &str) -> Result<Ipv6Addr, LabError> {
        self.iface(node, peer)?
            .v6
            .ok_or_else(|| LabError::NoAddress {
                node: node.to_string(),
                family: Family::V6,
            })
    }

    /// The node's address on its first link: the one to target a host by.
    pub fn primary(&self, node: &str, family: Family) -> Result<IpAddr, LabError> {
        self.plan
            .primary(self.node(node)?, family)
            .ok_or_else(|| LabError::NoAddress {
                node: node.to_string(),
                family,
            })
    }

    pub fn primary_v4(&self, node: &str) -> Result<Ipv4Addr, LabError> {
        match self.primary(node, Family::V4)? {
            IpAddr::V4(a) => Ok(a),
            IpAddr::V6(_) => unreachable!("v4 requested"),
        }
    }

    pub fn primary_v6(&self, node: &str) -> Result<Ipv6Addr, LabError> {
        match self.primary(node, Family::V6)? {
            IpAddr::V6(a) => Ok(a),
            IpAddr::V4(_) => unreachable!("v6 requested"),
        }
    }

    /// Subnet of the link between `a` and `b`.
    pub fn subnet(&self, a: &str, b: &str, family: Family) -> Result<crate::Prefix, LabError> {
        let i = self.iface(a, b)?;
        self.plan.links[i.link]
            .prefix(family)
            .ok_or_else(|| LabError::NoAddress {
                node: a.to_string(),
                family,
            })
    }

    /// Ground truth for tracers: for each TTL, the routers a probe from
    /// `from` to `to`'s primary address may expire at (more than one under
    /// ECMP), each with the address it answers from. `to` itself is not
    /// included; a tracer's last line is [`primary`](Self::primary)`(to)`.
    pub fn path(&self, from: &str, to: &str, family: Family) -> Result<Vec<Vec<Hop>>, LabError> {
        self.plan.path(self.node(from)?, self.node(to)?, family)
    }

    /// [`path`](Self::path) for single-path routes: one entry per router,
    /// `None` where the router is silent (traceroute prints `*`).
    pub fn expected_hops(
        &self,
        from: &str,
        to: &str,
        family: Family,
    ) -> Result<Vec<Option<IpAddr>>, LabError> {
        single_path(self.path(from, to, family)?, from, to)
    }

    /// The extra target addresses of `node` (see
    /// [`Topology::targets`](crate::Topology::targets)), in order; empty if
    /// it has none.
    pub fn targets(&self, node: &str) -> Result<Vec<IpAddr>, LabError> {
        let x = self.node(node)?;
        Ok(self.plan.nodes[x]
            .targets
            .iter()
            .map(|&a| IpAddr::V4(a))
            .collect())
    }

    /// The node `addr` belongs to: one of its interface addresses or targets.
    pub fn owner(&self, addr: IpAddr) -> Option<&str> {
        self.plan
            .owner(addr)
            .map(|x| self.plan.nodes[x].name.as_str())
    }

    /// Ground truth for a trace to any lab address, e.g. a
    /// [target](Self::targets): like [`path`](Self::path), the routers on
    /// the way to the node owning `dst`, that node excluded. The destination
    /// line of a tracer is `dst` itself, since a host answers echo, TCP and
    /// UDP from the address probed.
    pub fn path_to(&self, from: &str, dst: IpAddr) -> Result<Vec<Vec<Hop>>, LabError> {
        let to = self.plan.owner(dst).ok_or(LabError::UnknownAddress(dst))?;
        self.plan.path_to(self.node(from)?, to, dst)
    }

    /// [`path_to`](Self::path_to) for single-path routes, as
    /// [`expected_hops`](Self::expected_hops).
    pub fn expected_hops_to(
        &self,
        from: &str,
        dst: IpAddr,
    ) -> Result<Vec<Option<IpAddr>>, LabError> {
        single_path(self.path_to(from, dst)?, from, &dst.to_string())
    }

    /// Peers a declared TCP listener or UDP echo on `node` has seen, in
    /// arrival order (empty if there is no such listener).
    pub fn peers(&self, node: &str, proto: Proto, port: u16) -> Result<Vec<SocketAddr>, LabError> {
        let x = self.node(node)?;
        Ok(self
            .peers
            .get(&(x, proto, port))
            .map(|p| {
                p.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone()
            })
            .unwrap_or_default())
    }

    /// `ip netns exec <ns> program`, ready for arguments and stdio settings.
    pub fn command(&self, node: &str, program: &str) -> Result<Command, LabError> {
        netns::require_tool(program)?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.namespace(node)?, program]);
        Ok(cmd)
    }

    /// Runs `program args...` in `node` and collects its output. A non-zero
    /// exit is not an error (check `status`); a missing tool is, naming the
    /// Debian package.
    pub fn exec<I, S>(&self, node: &str, program: &str, args: I) -> Result<Output, LabError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(node, program)?;
        cmd.args(args);
        cmd.output()
            .map_err(LabError::io(format!("running {program} in {node}")))
    }

    /// Starts `cmd` inside `node` (stdio as configured on `cmd`) in its own
    /// process group; the lab kills the group on drop. Returns the pid.
    pub fn spawn(&self, node: &str, cmd: &mut Command) -> Result<u32, LabError> {
        let path = Path::new(NETNS_DIR).join(self.namespace(node)?);
        let ns = File::open(&path).map_err(LabError::io(format!("opening {}", path.display())))?;
        // Its own process group, so the lab can kill everything it starts.
        cmd.process_group(0);
        // std cannot enter a namespace for a child: pre_exec it.
        // SAFETY: setns is async-signal-safe; `ns` stays open until spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET)?;
                Ok(())
            });
        }
        let program = cmd.get_program().to_string_lossy().into_owned();
        let child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                netns::require_tool(&program).err().unwrap_or(LabError::Io {
                    context: format!("spawning {program} in {node}"),
                    source: e,
                })
            }
            _ => LabError::Io {
                context: format!("spawning {program} in {node}"),
                source: e,
            },
        })?;
        // `ns` (close-on-exec) lives in the pre_exec closure until `cmd` goes.
        let pid = child.id();
        self.children
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(child);
        Ok(pid)
    }

    /// Stops a process started with [`spawn`](Self::spawn): SIGTERM to its
    /// group, SIGKILL after 2 s, then collects whatever output was piped.
    pub fn stop(&self, pid: u32) -> Result<Output, LabError> {
        let child = {
            let mut children = self
                .children
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let pos = children.iter().position(|c| c.id() == pid);
            pos.map(|p| children.remove(p))
        };
        let Some(mut child) = child else {
            return Err(LabError::Topology(format!(
                "pid {pid} was not spawned by this lab"
            )));
        };
        let group = Pid::from_raw(pid as i32);
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(2);
        while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = killpg(group, Signal::SIGKILL);
        child
            .wait_with_output()
            .map_err(LabError::io(format!("waiting for pid {pid}")))
    }

    /// Runs `f` on a fresh thread inside `node`'s namespace and returns its
    /// result; sockets it creates live in that namespace. A panic in `f` is
    /// propagated.
    pub fn in_netns<T, F>(&self, node: &str, f: F) -> Result<T, LabError>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let ns = self.namespace(node)?;
        std::thread::scope(|s| {
            let handle = s.spawn(move || {
                netns::enter_netns(ns)?;
                Ok(f())
            });
            handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    fn teardown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        for mut child in self
            .children
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain(..)
        {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.created.drain(..).rev() {
            if let Err(e) = netns::del_netns(&ns) {
                eprintln!("traceroute-lab: removing {ns}: {e}");
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// One address per TTL (`None` for a silent router), or an error naming
/// the first TTL with several possible routers.
fn single_path(path: Vec<Vec<Hop>>, from: &str, to: &str) -> Result<Vec<Option<IpAddr>>, LabError> {
    path.iter()
        .enumerate()
        .map(|(ttl, alternatives)| match alternatives.as_slice() {
            [hop] => Ok((!hop.silent).then_some(hop.addr)),
            _ => Err(LabError::Multipath {
                from: from.to_string(),
                to: to.to_string(),
                ttl: ttl + 1,
            }),
        })
        .collect()
}

fn tun_name(link_number: usize) -> String {
    format!("dly{link_number}")
}
