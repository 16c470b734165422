//! Probes sent, counted where they leave: an nftables counter on the egress
//! hook (netdev family) of src's lab interface.
//!
//! Counted are IPv4/IPv6 packets to lab addresses (198.18.0.0/15,
//! 2001:db8::/32) that are probes: UDP, TCP SYN (not the RSTs src's kernel
//! answers SYN-ACKs with) and ICMP echo requests. ARP and neighbour
//! discovery are not IP packets to lab addresses (ND is ICMPv6, but not an
//! echo request), so they are not counted; neither is anything on loopback.
//! The egress hook sees packets from every kind of socket, raw and packet
//! sockets included, after routing — exactly what crossed the wire.

use std::io::Write;
use std::process::Stdio;

use anyhow::{Context, Result, bail};
use traceroute_lab::Lab;

const TABLE: &str = "xtask_bench";

/// An installed counter in one lab node.
pub struct ProbeCounter {
    node: String,
}

impl ProbeCounter {
    /// Installs the counter on `ifname` of `node`.
    pub fn install(lab: &Lab, node: &str, ifname: &str) -> Result<ProbeCounter> {
        let mut cmd = lab.command(node, "nft")?;
        cmd.args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("starting nft")?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(ruleset(ifname).as_bytes())?;
        drop(stdin);
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "nft: installing the probe counter in {node}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(ProbeCounter {
            node: node.to_string(),
        })
    }

    /// Packets counted so far.
    pub fn read(&self, lab: &Lab) -> Result<u64> {
        let out = lab.exec(
            &self.node,
            "nft",
            ["-j", "list", "counter", "netdev", TABLE, "probes"],
        )?;
        if !out.status.success() {
            bail!(
                "nft: reading the probe counter: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        packets(&String::from_utf8_lossy(&out.stdout))
    }
}

fn ruleset(ifname: &str) -> String {
    let probe = |m: &str| format!("    {m} counter name \"probes\"\n");
    let mut rules = String::new();
    for dst in ["ip daddr 198.18.0.0/15", "ip6 daddr 2001:db8::/32"] {
        rules += &probe(&format!("{dst} meta l4proto udp"));
        rules += &probe(&format!("{dst} tcp flags & (syn | ack) == syn"));
    }
    rules += &probe("ip daddr 198.18.0.0/15 icmp type echo-request");
    rules += &probe("ip6 daddr 2001:db8::/32 icmpv6 type echo-request");
    format!(
        "table netdev {TABLE} {{\n  counter probes {{ }}\n  chain egress {{\n    \
         type filter hook egress device \"{ifname}\" priority 0; policy accept;\n\
         {rules}  }}\n}}\n"
    )
}

/// The packet count in `nft -j list counter ...` output.
fn packets(json: &str) -> Result<u64> {
    let v: serde_json::Value = serde_json::from_str(json).context("nft printed no JSON")?;
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|item| item["counter"]["packets"].as_u64())
        .context("no counter in nft's output")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_counter() {
        let out = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
            {"counter": {"family": "netdev", "name": "probes", "table": "xtask_bench", "handle": 2, "packets": 42, "bytes": 2520}}]}"#;
        assert_eq!(packets(out).unwrap(), 42);
        assert!(packets(r#"{"nftables": [{"metainfo": {}}]}"#).is_err());
        assert!(packets("Error: No such file or directory").is_err());
    }

    #[test]
    fn ruleset_counts_probes_on_the_interface() {
        let r = ruleset("to-gw");
        assert!(r.contains("hook egress device \"to-gw\""));
        assert_eq!(r.matches("counter name \"probes\"").count(), 6);
    }
}
