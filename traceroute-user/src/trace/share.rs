//! What concurrent and recent traces share: the first hop.
//!
//! Every trace that leaves by the same origin (source address, interface and
//! gateway) has its TTL-1 probes expire at that gateway, whatever its target:
//! the gateway is the first point where flows *could* diverge, so it is the
//! only hop they provably have in common. Its answer is published here and
//! reused by traces that start within [`ShareConfig::max_age`], so N traces do
//! not ask the gateway N times (Linux gateways answer a source 6 times, then
//! once a second). A trace that finds another one asking right now waits for
//! that answer instead of asking too. A reused hop is reported as such: who
//! observed it (trace, run, flow) and how old it was.
//!
//! Nothing beyond TTL 1 is shared: past the gateway two flows may take other
//! branches, and a hop is never reported for a flow that could have missed it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use uuid::Uuid;

use super::knowledge::Origin;
use crate::clock::MonotonicTime;
use crate::probe::Protocol;
use crate::sync::LockExt;

/// Who saw a shared hop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observer {
    pub test_run_id: Uuid,
    pub run_id: Uuid,
    pub protocol: Protocol,
    pub destination: IpAddr,
    /// Source port of the flow (ICMP: the echo identifier).
    pub flow_id: u16,
}

/// The gateway's answer to a TTL-1 probe.
#[derive(Clone, Debug, PartialEq)]
pub struct FirstHop {
    pub responder: IpAddr,
    pub rtt: Option<Duration>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    pub reply_ttl: u8,
    pub observed_at: MonotonicTime,
    pub by: Observer,
}

#[derive(Clone, Copy, Debug)]
pub struct ShareConfig {
    /// How long an observation may be reused.
    pub max_age: Duration,
}

impl Default for ShareConfig {
    fn default() -> Self {
        ShareConfig {
            max_age: Duration::from_secs(5),
        }
    }
}

/// What a trace should do about its TTL-1 probes.
#[derive(Clone, Debug, PartialEq)]
pub enum FirstHopPlan {
    /// Reuse this observation.
    Reuse(FirstHop),
    /// Another trace is asking the gateway; look again by this time.
    WaitFor(MonotonicTime),
    /// Ask it yourself (you are now the one asking, until `claim_until`).
    Probe,
}

pub struct HopShare {
    config: ShareConfig,
    inner: Mutex<Inner>,
    /// Bumped on every publication, so waiting traces look again at once.
    version: watch::Sender<u64>,
}

#[derive(Default)]
struct Inner {
    seen: HashMap<Origin, FirstHop>,
    /// Origins some trace is probing now, and until when it may take.
    asking: HashMap<Origin, MonotonicTime>,
}

impl HopShare {
    pub fn new(config: ShareConfig) -> HopShare {
        HopShare {
            config,
            inner: Mutex::new(Inner::default()),
            version: watch::channel(0).0,
        }
    }

    /// Decides for a trace leaving by `origin` at `now`; a `Probe` answer
    /// claims the gateway until `claim_until`.
    pub fn plan(
        &self,
        origin: Origin,
        now: MonotonicTime,
        claim_until: MonotonicTime,
    ) -> FirstHopPlan {
        let mut inner = self.inner.locked();
        if let Some(hop) = inner.seen.get(&origin)
            && now.since(hop.observed_at).unwrap_or_default() <= self.config.max_age
        {
            return FirstHopPlan::Reuse(hop.clone());
        }
        match inner.asking.get(&origin) {
            Some(until) if *until > now => FirstHopPlan::WaitFor(*until),
            _ => {
                inner.asking.insert(origin, claim_until);
                FirstHopPlan::Probe
            }
        }
    }

    /// A trace saw the gateway answer.
    pub fn publish(&self, origin: Origin, hop: FirstHop) {
        let mut inner = self.inner.locked();
        let newer = inner
            .seen
            .get(&origin)
            .is_none_or(|old| old.observed_at <= hop.observed_at);
        if newer {
            inner.seen.insert(origin, hop);
        }
        inner.asking.remove(&origin);
        drop(inner);
        self.version.send_modify(|v| *v += 1);
    }

    /// The asking trace gave up on the gateway (no answer, or it ended).
    pub fn release(&self, origin: Origin) {
        let mut inner = self.inner.locked();
        inner.asking.remove(&origin);
        drop(inner);
        self.version.send_modify(|v| *v += 1);
    }

    /// Changes whenever something was published or released.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::sim::{at, origin};

    fn hop(observed_at: MonotonicTime) -> FirstHop {
        FirstHop {
            responder: IpAddr::from([198, 18, 1, 2]),
            rtt: Some(Duration::from_micros(80)),
            icmp_type: Some(11),
            icmp_code: Some(0),
            reply_ttl: 64,
            observed_at,
            by: Observer {
                test_run_id: Uuid::nil(),
                run_id: Uuid::nil(),
                protocol: Protocol::Udp,
                destination: IpAddr::from([198, 18, 5, 2]),
                flow_id: 40000,
            },
        }
    }

    #[test]
    fn one_trace_asks_the_others_wait_then_reuse_until_it_is_old() {
        let share = HopShare::new(ShareConfig::default());
        assert_eq!(share.plan(origin(), at(0), at(1000)), FirstHopPlan::Probe);
        assert_eq!(
            share.plan(origin(), at(1), at(1001)),
            FirstHopPlan::WaitFor(at(1000))
        );
        share.publish(origin(), hop(at(2)));
        assert_eq!(
            share.plan(origin(), at(3), at(1003)),
            FirstHopPlan::Reuse(hop(at(2)))
        );
        assert_eq!(
            share.plan(origin(), at(5003), at(6003)),
            FirstHopPlan::Probe,
            "older than max_age"
        );
    }

    #[test]
    fn a_released_or_expired_claim_lets_the_next_trace_ask() {
        let share = HopShare::new(ShareConfig::default());
        assert_eq!(share.plan(origin(), at(0), at(1000)), FirstHopPlan::Probe);
        share.release(origin());
        assert_eq!(share.plan(origin(), at(1), at(1001)), FirstHopPlan::Probe);
        assert_eq!(
            share.plan(origin(), at(1002), at(2002)),
            FirstHopPlan::Probe
        );
    }
}
