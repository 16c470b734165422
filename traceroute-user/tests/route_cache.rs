//! The route cache against a real kernel: a host namespace wired by a veth
//! pair to a router namespace, both created here and deleted on drop (also
//! when a test panics). Needs root (network namespaces). Uses only
//! 198.18.0.0/15 and 2001:db8::/32, never the root namespace, sends nothing:
//! neighbour entries are added as permanent entries.

use std::future::Future;
use std::net::IpAddr;
use std::time::{Duration, Instant};

mod common;

use common::netns::{Netns, run};
use traceroute_agent::route::{MacAddr, RouteCache, RouteError};

fn link_json(ns: &Netns, dev: &str) -> serde_json::Value {
    let out = ns.ip(&["-j", "link", "show", "dev", dev]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j link output");
    v[0].clone()
}

/// Host `h` (v0: 198.18.1.2/24, 2001:db8:1::2/64, MTU 1400) linked to router
/// `r` (v1: .1 and ::1, plus .3 and ::3 as a second gateway), default routes
/// via .1 / ::1, permanent neighbour entries for both gateways.
struct Lab {
    h: Netns,
    /// Owns the gateway end of the veth pairs.
    r: Netns,
    gw_mac: MacAddr,
}

/// The MAC the host believes the second gateway has (no frame is ever sent).
const GW2_MAC: &str = "02:00:5e:00:00:03";

impl Lab {
    fn new() -> Lab {
        let h = Netns::new("h");
        let r = Netns::new("r");
        h.ip(&[
            "link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns", &r.name,
        ]);
        // No link-local addresses: their DAD completing a second later would
        // be a notification of its own and blur what the tests observe.
        h.ip(&["link", "set", "v0", "addrgenmode", "none"]);
        r.ip(&["link", "set", "v1", "addrgenmode", "none"]);
        h.ip(&["link", "set", "v0", "mtu", "1400", "up"]);
        r.ip(&["link", "set", "v1", "mtu", "1400", "up"]);
        h.ip(&["addr", "add", "198.18.1.2/24", "dev", "v0"]);
        h.ip(&["addr", "add", "2001:db8:1::2/64", "dev", "v0", "nodad"]);
        for a in ["198.18.1.1/24", "198.18.1.3/24"] {
            r.ip(&["addr", "add", a, "dev", "v1"]);
        }
        for a in ["2001:db8:1::1/64", "2001:db8:1::3/64"] {
            r.ip(&["addr", "add", a, "dev", "v1", "nodad"]);
        }
        h.ip(&["route", "add", "default", "via", "198.18.1.1"]);
        h.ip(&["-6", "route", "add", "default", "via", "2001:db8:1::1"]);
        let gw_mac: MacAddr = link_json(&r, "v1")["address"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let mac = gw_mac.to_string();
        for gw in ["198.18.1.1", "2001:db8:1::1"] {
            h.ip(&[
                "neigh",
                "replace",
                gw,
                "lladdr",
                &mac,
                "dev",
                "v0",
                "nud",
                "permanent",
            ]);
        }
        for gw in ["198.18.1.3", "2001:db8:1::3"] {
            h.ip(&[
                "neigh",
                "replace",
                gw,
                "lladdr",
                GW2_MAC,
                "dev",
                "v0",
                "nud",
                "permanent",
            ]);
        }
        Lab { h, r, gw_mac }
    }

    /// Runs `body` inside the host namespace (see `Netns::run_inside`).
    fn run_in_host<F, Fut>(&self, body: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        self.h.run_inside(body);
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Polls `cond` for up to two seconds, letting the runtime deliver
/// notifications in between.
async fn eventually(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn lookup_reports_interface_source_gateway_and_macs() {
    let lab = Lab::new();
    let link = link_json(&lab.h, "v0");
    let (if_index, if_mac, if_mtu) = (
        link["ifindex"].as_u64().unwrap() as u32,
        link["address"]
            .as_str()
            .unwrap()
            .parse::<MacAddr>()
            .unwrap(),
        link["mtu"].as_u64().unwrap() as u32,
    );
    let lo_index = link_json(&lab.h, "lo")["ifindex"].as_u64().unwrap() as u32;
    let gw_mac = lab.gw_mac;
    lab.run_in_host(move || async move {
        let cache = RouteCache::new().await.unwrap();
        for (dst, src, gw) in [
            ("198.19.7.7", "198.18.1.2", "198.18.1.1"),
            ("2001:db8:7::7", "2001:db8:1::2", "2001:db8:1::1"),
        ] {
            let route = cache.lookup(ip(dst)).await.unwrap();
            assert_eq!(route.destination, ip(dst));
            assert_eq!(route.interface.name, "v0");
            assert_eq!(route.interface.index, if_index);
            assert_eq!(route.interface.mac, Some(if_mac));
            assert_eq!(route.interface.mtu, if_mtu);
            assert_eq!(if_mtu, 1400);
            assert_eq!(route.source, ip(src));
            assert_eq!(route.gateway, Some(ip(gw)));
            assert_eq!(route.gateway_mac, Some(gw_mac), "{dst}");
        }

        // On-link: no gateway; the MAC is the destination's own.
        for (dst, src) in [
            ("198.18.1.1", "198.18.1.2"),
            ("2001:db8:1::1", "2001:db8:1::2"),
        ] {
            let route = cache.lookup(ip(dst)).await.unwrap();
            assert_eq!(route.gateway, None, "{dst}");
            assert_eq!(route.gateway_mac, Some(gw_mac), "{dst}");
            assert_eq!(route.source, ip(src));
            assert_eq!(route.interface.index, if_index);
        }
        // On-link without a neighbour entry: no MAC, still a route.
        let route = cache.lookup(ip("198.18.1.77")).await.unwrap();
        assert_eq!((route.gateway, route.gateway_mac), (None, None));

        // Local destinations go through lo.
        for dst in ["198.18.1.2", "2001:db8:1::2", "127.0.0.1"] {
            let route = cache.lookup(ip(dst)).await.unwrap();
            assert_eq!(route.interface.name, "lo", "{dst}");
            assert_eq!(route.interface.index, lo_index);
            assert_eq!(route.gateway, None);
            assert_eq!(route.source, ip(dst));
        }
    });
}

#[test]
fn rejecting_routes_and_missing_routes_are_errors() {
    let lab = Lab::new();
    lab.h.ip(&["route", "add", "blackhole", "198.19.2.0/24"]);
    lab.h.ip(&["route", "add", "prohibit", "198.19.3.0/24"]);
    lab.h.ip(&["route", "add", "unreachable", "198.19.4.0/24"]);
    lab.h
        .ip(&["-6", "route", "add", "blackhole", "2001:db8:2::/48"]);
    lab.h
        .ip(&["-6", "route", "add", "unreachable", "2001:db8:4::/48"]);
    let h = lab.h.name.clone();
    lab.run_in_host(move || async move {
        let cache = RouteCache::new().await.unwrap();
        for dst in ["198.19.2.1", "198.19.3.1", "2001:db8:2::1"] {
            let err = cache.lookup(ip(dst)).await.unwrap_err();
            assert_eq!(err, RouteError::NoRoute(ip(dst)));
            assert_eq!(err.code().as_str(), "NETUNREACH");
        }
        for dst in ["198.19.4.1", "2001:db8:4::1"] {
            let err = cache.lookup(ip(dst)).await.unwrap_err();
            assert_eq!(err, RouteError::HostUnreachable(ip(dst)));
            assert_eq!(err.code().as_str(), "HOSTUNREACH");
        }

        // Reachable now, not once the default routes are gone: the cached
        // answers must not survive the deletion.
        assert!(cache.lookup(ip("198.19.7.7")).await.is_ok());
        assert!(cache.lookup(ip("2001:db8:7::7")).await.is_ok());
        run(&["ip", "-n", &h, "route", "del", "default"]);
        run(&["ip", "-n", &h, "-6", "route", "del", "default"]);
        for dst in ["198.19.7.7", "2001:db8:7::7"] {
            eventually("the deleted default route", async || {
                cache.lookup(ip(dst)).await == Err(RouteError::NoRoute(ip(dst)))
            })
            .await;
        }
    });
}

#[test]
fn cache_serves_repeats_and_follows_route_changes() {
    let lab = Lab::new();
    let h = lab.h.name.clone();
    let gw_mac = lab.gw_mac;
    lab.run_in_host(move || async move {
        let cache = RouteCache::new().await.unwrap();
        let dst4 = ip("198.19.7.7");
        let dst6 = ip("2001:db8:7::7");
        // Notifications from the lab's setup may still be arriving; wait
        // until a repeat lookup is served from the cache at all.
        eventually("a cached repeat lookup", async || {
            cache.lookup(dst4).await.unwrap();
            let queries = cache.netlink_queries();
            cache.lookup(dst4).await.unwrap();
            cache.netlink_queries() == queries
        })
        .await;
        let first = cache.lookup(dst4).await.unwrap();
        cache.lookup(dst6).await.unwrap();

        // Repeats are served without netlink traffic.
        let queries = cache.netlink_queries();
        let hits = cache.hits();
        assert!(queries >= 2);
        for _ in 0..5 {
            assert_eq!(cache.lookup(dst4).await.unwrap(), first);
            cache.lookup(dst6).await.unwrap();
        }
        assert_eq!(
            cache.netlink_queries(),
            queries,
            "repeat lookups went to netlink"
        );
        assert_eq!(cache.hits(), hits + 10);

        // Another gateway: the notification invalidates, the next lookup
        // sees the new route and the new gateway's MAC.
        let refreshes = cache.refreshes();
        run(&[
            "ip",
            "-n",
            &h,
            "route",
            "replace",
            "default",
            "via",
            "198.18.1.3",
        ]);
        run(&[
            "ip",
            "-n",
            &h,
            "-6",
            "route",
            "replace",
            "default",
            "via",
            "2001:db8:1::3",
        ]);
        let gw2: MacAddr = GW2_MAC.parse().unwrap();
        for (dst, gw) in [(dst4, "198.18.1.3"), (dst6, "2001:db8:1::3")] {
            eventually("the replaced default route", async || {
                let route = cache.lookup(dst).await.unwrap();
                route.gateway == Some(ip(gw)) && route.gateway_mac == Some(gw2)
            })
            .await;
        }
        assert!(cache.refreshes() > refreshes, "no invalidation counted");

        // A neighbour's new MAC reaches cached routes through it...
        let refreshes = cache.refreshes();
        let moved = "02:00:5e:00:00:33";
        run(&[
            "ip",
            "-n",
            &h,
            "neigh",
            "replace",
            "198.18.1.3",
            "lladdr",
            moved,
            "dev",
            "v0",
            "nud",
            "permanent",
        ]);
        eventually("the neighbour change", async || {
            cache.lookup(dst4).await.unwrap().gateway_mac == Some(moved.parse().unwrap())
        })
        .await;
        assert!(cache.refreshes() > refreshes);
        // ...without dropping routes through other next hops.
        let queries = cache.netlink_queries();
        assert_eq!(cache.lookup(dst6).await.unwrap().gateway_mac, Some(gw2));
        assert_eq!(cache.netlink_queries(), queries);

        // Link changes (MTU) are picked up too.
        run(&["ip", "-n", &h, "link", "set", "v0", "mtu", "1300"]);
        eventually("the MTU change", async || {
            cache.lookup(dst4).await.unwrap().interface.mtu == 1300
        })
        .await;

        // And back to the first gateway.
        run(&[
            "ip",
            "-n",
            &h,
            "route",
            "replace",
            "default",
            "via",
            "198.18.1.1",
        ]);
        eventually("the restored default route", async || {
            cache.lookup(dst4).await.unwrap().gateway_mac == Some(gw_mac)
        })
        .await;
    });
}

#[test]
fn source_is_the_routes_prefsrc() {
    // Two addresses on the interface; a route that names its source.
    let lab = Lab::new();
    lab.h.ip(&["addr", "add", "198.18.2.2/24", "dev", "v0"]);
    lab.h.ip(&[
        "route",
        "add",
        "198.19.9.0/24",
        "via",
        "198.18.1.1",
        "src",
        "198.18.2.2",
    ]);
    lab.run_in_host(move || async move {
        let cache = RouteCache::new().await.unwrap();
        let route = cache.lookup(ip("198.19.9.9")).await.unwrap();
        assert_eq!(route.source, ip("198.18.2.2"), "prefsrc of the route wins");
        let route = cache.lookup(ip("198.19.7.7")).await.unwrap();
        assert_eq!(route.source, ip("198.18.1.2"));
    });
}

/// `-s` and `-i`: the kernel's answer for a pinned source address (policy
/// rules that match on it apply) and a pinned interface (its routes, or
/// on-link when it has none, as `ip route get ADDR oif DEV` says), each
/// cached under its own key and dropped when a rule changes; what can never
/// work is refused with its reason.
#[test]
fn pinned_source_and_interface_are_the_kernels_answers() {
    let lab = Lab::new();
    // A second uplink to the router, with no routes yet (nothing is sent).
    lab.h.ip(&[
        "link",
        "add",
        "d0",
        "type",
        "veth",
        "peer",
        "name",
        "d1",
        "netns",
        &lab.r.name,
    ]);
    lab.h.ip(&["link", "set", "d0", "addrgenmode", "none"]);
    lab.r.ip(&["link", "set", "d1", "addrgenmode", "none"]);
    lab.h.ip(&["link", "set", "d0", "up"]);
    lab.r.ip(&["link", "set", "d1", "up"]);
    lab.h.ip(&["addr", "add", "198.18.3.2/24", "dev", "d0"]);
    lab.h
        .ip(&["addr", "add", "2001:db8:3::2/64", "dev", "d0", "nodad"]);
    // A second address on v0 whose traffic policy routing sends to the
    // second gateway.
    lab.h.ip(&["addr", "add", "198.18.1.22/24", "dev", "v0"]);
    lab.h
        .ip(&["addr", "add", "2001:db8:1::22/64", "dev", "v0", "nodad"]);
    for (family, gw) in [("-4", "198.18.1.3"), ("-6", "2001:db8:1::3")] {
        lab.h
            .ip(&[family, "route", "add", "default", "via", gw, "table", "100"]);
    }
    lab.h
        .ip(&["rule", "add", "from", "198.18.1.22", "lookup", "100"]);
    let h = lab.h.name.clone();
    lab.run_in_host(move || async move {
        use traceroute_agent::route::Egress;
        let cache = RouteCache::new().await.unwrap();
        let on = |name: &str| Egress {
            interface: Some(name.into()),
            ..Egress::default()
        };
        let from = |source: &str| Egress {
            source: Some(ip(source)),
            ..Egress::default()
        };

        // Pinned interface without a route through it: IPv4 assumes the
        // destination is on-link there, IPv6 has no route.
        let route = cache
            .lookup_pinned(ip("198.19.7.7"), &on("d0"))
            .await
            .unwrap();
        assert_eq!(route.interface.name, "d0");
        assert_eq!(route.gateway, None);
        assert_eq!(route.source, ip("198.18.3.2"));
        let err = cache
            .lookup_pinned(ip("2001:db8:7::7"), &on("d0"))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "no route to 2001:db8:7::7 through d0");
        assert_eq!(err.code().as_str(), "NETUNREACH");
        // Unpinned, the same destinations still leave by v0.
        for dst in ["198.19.7.7", "2001:db8:7::7"] {
            let route = cache.lookup(ip(dst)).await.unwrap();
            assert_eq!(route.interface.name, "v0", "{dst}");
        }
        // Worse default routes through d0: only pinned lookups take them.
        for (family, gw, dst, main_gw) in [
            ("-4", "198.18.3.1", "198.19.7.7", "198.18.1.1"),
            ("-6", "2001:db8:3::1", "2001:db8:7::7", "2001:db8:1::1"),
        ] {
            run(&[
                "ip", "-n", &h, family, "route", "add", "default", "via", gw, "dev", "d0",
                "metric", "2000",
            ]);
            eventually("the route through d0", async || {
                cache
                    .lookup_pinned(ip(dst), &on("d0"))
                    .await
                    .is_ok_and(|r| r.gateway == Some(ip(gw)) && r.interface.name == "d0")
            })
            .await;
            assert_eq!(
                cache.lookup(ip(dst)).await.unwrap().gateway,
                Some(ip(main_gw))
            );
        }

        // Pinned source: the rule for it sends v4 to the second gateway.
        let route = cache
            .lookup_pinned(ip("198.19.7.7"), &from("198.18.1.22"))
            .await
            .unwrap();
        assert_eq!(route.source, ip("198.18.1.22"));
        assert_eq!(route.gateway, Some(ip("198.18.1.3")));
        assert_eq!(route.gateway_mac, Some(GW2_MAC.parse().unwrap()));
        // No IPv6 rule yet: the main table, from the pinned address.
        let route = cache
            .lookup_pinned(ip("2001:db8:7::7"), &from("2001:db8:1::22"))
            .await
            .unwrap();
        assert_eq!(route.source, ip("2001:db8:1::22"));
        assert_eq!(route.gateway, Some(ip("2001:db8:1::1")));
        // A new rule is a change the cache hears of.
        run(&[
            "ip",
            "-n",
            &h,
            "-6",
            "rule",
            "add",
            "from",
            "2001:db8:1::22",
            "lookup",
            "100",
        ]);
        eventually("the IPv6 rule", async || {
            cache
                .lookup_pinned(ip("2001:db8:7::7"), &from("2001:db8:1::22"))
                .await
                .is_ok_and(|r| r.gateway == Some(ip("2001:db8:1::3")))
        })
        .await;
        // Both pinned: the source's rule table, through v0.
        let both = Egress {
            source: Some(ip("198.18.1.22")),
            interface: Some("v0".into()),
        };
        let route = cache.lookup_pinned(ip("198.19.7.7"), &both).await.unwrap();
        assert_eq!(
            (route.interface.name.as_str(), route.gateway),
            ("v0", Some(ip("198.18.1.3")))
        );

        // Repeats are served from the cache, under each pin's own key
        // (the first round fills it again after the rule change).
        let mut queries = cache.netlink_queries();
        for round in 0..3 {
            assert_eq!(
                cache
                    .lookup_pinned(ip("198.19.7.7"), &on("d0"))
                    .await
                    .unwrap()
                    .interface
                    .name,
                "d0"
            );
            assert_eq!(
                cache.lookup(ip("198.19.7.7")).await.unwrap().interface.name,
                "v0"
            );
            if round == 0 {
                queries = cache.netlink_queries();
            }
        }
        assert_eq!(cache.netlink_queries(), queries);

        // What can never work, with its reason.
        assert_eq!(
            cache
                .lookup_pinned(ip("198.19.7.7"), &from("198.18.1.1"))
                .await,
            Err(RouteError::NotLocal(ip("198.18.1.1"))),
            "the gateway's address is not ours"
        );
        assert_eq!(
            cache.lookup_pinned(ip("198.19.7.7"), &on("nope0")).await,
            Err(RouteError::NoSuchInterface("nope0".into()))
        );
        assert_eq!(
            cache
                .lookup_pinned(ip("2001:db8:7::7"), &from("198.18.1.22"))
                .await,
            Err(RouteError::SourceFamily {
                pinned: ip("198.18.1.22"),
                destination: ip("2001:db8:7::7"),
            })
        );
    });
}
