//! A per-hop report in the style of `mtr --report`: for each TTL the host(s)
//! that answered, loss over the runs, and RTT last/avg/best/worst.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use crate::path::NetworkPath;

#[derive(Default)]
struct HopStats {
    hosts: Vec<IpAddr>,
    names: Vec<String>,
    sent: u32,
    rtts: Vec<f64>,
}

/// Renders `path` as a table.
pub fn render(path: &NetworkPath) -> String {
    let runs = &path.traceroute.runs;
    let mut hops: BTreeMap<u8, HopStats> = BTreeMap::new();
    for run in runs {
        for hop in &run.hops {
            let h = hops.entry(hop.ttl.get()).or_default();
            h.sent += 1;
            if let Some(ip) = hop.ip_address
                && !h.hosts.contains(&ip)
            {
                h.hosts.push(ip);
            }
            for name in &hop.reverse_dns {
                if !h.names.contains(name) {
                    h.names.push(name.clone());
                }
            }
            h.rtts.extend(hop.rtt);
        }
    }
    let mut out = String::new();
    let dest = runs
        .first()
        .map(|r| r.destination.ip_address.to_string())
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "traceroute to {} ({dest}), {} {}, port {}, {} run(s), capture: {}",
        path.destination.hostname,
        path.protocol.as_str(),
        path.source
            .via
            .as_ref()
            .map(|v| format!("via {}", v.interface.name))
            .unwrap_or_default(),
        path.destination.port,
        runs.len(),
        match (&path.capture, path.tcp_method.as_deref()) {
            (Some(c), _) => format!("{:?}", c.method).to_lowercase(),
            (None, Some("syn_socket")) => "none (connect() per probe)".into(),
            (None, _) => "?".into(),
        },
    );
    let _ = writeln!(
        out,
        "{:>3}  {:<40} {:>6} {:>4} {:>8} {:>8} {:>8} {:>8}",
        "TTL", "Host", "Loss%", "Snt", "Last", "Avg", "Best", "Wrst"
    );
    for (ttl, h) in &hops {
        let host = if h.hosts.is_empty() {
            "???".to_string()
        } else {
            let addrs: Vec<String> = h.hosts.iter().map(ToString::to_string).collect();
            match h.names.first() {
                Some(name) => format!("{name} ({})", addrs.join(", ")),
                None => addrs.join(", "),
            }
        };
        let loss = 100.0 * f64::from(h.sent - h.rtts.len() as u32) / f64::from(h.sent.max(1));
        let fmt = |v: Option<f64>| v.map(|x| format!("{x:.3}")).unwrap_or_else(|| "-".into());
        let avg = (!h.rtts.is_empty()).then(|| h.rtts.iter().sum::<f64>() / h.rtts.len() as f64);
        let best = h.rtts.iter().copied().reduce(f64::min);
        let worst = h.rtts.iter().copied().reduce(f64::max);
        let _ = writeln!(
            out,
            "{ttl:>3}  {host:<40} {loss:>5.1}% {:>4} {:>8} {:>8} {:>8} {:>8}",
            h.sent,
            fmt(h.rtts.last().copied()),
            fmt(avg),
            fmt(best),
            fmt(worst),
        );
    }
    let reached = runs.iter().any(|r| r.destination_reached);
    let _ = writeln!(
        out,
        "destination {}; hop count avg {} (min {}, max {}); RTTs in ms",
        if reached { "reached" } else { "NOT reached" },
        path.traceroute.hop_count.avg,
        path.traceroute.hop_count.min,
        path.traceroute.hop_count.max
    );
    let sizes = runs.iter().flat_map(|r| &r.hops).filter_map(|h| h.path_mtu);
    if let Some(path_mtu) = sizes.min() {
        let mut bottlenecks: Vec<(u8, String, u32)> = runs
            .iter()
            .flat_map(|r| &r.hops)
            .filter_map(|h| Some((h.ttl.get(), h.ip_address?.to_string(), h.next_hop_mtu?)))
            .collect();
        bottlenecks.sort();
        bottlenecks.dedup();
        let after: Vec<String> = bottlenecks
            .iter()
            .map(|(ttl, addr, mtu)| format!("{mtu} after hop {ttl} ({addr})"))
            .collect();
        let _ = write!(out, "path MTU {path_mtu} bytes");
        if !after.is_empty() {
            let _ = write!(out, "; link MTU {}", after.join(", "));
        }
        out.push('\n');
    }
    if let Some(m) = runs.iter().find_map(|r| r.suspected_middlebox.as_ref()) {
        let likely = m.likely.map(|a| format!(" ({a}?)")).unwrap_or_default();
        let _ = writeln!(
            out,
            "warning: the destination's answer at TTL {} has reply TTL {}, as if sent {} hops away{likely}: \
             a SYN proxy or firewall answering for the destination?",
            m.ttl, m.reply_ttl, m.distance
        );
    }
    out
}
