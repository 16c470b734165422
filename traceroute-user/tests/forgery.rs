//! Off-path forgery: a blind sweep of forged replies (every source port of
//! the agent's ephemeral range for UDP, every echo id for ICMP) during a
//! trace plants no hop, because every probe carries the trace's secret. Its
//! own test binary: the sweep floods the CPU, and must not run beside the
//! timing-sensitive overload test. Needs root.

mod common;
mod service_support;

use std::time::Duration;

use common::agent::assert_valid;
use service_support::Agent;
use traceroute_lab::{Family, Lab};

/// dst drops UDP and echo requests: every probe past r4 waits its whole
/// timeout, the window a blind attacker needs.
fn black_hole_chain() -> traceroute_lab::Topology {
    use traceroute_lab::{Hook, Proto};
    traceroute_lab::named::chain()
        .drop_proto("dst", Proto::Udp, Hook::Input)
        .drop_proto("dst", Proto::Icmp, Hook::Input)
}

/// The reply an off-path sender would forge for probe TTL 5, attempt 0, if
/// the probe identity were predictable (`attempt << 8 | ttl` in the UDP
/// checksum / echo sequence and the IPv4 ID, as before per-trace secrets;
/// the best blind guess of the token is as good as 0): for UDP a port
/// unreachable from the destination quoting the 8 bytes routers must quote
/// of a probe from source port `guess`, for ICMP an echo reply with
/// identifier `guess`. Either would mark the destination reached at TTL 5.
fn forged_reply(protocol: &str, src: [u8; 4], dst: [u8; 4], guess: u16) -> Vec<u8> {
    use etherparse::{IpNumber, Ipv4Header, PacketBuilder};
    const PREDICTABLE_ID: u16 = 5;
    let mut payload = *b"..\0\0\0\0paris!";
    payload[..2].copy_from_slice(&(!PREDICTABLE_ID).to_be_bytes());
    let mut out = Vec::new();
    if protocol == "icmp" {
        PacketBuilder::ipv4(dst, src, 64)
            .icmpv4_echo_reply(guess, PREDICTABLE_ID)
            .write(&mut out, &payload)
            .unwrap();
        return out;
    }
    let mut quoted_ip = Ipv4Header::new(20, 1, IpNumber::UDP, src, dst).unwrap();
    quoted_ip.identification = PREDICTABLE_ID;
    quoted_ip.header_checksum = quoted_ip.calc_header_checksum();
    let mut quote = quoted_ip.to_bytes().to_vec();
    quote.extend_from_slice(&guess.to_be_bytes());
    quote.extend_from_slice(&33434u16.to_be_bytes());
    quote.extend_from_slice(&20u16.to_be_bytes());
    quote.extend_from_slice(&PREDICTABLE_ID.to_be_bytes());
    PacketBuilder::ipv4(dst, src, 64)
        .icmpv4_raw(3, 3, [0; 4])
        .write(&mut out, &quote)
        .unwrap();
    out
}

#[test]
fn a_blind_sweep_of_forged_replies_plants_no_hop() {
    let lab = Lab::up(&black_hole_chain()).unwrap();
    let mut agent = Agent::start_with(&lab, "src", Some("capture = \"ebpf\"\n"), &[]);
    let (std::net::IpAddr::V4(src), std::net::IpAddr::V4(dst)) = (
        lab.primary("src", Family::V4).unwrap(),
        lab.primary("dst", Family::V4).unwrap(),
    ) else {
        unreachable!("IPv4 asked")
    };
    // The ports an attacker must sweep: the agent's ephemeral range.
    let range = lab
        .in_netns("src", || {
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap()
        })
        .unwrap();
    let mut bounds = range.split_whitespace().map(|v| v.parse::<u16>().unwrap());
    let ports = bounds.next().unwrap()..=bounds.next().unwrap();
    for (protocol, guesses) in [("udp", ports), ("icmp", 0..=u16::MAX)] {
        let query = service_support::client_query(33434, 7, 1_500_000_000, protocol, 1);
        let socket = agent.socket.clone();
        let trace = std::thread::spawn(move || {
            service_support::try_get(&socket, &format!("/traceroute/{dst}?{query}")).unwrap()
        });
        std::thread::sleep(Duration::from_millis(200));
        // Sweep again and again while the trace waits on TTLs 5 to 7.
        let mut sweeps = 0;
        while !trace.is_finished() {
            let sent = lab
                .in_netns("dst", {
                    let guesses = guesses.clone();
                    move || {
                        let sender = traceroute_agent::trace::sender::ProbeSender::new();
                        guesses
                            .filter(|&g| {
                                let packet = forged_reply(protocol, src.octets(), dst.octets(), g);
                                sender.send(&packet, src.into(), None).is_ok()
                            })
                            .count()
                    }
                })
                .unwrap();
            assert!(sent > 28_000, "the sweep left: {sent} packets");
            sweeps += 1;
        }
        let reply = trace.join().unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        let record = reply.json();
        assert_valid(&record);
        let run = &record["traceroute"]["runs"][0];
        let hops = service_support::hop_addrs(&record, 0);
        assert_eq!(
            run["destination_reached"], false,
            "{protocol}: a forged reply was taken: {hops:?}"
        );
        assert!(
            !hops.contains(&dst.to_string()),
            "{protocol}: forged destination hop: {hops:?}"
        );
        // The guess with our port (or echo id) reached the trace and was
        // refused for its secret, once per sweep made in the trace's time.
        let rejected = agent.metric(
            "traceroute_agent_replies_rejected_total",
            &format!(
                "protocol=\"{}\",reason=\"wrong_secret\"",
                protocol.to_uppercase()
            ),
        );
        assert!(
            sweeps >= 1 && rejected >= 1.0,
            "{protocol}: {sweeps} sweeps, {rejected} refused for a wrong secret"
        );
    }
    assert!(agent.stop().success());
}
