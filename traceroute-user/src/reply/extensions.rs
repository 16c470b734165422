//! ICMP extension objects after the quoted datagram (RFC 4884): MPLS label
//! stacks (RFC 4950) and interface information (RFC 5837). Routers write
//! them; nothing in them is trusted: a malformed object ends the walk, an
//! object that does not add up is skipped, and names are cleaned of
//! control characters before they reach a terminal.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::path::{InterfaceInfo, InterfaceRole, MplsLabel};

/// RFC 4884: where extensions start when a router does not fill in the length
/// field (pre-RFC 4884 behaviour, still common); a length below it is none.
pub const COMPAT_OFFSET: usize = 128;
/// RFC 4884's extension structure version.
const VERSION: u8 = 2;
/// RFC 4950: MPLS label stack, incoming stack.
const CLASS_MPLS: u8 = 1;
/// RFC 5837: interface information.
const CLASS_INTERFACE: u8 = 2;
/// RFC 5837: the name sub-object's longest length, its length octet included.
const NAME_MAX: usize = 64;

/// What the extension structure of an ICMP error carried.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extensions {
    /// MPLS label stack, outermost first.
    pub mpls_labels: Vec<MplsLabel>,
    /// Interfaces the router described, in the order it gave them.
    pub interfaces: Vec<InterfaceInfo>,
}

/// The extensions of an ICMP error whose body (after the 8-byte ICMP header)
/// is `body`, the quoted datagram being `original_len` bytes long (0 when the
/// router did not say: then extensions, if any, start at 128).
pub fn extensions(body: &[u8], original_len: usize) -> Extensions {
    let start = if original_len > 0 {
        original_len
    } else {
        COMPAT_OFFSET
    };
    let mut out = Extensions::default();
    // Extension header: version in the high nibble, reserved, checksum.
    let Some(ext) = body.get(start..) else {
        return out;
    };
    if ext.len() < 4 || ext[0] >> 4 != VERSION {
        return out;
    }
    let mut objects = &ext[4..];
    // Each object: length (with its 4-byte header), class-num, c-type.
    while objects.len() >= 4 {
        let len = usize::from(u16::from_be_bytes([objects[0], objects[1]]));
        if len < 4 || len > objects.len() {
            break;
        }
        let (class, c_type, payload) = (objects[2], objects[3], &objects[4..len]);
        match (class, c_type) {
            (CLASS_MPLS, 1) => out.mpls_labels.extend(payload.chunks_exact(4).map(|e| {
                let v = u32::from_be_bytes([e[0], e[1], e[2], e[3]]);
                MplsLabel {
                    label: v >> 12,
                    exp: ((v >> 9) & 0x7) as u8,
                    bottom_of_stack: (v >> 8) & 1 == 1,
                    ttl: v as u8,
                }
            })),
            (CLASS_INTERFACE, c_type) => out.interfaces.extend(interface(c_type, payload)),
            _ => {}
        }
        objects = &objects[len..];
    }
    out
}

/// One interface information object (RFC 5837 §4.1): the C-Type's two high
/// bits are the interface's role, its four low bits say which of ifIndex,
/// address, name and MTU follow, in that order. `None` when the object does
/// not hold exactly what its C-Type announces.
fn interface(c_type: u8, payload: &[u8]) -> Option<InterfaceInfo> {
    let role = match c_type >> 6 {
        0 => InterfaceRole::Incoming,
        1 => InterfaceRole::IncomingSubIp,
        2 => InterfaceRole::Outgoing,
        _ => InterfaceRole::NextHop,
    };
    let mut rest = payload;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, tail) = (rest.get(..n)?, rest.get(n..)?);
        rest = tail;
        Some(head)
    };
    let ifindex = if c_type & 0x08 != 0 {
        Some(be32(take(4)?))
    } else {
        None
    };
    let address = if c_type & 0x04 != 0 {
        let header = take(4)?;
        Some(match u16::from_be_bytes([header[0], header[1]]) {
            1 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(take(4)?).ok()?)),
            2 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(take(16)?).ok()?)),
            _ => return None,
        })
    } else {
        None
    };
    let name = if c_type & 0x02 != 0 {
        let len = usize::from(*take(1)?.first()?);
        if !(4..=NAME_MAX).contains(&len) || len % 4 != 0 {
            return None;
        }
        Some(clean_name(take(len - 1)?)).filter(|n| !n.is_empty())
    } else {
        None
    };
    let mtu = if c_type & 0x01 != 0 {
        Some(be32(take(4)?))
    } else {
        None
    };
    rest.is_empty().then_some(InterfaceInfo {
        role,
        ifindex,
        address,
        name,
        mtu,
    })
}

/// A router's interface name as text: NUL padding dropped, invalid UTF-8 and
/// control characters (which a terminal would obey) replaced.
fn clean_name(bytes: &[u8]) -> String {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    String::from_utf8_lossy(&bytes[..end])
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An extension structure holding `objects` (class, c-type, payload).
    fn structure(objects: &[(u8, u8, Vec<u8>)]) -> Vec<u8> {
        let mut out = vec![VERSION << 4, 0, 0, 0];
        for (class, c_type, payload) in objects {
            out.extend(((payload.len() + 4) as u16).to_be_bytes());
            out.extend([*class, *c_type]);
            out.extend(payload);
        }
        out
    }

    /// A body with a 128-byte quote and `ext` after it.
    fn body(ext: &[u8]) -> Vec<u8> {
        let mut b = vec![0x45; 128];
        b.extend(ext);
        b
    }

    fn name_sub_object(name: &[u8]) -> Vec<u8> {
        let len = (1 + name.len()).div_ceil(4) * 4;
        let mut out = vec![len as u8];
        out.extend(name);
        out.resize(len, 0);
        out
    }

    #[test]
    fn an_incoming_interface_with_everything_is_read_in_order() {
        let mut payload = 12u32.to_be_bytes().to_vec();
        payload.extend([0, 1, 0, 0, 198, 18, 1, 1]);
        payload.extend(name_sub_object(b"ge-0/0/1.100"));
        payload.extend(1500u32.to_be_bytes());
        let ext = extensions(&body(&structure(&[(2, 0b0000_1111, payload)])), 128);
        assert_eq!(
            ext.interfaces,
            vec![InterfaceInfo {
                role: InterfaceRole::Incoming,
                ifindex: Some(12),
                address: Some("198.18.1.1".parse().unwrap()),
                name: Some("ge-0/0/1.100".into()),
                mtu: Some(1500),
            }]
        );
    }

    #[test]
    fn roles_v6_addresses_and_partial_objects_beside_mpls() {
        let mut v6 = vec![0, 2, 0, 0];
        v6.extend("2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        let mpls = 0x0001_41ffu32.to_be_bytes().to_vec(); // label 20, S, TTL 255
        let ext = extensions(
            &body(&structure(&[
                (1, 1, mpls),
                (2, 0b1000_0100, v6),
                (2, 0b1100_0001, 9000u32.to_be_bytes().to_vec()),
            ])),
            0,
        );
        assert_eq!(ext.mpls_labels.len(), 1);
        assert_eq!(ext.mpls_labels[0].label, 20);
        assert_eq!(
            ext.interfaces,
            vec![
                InterfaceInfo {
                    role: InterfaceRole::Outgoing,
                    ifindex: None,
                    address: Some("2001:db8::7".parse().unwrap()),
                    name: None,
                    mtu: None,
                },
                InterfaceInfo {
                    role: InterfaceRole::NextHop,
                    ifindex: None,
                    address: None,
                    name: None,
                    mtu: Some(9000),
                },
            ]
        );
    }

    #[test]
    fn hostile_objects_are_skipped_or_end_the_walk_and_names_are_cleaned() {
        // Announces an address but holds an unknown AFI; announces a name
        // whose length is not a multiple of 4; holds more than announced.
        let bad_afi = vec![0, 9, 0, 0, 1, 2, 3, 4];
        let bad_len = vec![5, b'a', b'b', b'c', b'd', 0, 0, 0];
        let extra = [7u32.to_be_bytes(), 8u32.to_be_bytes()].concat();
        let escape = name_sub_object(b"eth0\x1b[2J\xff");
        let ext = extensions(
            &body(&structure(&[
                (2, 0b0000_0100, bad_afi),
                (2, 0b0000_0010, bad_len),
                (2, 0b0000_1000, extra),
                (2, 0b0000_0010, escape),
            ])),
            128,
        );
        assert_eq!(ext.interfaces.len(), 1, "{:?}", ext.interfaces);
        assert_eq!(
            ext.interfaces[0].name.as_deref(),
            Some("eth0\u{fffd}[2J\u{fffd}")
        );
        // A length running past the capture ends the walk; a wrong version
        // or a body too short has no extensions.
        let mut cut = structure(&[(2, 0b0000_1000, 1u32.to_be_bytes().to_vec())]);
        cut[5] = 200;
        assert_eq!(extensions(&body(&cut), 128), Extensions::default());
        let mut old = structure(&[(1, 1, vec![0, 0, 0x11, 0x01])]);
        old[0] = 1 << 4;
        assert_eq!(extensions(&body(&old), 128), Extensions::default());
        assert_eq!(extensions(&[0; 40], 0), Extensions::default());
    }
}
