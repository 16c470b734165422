//! Facts about network interfaces the capture needs.

use std::io;

/// Bytes in front of the IP header for frames on `ifname`, from its ARPHRD type.
pub fn l2_header_len(ifname: &str) -> io::Result<u32> {
    let raw = std::fs::read_to_string(format!("/sys/class/net/{ifname}/type"))?;
    let arphrd: u32 = raw
        .trim()
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(match arphrd {
        // ARPHRD_NONE (tun), ARPHRD_RAWIP, IP-in-IP / GRE / SIT tunnels, wireguard
        65534 | 519 | 768 | 776 | 778 | 823 => 0,
        // ARPHRD_ETHER and loopback (which carries a zeroed Ethernet header)
        _ => 14,
    })
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
    const IFF_UP: u32 = 0x1;
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    let mut out: Vec<String> = dir
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name != "lo")
        .filter(|name| {
            std::fs::read_to_string(format!("/sys/class/net/{name}/flags"))
                .ok()
                .and_then(|f| u32::from_str_radix(f.trim().trim_start_matches("0x"), 16).ok())
                .is_some_and(|flags| flags & IFF_UP != 0)
        })
        .collect();
    out.sort();
    out
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
    }
}
