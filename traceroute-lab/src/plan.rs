//! Turns a [`Topology`] into concrete addresses, interface names and routes.
//!
//! Pure computation (no system access), so the routing logic is unit-tested
//! without root and the same plan gives the ground truth tests compare with.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::LabError;
use crate::topology::{DropRule, Family, IcmpRateLimit, NodeKind, Prefix, Topology};

#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub nodes: Vec<PNode>,
    pub links: Vec<PLink>,
    pub ipv4: bool,
    pub ipv6: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct PNode {
    pub name: String,
    pub kind: NodeKind,
    pub forwarding: bool,
    pub silent: bool,
    pub ifaces: Vec<Iface>,
    pub routes: Vec<Route>,
    pub rate_limit: Option<IcmpRateLimit>,
    pub sysctls: Vec<(String, String)>,
    pub drops: Vec<DropRule>,
    /// Interface names masquerading is applied on.
    pub nat_out: Vec<String>,
    /// DSCP set on every forwarded packet.
    pub dscp_rewrite: Option<u8>,
    /// Stateless IPv4 source rewrites: (out interface, this node's address
    /// there, the host address rewritten to it).
    pub source_rewrites: Vec<(String, Ipv4Addr, Ipv4Addr)>,
    /// TCP ports this node answers SYNs for as a SYN proxy.
    pub syn_proxy_ports: Vec<u16>,
    /// SYN rate limits it enforces: (port, per minute, burst).
    pub syn_limits: Vec<(u16, u32, u32)>,
    pub tcp_listen: Vec<u16>,
    pub udp_echo: Vec<u16>,
    /// Block the node's extra target addresses come from, and the addresses.
    pub target_block: Option<Prefix>,
    pub targets: Vec<Ipv4Addr>,
    /// How late the ICMP errors this node originates leave
    /// ([`Topology::slow_icmp`]).
    pub slow_icmp: Option<Duration>,
}

#[derive(Debug, Clone)]
pub(crate) struct Iface {
    pub link: usize,
    pub peer: usize,
    pub ifname: String,
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
    /// MTU other than the default (1500).
    pub mtu: Option<u32>,
}

impl Iface {
    pub fn addr(&self, family: Family) -> Option<IpAddr> {
        match family {
            Family::V4 => self.v4.map(IpAddr::V4),
            Family::V6 => self.v6.map(IpAddr::V6),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct PLink {
    pub a: usize,
    pub b: usize,
    /// 1-based, as used in the addresses.
    pub number: usize,
    pub v4: Option<Prefix>,
    pub v6: Option<Prefix>,
    pub delay: Option<Duration>,
}

impl PLink {
    pub fn prefix(&self, family: Family) -> Option<Prefix> {
        match family {
            Family::V4 => self.v4,
            Family::V6 => self.v6,
        }
    }

    pub fn other(&self, node: usize) -> usize {
        if self.a == node { self.b } else { self.a }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    pub prefix: Prefix,
    pub nexthops: Vec<NextHop>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NextHop {
    pub link: usize,
    pub peer: usize,
    pub via: IpAddr,
}

/// One router a probe with a given TTL may expire at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// Node name.
    pub node: String,
    /// Source address of its time-exceeded: its interface facing the source.
    pub addr: IpAddr,
    /// Declared silent: traceroute shows `*` instead of `addr`.
    pub silent: bool,
}

const MAX_LINKS: usize = 255;

/// Target blocks: `198.19.(128 + 4k).0/22` for the k-th node with targets.
const TARGET_BASE: Ipv4Addr = Ipv4Addr::new(198, 19, 128, 0);
const TARGET_BLOCK_LEN: u8 = 22;
const MAX_TARGET_NODES: usize = 32;
/// A /22 minus its first and last address.
const MAX_TARGETS: u16 = 1022;

/// A topology error naming the topology.
fn invalid(t: &Topology, message: impl std::fmt::Display) -> LabError {
    LabError::Topology(format!("{}: {message}", t.name))
}

/// Node names → indexes, validated.
struct Names<'t> {
    t: &'t Topology,
    index: BTreeMap<String, usize>,
}

impl<'t> Names<'t> {
    fn new(t: &'t Topology) -> Result<Self, LabError> {
        let mut index = BTreeMap::new();
        for (i, n) in t.nodes.iter().enumerate() {
            if !valid_name(&n.name) {
                return Err(invalid(
                    t,
                    format!(
                        "node name {:?} must be 1-32 characters of [A-Za-z0-9_-]",
                        n.name
                    ),
                ));
            }
            if index.insert(n.name.clone(), i).is_some() {
                return Err(invalid(t, format!("node {:?} declared twice", n.name)));
            }
        }
        Ok(Names { t, index })
    }

    fn get(&self, name: &str) -> Result<usize, LabError> {
        self.index
            .get(name)
            .copied()
            .ok_or_else(|| invalid(self.t, format!("unknown node {name:?}")))
    }
}

/// What NAT routers hide: links behind a NAT are private and invisible from
/// outside.
struct Nat {
    /// Per link: behind some NAT.
    inside_link: Vec<bool>,
    /// `hidden[node][link]`: the node cannot route to the link.
    hidden: Vec<Vec<bool>>,
    /// Per node: the links it masquerades on.
    out_links: Vec<Vec<usize>>,
}

/// `adj[x]` = (link, peer) for every link of node x, in declaration order.
fn adjacency(links: &[PLink], n_nodes: usize) -> Vec<Vec<(usize, usize)>> {
    (0..n_nodes)
        .map(|x| {
            links
                .iter()
                .enumerate()
                .filter(|(_, l)| l.a == x || l.b == x)
                .map(|(k, l)| (k, l.other(x)))
                .collect()
        })
        .collect()
}

impl Plan {
    /// Plans `t` step by step: links, NAT, addresses, nodes and their
    /// interfaces, per-node options, target blocks, routes.
    pub fn new(t: &Topology) -> Result<Plan, LabError> {
        if !t.ipv4 && !t.ipv6 {
            return Err(invalid(t, "both address families are disabled"));
        }
        let names = Names::new(t)?;
        let mut links = plan_links(&names)?;
        let adj = adjacency(&links, t.nodes.len());
        let nat = find_nat(&names, &links, &adj)?;
        address_links(t, &mut links, &nat.inside_link)?;
        let mut nodes = plan_nodes(t, &links, &adj, &nat.out_links);
        apply_node_options(&names, &mut nodes)?;
        assign_targets(&names, &mut nodes, &links)?;
        let mut plan = Plan {
            nodes,
            links,
            ipv4: t.ipv4,
            ipv6: t.ipv6,
        };
        plan.compute_routes(&nat.hidden);
        plan.compute_target_routes(&nat.hidden);
        plan.add_static_routes(&names)?;
        Ok(plan)
    }

    /// Static routes replace computed ones for the same prefix.
    fn add_static_routes(&mut self, names: &Names<'_>) -> Result<(), LabError> {
        let t = names.t;
        for sr in &t.static_routes {
            let x = names.get(&sr.node)?;
            let prefix: Prefix = sr.prefix.parse()?;
            let family = prefix.family();
            if !self.has_family(family) {
                return Err(invalid(
                    t,
                    format!("static route {prefix}: {family} is disabled"),
                ));
            }
            let mut nexthops = Vec::new();
            for v in &sr.via {
                let peer = names.get(v)?;
                let iface = self.nodes[x]
                    .ifaces
                    .iter()
                    .find(|i| i.peer == peer)
                    .ok_or_else(|| {
                        invalid(
                            t,
                            format!("static route at {:?}: {v:?} is not a neighbour", sr.node),
                        )
                    })?;
                let via = self.nodes[peer]
                    .ifaces
                    .iter()
                    .find(|i| i.link == iface.link)
                    .and_then(|i| i.addr(family))
                    .expect("family enabled");
                nexthops.push(NextHop {
                    link: iface.link,
                    peer,
                    via,
                });
            }
            if nexthops.is_empty() {
                return Err(invalid(
                    t,
                    format!("static route {prefix} at {:?} has no next hop", sr.node),
                ));
            }
            let routes = &mut self.nodes[x].routes;
            routes.retain(|r| r.prefix != prefix);
            routes.push(Route { prefix, nexthops });
        }
        Ok(())
    }

    pub fn has_family(&self, f: Family) -> bool {
        match f {
            Family::V4 => self.ipv4,
            Family::V6 => self.ipv6,
        }
    }

    pub fn families(&self) -> Vec<Family> {
        [Family::V4, Family::V6]
            .into_iter()
            .filter(|&f| self.has_family(f))
            .collect()
    }

    pub fn node_index(&self, name: &str) -> Result<usize, LabError> {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .ok_or_else(|| LabError::UnknownNode(name.to_string()))
    }

    /// Shortest paths per subnet: multi-source BFS from the subnet's routers,
    /// expanding only through routers, so hosts never become transit.
    fn compute_routes(&mut self, hidden: &[Vec<bool>]) {
        let n = self.nodes.len();
        for family in self.families() {
            for (k, link) in self.links.iter().enumerate() {
                let Some(prefix) = link.prefix(family) else {
                    continue;
                };
                let mut dist = vec![usize::MAX; n];
                let mut queue = VecDeque::new();
                for e in [link.a, link.b] {
                    if self.nodes[e].kind == NodeKind::Router {
                        dist[e] = 0;
                        queue.push_back(e);
                    }
                }
                while let Some(m) = queue.pop_front() {
                    if self.nodes[m].kind != NodeKind::Router {
                        continue;
                    }
                    for i in &self.nodes[m].ifaces {
                        if dist[i.peer] == usize::MAX {
                            dist[i.peer] = dist[m] + 1;
                            queue.push_back(i.peer);
                        }
                    }
                }
                for x in 0..n {
                    if x == link.a || x == link.b || dist[x] == usize::MAX || hidden[x][k] {
                        continue;
                    }
                    let nexthops: Vec<NextHop> = self.nodes[x]
                        .ifaces
                        .iter()
                        .filter(|i| {
                            self.nodes[i.peer].kind == NodeKind::Router
                                && dist[i.peer].checked_add(1) == Some(dist[x])
                        })
                        .filter_map(|i| {
                            let peer_if = self.nodes[i.peer]
                                .ifaces
                                .iter()
                                .find(|p| p.link == i.link)?;
                            Some(NextHop {
                                link: i.link,
                                peer: i.peer,
                                via: peer_if.addr(family)?,
                            })
                        })
                        .collect();
                    if !nexthops.is_empty() {
                        self.nodes[x].routes.push(Route { prefix, nexthops });
                    }
                }
            }
        }
    }

    /// Routes to every node's target block, along the same shortest paths
    /// (and ECMP groups) as to the node itself: BFS from the owner through
    /// routers only, the owner being the last hop.
    fn compute_target_routes(&mut self, hidden: &[Vec<bool>]) {
        let n = self.nodes.len();
        for owner in 0..n {
            let Some(prefix) = self.nodes[owner].target_block else {
                continue;
            };
            let mut dist = vec![usize::MAX; n];
            dist[owner] = 0;
            let mut queue = VecDeque::from([owner]);
            while let Some(m) = queue.pop_front() {
                if m != owner && self.nodes[m].kind != NodeKind::Router {
                    continue;
                }
                for i in &self.nodes[m].ifaces {
                    if dist[i.peer] == usize::MAX {
                        dist[i.peer] = dist[m] + 1;
                        queue.push_back(i.peer);
                    }
                }
            }
            for x in 0..n {
                // Behind a NAT: invisible from x when every link of the owner is.
                let behind_nat = self.nodes[owner].ifaces.iter().all(|i| hidden[x][i.link]);
                if x == owner || dist[x] == usize::MAX || behind_nat {
                    continue;
                }
                let nexthops: Vec<NextHop> = self.nodes[x]
                    .ifaces
                    .iter()
                    .filter(|i| {
                        (i.peer == owner || self.nodes[i.peer].kind == NodeKind::Router)
                            && dist[i.peer].checked_add(1) == Some(dist[x])
                    })
                    .filter_map(|i| {
                        let peer_if = self.nodes[i.peer]
                            .ifaces
                            .iter()
                            .find(|p| p.link == i.link)?;
                        Some(NextHop {
                            link: i.link,
                            peer: i.peer,
                            via: peer_if.addr(Family::V4)?,
                        })
                    })
                    .collect();
                if !nexthops.is_empty() {
                    self.nodes[x].routes.push(Route { prefix, nexthops });
                }
            }
        }
    }

    /// The node an address belongs to: one of its interfaces or targets.
    pub fn owner(&self, addr: IpAddr) -> Option<usize> {
        self.nodes.iter().position(|n| {
            n.ifaces
                .iter()
                .any(|i| i.addr(Family::V4) == Some(addr) || i.addr(Family::V6) == Some(addr))
                || matches!(addr, IpAddr::V4(a) if n.targets.contains(&a))
        })
    }

    /// The first address of `family` a node has (on its first link).
    pub fn primary(&self, node: usize, family: Family) -> Option<IpAddr> {
        self.nodes[node].ifaces.iter().find_map(|i| i.addr(family))
    }

    /// Where `x` sends a packet for `dst`: connected subnet first, then the
    /// longest matching route (as the kernel does).
    fn next_hops(&self, x: usize, dst: IpAddr) -> Vec<(usize, usize)> {
        let family = if dst.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        };
        for i in &self.nodes[x].ifaces {
            if self.links[i.link]
                .prefix(family)
                .is_some_and(|p| p.contains(dst))
            {
                return vec![(i.link, i.peer)];
            }
        }
        self.nodes[x]
            .routes
            .iter()
            .filter(|r| r.prefix.contains(dst))
            .max_by_key(|r| r.prefix.len)
            .map(|r| r.nexthops.iter().map(|h| (h.link, h.peer)).collect())
            .unwrap_or_default()
    }

    /// For each TTL, the routers a probe from `from` to `to`'s primary
    /// address may expire at (several with ECMP), excluding `to` itself.
    pub fn path(&self, from: usize, to: usize, family: Family) -> Result<Vec<Vec<Hop>>, LabError> {
        let dst = self
            .primary(to, family)
            .ok_or_else(|| LabError::NoAddress {
                node: self.nodes[to].name.clone(),
                family,
            })?;
        self.path_to(from, to, dst)
    }

    /// For each TTL, the routers a probe from `from` to `dst`, an address
    /// owned by node `to`, may expire at, excluding `to` itself.
    pub fn path_to(&self, from: usize, to: usize, dst: IpAddr) -> Result<Vec<Vec<Hop>>, LabError> {
        let family = if dst.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        };
        let no_route = || LabError::NoRoute {
            from: self.nodes[from].name.clone(),
            to: self.nodes[to].name.clone(),
            family,
        };
        let mut layer = BTreeSet::from([from]);
        let mut hops = Vec::new();
        for _ttl in 1..=64 {
            // next node -> links it was reached over
            let mut next: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
            for &x in &layer {
                let nh = self.next_hops(x, dst);
                if nh.is_empty() {
                    return Err(no_route());
                }
                for (link, peer) in nh {
                    next.entry(peer).or_default().insert(link);
                }
            }
            next.remove(&to);
            if next.is_empty() {
                return Ok(hops);
            }
            let mut hop = Vec::new();
            for (&n, in_links) in &next {
                for &link in in_links {
                    let iface = self.nodes[n]
                        .ifaces
                        .iter()
                        .find(|i| i.link == link)
                        .expect("link endpoint");
                    if let Some(addr) = iface.addr(family) {
                        let h = Hop {
                            node: self.nodes[n].name.clone(),
                            addr,
                            silent: self.nodes[n].silent,
                        };
                        if !hop.contains(&h) {
                            hop.push(h);
                        }
                    }
                }
            }
            hops.push(hop);
            layer = next.into_keys().collect();
        }
        Err(LabError::Topology(format!(
            "routing loop from {:?} to {:?}",
            self.nodes[from].name, self.nodes[to].name
        )))
    }
}

/// The topology's links, numbered from 1, without addresses yet.
fn plan_links(names: &Names<'_>) -> Result<Vec<PLink>, LabError> {
    let t = names.t;
    if t.links.len() > MAX_LINKS {
        return Err(invalid(t, format!("at most {MAX_LINKS} links")));
    }
    let mut links = Vec::new();
    for (i, l) in t.links.iter().enumerate() {
        let (a, b) = (names.get(&l.a)?, names.get(&l.b)?);
        if a == b {
            return Err(invalid(t, format!("link from {:?} to itself", l.a)));
        }
        links.push(PLink {
            a,
            b,
            number: i + 1,
            v4: None,
            v6: None,
            delay: l.delay,
        });
    }
    Ok(links)
}

/// Which links each NAT router hides, from whom.
fn find_nat(
    names: &Names<'_>,
    links: &[PLink],
    adj: &[Vec<(usize, usize)>],
) -> Result<Nat, LabError> {
    let t = names.t;
    let n_nodes = t.nodes.len();
    let mut nat = Nat {
        inside_link: vec![false; links.len()],
        hidden: vec![vec![false; links.len()]; n_nodes],
        out_links: vec![Vec::new(); n_nodes],
    };
    for (r, out) in &t.nat {
        let (r, out) = (names.get(r)?, names.get(out)?);
        let router = &t.nodes[r].name;
        if t.nodes[r].kind != NodeKind::Router {
            return Err(invalid(t, format!("NAT node {router:?} is not a router")));
        }
        let out_links: Vec<usize> = adj[r]
            .iter()
            .filter(|&&(_, p)| p == out)
            .map(|&(k, _)| k)
            .collect();
        if out_links.is_empty() {
            return Err(invalid(
                t,
                format!("NAT {router:?}: {:?} is not a neighbour", t.nodes[out].name),
            ));
        }
        // Nodes reachable from the router's inside neighbours without crossing it.
        let mut inside = vec![false; n_nodes];
        let mut queue: VecDeque<usize> = adj[r]
            .iter()
            .filter(|&&(_, p)| p != out)
            .map(|&(_, p)| p)
            .collect();
        while let Some(x) = queue.pop_front() {
            if x == r || inside[x] {
                continue;
            }
            inside[x] = true;
            queue.extend(adj[x].iter().map(|&(_, p)| p));
        }
        if inside[out] {
            return Err(invalid(
                t,
                format!(
                    "NAT {router:?}: the inside reaches {:?} without crossing the NAT",
                    t.nodes[out].name
                ),
            ));
        }
        for (k, l) in links.iter().enumerate() {
            let is_inside =
                !out_links.contains(&k) && (inside[l.a] || l.a == r) && (inside[l.b] || l.b == r);
            if is_inside {
                nat.inside_link[k] = true;
                for (x, hidden) in nat.hidden.iter_mut().enumerate() {
                    if x != r && !inside[x] {
                        hidden[k] = true;
                    }
                }
            }
        }
        nat.out_links[r].extend(out_links);
    }
    Ok(nat)
}

/// Link `i` gets `198.18.i.0/24` and `2001:db8:0:i::/64`; behind a NAT
/// `198.19.i.0/24` and `2001:db8:1:i::/64`.
fn address_links(t: &Topology, links: &mut [PLink], inside_link: &[bool]) -> Result<(), LabError> {
    for (k, l) in links.iter_mut().enumerate() {
        let i = l.number as u32;
        let (v4_base, v6_base) = if inside_link[k] {
            ([198u8, 19], 0x2001_0db8_0001u128)
        } else {
            ([198u8, 18], 0x2001_0db8_0000u128)
        };
        if t.ipv4 {
            let a = Ipv4Addr::new(v4_base[0], v4_base[1], i as u8, 0);
            l.v4 = Some(Prefix::new(a.into(), 24)?);
        }
        if t.ipv6 {
            let a = Ipv6Addr::from((v6_base << 80) | (u128::from(i) << 64));
            l.v6 = Some(Prefix::new(a.into(), 64)?);
        }
    }
    Ok(())
}

/// Nodes with their interfaces: `to-<peer>` when unambiguous and short
/// enough, else `eth<k>`; host 1 on a link's first node, 2 on its second.
fn plan_nodes(
    t: &Topology,
    links: &[PLink],
    adj: &[Vec<(usize, usize)>],
    nat_out: &[Vec<usize>],
) -> Vec<PNode> {
    let mut nodes: Vec<PNode> = t
        .nodes
        .iter()
        .map(|n| PNode {
            name: n.name.clone(),
            kind: n.kind,
            forwarding: n.kind == NodeKind::Router,
            silent: false,
            ifaces: Vec::new(),
            routes: Vec::new(),
            rate_limit: t.default_rate_limit,
            sysctls: Vec::new(),
            drops: Vec::new(),
            nat_out: Vec::new(),
            dscp_rewrite: None,
            source_rewrites: Vec::new(),
            syn_proxy_ports: Vec::new(),
            syn_limits: Vec::new(),
            tcp_listen: Vec::new(),
            udp_echo: Vec::new(),
            target_block: None,
            targets: Vec::new(),
            slow_icmp: None,
        })
        .collect();
    for (x, pn) in nodes.iter_mut().enumerate() {
        let adj = &adj[x];
        for (k, &(link, peer)) in adj.iter().enumerate() {
            let peer_name = &t.nodes[peer].name;
            let unique = adj.iter().filter(|&&(_, p)| p == peer).count() == 1;
            let ifname = if unique && peer_name.len() <= 12 {
                format!("to-{peer_name}")
            } else {
                format!("eth{k}")
            };
            let l = &links[link];
            let host = if l.a == x { 1 } else { 2 };
            pn.ifaces.push(Iface {
                link,
                peer,
                ifname,
                v4: l.v4.map(|p| host_addr4(p, host)),
                v6: l.v6.map(|p| host_addr6(p, host)),
                mtu: None,
            });
            if l.delay.is_some() {
                pn.forwarding = true;
            }
        }
        pn.nat_out = nat_out[x]
            .iter()
            .map(|&k| {
                pn.ifaces
                    .iter()
                    .find(|i| i.link == k)
                    .expect("a NAT's out link is one of its interfaces")
                    .ifname
                    .clone()
            })
            .collect();
    }
    nodes
}

/// Silence, slow ICMP, listeners, rate limits, drop rules and sysctls.
fn apply_node_options(names: &Names<'_>, nodes: &mut [PNode]) -> Result<(), LabError> {
    let t = names.t;
    for s in &t.silent {
        nodes[names.get(s)?].silent = true;
    }
    for (n, delay) in &t.slow_icmp {
        let pn = &mut nodes[names.get(n)?];
        if delay.is_zero() {
            return Err(invalid(
                t,
                format!("slow_icmp of {n:?} needs a delay above 0"),
            ));
        }
        if pn.slow_icmp.replace(*delay).is_some() {
            return Err(invalid(t, format!("slow_icmp of {n:?} declared twice")));
        }
        // The delayed errors come back in through the TUN device and are
        // forwarded from there.
        pn.forwarding = true;
    }
    for (n, port) in &t.tcp_listen {
        nodes[names.get(n)?].tcp_listen.push(*port);
    }
    for (n, port) in &t.udp_echo {
        nodes[names.get(n)?].udp_echo.push(*port);
    }
    for (n, limit) in &t.rate_limits {
        nodes[names.get(n)?].rate_limit = Some(*limit);
    }
    for d in &t.drops {
        nodes[names.get(&d.node)?].drops.push(d.clone());
    }
    for (n, dscp) in &t.dscp_rewrites {
        if *dscp > 63 {
            return Err(invalid(t, format!("DSCP {dscp} is not 0..=63")));
        }
        nodes[names.get(n)?].dscp_rewrite = Some(*dscp);
    }
    for (a, b, mtu) in &t.link_mtus {
        let (x, y) = (names.get(a)?, names.get(b)?);
        if !(68..=65535).contains(mtu) || (t.ipv6 && *mtu < 1280) {
            return Err(invalid(t, format!("MTU {mtu} of {a}–{b} is out of range")));
        }
        for (node, peer) in [(x, y), (y, x)] {
            let iface = nodes[node].ifaces.iter_mut().find(|i| i.peer == peer);
            let Some(iface) = iface else {
                return Err(invalid(t, format!("no link {a}–{b} for its MTU")));
            };
            iface.mtu = Some(*mtu);
        }
    }
    for (router, port, per_minute, burst) in &t.syn_limits {
        if *per_minute == 0 || *burst == 0 {
            return Err(invalid(t, "a SYN limit needs a rate and a burst above 0"));
        }
        nodes[names.get(router)?]
            .syn_limits
            .push((*port, *per_minute, *burst));
    }
    for (router, port) in &t.syn_proxies {
        nodes[names.get(router)?].syn_proxy_ports.push(*port);
    }
    for (router, outside, host) in &t.source_rewrites {
        let (r, o, h) = (names.get(router)?, names.get(outside)?, names.get(host)?);
        let out = nodes[r].ifaces.iter().find(|i| i.peer == o);
        let (Some(out), Some(host_addr)) = (out, nodes[h].ifaces.iter().find_map(|i| i.v4)) else {
            return Err(invalid(
                t,
                format!(
                    "rewrite_source: {router} needs an IPv4 link to {outside}, {host} an IPv4 address"
                ),
            ));
        };
        let Some(router_addr) = out.v4 else {
            return Err(invalid(
                t,
                format!("rewrite_source: {router}–{outside} has no IPv4"),
            ));
        };
        let ifname = out.ifname.clone();
        nodes[r]
            .source_rewrites
            .push((ifname, router_addr, host_addr));
    }
    for (n, k, v) in &t.sysctls {
        if !k
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c))
            || v.contains(char::is_whitespace)
        {
            return Err(invalid(t, format!("bad sysctl {k}={v}")));
        }
        nodes[names.get(n)?].sysctls.push((k.clone(), v.clone()));
    }
    Ok(())
}

/// Target blocks: the k-th node with targets gets `198.19.(128 + 4k).0/22`.
fn assign_targets(names: &Names<'_>, nodes: &mut [PNode], links: &[PLink]) -> Result<(), LabError> {
    let t = names.t;
    if !t.targets.is_empty() && !t.ipv4 {
        return Err(invalid(
            t,
            "targets are IPv4 addresses, but IPv4 is disabled",
        ));
    }
    if t.targets.len() > MAX_TARGET_NODES {
        return Err(invalid(
            t,
            format!("at most {MAX_TARGET_NODES} nodes with targets"),
        ));
    }
    for (k, (n, count)) in t.targets.iter().enumerate() {
        let pn = &mut nodes[names.get(n)?];
        if pn.target_block.is_some() {
            return Err(invalid(t, format!("targets of {n:?} declared twice")));
        }
        if !(1..=MAX_TARGETS).contains(count) {
            return Err(invalid(
                t,
                format!("{count} targets for {n:?}: want 1..={MAX_TARGETS}"),
            ));
        }
        let base = u32::from(TARGET_BASE) + ((k as u32) << (32 - TARGET_BLOCK_LEN));
        let block = Prefix::new(IpAddr::V4(base.into()), TARGET_BLOCK_LEN)?;
        if let Some(l) = links.iter().find(|l| {
            l.v4.is_some_and(|p| p.contains(block.addr) || block.contains(p.addr))
        }) {
            return Err(invalid(
                t,
                format!(
                    "target block {block} of {n:?} overlaps link {} ({})",
                    l.number,
                    l.v4.expect("checked")
                ),
            ));
        }
        pn.target_block = Some(block);
        pn.targets = (1..=u32::from(*count))
            .map(|i| Ipv4Addr::from(base + i))
            .collect();
    }
    Ok(())
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn host_addr4(p: Prefix, host: u8) -> Ipv4Addr {
    match p.addr {
        IpAddr::V4(a) => Ipv4Addr::from(u32::from(a) | u32::from(host)),
        IpAddr::V6(_) => unreachable!("v4 prefix"),
    }
}

fn host_addr6(p: Prefix, host: u8) -> Ipv6Addr {
    match p.addr {
        IpAddr::V6(a) => Ipv6Addr::from(u128::from(a) | u128::from(host)),
        IpAddr::V4(_) => unreachable!("v6 prefix"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::named;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The planned path from node `src` to node `dst`.
    fn src_to_dst(p: &Plan, family: Family) -> Vec<Vec<Hop>> {
        let (src, dst) = (p.node_index("src").unwrap(), p.node_index("dst").unwrap());
        p.path(src, dst, family).unwrap()
    }

    fn addrs(hops: &[Vec<Hop>]) -> Vec<Vec<IpAddr>> {
        hops.iter()
            .map(|h| h.iter().map(|h| h.addr).collect())
            .collect()
    }

    #[test]
    fn chain_addresses_and_path() {
        let p = Plan::new(&named::chain()).unwrap();
        let src = p.node_index("src").unwrap();
        let dst = p.node_index("dst").unwrap();
        assert_eq!(p.primary(src, Family::V4), Some(ip("198.18.1.1")));
        assert_eq!(p.primary(dst, Family::V4), Some(ip("198.18.5.2")));
        assert_eq!(p.primary(dst, Family::V6), Some(ip("2001:db8:0:5::2")));
        let path = p.path(src, dst, Family::V4).unwrap();
        assert_eq!(
            addrs(&path),
            vec![
                vec![ip("198.18.1.2")],
                vec![ip("198.18.2.2")],
                vec![ip("198.18.3.2")],
                vec![ip("198.18.4.2")]
            ]
        );
        assert!(path[2][0].silent);
        let back = p.path(dst, src, Family::V6).unwrap();
        assert_eq!(back[0][0].addr, ip("2001:db8:0:5::1"));
        assert_eq!(p.nodes[src].ifaces[0].ifname, "to-r1");
    }

    #[test]
    fn bench_topologies_keep_the_kernel_rate_limits() {
        let chain = Plan::new(&named::chain()).unwrap();
        let limited = Plan::new(&named::chain_limited()).unwrap();
        assert_eq!(
            addrs(&src_to_dst(&chain, Family::V4)),
            addrs(&src_to_dst(&limited, Family::V4)),
            "the same chain"
        );
        assert!(
            chain
                .nodes
                .iter()
                .all(|n| n.rate_limit == Some(IcmpRateLimit::UNLIMITED))
        );
        for p in [&limited, &Plan::new(&named::delay_silent()).unwrap()] {
            assert!(
                p.nodes
                    .iter()
                    .all(|n| n.rate_limit == Some(IcmpRateLimit::KERNEL_DEFAULT))
            );
        }

        let p = Plan::new(&named::delay_silent()).unwrap();
        let path = src_to_dst(&p, Family::V4);
        assert_eq!(
            addrs(&path),
            vec![
                vec![ip("198.18.1.2")],
                vec![ip("198.18.2.2")],
                vec![ip("198.18.3.2")]
            ]
        );
        assert_eq!(
            path.iter().map(|h| h[0].silent).collect::<Vec<_>>(),
            [false, true, false],
            "r2 is silent"
        );
        let dst = p.node_index("dst").unwrap();
        assert_eq!(p.primary(dst, Family::V4), Some(ip("198.18.4.2")));
        let delayed: Vec<usize> = p
            .links
            .iter()
            .filter(|l| l.delay.is_some())
            .map(|l| l.number)
            .collect();
        assert_eq!(delayed, [2], "r1-r2");
    }

    #[test]
    fn slow_icmp_is_planned_per_node() {
        for (t, limit) in [
            (named::slow(), IcmpRateLimit::UNLIMITED),
            (named::slow_limited(), IcmpRateLimit::KERNEL_DEFAULT),
        ] {
            let p = Plan::new(&t).unwrap();
            let slow: Vec<(&str, Option<Duration>)> = p
                .nodes
                .iter()
                .map(|n| (n.name.as_str(), n.slow_icmp))
                .collect();
            let ms = |m| Some(Duration::from_millis(m));
            assert_eq!(
                slow,
                [
                    ("src", None),
                    ("r1", None),
                    ("r2", ms(30)),
                    ("r3", ms(120)),
                    ("r4", None),
                    ("dst", None)
                ]
            );
            assert!(p.nodes.iter().all(|n| n.rate_limit == Some(limit)));
            assert!(p.nodes.iter().all(|n| !n.silent), "no silent router");
            assert!(p.links.iter().all(|l| l.delay.is_none()), "no delayed link");
            for family in [Family::V4, Family::V6] {
                let path = src_to_dst(&p, family);
                let k = |k: u8| match family {
                    Family::V4 => ip(&format!("198.18.{k}.2")),
                    Family::V6 => ip(&format!("2001:db8:0:{k}::2")),
                };
                assert_eq!(
                    addrs(&path),
                    vec![vec![k(1)], vec![k(2)], vec![k(3)], vec![k(4)]]
                );
                let dst = p.node_index("dst").unwrap();
                assert_eq!(p.primary(dst, family), Some(k(5)));
            }
        }
        // A slow host forwards: its delayed errors come back in through the
        // TUN device.
        let t = Topology::new("t")
            .host("a")
            .host("b")
            .link("a", "b")
            .slow_icmp("b", Duration::from_millis(5));
        let p = Plan::new(&t).unwrap();
        assert!(!p.nodes[0].forwarding);
        assert!(p.nodes[1].forwarding);
        let bad = [
            t.clone().slow_icmp("b", Duration::from_millis(5)),
            t.clone().slow_icmp("a", Duration::ZERO),
            t.clone().slow_icmp("nope", Duration::from_millis(5)),
        ];
        for t in bad {
            assert!(Plan::new(&t).is_err());
        }
    }

    #[test]
    fn deep_fanout_and_three_router_chain() {
        for (t, limit) in [
            (named::fanout_deep(), IcmpRateLimit::KERNEL_DEFAULT),
            (named::fanout_deep_unlimited(), IcmpRateLimit::UNLIMITED),
        ] {
            let p = Plan::new(&t).unwrap();
            assert!(p.nodes.iter().all(|n| n.rate_limit == Some(limit)));
            let src = p.node_index("src").unwrap();
            for (i, d) in ["d1", "d2", "d3", "d4"].into_iter().enumerate() {
                let x = p.node_index(d).unwrap();
                let targets = &p.nodes[x].targets;
                assert_eq!(targets.len(), usize::from(named::FANOUT_DEEP_TARGETS));
                let first = ip(&format!("198.19.{}.1", 128 + 4 * i));
                assert_eq!(IpAddr::V4(targets[0]), first, "{d}");
                assert_eq!(
                    IpAddr::V4(targets[63]),
                    ip(&format!("198.19.{}.64", 128 + 4 * i))
                );
                assert_eq!(p.owner(first), Some(x));
                assert_eq!(
                    addrs(&p.path_to(src, x, first).unwrap()),
                    vec![
                        vec![ip("198.18.1.2")],
                        vec![ip("198.18.2.2")],
                        vec![ip("198.18.3.2")]
                    ],
                    "{d}: gw, r2, r3"
                );
                assert_eq!(
                    p.primary(x, Family::V6),
                    Some(ip(&format!("2001:db8:0:{}::2", 4 + i)))
                );
            }
        }
        for (t, limit) in [
            (named::three(), IcmpRateLimit::UNLIMITED),
            (named::three_limited(), IcmpRateLimit::KERNEL_DEFAULT),
        ] {
            let p = Plan::new(&t).unwrap();
            assert!(p.nodes.iter().all(|n| n.rate_limit == Some(limit)));
            assert!(p.nodes.iter().all(|n| !n.silent && n.slow_icmp.is_none()));
            let (src, dst) = (p.node_index("src").unwrap(), p.node_index("dst").unwrap());
            assert_eq!(p.primary(dst, Family::V4), Some(ip("198.18.4.2")));
            let targets = &p.nodes[dst].targets;
            assert_eq!(targets.len(), usize::from(named::THREE_TARGETS));
            let last = IpAddr::V4(targets[19]);
            assert_eq!(last, ip("198.19.128.20"));
            assert_eq!(
                addrs(&p.path_to(src, dst, last).unwrap()),
                addrs(&src_to_dst(&p, Family::V4))
            );
            assert_eq!(src_to_dst(&p, Family::V6).len(), 3, "r1, r2, r3");
        }
    }

    #[test]
    fn ecmp_group_and_alternatives() {
        let p = Plan::new(&named::ecmp()).unwrap();
        let r1 = p.node_index("r1").unwrap();
        let dst_net: Prefix = "198.18.6.0/24".parse().unwrap();
        let route = p.nodes[r1]
            .routes
            .iter()
            .find(|r| r.prefix == dst_net)
            .unwrap();
        assert_eq!(route.nexthops.len(), 2);
        let path = src_to_dst(&p, Family::V4);
        assert_eq!(path.len(), 3);
        assert_eq!(path[1].len(), 2);
        // r3 is reached over either branch.
        assert_eq!(
            path[2].iter().map(|h| h.node.as_str()).collect::<Vec<_>>(),
            ["r3", "r3"]
        );
    }

    #[test]
    fn nat_inside_is_private_and_unrouted() {
        let p = Plan::new(&named::nat()).unwrap();
        let src = p.node_index("src").unwrap();
        let dst = p.node_index("dst").unwrap();
        assert_eq!(p.primary(src, Family::V4), Some(ip("198.19.1.1")));
        assert_eq!(p.primary(src, Family::V6), Some(ip("2001:db8:1:1::1")));
        assert!(p.path(src, dst, Family::V4).is_ok());
        assert!(matches!(
            p.path(dst, src, Family::V4),
            Err(LabError::NoRoute { .. })
        ));
        assert_eq!(p.nodes[p.node_index("nat").unwrap()].nat_out, ["to-r2"]);
    }

    #[test]
    fn hosts_do_not_transit() {
        let t = Topology::new("t")
            .router("a")
            .host("h")
            .router("b")
            .link("a", "h")
            .link("h", "b");
        let p = Plan::new(&t).unwrap();
        let a = p.node_index("a").unwrap();
        assert!(p.nodes[a].routes.is_empty());
    }

    #[test]
    fn static_route_overrides() {
        let t = named::ecmp().static_route("r1", "198.18.6.0/24", &["r2b"]);
        let p = Plan::new(&t).unwrap();
        let path = src_to_dst(&p, Family::V4);
        assert_eq!(path[1].len(), 1);
        assert_eq!(path[1][0].node, "r2b");
        // v6 is untouched and still multipath.
        let path6 = src_to_dst(&p, Family::V6);
        assert_eq!(path6[1].len(), 2);
    }

    #[test]
    fn rejects_bad_topologies() {
        assert!(Plan::new(&Topology::new("t").host("a").link("a", "b")).is_err());
        assert!(Plan::new(&Topology::new("t").host("a").host("a")).is_err());
        assert!(Plan::new(&Topology::new("t").host("a b")).is_err());
        assert!(Plan::new(&Topology::new("t").host("a").ipv4(false).ipv6(false)).is_err());
        let t = Topology::new("t")
            .router("n")
            .host("x")
            .host("y")
            .link("x", "n")
            .link("n", "y")
            .link("x", "y")
            .nat("n", "y");
        assert!(Plan::new(&t).is_err());
        assert!(Plan::new(&named::chain().static_route("r1", "198.18.9.0/24", &["dst"])).is_err());
    }

    #[test]
    fn fanout_targets_are_routed_to_their_owner() {
        let p = Plan::new(&named::fanout()).unwrap();
        let (src, gw) = (p.node_index("src").unwrap(), p.node_index("gw").unwrap());
        let d1 = &p.nodes[p.node_index("d1").unwrap()];
        assert_eq!(d1.targets.len(), 256);
        assert_eq!(d1.targets[0], "198.19.128.1".parse::<Ipv4Addr>().unwrap());
        assert_eq!(d1.targets[255], "198.19.129.0".parse::<Ipv4Addr>().unwrap());
        let d4 = p.node_index("d4").unwrap();
        assert_eq!(
            p.nodes[d4].target_block,
            Some("198.19.140.0/22".parse().unwrap())
        );
        let route = |x: usize, prefix: &str| {
            let prefix: Prefix = prefix.parse().unwrap();
            p.nodes[x]
                .routes
                .iter()
                .find(|r| r.prefix == prefix)
                .cloned()
        };
        let at_gw = route(gw, "198.19.140.0/22").unwrap();
        assert_eq!(at_gw.nexthops.len(), 1);
        assert_eq!(
            at_gw.nexthops[0].via,
            ip("198.18.5.2"),
            "gw sends d4's block to d4"
        );
        assert_eq!(
            route(src, "198.19.140.0/22").unwrap().nexthops[0].via,
            ip("198.18.1.2")
        );
        assert!(route(d4, "198.19.140.0/22").is_none(), "local to d4");

        let target = ip("198.19.140.7");
        assert_eq!(p.owner(target), Some(d4));
        assert_eq!(p.owner(ip("198.19.141.7")), None, "beyond the 256 targets");
        assert_eq!(p.owner(ip("198.18.5.2")), Some(d4));
        let path = p.path_to(src, d4, target).unwrap();
        assert_eq!(addrs(&path), vec![vec![ip("198.18.1.2")]]);
    }

    #[test]
    fn targets_follow_ecmp_groups() {
        let p = Plan::new(&named::ecmp().targets("dst", 4)).unwrap();
        let (src, dst) = (p.node_index("src").unwrap(), p.node_index("dst").unwrap());
        assert_eq!(p.nodes[dst].targets.len(), 4);
        let target = IpAddr::V4(p.nodes[dst].targets[3]);
        assert_eq!(target, ip("198.19.128.4"));
        let path = p.path_to(src, dst, target).unwrap();
        assert_eq!(addrs(&path), addrs(&src_to_dst(&p, Family::V4)));
        assert_eq!(path[1].len(), 2, "both branches");
    }

    #[test]
    fn rejects_bad_targets() {
        let chain = || named::chain();
        assert!(Plan::new(&chain().targets("dst", 0)).is_err());
        assert!(Plan::new(&chain().targets("dst", 1023)).is_err());
        assert!(Plan::new(&chain().targets("dst", 1022)).is_ok());
        assert!(Plan::new(&chain().targets("dst", 1).targets("dst", 1)).is_err());
        assert!(Plan::new(&chain().targets("nope", 1)).is_err());
        assert!(Plan::new(&chain().ipv4(false).targets("dst", 1)).is_err());
        // Link 128 behind a NAT is 198.19.128.0/24: the first target block.
        let mut t = Topology::new("t").router("o").router("n").host("h");
        for _ in 0..127 {
            t = t.link("o", "n");
        }
        let t = t.link("n", "h").nat("n", "o");
        assert!(Plan::new(&t).is_ok());
        let err = Plan::new(&t.targets("o", 1)).unwrap_err().to_string();
        assert!(err.contains("overlaps link 128"), "{err}");
    }

    #[test]
    fn prefix_parsing() {
        let p: Prefix = "198.18.3.7/24".parse().unwrap();
        assert_eq!(p.to_string(), "198.18.3.0/24");
        assert!(p.contains(ip("198.18.3.200")));
        assert!(!p.contains(ip("198.18.4.1")));
        assert!("198.18.3.0/33".parse::<Prefix>().is_err());
        assert!("2001:db8::/129".parse::<Prefix>().is_err());
        let p6: Prefix = "2001:db8:0:a::/64".parse().unwrap();
        assert!(p6.contains(ip("2001:db8:0:a::2")));
    }
}
