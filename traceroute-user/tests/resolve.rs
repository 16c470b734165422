//! Target resolution and reverse DNS through the real system resolver.
//!
//! Everything runs on a thread inside a fresh network namespace that only has
//! `lo`: /etc/hosts answers what it knows, and whatever would go to a DNS
//! server cannot leave the namespace. Needs root (network namespaces).

use std::future::Future;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use traceroute_user::resolve::{
    FamilyPreference, ResolveError, ReverseDns, ReverseDnsConfig, resolve_target,
};

/// A network namespace that exists as long as this value.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Netns {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "rt{}-{}dns",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        run(&["ip", "-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// Runs `body` on a thread inside the namespace with a current-thread
    /// runtime; the resolver's blocking threads are started from that thread
    /// and inherit its namespace.
    fn run_inside<F, Fut>(&self, body: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let path = format!("/run/netns/{}", self.name);
        let thread = std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("open netns");
            // SAFETY: plain syscall on a valid fd; only this thread moves.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let inside = netns_id();
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    // The resolver runs on blocking threads: make sure they
                    // are in the namespace too before trusting the isolation.
                    let blocking = tokio::task::spawn_blocking(netns_id).await.unwrap();
                    assert_eq!(blocking, inside, "blocking thread escaped the namespace");
                    body().await
                });
        });
        if let Err(panic) = thread.join() {
            std::panic::resume_unwind(panic);
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn netns_id() -> std::path::PathBuf {
    std::fs::read_link("/proc/thread-self/ns/net").unwrap()
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed (are we root?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const T: Duration = Duration::from_secs(3);

#[test]
fn localhost_resolves_from_hosts_file() {
    Netns::new().run_inside(|| async {
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
        assert!(r.all.iter().all(|a| a.is_ipv4()));
    });
}

#[test]
fn invalid_tld_fails_within_the_timeout() {
    Netns::new().run_inside(|| async {
        let timeout = Duration::from_secs(2);
        let start = Instant::now();
        let err = resolve_target("no-such-host.invalid", FamilyPreference::Any, timeout)
            .await
            .unwrap_err();
        let elapsed = start.elapsed();
        match &err {
            ResolveError::NotFound { host, .. } => {
                assert_eq!(host, "no-such-host.invalid");
                assert_eq!(err.code(), "DNS");
            }
            ResolveError::Timeout { after, .. } => {
                assert_eq!(*after, timeout);
                assert_eq!(err.code(), "TIMEOUT");
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
    Netns::new().run_inside(|| async {
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
            assert_eq!(err.code(), "INVALID_REQUEST", "{host:?}: {err}");
        }
    });
}

#[test]
fn reverse_dns_names_and_caches() {
    Netns::new().run_inside(|| async {
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
    Netns::new().run_inside(|| async {
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
