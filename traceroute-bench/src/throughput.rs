//! Benchmark 2: what the capture costs other traffic. iperf3 TCP throughput
//! from `a` to `b` across one veth, alternating runs without and with the
//! agent's programs attached to a's interface exactly as a trace attaches them.

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use traceroute_lab::{Family, Lab, Topology};

use super::median;
use super::peers::Unavailable;
use crate::agent_binary;

const IPERF_PORT: u16 = 5201;

pub struct Throughput {
    pub seconds: u32,
    /// Receiver-side bits per second of each run without the capture.
    pub without_bps: Vec<f64>,
    /// The same with the capture attached.
    pub with_bps: Vec<f64>,
    /// iperf3's sender + receiver CPU utilisation (% of one core, summed)
    /// of each run without, then with, the capture.
    pub without_cpu: Vec<f64>,
    pub with_cpu: Vec<f64>,
    /// `packets_seen` counter of the capture after each run with it: proof the
    /// programs were in the path.
    pub packets_seen: Vec<u64>,
    /// Kernel-measured mean run time per packet of each program (BPF run-time
    /// statistics), one entry per run with the capture: a cost that does not
    /// drown in the throughput noise of a shared machine.
    pub ns_per_packet: Vec<Vec<(String, f64)>>,
    pub unavailable: Option<String>,
}

impl Throughput {
    /// Median over the runs of `program`'s mean nanoseconds per packet.
    pub fn median_ns(&self, program: &str) -> Option<f64> {
        let v: Vec<f64> = self
            .ns_per_packet
            .iter()
            .flat_map(|run| run.iter().filter(|(p, _)| p == program).map(|(_, ns)| *ns))
            .collect();
        median(&v)
    }

    pub fn median_without(&self) -> Option<f64> {
        median(&self.without_bps)
    }

    pub fn median_with(&self) -> Option<f64> {
        median(&self.with_bps)
    }

    /// Median with the capture over median without.
    pub fn ratio(&self) -> Option<f64> {
        Some(self.median_with()? / self.median_without()?)
    }

    /// Median CPU with the capture over median without.
    pub fn cpu_ratio(&self) -> Option<f64> {
        Some(median(&self.with_cpu)? / median(&self.without_cpu)?)
    }

    /// Whether the throughput change is larger than the run-to-run spread
    /// of either side; `None` without figures.
    pub fn effect_exceeds_spread(&self) -> Option<bool> {
        let effect = (1.0 - self.ratio()?).abs();
        let spread = |v: &[f64]| {
            let max = v.iter().copied().reduce(f64::max)?;
            let min = v.iter().copied().reduce(f64::min)?;
            Some((max - min) / median(v)?)
        };
        Some(effect > spread(&self.without_bps)?.max(spread(&self.with_bps)?))
    }

    /// (max - min) / median of the runs without the capture: how much of the
    /// ratio is noise.
    pub fn spread_without(&self) -> Option<f64> {
        let max = self.without_bps.iter().copied().reduce(f64::max)?;
        let min = self.without_bps.iter().copied().reduce(f64::min)?;
        Some((max - min) / self.median_without()?)
    }

    fn unavailable(seconds: u32, reason: String) -> Throughput {
        println!("bench: throughput benchmark unavailable: {reason}");
        Throughput {
            seconds,
            without_bps: Vec::new(),
            with_bps: Vec::new(),
            without_cpu: Vec::new(),
            with_cpu: Vec::new(),
            packets_seen: Vec::new(),
            ns_per_packet: Vec::new(),
            unavailable: Some(reason),
        }
    }
}

pub fn run(alternations: u32, seconds: u32, unavailable: &Unavailable) -> Result<Throughput> {
    if let Some(reason) = unavailable.get("iperf3") {
        return Ok(Throughput::unavailable(seconds, reason.clone()));
    }
    println!("bench: lab `tput`: a - b (one veth)");
    let topology = Topology::new("tput").host("a").host("b").link("a", "b");
    let lab = Lab::up(&topology).context("bringing up the throughput lab")?;
    let server = lab.addr("b", "a", Family::V4)?;
    let ifname = lab.ifname("a", "b")?.to_string();

    let mut iperf_server = Command::new("iperf3");
    iperf_server
        .args(["-s", "-p", &IPERF_PORT.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    lab.spawn("b", &mut iperf_server)?;
    wait_listening(&lab, "b", IPERF_PORT)?;

    let mut result = Throughput {
        seconds,
        without_bps: Vec::new(),
        with_bps: Vec::new(),
        without_cpu: Vec::new(),
        with_cpu: Vec::new(),
        packets_seen: Vec::new(),
        ns_per_packet: Vec::new(),
        unavailable: None,
    };
    for i in 1..=alternations {
        println!(
            "bench: throughput alternation {i}/{alternations}: without, then with the capture"
        );
        match iperf(&lab, server, seconds) {
            Ok((bps, cpu)) => {
                result.without_bps.push(bps);
                result.without_cpu.push(cpu);
            }
            Err(reason) => return Ok(Throughput::unavailable(seconds, reason)),
        }
        let capture = Capture::start(&lab, "a", &ifname)?;
        let with = iperf(&lab, server, seconds);
        let (seen, ns) = capture.stop(&lab)?;
        match with {
            Ok((bps, cpu)) => {
                result.with_bps.push(bps);
                result.with_cpu.push(cpu);
            }
            Err(reason) => bail!(
                "iperf3 works without the agent's capture but fails with it attached: {reason}"
            ),
        }
        result.packets_seen.push(seen);
        result.ns_per_packet.push(ns);
    }
    Ok(result)
}

/// One iperf3 client run from `a`: receiver-side bits per second, and the
/// sender's plus the receiver's CPU utilisation.
fn iperf(lab: &Lab, server: IpAddr, seconds: u32) -> Result<(f64, f64), String> {
    let mut last_error = String::new();
    // The server refuses a new test for a moment after the previous one ends.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(500));
        let mut cmd = lab.command("a", "timeout").map_err(|e| e.to_string())?;
        cmd.arg((seconds + 30).to_string()).args([
            "iperf3",
            "-c",
            &server.to_string(),
            "-p",
            &IPERF_PORT.to_string(),
            "-t",
            &seconds.to_string(),
            "-J",
        ]);
        let out = cmd.output().map_err(|e| format!("starting iperf3: {e}"))?;
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("iperf3 printed no JSON ({}): {e}", out.status))?;
        let end = &report["end"];
        let bps = end["sum_received"]["bits_per_second"]
            .as_f64()
            .or_else(|| end["sum_sent"]["bits_per_second"].as_f64());
        let cpu = &end["cpu_utilization_percent"];
        let cpu =
            cpu["host_total"].as_f64().unwrap_or(0.0) + cpu["remote_total"].as_f64().unwrap_or(0.0);
        match bps {
            Some(bps) if out.status.success() => return Ok((bps, cpu)),
            _ => last_error = report["error"].as_str().unwrap_or("no result").to_string(),
        }
        if !last_error.contains("busy") {
            break;
        }
    }
    Err(format!("iperf3: {last_error}"))
}

/// Waits until something in `node` listens on TCP `port`.
fn wait_listening(lab: &Lab, node: &str, port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let out = lab.exec(node, "ss", ["-Htln", &format!("sport = :{port}")])?;
        if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on TCP {port} in {node} after 10 s")
}

/// `traceroute-agent capture --registered-only` running in a lab node.
struct Capture {
    pid: u32,
    /// Reads the agent's stderr until it exits; returns every line.
    log: JoinHandle<Vec<String>>,
}

impl Capture {
    /// Starts the capture and waits for its "capture ready" line.
    fn start(lab: &Lab, node: &str, ifname: &str) -> Result<Capture> {
        let (reader, writer) = std::io::pipe().context("creating a pipe")?;
        let agent = agent_binary();
        let mut cmd = lab.command(node, &agent.to_string_lossy())?;
        cmd.args([
            "capture",
            "--interface",
            ifname,
            "--registered-only",
            "--stats",
        ])
        .stdout(Stdio::null())
        .stderr(writer);
        // The lab kills it on drop, whatever happens below.
        let pid = lab.spawn(node, &mut cmd)?;
        drop(cmd); // our copy of the pipe's write end: EOF when the agent exits

        let (ready_tx, ready_rx) = mpsc::channel();
        let log = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(reader).lines().map_while(Result::ok) {
                if line.contains("capture ready") {
                    let _ = ready_tx.send(true);
                }
                lines.push(line);
            }
            let _ = ready_tx.send(false);
            lines
        });
        let capture = Capture { pid, log };
        let problem = match ready_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(true) => return Ok(capture),
            Ok(false) => "exited before it was ready",
            Err(_) => "was not ready within 20 s",
        };
        let _ = lab.stop(capture.pid);
        let log = capture.log.join().unwrap_or_default();
        bail!("the agent's capture {problem}:\n{}", log.join("\n"))
    }

    /// SIGTERM (the agent detaches and logs its counters); returns
    /// `packets_seen` and each program's nanoseconds per packet.
    fn stop(self, lab: &Lab) -> Result<(u64, Vec<(String, f64)>)> {
        let out = lab.stop(self.pid)?;
        let log = self.log.join().unwrap_or_default();
        if !out.status.success() {
            bail!(
                "the agent's capture failed ({}):\n{}",
                out.status,
                log.join("\n")
            );
        }
        let seen = log.iter().find_map(|l| packets_seen(l)).unwrap_or(0);
        Ok((seen, log.iter().filter_map(|l| run_time(l)).collect()))
    }
}

/// (program, ns) from `... program run time program="capture_ingress" runs=.. ns_per_packet=41.5`.
fn run_time(line: &str) -> Option<(String, f64)> {
    if !line.contains("program run time") {
        return None;
    }
    let program = line.split("program=\"").nth(1)?.split('"').next()?;
    let ns = line
        .split("ns_per_packet=")
        .nth(1)?
        .split_whitespace()
        .next()?;
    Some((program.to_string(), ns.parse().ok()?))
}

/// The value in `... capture counter counter="packets_seen" value=1234`.
fn packets_seen(line: &str) -> Option<u64> {
    let rest = line.split("counter=\"packets_seen\"").nth(1)?;
    rest.trim().strip_prefix("value=")?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::{packets_seen, run_time};

    #[test]
    fn reads_program_run_time() {
        let line = "2026-11-25T01:40:00Z  INFO traceroute_agent: program run time program=\"capture_ingress\" runs=1000 ns_per_packet=41.5";
        assert_eq!(run_time(line), Some(("capture_ingress".into(), 41.5)));
        assert_eq!(
            run_time("capture counter counter=\"malformed\" value=0"),
            None
        );
    }

    #[test]
    fn reads_packets_seen_counter() {
        let line = "2026-11-25T00:38:15.448371Z  INFO traceroute_agent: capture counter counter=\"packets_seen\" value=4711";
        assert_eq!(packets_seen(line), Some(4711));
        assert_eq!(
            packets_seen("capture counter counter=\"malformed\" value=0"),
            None
        );
    }
}
