//! Masquerading router.

use std::net::SocketAddr;

use traceroute_lab::{Family, Lab, Proto, named};

use crate::common::{tcp_connect, traceroute, udp_roundtrip};

#[test]
fn dst_sees_the_nat_address() {
    let lab = Lab::up(&named::nat()).unwrap();
    for family in [Family::V4, Family::V6] {
        let nat_out = lab.addr("nat", "r2", family).unwrap();
        let src = lab.primary("src", family).unwrap();
        let dst = lab.primary("dst", family).unwrap();
        let line = tcp_connect(&lab, "src", SocketAddr::new(dst, 80)).unwrap();
        let seen: SocketAddr = line.parse().unwrap();
        assert_eq!(
            seen.ip(),
            nat_out,
            "{family}: dst must see the NAT's outside address, not {src}"
        );
        let echoed = udp_roundtrip(&lab, "src", SocketAddr::new(dst, 7)).unwrap();
        assert_eq!(echoed, b"traceroute-lab");
    }
    let tcp_peers = lab.peers("dst", Proto::Tcp, 80).unwrap();
    let udp_peers = lab.peers("dst", Proto::Udp, 7).unwrap();
    for peers in [&tcp_peers, &udp_peers] {
        let ips: Vec<_> = peers.iter().map(std::net::SocketAddr::ip).collect();
        assert_eq!(
            ips,
            [
                lab.addr("nat", "r2", Family::V4).unwrap(),
                lab.addr("nat", "r2", Family::V6).unwrap()
            ]
        );
    }
}

#[test]
fn inside_is_private_and_traceroute_crosses_the_nat() {
    let lab = Lab::up(&named::nat()).unwrap();
    let src = lab.primary_v4("src").unwrap();
    assert_eq!(src.octets()[..2], [198, 19]);
    let dst = lab.primary("dst", Family::V4).unwrap();
    let hops = traceroute(&lab, "src", &["-n", "-q1", "-w1", &dst.to_string()]);
    let mut expected = lab.expected_hops("src", "dst", Family::V4).unwrap();
    expected.push(Some(dst));
    assert_eq!(hops, expected);
    // No route back in from outside.
    let out = lab
        .exec(
            "dst",
            "ping",
            ["-n", "-c", "1", "-W", "1", &src.to_string()],
        )
        .unwrap();
    assert!(!out.status.success());
}
