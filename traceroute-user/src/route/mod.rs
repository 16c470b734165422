//! Route cache: the kernel's routing decision for a destination, as probes
//! will experience it.
//!
//! Every trace needs to know which interface its probes leave through, which
//! source address they carry, and which gateway (and MAC) they are handed to.
//! Rather than re-implementing the FIB, [`RouteCache::lookup`] asks the kernel
//! (`RTM_GETROUTE` for the address, what `ip route get` does) and completes the
//! answer with link, address and neighbour information. Answers are cached and
//! the cache is kept honest by subscribing to the kernel's route, link,
//! address and neighbour notifications, so a steady stream of traces costs no
//! netlink round trips until something actually changes.

mod monitor;
mod query;

use crate::error::ErrorCode;
use crate::sync::LockExt;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::task::JoinHandle;

/// How long one uncached lookup (a handful of netlink requests) may take
/// before it is reported as a failure instead of hanging a trace.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Upper bound on cached destinations; beyond it the cache starts over, which
/// only costs a re-query per destination.
const MAX_ENTRIES: usize = 4096;

/// Receive buffer asked for on the notification socket.
const MONITOR_RCVBUF: usize = 1 << 20;

/// The network namespace this process routes in, as the inode of
/// `/proc/self/ns/net`: two processes with the same one see the same routes.
/// `None` where /proc does not say.
pub fn network_namespace() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/net").ok().map(|m| m.ino())
}

/// An Ethernet (EUI-48) hardware address.
///
/// Kept as a newtype so that it prints and serializes the way every network
/// tool shows it (`aa:bb:cc:dd:ee:ff`), which is what NetworkPath records use.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Interprets a link-layer address from netlink; `None` for anything that
    /// is not 6 bytes (tunnels, loopback-less devices, InfiniBand...).
    pub fn from_slice(bytes: &[u8]) -> Option<MacAddr> {
        <[u8; 6]>::try_from(bytes).ok().map(MacAddr)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

/// Error parsing a [`MacAddr`] from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?} (expected six hex octets like aa:bb:cc:dd:ee:ff)")]
pub struct ParseMacError(String);

impl FromStr for MacAddr {
    type Err = ParseMacError;

    /// Accepts `:` or `-` separated octets, as `ip` and other tools print them.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseMacError(s.to_owned());
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in &mut out {
            let part = parts.next().ok_or_else(err)?;
            if part.is_empty() || part.len() > 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The interface probes leave through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Kernel interface index (what raw sockets and TC attachment need).
    pub index: u32,
    /// Interface name, e.g. `eth0` (what people and NetworkPath records use).
    pub name: String,
    /// Hardware address; `None` on interfaces without one (tun, wireguard).
    pub mac: Option<MacAddr>,
    /// Interface MTU in bytes: the ceiling for probe sizes.
    pub mtu: u32,
}

/// What the caller fixed about how probes leave: traceroute's `-s ADDRESS`
/// and `-i INTERFACE`. The default pins nothing, and the kernel chooses
/// both, as it would for any packet to the destination.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Egress {
    /// Probes carry this source address (one of the host's own); policy
    /// routing rules that match on the source apply, as for `ip route get
    /// ADDR from SOURCE`.
    pub source: Option<IpAddr>,
    /// Probes leave through this interface, by the routes through it (or
    /// on-link when it has none, as `ip route get ADDR oif DEV` says).
    pub interface: Option<String>,
}

impl Egress {
    /// Whether anything is pinned (so sends must say so to the kernel).
    pub fn is_pinned(&self) -> bool {
        self.source.is_some() || self.interface.is_some()
    }

    /// Refuses what can never name an interface or be a source address,
    /// before any netlink request: the kernel's own rules for interface
    /// names (`dev_valid_name`), and no multicast, broadcast, unspecified
    /// or loopback-scoped mismatch worth a round trip.
    pub fn check(&self) -> Result<(), String> {
        if let Some(name) = &self.interface
            && !valid_interface_name(name)
        {
            return Err(format!(
                "{name:?} is not an interface name (1-{MAX_INTERFACE_NAME} characters, no '/', ':' or spaces)"
            ));
        }
        if let Some(source) = self.source
            && (source.is_unspecified() || source.is_multicast() || is_broadcast(source))
        {
            return Err(format!(
                "{source} cannot be a source address (unspecified, multicast or broadcast)"
            ));
        }
        Ok(())
    }
}

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
const MAX_INTERFACE_NAME: usize = 15;

fn valid_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_INTERFACE_NAME
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
}

fn is_broadcast(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}

/// The kernel's routing decision for one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The address that was looked up.
    pub destination: IpAddr,
    /// The source address the kernel would use (route `prefsrc`, or the
    /// interface's first global address of that family).
    pub source: IpAddr,
    /// Next-hop router; `None` when the destination is on-link or local.
    pub gateway: Option<IpAddr>,
    /// MAC of the next hop (the gateway, or the destination itself when
    /// on-link) if the neighbour table currently knows it.
    pub gateway_mac: Option<MacAddr>,
    /// Output interface (`lo` for local destinations).
    pub interface: Interface,
    /// The interface holding a pinned source address, when it is not the
    /// output interface: answers to that address come back there unless
    /// the network routes them otherwise, so capture must watch it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_interface: Option<String>,
}

impl Route {
    /// The address that must answer ARP/ND for probes to leave the host.
    pub fn next_hop(&self) -> IpAddr {
        self.gateway.unwrap_or(self.destination)
    }
}

/// Why a route lookup failed. Each variant maps to an API error code via
/// [`RouteError::code`], so the HTTP layer does not need to know netlink.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No route at all (`ENETUNREACH`), or the route rejects traffic:
    /// `blackhole`, `prohibit` or `throw` route types.
    #[error("no route to {0}")]
    NoRoute(IpAddr),
    /// The route to it is a `broadcast` route: the directed broadcast
    /// address of a subnet of this host, every host there at once, not one
    /// to trace (sending to it needs `SO_BROADCAST`).
    #[error(
        "{0} is a broadcast address here (the directed broadcast of a subnet of this host), not a host to trace"
    )]
    Broadcast(IpAddr),
    /// The kernel answers "No route to host" (`EHOSTUNREACH`), which is what
    /// an `unreachable` route yields: packets would get ICMP host-unreachable.
    #[error("host {0} is unreachable (unreachable route)")]
    HostUnreachable(IpAddr),
    /// No route through the pinned interface. IPv6 does not assume a
    /// destination is on-link there the way IPv4 does, and takes the
    /// interface as a preference only: a more specific route or the pinned
    /// source's rule can send the probes elsewhere (`instead`), which would
    /// not be the trace that was asked for.
    #[error(
        "no route to {destination} through {interface}{}",
        instead.as_ref().map(|i| format!(" (the kernel sends it through {i})")).unwrap_or_default()
    )]
    NoRouteThrough {
        /// The address that was looked up.
        destination: IpAddr,
        /// The pinned interface.
        interface: String,
        /// Where the kernel would send the probes instead.
        instead: Option<String>,
    },
    /// The pinned source address is not one of this host's.
    #[error("source address {0} is not an address of this host")]
    NotLocal(IpAddr),
    /// The pinned source address cannot reach a destination of the other
    /// IP version.
    #[error("source address {pinned} and destination {destination} are not of the same IP version")]
    SourceFamily {
        /// The pinned source address (not called `source`: thiserror
        /// reserves that name for the underlying error).
        pinned: IpAddr,
        /// The address that was looked up.
        destination: IpAddr,
    },
    /// The pinned interface does not exist.
    #[error("no interface named {0:?}")]
    NoSuchInterface(String),
    /// The route exists but its interface has no usable address in the
    /// destination's family, so probes could not carry a source address.
    #[error("no source address for {destination} on interface {interface}")]
    NoSourceAddress {
        /// The address that was looked up.
        destination: IpAddr,
        /// Name (or index) of the output interface.
        interface: String,
    },
    /// A netlink socket could not be opened or a request failed.
    #[error("netlink: {0}")]
    Netlink(String),
    /// The kernel's answer was not what `RTM_GETROUTE` promises.
    #[error("unexpected netlink answer: {0}")]
    Unexpected(String),
    /// The netlink requests did not complete in time.
    #[error("route lookup for {0} timed out")]
    Timeout(IpAddr),
}

impl RouteError {
    /// The API error code (`{"code": ...}` in HTTP error bodies).
    pub fn code(&self) -> ErrorCode {
        match self {
            RouteError::NoRoute(_) | RouteError::NoRouteThrough { .. } => ErrorCode::Netunreach,
            RouteError::HostUnreachable(_) => ErrorCode::Hostunreach,
            RouteError::NotLocal(_)
            | RouteError::SourceFamily { .. }
            | RouteError::NoSuchInterface(_)
            | RouteError::Broadcast(_) => ErrorCode::InvalidRequest,
            RouteError::NoSourceAddress { .. }
            | RouteError::Netlink(_)
            | RouteError::Unexpected(_)
            | RouteError::Timeout(_) => ErrorCode::Unknown,
        }
    }

    /// Answers that describe the routing state (rather than a failure of
    /// ours) are cached like routes and invalidated the same way.
    fn is_cacheable(&self) -> bool {
        matches!(
            self,
            RouteError::NoRoute(_)
                | RouteError::NoRouteThrough { .. }
                | RouteError::HostUnreachable(_)
                | RouteError::Broadcast(_)
                | RouteError::NoSourceAddress { .. }
        )
    }
}

/// A cached answer (a route, or an error that describes routing state).
#[derive(Debug, Clone)]
struct Entry {
    result: Result<Route, RouteError>,
}

impl Entry {
    /// `(ifindex, address)` of the neighbour whose MAC this entry reports.
    fn neighbour(&self) -> Option<(u32, IpAddr)> {
        let route = self.result.as_ref().ok()?;
        Some((route.interface.index, route.next_hop()))
    }
}

struct Inner {
    handle: rtnetlink::Handle,
    entries: Mutex<HashMap<(IpAddr, Egress), Entry>>,
    /// Bumped by every invalidation; an uncached lookup only stores its
    /// answer if no invalidation happened while it was in flight.
    generation: AtomicU64,
    refreshes: AtomicU64,
    queries: AtomicU64,
    hits: AtomicU64,
    /// False once the notification stream has ended: without it the cache
    /// cannot be trusted, so every lookup goes to the kernel.
    monitoring: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let tasks = self.tasks.get_mut().unwrap_or_else(|e| e.into_inner());
        for task in tasks.iter() {
            task.abort();
        }
    }
}

impl Inner {
    fn invalidate_all(&self) {
        let mut entries = self.entries.locked();
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.clear();
        self.refreshes.fetch_add(1, Ordering::Relaxed);
    }

    fn invalidate_neighbour(&self, change: &monitor::NeighbourChange) {
        let mut entries = self.entries.locked();
        // In-flight lookups may have read the neighbour before this change.
        self.generation.fetch_add(1, Ordering::AcqRel);
        let before = entries.len();
        entries.retain(|_, entry| !change.affects(entry));
        if entries.len() != before {
            self.refreshes.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Route lookups with a notification-driven cache.
///
/// Cheap to clone (shared state); the background tasks stop when the last
/// clone is dropped. The netlink sockets belong to the network namespace of
/// the thread that called [`RouteCache::new`].
#[derive(Clone)]
pub struct RouteCache {
    inner: Arc<Inner>,
}

impl fmt::Debug for RouteCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteCache")
            .field("entries", &self.inner.entries.locked().len())
            .field("refreshes", &self.refreshes())
            .field("netlink_queries", &self.netlink_queries())
            .finish()
    }
}

impl RouteCache {
    /// Opens the netlink sockets (one for queries, one subscribed to change
    /// notifications) and starts their tasks. Must run inside a tokio runtime.
    pub async fn new() -> Result<RouteCache, RouteError> {
        // Subscribe before answering anything, so no change can slip between
        // a query and the moment we start listening.
        let (mut monitor_conn, _monitor_handle, messages) =
            rtnetlink::new_multicast_connection(monitor::GROUPS)
                .map_err(|e| RouteError::Netlink(format!("subscribing to notifications: {e}")))?;
        // Bursts (a routing daemon reloading) overflow the default buffer;
        // an overflow is handled (everything is dropped) but costs re-queries.
        // Best effort: the kernel caps it at net.core.rmem_max.
        let _ = rtnetlink::sys::AsyncSocket::socket_mut(monitor_conn.socket_mut())
            .set_rx_buf_sz(MONITOR_RCVBUF);
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(|e| RouteError::Netlink(format!("opening netlink socket: {e}")))?;

        let conn_task = tokio::spawn(conn);
        let monitor_conn_task = tokio::spawn(monitor_conn);

        let inner = Arc::new(Inner {
            handle,
            entries: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            refreshes: AtomicU64::new(0),
            queries: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            monitoring: AtomicBool::new(true),
            tasks: Mutex::new(vec![conn_task, monitor_conn_task]),
        });
        // The monitor only holds a weak pointer, so dropping the last
        // RouteCache clone drops `Inner`, which stops all three tasks.
        let monitor_task = tokio::spawn(monitor::run(Arc::downgrade(&inner), messages));
        inner.tasks.locked().push(monitor_task);
        Ok(RouteCache { inner })
    }

    /// The route probes to `destination` would take right now.
    ///
    /// Served from the cache when nothing relevant changed since the last
    /// lookup of this address; otherwise asks the kernel.
    pub async fn lookup(&self, destination: IpAddr) -> Result<Route, RouteError> {
        self.lookup_pinned(destination, &Egress::default()).await
    }

    /// The route probes to `destination` would take from the pinned source
    /// address and/or interface (what `ip route get ADDR from SOURCE oif
    /// DEV` answers); cached like [`lookup`](Self::lookup).
    pub async fn lookup_pinned(
        &self,
        destination: IpAddr,
        egress: &Egress,
    ) -> Result<Route, RouteError> {
        let inner = &self.inner;
        let key = (destination, egress.clone());
        let monitoring = inner.monitoring.load(Ordering::Acquire);
        if monitoring && let Some(entry) = inner.entries.locked().get(&key) {
            inner.hits.fetch_add(1, Ordering::Relaxed);
            return entry.result.clone();
        }

        let generation = inner.generation.load(Ordering::Acquire);
        let result = match tokio::time::timeout(
            QUERY_TIMEOUT,
            query::resolve(inner.handle.clone(), destination, egress, &inner.queries),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(RouteError::Timeout(destination)),
        };

        let cacheable = match &result {
            Ok(_) => true,
            Err(e) => e.is_cacheable(),
        };
        if cacheable && inner.monitoring.load(Ordering::Acquire) {
            let mut entries = inner.entries.locked();
            if inner.generation.load(Ordering::Acquire) == generation {
                if entries.len() >= MAX_ENTRIES {
                    entries.clear();
                }
                entries.insert(
                    key,
                    Entry {
                        result: result.clone(),
                    },
                );
            }
        }
        result
    }

    /// Drops every cached answer (e.g. after the caller changed routing).
    pub fn invalidate(&self) {
        self.inner.invalidate_all();
    }

    /// How many times change notifications invalidated cached answers
    /// (exported as a metric: a busy value means a flapping network).
    pub fn refreshes(&self) -> u64 {
        self.inner.refreshes.load(Ordering::Relaxed)
    }

    /// Netlink requests sent so far (route, link, address, neighbour); stays
    /// put while lookups are served from the cache.
    pub fn netlink_queries(&self) -> u64 {
        self.inner.queries.load(Ordering::Relaxed)
    }

    /// Lookups answered from the cache.
    pub fn hits(&self) -> u64 {
        self.inner.hits.load(Ordering::Relaxed)
    }

    /// Whether the change subscription is alive (if not, nothing is cached).
    pub fn is_monitoring(&self) -> bool {
        self.inner.monitoring.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_display_parse_serde() {
        let mac = MacAddr([0x0a, 0xbc, 0, 1, 0xff, 0x10]);
        assert_eq!(mac.to_string(), "0a:bc:00:01:ff:10");
        assert_eq!("0a:bc:00:01:ff:10".parse::<MacAddr>(), Ok(mac));
        assert_eq!("0A-BC-00-01-FF-10".parse::<MacAddr>(), Ok(mac));
        for bad in [
            "",
            "0a:bc:00:01:ff",
            "0a:bc:00:01:ff:10:11",
            "0a:bc:00:01:ff:1g",
            "0a:bc::01:ff:10",
            "0a:bc:000:01:ff:10",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad:?}");
        }
        let json = serde_json::to_string(&mac).unwrap();
        assert_eq!(json, "\"0a:bc:00:01:ff:10\"");
        assert_eq!(serde_json::from_str::<MacAddr>(&json).unwrap(), mac);
        assert_eq!(MacAddr::from_slice(&[1, 2, 3]), None);
        assert_eq!(
            MacAddr::from_slice(&[1, 2, 3, 4, 5, 6]),
            Some(MacAddr([1, 2, 3, 4, 5, 6]))
        );
    }

    #[test]
    fn route_serializes_with_string_macs() {
        let route = Route {
            destination: "198.18.2.9".parse().unwrap(),
            source: "198.18.1.2".parse().unwrap(),
            gateway: Some("198.18.1.1".parse().unwrap()),
            gateway_mac: Some(MacAddr([2, 0, 0, 0, 0, 1])),
            interface: Interface {
                index: 2,
                name: "v0".into(),
                mac: None,
                mtu: 1500,
            },
            source_interface: None,
        };
        let v = serde_json::to_value(&route).unwrap();
        assert_eq!(v["gateway_mac"], "02:00:00:00:00:01");
        assert_eq!(v["interface"]["mac"], serde_json::Value::Null);
        assert_eq!(v["gateway"], "198.18.1.1");
        assert_eq!(route.next_hop(), route.gateway.unwrap());
    }

    /// The cache is shared across tasks of a multi-threaded runtime.
    #[allow(dead_code, clippy::manual_async_fn)]
    fn lookups_are_send(cache: RouteCache, ip: IpAddr) -> impl std::future::Future + Send + Sync {
        async move { cache.lookup(ip).await }
    }

    #[test]
    fn egress_names_and_addresses_are_checked_before_netlink() {
        let pin = |source: Option<&str>, interface: Option<&str>| Egress {
            source: source.map(|s| s.parse().unwrap()),
            interface: interface.map(str::to_string),
        };
        assert!(!Egress::default().is_pinned());
        assert_eq!(Egress::default().check(), Ok(()));
        for good in ["eth0", "veth-src-r1", "a", "123456789012345", "wg.0"] {
            assert_eq!(pin(None, Some(good)).check(), Ok(()), "{good}");
        }
        for bad in [
            "",
            "1234567890123456",
            "a/b",
            "eth0:1",
            "a b",
            ".",
            "..",
            "a\tb",
        ] {
            let err = pin(None, Some(bad)).check().unwrap_err();
            assert!(err.contains("not an interface name"), "{bad:?}: {err}");
        }
        for bad in ["0.0.0.0", "::", "224.0.0.1", "ff02::1", "255.255.255.255"] {
            let err = pin(Some(bad), None).check().unwrap_err();
            assert!(err.contains("cannot be a source address"), "{bad}: {err}");
        }
        let both = pin(Some("198.18.1.1"), Some("eth1"));
        assert!(both.is_pinned());
        assert_eq!(both.check(), Ok(()));
    }

    #[test]
    fn error_codes() {
        let ip: IpAddr = "198.18.0.1".parse().unwrap();
        assert_eq!(RouteError::NoRoute(ip).code(), ErrorCode::Netunreach);
        assert_eq!(
            RouteError::HostUnreachable(ip).code(),
            ErrorCode::Hostunreach
        );
        assert_eq!(RouteError::Netlink("x".into()).code(), ErrorCode::Unknown);
        assert_eq!(RouteError::Timeout(ip).code(), ErrorCode::Unknown);
        assert_eq!(
            RouteError::NoSourceAddress {
                destination: ip,
                interface: "v0".into()
            }
            .code(),
            ErrorCode::Unknown
        );
        assert_eq!(
            RouteError::NoRoute(ip).to_string(),
            "no route to 198.18.0.1"
        );
        for pinned in [
            RouteError::NotLocal(ip),
            RouteError::NoSuchInterface("eth9".into()),
            RouteError::SourceFamily {
                pinned: ip,
                destination: "2001:db8::1".parse().unwrap(),
            },
        ] {
            assert_eq!(pinned.code(), ErrorCode::InvalidRequest, "{pinned}");
            assert!(!pinned.is_cacheable());
        }
        assert_eq!(
            RouteError::NotLocal(ip).to_string(),
            "source address 198.18.0.1 is not an address of this host"
        );
    }
}
