//! Lab topologies several test files share.

use traceroute_lab::{IcmpRateLimit, Topology};

/// src - r1 - ... - r10 without ICMP rate limits: every router's address is a
/// destination at another depth, so concurrent traces have distinct ground truths.
pub fn long_chain(name: &str) -> Topology {
    let mut t = Topology::new(name).host("src");
    let mut prev = "src".to_string();
    for i in 1..=10 {
        let r = format!("r{i}");
        t = t.router(&r).link(&prev, &r);
        prev = r;
    }
    t.icmp_rate_limit_all(IcmpRateLimit::UNLIMITED)
}
