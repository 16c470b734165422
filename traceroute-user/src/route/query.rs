//! Uncached lookups: one `RTM_GETROUTE` for the destination, then the link,
//! (if needed) the interface addresses, and the next hop's neighbour entry.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressScope,
};
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteType, RouteVia,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{Error as NlError, Handle};

use rtnetlink::packet_route::address::AddressMessage;

use super::{Egress, Interface, MacAddr, Route, RouteError};

/// The parts of the kernel's `RTM_NEWROUTE` answer we use.
#[derive(Debug)]
struct Decision {
    kind: RouteType,
    oif: u32,
    prefsrc: Option<IpAddr>,
    gateway: Option<IpAddr>,
}

pub(super) async fn resolve(
    handle: Handle,
    destination: IpAddr,
    egress: &Egress,
    queries: &AtomicU64,
) -> Result<Route, RouteError> {
    if let Some(source) = egress.source
        && source.is_ipv4() != destination.is_ipv4()
    {
        return Err(RouteError::SourceFamily {
            pinned: source,
            destination,
        });
    }
    let oif = match &egress.interface {
        Some(name) => Some(link_index(&handle, name, queries).await?),
        None => None,
    };
    // The kernel would only answer "network unreachable" for a source that
    // is not ours; say what is wrong instead.
    let source_index = match egress.source {
        Some(source) => Some(
            interface_of(&handle, source, queries)
                .await?
                .ok_or(RouteError::NotLocal(source))?,
        ),
        None => None,
    };
    let decision = get_route(&handle, destination, egress.source, oif, queries)
        .await
        .map_err(|e| match (e, &egress.interface) {
            (RouteError::NoRoute(destination), Some(interface)) => RouteError::NoRouteThrough {
                destination,
                interface: interface.clone(),
                instead: None,
            },
            (e, _) => e,
        })?;
    let interface = get_link(&handle, decision.oif, queries).await?;
    if let (Some(pinned), Some(name)) = (oif, &egress.interface)
        && pinned != decision.oif
    {
        return Err(RouteError::NoRouteThrough {
            destination,
            interface: name.clone(),
            instead: Some(interface.name),
        });
    }
    let source_interface = match source_index {
        Some(index) if index != decision.oif => Some(get_link(&handle, index, queries).await?.name),
        _ => None,
    };
    let source = match egress.source.or(decision.prefsrc) {
        Some(src) => src,
        None => first_global_address(&handle, decision.oif, destination, queries)
            .await?
            .ok_or_else(|| RouteError::NoSourceAddress {
                destination,
                interface: interface.name.clone(),
            })?,
    };
    // Only unicast next hops are resolved through ARP/ND; local, broadcast
    // and multicast destinations have no neighbour entry worth asking for.
    let gateway_mac = if decision.kind == RouteType::Unicast && interface.mac.is_some() {
        let next_hop = decision.gateway.unwrap_or(destination);
        get_neighbour_mac(&handle, decision.oif, next_hop, queries).await?
    } else {
        None
    };
    Ok(Route {
        destination,
        source,
        gateway: decision.gateway,
        gateway_mac,
        interface,
        source_interface,
    })
}

fn family_of(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn errno(err: &NlError) -> Option<i32> {
    match err {
        NlError::NetlinkError(msg) => msg.code.map(|c| -c.get()),
        _ => None,
    }
}

fn netlink(what: &str, err: NlError) -> RouteError {
    match errno(&err) {
        Some(code) => RouteError::Netlink(format!(
            "{what}: {}",
            std::io::Error::from_raw_os_error(code)
        )),
        None => RouteError::Netlink(format!("{what}: {err}")),
    }
}

fn route_address(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

/// Maps the kernel's answer to a route request into our error vocabulary.
/// The errno is how output route lookups report rejecting route types
/// (fib_props in net/ipv4/fib_semantics.c; IPv6 matches).
fn route_errno(destination: IpAddr, code: i32) -> Option<RouteError> {
    match code {
        libc::ENETUNREACH => Some(RouteError::NoRoute(destination)),
        libc::EHOSTUNREACH => Some(RouteError::HostUnreachable(destination)),
        // blackhole, prohibit
        libc::EINVAL | libc::EACCES => Some(RouteError::NoRoute(destination)),
        _ => None,
    }
}

fn decision_from(destination: IpAddr, msg: &RouteMessage) -> Result<Decision, RouteError> {
    match msg.header.kind {
        RouteType::Unreachable => return Err(RouteError::HostUnreachable(destination)),
        RouteType::Broadcast => return Err(RouteError::Broadcast(destination)),
        RouteType::BlackHole | RouteType::Prohibit | RouteType::Throw => {
            return Err(RouteError::NoRoute(destination));
        }
        _ => {}
    }
    let mut oif = None;
    let mut prefsrc = None;
    let mut gateway = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::PrefSource(a) => prefsrc = route_address(a),
            RouteAttribute::Gateway(a) => gateway = route_address(a),
            // IPv4 route with an IPv6 next hop (RFC 5549).
            RouteAttribute::Via(RouteVia::Inet6(a)) => gateway = Some(IpAddr::V6(*a)),
            RouteAttribute::Via(RouteVia::Inet(a)) => gateway = Some(IpAddr::V4(*a)),
            _ => {}
        }
    }
    let oif = oif.ok_or_else(|| {
        RouteError::Unexpected(format!("route to {destination} has no output interface"))
    })?;
    Ok(Decision {
        kind: msg.header.kind,
        oif,
        prefsrc,
        gateway,
    })
}

fn host_length(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

async fn get_route(
    handle: &Handle,
    destination: IpAddr,
    source: Option<IpAddr>,
    oif: Option<u32>,
    queries: &AtomicU64,
) -> Result<Decision, RouteError> {
    // What `ip route get ADDR [from SOURCE] [oif DEV]` sends: a host-length
    // destination (and source), no input interface, so the kernel performs
    // a real output route lookup.
    let mut msg = RouteMessage::default();
    msg.header.address_family = family_of(destination);
    msg.header.destination_prefix_length = host_length(destination);
    msg.attributes
        .push(RouteAttribute::Destination(RouteAddress::from(destination)));
    if let Some(source) = source {
        msg.header.source_prefix_length = host_length(source);
        msg.attributes
            .push(RouteAttribute::Source(RouteAddress::from(source)));
    }
    if let Some(oif) = oif {
        msg.attributes.push(RouteAttribute::Oif(oif));
    }
    queries.fetch_add(1, Ordering::Relaxed);
    let mut answers = handle.route().get(msg).execute();
    match answers.try_next().await {
        Ok(Some(reply)) => {
            // Drain so the request is complete before we move on.
            while let Ok(Some(_)) = answers.try_next().await {}
            decision_from(destination, &reply)
        }
        Ok(None) => Err(RouteError::Unexpected(format!(
            "no answer to route request for {destination}"
        ))),
        Err(err) => Err(errno(&err)
            .and_then(|code| route_errno(destination, code))
            .unwrap_or_else(|| netlink("route request", err))),
    }
}

async fn get_link(
    handle: &Handle,
    index: u32,
    queries: &AtomicU64,
) -> Result<Interface, RouteError> {
    queries.fetch_add(1, Ordering::Relaxed);
    let link = handle
        .link()
        .get()
        .match_index(index)
        .execute()
        .try_collect::<Vec<_>>()
        .await
        .map_err(|e| netlink("link request", e))?
        .into_iter()
        .next()
        .ok_or_else(|| RouteError::Unexpected(format!("interface {index} not found")))?;
    let mut interface = Interface {
        index,
        name: index.to_string(),
        mac: None,
        mtu: 0,
    };
    for attr in link.attributes {
        match attr {
            LinkAttribute::IfName(name) => interface.name = name,
            LinkAttribute::Address(addr) => interface.mac = MacAddr::from_slice(&addr),
            LinkAttribute::Mtu(mtu) => interface.mtu = mtu,
            _ => {}
        }
    }
    Ok(interface)
}

/// The index of the interface called `name`.
async fn link_index(handle: &Handle, name: &str, queries: &AtomicU64) -> Result<u32, RouteError> {
    queries.fetch_add(1, Ordering::Relaxed);
    let mut answers = handle.link().get().match_name(name.to_string()).execute();
    match answers.try_next().await {
        Ok(Some(link)) => {
            while let Ok(Some(_)) = answers.try_next().await {}
            Ok(link.header.index)
        }
        Ok(None) => Err(RouteError::NoSuchInterface(name.to_string())),
        Err(err) if errno(&err) == Some(libc::ENODEV) => {
            Err(RouteError::NoSuchInterface(name.to_string()))
        }
        Err(err) => Err(netlink("link request", err)),
    }
}

/// The interface holding `ip`, if it is one of this host's addresses.
async fn interface_of(
    handle: &Handle,
    ip: IpAddr,
    queries: &AtomicU64,
) -> Result<Option<u32>, RouteError> {
    Ok(addresses(handle, ip, None, queries)
        .await?
        .iter()
        .find(|msg| usable_address(msg) == Some(ip))
        .map(|msg| msg.header.index))
}

/// The host's addresses of `ip`'s family (on interface `link` only, if set).
async fn addresses(
    handle: &Handle,
    ip: IpAddr,
    link: Option<u32>,
    queries: &AtomicU64,
) -> Result<Vec<AddressMessage>, RouteError> {
    let mut request = handle.address().get();
    if let Some(index) = link {
        request = request.set_link_index_filter(index);
    }
    request.message_mut().header.family = family_of(ip);
    queries.fetch_add(1, Ordering::Relaxed);
    request
        .execute()
        .try_collect()
        .await
        .map_err(|e| netlink("address request", e))
}

/// The local address an `RTM_NEWADDR` message describes, unless it cannot
/// be used yet (tentative) or at all (failed duplicate detection).
fn usable_address(msg: &AddressMessage) -> Option<IpAddr> {
    let unusable_flags = AddressFlags::Tentative | AddressFlags::Dadfailed;
    let unusable_header = AddressHeaderFlags::Tentative | AddressHeaderFlags::Dadfailed;
    if msg.header.flags.intersects(unusable_header) {
        return None;
    }
    let mut local = None;
    let mut address = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(a) => local = Some(*a),
            AddressAttribute::Address(a) => address = Some(*a),
            AddressAttribute::Flags(f) if f.intersects(unusable_flags) => return None,
            _ => {}
        }
    }
    // IFA_LOCAL is our end of a point-to-point link; IFA_ADDRESS the peer.
    local.or(address)
}

/// The kernel normally gives a prefsrc with every output route; this is the
/// fallback for answers without one.
async fn first_global_address(
    handle: &Handle,
    index: u32,
    destination: IpAddr,
    queries: &AtomicU64,
) -> Result<Option<IpAddr>, RouteError> {
    for msg in addresses(handle, destination, Some(index), queries).await? {
        if msg.header.scope != AddressScope::Universe {
            continue;
        }
        if let Some(ip) = usable_address(&msg)
            && ip.is_ipv4() == destination.is_ipv4()
        {
            return Ok(Some(ip));
        }
    }
    Ok(None)
}

/// The MAC a neighbour entry vouches for: only entries that are (or were
/// recently) resolved; INCOMPLETE/FAILED carry no usable address.
pub(super) fn usable_mac(
    state: NeighbourState,
    attributes: &[NeighbourAttribute],
) -> Option<MacAddr> {
    match state {
        NeighbourState::Reachable
        | NeighbourState::Stale
        | NeighbourState::Delay
        | NeighbourState::Probe
        | NeighbourState::Permanent => attributes.iter().find_map(|a| match a {
            NeighbourAttribute::LinkLayerAddress(l) => MacAddr::from_slice(l),
            _ => None,
        }),
        _ => None,
    }
}

pub(super) fn neighbour_address(attributes: &[NeighbourAttribute]) -> Option<IpAddr> {
    attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => Some(IpAddr::V4(*a)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
        _ => None,
    })
}

async fn get_neighbour_mac(
    handle: &Handle,
    index: u32,
    next_hop: IpAddr,
    queries: &AtomicU64,
) -> Result<Option<MacAddr>, RouteError> {
    // RTM_GETNEIGH for one entry (Linux >= 5.0), rather than a table dump.
    let mut msg = NeighbourMessage::default();
    msg.header.family = family_of(next_hop);
    msg.header.ifindex = index;
    msg.attributes
        .push(NeighbourAttribute::Destination(match next_hop {
            IpAddr::V4(a) => NeighbourAddress::Inet(a),
            IpAddr::V6(a) => NeighbourAddress::Inet6(a),
        }));
    let mut request = NetlinkMessage::from(RouteNetlinkMessage::GetNeighbour(msg));
    request.header.flags = NLM_F_REQUEST;
    queries.fetch_add(1, Ordering::Relaxed);
    let mut answers = handle
        .clone()
        .request(request)
        .map_err(|e| netlink("neighbour request", e))?;
    let mut found = None;
    let mut unsupported = false;
    while let Some(answer) = answers.next().await {
        match answer.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(n)) => {
                found = usable_mac(n.header.state, &n.attributes);
            }
            NetlinkPayload::Error(e) => match e.code.map(|c| -c.get()) {
                None | Some(libc::ENOENT) => {}
                Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) => unsupported = true,
                Some(code) => {
                    return Err(RouteError::Netlink(format!(
                        "neighbour request: {}",
                        std::io::Error::from_raw_os_error(code)
                    )));
                }
            },
            _ => {}
        }
    }
    if unsupported {
        return dump_neighbour_mac(handle, index, next_hop, queries).await;
    }
    Ok(found)
}

/// Fallback for kernels without single-entry neighbour requests.
async fn dump_neighbour_mac(
    handle: &Handle,
    index: u32,
    next_hop: IpAddr,
    queries: &AtomicU64,
) -> Result<Option<MacAddr>, RouteError> {
    let mut msg = NeighbourMessage::default();
    msg.header.family = family_of(next_hop);
    let mut request = NetlinkMessage::from(RouteNetlinkMessage::GetNeighbour(msg));
    request.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    queries.fetch_add(1, Ordering::Relaxed);
    let mut answers = handle
        .clone()
        .request(request)
        .map_err(|e| netlink("neighbour dump", e))?;
    let mut found = None;
    while let Some(answer) = answers.next().await {
        if let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(n)) = answer.payload
            && n.header.ifindex == index
            && neighbour_address(&n.attributes) == Some(next_hop)
        {
            found = usable_mac(n.header.state, &n.attributes);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use std::net::Ipv4Addr;

    fn dst() -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 18, 9, 9))
    }

    #[test]
    fn errno_mapping() {
        assert_eq!(
            route_errno(dst(), libc::ENETUNREACH),
            Some(RouteError::NoRoute(dst()))
        );
        assert_eq!(
            route_errno(dst(), libc::EHOSTUNREACH),
            Some(RouteError::HostUnreachable(dst()))
        );
        assert_eq!(
            route_errno(dst(), libc::EINVAL),
            Some(RouteError::NoRoute(dst()))
        );
        assert_eq!(
            route_errno(dst(), libc::EACCES),
            Some(RouteError::NoRoute(dst()))
        );
        assert_eq!(route_errno(dst(), libc::ENOMEM), None);
    }

    #[test]
    fn decision_parsing() {
        let mut msg = RouteMessage::default();
        msg.header.kind = RouteType::Unicast;
        msg.attributes = vec![
            RouteAttribute::Oif(7),
            RouteAttribute::PrefSource(RouteAddress::Inet(Ipv4Addr::new(198, 18, 1, 2))),
            RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(198, 18, 1, 1))),
        ];
        let d = decision_from(dst(), &msg).unwrap();
        assert_eq!(d.oif, 7);
        assert_eq!(d.prefsrc, Some("198.18.1.2".parse().unwrap()));
        assert_eq!(d.gateway, Some("198.18.1.1".parse().unwrap()));

        msg.attributes
            .retain(|a| !matches!(a, RouteAttribute::Oif(_)));
        assert!(matches!(
            decision_from(dst(), &msg),
            Err(RouteError::Unexpected(_))
        ));

        for (kind, code) in [
            (RouteType::Broadcast, ErrorCode::InvalidRequest),
            (RouteType::Unreachable, ErrorCode::Hostunreach),
            (RouteType::BlackHole, ErrorCode::Netunreach),
            (RouteType::Prohibit, ErrorCode::Netunreach),
        ] {
            msg.header.kind = kind;
            assert_eq!(decision_from(dst(), &msg).unwrap_err().code(), code);
        }
    }

    #[test]
    fn neighbour_states() {
        let attrs = vec![NeighbourAttribute::LinkLayerAddress(vec![2, 0, 0, 0, 0, 9])];
        let mac = Some(MacAddr([2, 0, 0, 0, 0, 9]));
        assert_eq!(usable_mac(NeighbourState::Reachable, &attrs), mac);
        assert_eq!(usable_mac(NeighbourState::Stale, &attrs), mac);
        assert_eq!(usable_mac(NeighbourState::Permanent, &attrs), mac);
        assert_eq!(usable_mac(NeighbourState::Failed, &attrs), None);
        assert_eq!(usable_mac(NeighbourState::Incomplete, &attrs), None);
        assert_eq!(usable_mac(NeighbourState::Reachable, &[]), None);
    }
}
