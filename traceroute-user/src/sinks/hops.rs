//! A record seen per TTL, the way people read a trace: who answered at each
//! TTL over all runs, the RTT statistics, traceroute's `!N`/`!H`/... markers
//! and tcptraceroute's `[open]`/`[closed]`, and why the trace stopped. The
//! table, markdown and the live progress lines are drawn from this.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::path::{Hop, InterfaceInfo, NetworkPath, NoAnswerKind, TcpAnswer};

/// Everything the runs saw at one TTL.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TtlRow {
    pub ttl: u8,
    /// Addresses in order of first answer.
    pub hosts: Vec<IpAddr>,
    pub names: Vec<String>,
    /// Runs whose probe at this TTL was sent and given its full wait, or
    /// answered: the probes loss is counted over (one per run).
    pub sent: u32,
    /// RTTs (ms) of the answered ones, in run order.
    pub rtts: Vec<f64>,
    /// Markers of the answers (`!H`, `[open]`...), each once.
    pub markers: Vec<&'static str>,
    /// ICMP extensions the answers carried, each once: MPLS label stacks as
    /// traceroute -e writes them (`<MPLS:L=100,E=0,S=1,T=1>`) and interfaces
    /// (RFC 5837) as `<IF:in #12 ge-0/0/1 198.18.1.1 mtu=1500>`.
    pub extensions: Vec<String>,
    /// Every probe was sent and waited its full time without an answer.
    pub silent: bool,
    /// Why the unanswered ones have no answer, when it is not silence.
    pub no_answer: Option<NoAnswerKind>,
    /// Some answer here was the destination.
    pub destination: bool,
}

impl TtlRow {
    /// `None` when no probe here was sent and waited for: a probe never
    /// sent is not a lost one.
    pub fn loss_percent(&self) -> Option<f64> {
        let lost = self.sent.checked_sub(self.rtts.len() as u32)?;
        (self.sent > 0).then(|| 100.0 * f64::from(lost) / f64::from(self.sent))
    }

    pub fn last(&self) -> Option<f64> {
        self.rtts.last().copied()
    }

    pub fn avg(&self) -> Option<f64> {
        (!self.rtts.is_empty()).then(|| self.rtts.iter().sum::<f64>() / self.rtts.len() as f64)
    }

    pub fn best(&self) -> Option<f64> {
        self.rtts.iter().copied().reduce(f64::min)
    }

    pub fn worst(&self) -> Option<f64> {
        self.rtts.iter().copied().reduce(f64::max)
    }

    /// Population standard deviation of the RTTs (mtr's StDev).
    pub fn stdev(&self) -> Option<f64> {
        let avg = self.avg()?;
        let var = self.rtts.iter().map(|r| (r - avg).powi(2)).sum::<f64>() / self.rtts.len() as f64;
        Some(var.sqrt())
    }

    /// Mean absolute difference of consecutive RTTs (mtr's Javg), with two
    /// or more answers.
    pub fn jitter(&self) -> Option<f64> {
        (self.rtts.len() >= 2).then(|| {
            let diffs: Vec<f64> = self.rtts.windows(2).map(|w| (w[1] - w[0]).abs()).collect();
            diffs.iter().sum::<f64>() / diffs.len() as f64
        })
    }

    /// `name (addr, addr)`, `addr`, or `???` when nothing answered.
    pub fn host_text(&self) -> String {
        if self.hosts.is_empty() {
            return "???".to_string();
        }
        let addrs: Vec<String> = self.hosts.iter().map(ToString::to_string).collect();
        match self.names.first() {
            Some(name) => format!("{name} ({})", addrs.join(", ")),
            None => addrs.join(", "),
        }
    }
}

/// traceroute's marker for an ICMP unreachable (`!N`, `!H`, `!P`, `!F`,
/// `!S`, `!X`, `!V`, `!C`, or `!<code>`), tcptraceroute's `[open]` /
/// `[closed]` for a TCP destination; none for time exceeded and for the
/// port unreachable that is a UDP destination's normal answer.
pub fn marker(hop: &Hop) -> Option<&'static str> {
    if let Some(answer) = hop.tcp_answer {
        return Some(if answer == TcpAnswer::Rst {
            "[closed]"
        } else {
            "[open]"
        });
    }
    let v6 = hop.ip_address?.is_ipv6();
    let (icmp_type, code) = (hop.icmp_type?, hop.icmp_code?);
    if v6 {
        if icmp_type != 1 {
            return None;
        }
        return match code {
            0 => Some("!N"),
            1 | 5 | 6 => Some("!X"),
            2 => Some("!S"),
            3 => Some("!H"),
            4 => None,
            _ => Some("!?"),
        };
    }
    if icmp_type != 3 {
        return None;
    }
    match code {
        0 | 6 | 11 => Some("!N"),
        1 | 7 | 12 => Some("!H"),
        2 => Some("!P"),
        3 => None,
        4 => Some("!F"),
        5 => Some("!S"),
        9 | 10 | 13 => Some("!X"),
        14 => Some("!V"),
        15 => Some("!C"),
        _ => Some("!?"),
    }
}

/// What a marker means, for the stop line.
pub fn marker_meaning(marker: &str) -> &'static str {
    match marker {
        "!N" => "network unreachable",
        "!H" => "host unreachable",
        "!P" => "protocol unreachable",
        "!F" => "fragmentation needed",
        "!S" => "source route failed / beyond scope",
        "!X" => "communication administratively prohibited",
        "!V" => "host precedence violation",
        "!C" => "precedence cutoff",
        "[open]" => "port open",
        "[closed]" => "port closed",
        _ => "unreachable",
    }
}

/// The rows of `path`, one per TTL reported by any run, in TTL order.
pub fn rows(path: &NetworkPath) -> Vec<TtlRow> {
    let mut rows: BTreeMap<u8, TtlRow> = BTreeMap::new();
    let mut kinds: BTreeMap<u8, Vec<Option<NoAnswerKind>>> = BTreeMap::new();
    for run in &path.traceroute.runs {
        for hop in &run.hops {
            let ttl = hop.ttl.get();
            let row = rows.entry(ttl).or_insert_with(|| TtlRow {
                ttl,
                ..TtlRow::default()
            });
            let never_waited =
                hop.rtt.is_none() && usize::from(hop.not_waited) >= hop.rtts.len().max(1);
            if !never_waited {
                row.sent += 1;
            }
            for ip in hop
                .ip_address
                .into_iter()
                .chain(hop.other_ip_addresses.iter().copied())
            {
                if !row.hosts.contains(&ip) {
                    row.hosts.push(ip);
                }
            }
            for name in &hop.reverse_dns {
                if !row.names.contains(name) {
                    row.names.push(name.clone());
                }
            }
            row.rtts.extend(hop.rtt);
            if let Some(m) = marker(hop)
                && !row.markers.contains(&m)
            {
                row.markers.push(m);
            }
            if !hop.mpls_labels.is_empty() {
                let stack: Vec<String> = hop
                    .mpls_labels
                    .iter()
                    .map(|l| {
                        format!(
                            "L={},E={},S={},T={}",
                            l.label,
                            l.exp,
                            u8::from(l.bottom_of_stack),
                            l.ttl
                        )
                    })
                    .collect();
                let text = format!("<MPLS:{}>", stack.join("/"));
                if !row.extensions.contains(&text) {
                    row.extensions.push(text);
                }
            }
            for info in &hop.interface_info {
                let text = interface_text(info);
                if !row.extensions.contains(&text) {
                    row.extensions.push(text);
                }
            }
            row.destination |= hop.ip_address.is_some()
                && hop.ip_address == Some(run.destination.ip_address)
                && run.destination_reached;
            if hop.ip_address.is_none() {
                kinds.entry(ttl).or_default().push(hop.no_answer);
            }
        }
    }
    for (ttl, row) in &mut rows {
        let unanswered = kinds.get(ttl).map(Vec::as_slice).unwrap_or_default();
        row.silent =
            row.hosts.is_empty() && unanswered.iter().all(|k| *k == Some(NoAnswerKind::Timeout));
        row.no_answer = unanswered
            .iter()
            .flatten()
            .copied()
            .find(|k| *k != NoAnswerKind::Timeout);
    }
    rows.into_values().collect()
}

/// Why the trace stopped, in words (the last line of the table).
pub fn stop_reason(path: &NetworkPath, rows: &[TtlRow]) -> String {
    let runs = &path.traceroute.runs;
    let reached = runs.iter().filter(|r| r.destination_reached).count();
    if let Some(row) = rows.iter().find(|r| r.destination) {
        let how = row
            .markers
            .iter()
            .find(|m| m.starts_with('['))
            .map(|m| format!(" {m}"))
            .unwrap_or_default();
        return format!(
            "destination reached at hop {}{how} in {reached} of {} run(s)",
            row.ttl,
            runs.len()
        );
    }
    if let Some(row) = rows
        .iter()
        .find(|r| r.markers.iter().any(|m| m.starts_with('!')))
    {
        let m = row
            .markers
            .iter()
            .find(|m| m.starts_with('!'))
            .copied()
            .unwrap_or("!");
        return format!(
            "destination NOT reached: stopped at hop {} by {} {m} ({})",
            row.ttl,
            row.host_text(),
            marker_meaning(m)
        );
    }
    let last = rows
        .iter()
        .rev()
        .find(|r| !r.hosts.is_empty())
        .map(|r| r.ttl);
    let highest = rows.last().map_or(0, |r| r.ttl);
    match last {
        Some(last) if last < highest => format!(
            "destination NOT reached: nothing answered after hop {last} (probed to TTL {highest})"
        ),
        Some(_) => format!("destination NOT reached by TTL {highest}"),
        None => format!("destination NOT reached: nothing answered (probed to TTL {highest})"),
    }
}

/// An interface a router described (RFC 5837), for the table's `-e` view:
/// the parts it gave, in the RFC's order.
fn interface_text(info: &InterfaceInfo) -> String {
    let mut text = format!("<IF:{}", info.role.short());
    if let Some(ifindex) = info.ifindex {
        text.push_str(&format!(" #{ifindex}"));
    }
    if let Some(name) = &info.name {
        text.push_str(&format!(" {name}"));
    }
    if let Some(address) = info.address {
        text.push_str(&format!(" {address}"));
    }
    if let Some(mtu) = info.mtu {
        text.push_str(&format!(" mtu={mtu}"));
    }
    text.push('>');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::{AttemptOutcome, HopObservation, Run};
    use crate::probe::Ttl;
    use std::time::Duration;

    fn hop(ip: &str, icmp: Option<(u8, u8)>, tcp: Option<TcpAnswer>) -> Hop {
        let obs = HopObservation {
            ttl: Ttl::new(3).unwrap(),
            attempts: vec![AttemptOutcome {
                icmp_type: icmp.map(|i| i.0),
                icmp_code: icmp.map(|i| i.1),
                tcp_answer: tcp,
                ..AttemptOutcome::answered(ip.parse().unwrap(), Duration::from_millis(1))
            }],
        };
        let run = Run::from_observations(
            "198.18.0.2:4000".parse().unwrap(),
            "198.18.9.9:80".parse().unwrap(),
            &[obs],
        );
        run.hops[0].clone()
    }

    #[test]
    fn an_interface_shows_the_parts_its_router_gave() {
        use crate::path::InterfaceRole;
        let full = InterfaceInfo {
            role: InterfaceRole::Incoming,
            ifindex: Some(12),
            address: Some("198.18.1.1".parse().unwrap()),
            name: Some("ge-0/0/1".into()),
            mtu: Some(1500),
        };
        assert_eq!(
            interface_text(&full),
            "<IF:in #12 ge-0/0/1 198.18.1.1 mtu=1500>"
        );
        let bare = InterfaceInfo {
            role: InterfaceRole::NextHop,
            ifindex: None,
            address: None,
            name: None,
            mtu: Some(9000),
        };
        assert_eq!(interface_text(&bare), "<IF:next mtu=9000>");
    }

    #[test]
    fn markers_follow_traceroute_and_tcptraceroute() {
        let r = "198.18.1.1";
        let r6 = "2001:db8::1";
        assert_eq!(marker(&hop(r, Some((11, 0)), None)), None);
        assert_eq!(marker(&hop(r, Some((3, 0)), None)), Some("!N"));
        assert_eq!(marker(&hop(r, Some((3, 1)), None)), Some("!H"));
        assert_eq!(marker(&hop(r, Some((3, 2)), None)), Some("!P"));
        assert_eq!(marker(&hop(r, Some((3, 3)), None)), None);
        assert_eq!(marker(&hop(r, Some((3, 13)), None)), Some("!X"));
        assert_eq!(marker(&hop(r6, Some((1, 0)), None)), Some("!N"));
        assert_eq!(marker(&hop(r6, Some((1, 1)), None)), Some("!X"));
        assert_eq!(marker(&hop(r6, Some((1, 3)), None)), Some("!H"));
        assert_eq!(marker(&hop(r6, Some((1, 4)), None)), None);
        assert_eq!(marker(&hop(r6, Some((3, 0)), None)), None);
        assert_eq!(
            marker(&hop(r, None, Some(TcpAnswer::SynAck))),
            Some("[open]")
        );
        assert_eq!(marker(&hop(r, None, Some(TcpAnswer::Ack))), Some("[open]"));
        assert_eq!(
            marker(&hop(r, None, Some(TcpAnswer::Rst))),
            Some("[closed]")
        );
    }

    #[test]
    fn a_probe_never_sent_is_not_counted_as_lost() {
        use crate::path::{NoAnswer, NotSentReason, PathDestination, PathSource};
        let ttl = |t| Ttl::new(t).unwrap();
        let answered = || AttemptOutcome::answered("198.18.1.1".parse().unwrap(), Duration::from_millis(1));
        let run = |second: AttemptOutcome| {
            Run::from_observations(
                "198.18.0.2:4000".parse().unwrap(),
                "198.18.9.9:80".parse().unwrap(),
                &[
                    HopObservation { ttl: ttl(1), attempts: vec![answered()] },
                    HopObservation { ttl: ttl(2), attempts: vec![second] },
                ],
            )
        };
        let unsent = || AttemptOutcome::unanswered(NoAnswer::NotSent(NotSentReason::RouterBudget), None);
        let path = |runs| {
            NetworkPath::new(
                crate::probe::Protocol::Udp,
                PathSource { hostname: "h".into(), via: None, public_ip: None },
                PathDestination { hostname: "198.18.9.9".into(), port: 33434 },
                runs,
                crate::path::E2eProbe::from_samples(&[]),
            )
        };
        // TTL 2: one run never sent its probe, one waited in vain.
        let mixed = rows(&path(vec![run(unsent()), run(AttemptOutcome::silent())]));
        assert_eq!((mixed[1].sent, mixed[1].loss_percent()), (1, Some(100.0)));
        // Never sent in any run: no loss figure, and the table says "-".
        let never = rows(&path(vec![run(unsent()), run(unsent())]));
        assert_eq!((never[1].sent, never[1].loss_percent()), (0, None));
        assert_eq!(never[0].loss_percent(), Some(0.0));
    }

    #[test]
    fn rtt_statistics_are_mtrs() {
        let row = TtlRow {
            rtts: vec![1.0, 3.0, 2.0, 6.0],
            sent: 5,
            ..TtlRow::default()
        };
        assert_eq!(row.loss_percent(), Some(20.0));
        // Nothing sent and waited for here: no loss figure at all.
        assert_eq!(TtlRow::default().loss_percent(), None);
        assert_eq!(row.avg(), Some(3.0));
        assert_eq!(row.best(), Some(1.0));
        assert_eq!(row.worst(), Some(6.0));
        assert_eq!(row.last(), Some(6.0));
        assert!((row.stdev().unwrap() - 1.870_828_693).abs() < 1e-6);
        // |3-1| + |2-3| + |6-2| = 7 over 3 differences.
        assert!((row.jitter().unwrap() - 7.0 / 3.0).abs() < 1e-9);
        assert_eq!(TtlRow::default().jitter(), None);
    }
}
