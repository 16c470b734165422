//! Timestamp accuracy: RTTs to dst across the `delay` lab's link, which
//! holds every packet 20 ms each way, idle and with every core busy.
//!
//! Each tool's RTTs are compared with the same probes' RTTs on the wire:
//! tcpdump in src records every echo request leaving and every reply
//! arriving with kernel timestamps, and probes are paired with the tool's
//! report in send order (all tools send one probe at a time at TTL 3 here).
//! The delay element is a userspace forwarder (the kernel has no sch_netem):
//! tcpdump in r1 and r2 records each packet entering and leaving it, so its
//! own excess over 20 ms is reported beside the tools' errors.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde_json::Value;
use traceroute_lab::{Family, Lab};

use super::peers::Unavailable;
use super::{Spread, agent_binary, spread};

/// The lab's one-way delay on the r1–r2 link.
const ONE_WAY_MS: f64 = 20.0;
/// dst's distance from src.
const DST_TTL: &str = "3";
const TIMEOUT_S: &str = "180";

pub struct Accuracy {
    /// Probes per tool per condition.
    pub samples: u32,
    pub conditions: Vec<Condition>,
    pub unavailable: Option<String>,
}

pub struct Condition {
    /// "idle" or "all cores busy".
    pub name: String,
    /// The delay element's hold time minus 20 ms, per crossing, in µs.
    pub element_excess_us: Vec<f64>,
    pub tools: Vec<ToolAccuracy>,
}

pub struct ToolAccuracy {
    pub tool: &'static str,
    pub command: String,
    /// RTTs the tool reported, ms.
    pub rtt_ms: Vec<f64>,
    /// The same probes on src's wire, ms (empty when they could not be paired).
    pub wire_ms: Vec<f64>,
    /// Reported minus wire, per probe, µs.
    pub error_us: Vec<f64>,
    pub note: Option<String>,
}

impl ToolAccuracy {
    pub fn error(&self) -> Option<Spread> {
        spread(&self.error_us)
    }

    /// Reported RTT minus the known 40 ms, ms.
    pub fn excess_over_delay(&self) -> Option<Spread> {
        let excess: Vec<f64> = self.rtt_ms.iter().map(|r| r - 2.0 * ONE_WAY_MS).collect();
        spread(&excess)
    }
}

impl Condition {
    pub fn element(&self) -> Option<Spread> {
        spread(&self.element_excess_us)
    }
}

struct Tool {
    name: &'static str,
    program: String,
    args: Vec<String>,
    /// Runs needed to collect the samples (traceroute: 10 probes a run).
    runs: u32,
    parse: fn(&str) -> Vec<f64>,
}

fn tools(dst: &str, samples: u32) -> Vec<Tool> {
    let agent = |capture: &str| {
        let n = samples.to_string();
        let args = [
            "trace", dst, "-I", "-n", "-f", DST_TTL, "-m", DST_TTL, "-c", &n,
        ];
        let mut args: Vec<String> = args.iter().map(std::string::ToString::to_string).collect();
        args.extend(["--capture", capture, "--format", "json"].map(String::from));
        args
    };
    let per_run = samples.min(10);
    vec![
        Tool {
            name: "agent (eBPF stamps)",
            program: agent_binary().display().to_string(),
            args: agent("ebpf"),
            runs: 1,
            parse: agent_rtts,
        },
        Tool {
            name: "agent (socket stamps)",
            program: agent_binary().display().to_string(),
            args: agent("socket"),
            runs: 1,
            parse: agent_rtts,
        },
        Tool {
            name: "ping",
            program: "ping".into(),
            args: ["-n", "-c", &samples.to_string(), "-i", "0.2", dst]
                .map(String::from)
                .to_vec(),
            runs: 1,
            parse: ping_rtts,
        },
        Tool {
            name: "traceroute -I",
            program: "traceroute".into(),
            args: [
                "-n",
                "-I",
                "-f",
                DST_TTL,
                "-m",
                DST_TTL,
                "-q",
                &per_run.to_string(),
                dst,
            ]
            .map(String::from)
            .to_vec(),
            runs: samples.div_ceil(per_run),
            parse: traceroute_rtts,
        },
    ]
}

pub fn run(samples: u32, unavailable: &Unavailable) -> Result<Accuracy> {
    if let Some(reason) = unavailable.get("tcpdump") {
        return Ok(Accuracy {
            samples,
            conditions: Vec::new(),
            unavailable: Some(format!("tcpdump: {reason}")),
        });
    }
    println!("bench: accuracy: delay lab, {samples} probes per tool, idle and all cores busy");
    let lab = Lab::up(&traceroute_lab::named::delay()).context("starting the delay lab")?;
    let dst = lab.primary("dst", Family::V4)?;
    let mut conditions = Vec::new();
    for busy in [false, true] {
        let _load = busy.then(Busy::start);
        conditions.push(measure(&lab, dst, samples, busy)?);
    }
    Ok(Accuracy {
        samples,
        conditions,
        unavailable: None,
    })
}

fn measure(lab: &Lab, dst: IpAddr, samples: u32, busy: bool) -> Result<Condition> {
    let name = if busy { "all cores busy" } else { "idle" };
    let captures = ["src", "r1", "r2"]
        .into_iter()
        .map(|node| Tcpdump::start(lab, node))
        .collect::<Result<Vec<_>>>()?;
    // tcpdump opens its socket within a few ms; give it ample time.
    std::thread::sleep(Duration::from_millis(700));
    let mut windows = Vec::new();
    let mut reported = Vec::new();
    for tool in tools(&dst.to_string(), samples) {
        let started = epoch_now();
        let mut rtts = Vec::new();
        let mut note = None;
        for _ in 0..tool.runs {
            let mut cmd = lab.command("src", "timeout")?;
            cmd.arg(TIMEOUT_S).arg(&tool.program).args(&tool.args);
            let out = cmd
                .output()
                .with_context(|| format!("running {}", tool.name))?;
            if !out.status.success() {
                note = Some(format!(
                    "{}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            rtts.extend((tool.parse)(&String::from_utf8_lossy(&out.stdout)));
        }
        windows.push((started, epoch_now()));
        let command = format!("{} {}", tool.program, tool.args.join(" "))
            .replace(&agent_binary().display().to_string(), "traceroute-agent");
        reported.push((tool.name, command, rtts, note));
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut texts = BTreeMap::new();
    for capture in captures {
        texts.insert(capture.node, capture.stop(lab)?);
    }
    let wire = wire_rtts(&parse_tcpdump(&texts["src"]));
    let mut element_excess_us = element_excess(&parse_tcpdump(&texts["r1"]));
    element_excess_us.extend(element_excess(&parse_tcpdump(&texts["r2"])));

    let tools = reported
        .into_iter()
        .zip(windows)
        .map(|((tool, command, rtt_ms, note), (from, to))| {
            let wire_ms: Vec<f64> = wire
                .iter()
                .filter(|(sent, _)| *sent >= from && *sent <= to)
                .map(|(_, rtt)| *rtt)
                .collect();
            let (wire_ms, error_us, note) = pair(rtt_ms.clone(), wire_ms, note);
            ToolAccuracy {
                tool,
                command,
                rtt_ms,
                wire_ms,
                error_us,
                note,
            }
        })
        .collect();
    Ok(Condition {
        name: name.into(),
        element_excess_us,
        tools,
    })
}

/// Per-probe errors when the tool reported exactly the probes seen on the
/// wire; otherwise no pairing, and a note saying why.
fn pair(
    reported: Vec<f64>,
    wire: Vec<f64>,
    note: Option<String>,
) -> (Vec<f64>, Vec<f64>, Option<String>) {
    if reported.len() == wire.len() && !wire.is_empty() {
        let errors = reported
            .iter()
            .zip(&wire)
            .map(|(r, w)| (r - w) * 1000.0)
            .collect();
        return (wire, errors, note);
    }
    let why = format!(
        "{} RTTs reported, {} answered probes on the wire: not paired",
        reported.len(),
        wire.len()
    );
    (
        Vec::new(),
        Vec::new(),
        Some(note.map_or(why.clone(), |n| format!("{n}; {why}"))),
    )
}

fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Spinning threads on every core, at normal priority, while it lives.
struct Busy {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Busy {
    fn start() -> Busy {
        let stop = Arc::new(AtomicBool::new(false));
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        let threads = (0..cores)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        Busy { stop, threads }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

struct Tcpdump {
    node: &'static str,
    pid: u32,
}

impl Tcpdump {
    fn start(lab: &Lab, node: &'static str) -> Result<Tcpdump> {
        let mut cmd = Command::new("tcpdump");
        cmd.args(["-i", "any", "-n", "-tt", "--nano", "-l", "icmp"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let pid = lab.spawn(node, &mut cmd)?;
        Ok(Tcpdump { node, pid })
    }

    fn stop(self, lab: &Lab) -> Result<String> {
        let out = lab.stop(self.pid)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// One echo packet as tcpdump printed it.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    at: f64,
    ifname: String,
    outgoing: bool,
    request: bool,
    id: u16,
    seq: u16,
}

/// Echo requests and replies of `tcpdump -i any -n -tt --nano` output:
/// `1796166395.824481294 to-src In  IP a > b: ICMP echo request, id 7785, seq 1, length 64`.
fn parse_tcpdump(text: &str) -> Vec<Seen> {
    text.lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let at = words.first()?.parse().ok()?;
            let ifname = words.get(1)?.to_string();
            let outgoing = match *words.get(2)? {
                "Out" => true,
                "In" => false,
                _ => return None,
            };
            let echo = words.iter().position(|w| *w == "echo")?;
            let request = match *words.get(echo + 1)? {
                "request," => true,
                "reply," => false,
                _ => return None,
            };
            let number = |key: &str| -> Option<u16> {
                let i = words.iter().position(|w| *w == key)?;
                words.get(i + 1)?.trim_end_matches(',').parse().ok()
            };
            Some(Seen {
                at,
                ifname,
                outgoing,
                request,
                id: number("id")?,
                seq: number("seq")?,
            })
        })
        .collect()
}

/// (request sent at, RTT in ms) of every answered echo src sent, in send order.
fn wire_rtts(seen: &[Seen]) -> Vec<(f64, f64)> {
    let mut sent: BTreeMap<(u16, u16), f64> = BTreeMap::new();
    let mut out = Vec::new();
    for s in seen {
        match (s.request, s.outgoing) {
            (true, true) => {
                sent.insert((s.id, s.seq), s.at);
            }
            (false, false) => {
                if let Some(at) = sent.remove(&(s.id, s.seq)) {
                    out.push((at, (s.at - at) * 1000.0));
                }
            }
            _ => {}
        }
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// Hold time minus the link's delay, µs, of every packet that went into a
/// delay device (`dly*`, Out) and came back out of it (In).
fn element_excess(seen: &[Seen]) -> Vec<f64> {
    let mut entered: BTreeMap<(String, bool, u16, u16), f64> = BTreeMap::new();
    let mut out = Vec::new();
    for s in seen.iter().filter(|s| s.ifname.starts_with("dly")) {
        let key = (s.ifname.clone(), s.request, s.id, s.seq);
        if s.outgoing {
            entered.insert(key, s.at);
        } else if let Some(at) = entered.remove(&key) {
            out.push(((s.at - at) * 1000.0 - ONE_WAY_MS) * 1000.0);
        }
    }
    out
}

/// The destination hop's RTTs (ms) over every run of an agent JSON record.
fn agent_rtts(json: &str) -> Vec<f64> {
    let Ok(record) = serde_json::from_str::<Value>(json.trim()) else {
        return Vec::new();
    };
    let runs = record["traceroute"]["runs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    runs.iter()
        .flat_map(|run| run["hops"].as_array().cloned().unwrap_or_default())
        .filter(|hop| hop["reachable"] == true)
        .filter_map(|hop| hop["rtt"].as_f64())
        .collect()
}

/// `64 bytes from 198.18.3.2: icmp_seq=1 ttl=62 time=40.5 ms`.
fn ping_rtts(text: &str) -> Vec<f64> {
    text.split_whitespace()
        .filter_map(|w| w.strip_prefix("time=")?.parse().ok())
        .collect()
}

/// ` 3  198.18.3.2  40.571 ms  40.700 ms  *  40.612 ms`.
fn traceroute_rtts(text: &str) -> Vec<f64> {
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[1] == "ms")
        .filter_map(|w| w[0].parse().ok())
        .collect()
}

/// The report's section.
pub fn section(a: &Accuracy) -> String {
    let mut out = String::from(
        "## Timestamp accuracy: RTTs through a link with a known delay

",
    );
    if let Some(reason) = &a.unavailable {
        return out
            + &format!(
                "Unavailable: {reason}
"
            );
    }
    out += &format!(
        "`delay` lab: src - r1 -[20 ms each way]- r2 - dst, ICMP echo to dst (TTL 3), \
         {} probes per tool, idle and with a spinning thread on every core. **Error** is \
         the RTT a tool reported minus the same probe's RTT on src's wire (tcpdump, \
         kernel timestamps), paired in send order. **Over 40 ms** is the reported RTT \
         minus the known added delay (the path's own RTT and the delay element's excess \
         are in it). **Delay element**: how much longer than 20 ms the userspace delay \
         forwarder held each packet, measured by tcpdump on its TUN device in r1 and r2 \
         (the kernel here has no sch_netem); it is part of every tool's RTT and of the \
         wire RTT alike, so it cancels out of the error. The wire stamps are the kernel's \
         software stamps (on receive, taken when the packet is queued to the stack; on \
         send, at the device tap), the very stamps the agent's socket capture reads from its \
         packet socket (SO_TIMESTAMPNS). The eBPF capture takes a reply's stamp from the \
         same receive stamp (read by the ingress program from the packet) and a probe's \
         at TC egress, just before the device. Figures: median (min-max).\n\n",
        a.samples
    );
    let us = |s: Option<Spread>| {
        s.map_or("-".into(), |s| {
            format!("{:.1} ({:.1} to {:.1}) µs", s.median, s.min, s.max)
        })
    };
    let ms = |s: Option<Spread>| {
        s.map_or("-".into(), |s| {
            format!("{:.3} ({:.3} to {:.3}) ms", s.median, s.min, s.max)
        })
    };
    for c in &a.conditions {
        out += &format!(
            "### {}\n\nDelay element's excess per crossing: {} over {} crossings.\n\n",
            c.name,
            us(c.element()),
            c.element_excess_us.len()
        );
        let rows: Vec<Vec<String>> = c
            .tools
            .iter()
            .map(|t| {
                vec![
                    t.tool.to_string(),
                    us(t.error()),
                    ms(t.excess_over_delay()),
                    format!("{}/{}", t.error_us.len(), t.rtt_ms.len()),
                    t.note.clone().unwrap_or_default(),
                ]
            })
            .collect();
        out += &super::report::table(
            &[
                "tool",
                "error vs wire",
                "over 40 ms",
                "paired/reported",
                "note",
            ],
            &rows,
        );
        out += "\n";
    }
    out += "Commands (in src):\n\n";
    if let Some(c) = a.conditions.first() {
        for t in &c.tools {
            out += &format!("- {}: `{}`\n", t.tool, t.command);
        }
    }
    out
}

pub fn json(a: &Accuracy) -> Value {
    let spread_json = |s: Option<Spread>| {
        s.map(|s| serde_json::json!({"median": s.median, "min": s.min, "max": s.max}))
    };
    serde_json::json!({
        "unavailable_reason": a.unavailable,
        "samples_per_tool": a.samples,
        "added_delay_ms": 2.0 * ONE_WAY_MS,
        "conditions": a.conditions.iter().map(|c| serde_json::json!({
            "condition": c.name,
            "element_excess_us": spread_json(c.element()),
            "element_excess_us_all": c.element_excess_us,
            "tools": c.tools.iter().map(|t| serde_json::json!({
                "tool": t.tool,
                "command": t.command,
                "error_vs_wire_us": spread_json(t.error()),
                "over_added_delay_ms": spread_json(t.excess_over_delay()),
                "rtt_ms": t.rtt_ms,
                "wire_ms": t.wire_ms,
                "error_us": t.error_us,
                "note": t.note,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPTURE: &str = "\
1796166395.824481294 to-src In  IP 198.18.1.1 > 198.18.3.2: ICMP echo request, id 7785, seq 1, length 64
1796166395.824514145 dly2  Out IP 198.18.1.1 > 198.18.3.2: ICMP echo request, id 7785, seq 1, length 64
1796166395.844734243 dly2  In  IP 198.18.1.1 > 198.18.3.2: ICMP echo request, id 7785, seq 1, length 64
1796166395.844755904 to-r2 Out IP 198.18.1.1 > 198.18.3.2: ICMP echo request, id 7785, seq 1, length 64
1796166395.865144073 to-r2 In  IP 198.18.3.2 > 198.18.1.1: ICMP echo reply, id 7785, seq 1, length 64
1796166395.865164331 to-src Out IP 198.18.3.2 > 198.18.1.1: ICMP echo reply, id 7785, seq 1, length 64
tcpdump: listening on any, link-type LINUX_SLL2
";

    #[test]
    fn reads_echo_packets_and_the_elements_hold_time() {
        let seen = parse_tcpdump(CAPTURE);
        assert_eq!(seen.len(), 6);
        assert_eq!((seen[1].ifname.as_str(), seen[1].outgoing), ("dly2", true));
        assert_eq!((seen[4].request, seen[4].id, seen[4].seq), (false, 7785, 1));
        let excess = element_excess(&seen);
        assert_eq!(excess.len(), 1);
        // Epoch seconds as f64 resolve about 0.24 µs.
        assert!((excess[0] - 220.098).abs() < 0.5, "{excess:?}");
    }

    #[test]
    fn pairs_requests_with_replies_on_the_senders_wire() {
        // As src sees them: request out, reply in.
        let text = "\
10.000000000 to-r1 Out IP a > b: ICMP echo request, id 1, seq 2, length 64
10.100000000 to-r1 Out IP a > b: ICMP echo request, id 1, seq 3, length 64
10.140500000 to-r1 In  IP b > a: ICMP echo reply, id 1, seq 3, length 64
10.041000000 to-r1 In  IP b > a: ICMP echo reply, id 1, seq 2, length 64
11.000000000 to-r1 Out IP a > b: ICMP echo request, id 1, seq 4, length 64
";
        let wire = wire_rtts(&parse_tcpdump(text));
        assert_eq!(wire.len(), 2, "the unanswered probe is left out");
        assert!((wire[0].1 - 41.0).abs() < 1e-6 && (wire[1].1 - 40.5).abs() < 1e-6);
        let (w, errors, note) = pair(vec![41.01, 40.5], vec![41.0, 40.5], None);
        assert_eq!(w.len(), 2);
        assert!((errors[0] - 10.0).abs() < 1e-6 && errors[1].abs() < 1e-6);
        assert!(note.is_none());
        let (_, errors, note) = pair(vec![41.0], vec![41.0, 40.5], None);
        assert!(errors.is_empty());
        assert!(note.unwrap().contains("1 RTTs reported, 2 answered"));
    }

    #[test]
    fn reads_each_tools_rtts() {
        assert_eq!(
            ping_rtts("64 bytes from 198.18.3.2: icmp_seq=1 ttl=62 time=40.5 ms\n"),
            [40.5]
        );
        assert_eq!(
            traceroute_rtts(" 3  198.18.3.2  40.571 ms  40.700 ms * 40.612 ms\n"),
            [40.571, 40.7, 40.612]
        );
        let json = r#"{"traceroute":{"runs":[{"hops":[{"ttl":3,"rtt":40.5,"reachable":true}]},
            {"hops":[{"ttl":3,"reachable":false}]}]}}"#;
        assert_eq!(agent_rtts(json), [40.5]);
    }
}
