//! One table of defaults and limits (`trace::request`), three entry points:
//! the CLI, the HTTP API and the config's targets must accept the same range
//! and default to the same value for every parameter. No root, no network:
//! the CLI is given a host name it refuses before anything starts.

use std::process::Command;
use std::time::Duration;

use traceroute_agent::service::Config;
use traceroute_agent::service::api::parse_params;
use traceroute_agent::trace::request::{MAX_TTL, PATHS, QUERIES, TIMEOUT};

const AGENT: &str = env!("CARGO_BIN_EXE_traceroute-agent");
/// Refused by host validation: every CLI run below ends there at best.
const BAD_HOST: &str = "bad_host.invalid";

/// One parameter as each entry point spells it, with values in the unit of
/// each (CLI milliseconds, API nanoseconds, config duration strings).
struct Row {
    cli_flag: &'static str,
    api_key: &'static str,
    config_key: &'static str,
    /// (lowest, highest, default) in the parameter's own unit, as u64.
    min: u64,
    max: u64,
    default: u64,
    cli: fn(u64) -> String,
    api: fn(u64) -> String,
    config: fn(u64) -> String,
    /// The value each parsed form holds, back in the row's unit.
    api_value: fn(&traceroute_agent::service::api::Params) -> u64,
    config_value: fn(&traceroute_agent::service::config::Target) -> u64,
}

fn rows() -> Vec<Row> {
    let ms = |d: Duration| d.as_millis() as u64;
    vec![
        Row {
            cli_flag: "--max-ttl",
            api_key: "max_ttl",
            config_key: "max_ttl",
            min: MAX_TTL.min.into(),
            max: MAX_TTL.max.into(),
            default: MAX_TTL.default.into(),
            cli: |v| v.to_string(),
            api: |v| v.to_string(),
            config: |v| v.to_string(),
            api_value: |p| p.max_ttl.into(),
            config_value: |t| t.max_ttl.into(),
        },
        Row {
            cli_flag: "--queries",
            api_key: "traceroute_queries",
            config_key: "queries",
            min: QUERIES.min.into(),
            max: QUERIES.max.into(),
            default: QUERIES.default.into(),
            cli: |v| v.to_string(),
            api: |v| v.to_string(),
            config: |v| v.to_string(),
            api_value: |p| p.queries.into(),
            config_value: |t| t.queries.into(),
        },
        Row {
            cli_flag: "--timeout-ms",
            api_key: "timeout",
            config_key: "timeout",
            min: ms(TIMEOUT.min),
            max: ms(TIMEOUT.max),
            default: ms(TIMEOUT.default),
            cli: |v| v.to_string(),
            api: |v| (v * 1_000_000).to_string(),
            config: |v| format!("\"{v}ms\""),
            api_value: |p| p.timeout.unwrap_or(TIMEOUT.default).as_millis() as u64,
            config_value: |t| t.timeout.as_millis() as u64,
        },
        Row {
            cli_flag: "--paths",
            api_key: "paths",
            config_key: "paths",
            min: PATHS.min.into(),
            max: PATHS.max.into(),
            default: PATHS.default.into(),
            cli: |v| v.to_string(),
            api: |v| v.to_string(),
            config: |v| v.to_string(),
            api_value: |p| p.paths.into(),
            config_value: |t| t.paths.into(),
        },
    ]
}

/// Exit status and stderr of `trace BAD_HOST <flag> <value>`.
fn cli(flag: &str, value: &str) -> (Option<i32>, String) {
    let out = Command::new(AGENT)
        .args(["trace", BAD_HOST, flag, value])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn config_target(key: &str, value: Option<&str>) -> anyhow::Result<Config> {
    let line = value.map(|v| format!("{key} = {v}\n")).unwrap_or_default();
    Config::parse(&format!(
        "[[targets]]\nhost = \"198.18.0.1\"\ninterval = \"10s\"\n{line}"
    ))
}

#[test]
fn cli_api_and_config_agree_on_every_default_and_limit() {
    let help = Command::new(AGENT)
        .args(["trace", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    for row in rows() {
        // Defaults.
        let flag_help = help
            .lines()
            .skip_while(|l| !l.contains(row.cli_flag))
            .take(5)
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            flag_help.contains(&format!("[default: {}]", (row.cli)(row.default))),
            "{}: CLI help {flag_help:?}",
            row.cli_flag
        );
        let api = parse_params("").unwrap();
        assert_eq!((row.api_value)(&api), row.default, "{}", row.api_key);
        let config = config_target(row.config_key, None).unwrap();
        assert_eq!(
            (row.config_value)(&config.targets[0]),
            row.default,
            "{}",
            row.config_key
        );
        // Limits: the extremes are taken, one step beyond is refused.
        for (value, ok) in [
            (row.min, true),
            (row.max, true),
            (row.min - 1, false),
            (row.max + 1, false),
        ] {
            // 0 is "the default" in the API (what the Go client sends).
            let api_zero = value == 0;
            let api = parse_params(&format!("{}={}", row.api_key, (row.api)(value)));
            assert_eq!(
                api.is_ok(),
                ok || api_zero,
                "API {}={value}: {:?}",
                row.api_key,
                api.as_ref().err()
            );
            if let (Ok(p), false) = (&api, api_zero) {
                assert_eq!((row.api_value)(p), value);
            }
            let config = config_target(row.config_key, Some(&(row.config)(value)));
            assert_eq!(
                config.is_ok(),
                ok,
                "config {}={value}: {:?}",
                row.config_key,
                config.as_ref().err()
            );
            let (status, stderr) = cli(row.cli_flag, &(row.cli)(value));
            // Both fail with 2 (bad arguments); only an out-of-range value
            // is refused for the flag rather than for the host.
            assert_eq!(status, Some(2), "CLI {} {value}: {stderr}", row.cli_flag);
            assert_eq!(
                !stderr.contains(row.cli_flag),
                ok,
                "CLI {} {value}: {stderr}",
                row.cli_flag
            );
        }
    }
}

/// Durations far beyond what a `Duration` holds, as flags: a usage error
/// naming the allowed range (exit 2), never a panic (exit 101).
#[test]
fn huge_durations_are_usage_errors_not_panics() {
    let cases: [&[&str]; 6] = [
        &["trace", BAD_HOST, "-w", "1e300"],
        &["trace", BAD_HOST, "-w", "1e20"],
        &["trace", BAD_HOST, "-w", "1,1e300,1e300"],
        &["capture", "--interface", "lo", "--seconds", "1e300"],
        &["capture", "--interface", "lo", "--seconds", "inf"],
        &["capture", "--interface", "lo", "--seconds=-1"],
    ];
    for args in cases {
        let out = Command::new(AGENT).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(
            stderr.contains("must be"),
            "{args:?} does not say the range: {stderr}"
        );
    }
}

/// Pinned flows must pin something and never wrap; MDA's confidence needs
/// MDA: each refused with the reason (exit 2), before anything starts.
#[test]
fn flow_pins_that_would_not_pin_are_usage_errors() {
    for (args, why) in [
        (&["--flow-id", "0"][..], "0 would pin no flow"),
        (
            &["--flow-id", "65535", "--paths", "3"][..],
            "would wrap past 65535",
        ),
        (
            &["--flow-id", "65300", "--multipath", "mda"][..],
            "at most 65280",
        ),
        (&["--confidence", "99"][..], "--multipath"),
        (&["--mda-rule", "full"][..], "--multipath"),
        (
            &["--multipath", "mda", "--mda-rule", "exact"][..],
            "possible values: lite, full",
        ),
    ] {
        let out = Command::new(AGENT)
            .args(["trace", "198.18.0.9"])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(why), "{args:?}: {stderr}");
    }
}
