//! Ready-made topologies shared by tests, the demo, benchmarks and
//! `cargo xtask lab up NAME`.
//!
//! Most of them disable ICMP rate limiting ([`IcmpRateLimit::UNLIMITED`])
//! so parallel tracers see every hop; [`chain_limited`], [`delay_silent`],
//! [`fanout`], [`fanout_deep`], [`slow_limited`] and [`three_limited`] keep
//! the kernel's defaults ([`IcmpRateLimit::KERNEL_DEFAULT`]) as real routers
//! would, for benchmarks. [`slow`] and [`slow_limited`] have routers with a
//! slow control plane ([`Topology::slow_icmp`]). Every source is called
//! `src`, every single destination host `dst`.

use std::time::Duration;

use crate::topology::{IcmpRateLimit, Topology};

/// Names accepted by [`named`].
pub const NAMES: &[&str] = &[
    "chain",
    "chain_limited",
    "ecmp",
    "nat",
    "delay",
    "delay_silent",
    "ipv6",
    "fanout",
    "diamond2",
    "diamond4",
    "nested",
    "nested_silent",
    "nested_limited",
    "rewrite",
    "synproxy",
    "mtu",
    "synlimit",
    "multihomed",
    "slow",
    "slow_limited",
    "fanout_deep",
    "fanout_deep_unlimited",
    "three",
    "three_limited",
];

/// Looks a topology up by name.
pub fn named(name: &str) -> Option<Topology> {
    Some(match name {
        "chain" => chain(),
        "chain_limited" => chain_limited(),
        "ecmp" => ecmp(),
        "nat" => nat(),
        "delay" => delay(),
        "delay_silent" => delay_silent(),
        "ipv6" => ipv6(),
        "fanout" => fanout(),
        "diamond2" => diamond(2),
        "diamond4" => diamond(4),
        "nested" => nested(),
        "nested_silent" => nested_silent(),
        "nested_limited" => nested_limited(),
        "rewrite" => rewrite(),
        "synproxy" => synproxy(),
        "mtu" => mtu(),
        "synlimit" => synlimit(),
        "multihomed" => multihomed(),
        "slow" => slow(),
        "slow_limited" => slow_limited(),
        "fanout_deep" => fanout_deep(),
        "fanout_deep_unlimited" => fanout_deep_unlimited(),
        "three" => three(),
        "three_limited" => three_limited(),
        _ => return None,
    })
}

/// `src — r1 — r2 — r3 — r4 — dst`, v4+v6; r3 is silent; dst listens on
/// TCP 80 (81 is closed, so it answers RST).
///
/// Links 1..=5 in path order, so r_k faces the source with `198.18.k.2`
/// and dst is `198.18.5.2` / `2001:db8:0:5::2`.
pub fn chain() -> Topology {
    chain_called("chain").icmp_rate_limit_all(IcmpRateLimit::UNLIMITED)
}

/// [`chain`] with the kernel's default ICMP rate limits
/// ([`IcmpRateLimit::KERNEL_DEFAULT`]) on every node: each router answers
/// src a burst of 6 errors, then one per second, like a real router.
pub fn chain_limited() -> Topology {
    chain_called("chain_limited").icmp_rate_limit_all(IcmpRateLimit::KERNEL_DEFAULT)
}

fn chain_called(name: &str) -> Topology {
    Topology::new(name)
        .host("src")
        .router("r1")
        .router("r2")
        .router("r3")
        .router("r4")
        .host("dst")
        .link("src", "r1")
        .link("r1", "r2")
        .link("r2", "r3")
        .link("r3", "r4")
        .link("r4", "dst")
        .silent("r3")
        .tcp_listen("dst", 80)
}

/// A source with two uplinks: `src — r1 — r3 — dst` and `src — r2 — r3 —
/// dst`. src sends dst's network (link 5) through r1 only, so r2 carries a
/// trace only when it pins the interface or source address that leads
/// there (traceroute's `-i`, `-s` with a policy rule). v4+v6, dst listens
/// on TCP 80, unlimited ICMP.
///
/// Links: 1 src–r1, 2 src–r2, 3 r1–r3, 4 r2–r3, 5 r3–dst.
pub fn multihomed() -> Topology {
    Topology::new("multihomed")
        .host("src")
        .router("r1")
        .router("r2")
        .router("r3")
        .host("dst")
        .link("src", "r1")
        .link("src", "r2")
        .link("r1", "r3")
        .link("r2", "r3")
        .link("r3", "dst")
        .static_route("src", "198.18.5.0/24", &["r1"])
        .static_route("src", "2001:db8:0:5::/64", &["r1"])
        .tcp_listen("dst", 80)
        .icmp_rate_limit_all(IcmpRateLimit::UNLIMITED)
}

/// `src — r1 — {r2a, r2b} — r3 — dst`: r1 and r3 hold two-way ECMP groups
/// hashed on L4 ports. dst listens on TCP 80.
///
/// Links: 1 src–r1, 2 r1–r2a, 3 r1–r2b, 4 r2a–r3, 5 r2b–r3, 6 r3–dst.
pub fn ecmp() -> Topology {
    Topology::new("ecmp")
        .host("src")
        .router("r1")
        .router("r2a")
        .router("r2b")
        .router("r3")
        .host("dst")
        .link("src", "r1")
        .link("r1", "r2a")
        .link("r1", "r2b")
        .link("r2a", "r3")
        .link("r2b", "r3")
        .link("r3", "dst")
        .tcp_listen("dst", 80)
        .icmp_rate_limit_all(IcmpRateLimit::UNLIMITED)
}

/// `src — r1 — {b1 … bN} — r3 — dst`: an N-way diamond, r1 and every
/// branch spreading flows by L4 hash. dst listens on TCP 80. Unlimited ICMP.
pub fn diamond(n: usize) -> Topology {
    let mut t = Topology::new(&format!("diamond{n}"))
        .host("src")
        .router("r1");
    for i in 1..=n {
        t = t.router(&format!("b{i}"));
    }
    t = t.router("r3").host("dst").link("src", "r1");
    for i in 1..=n {
        t = t.link("r1", &format!("b{i}")).link(&format!("b{i}"), "r3");
    }
    t.link("r3", "dst")
        .tcp_listen("dst", 80)
        .icmp_rate_limit_all(IcmpRateLimit::UNLIMITED)
}

/// The nested diamond: `src — r1 — {a1 … a4} — {m1, m2} — r4 — dst`, every
/// `a` linked to both `m`s, so r1 spreads flows 4 ways and each `a` 2 ways
/// (TTL 2 has 4 routers, TTL 3 two). dst listens on TCP 80. Unlimited ICMP.
pub fn nested() -> Topology {
    nested_called("nested")
}

/// [`nested`] with the kernel's default ICMP rate limits on every node, as
/// real routers have them.
pub fn nested_limited() -> Topology {
    nested_called("nested_limited").icmp_rate_limit_all(IcmpRateLimit::KERNEL_DEFAULT)
}

/// [`nested`] with `a2` silent: a hole inside the diamond.
pub fn nested_silent() -> Topology {
    nested_called("nested_silent").silent("a2")
}

fn nested_called(name: &str) -> Topology {
    let mut t = Topology::new(name).host("src").router("r1");
    for a in ["a1", "a2", "a3", "a4"] {
        t = t.router(a);
    }
    t = t
        .router("m1")
        .router("m2")
        .router("r4")
        .host("dst")
        .link("src", "r1");
    for a in ["a1", "a2", "a3", "a4"] {
        t = t.link("r1", a).link(a, "m1").link(a, "m2");
    }
    t.link("m1", "r4")
        .link("m2", "r4")
        .link("r4", "dst")
        .tcp_listen("dst", 80)
        .icmp_rate_limit_all(IcmpRateLimit::UNLIMITED)
}

/// `src — nat — r2 — dst`: `nat` masquerades (v4 and v6) towards r2, so dst
/// sees `nat`'s outside address (`198.18.2.1`). src's link is private
/// (`198.19.1.0/24`, `2001:db8:1:1::/64`). dst listens on TCP 80 and
/// echoes UDP 7; both record peer addresses.
pub fn nat() -> Topology {
    Topology::new("nat")
        .host("src")
        .router("nat")
        .router("r2")
        .host("dst")
        .link("src", "nat")
        .link("nat", "r2")
        .link("r2", "dst")
        .nat("nat", "r2")
        .tcp_listen("dst", 80)
        .udp_echo("dst", 7)
        .icmp_rate_limit_all(IcmpRateLimit::UNLIMITED)
}

/// `src — r1 — MIDDLE — r3 — dst` with routers that answer without limit:
/// the shape of the labs that put one box of interest on a short path.
fn four_hops(name: &str, middle: &str) -> Topology {
    Topology::new(name)
        .host("src")
        .router("r1")
        .router(middle)
        .router("r3")
        .host("dst")
        .link("src", "r1")
        .link("r1", middle)
        .link(middle, "r3")
        .link("r3", "dst")
        .icmp_rate_limit_all(IcmpRateLimit::UNLIMITED)
}

/// `src — r1 — r2 — r3 — dst`: r1 re-marks the DSCP of everything it
/// forwards to CS1 (8); r2 rewrites src's IPv4 source address to its own
/// towards r3 without connection tracking, so ICMP errors from r3 and dst
/// quote the rewritten source (a NAT that does not translate quotes). dst
/// listens on TCP 80.
pub fn rewrite() -> Topology {
    four_hops("rewrite", "r2")
        .rewrite_dscp("r1", 8)
        .rewrite_source("r2", "r3", "src")
        .tcp_listen("dst", 80)
}

/// `src — r1 — fw — r3 — dst`: fw is a SYN-proxy firewall for TCP 80, so
/// every SYN to dst:80 that reaches fw is answered by fw (a SYN-ACK from
/// dst's address, one hop early); dst listens on TCP 80 and 81 (81 is not
/// proxied).
pub fn synproxy() -> Topology {
    four_hops("synproxy", "fw")
        .syn_proxy("fw", 80)
        .tcp_listen("dst", 80)
        .tcp_listen("dst", 81)
}

/// `src — r1 — fw — r3 — dst`: fw protects dst's TCP 443 from SYN floods,
/// forwarding 3 SYNs, then 1 a minute (dropping the rest); established
/// traffic passes. dst listens on TCP 443.
pub fn synlimit() -> Topology {
    four_hops("synlimit", "fw")
        .syn_limit("fw", 443, 1, 3)
        .tcp_listen("dst", 443)
}

/// `src — r1 —(1400)— r2 —(1300)— r3 — dst`: two bottleneck links, so the
/// path MTU is 1500 to r1, 1400 to r2 and 1300 from r3 on. dst listens on
/// TCP 80.
pub fn mtu() -> Topology {
    four_hops("mtu", "r2")
        .link_mtu("r1", "r2", 1400)
        .link_mtu("r2", "r3", 1300)
        .tcp_listen("dst", 80)
}

/// `src — r1 —[20 ms each way]— r2 — dst`: ping from src to dst shows about
/// 40 ms. dst listens on TCP 80.
pub fn delay() -> Topology {
    Topology::new("delay")
        .host("src")
        .router("r1")
        .router("r2")
        .host("dst")
        .link("src", "r1")
        .link_delayed("r1", "r2", Duration::from_millis(20))
        .link("r2", "dst")
        .tcp_listen("dst", 80)
        .icmp_rate_limit_all(IcmpRateLimit::UNLIMITED)
}

/// `src — r1 —[20 ms each way]— r2 (silent) — r3 — dst`, v4+v6, with the
/// kernel's default ICMP rate limits ([`IcmpRateLimit::KERNEL_DEFAULT`]):
/// a path whose far hops answer after about 40 ms, with a silent router
/// between answering ones. dst listens on TCP 80.
///
/// Links: 1 src–r1, 2 r1–r2 (delayed), 3 r2–r3, 4 r3–dst; r3 answers from
/// `198.18.3.2`, dst is `198.18.4.2` / `2001:db8:0:4::2`.
pub fn delay_silent() -> Topology {
    Topology::new("delay_silent")
        .host("src")
        .router("r1")
        .router("r2")
        .router("r3")
        .host("dst")
        .link("src", "r1")
        .link_delayed("r1", "r2", Duration::from_millis(20))
        .link("r2", "r3")
        .link("r3", "dst")
        .silent("r2")
        .tcp_listen("dst", 80)
        .icmp_rate_limit_all(IcmpRateLimit::KERNEL_DEFAULT)
}

/// IPv6-only `src — r1 — r2 — r3 — dst`; dst is `2001:db8:0:4::2` and
/// listens on TCP 80.
pub fn ipv6() -> Topology {
    Topology::new("ipv6")
        .ipv4(false)
        .host("src")
        .router("r1")
        .router("r2")
        .router("r3")
        .host("dst")
        .link("src", "r1")
        .link("r1", "r2")
        .link("r2", "r3")
        .link("r3", "dst")
        .tcp_listen("dst", 80)
        .icmp_rate_limit_all(IcmpRateLimit::UNLIMITED)
}

/// Targets per destination host of [`fanout`].
pub const FANOUT_TARGETS: u16 = 256;

/// `src — gw — {d1, d2, d3, d4}`, v4+v6: each `d_i` owns
/// [`FANOUT_TARGETS`] IPv4 targets ([`Topology::targets`]: d1
/// `198.19.128.1`–`198.19.129.0`, d2 from `198.19.132.1`, d3 from
/// `198.19.136.1`, d4 from `198.19.140.1`) and listens on TCP 80 on all of
/// its addresses. For load tests: many traces at once through one router.
///
/// It keeps Linux's default ICMP rate limits, which every new network
/// namespace starts with ([`IcmpRateLimit::KERNEL_DEFAULT`]):
/// `net.ipv4.icmp_ratelimit=1000` (per peer: a burst of 6 errors, then one
/// per second — time-exceeded and unreachable, `icmp_ratemask`),
/// `net.ipv4.icmp_msgs_per_sec=1000` and `net.ipv4.icmp_msgs_burst=50`
/// (global budget), `net.ipv6.icmp.ratelimit=100`. So gw answers only a
/// few of many quick probes that expire at it, as a real router would;
/// echo replies and TCP answers of the targets are not limited.
///
/// Links: 1 src–gw, 2 gw–d1, 3 gw–d2, 4 gw–d3, 5 gw–d4.
pub fn fanout() -> Topology {
    let mut t = Topology::new("fanout")
        .host("src")
        .router("gw")
        .link("src", "gw");
    for d in ["d1", "d2", "d3", "d4"] {
        t = t
            .host(d)
            .link("gw", d)
            .targets(d, FANOUT_TARGETS)
            .tcp_listen(d, 80);
    }
    t.icmp_rate_limit_all(IcmpRateLimit::KERNEL_DEFAULT)
}

/// How late r2 of [`slow`] sends its own ICMP errors.
pub const SLOW_R2: Duration = Duration::from_millis(30);
/// How late r3 of [`slow`] sends its own ICMP errors.
pub const SLOW_R3: Duration = Duration::from_millis(120);

/// `src — r1 — r2 — r3 — r4 — dst`, v4+v6, routers with busy control
/// planes: r2 sends its own ICMP errors (time-exceeded, unreachable,
/// packet-too-big) [`SLOW_R2`] (30 ms) late, r3 [`SLOW_R3`] (120 ms) late
/// ([`Topology::slow_icmp`]); forwarding, echo replies and every other
/// router are normal. So a probe expiring at r2 or r3 comes back late
/// while a ping to dst (or to r2, r3) does not. No silent router;
/// unlimited ICMP ([`IcmpRateLimit::UNLIMITED`]); dst listens on TCP 80.
///
/// Links 1..=5 in path order, so r_k faces the source with `198.18.k.2` /
/// `2001:db8:0:k::2`, and dst is `198.18.5.2` / `2001:db8:0:5::2`.
pub fn slow() -> Topology {
    slow_called("slow").icmp_rate_limit_all(IcmpRateLimit::UNLIMITED)
}

/// [`slow`] with the kernel's default ICMP rate limits
/// ([`IcmpRateLimit::KERNEL_DEFAULT`]) on every node.
pub fn slow_limited() -> Topology {
    slow_called("slow_limited").icmp_rate_limit_all(IcmpRateLimit::KERNEL_DEFAULT)
}

fn slow_called(name: &str) -> Topology {
    Topology::new(name)
        .host("src")
        .router("r1")
        .router("r2")
        .router("r3")
        .router("r4")
        .host("dst")
        .link("src", "r1")
        .link("r1", "r2")
        .link("r2", "r3")
        .link("r3", "r4")
        .link("r4", "dst")
        .slow_icmp("r2", SLOW_R2)
        .slow_icmp("r3", SLOW_R3)
        .tcp_listen("dst", 80)
}

/// Targets per destination host of [`fanout_deep`].
pub const FANOUT_DEEP_TARGETS: u16 = 64;

/// `src — gw — r2 — r3 — {d1, d2, d3, d4}`, v4+v6: [`fanout`] with its
/// targets behind three shared routers, so many traces at once cross the
/// same gw, r2 and r3. Each `d_i` owns [`FANOUT_DEEP_TARGETS`] IPv4 targets
/// ([`Topology::targets`]: d1 `198.19.128.1`–`198.19.128.64`, d2
/// `198.19.132.1`–`.64`, d3 `198.19.136.1`–`.64`, d4
/// `198.19.140.1`–`.64`) and listens on TCP 80 on all of its addresses.
/// Kernel default ICMP rate limits ([`IcmpRateLimit::KERNEL_DEFAULT`], see
/// [`fanout`]), so each router answers only a few of many quick probes.
///
/// Links: 1 src–gw, 2 gw–r2, 3 r2–r3, 4 r3–d1, 5 r3–d2, 6 r3–d3, 7 r3–d4;
/// gw answers from `198.18.1.2`, r2 from `198.18.2.2`, r3 from
/// `198.18.3.2` (v6 `2001:db8:0:k::2`); d_i is `198.18.(3+i).2` /
/// `2001:db8:0:(3+i)::2`.
pub fn fanout_deep() -> Topology {
    fanout_deep_called("fanout_deep").icmp_rate_limit_all(IcmpRateLimit::KERNEL_DEFAULT)
}

/// [`fanout_deep`] with unlimited ICMP ([`IcmpRateLimit::UNLIMITED`]):
/// every router answers every probe.
pub fn fanout_deep_unlimited() -> Topology {
    fanout_deep_called("fanout_deep_unlimited").icmp_rate_limit_all(IcmpRateLimit::UNLIMITED)
}

fn fanout_deep_called(name: &str) -> Topology {
    let mut t = Topology::new(name)
        .host("src")
        .router("gw")
        .router("r2")
        .router("r3")
        .link("src", "gw")
        .link("gw", "r2")
        .link("r2", "r3");
    for d in ["d1", "d2", "d3", "d4"] {
        t = t
            .host(d)
            .link("r3", d)
            .targets(d, FANOUT_DEEP_TARGETS)
            .tcp_listen(d, 80);
    }
    t
}

/// Targets of dst in [`three`].
pub const THREE_TARGETS: u16 = 20;

/// `src — r1 — r2 — r3 — dst`, v4+v6: three plain routers (none silent, no
/// delay) with [`THREE_TARGETS`] IPv4 targets behind them on dst
/// (`198.19.128.1`–`198.19.128.20`, [`Topology::targets`]); dst listens on
/// TCP 80 on all of its addresses. Unlimited ICMP
/// ([`IcmpRateLimit::UNLIMITED`]).
///
/// Links 1..=4 in path order: r_k answers from `198.18.k.2` /
/// `2001:db8:0:k::2`; dst is `198.18.4.2` / `2001:db8:0:4::2`.
pub fn three() -> Topology {
    three_called("three").icmp_rate_limit_all(IcmpRateLimit::UNLIMITED)
}

/// [`three`] with the kernel's default ICMP rate limits
/// ([`IcmpRateLimit::KERNEL_DEFAULT`]), for rate-limit tests: each router
/// answers a source a burst of 6 errors, then one per second.
pub fn three_limited() -> Topology {
    three_called("three_limited").icmp_rate_limit_all(IcmpRateLimit::KERNEL_DEFAULT)
}

fn three_called(name: &str) -> Topology {
    Topology::new(name)
        .host("src")
        .router("r1")
        .router("r2")
        .router("r3")
        .host("dst")
        .link("src", "r1")
        .link("r1", "r2")
        .link("r2", "r3")
        .link("r3", "dst")
        .targets("dst", THREE_TARGETS)
        .tcp_listen("dst", 80)
}
