//! `/metrics` as Prometheus takes it: `promtool check metrics` accepts the
//! classic text, the OpenMetrics text is served to whoever asks for it, and a
//! real Prometheus server (Debian's package) scrapes the agent in the lab and
//! answers queries for the per-target gauges, `build_info` and the process
//! metrics through its HTTP API. Needs root.

mod common;
mod service_support;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use service_support::{Agent, TempDir, eventually, request};
use traceroute_lab::{Family, Lab};

/// A scheduled UDP target in the chain lab, traced every `interval`.
fn config(host: &str, interval: &str, listen: Option<&str>) -> String {
    let listen = listen
        .map(|l| format!("[api]\nlisten = \"{l}\"\n"))
        .unwrap_or_default();
    format!(
        // The named labs' routers do not rate-limit ICMP; tell the agent so.
        "router_icmp_burst = 10000\nrouter_icmp_per_second = 10000\n{listen}\
         [[targets]]\nhost = \"{host}\"\nprotocol = \"udp\"\ninterval = \"{interval}\"\n\
         queries = 1\ne2e_queries = 5\nmax_ttl = 8\ntimeout = \"300ms\"\n"
    )
}

fn get_with_accept(agent: &Agent, accept: &str) -> service_support::Reply {
    request(
        &agent.socket,
        &format!(
            "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
        ),
    )
    .expect("GET /metrics")
}

#[test]
fn promtool_accepts_the_metrics_and_openmetrics_is_negotiated() {
    let lab = Lab::up(&traceroute_lab::named::chain()).unwrap();
    let dst = lab.primary("dst", Family::V4).unwrap().to_string();
    let mut agent = Agent::start_with(&lab, "src", Some(&config(&dst, "300ms", None)), &[]);
    let labels = format!("target=\"{dst}\",protocol=\"UDP\"");
    assert!(
        eventually(Duration::from_secs(15), || agent
            .metric("traceroute_agent_target_destination_reached", &labels)
            == 1.0),
        "{}",
        agent.log()
    );
    // Without an Accept header (curl, promtool): the classic text format.
    let classic = agent.get("/metrics");
    assert_eq!(
        classic.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = classic.text();
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; cargo xtask setup installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{text}"
    );
    let m = |name: &str, labels: &str| service_support::metric(&text, name, labels);
    assert!(m("traceroute_agent_probes_sent_total", "protocol=\"UDP\"") >= 3.0);
    let hops = common::agent::expected(&lab, "src", "dst", dst.parse().unwrap()).len() as f64;
    assert!(m("traceroute_agent_target_hops", &labels) == hops, "{text}");
    assert!(
        m("traceroute_agent_target_e2e_loss_ratio", &labels) == 0.0,
        "{text}"
    );
    assert!(
        m("traceroute_agent_target_e2e_rtt_seconds", &labels) > 0.0,
        "{text}"
    );
    assert!(m("traceroute_agent_build_info", "") == 1.0, "{text}");
    assert!(m("process_resident_memory_bytes", "") > 1e6, "{text}");
    assert!(m("process_open_fds", "") >= 3.0, "{text}");
    assert!(
        m("traceroute_agent_capture_stats_total", "") > 0.0,
        "{text}"
    );
    // Prometheus's own Accept header gets OpenMetrics.
    let om = get_with_accept(
        &agent,
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    );
    assert_eq!(
        om.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let om = om.text();
    assert!(om.ends_with("# EOF\n"));
    assert!(
        om.contains("# TYPE traceroute_agent_runs counter\n"),
        "{om}"
    );
    assert!(agent.stop().success());
}

/// A process killed and reaped on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_prometheus_server_scrapes_the_agent_and_answers_queries() {
    let lab = Lab::up(&traceroute_lab::named::chain()).unwrap();
    let dst = lab.primary("dst", Family::V4).unwrap().to_string();
    // Both listen on the loopback of the lab's src namespace.
    let agent_addr = "127.0.0.1:18089";
    let prometheus_addr = "127.0.0.1:19090";
    let mut agent = Agent::start_with(
        &lab,
        "src",
        Some(&config(&dst, "1s", Some(agent_addr))),
        &[],
    );
    let dir = TempDir::new("prometheus");
    let prometheus_config = dir.path("prometheus.yml");
    std::fs::write(
        &prometheus_config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  \
             - job_name: agent\n    static_configs:\n      - targets: ['{agent_addr}']\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path("prometheus.log")).unwrap();
    let prometheus = lab
        .command("src", "prometheus")
        .unwrap()
        .arg(format!("--config.file={}", prometheus_config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path("data").display()
        ))
        .arg(format!("--web.listen-address={prometheus_addr}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("prometheus (Debian package; cargo xtask setup installs it)");
    let _prometheus = Reaped(prometheus);
    // Queries go through Prometheus's HTTP API, from inside the namespace.
    let query = |promql: &str| -> Option<Vec<Value>> {
        let out = lab
            .exec(
                "src",
                "curl",
                [
                    "-sfG",
                    "--max-time",
                    "2",
                    &format!("http://{prometheus_addr}/api/v1/query"),
                    "--data-urlencode",
                    &format!("query={promql}"),
                ],
            )
            .ok()?;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["status"] == "success").then(|| v["data"]["result"].as_array().cloned())?
    };
    let value = |series: &Value| -> f64 {
        series["value"][1]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let reached = format!(
        "traceroute_agent_target_destination_reached{{job=\"agent\",target=\"{dst}\",protocol=\"UDP\"}}"
    );
    let ok = eventually(Duration::from_secs(40), || {
        query(&reached).is_some_and(|r| r.len() == 1 && value(&r[0]) == 1.0)
    });
    assert!(
        ok,
        "Prometheus never saw the target reached: {:?}\nprometheus log:\n{}\nagent log:\n{}",
        query(&reached),
        std::fs::read_to_string(dir.path("prometheus.log")).unwrap_or_default(),
        agent.log()
    );
    let up = query("up{job=\"agent\"}").unwrap();
    assert_eq!(value(&up[0]), 1.0, "{up:?}");
    let hops = query(&format!("traceroute_agent_target_hops{{target=\"{dst}\"}}")).unwrap();
    let expected = common::agent::expected(&lab, "src", "dst", dst.parse().unwrap()).len();
    assert_eq!(value(&hops[0]), expected as f64, "{hops:?}");
    let runs = query("traceroute_agent_runs_total{origin=\"schedule\"}").unwrap();
    assert!(!runs.is_empty() && value(&runs[0]) >= 1.0, "{runs:?}");
    let loss = query(&format!(
        "traceroute_agent_target_e2e_loss_ratio{{target=\"{dst}\"}}"
    ))
    .unwrap();
    assert_eq!(value(&loss[0]), 0.0, "{loss:?}");
    let info = query("traceroute_agent_build_info").unwrap();
    assert_eq!(
        info[0]["metric"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{info:?}"
    );
    let rss = query("process_resident_memory_bytes{job=\"agent\"}").unwrap();
    assert!(value(&rss[0]) > 1e6, "{rss:?}");
    assert!(agent.stop().success());
}
