//! The command line's own cost, side by side with Linux traceroute, both at
//! their defaults (traceroute with `-n`, the agent's default), alternating
//! A B A B:
//!
//! - through a running agent, as `nobody` in the socket's group, on
//!   `chain_limited` (five hops, r3 silent, Linux's ICMP limits), after one
//!   earlier trace so the agent knows the path; each run after the pause that
//!   refills the routers' budgets, and back to back without it;
//! - in-process (`--local`), on `three`, where every hop answers (unlimited
//!   routers), with the default eBPF capture and with `--capture socket`;
//! - a streamed answer: how long after its reply reached src's wire (tcpdump)
//!   each hop event reached the client.
//!
//! Next to the times: the hops each tool found against the lab's truth.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use traceroute_lab::{Family, Lab, named};

use super::load::WorkDir;
use super::{REFILL, Spread, agent_binary, spread};

/// Timed runs per tool and case.
const RUNS: usize = 10;

pub struct Case {
    pub name: &'static str,
    pub lab: &'static str,
    pub agent: String,
    pub peer: String,
    pub agent_s: Vec<f64>,
    pub peer_s: Vec<f64>,
    /// Hops found per run, and how many the lab has.
    pub agent_hops: Vec<usize>,
    pub peer_hops: Vec<usize>,
    pub hops: usize,
}

impl Case {
    fn new(
        name: &'static str,
        lab: &'static str,
        agent: String,
        peer: String,
        hops: usize,
    ) -> Case {
        Case {
            name,
            lab,
            agent,
            peer,
            agent_s: Vec::new(),
            peer_s: Vec::new(),
            agent_hops: Vec::new(),
            peer_hops: Vec::new(),
            hops,
        }
    }

    /// [`RUNS`] runs of `program ARGS` (the agent) and of `traceroute -n`
    /// to the last hop of `want`, A B A B, each after `pause`.
    fn alternate(
        &mut self,
        lab: &Lab,
        program: &str,
        args: &[String],
        pause: Duration,
        want: &[Option<String>],
    ) -> Result<()> {
        let dst = want.last().cloned().flatten().context("a destination")?;
        for run in 1..=RUNS {
            println!("bench: cli {}, run {run}/{RUNS}", self.name);
            std::thread::sleep(pause);
            let (s, out) = timed(lab, program, args)?;
            self.agent_s.push(s);
            self.agent_hops.push(found_in_record(&out, want));
            std::thread::sleep(pause);
            let (s, out) = timed(lab, "traceroute", &["-n".into(), dst.clone()])?;
            self.peer_s.push(s);
            self.peer_hops.push(found_in_text(&out, want));
        }
        Ok(())
    }

    /// Pair by pair: agent / traceroute.
    fn ratios(&self) -> Vec<f64> {
        self.agent_s
            .iter()
            .zip(&self.peer_s)
            .map(|(a, p)| a / p)
            .collect()
    }
}

pub struct CliBench {
    pub cases: Vec<Case>,
    /// Hop event after its reply on the wire, ms, per hop, per trace.
    pub stream_ms: Vec<Vec<f64>>,
}

pub fn run() -> Result<CliBench> {
    let mut cases = Vec::new();
    let mut stream_ms = Vec::new();
    {
        println!("bench: cli through the agent, lab `chain_limited`");
        let lab = Lab::up(&named::chain_limited()).context("chain_limited lab")?;
        let dst = lab.primary("dst", Family::V4)?.to_string();
        let hops = truth(&lab, &dst)?;
        let dir = WorkDir(std::env::temp_dir().join(format!("bench-cli-{}", std::process::id())));
        std::fs::create_dir_all(&dir.0)?;
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755))?;
        let socket = dir.0.join("agent.sock");
        let config = dir.0.join("config.toml");
        std::fs::write(
            &config,
            "capture = \"ebpf\"\n[api]\nsocket_group = \"nogroup\"\n",
        )?;
        let mut service = Service::start(&lab, &socket, &config)?;
        let socket = socket.to_string_lossy().into_owned();
        let agent_args = |dst: &str| -> Vec<String> {
            [
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                "--",
                &agent_binary().to_string_lossy(),
                "trace",
                dst,
                "--agent",
                &socket,
                "--format",
                "json",
            ]
            .map(String::from)
            .to_vec()
        };
        // The earlier trace the target asks for.
        timed(&lab, "setpriv", &agent_args(&dst))?;
        let mut case = Case::new(
            "through the agent, as nobody in the socket's group",
            "chain_limited",
            format!("traceroute-agent trace {dst} --agent SOCKET (setpriv nobody:nogroup)"),
            format!("traceroute -n {dst}"),
            hops.len(),
        );
        case.alternate(&lab, "setpriv", &agent_args(&dst), REFILL, &hops)?;
        cases.push(case);
        // The condition that hurts: no pause, so each run meets the budgets
        // the previous ones spent (Linux routers answer 1/s after 6).
        let mut case = Case::new(
            "through the agent, back to back (no refill pauses)",
            "chain_limited",
            format!("traceroute-agent trace {dst} --agent SOCKET (setpriv nobody:nogroup)"),
            format!("traceroute -n {dst}"),
            hops.len(),
        );
        case.alternate(&lab, "setpriv", &agent_args(&dst), Duration::ZERO, &hops)?;
        cases.push(case);
        for _ in 0..3 {
            std::thread::sleep(REFILL);
            stream_ms.push(stream_lag(&lab, &service.socket, &dst)?);
        }
        service.stop();
    }
    {
        println!("bench: cli in-process, lab `three`");
        let lab = Lab::up(&named::three()).context("three lab")?;
        let dst = lab.primary("dst", Family::V4)?.to_string();
        let hops = truth(&lab, &dst)?;
        let agent = agent_binary().to_string_lossy().into_owned();
        // The default capture (eBPF: programs loaded and attached per run)
        // and the packet socket (nothing to load; a grace period to close,
        // like the programs' detach, which both leave to the keeper).
        for (name, capture) in [
            ("in-process, every hop answers", None),
            ("in-process, socket capture", Some("socket")),
        ] {
            let mut args: Vec<String> = ["trace", &dst, "--local", "--format", "json"]
                .map(String::from)
                .to_vec();
            let mut shown = format!("traceroute-agent trace {dst} --local");
            if let Some(capture) = capture {
                args.extend(["--capture".to_string(), capture.to_string()]);
                shown.push_str(&format!(" --capture {capture}"));
            }
            timed(&lab, &agent, &args)?;
            let mut case = Case::new(
                name,
                "three",
                shown,
                format!("traceroute -n {dst}"),
                hops.len(),
            );
            case.alternate(&lab, &agent, &args, Duration::ZERO, &hops)?;
            cases.push(case);
        }
    }
    Ok(CliBench { cases, stream_ms })
}

/// The lab's hops from src to `dst`, the destination last (`None`: silent).
fn truth(lab: &Lab, dst: &str) -> Result<Vec<Option<String>>> {
    let mut hops: Vec<Option<String>> = lab
        .expected_hops("src", "dst", Family::V4)?
        .into_iter()
        .map(|h| h.map(|a| a.to_string()))
        .collect();
    hops.push(Some(dst.to_string()));
    Ok(hops)
}

/// Runs `program ARGS` in src; its wall time (s) and stdout.
fn timed(lab: &Lab, program: &str, args: &[String]) -> Result<(f64, String)> {
    let mut cmd = lab.command("src", program)?;
    cmd.args(args);
    let started = Instant::now();
    let out = cmd.output().with_context(|| format!("running {program}"))?;
    let s = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((s, String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// Hops of the agent's record (first run) that match the lab's.
fn found_in_record(out: &str, want: &[Option<String>]) -> usize {
    let record: Value = serde_json::from_str(out).unwrap_or_default();
    let hops = record["traceroute"]["runs"][0]["hops"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    want.iter()
        .enumerate()
        .filter(|(i, w)| {
            let got = hops
                .get(*i)
                .and_then(|h| h["ip_address"].as_str())
                .filter(|a| !a.is_empty());
            w.as_deref() == got
        })
        .count()
}

/// Hops of traceroute's text that match the lab's (a silent hop is `*`).
fn found_in_text(out: &str, want: &[Option<String>]) -> usize {
    let rows: Vec<Option<String>> = out
        .lines()
        .skip(1)
        .map(|l| {
            l.split_whitespace()
                .nth(1)
                .filter(|w| *w != "*")
                .map(str::to_string)
        })
        .collect();
    want.iter().zip(&rows).filter(|(w, got)| w == got).count()
}

/// One streamed ICMP trace: per hop event, how long after its reply reached
/// src's wire it reached the client (ms).
fn stream_lag(lab: &Lab, socket: &str, dst: &str) -> Result<Vec<f64>> {
    let ifname = lab.ifname("src", "r1")?.to_string();
    let mut tcpdump: Child = lab
        .command("src", "tcpdump")?
        .args([
            "-i",
            &ifname,
            "-n",
            "-l",
            "--time-stamp-precision=nano",
            "-tt",
            "icmp",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("tcpdump")?;
    std::thread::sleep(Duration::from_millis(500));
    let arrivals = lab.in_netns("src", || stream_events(socket, dst))??;
    std::thread::sleep(Duration::from_millis(200));
    let _ = tcpdump.kill();
    let mut text = String::new();
    tcpdump
        .stdout
        .take()
        .context("tcpdump output")?
        .read_to_string(&mut text)?;
    let mut lags = Vec::new();
    for (at_ns, from) in arrivals {
        let reply = text.lines().find_map(|l| {
            let mut w = l.split_whitespace();
            let t = w.next()?;
            (w.next() == Some("IP") && w.next() == Some(from.as_str()) && !l.contains("request"))
                .then(|| t.replace('.', "").parse::<i128>().ok())
                .flatten()
        });
        if let Some(reply_ns) = reply {
            lags.push((at_ns - reply_ns) as f64 / 1e6);
        }
    }
    Ok(lags)
}

/// Reads a streamed answer; each hop event's arrival (CLOCK_REALTIME ns)
/// and the address of its first run's hop.
fn stream_events(socket: &str, dst: &str) -> Result<Vec<(i128, String)>> {
    let mut s = UnixStream::connect(socket)?;
    write!(
        s,
        "GET /traceroute/{dst}?protocol=icmp&traceroute_queries=1&stream=true HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )?;
    let mut reader = BufReader::new(s);
    let mut out = Vec::new();
    let mut line = String::new();
    while reader.read_line(&mut line)? > 0 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as i128;
        if let Some(i) = line.find("{\"event\"") {
            let event: Value = serde_json::from_str(line[i..].trim()).unwrap_or_default();
            if event["event"] == "hop"
                && let Some(from) = event["hops"][0]["ip_address"].as_str()
                && !from.is_empty()
            {
                out.push((now, from.to_string()));
            }
        }
        line.clear();
    }
    Ok(out)
}

/// The agent service in src, for the run.
struct Service {
    child: Child,
    socket: String,
}

impl Service {
    fn start(lab: &Lab, socket: &std::path::Path, config: &std::path::Path) -> Result<Service> {
        let child = lab
            .command("src", &agent_binary().to_string_lossy())?
            .arg("serve")
            .arg("--socket")
            .arg(socket)
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the agent service")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() {
            if Instant::now() > deadline {
                bail!("the agent service did not come up");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        Ok(Service {
            child,
            socket: socket.to_string_lossy().into_owned(),
        })
    }

    fn stop(&mut self) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ms(s: Option<Spread>) -> String {
    s.map_or("-".into(), |s| {
        format!("{:.3} ({:.3}–{:.3})", s.median, s.min, s.max)
    })
}

pub fn section(b: &CliBench) -> String {
    let mut out = String::from(
        "## The command line: through the agent, in-process, streamed\n\n\
         Both tools at their defaults (traceroute `-n`), A B A B, 10 runs each; wall seconds of the \
         whole process, median (min–max), and the ratio taken pair by pair. Hops: runs whose first \
         run found each of the lab's hops (silent ones as silent).\n\n\
         | case | lab | agent s | traceroute s | agent / traceroute | hops agent | hops traceroute |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for c in &b.cases {
        let hops = |found: &[usize]| {
            let all = found.iter().filter(|&&n| n == c.hops).count();
            format!("{all}/{} runs all {}", found.len(), c.hops)
        };
        out.push_str(&format!(
            "| {} | `{}` | {} | {} | {} | {} | {} |\n",
            c.name,
            c.lab,
            ms(spread(&c.agent_s)).replace(" (", " s ("),
            ms(spread(&c.peer_s)),
            spread(&c.ratios()).map_or("-".into(), |s| format!(
                "{:.2}× ({:.2}–{:.2})",
                s.median, s.min, s.max
            )),
            hops(&c.agent_hops),
            hops(&c.peer_hops),
        ));
    }
    out.push_str("\nCommands (in src):\n\n");
    for c in &b.cases {
        out.push_str(&format!("- `{}` against `{}`\n", c.agent, c.peer));
    }
    let first: Vec<f64> = b
        .stream_ms
        .iter()
        .filter_map(|t| t.first().copied())
        .collect();
    let later: Vec<f64> = b
        .stream_ms
        .iter()
        .flat_map(|t| t.iter().skip(1).copied())
        .collect();
    out.push_str(&format!(
        "\nStreamed answer (`stream=true`, ICMP, `chain_limited`, {} traces): the first hop event \
         reached the client {} ms after its reply reached src's wire, median (min–max). Later \
         events: {} ms over {} events; a hop's event waits until every TTL below it has settled, \
         so the hops after the silent r3 come once its wait is over.\n",
        b.stream_ms.len(),
        ms(spread(&first)),
        ms(spread(&later)),
        later.len()
    ));
    out
}

pub fn json(b: &CliBench) -> Value {
    json!({
        "cases": b.cases.iter().map(|c| json!({
            "name": c.name, "lab": c.lab, "agent": c.agent, "peer": c.peer,
            "agent_s": c.agent_s, "peer_s": c.peer_s, "ratios": c.ratios(),
            "agent_hops": c.agent_hops, "peer_hops": c.peer_hops, "hops": c.hops,
        })).collect::<Vec<_>>(),
        "stream_event_after_reply_ms": b.stream_ms,
    })
}
