//! Facts about network interfaces the capture needs.

use std::io;

/// Bytes in front of the IP header for frames on `ifname`, from its ARPHRD type.
pub fn l2_header_len(ifname: &str) -> io::Result<u32> {
    let mut req = ifreq(ifname)?;
    ioctl(libc::SIOCGIFHWADDR, &mut req)?;
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
    let arphrd = unsafe { req.ifr_ifru.ifru_hwaddr.sa_family };
    Ok(match arphrd {
        // ARPHRD_NONE (tun), ARPHRD_RAWIP, IP-in-IP / GRE / SIT tunnels, wireguard
        0xfffe | 519 | 768 | 776 | 778 | 823 => 0,
        // ARPHRD_ETHER and loopback (which carries a zeroed Ethernet header)
        _ => 14,
    })
}

fn ifreq(ifname: &str) -> io::Result<libc::ifreq> {
    let bytes = ifname.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid interface name {ifname:?}"),
        ));
    }
    // SAFETY: all-zero is a valid ifreq.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Ok(req)
}

/// An interface ioctl on a throwaway socket. Unlike /sys/class/net, which shows
/// the namespace sysfs was mounted in, this answers for the caller's own network
/// namespace (which matters for threads that setns()).
fn ioctl(request: libc::c_ulong, req: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: plain socket/ioctl/close calls on a descriptor we own.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let rc = libc::ioctl(fd, request, req as *mut libc::ifreq);
        let err = io::Error::last_os_error();
        libc::close(fd);
        if rc < 0 { Err(err) } else { Ok(()) }
    }
}

/// The kernel's index of `ifname`.
pub fn ifindex(ifname: &str) -> io::Result<u32> {
    let name = std::ffi::CString::new(ifname)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        i => Ok(i),
    }
}

/// The name of interface `ifindex`, if it exists.
pub fn ifname(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buffer of IF_NAMESIZE bytes as required.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: if_indextoname wrote a NUL-terminated string into buf.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// Names of the interfaces that are administratively up, loopback excepted.
pub fn up_interfaces() -> Vec<String> {
    // SAFETY: if_nameindex returns a list terminated by a zero entry, freed below.
    let names: Vec<String> = unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut p = list;
        while (*p).if_index != 0 {
            out.push(
                std::ffi::CStr::from_ptr((*p).if_name)
                    .to_string_lossy()
                    .into_owned(),
            );
            p = p.add(1);
        }
        libc::if_freenameindex(list);
        out
    };
    let mut up: Vec<String> = names
        .into_iter()
        .filter(|name| name != "lo")
        .filter(|name| {
            let Ok(mut req) = ifreq(name) else {
                return false;
            };
            // SAFETY: SIOCGIFFLAGS fills the flags member of the union.
            ioctl(libc::SIOCGIFFLAGS, &mut req).is_ok()
                && unsafe { req.ifr_ifru.ifru_flags } & libc::IFF_UP as libc::c_short != 0
        })
        .collect();
    up.sort();
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
