//! Target resolution and reverse DNS through the real system resolver.
//!
//! Everything runs on a thread inside a fresh network namespace that only has
//! `lo`: /etc/hosts answers what it knows, and whatever would go to a DNS
//! server cannot leave the namespace. Needs root (network namespaces).

use std::future::Future;
use std::net::IpAddr;
use std::time::{Duration, Instant};

mod common;

use common::netns::Netns;
use traceroute_agent::resolve::{
    FamilyPreference, ResolveError, ReverseDns, ReverseDnsConfig, resolve_target,
};

/// Runs `body` in a fresh namespace that has only loopback: no DNS query can
/// leave it. The resolver runs on blocking threads, so first make sure they are
/// in the namespace too before trusting the isolation.
fn run_isolated<F, Fut>(body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let ns = Netns::new("dns");
    ns.run_inside(|| async move {
        let inside = netns_id();
        let blocking = tokio::task::spawn_blocking(netns_id).await.unwrap();
        assert_eq!(blocking, inside, "blocking thread escaped the namespace");
        body().await;
    });
}

fn netns_id() -> std::path::PathBuf {
    std::fs::read_link("/proc/thread-self/ns/net").unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const T: Duration = Duration::from_secs(3);

#[test]
fn localhost_resolves_from_hosts_file() {
    run_isolated(|| async {
        let r = resolve_target("localhost", FamilyPreference::Any, T)
            .await
            .unwrap();
        assert!(r.addr.is_loopback(), "{r:?}");
        assert_eq!(r.all[0], r.addr);
        assert_eq!(r.hostname, "localhost");
        let r = resolve_target("localhost", FamilyPreference::V4, T)
            .await
            .unwrap();
        assert_eq!(r.addr, ip("127.0.0.1"));
        assert!(r.all.iter().all(std::net::IpAddr::is_ipv4));
    });
}

#[test]
fn invalid_tld_fails_within_the_timeout() {
    run_isolated(|| async {
        let timeout = Duration::from_secs(2);
        let start = Instant::now();
        let err = resolve_target("no-such-host.invalid", FamilyPreference::Any, timeout)
            .await
            .unwrap_err();
        let elapsed = start.elapsed();
        match &err {
            ResolveError::NotFound { host, .. } => {
                assert_eq!(host, "no-such-host.invalid");
                assert_eq!(err.code().as_str(), "DNS");
            }
            ResolveError::Timeout { after, .. } => {
                assert_eq!(*after, timeout);
                assert_eq!(err.code().as_str(), "TIMEOUT");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            elapsed < timeout + Duration::from_millis(500),
            "took {elapsed:?}"
        );
    });
}

#[test]
fn literals_skip_dns_and_honour_the_family() {
    run_isolated(|| async {
        for (host, fam, want) in [
            ("198.18.0.1", FamilyPreference::Any, "198.18.0.1"),
            ("198.18.0.1", FamilyPreference::V4, "198.18.0.1"),
            ("2001:db8::1", FamilyPreference::Any, "2001:db8::1"),
            ("[2001:db8::1]", FamilyPreference::V6, "2001:db8::1"),
        ] {
            let r = resolve_target(host, fam, T).await.unwrap();
            assert_eq!(
                (r.addr, r.all.clone()),
                (ip(want), vec![ip(want)]),
                "{host}"
            );
            assert_eq!(r.hostname, want);
        }
        for (host, fam) in [
            ("198.18.0.1", FamilyPreference::V6),
            ("[2001:db8::1]", FamilyPreference::V4),
        ] {
            let err = resolve_target(host, fam, T).await.unwrap_err();
            assert!(
                matches!(err, ResolveError::NoAddressInFamily { .. }),
                "{err:?}"
            );
        }
        for host in ["", "fe80::1%lo", "bad host", "a..b", "127.1", "x/y"] {
            let err = resolve_target(host, FamilyPreference::Any, T)
                .await
                .unwrap_err();
            assert_eq!(err.code().as_str(), "INVALID_REQUEST", "{host:?}: {err}");
        }
    });
}

#[test]
fn reverse_dns_names_and_caches() {
    run_isolated(|| async {
        let rdns = ReverseDns::new();
        let name = rdns.lookup(ip("127.0.0.1")).await;
        assert!(name.as_deref().is_some_and(|n| !n.is_empty()), "{name:?}");
        assert_eq!((rdns.queries(), rdns.hits()), (1, 0));
        assert_eq!(rdns.lookup(ip("127.0.0.1")).await, name);
        assert_eq!(
            (rdns.queries(), rdns.hits()),
            (1, 1),
            "second lookup must be cached"
        );

        // No name: cached as a negative entry.
        let none = rdns.lookup(ip("198.18.77.77")).await;
        assert_eq!(none, None);
        let queries = rdns.queries();
        assert_eq!(rdns.lookup(ip("198.18.77.77")).await, None);
        assert_eq!(rdns.queries(), queries, "negative answers are cached too");
        assert_eq!(rdns.len(), 2);

        // Concurrent lookups of one address share a single query.
        let fresh = ReverseDns::new();
        let lookups: Vec<_> = (0..8).map(|_| fresh.lookup(ip("127.0.0.1"))).collect();
        let names = futures_util::future::join_all(lookups).await;
        assert!(names.iter().all(|n| *n == name), "{names:?}");
        assert_eq!(fresh.queries(), 1);
    });
}

#[test]
fn reverse_dns_cache_is_bounded_and_expires() {
    run_isolated(|| async {
        let rdns = ReverseDns::with_config(ReverseDnsConfig {
            capacity: 3,
            negative_ttl: Duration::from_millis(50),
            ..ReverseDnsConfig::default()
        });
        for i in 1..=10u8 {
            rdns.lookup(IpAddr::from([198, 18, 78, i])).await;
        }
        assert!(rdns.len() <= 3, "{}", rdns.len());
        let queries = rdns.queries();
        tokio::time::sleep(Duration::from_millis(100)).await;
        rdns.lookup(IpAddr::from([198, 18, 78, 10])).await;
        assert_eq!(
            rdns.queries(),
            queries + 1,
            "expired entries are asked again"
        );
    });
}
