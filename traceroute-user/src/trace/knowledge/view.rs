//! What the store knows, as data: the service's `/debug/responders` serves
//! it as JSON and the CLI's `--explain` prints it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

use super::{Knowledge, RouterKey};
use crate::clock::MonotonicTime;

/// Everything known, now.
#[derive(Clone, Debug, Serialize)]
pub struct KnowledgeView {
    /// The budget assumed of a responder nothing is known about.
    pub prior: BudgetView,
    pub responders: Vec<ResponderView>,
    pub positions: Vec<PositionView>,
    pub silent_places: Vec<PlaceView>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct BudgetView {
    /// Answers it gives at once.
    pub burst: u32,
    /// ... and per second after that.
    pub per_second: f64,
}

/// One responder, by the address it answers from.
#[derive(Clone, Debug, Serialize)]
pub struct ResponderView {
    pub address: IpAddr,
    /// `prior` (nothing learnt), `grown` (answered more than the prior) or
    /// `limited` (showed a limit recently).
    pub state: &'static str,
    /// What it is paced at now.
    pub budget: BudgetView,
    /// Tokens in use now.
    pub in_use: u32,
    /// The deepest token answered since its last limit.
    pub proven: u32,
    pub growths: u64,
    pub limits: u64,
    /// Seconds since it last showed a limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limited_ago: Option<f64>,
    /// Recent answer latencies (ms): how many, median, slowest.
    pub latency_samples: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_median: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_max: Option<f64>,
}

/// A position (origin and TTL) and who answers there.
#[derive(Clone, Debug, Serialize)]
pub struct PositionView {
    pub source: IpAddr,
    pub ifindex: u32,
    pub ttl: u8,
    pub address: IpAddr,
    /// Seconds since it last answered there.
    pub seen_ago: f64,
}

/// A place nobody answers from.
#[derive(Clone, Debug, Serialize)]
pub struct PlaceView {
    pub source: IpAddr,
    pub ifindex: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<IpAddr>,
    pub offset: u8,
    /// Probes there that waited their full time for nothing.
    pub silences: u64,
    /// Seconds since the last such full wait.
    pub last_full_ago: f64,
}

fn ago(now: MonotonicTime, then: MonotonicTime) -> f64 {
    let secs = now.since(then).unwrap_or_default().as_secs_f64();
    (secs * 1000.0).round() / 1000.0
}

fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

impl Knowledge {
    /// A snapshot of everything known (responders by address, in order).
    pub fn view(&self, now: MonotonicTime) -> KnowledgeView {
        let prior = self.prior;
        let table = self.table(now);
        let mut responders: BTreeMap<IpAddr, ResponderView> = BTreeMap::new();
        let blank = |address| ResponderView {
            address,
            state: "prior",
            budget: BudgetView {
                burst: prior.burst,
                per_second: prior.per_second,
            },
            in_use: 0,
            proven: 0,
            growths: 0,
            limits: 0,
            limited_ago: None,
            latency_samples: 0,
            latency_median: None,
            latency_max: None,
        };
        for (key, budget) in &table.budgets {
            let RouterKey::Address(address) = key else {
                continue;
            };
            let rate = budget.rate(prior);
            let view = responders
                .entry(*address)
                .or_insert_with(|| blank(*address));
            view.state = if budget.is_limited(now) {
                "limited"
            } else if budget.scale() > 1 {
                "grown"
            } else {
                "prior"
            };
            view.budget = BudgetView {
                burst: rate.burst,
                per_second: rate.per_second,
            };
            view.in_use = budget.in_use(prior, now);
            view.proven = budget.proven();
            view.growths = budget.growths;
            view.limits = budget.limits;
            view.limited_ago = budget.limited_at().map(|at| ago(now, at));
        }
        for (address, latency) in &table.latency {
            let view = responders
                .entry(*address)
                .or_insert_with(|| blank(*address));
            view.latency_samples = latency.count();
            view.latency_median = latency.quantile(0.5).map(ms);
            view.latency_max = latency.quantile(1.0).map(ms);
        }
        let mut positions: Vec<PositionView> = table
            .aliases
            .iter()
            .map(|((origin, ttl), alias)| PositionView {
                source: origin.source,
                ifindex: origin.ifindex,
                ttl: ttl.get(),
                address: alias.addr,
                seen_ago: ago(now, alias.seen),
            })
            .collect();
        positions.sort_by_key(|p| (p.source, p.ifindex, p.ttl));
        let mut silent_places: Vec<PlaceView> = table
            .places
            .iter()
            .filter(|(_, s)| s.silences > 0)
            .map(|(place, s)| PlaceView {
                source: place.origin.source,
                ifindex: place.origin.ifindex,
                before: place.before,
                after: place.after,
                offset: place.offset,
                silences: s.silences,
                last_full_ago: ago(now, s.last_full),
            })
            .collect();
        silent_places.sort_by_key(|p| (p.source, p.before, p.offset, p.after));
        KnowledgeView {
            prior: BudgetView {
                burst: prior.burst,
                per_second: prior.per_second,
            },
            responders: responders.into_values().collect(),
            positions,
            silent_places,
        }
    }
}
