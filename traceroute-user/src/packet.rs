//! Reading captured packets (bytes from the IP header on) with etherparse.

use std::net::IpAddr;

use etherparse::{LaxNetSlice, LaxSlicedPacket, TransportSlice};
use serde::Serialize;

/// The outer headers of a captured packet, for logs and the `capture` command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PacketSummary {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP protocol number of the transport (after IPv6 extension headers).
    pub protocol: u8,
    pub ttl: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
}

impl PacketSummary {
    /// Parses the outer IP header and, if present, the ICMP type/code. Truncated
    /// packets still parse as far as they go; `None` when not even the IP header does.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let packet = LaxSlicedPacket::from_ip(bytes).ok()?;
        let (src, dst, protocol, ttl) = match packet.net? {
            LaxNetSlice::Ipv4(v4) => {
                let h = v4.header();
                (
                    IpAddr::from(h.source_addr()),
                    IpAddr::from(h.destination_addr()),
                    h.protocol().0,
                    h.ttl(),
                )
            }
            LaxNetSlice::Ipv6(v6) => {
                let h = v6.header();
                (
                    IpAddr::from(h.source_addr()),
                    IpAddr::from(h.destination_addr()),
                    v6.payload().ip_number.0,
                    h.hop_limit(),
                )
            }
            LaxNetSlice::Arp(_) => return None,
        };
        let (icmp_type, icmp_code) = match &packet.transport {
            Some(TransportSlice::Icmpv4(icmp)) => (Some(icmp.type_u8()), Some(icmp.code_u8())),
            Some(TransportSlice::Icmpv6(icmp)) => (Some(icmp.type_u8()), Some(icmp.code_u8())),
            _ => (None, None),
        };
        Some(Self {
            src,
            dst,
            protocol,
            ttl,
            icmp_type,
            icmp_code,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn echo_request_v4() -> Vec<u8> {
        let builder =
            PacketBuilder::ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64).icmpv4_echo_request(7, 1);
        let payload = [0u8; 8];
        let mut out = Vec::new();
        builder.write(&mut out, &payload).unwrap();
        out
    }

    #[test]
    fn parses_icmpv4_echo() {
        let s = PacketSummary::parse(&echo_request_v4()).unwrap();
        assert_eq!(s.src, IpAddr::from([198, 18, 0, 1]));
        assert_eq!(s.dst, IpAddr::from([198, 18, 0, 2]));
        assert_eq!(s.protocol, 1);
        assert_eq!(s.ttl, 64);
        assert_eq!((s.icmp_type, s.icmp_code), (Some(8), Some(0)));
    }

    #[test]
    fn parses_icmpv6_echo() {
        let src: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst: std::net::Ipv6Addr = "2001:db8::2".parse().unwrap();
        let builder = PacketBuilder::ipv6(src.octets(), dst.octets(), 9).icmpv6_echo_request(1, 2);
        let mut out = Vec::new();
        builder.write(&mut out, &[1, 2, 3]).unwrap();
        let s = PacketSummary::parse(&out).unwrap();
        assert_eq!(s.src, IpAddr::V6(src));
        assert_eq!(s.protocol, 58);
        assert_eq!(s.ttl, 9);
        assert_eq!((s.icmp_type, s.icmp_code), (Some(128), Some(0)));
    }

    #[test]
    fn truncated_transport_still_gives_ip_header() {
        let full = echo_request_v4();
        let s = PacketSummary::parse(&full[..22]).unwrap();
        assert_eq!(s.protocol, 1);
        assert_eq!(s.icmp_type, None);
    }

    #[test]
    fn garbage_is_rejected() {
        assert_eq!(PacketSummary::parse(&[]), None);
        assert_eq!(PacketSummary::parse(&[0x45, 0, 0]), None);
        assert_eq!(PacketSummary::parse(&[0xff; 40]), None);
    }
}
