//! Change notifications: the reason cached routes can be trusted.
//!
//! Routes, policy rules, links and addresses can change any routing
//! decision (rules those of pinned sources most of all), so any such
//! notification drops the whole cache (they are rare). Neighbour entries
//! change often (REACHABLE <-> STALE every few seconds on a busy LAN) and
//! concern one next hop, so they only drop entries whose next-hop MAC they
//! actually change.

use std::net::IpAddr;
use std::sync::Weak;
use std::sync::atomic::Ordering;

use futures_util::{Stream, StreamExt};
use rtnetlink::MulticastGroup;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::neighbour::NeighbourMessage;

use super::query::{neighbour_address, usable_mac};
use super::{Entry, Inner, MacAddr};

/// Everything that can change `ip route get`'s answer or what we add to it.
pub(super) const GROUPS: &[MulticastGroup] = &[
    MulticastGroup::Ipv4Route,
    MulticastGroup::Ipv6Route,
    MulticastGroup::Ipv4Rule,
    MulticastGroup::Ipv6Rule,
    MulticastGroup::Link,
    MulticastGroup::Ipv4Ifaddr,
    MulticastGroup::Ipv6Ifaddr,
    MulticastGroup::Neigh,
];

/// A neighbour entry as announced: its MAC (if resolved) after the change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NeighbourChange {
    pub ifindex: u32,
    pub address: IpAddr,
    pub mac: Option<MacAddr>,
}

impl NeighbourChange {
    fn from_message(msg: &NeighbourMessage, deleted: bool) -> Option<NeighbourChange> {
        Some(NeighbourChange {
            ifindex: msg.header.ifindex,
            address: neighbour_address(&msg.attributes)?,
            mac: if deleted {
                None
            } else {
                usable_mac(msg.header.state, &msg.attributes)
            },
        })
    }

    /// Whether `entry` reports a different MAC for this neighbour than the
    /// neighbour table now holds.
    pub(super) fn affects(&self, entry: &Entry) -> bool {
        match (&entry.result, entry.neighbour()) {
            (Ok(route), Some((ifindex, address))) => {
                ifindex == self.ifindex && address == self.address && route.gateway_mac != self.mac
            }
            _ => false,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Event {
    /// Drop everything (`&'static str` says why, for logs).
    All(&'static str),
    Neighbour(NeighbourChange),
    Ignore,
}

pub(super) fn classify(payload: &NetlinkPayload<RouteNetlinkMessage>) -> Event {
    match payload {
        NetlinkPayload::InnerMessage(msg) => match msg {
            RouteNetlinkMessage::NewRoute(_) | RouteNetlinkMessage::DelRoute(_) => {
                Event::All("route")
            }
            RouteNetlinkMessage::NewRule(_) | RouteNetlinkMessage::DelRule(_) => Event::All("rule"),
            RouteNetlinkMessage::NewLink(_) | RouteNetlinkMessage::DelLink(_) => Event::All("link"),
            RouteNetlinkMessage::NewAddress(_) | RouteNetlinkMessage::DelAddress(_) => {
                Event::All("address")
            }
            RouteNetlinkMessage::NewNeighbour(n) => {
                NeighbourChange::from_message(n, false).map_or(Event::Ignore, Event::Neighbour)
            }
            RouteNetlinkMessage::DelNeighbour(n) => {
                NeighbourChange::from_message(n, true).map_or(Event::Ignore, Event::Neighbour)
            }
            _ => Event::Ignore,
        },
        // The socket buffer overflowed: notifications were lost, so nothing
        // cached can be vouched for any more.
        NetlinkPayload::Overrun(_) => Event::All("notification overrun"),
        _ => Event::Ignore,
    }
}

pub(super) async fn run<S, A>(inner: Weak<Inner>, mut messages: S)
where
    S: Stream<Item = (NetlinkMessage<RouteNetlinkMessage>, A)> + Unpin,
{
    while let Some((message, _)) = messages.next().await {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        match classify(&message.payload) {
            Event::All(why) => {
                tracing::debug!(reason = why, "route cache invalidated");
                inner.invalidate_all();
            }
            Event::Neighbour(change) => inner.invalidate_neighbour(&change),
            Event::Ignore => {}
        }
    }
    if let Some(inner) = inner.upgrade() {
        tracing::warn!("route change notifications stopped; route lookups will not be cached");
        inner.monitoring.store(false, Ordering::Release);
        inner.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{Interface, Route, RouteError};
    use rtnetlink::packet_route::neighbour::{
        NeighbourAddress, NeighbourAttribute, NeighbourState,
    };
    use rtnetlink::packet_route::route::RouteMessage;
    use rtnetlink::packet_route::rule::RuleMessage;
    use std::net::Ipv4Addr;

    fn entry(gateway: Option<&str>, mac: Option<MacAddr>) -> Entry {
        Entry {
            result: Ok(Route {
                destination: "198.18.5.5".parse().unwrap(),
                source: "198.18.1.2".parse().unwrap(),
                gateway: gateway.map(|g| g.parse().unwrap()),
                gateway_mac: mac,
                interface: Interface {
                    index: 3,
                    name: "v0".into(),
                    mac: Some(MacAddr([2, 0, 0, 0, 0, 2])),
                    mtu: 1500,
                },
                source_interface: None,
            }),
        }
    }

    fn neigh(
        ifindex: u32,
        ip: [u8; 4],
        state: NeighbourState,
        mac: Option<[u8; 6]>,
    ) -> NeighbourMessage {
        let mut msg = NeighbourMessage::default();
        msg.header.ifindex = ifindex;
        msg.header.state = state;
        msg.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                Ipv4Addr::from(ip),
            )));
        if let Some(mac) = mac {
            msg.attributes
                .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        }
        msg
    }

    fn change(msg: NeighbourMessage, deleted: bool) -> NeighbourChange {
        let payload = NetlinkPayload::InnerMessage(if deleted {
            RouteNetlinkMessage::DelNeighbour(msg)
        } else {
            RouteNetlinkMessage::NewNeighbour(msg)
        });
        match classify(&payload) {
            Event::Neighbour(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn route_rule_link_address_and_overrun_drop_everything() {
        let route =
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(RouteMessage::default()));
        assert_eq!(classify(&route), Event::All("route"));
        let del =
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelRoute(RouteMessage::default()));
        assert_eq!(classify(&del), Event::All("route"));
        for rule in [
            RouteNetlinkMessage::NewRule(RuleMessage::default()),
            RouteNetlinkMessage::DelRule(RuleMessage::default()),
        ] {
            assert_eq!(
                classify(&NetlinkPayload::InnerMessage(rule)),
                Event::All("rule")
            );
        }
        assert_eq!(
            classify(&NetlinkPayload::Overrun(Vec::new())),
            Event::All("notification overrun")
        );
    }

    #[test]
    fn neighbour_changes_only_touch_their_next_hop() {
        let gw_mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let cached = entry(Some("198.18.1.1"), Some(gw_mac));

        // Same MAC (REACHABLE -> STALE): nothing to do.
        let same = change(
            neigh(3, [198, 18, 1, 1], NeighbourState::Stale, Some(gw_mac.0)),
            false,
        );
        assert!(!same.affects(&cached));
        // Another neighbour, or the same address on another interface.
        let other = change(
            neigh(3, [198, 18, 1, 7], NeighbourState::Reachable, Some([9; 6])),
            false,
        );
        assert!(!other.affects(&cached));
        let other_if = change(
            neigh(4, [198, 18, 1, 1], NeighbourState::Reachable, Some([9; 6])),
            false,
        );
        assert!(!other_if.affects(&cached));
        // New MAC, failure, deletion: the cached MAC is wrong now.
        let moved = change(
            neigh(3, [198, 18, 1, 1], NeighbourState::Reachable, Some([9; 6])),
            false,
        );
        assert!(moved.affects(&cached));
        let failed = change(
            neigh(3, [198, 18, 1, 1], NeighbourState::Failed, None),
            false,
        );
        assert!(failed.affects(&cached));
        let deleted = change(
            neigh(3, [198, 18, 1, 1], NeighbourState::Stale, Some(gw_mac.0)),
            true,
        );
        assert_eq!(deleted.mac, None);
        assert!(deleted.affects(&cached));

        // An on-link destination is its own next hop; learning its MAC
        // replaces a cached "unknown".
        let onlink = entry(None, None);
        let learned = change(
            neigh(3, [198, 18, 5, 5], NeighbourState::Reachable, Some([7; 6])),
            false,
        );
        assert!(learned.affects(&onlink));
        let incomplete = change(
            neigh(3, [198, 18, 5, 5], NeighbourState::Incomplete, None),
            false,
        );
        assert!(!incomplete.affects(&onlink));

        // Errors do not depend on neighbours.
        let error = Entry {
            result: Err(RouteError::NoRoute("198.18.5.5".parse().unwrap())),
        };
        assert!(!learned.affects(&error));
    }
}
