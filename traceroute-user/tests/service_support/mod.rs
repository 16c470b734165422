//! Running `traceroute-agent serve` in a lab namespace and talking to it over
//! its Unix socket, as the system-probe client does. Everything started here
//! is killed and removed on drop, also when a test panics.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use traceroute_lab::Lab;

pub const AGENT: &str = env!("CARGO_BIN_EXE_traceroute-agent");

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "trl-svc-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running agent; killed (SIGKILL) on drop if still running.
pub struct Agent {
    pub child: Child,
    pub socket: PathBuf,
    pub stderr: PathBuf,
    pub dir: TempDir,
}

impl Agent {
    /// `traceroute-agent serve --socket DIR/agent.sock ARGS` in `node`.
    pub fn start(lab: &Lab, node: &str, args: &[&str]) -> Agent {
        Agent::start_with(lab, node, None, args)
    }

    /// Like [`start`](Self::start), with a config file written to DIR/config.toml.
    pub fn start_with(lab: &Lab, node: &str, config: Option<&str>, args: &[&str]) -> Agent {
        let dir = TempDir::new("agent");
        let mut cmd = lab.command(node, AGENT).unwrap();
        Agent::spawn(dir, &mut cmd, config, args)
    }

    /// Starts `cmd` (which must end in the agent binary) with `serve` arguments.
    pub fn spawn(dir: TempDir, cmd: &mut Command, config: Option<&str>, args: &[&str]) -> Agent {
        let socket = dir.path("agent.sock");
        let stderr = dir.path("stderr.log");
        cmd.arg("serve")
            .arg("--socket")
            .arg(&socket)
            .args(["--shutdown-grace", "3s"]);
        if let Some(text) = config {
            let path = dir.path("config.toml");
            std::fs::write(&path, text).unwrap();
            cmd.arg("--config").arg(&path);
        }
        cmd.args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap());
        let child = cmd.spawn().expect("spawn agent");
        let mut agent = Agent {
            child,
            socket,
            stderr,
            dir,
        };
        agent.wait_ready();
        agent
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("agent exited early ({status}):\n{}", self.log());
            }
            if let Ok(r) = try_get(&self.socket, "/health")
                && r.status == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "agent not ready in time:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn get(&self, path: &str) -> Reply {
        try_get(&self.socket, path)
            .unwrap_or_else(|e| panic!("GET {path}: {e}\nagent log:\n{}", self.log()))
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Waits for the agent to exit.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "agent did not exit within {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait(Duration::from_secs(15))
    }

    /// Value of a metric line `name{labels} value` (labels as written by the
    /// exposition, e.g. `origin="api"`); 0 when absent.
    pub fn metric(&self, name: &str, labels: &str) -> f64 {
        metric(&self.get("/metrics").text(), name, labels)
    }

    /// VmRSS of the agent in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn metric(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let (n, rest) = match key.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (key, ""),
            };
            let wanted = labels.split(',').filter(|s| !s.is_empty());
            let matches = n == name && wanted.clone().all(|w| rest.split(',').any(|l| l == w));
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `GET target` over the Unix socket (HTTP/1.1, Connection: close).
pub fn try_get(socket: &Path, target: &str) -> std::io::Result<Reply> {
    request(
        socket,
        &format!(
            "GET {target} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\nConnection: close\r\n\r\n"
        ),
    )
}

/// Sends a raw request and reads the answer until the server closes.
pub fn request(socket: &Path, raw: &str) -> std::io::Result<Reply> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    s.write_all(raw.as_bytes())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    parse_reply(&buf)
}

pub fn parse_reply(buf: &[u8]) -> std::io::Result<Reply> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no header end"))?;
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| bad("header not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("empty"))?;
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = buf[end + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let nl = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or_else(|| bad("chunk size"))?;
            let size = usize::from_str_radix(
                std::str::from_utf8(&rest[..nl])
                    .map_err(|_| bad("chunk"))?
                    .trim(),
                16,
            )
            .map_err(|_| bad("chunk size"))?;
            rest = &rest[nl + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        body = out;
    }
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// Polls `f` until it is true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The query the system-probe client sends.
pub fn client_query(
    port: u16,
    max_ttl: u8,
    timeout_ns: u64,
    protocol: &str,
    queries: u8,
) -> String {
    format!(
        "client_id=test-client&port={port}&max_ttl={max_ttl}&timeout={timeout_ns}&protocol={protocol}&traceroute_queries={queries}"
    )
}

/// Addresses per hop of run `i` of a record.
pub fn hop_addrs(record: &Value, i: usize) -> Vec<String> {
    record["traceroute"]["runs"][i]["hops"]
        .as_array()
        .expect("hops")
        .iter()
        .map(|h| h["ip_address"].as_str().unwrap().to_string())
        .collect()
}

/// Non-empty lines of a file (empty when it does not exist).
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}
