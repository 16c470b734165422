//! Network labs in Linux network namespaces, for testing traceroute-agent
//! against real kernels instead of mocks.
//!
//! A [`Topology`] declares hosts, routers, links and features (silent
//! routers, listening ports, NAT, firewall drops, ICMP rate limits, delayed
//! links, routers whose own ICMP errors leave late —
//! [`Topology::slow_icmp`]). [`Lab::up`] turns it into namespaces joined by veth pairs with
//! deterministic addresses and shortest-path (ECMP) routes; dropping the
//! [`Lab`] removes everything, also while a test panics.
//!
//! Safety rules: only 198.18.0.0/15 and 2001:db8::/32 are used, only inside
//! namespaces the lab creates; the root namespace is never touched.
//!
//! Addressing (see [`Topology`]): link `i` (1-based, declaration order) is
//! `198.18.i.0/24` and `2001:db8:0:i::/64`, first endpoint `.1`/`::1`,
//! second `.2`/`::2`. Ground truth for tracers comes from [`Lab::path`] and
//! [`Lab::expected_hops`]: per TTL, the address each router answers from
//! (its interface facing the source).
//!
//! A node can also own many extra IPv4 target addresses
//! ([`Topology::targets`], from `198.19.128.0/17`, see [`Lab::targets`]),
//! routed to it like its links; [`Lab::path_to`] and
//! [`Lab::expected_hops_to`] give the ground truth for any lab address.
//!
//! [`mod@named`] holds ready-made topologies; [`keeper`] runs them as
//! persistent labs for `cargo xtask lab up|down|list`.
//!
//! ```no_run
//! use traceroute_lab::{Family, Lab, named};
//!
//! # fn main() -> Result<(), traceroute_lab::LabError> {
//! let lab = Lab::up(&named::chain())?;
//! let dst = lab.primary_v4("dst")?;
//! let out = lab.exec("src", "traceroute", ["-n", "-q1", "-w1", &dst.to_string()])?;
//! // r1, r2, None (r3 is silent), r4 — each the router's address facing src.
//! let hops = lab.expected_hops("src", "dst", Family::V4)?;
//! # let _ = (out, hops);
//! # Ok(())
//! # }
//! ```
//!
//! Needs root, `ip` (iproute2), `sysctl` (procps) and, for firewall, NAT,
//! silent and slow routers, `nft` (nftables). After a SIGKILL, [`cleanup_stale`]
//! removes what the dead process left behind; [`Lab::up`] removes orphaned
//! ephemeral labs once per process.
//!
//! Modules, bottom up (each uses only those before it): `topology` (what to
//! build) → `plan` (addresses, routes, ground truth) → `netns` (namespace
//! primitives) → `delay`, `services` → `lab` (an ephemeral lab) → `named`
//! (the built-in topologies) → `keeper` (persistent labs).

pub mod clickhouse;
mod delay;
pub mod keeper;
mod lab;
pub mod named;
mod netns;
mod plan;
mod services;
mod topology;

pub use keeper::cleanup_stale;
pub use lab::{Interface, Lab};
pub use named::{NAMES, named};
pub use netns::{enter_netns, require_tool};
pub use plan::Hop;
pub use topology::{Family, Hook, IcmpRateLimit, NodeKind, Prefix, Proto, Topology};

/// Everything that can go wrong building or querying a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("invalid topology: {0}")]
    Topology(String),
    #[error("unknown node {0:?}")]
    UnknownNode(String),
    #[error("no node of the lab owns {0}")]
    UnknownAddress(std::net::IpAddr),
    #[error("no link between {0:?} and {1:?}")]
    NoLink(String, String),
    #[error("{node:?} has no {family} address")]
    NoAddress { node: String, family: Family },
    #[error("no {family} route from {from:?} to {to:?}")]
    NoRoute {
        from: String,
        to: String,
        family: Family,
    },
    #[error(
        "path from {from:?} to {to:?} has several possible routers at TTL {ttl}; use Lab::path"
    )]
    Multipath {
        from: String,
        to: String,
        ttl: usize,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("`{tool}` not found; install the Debian package `{package}`")]
    MissingTool { tool: String, package: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("persistent lab: {0}")]
    Persistent(String),
}

impl LabError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
        let context = context.into();
        move |source| LabError::Io { context, source }
    }
}
