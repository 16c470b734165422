//! MDA, the multipath detection algorithm (Augustin et al.): at every router,
//! send enough flows through it to rule out one more next hop than found so
//! far, at a chosen confidence. Flows go out in rounds, every flow of a round
//! in parallel and probing all its TTLs at once, so a diamond costs a few
//! trace times rather than a trace per hop. Pure planning over a
//! [`Graph`]; the tracer runs the rounds.

use crate::path::graph::{Graph, NodeId, Position};

/// Confidence of an MDA trace: the chance that a router with one more next
/// hop than found would have shown it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Confidence(f64);

impl Confidence {
    pub const P95: Confidence = Confidence(0.95);
    pub const P99: Confidence = Confidence(0.99);

    /// 95 or 99 (percent), the two levels offered.
    pub fn from_percent(percent: u8) -> Option<Confidence> {
        match percent {
            95 => Some(Self::P95),
            99 => Some(Self::P99),
            _ => None,
        }
    }

    pub fn value(self) -> f64 {
        self.0
    }
}

/// n_k: flows through a router needed to rule out a k-th next hop when k−1
/// were found: the fewest flows n for which k equally likely next hops would
/// all have shown up with probability at least the confidence. Exact by
/// inclusion–exclusion, P(some of k missed after n) =
/// Σ_{i=1}^{k−1} (−1)^{i+1} C(k,i) ((k−i)/k)^n, which gives the published
/// table (6, 11, 16, 21, 27, 33, 38, 44, 51, 57 … at 95 %); the union bound
/// n_k = ⌈ln(ε/k) / ln((k−1)/k)⌉ is at most one above it and is used past
/// k = 32, where the alternating sum loses precision.
pub fn stopping_point(k: usize, confidence: Confidence) -> usize {
    let epsilon = 1.0 - confidence.0;
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
}

impl Mda {
    /// Routers that have not had enough flows yet: (router, flows still
    /// needed through it).
    pub fn deficits(&self, graph: &Graph) -> Vec<(NodeId, usize)> {
        graph
            .nodes()
            .filter_map(|node| {
                let ttl = match graph.position(node) {
                    Position::Source => 0,
                    Position::Address { ttl, .. } | Position::Silent { ttl, .. } => ttl,
                };
                let successors = graph.successors(node).len();
                // The destination, the last TTL and positions where flows
                // stopped being observed have no next hop to look for.
                if graph.is_destination(node) || ttl >= self.max_ttl || successors == 0 {
                    return None;
                }
                let needed = stopping_point(successors + 1, self.confidence);
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
    /// that got a share s of the flows so far needs about missing / s more;
    /// a share measured on few flows is rough, so a round at most doubles
    /// the flows so far.
    pub fn next_round(&self, graph: &Graph) -> usize {
        let left = self.max_flows.saturating_sub(graph.flows());
        if graph.flows() == 0 {
            return stopping_point(2, self.confidence).min(left);
        }
        let total = graph.flows() as f64;
        let wanted = self
            .deficits(graph)
            .into_iter()
            .map(|(node, missing)| {
                let share = graph.flows_through(node).max(1) as f64 / total;
                // A quarter more where flows split: hashing is uneven.
                let cushion = if share < 1.0 { 1.25 } else { 1.0 };
                (missing as f64 / share * cushion).ceil() as usize
            })
            .max()
            .unwrap_or(0);
        let doubling = graph.flows().max(stopping_point(2, self.confidence));
        wanted.min(doubling).min(left)
    }

    /// The last TTL new flows must probe: one past the deepest router that
    /// still lacks flows (what lies beyond is mapped already).
    pub fn end_ttl(&self, graph: &Graph) -> u8 {
        self.deficits(graph)
            .into_iter()
            .map(|(node, _)| match graph.position(node) {
                Position::Source => 1,
                Position::Address { ttl, .. } | Position::Silent { ttl, .. } => ttl + 1,
            })
            .max()
            .unwrap_or(self.max_ttl)
            .min(self.max_ttl)
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

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::path::graph::{FlowHop, FlowPath};

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

    /// The nested diamond: r1 → 4 routers → (each to either of) 2 → r4 → dst,
    /// probed from `from_ttl` on.
    fn nested(flow: u16, from_ttl: u8) -> FlowPath {
        nested_between(flow, from_ttl, 5)
    }

    fn nested_between(flow: u16, from_ttl: u8, to_ttl: u8) -> FlowPath {
        let ip = |ttl: u8, n: u8| IpAddr::from([198, 18, ttl, n]);
        let a = pick(flow, 1, 4);
        let b = pick(flow, 2 + u16::from(a), 2);
        let hops = [ip(1, 1), ip(2, 1 + a), ip(3, 1 + b), ip(4, 1), ip(5, 9)];
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

    #[test]
    fn the_nested_diamond_is_mapped_within_the_stopping_rule() {
        let mda = Mda {
            confidence: Confidence::P95,
            first_ttl: 1,
            max_ttl: 30,
            max_flows: 256,
        };
        let src = IpAddr::from([198, 18, 0, 1]);
        let mut flows = Vec::new();
        let mut rounds = 0;
        let mut next_flow = 40000u16;
        loop {
            let graph = Graph::build(src, 1, &flows);
            let n = mda.next_round(&graph);
            if n == 0 {
                assert!(mda.complete(&graph), "stopped before the rule was met");
                break;
            }
            let start = mda.start_ttl(&graph);
            let end = if flows.is_empty() {
                5
            } else {
                mda.end_ttl(&graph)
            };
            for _ in 0..n {
                flows.push(nested_between(next_flow, start, end));
                next_flow += 1;
            }
            rounds += 1;
        }
        let graph = Graph::build(src, 1, &flows);
        let at = |ttl| {
            graph
                .nodes()
                .filter(
                    |n| matches!(graph.position(*n), Position::Address { ttl: t, .. } if t == ttl),
                )
                .count()
        };
        assert_eq!((at(1), at(2), at(3), at(4), at(5)), (1, 4, 2, 1, 1));
        // The 4-way router needs n_5 = 21 flows, each 2-way one n_3 = 11:
        // about 44 flows, a few rounds, far below the budget.
        assert!(
            flows.len() >= 44 && flows.len() <= 120,
            "{} flows",
            flows.len()
        );
        assert!(rounds <= 5, "{rounds} rounds");
        // Later rounds skip TTL 1 (one router, confirmed by the first round).
        assert!(flows.last().unwrap().hops[0].ttl > 1);
    }

    #[test]
    fn a_budget_too_small_leaves_the_trace_incomplete() {
        let mda = Mda {
            confidence: Confidence::P95,
            first_ttl: 1,
            max_ttl: 30,
            max_flows: 10,
        };
        let src = IpAddr::from([198, 18, 0, 1]);
        let flows: Vec<FlowPath> = (0..10).map(|f| nested(50000 + f, 1)).collect();
        let graph = Graph::build(src, 1, &flows);
        assert_eq!(mda.next_round(&graph), 0, "no budget left");
        assert!(!mda.complete(&graph));
    }
}
