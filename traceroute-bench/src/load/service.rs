//! One `traceroute-agent serve` in a lab's src, called over its Unix
//! socket: the agent side of the load benchmark (many requests in flight)
//! and the "agent API" rows of the trace benchmark (one at a time).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use traceroute_lab::Lab;

use super::{IN_FLIGHT, LoadRun, MAX_TTL, Targets, WorkDir};
use crate::agent_binary;
use crate::counter::ProbeCounter;
use crate::http;
use crate::process::{Usage, cpu_seconds, peak_rss_kib, reset_peak_rss};
use crate::truth::{agent_runs, judge};

/// Longer than the service's own request timeout (60 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);
/// BUSY answers one request retries before it counts as failed.
const MAX_BUSY_RETRIES: u32 = 100;

pub struct Service {
    pid: u32,
    socket: PathBuf,
    log: PathBuf,
    /// `--pps`, when not the agent's default.
    pps: Option<u32>,
}

impl Service {
    /// Starts the service in src, with `--pps` when given (else the
    /// agent's defaults), and waits until `/health` answers.
    pub fn start(lab: &Lab, dir: &WorkDir, pps: Option<u32>) -> Result<Service> {
        Self::start_with(lab, dir, pps, None)
    }

    /// Like [`start`](Self::start), with `--config config` when given.
    pub fn start_with(
        lab: &Lab,
        dir: &WorkDir,
        pps: Option<u32>,
        config: Option<&Path>,
    ) -> Result<Service> {
        let socket = dir.0.join("agent.sock");
        let log = dir.0.join("agent.log");
        let mut cmd = Command::new(agent_binary());
        cmd.args(["serve", "--socket"]).arg(&socket);
        if let Some(config) = config {
            cmd.arg("--config").arg(config);
        }
        if let Some(pps) = pps {
            cmd.args(["--pps", &pps.to_string()]);
        }
        cmd.args(["--shutdown-grace", "3s"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).context("creating the agent's log")?);
        let pid = lab.spawn("src", &mut cmd)?;
        let service = Service {
            pid,
            socket,
            log,
            pps,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match http::get(&service.socket, "/health", Duration::from_secs(2)) {
                Ok(r) if r.status == 200 => return Ok(service),
                _ if Instant::now() > deadline => {
                    let _ = lab.stop(pid);
                    bail!(
                        "the agent service was not ready within 30 s:\n{}",
                        service.log_text()
                    )
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn stop(self, lab: &Lab) -> Result<()> {
        lab.stop(self.pid)?;
        Ok(())
    }

    /// False once the process has exited (also when killed) or removed its
    /// socket (it is stopping).
    pub fn running(&self) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        process_state(&stat).is_some_and(|s| s != 'Z' && s != 'X') && self.socket.exists()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path` on the service's socket.
    pub fn get(&self, path: &str, timeout: Duration) -> std::io::Result<http::Response> {
        http::get(&self.socket, path, timeout)
    }

    /// How the service was started, `S` for its socket.
    pub fn serve_command(&self) -> String {
        let pps = self.pps.map_or(String::new(), |p| format!(" --pps {p}"));
        format!("traceroute-agent serve --socket S{pps}")
    }

    fn command_line(&self) -> String {
        format!(
            "{}; {IN_FLIGHT} x GET {}",
            self.serve_command(),
            query_path("TARGET")
        )
    }

    /// Traces every target through the API, timed and measured.
    pub fn trace_all(
        &self,
        lab: &Lab,
        counter: &ProbeCounter,
        targets: &Targets,
    ) -> Result<LoadRun> {
        let mut run = LoadRun::new("agent service".into(), self.command_line());
        let cpu_before = cpu_seconds(self.pid)?;
        if !reset_peak_rss(self.pid) {
            run.note = "peak RSS since start (clear_refs refused); ".into();
        }
        let probes_before = counter.read(lab)?;
        let start = Instant::now();
        let (answers, busy) = drive(&self.socket, &targets.addrs);
        run.wall_s = start.elapsed().as_secs_f64();
        run.probes_counted = counter.read(lab)? - probes_before;
        run.usage = Some(Usage {
            cpu_s: cpu_seconds(self.pid)? - cpu_before,
            peak_rss_kib: peak_rss_kib(self.pid)?,
        });
        run.busy_retries = busy;

        let mut reported = Some(0);
        let mut methods = BTreeMap::<String, u64>::new();
        for (target, answer) in targets.addrs.iter().zip(answers) {
            let record = match answer {
                Ok(record) => record,
                Err(reason) => {
                    *run.failures.entry(reason).or_default() += 1;
                    continue;
                }
            };
            let truth = targets.truth_of(*target).expect("a target of the list");
            for hops in agent_runs(&record) {
                run.tally.add(&judge(&hops, truth));
            }
            reported = reported
                .zip(record["probing"]["probes_sent"].as_u64())
                .map(|(sum, n)| sum + n);
            let method = record["capture"]["method"].as_str().unwrap_or("?");
            *methods.entry(method.to_string()).or_default() += 1;
        }
        run.probes_reported = reported.filter(|_| run.failures.is_empty());
        let methods: Vec<String> = methods.keys().cloned().collect();
        run.note += &format!("capture: {}", methods.join(", "));
        if run.failures.values().sum::<u64>() == targets.addrs.len() as u64 {
            bail!(
                "the agent service answered no request: {:?}\n{}",
                run.failures,
                self.log_text()
            );
        }
        Ok(run)
    }
}

/// The state letter of /proc/PID/stat (`R`, `S`, `Z`...), which follows
/// the parenthesised command name.
fn process_state(stat: &str) -> Option<char> {
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// `GET` path of one trace request.
fn query_path(host: &str) -> String {
    format!("/traceroute/{host}?protocol=ICMP&traceroute_queries=1&max_ttl={MAX_TTL}")
}

/// One request per target, at most [`IN_FLIGHT`] at once: the records (or
/// why there is none) in target order, and the number of BUSY retries.
fn drive(socket: &Path, targets: &[IpAddr]) -> (Vec<Result<Value, String>>, u64) {
    let next = AtomicUsize::new(0);
    let busy = AtomicU64::new(0);
    let answers: Mutex<Vec<Option<Result<Value, String>>>> = Mutex::new(vec![None; targets.len()]);
    std::thread::scope(|s| {
        for _ in 0..IN_FLIGHT.min(targets.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&target) = targets.get(i) else {
                        break;
                    };
                    let answer = request(socket, target, &busy);
                    answers
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)[i] = Some(answer);
                }
            });
        }
    });
    let answers = answers
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let answers = answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err("not requested".into())))
        .collect();
    (answers, busy.into_inner())
}

/// One trace request, retried after `Retry-After` while the service is BUSY.
fn request(socket: &Path, target: IpAddr, busy: &AtomicU64) -> Result<Value, String> {
    let path = query_path(&target.to_string());
    for _ in 0..=MAX_BUSY_RETRIES {
        let response = http::get(socket, &path, REQUEST_TIMEOUT).map_err(|e| e.to_string())?;
        let code = response.error_code();
        match response.status {
            200 => {
                return serde_json::from_slice(&response.body)
                    .map_err(|e| format!("200 without a JSON record: {e}"));
            }
            503 if code.as_deref() == Some("BUSY") => {
                busy.fetch_add(1, Ordering::Relaxed);
                let wait = response
                    .header("retry-after")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(1);
                std::thread::sleep(Duration::from_secs(wait));
            }
            status => return Err(format!("{status} {}", code.unwrap_or_default())),
        }
    }
    Err(format!("still BUSY after {MAX_BUSY_RETRIES} retries"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_process_state() {
        assert_eq!(process_state("42 (traceroute (x)) S 1 42 42 0"), Some('S'));
        assert_eq!(process_state("42 (a) Z 1"), Some('Z'));
        assert_eq!(process_state(""), None);
        assert_eq!(process_state("42 (a)"), None);
    }

    #[test]
    fn our_own_process_is_running() {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(matches!(process_state(&stat), Some('R' | 'S')));
    }
}
