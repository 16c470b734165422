//! The service configuration: a TOML file (`serve --config FILE`), overridable
//! by command-line flags. Unknown keys are errors, so a typo never silently
//! falls back to a default. docs/SERVICE.md is the reference.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::capture::CaptureMode;
use crate::probe::Protocol;
use crate::resolve::{self, FamilyPreference};
use crate::route::Egress;
use crate::sinks::clickhouse::{Options as ClickHouseOptions, Secret};
use crate::trace::mda::{Confidence, MdaRule};
use crate::trace::request::{Multipath, TraceParams};
use crate::trace::{TcpMethod, TraceRequest, request};

/// Where the Unix socket lives unless configured otherwise.
pub const DEFAULT_SOCKET: &str = "/run/traceroute-agent/traceroute-agent.sock";

/// Most scheduled targets in one config.
pub const MAX_TARGETS: usize = 10_000;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `namespace` of every record.
    pub namespace: String,
    /// Tags added to every record (API answers and scheduled runs; a target's
    /// own tags come after these).
    pub tags: Vec<String>,
    /// Log lines: `text` (default) or `json` (one object per line, for log
    /// shippers). `--log-format` on the command line wins.
    pub log_format: LogFormat,
    /// This host's public address, for `source.public_ip` of every record.
    /// Static: the agent never asks an outside lookup service for it.
    pub public_ip: Option<std::net::IpAddr>,
    /// Reply capture: `auto` (eBPF, falling back to sockets), `ebpf`, `socket`.
    pub capture: CaptureMode,
    /// Safety rail: probes per second across every trace of the process
    /// (routers' budgets pace probing; this only caps a runaway).
    pub probes_per_second: u32,
    /// ICMP errors a router is assumed to send us at once (Linux: 6).
    pub router_icmp_burst: u32,
    /// ... and per second after that (Linux: 1).
    pub router_icmp_per_second: f64,
    /// On SIGTERM: how long in-flight traces may take to finish before they are cancelled.
    #[serde(deserialize_with = "duration")]
    pub shutdown_grace: Duration,
    pub api: ApiConfig,
    pub output: OutputConfig,
    pub targets: Vec<Target>,
}

impl Config {
    /// The router budget the tracer assumes, with the 2 % it keeps to spare.
    pub fn router_rate(&self) -> crate::trace::budget::Rate {
        crate::trace::budget::Rate::router(self.router_icmp_burst, self.router_icmp_per_second)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            namespace: "default".into(),
            tags: Vec::new(),
            public_ip: None,
            log_format: LogFormat::Text,
            capture: CaptureMode::Auto,
            probes_per_second: request::PROBES_PER_SECOND.default,
            router_icmp_burst: crate::trace::budget::Rate::ROUTER_DEFAULT.burst,
            router_icmp_per_second: 1.0,
            shutdown_grace: Duration::from_secs(10),
            api: ApiConfig::default(),
            output: OutputConfig::default(),
            targets: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Path of the Unix socket; `""` disables it.
    pub socket: PathBuf,
    /// Permission bits of the socket file, as an octal string.
    #[serde(deserialize_with = "octal_mode")]
    pub socket_mode: u32,
    /// Group owning the socket file (name or numeric id); unchanged when absent.
    pub socket_group: Option<String>,
    /// TCP listener (`127.0.0.1:8089`, `[::1]:8089`); none when absent.
    pub listen: Option<SocketAddr>,
    /// A non-loopback `listen` address is refused unless this is true: the API
    /// has no authentication.
    pub allow_non_loopback: bool,
    /// Most API traces running at once; more are answered 503 + Retry-After.
    pub max_concurrent_traces: usize,
    /// Most open API connections; more are closed at once (and logged), so
    /// idle or slow clients cannot exhaust the process's file descriptors.
    pub max_connections: usize,
    /// Bound on one API request from start to answer (resolution, probing,
    /// reverse DNS, e2e probes); past it the answer is 504 `TIMEOUT`.
    #[serde(deserialize_with = "duration")]
    pub request_timeout: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            socket: PathBuf::from(DEFAULT_SOCKET),
            socket_mode: 0o660,
            socket_group: None,
            listen: None,
            allow_non_loopback: false,
            max_concurrent_traces: 32,
            max_connections: 512,
            request_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// JSON lines of scheduled runs go to this file (appended, reopened on
    /// SIGHUP); to stdout when absent.
    pub path: Option<PathBuf>,
    /// Scheduled runs also go to ClickHouse (`[output.clickhouse]`).
    pub clickhouse: Option<ClickHouseConfig>,
}

/// `[output.clickhouse]`: batched inserts through an on-disk spool
/// (docs/FLEET.md). Only `url` is required.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseConfig {
    /// The HTTP interface, `http://host:8123`.
    pub url: String,
    #[serde(default = "clickhouse_defaults::database")]
    pub database: String,
    #[serde(default = "clickhouse_defaults::user")]
    pub user: String,
    /// The password itself, or (better) `password_file`; never logged.
    #[serde(default)]
    pub password: Option<Secret>,
    /// A file holding the password (trailing newline ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// A batch is sent when it holds this many records ...
    #[serde(default = "clickhouse_defaults::batch_records")]
    pub batch_records: u64,
    /// ... or when its oldest record is this old.
    #[serde(
        default = "clickhouse_defaults::batch_age",
        deserialize_with = "duration"
    )]
    pub batch_age: Duration,
    /// Where batches wait until the store took them.
    #[serde(default = "clickhouse_defaults::spool_dir")]
    pub spool_dir: PathBuf,
    /// Bound on the spool; past it the oldest records are dropped (counted).
    #[serde(default = "clickhouse_defaults::spool_max_bytes")]
    pub spool_max_bytes: u64,
    /// Longest wait between two attempts while the store fails.
    #[serde(
        default = "clickhouse_defaults::retry_max",
        deserialize_with = "duration"
    )]
    pub retry_max: Duration,
}

mod clickhouse_defaults {
    use std::path::PathBuf;
    use std::time::Duration;

    pub fn database() -> String {
        "traceroute".into()
    }
    pub fn user() -> String {
        "default".into()
    }
    pub fn batch_records() -> u64 {
        1000
    }
    pub fn batch_age() -> Duration {
        Duration::from_secs(5)
    }
    pub fn spool_dir() -> PathBuf {
        // The unit's StateDirectory.
        PathBuf::from("/var/lib/traceroute-agent/clickhouse-spool")
    }
    pub fn spool_max_bytes() -> u64 {
        1 << 30
    }
    pub fn retry_max() -> Duration {
        Duration::from_secs(60)
    }
}

impl ClickHouseConfig {
    /// Checks the section and resolves it (the password file is read here).
    pub fn options(&self) -> anyhow::Result<ClickHouseOptions> {
        use anyhow::{Context, bail};
        let rest = self.url.strip_prefix("http://").with_context(|| {
            format!(
                "output.clickhouse.url {:?}: only http:// is supported (for TLS, a local proxy)",
                self.url
            )
        })?;
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains(['/', '?', '@']) {
            bail!(
                "output.clickhouse.url {:?}: want http://host[:port]",
                self.url
            );
        }
        let uri: hyper::Uri = format!("http://{authority}/")
            .parse()
            .with_context(|| format!("output.clickhouse.url {:?}", self.url))?;
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_string();
        let identifier = |name: &str, value: &str| {
            if value.is_empty()
                || value.len() > 64
                || !value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                bail!("output.clickhouse.{name} {value:?}: letters, digits and _ only");
            }
            Ok(())
        };
        identifier("database", &self.database)?;
        if self.user.is_empty() || self.user.len() > 128 || self.user.contains(':') {
            bail!("output.clickhouse.user must be 1 to 128 characters without ':'");
        }
        if !(1..=100_000).contains(&self.batch_records) {
            bail!("output.clickhouse.batch_records must be 1..=100000");
        }
        if self.batch_age < Duration::from_millis(100) || self.batch_age > Duration::from_secs(600)
        {
            bail!("output.clickhouse.batch_age must be between 100ms and 10m");
        }
        if self.spool_max_bytes < 1 << 20 {
            bail!("output.clickhouse.spool_max_bytes must be at least 1 MiB");
        }
        if self.retry_max < Duration::from_secs(1) || self.retry_max > Duration::from_secs(3600) {
            bail!("output.clickhouse.retry_max must be between 1s and 1h");
        }
        let password = match (&self.password, &self.password_file) {
            (Some(_), Some(_)) => bail!("output.clickhouse: password or password_file, not both"),
            (Some(p), None) => p.clone(),
            (None, Some(file)) => Secret::new(
                std::fs::read_to_string(file)
                    .with_context(|| {
                        format!("output.clickhouse.password_file {}", file.display())
                    })?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
            ),
            (None, None) => Secret::default(),
        };
        Ok(ClickHouseOptions {
            host,
            port: uri.port_u16().unwrap_or(8123),
            database: self.database.clone(),
            user: self.user.clone(),
            password,
            batch_records: self.batch_records,
            batch_age: self.batch_age,
            spool_dir: self.spool_dir.clone(),
            spool_max_bytes: self.spool_max_bytes,
            retry_max: self.retry_max,
        })
    }
}

/// A scheduled target.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub host: String,
    #[serde(default = "default_protocol", deserialize_with = "protocol")]
    pub protocol: Protocol,
    /// Destination port; the protocol's default when absent.
    #[serde(default)]
    pub port: Option<u16>,
    /// Time between the starts of two runs.
    #[serde(deserialize_with = "duration")]
    pub interval: Duration,
    /// Runs (`traceroute.runs[]`) per trace.
    #[serde(default = "default_queries")]
    pub queries: u8,
    #[serde(default = "default_max_ttl")]
    pub max_ttl: u8,
    /// End-to-end probes per run (`e2e_probe` in the record, and the
    /// `target_e2e_*` gauges); none by default.
    #[serde(default = "default_e2e_queries")]
    pub e2e_queries: u8,
    /// Per-hop timeout.
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub reverse_dns: bool,
    /// `any`, `v4` or `v6`.
    #[serde(default)]
    pub family: FamilyPreference,
    /// Stop after this many runs (none: run forever).
    #[serde(default)]
    pub count: Option<u64>,
    /// Flows traced at once (see the CLI's `--paths`).
    #[serde(default = "default_paths")]
    pub paths: u16,
    /// `"mda"`: multipath discovery instead of a fixed number of flows.
    #[serde(default)]
    pub multipath: Option<MultipathMethod>,
    /// MDA's confidence in percent: 95 (default) or 99.
    #[serde(default)]
    pub confidence: Option<u8>,
    /// MDA's stopping rule: `"lite"` (default) or `"full"` (see the CLI's
    /// `--mda-rule`).
    #[serde(default)]
    pub mda_rule: Option<String>,
    /// Pin the flows (first source port or echo id; more flows take the
    /// next ones): the same flows every run, so through load balancers a
    /// path change means the network changed, not that a new flow hashed
    /// elsewhere.
    #[serde(default)]
    pub flow_id: Option<u16>,
    /// Path MTU per hop (UDP or ICMP, one flow; see the CLI's `--pmtu`).
    #[serde(default)]
    pub pmtu: bool,
    /// TCP probes: `syn` (default), `sack` or `prefer_sack`.
    #[serde(default)]
    pub tcp_method: Option<String>,
    /// Source address of the probes (one of the host's; policy routes that
    /// match on it apply); see the CLI's `-s`.
    #[serde(default)]
    pub source: Option<IpAddr>,
    /// Send through this interface, by its routes; see the CLI's `-i`.
    #[serde(default)]
    pub interface: Option<String>,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (colour on a terminal).
    #[default]
    Text,
    /// One JSON object per line: timestamp, level, target, fields.
    Json,
}

/// How a target's multipath discovery is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MultipathMethod {
    Mda,
}

// serde wants functions; the values come from the one table of defaults.
fn default_protocol() -> Protocol {
    request::DEFAULT_PROTOCOL
}
fn default_queries() -> u8 {
    request::QUERIES.default
}
fn default_e2e_queries() -> u8 {
    request::E2E_QUERIES.default
}
fn default_max_ttl() -> u8 {
    request::MAX_TTL.default
}
fn default_timeout() -> Duration {
    request::TIMEOUT.default
}
fn default_paths() -> u16 {
    request::PATHS.default
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        Config::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: ranges and cross-field rules.
    pub fn validate(&self) -> anyhow::Result<()> {
        use anyhow::bail;
        if self.namespace.is_empty() || self.namespace.len() > 256 {
            bail!("namespace must be 1 to 256 characters");
        }
        request::PROBES_PER_SECOND.check("probes_per_second", self.probes_per_second)?;
        if !(1..=100_000).contains(&self.router_icmp_burst) {
            bail!("router_icmp_burst must be 1..=100000");
        }
        if !(0.01..=100_000.0).contains(&self.router_icmp_per_second) {
            bail!("router_icmp_per_second must be 0.01..=100000");
        }
        if self.api.max_concurrent_traces == 0 || self.api.max_concurrent_traces > 10_000 {
            bail!("api.max_concurrent_traces must be 1..=10000");
        }
        if !(1..=60_000).contains(&self.api.max_connections) {
            bail!("api.max_connections must be 1..=60000");
        }
        if self.api.request_timeout < Duration::from_secs(1)
            || self.api.request_timeout > Duration::from_secs(3600)
        {
            bail!("api.request_timeout must be between 1s and 1h");
        }
        if self.api.socket_mode > 0o777 {
            bail!("api.socket_mode must be at most 0777");
        }
        if let Some(addr) = self.api.listen
            && !addr.ip().is_loopback()
            && !self.api.allow_non_loopback
        {
            bail!(
                "api.listen = {addr} is not a loopback address; the API has no authentication \
                 (set api.allow_non_loopback = true to allow it)"
            );
        }
        if self.api.socket.as_os_str().is_empty() && self.api.listen.is_none() {
            bail!("no listener: api.socket is empty and api.listen is not set");
        }
        if self.targets.len() > MAX_TARGETS {
            bail!("at most {MAX_TARGETS} targets");
        }
        for (i, t) in self.targets.iter().enumerate() {
            t.validate()
                .map_err(|e| anyhow::anyhow!("targets[{i}] ({}): {e}", t.host))?;
        }
        if let Some(clickhouse) = &self.output.clickhouse {
            clickhouse.options()?;
        }
        Ok(())
    }
}

impl Target {
    /// The request of one run, built (and so checked) through the one set of
    /// bounds every entry point uses.
    pub fn request(&self) -> Result<TraceRequest, request::BadRequest> {
        let mut multipath = None;
        if self.multipath.is_some() {
            let percent = self.confidence.unwrap_or(95);
            let confidence =
                Confidence::from_percent(percent).ok_or_else(|| request::OutOfRange {
                    name: "confidence".into(),
                    range: "95 or 99".into(),
                    value: percent.to_string(),
                })?;
            let rule = match &self.mda_rule {
                None => MdaRule::default(),
                Some(rule) => rule.parse().map_err(|_| request::OutOfRange {
                    name: "mda_rule".into(),
                    range: "lite or full".into(),
                    value: rule.clone(),
                })?,
            };
            multipath = Some(Multipath { confidence, rule });
        }
        let tcp_method = match &self.tcp_method {
            None => TcpMethod::default(),
            Some(method) => method.parse().map_err(|_| request::OutOfRange {
                name: "tcp_method".into(),
                range: "syn, sack, prefer_sack or syn_socket".into(),
                value: method.clone(),
            })?,
        };
        TraceParams {
            port: self.port,
            max_ttl: self.max_ttl,
            queries: self.queries,
            timeout: self.timeout,
            e2e_queries: self.e2e_queries,
            paths: self.paths,
            multipath,
            pmtu: self.pmtu,
            flow_id: self.flow_id,
            tcp_method,
            family: self.family,
            egress: Egress {
                source: self.source,
                interface: self.interface.clone(),
            },
            reverse_dns: self.reverse_dns,
            ..TraceParams::new(self.host.clone(), self.protocol)
        }
        .build()
    }

    fn validate(&self) -> anyhow::Result<()> {
        use anyhow::bail;
        if resolve::parse_literal(&self.host)?.is_none() {
            resolve::validate_host(&self.host)?;
        }
        if self.port == Some(0) {
            bail!("port must be 1..=65535");
        }
        if self.interval < Duration::from_millis(100) {
            bail!("interval must be at least 100ms");
        }
        self.request()?;
        if self.confidence.is_some() && self.multipath.is_none() {
            bail!("confidence applies to multipath = \"mda\" only");
        }
        if self.mda_rule.is_some() && self.multipath.is_none() {
            bail!("mda_rule applies to multipath = \"mda\" only");
        }
        if self.count == Some(0) {
            bail!("count must be at least 1");
        }
        Ok(())
    }
}

/// Parses `"1s"`, `"500ms"`, `"2m"`, `"1h"`, `"1.5s"`, `"250us"` (also a bare
/// number of seconds in TOML).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?} (e.g. \"1s\", \"500ms\", \"5m\")"))?;
    let scale = match unit.trim() {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" | "" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("unknown duration unit {other:?} in {text:?}")),
    };
    let secs = value * scale;
    if !secs.is_finite() || !(0.0..=86_400.0 * 365.0).contains(&secs) {
        return Err(format!("duration {text:?} out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Int(u64),
        Float(f64),
    }
    match Raw::deserialize(d)? {
        Raw::Text(s) => parse_duration(&s).map_err(serde::de::Error::custom),
        Raw::Int(n) => parse_duration(&n.to_string()).map_err(serde::de::Error::custom),
        Raw::Float(f) => parse_duration(&f.to_string()).map_err(serde::de::Error::custom),
    }
}

fn octal_mode<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let text = String::deserialize(d)?;
    u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .map_err(|_| serde::de::Error::custom(format!("invalid octal mode {text:?}")))
}

fn protocol<'de, D: Deserializer<'de>>(d: D) -> Result<Protocol, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::request::Mode;

    #[test]
    fn sample_config_parses() {
        let text = include_str!("../../../packaging/config.toml");
        let c = Config::parse(text).unwrap();
        assert_eq!(c.api.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(c.api.socket_mode, 0o660);
    }

    #[test]
    fn full_config() {
        let c = Config::parse(
            r#"
            namespace = "lab"
            tags = ["env:test"]
            public_ip = "198.18.200.1"
            log_format = "json"
            capture = "socket"
            probes_per_second = 500
            shutdown_grace = "2s"
            [api]
            socket = "/tmp/x.sock"
            socket_mode = "0600"
            listen = "127.0.0.1:8089"
            max_concurrent_traces = 4
            request_timeout = "30s"
            [output]
            path = "/tmp/paths.jsonl"
            [[targets]]
            host = "198.18.5.2"
            protocol = "TCP"
            port = 80
            interval = "1s"
            tags = ["t:1"]
            [[targets]]
            host = "dst.lab.example"
            interval = 60
            timeout = "500ms"
            family = "v6"
            count = 2
            [[targets]]
            host = "198.18.5.3"
            interval = "5s"
            multipath = "mda"
            confidence = 99
            mda_rule = "full"
            [[targets]]
            host = "198.18.5.4"
            interval = "5s"
            multipath = "mda"
            "#,
        )
        .unwrap();
        assert_eq!(c.namespace, "lab");
        assert_eq!(c.public_ip, Some("198.18.200.1".parse().unwrap()));
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.capture, CaptureMode::Socket);
        assert_eq!(c.api.socket_mode, 0o600);
        assert_eq!(c.api.listen, Some("127.0.0.1:8089".parse().unwrap()));
        assert_eq!(c.targets.len(), 4);
        let mode = |i: usize| c.targets[i].request().unwrap().mode;
        assert_eq!(
            mode(2),
            Mode::Mda(Multipath {
                confidence: Confidence::P99,
                rule: MdaRule::Full
            })
        );
        assert_eq!(mode(3), Mode::Mda(Multipath::DEFAULT));
        assert_eq!(mode(0), Mode::ONE_FLOW);
        assert_eq!(c.targets[0].protocol, Protocol::Tcp);
        assert_eq!(c.targets[1].protocol, Protocol::Udp);
        assert_eq!(c.targets[1].interval, Duration::from_secs(60));
        assert_eq!(c.targets[1].timeout, Duration::from_millis(500));
        assert_eq!(c.targets[1].family, FamilyPreference::V6);
    }

    #[test]
    fn bad_configs_are_refused_with_a_reason() {
        for (text, why) in [
            ("nope = 1", "unknown field"),
            ("[api]\nlisten = \"198.18.0.1:80\"", "loopback"),
            ("[api]\nsocket = \"\"", "no listener"),
            ("[api]\nsocket_mode = \"999\"", "octal"),
            ("probes_per_second = 0", "probes_per_second"),
            ("shutdown_grace = \"5 parsecs\"", "unit"),
            (
                "[[targets]]\nhost = \"a..b\"\ninterval = \"1s\"",
                "empty label",
            ),
            ("[[targets]]\nhost = \"h\"\ninterval = \"1ms\"", "interval"),
            (
                "[[targets]]\nhost = \"233.252.0.1\"\ninterval = \"1s\"",
                "multicast",
            ),
            (
                "[[targets]]\nhost = \"255.255.255.255\"\ninterval = \"1s\"",
                "broadcast",
            ),
            ("router_icmp_burst = 0", "router_icmp_burst"),
            (
                "[[targets]]\nhost = \"h\"\ninterval = \"1s\"\nmda_rule = \"full\"",
                "mda_rule applies to multipath",
            ),
            (
                "[[targets]]\nhost = \"h\"\ninterval = \"1s\"\nmultipath = \"mda\"\nmda_rule = \"exact\"",
                "lite or full",
            ),
            (
                "[[targets]]\nhost = \"h\"\ninterval = \"1s\"\nflow_id = 0",
                "pin no flow",
            ),
            (
                "[[targets]]\nhost = \"h\"\ninterval = \"1s\"\nflow_id = 65535\npaths = 3",
                "would wrap past 65535",
            ),
            (
                "[[targets]]\nhost = \"h\"\ninterval = \"1s\"\nconfidence = 99",
                "confidence applies to multipath",
            ),
            (
                "[[targets]]\nhost = \"h\"\ninterval = \"1s\"\nprotocol = \"sctp\"",
                "protocol",
            ),
            (
                "[[targets]]\nhost = \"h\"\ninterval = \"1s\"\nmax_ttl = 0",
                "max_ttl",
            ),
            (
                "[[targets]]\nhost = \"h\"\ninterval = \"1s\"\nqueries = 11",
                "queries",
            ),
            (
                "[[targets]]\nhost = \"h\"\ninterval = \"1s\"\ntimeout = \"1m\"",
                "timeout",
            ),
            ("[[targets]]\nhost = \"h\"", "interval"),
            (
                "[[targets]]\nhost = \"h\"\ninterval = \"1s\"\ninterface = \"eth0:1\"",
                "not an interface name",
            ),
            (
                "[[targets]]\nhost = \"h\"\ninterval = \"1s\"\nsource = \"2001:db8::1\"\nfamily = \"v4\"",
                "other IP version",
            ),
            (
                "[[targets]]\nhost = \"h\"\ninterval = \"1s\"\nsource = \"h\"",
                "invalid IP address",
            ),
        ] {
            let err = format!("{:#}", Config::parse(text).unwrap_err());
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }

    #[test]
    fn a_target_pins_its_source_and_interface() {
        let c = Config::parse(
            "[[targets]]\nhost = \"h\"\ninterval = \"1s\"\nsource = \"2001:db8::1\"\ninterface = \"wan1\"",
        )
        .unwrap();
        let r = c.targets[0].request().unwrap();
        assert_eq!(r.egress.source, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(r.egress.interface.as_deref(), Some("wan1"));
        // A name resolves to the pinned source's family.
        assert_eq!(r.family, FamilyPreference::V6);
    }

    #[test]
    fn the_clickhouse_section_is_checked_and_its_password_never_shown() {
        let file = std::env::temp_dir().join(format!("trl-ch-pw-{}", std::process::id()));
        std::fs::write(&file, "pw-from-file\n").unwrap();
        let text = format!(
            "[output.clickhouse]\nurl = \"http://198.18.7.1:18123/\"\npassword_file = \"{}\"\n",
            file.display()
        );
        let config = Config::parse(&text).unwrap();
        let section = config.output.clickhouse.as_ref().unwrap();
        let options = section.options().unwrap();
        assert_eq!((options.host.as_str(), options.port), ("198.18.7.1", 18123));
        assert_eq!(options.database, "traceroute");
        assert_eq!(options.password.expose(), "pw-from-file");
        assert_eq!(options.batch_records, 1000);
        let inline = Config::parse("[output.clickhouse]\nurl = \"http://[2001:db8::7]\"\npassword = \"inline-pw\"\n").unwrap();
        let inline = inline.output.clickhouse.unwrap();
        assert_eq!(inline.options().unwrap().port, 8123);
        assert_eq!(inline.options().unwrap().host, "2001:db8::7");
        for shown in [format!("{config:?}"), format!("{inline:?}"), format!("{options:?}")] {
            assert!(!shown.contains("pw-from-file") && !shown.contains("inline-pw"), "{shown}");
        }
        std::fs::remove_file(&file).unwrap();
        for (bad, says) in [
            ("url = \"https://h:8443\"", "only http://"),
            ("url = \"http://h:8123/db?x=1\"", "want http://host[:port]"),
            ("url = \"http://h\"\ndatabase = \"a;DROP\"", "letters, digits and _ only"),
            ("url = \"http://h\"\npassword = \"a\"\npassword_file = \"/x\"", "not both"),
            ("url = \"http://h\"\npassword_file = \"/nonexistent/pw\"", "password_file"),
            ("url = \"http://h\"\nbatch_records = 0", "batch_records"),
            ("url = \"http://h\"\nspool_max_bytes = 10", "spool_max_bytes"),
        ] {
            let err = Config::parse(&format!("[output.clickhouse]\n{bad}\n")).unwrap_err();
            assert!(format!("{err:#}").contains(says), "{bad}: {err:#}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("1e400s").is_err());
    }
}
