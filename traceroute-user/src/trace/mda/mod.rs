//! MDA, the multipath detection algorithm (Augustin et al.): at every router,
//! send enough flows through it to rule out one more next hop than found so
//! far, at a chosen confidence. Flows go out in rounds, every flow of a round
//! in parallel, so a diamond costs a few trace times rather than a trace per
//! hop. Probes are spent only where a router still lacks flows: after the
//! first round (which maps every TTL), new flows probe only as far as the
//! shallowest such router (its TTL where flows split among routers there,
//! the next one where it is alone), and a router is served by flows already
//! known to cross it, probed one TTL further ([`Mda::extensions`]), one
//! probe each. By default the rule holds per TTL where the routers of the
//! TTL look alike ([`MdaRule::Lite`]). Pure planning over a [`Graph`]; the
//! tracer runs the rounds.

pub(in crate::trace) mod run;

use std::collections::{BTreeMap, BTreeSet};

use crate::path::graph::{FlowPath, Graph, NodeId, Position};

// A request parameter, so it lives with the request (which must not import
// this module back); named here too, where it is used.
pub use super::request::{Confidence, MdaRule};

/// n_k: flows through a router needed to rule out a k-th next hop when k−1
/// were found: the fewest flows n for which k equally likely next hops would
/// all have shown up with probability at least the confidence. Exact by
/// inclusion–exclusion, P(some of k missed after n) =
/// Σ_{i=1}^{k−1} (−1)^{i+1} C(k,i) ((k−i)/k)^n, which gives the published
/// table (6, 11, 16, 21, 27, 33, 38, 44, 51, 57 … at 95 %); the union bound
/// n_k = ⌈ln(ε/k) / ln((k−1)/k)⌉ is at most one above it and is used past
/// k = 32, where the alternating sum loses precision.
pub fn stopping_point(k: usize, confidence: Confidence) -> usize {
    let epsilon = 1.0 - confidence.value();
    if k < 2 {
        return 1;
    }
    if k > 32 {
        let kf = k as f64;
        return ((epsilon / kf).ln() / ((kf - 1.0) / kf).ln()).ceil() as usize;
    }
    let missed = |n: i32| {
        let mut sum = 0.0;
        let mut choose = 1.0;
        for i in 1..k {
            choose = choose * (k - i + 1) as f64 / i as f64;
            let term = choose * ((k - i) as f64 / k as f64).powi(n);
            sum += if i % 2 == 1 { term } else { -term };
        }
        sum
    };
    (1..)
        .find(|&n| missed(n) <= epsilon)
        .expect("the sum falls to 0") as usize
}

/// Planning rounds of flows for one MDA trace.
#[derive(Clone, Copy, Debug)]
pub struct Mda {
    pub confidence: Confidence,
    pub first_ttl: u8,
    pub max_ttl: u8,
    /// Most flows the trace may use in all.
    pub max_flows: usize,
    pub rule: MdaRule,
}

impl Mda {
    /// Routers that have not had enough flows yet: (router, flows still
    /// needed through it).
    pub fn deficits(&self, graph: &Graph) -> Vec<(NodeId, usize)> {
        let shares = match self.rule {
            MdaRule::Lite => hop_shares(graph, self.confidence),
            MdaRule::Full => BTreeMap::new(),
        };
        graph
            .nodes()
            .filter_map(|node| {
                let ttl = match graph.position(node) {
                    Position::Source => 0,
                    Position::Address { ttl, .. } | Position::Silent { ttl, .. } => ttl,
                };
                let successors = graph.successors(node).len();
                // The destination and the last TTL have no next hop to look
                // for. A router no flow was probed beyond yet (found by a
                // round that stopped at its TTL) needs one flow there first.
                if graph.is_destination(node) || ttl >= self.max_ttl {
                    return None;
                }
                let full = stopping_point(successors + 1, self.confidence);
                let needed = match graph.position(node) {
                    // A silence one flow met is a lost answer, not a
                    // silent router: no other flow can be sent through it,
                    // so it is owed only that flow beyond it. Where several
                    // flows met silence, a silent router gets the rule.
                    Position::Silent { .. } if graph.flows_through(node) == 1 => full.min(1),
                    _ => match shares.get(&ttl) {
                        Some(&share) if successors > 0 => share.min(full),
                        _ => full,
                    },
                };
                let missing = needed.saturating_sub(graph.flows_beyond(node));
                (missing > 0).then_some((node, missing))
            })
            .collect()
    }

    pub fn complete(&self, graph: &Graph) -> bool {
        graph.flows() > 0 && self.deficits(graph).is_empty()
    }

    /// Flows to send in the next round; 0 when done (or out of budget).
    /// New flows spread over branches as the routers hash them, so a router
    /// that got a share s of the flows probed at its TTL so far needs about
    /// missing / s more (the share among flows probed there: most flows stop
    /// short of deeper TTLs, and counting them would overshoot);
    /// a share measured on few flows is rough (and the rarest branch's share
    /// the roughest), so a round adds at most half the flows so far: an
    /// overshoot costs every probe of the flows too many.
    pub fn next_round(&self, graph: &Graph) -> usize {
        let left = self.max_flows.saturating_sub(graph.flows());
        if graph.flows() == 0 {
            return stopping_point(2, self.confidence).min(left);
        }
        let wanted = self
            .deficits(graph)
            .into_iter()
            .map(|(node, missing)| {
                let probed_there = match graph.position(node) {
                    Position::Source => graph.flows(),
                    Position::Address { ttl, .. } | Position::Silent { ttl, .. } => {
                        flows_at(graph, ttl)
                    }
                };
                let share = graph.flows_through(node).max(1) as f64 / probed_there.max(1) as f64;
                // A quarter more where flows split: hashing is uneven.
                let cushion = if share < 1.0 { 1.25 } else { 1.0 };
                (missing as f64 / share * cushion).ceil() as usize
            })
            .max()
            .unwrap_or(0);
        let growth = (graph.flows() / 2).max(stopping_point(2, self.confidence));
        wanted.min(growth).min(left)
    }

    /// The last TTL new flows must probe: that of the shallowest router
    /// that still lacks flows where several routers share its TTL (a new
    /// flow must first show which one it crosses), one past it where it is
    /// alone. The routers that lack flows get the new flows that cross them
    /// by [`extensions`](Self::extensions) afterwards, only as many as they
    /// lack, instead of every new flow probing every TTL.
    pub fn end_ttl(&self, graph: &Graph) -> u8 {
        self.deficits(graph)
            .into_iter()
            .map(|(node, _)| match graph.position(node) {
                Position::Source => 1,
                // Where flows split among routers, a new flow first learns
                // which router it crosses; only the flows that cross one
                // lacking flows go on a TTL (as extensions): the next TTL's
                // routers answer just the probes that serve the rule.
                Position::Address { ttl, .. } | Position::Silent { ttl, .. }
                    if routers_at(graph, ttl) >= 2 =>
                {
                    ttl
                }
                Position::Address { ttl, .. } | Position::Silent { ttl, .. } => ttl + 1,
            })
            .min()
            .unwrap_or(self.max_ttl)
            .min(self.max_ttl)
    }

    /// Flows already sent that can serve a router lacking flows beyond it
    /// for one probe each: they crossed it, were never probed one TTL
    /// deeper, and that probe was not `tried` already (its answer may have
    /// been lost to a deadline). As (flow id, TTL), at most what each
    /// router lacks; flows are given out in id order, so the plan is
    /// deterministic.
    pub fn extensions(
        &self,
        graph: &Graph,
        flows: &[FlowPath],
        tried: &BTreeSet<(u16, u8)>,
    ) -> Vec<(u16, u8)> {
        let probed: BTreeSet<(u16, u8)> = flows
            .iter()
            .flat_map(|f| f.hops.iter().map(move |h| (f.flow_id, h.ttl)))
            .collect();
        let mut planned = Vec::new();
        for (node, missing) in self.deficits(graph) {
            // Every flow crosses the source: new flows serve it.
            let ttl = match graph.position(node) {
                Position::Source => continue,
                Position::Address { ttl, .. } | Position::Silent { ttl, .. } => ttl,
            };
            let next = ttl + 1;
            planned.extend(
                graph
                    .flow_ids_through(node)
                    .filter(|&id| probed.contains(&(id, ttl)))
                    .map(|id| (id, next))
                    .filter(|probe| !probed.contains(probe) && !tried.contains(probe))
                    .take(missing),
            );
        }
        planned.sort_unstable();
        planned.dedup();
        planned
    }

    /// The first TTL new flows must probe: TTLs before it hold one router
    /// that every flow crosses, confirmed at the confidence (its predecessor
    /// had enough flows and all went there), so probing them again only
    /// spends that router's ICMP budget.
    pub fn start_ttl(&self, graph: &Graph) -> u8 {
        let mut pred: NodeId = 0;
        let mut ttl = self.first_ttl;
        while ttl < self.max_ttl {
            let Some(only) = graph.single_at(ttl) else {
                break;
            };
            let confirmed = graph.successors(pred) == [only]
                && graph.flows_beyond(pred) >= stopping_point(2, self.confidence)
                && !graph.is_destination(only);
            if !confirmed {
                break;
            }
            pred = only;
            ttl += 1;
        }
        ttl
    }
}

/// Flows probed at `ttl` (each crossed one node there, address or silence).
fn flows_at(graph: &Graph, ttl: u8) -> usize {
    graph
        .nodes()
        .filter(|&n| {
            matches!(graph.position(n),
                Position::Address { ttl: t, .. } | Position::Silent { ttl: t, .. } if t == ttl)
        })
        .map(|n| graph.flows_through(n))
        .sum()
}

/// Routers (answering addresses) found at `ttl`.
fn routers_at(graph: &Graph, ttl: u8) -> usize {
    graph
        .nodes()
        .filter(|&n| matches!(graph.position(n), Position::Address { ttl: t, .. } if t == ttl))
        .count()
}

/// Under [`MdaRule::Lite`]: the flows each router at a TTL needs beyond
/// it, for the TTLs where the hop rule applies. It applies where a TTL has
/// two routers or more (one router is its own TTL), every router there with
/// a known next hop has as many next hops as the others (load balancing
/// looks uniform), and no next hop is shared by two of them while one of
/// them splits (the diamond is not meshed). The TTL then needs the flows
/// that rule out one more router at the next TTL, shared out evenly.
/// Silence leaves it unknown what the routers look like: a TTL with a
/// silent position, or a router there with a silent next hop, keeps the
/// full rule.
fn hop_shares(graph: &Graph, confidence: Confidence) -> BTreeMap<u8, usize> {
    let mut by_ttl: BTreeMap<u8, Vec<NodeId>> = BTreeMap::new();
    let mut silent_at: BTreeSet<u8> = BTreeSet::new();
    for node in graph.nodes() {
        match graph.position(node) {
            Position::Address { ttl, .. } if !graph.is_destination(node) => {
                by_ttl.entry(ttl).or_default().push(node);
            }
            Position::Silent { ttl, .. } => {
                silent_at.insert(ttl);
            }
            _ => {}
        }
    }
    let answered = |node: NodeId| matches!(graph.position(node), Position::Address { .. });
    by_ttl
        .into_iter()
        .filter(|(ttl, routers)| routers.len() >= 2 && !silent_at.contains(ttl))
        .filter_map(|(ttl, routers)| {
            let next: Vec<Vec<NodeId>> = routers
                .iter()
                .map(|&r| graph.successors(r))
                .filter(|s| !s.is_empty())
                .collect();
            if next.iter().flatten().any(|&n| !answered(n)) {
                return None;
            }
            let width = next.first()?.len();
            if next.iter().any(|s| s.len() != width) {
                return None;
            }
            let mut predecessors: BTreeMap<NodeId, usize> = BTreeMap::new();
            for &n in next.iter().flatten() {
                *predecessors.entry(n).or_default() += 1;
            }
            let meshed = width > 1 && predecessors.values().any(|&p| p > 1);
            if meshed {
                return None;
            }
            let hop = stopping_point(predecessors.len() + 1, confidence);
            Some((ttl, hop.div_ceil(routers.len())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::path::graph::FlowHop;

    #[test]
    fn stopping_points_are_the_published_ones() {
        let at95: Vec<usize> = (2..=11)
            .map(|k| stopping_point(k, Confidence::P95))
            .collect();
        assert_eq!(at95, [6, 11, 16, 21, 27, 33, 38, 44, 51, 57]);
        let at99: Vec<usize> = (2..=4)
            .map(|k| stopping_point(k, Confidence::P99))
            .collect();
        assert_eq!(at99, [8, 15, 21]);
        // Past the exact range: the union bound.
        assert_eq!(stopping_point(40, Confidence::P95), 265);
    }

    /// A hash a router might use to pick one of `n` next hops.
    fn pick(flow: u16, salt: u16, n: u16) -> u8 {
        let h = (u32::from(flow) ^ u32::from(salt)).wrapping_mul(2_654_435_761);
        ((h >> 16) % u32::from(n)) as u8
    }

    /// [`pick`] with a hash whose choices at one router do not follow the
    /// choice at the one before (splitmix64's finaliser).
    fn mixed_pick(flow: u16, salt: u16, n: u16) -> u8 {
        let mut h = (u64::from(flow) << 16 | u64::from(salt)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((h ^ (h >> 31)) % u64::from(n)) as u8
    }

    /// The nested diamond: r1 → 4 routers → (each to either of) 2 → r4 → dst,
    /// probed from `from_ttl` on.
    fn nested(flow: u16, from_ttl: u8) -> FlowPath {
        nested_between(flow, from_ttl, 5)
    }

    /// Flow `flow` over five hops (the last the destination), as probed
    /// from `from_ttl` to `to_ttl`.
    fn five_hops(flow: u16, hops: [IpAddr; 5], from_ttl: u8, to_ttl: u8) -> FlowPath {
        FlowPath {
            flow_id: flow,
            hops: hops
                .iter()
                .enumerate()
                .map(|(i, &address)| FlowHop {
                    ttl: i as u8 + 1,
                    address: Some(address),
                    rtts: vec![1.0],
                    lost: 0,
                    destination: i == 4,
                })
                .filter(|h| h.ttl >= from_ttl && h.ttl <= to_ttl)
                .collect(),
        }
    }

    fn nested_between(flow: u16, from_ttl: u8, to_ttl: u8) -> FlowPath {
        let ip = |ttl: u8, n: u8| IpAddr::from([198, 18, ttl, n]);
        let a = pick(flow, 1, 4);
        let b = pick(flow, 2 + u16::from(a), 2);
        let hops = [ip(1, 1), ip(2, 1 + a), ip(3, 1 + b), ip(4, 1), ip(5, 9)];
        five_hops(flow, hops, from_ttl, to_ttl)
    }

    /// MDA at 95 % from TTL 1 up to `max_ttl`, with `max_flows` flows.
    fn plan_to(max_ttl: u8, max_flows: usize) -> Mda {
        Mda {
            confidence: Confidence::P95,
            first_ttl: 1,
            max_ttl,
            max_flows,
            rule: MdaRule::Full,
        }
    }

    /// Runs `mda` as the tracer does (extensions first, then rounds of new
    /// flows) over a network whose flow `f`, probed from TTL `a` to `b`,
    /// takes `path(f, a, b)`; answers are never lost. The flows and rounds.
    fn run_plan(mda: &Mda, path: impl Fn(u16, u8, u8) -> FlowPath) -> (Vec<FlowPath>, usize) {
        let src = IpAddr::from([198, 18, 0, 1]);
        let mut flows: Vec<FlowPath> = Vec::new();
        let mut tried = BTreeSet::new();
        let mut rounds = 0;
        let mut next_flow = 40000u16;
        loop {
            let graph = Graph::build(src, 1, &flows);
            // Flows known to cross a router that lacks flows: one TTL deeper.
            let more = mda.extensions(&graph, &flows, &tried);
            if !more.is_empty() {
                for &(id, ttl) in &more {
                    let flow = flows.iter_mut().find(|f| f.flow_id == id).unwrap();
                    assert!(flow.hops.iter().all(|h| h.ttl < ttl), "probed twice");
                    flow.hops.extend(path(id, ttl, ttl).hops);
                }
                tried.extend(more);
                rounds += 1;
                continue;
            }
            let n = mda.next_round(&graph);
            if n == 0 {
                assert!(
                    mda.complete(&graph),
                    "stopped before the rule was met: {} flows, {:?}",
                    flows.len(),
                    mda.deficits(&graph)
                );
                return (flows, rounds);
            }
            let start = mda.start_ttl(&graph);
            let end = if flows.is_empty() {
                mda.max_ttl
            } else {
                mda.end_ttl(&graph)
            };
            for _ in 0..n {
                flows.push(path(next_flow, start, end));
                next_flow += 1;
            }
            rounds += 1;
        }
    }

    /// Addresses found at each TTL from 1 to 5.
    fn widths(flows: &[FlowPath]) -> [usize; 5] {
        let graph = Graph::build(IpAddr::from([198, 18, 0, 1]), 1, flows);
        std::array::from_fn(|i| {
            graph
                .nodes()
                .filter(|n| {
                    matches!(graph.position(*n), Position::Address { ttl, .. } if usize::from(ttl) == i + 1)
                })
                .count()
        })
    }

    fn probes_at(flows: &[FlowPath], ttl: u8) -> usize {
        flows
            .iter()
            .filter(|f| f.hops.iter().any(|h| h.ttl == ttl))
            .count()
    }

    #[test]
    fn the_nested_diamond_is_mapped_within_the_stopping_rule() {
        let mda = plan_to(5, 256);
        let (flows, rounds) = run_plan(&mda, nested_between);
        assert_eq!(widths(&flows), [1, 4, 2, 1, 1]);
        // r1 (4 next hops) needs n_5 = 21 flows beyond it, each a (2 next
        // hops) n_3 = 11: 44 flows at least, as hashing spreads them.
        assert!(
            flows.len() >= 44 && flows.len() <= 120,
            "{} flows",
            flows.len()
        );
        // Every router got what the rule asks for, and little more: the
        // probes that takes (6 at r1, 21 beyond it, 4 x 11 beyond the a's,
        // 2 x 6 beyond the m's, 6 beyond r4) are at least 89; probing
        // every TTL of every flow would be about 4 x 48.
        let probes: usize = flows.iter().map(|f| f.hops.len()).sum();
        assert!((89..=150).contains(&probes), "{probes} probes");
        assert!(rounds <= 20, "{rounds} rounds");
        // Later flows skip TTL 1 (one router, confirmed by the first round),
        // and most stop before the destination.
        assert!(flows.last().unwrap().hops[0].ttl > 1);
        assert!(
            probes_at(&flows, 5) <= 20,
            "{} flows probed TTL 5",
            probes_at(&flows, 5)
        );
        // Where flows split, new flows learn their router first and only
        // those crossing one that lacks flows go on: TTL 3 answers no more
        // probes than the a's need (4 x 11) and the first round sent.
        assert!(
            probes_at(&flows, 3) <= 4 * 11 + 8,
            "{} at TTL 3",
            probes_at(&flows, 3)
        );
    }

    /// The lab's nested diamond, where routers answer from the interface a
    /// probe came in by: each m has one address per a (8 at TTL 3), r4 one
    /// per m (2 at TTL 4).
    fn nested_by_interface(flow: u16, from_ttl: u8, to_ttl: u8) -> FlowPath {
        let ip = |ttl: u8, n: u8| IpAddr::from([198, 18, ttl, n]);
        let a = mixed_pick(flow, 1, 4);
        let m = mixed_pick(flow, 2 + u16::from(a), 2);
        let hops = [
            ip(1, 1),
            ip(2, 1 + a),
            ip(3, 1 + 2 * a + m),
            ip(4, 1 + m),
            ip(5, 9),
        ];
        five_hops(flow, hops, from_ttl, to_ttl)
    }

    #[test]
    fn the_lite_rule_spares_the_routers_where_paths_converge() {
        let full = plan_to(5, 256);
        let lite = Mda {
            rule: MdaRule::Lite,
            ..full
        };
        let (by_router, _) = run_plan(&full, nested_by_interface);
        let (by_ttl, _) = run_plan(&lite, nested_by_interface);
        // Both find every address.
        assert_eq!(widths(&by_router), [1, 4, 8, 2, 1]);
        assert_eq!(widths(&by_ttl), [1, 4, 8, 2, 1]);
        // Full: each of the 8 addresses at TTL 3 needs 6 flows beyond it
        // (48 probes that r4, one router, must answer), each of r4's 2
        // needs 6 (12 at the destination). Lite: the 8 look alike (one next
        // hop each, shared, none splits), so TTL 3 needs n_3 = 11 flows
        // beyond it, 2 each; TTL 4 n_2 = 6, 3 each (and the first round's 6
        // flows probed every TTL).
        assert!(
            probes_at(&by_router, 4) >= 48,
            "{}",
            probes_at(&by_router, 4)
        );
        assert!(
            probes_at(&by_ttl, 4) <= 6 + 8 * 2 + 2,
            "{}",
            probes_at(&by_ttl, 4)
        );
        assert!(
            probes_at(&by_router, 5) >= 12,
            "{}",
            probes_at(&by_router, 5)
        );
        assert!(probes_at(&by_ttl, 5) < probes_at(&by_router, 5));
        // Where the a's split, the lite rule asks what the full one does:
        // n_9 = 44 flows beyond TTL 2 is 11 for each a, as n_3.
        assert!(probes_at(&by_ttl, 3) >= 44, "{}", probes_at(&by_ttl, 3));
    }

    /// A graph of flows given as (flow id, addresses' last octets by TTL;
    /// 0: silent).
    fn graph_of<const N: usize>(paths: &[(u16, [u8; N])]) -> Graph {
        let flows: Vec<FlowPath> = paths
            .iter()
            .map(|&(flow_id, hops)| FlowPath {
                flow_id,
                hops: hops
                    .iter()
                    .enumerate()
                    .map(|(i, &n)| FlowHop {
                        ttl: i as u8 + 1,
                        address: (n != 0).then(|| IpAddr::from([198, 18, i as u8 + 1, n])),
                        rtts: vec![1.0],
                        lost: 0,
                        destination: false,
                    })
                    .collect(),
            })
            .collect();
        Graph::build(IpAddr::from([198, 18, 0, 1]), 1, &flows)
    }

    #[test]
    fn the_lite_rule_falls_back_where_routers_differ_or_paths_mesh() {
        let conf = Confidence::P95;
        // TTL 2: a and b, one next hop each, both to c: the hop rule, n_2 =
        // 6 flows beyond TTL 2, 3 each.
        let alike = graph_of(&[(1, [1, 1, 1]), (2, [1, 2, 1])]);
        assert_eq!(hop_shares(&alike, conf).get(&2), Some(&3));
        // a splits (c, d), b does not (e): they differ, each its own rule.
        let differ = graph_of(&[(1, [1, 1, 1]), (2, [1, 1, 2]), (3, [1, 2, 3])]);
        assert_eq!(hop_shares(&differ, conf).get(&2), None);
        // a and b both split, and share d: meshed, each its own rule.
        let meshed = graph_of(&[
            (1, [1, 1, 1]),
            (2, [1, 1, 2]),
            (3, [1, 2, 2]),
            (4, [1, 2, 3]),
        ]);
        assert_eq!(hop_shares(&meshed, conf).get(&2), None);
        // Both split, nothing shared: the hop rule, n_5 = 21 beyond TTL 2,
        // 11 each (the full rule's n_3 for each).
        let apart = graph_of(&[
            (1, [1, 1, 1]),
            (2, [1, 1, 2]),
            (3, [1, 2, 3]),
            (4, [1, 2, 4]),
        ]);
        assert_eq!(hop_shares(&apart, conf).get(&2), Some(&11));
        // One router at a TTL is its own rule.
        assert_eq!(hop_shares(&alike, conf).get(&1), None);
        // b's next hop was silent: what b looks like is not known.
        let partly_silent = graph_of(&[(1, [1, 1, 1]), (2, [1, 2, 0])]);
        assert_eq!(hop_shares(&partly_silent, conf).get(&2), None);
        // A silence at the TTL itself: not every router there is known.
        let silent_at_2 = graph_of(&[(1, [1, 1, 1]), (2, [1, 2, 1]), (3, [1, 0, 1])]);
        assert_eq!(hop_shares(&silent_at_2, conf).get(&2), None);
        // Under the lite rule the routers that look alike need their share;
        // under the full rule, 6 each.
        let lite = Mda {
            rule: MdaRule::Lite,
            ..plan_to(4, 256)
        };
        let need = |mda: &Mda| -> Vec<usize> {
            let deficits = mda.deficits(&alike);
            alike
                .nodes()
                .filter(|n| matches!(alike.position(*n), Position::Address { ttl: 2, .. }))
                .map(|n| deficits.iter().find(|d| d.0 == n).map_or(0, |d| d.1))
                .collect()
        };
        // Each has 1 flow beyond it: lite lacks 2 each, full 5 each.
        assert_eq!(need(&lite), [2, 2]);
        assert_eq!(need(&plan_to(4, 256)), [5, 5]);
    }

    #[test]
    fn a_round_is_sized_by_the_share_among_flows_probed_at_the_ttl() {
        // 60 flows stopped at TTL 2 (b); 2 went on to TTL 4, one through c,
        // one through d. c and d each lack 5 flows beyond them (n_2 = 6).
        // A new flow probed to TTL 3 crosses c half the time: about 5 / 0.5
        // flows (with the quarter for uneven hashing), not 5 / (1/62).
        let hop = |ttl: u8, n: u8| FlowHop {
            ttl,
            address: Some(IpAddr::from([198, 18, ttl, n])),
            rtts: vec![1.0],
            lost: 0,
            destination: false,
        };
        let mut flows: Vec<FlowPath> = (0..60)
            .map(|id| FlowPath {
                flow_id: id,
                hops: vec![hop(1, 1), hop(2, 1)],
            })
            .collect();
        for (id, n) in [(60, 1), (61, 2)] {
            flows.push(FlowPath {
                flow_id: id,
                hops: vec![hop(1, 1), hop(2, 1), hop(3, n), hop(4, 1)],
            });
        }
        let graph = Graph::build(IpAddr::from([198, 18, 0, 1]), 1, &flows);
        let mda = plan_to(6, 256);
        assert_eq!(mda.next_round(&graph), 13);
    }

    #[test]
    fn a_lost_answer_is_owed_one_flow_and_a_silent_router_the_rule() {
        // One answer lost at TTL 3 behind b; the flow answered at TTL 4. No
        // other flow can cross that silence, so it needs no 6 flows beyond.
        let g = graph_of(&[(1, [1, 1, 1, 1]), (2, [1, 2, 0, 1])]);
        for rule in [MdaRule::Full, MdaRule::Lite] {
            let mda = Mda {
                rule,
                ..plan_to(5, 256)
            };
            let silent_owed: Vec<(NodeId, usize)> = mda
                .deficits(&g)
                .into_iter()
                .filter(|&(n, _)| matches!(g.position(n), Position::Silent { .. }))
                .collect();
            assert_eq!(silent_owed, [], "{rule:?}");
        }
        // Two flows met silence there: a silent router, owed the rule (6
        // flows beyond it, 2 so far).
        let g = graph_of(&[(1, [1, 1, 1, 1]), (2, [1, 2, 0, 1]), (3, [1, 2, 0, 1])]);
        let owed: Vec<usize> = plan_to(5, 256)
            .deficits(&g)
            .into_iter()
            .filter(|&(n, _)| matches!(g.position(n), Position::Silent { .. }))
            .map(|(_, missing)| missing)
            .collect();
        assert_eq!(owed, [4]);
    }

    #[test]
    fn extensions_serve_routers_by_flows_that_crossed_them_once_each() {
        let mda = plan_to(5, 256);
        let src = IpAddr::from([198, 18, 0, 1]);
        // 12 flows that stopped at TTL 2: no a has a known next hop.
        let flows: Vec<FlowPath> = (0..12).map(|f| nested_between(60000 + f, 1, 2)).collect();
        let graph = Graph::build(src, 1, &flows);
        let mut tried = BTreeSet::new();
        let planned = mda.extensions(&graph, &flows, &tried);
        // One flow per a found (a router with no known next hop needs one
        // flow beyond it first), each at TTL 3, each a flow that crossed it.
        let a_found = graph
            .nodes()
            .filter(|n| matches!(graph.position(*n), Position::Address { ttl: 2, .. }))
            .count();
        assert_eq!(planned.len(), a_found);
        for &(id, ttl) in &planned {
            assert_eq!(ttl, 3);
            assert!(flows.iter().any(|f| f.flow_id == id));
        }
        // Answers lost (say): another flow is tried, never the same probe
        // twice, until every flow that crossed them was tried.
        let mut rounds = 0;
        let mut planned = planned;
        while !planned.is_empty() {
            assert!(planned.iter().all(|p| !tried.contains(p)));
            tried.extend(planned);
            planned = mda.extensions(&graph, &flows, &tried);
            rounds += 1;
        }
        assert_eq!(tried.len(), flows.len(), "{rounds} rounds");
        // New flows then probe only to the shallowest router lacking flows.
        assert_eq!(mda.end_ttl(&graph), 2, "r1 still lacks flows beyond it");
    }

    #[test]
    fn a_budget_too_small_leaves_the_trace_incomplete() {
        let mda = plan_to(30, 10);
        let src = IpAddr::from([198, 18, 0, 1]);
        let flows: Vec<FlowPath> = (0..10).map(|f| nested(50000 + f, 1)).collect();
        let graph = Graph::build(src, 1, &flows);
        assert_eq!(mda.next_round(&graph), 0, "no budget left");
        assert!(!mda.complete(&graph));
    }
}
