//! Reverse DNS of hop addresses: cached (positive and negative), bounded,
//! with a timeout per lookup.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::MAX_NAME;
use crate::sync::LockExt;
use tokio::sync::watch;

/// Tuning for [`ReverseDns`].
#[derive(Debug, Clone)]
pub struct ReverseDnsConfig {
    /// Most addresses remembered (names and failures).
    pub capacity: usize,
    /// How long a found name is reused.
    pub positive_ttl: Duration,
    /// How long "no name" (or a failure) is reused; short, because it is
    /// often a transient resolver problem.
    pub negative_ttl: Duration,
    /// How long one caller waits; the query itself carries on in the
    /// background and its answer is cached for the next caller.
    pub timeout: Duration,
    /// Most queries running at once; beyond it callers get `None` at once
    /// instead of queueing up blocking threads behind a dead resolver.
    pub max_in_flight: usize,
}

impl Default for ReverseDnsConfig {
    fn default() -> Self {
        ReverseDnsConfig {
            capacity: 4096,
            positive_ttl: Duration::from_secs(600),
            negative_ttl: Duration::from_secs(60),
            timeout: Duration::from_secs(2),
            max_in_flight: 64,
        }
    }
}

struct CacheEntry {
    name: Option<String>,
    expires: Instant,
}

type InFlight = watch::Receiver<Option<Option<String>>>;

struct ReverseInner {
    config: ReverseDnsConfig,
    cache: Mutex<HashMap<IpAddr, CacheEntry>>,
    in_flight: Mutex<HashMap<IpAddr, InFlight>>,
    hits: AtomicU64,
    queries: AtomicU64,
    shed: AtomicU64,
}

impl ReverseInner {
    fn cached(&self, ip: &IpAddr, now: Instant) -> Option<Option<String>> {
        let cache = self.cache.locked();
        let entry = cache.get(ip).filter(|e| e.expires > now)?;
        Some(entry.name.clone())
    }

    fn store(&self, ip: IpAddr, name: Option<String>) {
        let now = Instant::now();
        let ttl = if name.is_some() {
            self.config.positive_ttl
        } else {
            self.config.negative_ttl
        };
        let mut cache = self.cache.locked();
        if cache.len() >= self.config.capacity && !cache.contains_key(&ip) {
            cache.retain(|_, e| e.expires > now);
            if cache.len() >= self.config.capacity
                && let Some(oldest) = cache.iter().min_by_key(|(_, e)| e.expires).map(|(k, _)| *k)
            {
                cache.remove(&oldest);
            }
        }
        if self.config.capacity > 0 {
            cache.insert(
                ip,
                CacheEntry {
                    name,
                    expires: now + ttl,
                },
            );
        }
    }
}

/// Reverse DNS (PTR) for hop addresses, with a bounded cache of names and
/// failures, so the routers seen by every trace are looked up once.
///
/// Clones share the cache.
#[derive(Clone)]
pub struct ReverseDns {
    inner: Arc<ReverseInner>,
}

impl fmt::Debug for ReverseDns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReverseDns")
            .field("config", &self.inner.config)
            .field("cached", &self.len())
            .field("hits", &self.hits())
            .field("queries", &self.queries())
            .finish()
    }
}

impl Default for ReverseDns {
    fn default() -> Self {
        ReverseDns::new()
    }
}

impl ReverseDns {
    /// A resolver with [`ReverseDnsConfig::default`].
    pub fn new() -> ReverseDns {
        ReverseDns::with_config(ReverseDnsConfig::default())
    }

    /// A resolver with explicit limits.
    pub fn with_config(config: ReverseDnsConfig) -> ReverseDns {
        ReverseDns {
            inner: Arc::new(ReverseInner {
                config,
                cache: Mutex::new(HashMap::new()),
                in_flight: Mutex::new(HashMap::new()),
                hits: AtomicU64::new(0),
                queries: AtomicU64::new(0),
                shed: AtomicU64::new(0),
            }),
        }
    }

    /// The name of `ip`, or `None` when it has none, the resolver failed or
    /// did not answer within the timeout. Never fails otherwise: a hop
    /// without a name is normal. Concurrent lookups of one address share a
    /// single query.
    pub async fn lookup(&self, ip: IpAddr) -> Option<String> {
        let inner = &self.inner;
        if let Some(name) = inner.cached(&ip, Instant::now()) {
            inner.hits.fetch_add(1, Ordering::Relaxed);
            return name;
        }
        let mut answer = {
            let mut in_flight = inner.in_flight.locked();
            // Re-check under the lock: a query may have just finished (it
            // stores its answer before leaving `in_flight`).
            if let Some(name) = inner.cached(&ip, Instant::now()) {
                inner.hits.fetch_add(1, Ordering::Relaxed);
                return name;
            }
            match in_flight.get(&ip) {
                Some(rx) => rx.clone(),
                None => {
                    if in_flight.len() >= inner.config.max_in_flight {
                        inner.shed.fetch_add(1, Ordering::Relaxed);
                        return None;
                    }
                    let (tx, rx) = watch::channel(None);
                    in_flight.insert(ip, rx.clone());
                    inner.queries.fetch_add(1, Ordering::Relaxed);
                    let shared = Arc::clone(inner);
                    tokio::task::spawn_blocking(move || {
                        let name = getnameinfo(ip);
                        shared.store(ip, name.clone());
                        shared.in_flight.locked().remove(&ip);
                        let _ = tx.send(Some(name));
                    });
                    rx
                }
            }
        };
        let wait = answer.wait_for(Option::is_some);
        match tokio::time::timeout(inner.config.timeout, wait).await {
            Ok(Ok(done)) => done.clone().flatten(),
            _ => None,
        }
    }

    /// Lookups answered from the cache.
    pub fn hits(&self) -> u64 {
        self.inner.hits.load(Ordering::Relaxed)
    }

    /// Queries sent to the system resolver.
    pub fn queries(&self) -> u64 {
        self.inner.queries.load(Ordering::Relaxed)
    }

    /// Lookups refused because `max_in_flight` queries were running.
    pub fn shed(&self) -> u64 {
        self.inner.shed.load(Ordering::Relaxed)
    }

    /// Addresses currently cached (including expired, not yet evicted ones).
    pub fn len(&self) -> usize {
        self.inner.cache.locked().len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// PTR lookup through the system resolver (nsswitch: /etc/hosts, DNS...).
/// Blocking: run it on a blocking thread. NI_NAMEREQD: no name is an error,
/// never the address echoed back as text.
fn getnameinfo(ip: IpAddr) -> Option<String> {
    let (name, _service) =
        dns_lookup::getnameinfo(&std::net::SocketAddr::new(ip, 0), libc::NI_NAMEREQD).ok()?;
    plausible_name(&name)
}

/// PTR data is whatever the address owner published: only pass on what looks
/// like a host name, so records and logs never carry junk.
fn plausible_name(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    ok.then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptr_names_are_sanitised() {
        assert_eq!(
            plausible_name("router.example."),
            Some("router.example".into())
        );
        assert_eq!(plausible_name("_gateway"), Some("_gateway".into()));
        assert_eq!(plausible_name("evil\u{1b}[31m.example"), None);
        assert_eq!(plausible_name("a b"), None);
        assert_eq!(plausible_name(""), None);
    }
}
