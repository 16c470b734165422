//! The path graph of a multi-flow trace: which routers the flows crossed at
//! each TTL, the links between them with the flows that took each, loss and
//! RTT per node and per link (not merged across load-balanced branches), and
//! one fingerprint per distinct path.
//!
//! Built from the runs of a record: a flow's runs are its attempts, and since
//! every probe of a flow follows one path (Paris), a flow's router at a TTL is
//! whichever address answered any of its attempts there; attempts that timed
//! out at a TTL where another attempt was answered are that node's loss.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

// The record's half of the graph lives with the record (model.rs); this
// file builds it.
pub use super::model::{GraphLink, GraphNode, PathGraph};
use super::model::{NoAnswerKind, RttStats, Run};

/// What a flow saw at one TTL, over all its attempts.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowHop {
    pub ttl: u8,
    /// The router (or destination) that answered; `None`: silent.
    pub address: Option<IpAddr>,
    /// RTTs (ms) of the attempts answered there.
    pub rtts: Vec<f64>,
    /// Attempts that waited their full time without an answer.
    pub lost: u32,
    pub destination: bool,
}

/// One flow's path: its hops from the first TTL it probed, up to the last
/// TTL it has an observation for (a probe never sent or cut short ends it:
/// nothing after it can be attributed).
#[derive(Clone, Debug, PartialEq)]
pub struct FlowPath {
    pub flow_id: u16,
    pub hops: Vec<FlowHop>,
}

impl FlowPath {
    /// The path of flow `flow_id` from its runs (attempts).
    pub fn from_runs<'a>(flow_id: u16, runs: impl IntoIterator<Item = &'a Run>) -> FlowPath {
        let mut by_ttl: BTreeMap<u8, FlowHop> = BTreeMap::new();
        let mut unknown: BTreeSet<u8> = BTreeSet::new();
        for run in runs {
            let target = run.destination.ip_address;
            for hop in &run.hops {
                let ttl = hop.ttl.get();
                let entry = by_ttl.entry(ttl).or_insert(FlowHop {
                    ttl,
                    address: None,
                    rtts: Vec::new(),
                    lost: 0,
                    destination: false,
                });
                match (hop.ip_address, hop.no_answer) {
                    (Some(addr), _) => {
                        entry.address.get_or_insert(addr);
                        entry.destination |= addr == target;
                        entry.rtts.extend(hop.rtt);
                    }
                    (None, Some(NoAnswerKind::Timeout)) => entry.lost += 1,
                    (None, _) => {
                        unknown.insert(ttl);
                    }
                }
            }
        }
        let mut hops = Vec::new();
        for (ttl, hop) in by_ttl {
            let observed = hop.address.is_some() || hop.lost > 0;
            if !observed && unknown.contains(&ttl) {
                break;
            }
            let last = hop.destination;
            hops.push(hop);
            if last {
                break;
            }
        }
        FlowPath { flow_id, hops }
    }
}

pub type NodeId = usize;

/// A router position: an address at a TTL, or silence at a TTL after a
/// given node (a silent hop is not one router: only its position is known).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Position {
    Source,
    Address { ttl: u8, address: IpAddr },
    Silent { ttl: u8, after: NodeId },
}

#[derive(Clone, Debug, Default)]
struct Stats {
    flows: BTreeSet<u16>,
    rtts: Vec<f64>,
    answered: u32,
    lost: u32,
}

impl Stats {
    fn add(&mut self, flow: u16, hop: &FlowHop) {
        self.flows.insert(flow);
        self.rtts.extend(&hop.rtts);
        self.answered += hop.rtts.len() as u32;
        self.lost += hop.lost;
    }
}

/// The graph of all flows so far.
#[derive(Clone, Debug)]
pub struct Graph {
    source: IpAddr,
    first_ttl: u8,
    positions: Vec<Position>,
    index: BTreeMap<Position, NodeId>,
    node_stats: Vec<Stats>,
    destination: BTreeSet<NodeId>,
    links: BTreeMap<(NodeId, NodeId), Stats>,
    flows: usize,
}

impl Graph {
    /// The graph of `flows`, probed from `first_ttl` on by `source`. A flow
    /// whose first hop comes later skipped TTLs where earlier flows found a
    /// single router: it is taken to have crossed that router.
    pub fn build(source: IpAddr, first_ttl: u8, flows: &[FlowPath]) -> Graph {
        let mut g = Graph {
            source,
            first_ttl,
            positions: vec![Position::Source],
            index: BTreeMap::from([(Position::Source, 0)]),
            node_stats: vec![Stats::default()],
            destination: BTreeSet::new(),
            links: BTreeMap::new(),
            flows: 0,
        };
        let (mut full, mut late): (Vec<&FlowPath>, Vec<&FlowPath>) = flows
            .iter()
            .partition(|f| f.hops.first().is_none_or(|h| h.ttl <= first_ttl));
        full.append(&mut late);
        for flow in full {
            g.add(flow);
        }
        g
    }

    fn node(&mut self, position: Position) -> NodeId {
        if let Some(&id) = self.index.get(&position) {
            return id;
        }
        let id = self.positions.len();
        self.positions.push(position);
        self.index.insert(position, id);
        self.node_stats.push(Stats::default());
        id
    }

    fn add(&mut self, flow: &FlowPath) {
        self.flows += 1;
        self.node_stats[0].flows.insert(flow.flow_id);
        let mut pred = 0;
        if let Some(first) = flow.hops.first() {
            // TTLs this flow skipped: the single router earlier flows found.
            for ttl in self.first_ttl..first.ttl {
                let Some(only) = self.single_at(ttl) else {
                    return;
                };
                self.node_stats[only].flows.insert(flow.flow_id);
                self.links
                    .entry((pred, only))
                    .or_default()
                    .flows
                    .insert(flow.flow_id);
                pred = only;
            }
        }
        for hop in &flow.hops {
            let position = match hop.address {
                Some(address) => Position::Address {
                    ttl: hop.ttl,
                    address,
                },
                None => Position::Silent {
                    ttl: hop.ttl,
                    after: pred,
                },
            };
            let node = self.node(position);
            self.node_stats[node].add(flow.flow_id, hop);
            self.links
                .entry((pred, node))
                .or_default()
                .add(flow.flow_id, hop);
            if hop.destination {
                self.destination.insert(node);
            }
            pred = node;
        }
    }

    /// The one node at `ttl`, when every flow there found the same router.
    pub fn single_at(&self, ttl: u8) -> Option<NodeId> {
        let mut at = self
            .positions
            .iter()
            .enumerate()
            .filter(|(_, p)| position_ttl(p) == Some(ttl));
        let (id, position) = at.next()?;
        (at.next().is_none() && matches!(position, Position::Address { .. })).then_some(id)
    }

    pub fn flows(&self) -> usize {
        self.flows
    }

    pub fn nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        0..self.positions.len()
    }

    pub fn position(&self, node: NodeId) -> Position {
        self.positions[node]
    }

    pub fn is_destination(&self, node: NodeId) -> bool {
        self.destination.contains(&node)
    }

    /// Flows that crossed `node`.
    pub fn flows_through(&self, node: NodeId) -> usize {
        self.node_stats[node].flows.len()
    }

    /// The ids of the flows that crossed `node`.
    pub fn flow_ids_through(&self, node: NodeId) -> impl Iterator<Item = u16> + '_ {
        self.node_stats[node].flows.iter().copied()
    }

    /// The nodes flows went on to from `node`.
    pub fn successors(&self, node: NodeId) -> Vec<NodeId> {
        self.links
            .keys()
            .filter(|(from, _)| *from == node)
            .map(|(_, to)| *to)
            .collect()
    }

    /// Flows that crossed `node` and were seen at the next TTL.
    pub fn flows_beyond(&self, node: NodeId) -> usize {
        let mut flows: BTreeSet<u16> = BTreeSet::new();
        for ((from, _), link) in &self.links {
            if *from == node {
                flows.extend(&link.flows);
            }
        }
        flows.len()
    }

    /// The record's form of the graph.
    pub fn to_record(&self, method: &str, confidence: Option<f64>, complete: bool) -> PathGraph {
        let nodes = self
            .nodes()
            .map(|id| {
                let stats = &self.node_stats[id];
                let (ttl, address, silent) = match self.positions[id] {
                    Position::Source => (0, Some(self.source), false),
                    Position::Address { ttl, address } => (ttl, Some(address), false),
                    Position::Silent { ttl, .. } => (ttl, None, true),
                };
                GraphNode {
                    id,
                    ttl,
                    ip_address: address,
                    silent,
                    destination: self.is_destination(id),
                    flows: stats.flows.len() as u32,
                    rtt: rtt_stats(&stats.rtts),
                    loss: loss(stats),
                }
            })
            .collect();
        let links = self
            .links
            .iter()
            .map(|((from, to), stats)| GraphLink {
                from: *from,
                to: *to,
                flows: stats.flows.iter().copied().collect(),
                rtt: rtt_stats(&stats.rtts),
                loss: loss(stats),
            })
            .collect();
        PathGraph {
            method: method.to_string(),
            confidence,
            rule: None,
            complete,
            flows: self.flows as u32,
            nodes,
            links,
        }
    }
}

fn position_ttl(p: &Position) -> Option<u8> {
    match p {
        Position::Source => None,
        Position::Address { ttl, .. } | Position::Silent { ttl, .. } => Some(*ttl),
    }
}

fn rtt_stats(rtts: &[f64]) -> Option<RttStats> {
    if rtts.is_empty() {
        return None;
    }
    let round = |v: f64| (v * 1000.0).round() / 1000.0;
    Some(RttStats {
        avg: round(rtts.iter().sum::<f64>() / rtts.len() as f64),
        min: rtts.iter().copied().fold(f64::INFINITY, f64::min),
        max: rtts.iter().copied().fold(0.0, f64::max),
    })
}

/// Unanswered attempts over all attempts that reached the position.
fn loss(stats: &Stats) -> f64 {
    let all = stats.answered + stats.lost;
    if all == 0 {
        0.0
    } else {
        f64::from(stats.lost) / f64::from(all)
    }
}

/// FNV-1a, 64 bits: a fingerprint that is the same on every machine and
/// release (std's hashers promise neither). Hand-written: five lines.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// A run's path fingerprint: the hop addresses by TTL (`*` when silent).
pub fn run_fingerprint(run: &Run) -> String {
    let mut text = String::new();
    for hop in &run.hops {
        match hop.ip_address {
            Some(a) => write!(text, "{}={a};", hop.ttl).expect("String"),
            None => write!(text, "{}=*;", hop.ttl).expect("String"),
        }
    }
    format!("{:016x}", fnv1a(text.as_bytes()))
}

/// The fingerprint of a set of paths: the same set of distinct run paths
/// gives the same value, whatever their order or count.
pub fn set_fingerprint<'a>(runs: impl IntoIterator<Item = &'a str>) -> String {
    let distinct: BTreeSet<&str> = runs.into_iter().collect();
    let joined: Vec<&str> = distinct.into_iter().collect();
    format!("{:016x}", fnv1a(joined.join(",").as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8, ttl: u8) -> IpAddr {
        IpAddr::from([198, 18, ttl, last])
    }

    fn hop(ttl: u8, address: Option<IpAddr>) -> FlowHop {
        FlowHop {
            ttl,
            address,
            rtts: address.map(|_| vec![f64::from(ttl)]).unwrap_or_default(),
            lost: u32::from(address.is_none()),
            destination: false,
        }
    }

    /// src → r1 → (branch) → r3 → dst, `branch` the TTL-2 router's last byte.
    fn diamond_flow(flow_id: u16, branch: u8) -> FlowPath {
        let mut last = hop(4, Some(ip(9, 9)));
        last.destination = true;
        FlowPath {
            flow_id,
            hops: vec![
                hop(1, Some(ip(1, 1))),
                hop(2, Some(ip(branch, 2))),
                hop(3, Some(ip(1, 3))),
                last,
            ],
        }
    }

    #[test]
    fn a_diamond_has_its_branches_and_their_flows() {
        let flows: Vec<FlowPath> = (0..8)
            .map(|f| diamond_flow(40000 + f, 1 + (f % 2) as u8))
            .collect();
        let g = Graph::build(IpAddr::from([198, 18, 0, 1]), 1, &flows);
        let r1 = g.single_at(1).expect("one router at TTL 1");
        assert_eq!(g.successors(r1).len(), 2);
        assert_eq!(g.flows_beyond(r1), 8);
        assert_eq!(g.single_at(2), None);
        assert!(g.single_at(3).is_some());
        let record = g.to_record("flows", None, true);
        let branch_links: Vec<&GraphLink> = record.links.iter().filter(|l| l.from == r1).collect();
        assert_eq!(branch_links.len(), 2);
        assert!(branch_links.iter().all(|l| l.flows.len() == 4));
        assert_eq!(record.nodes.iter().filter(|n| n.destination).count(), 1);
    }

    #[test]
    fn late_flows_inherit_the_single_router_prefix() {
        let mut flows: Vec<FlowPath> = (0..6).map(|f| diamond_flow(40000 + f, 1)).collect();
        let mut late = diamond_flow(41000, 2);
        late.hops.remove(0);
        flows.push(late);
        let g = Graph::build(IpAddr::from([198, 18, 0, 1]), 1, &flows);
        let r1 = g.single_at(1).unwrap();
        assert_eq!(g.flows_through(r1), 7, "the late flow crossed r1 too");
        assert_eq!(g.successors(r1).len(), 2);
    }

    #[test]
    fn silence_is_a_position_not_a_router_and_counts_as_loss() {
        let mut a = diamond_flow(1, 1);
        a.hops[1] = hop(2, None);
        let g = Graph::build(IpAddr::from([198, 18, 0, 1]), 1, &[a, diamond_flow(2, 1)]);
        let record = g.to_record("flows", None, true);
        let silent = record.nodes.iter().find(|n| n.silent).unwrap();
        assert_eq!((silent.ttl, silent.ip_address, silent.loss), (2, None, 1.0));
        // The flow behind the silent hop still reached the destination.
        assert_eq!(record.nodes.iter().filter(|n| n.destination).count(), 1);
        let dst = record.nodes.iter().find(|n| n.destination).unwrap();
        assert_eq!(dst.flows, 2);
    }

    #[test]
    fn fingerprints_are_stable_and_order_free() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let a = set_fingerprint(["x", "y", "x"]);
        assert_eq!(a, set_fingerprint(["y", "x"]));
        assert_ne!(a, set_fingerprint(["x"]));
    }
}
