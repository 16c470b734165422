//! Facts about network interfaces the capture needs, from getifaddrs(3) and
//! if_nametoindex(3) through nix. Both answer for the calling thread's own
//! network namespace (unlike /sys/class/net, which shows the namespace sysfs
//! was mounted in): that matters for threads that setns().

use std::io;

use nix::ifaddrs::getifaddrs;
use nix::net::if_::{InterfaceFlags, if_indextoname, if_nametoindex};

/// ARPHRD types whose frames start at the IP header: ARPHRD_NONE (tun),
/// ARPHRD_RAWIP, IP-in-IP, SIT, GRE, and ARPHRD_NONE's wireguard cousin.
const NO_L2_HEADER: [u16; 6] = [0xfffe, 519, 768, 776, 778, 823];
/// Ethernet, and loopback (which carries a zeroed Ethernet header).
const ETHERNET_HEADER_LEN: u32 = 14;

/// Bytes in front of the IP header for frames on `ifname`, from its ARPHRD type.
pub fn l2_header_len(ifname: &str) -> io::Result<u32> {
    let hatype = getifaddrs()?
        .filter(|a| a.interface_name == ifname)
        .find_map(|a| {
            a.address?
                .as_link_addr()
                .map(nix::sys::socket::LinkAddr::hatype)
        })
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("no interface {ifname:?}"))
        })?;
    Ok(if NO_L2_HEADER.contains(&hatype) {
        0
    } else {
        ETHERNET_HEADER_LEN
    })
}

/// The kernel's index of `ifname`.
pub fn ifindex(ifname: &str) -> io::Result<u32> {
    if ifname.is_empty() || ifname.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid interface name {ifname:?}"),
        ));
    }
    Ok(if_nametoindex(ifname)?)
}

/// The name of interface `ifindex`, if it exists.
pub fn ifname(ifindex: u32) -> Option<String> {
    // nix 0.31 reports an unknown index as Ok(""): its error check looks
    // for -1 where if_indextoname(3) returns NULL.
    let name = if_indextoname(ifindex).ok()?;
    (!name.is_empty()).then(|| name.to_string_lossy().into_owned())
}

/// Names of the interfaces that are administratively up, loopback excepted.
pub fn up_interfaces() -> Vec<String> {
    let Ok(addrs) = getifaddrs() else {
        return Vec::new();
    };
    let mut up: Vec<String> = addrs
        .filter(|a| a.flags.contains(InterfaceFlags::IFF_UP) && a.interface_name != "lo")
        .map(|a| a.interface_name)
        .collect();
    up.sort();
    up.dedup();
    up
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_known() {
        let idx = ifindex("lo").expect("lo exists");
        assert_eq!(ifname(idx).as_deref(), Some("lo"));
        assert_eq!(l2_header_len("lo").unwrap(), 14);
    }

    #[test]
    fn unknown_interface_is_an_error() {
        assert!(ifindex("no-such-if0").is_err());
        assert!(ifname(u32::MAX).is_none());
        assert!(l2_header_len("no-such-if0").is_err());
        assert!(l2_header_len("").is_err());
        assert!(l2_header_len("much-too-long-interface-name").is_err());
        assert!(!up_interfaces().contains(&"lo".to_string()));
    }
}
