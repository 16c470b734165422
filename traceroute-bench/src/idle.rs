//! What the service costs when it is only waiting: resident memory and CPU
//! of `traceroute-agent serve` with 0, 100 and 10 000 scheduled targets,
//! each due once a day (first runs spread over the day, as the scheduler
//! spreads them), measured over a window after start-up. Runs that fell in
//! the window are counted and reported, not hidden.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use traceroute_lab::{Family, Lab};

use super::load::WorkDir;
use super::load::service::Service;
use super::process::{cpu_seconds, rss_kib};

/// Scheduled-target counts measured.
pub const TARGETS: [usize; 3] = [0, 100, 10_000];
const INTERVAL: &str = "24h";
/// Start-up (config parsed, capture attached, schedule built) before the window.
const SETTLE: Duration = Duration::from_secs(5);

pub struct IdleService {
    pub window_s: f64,
    pub rows: Vec<IdleRow>,
}

pub struct IdleRow {
    pub targets: usize,
    pub rss_kib: u64,
    /// CPU time over the window, as a percentage of one core.
    pub cpu_percent: f64,
    /// Scheduled runs that ended within the window.
    pub runs_in_window: usize,
}

pub fn run(window: Duration) -> Result<IdleService> {
    println!(
        "bench: idle service: {TARGETS:?} targets every {INTERVAL}, {} s windows",
        window.as_secs()
    );
    let lab = Lab::up(&traceroute_lab::named::chain()).context("starting the chain lab")?;
    let dst = lab.primary("dst", Family::V4)?;
    let mut rows = Vec::new();
    for targets in TARGETS {
        let dir = WorkDir(
            std::env::temp_dir().join(format!("xtask-bench-idle-{}-{targets}", std::process::id())),
        );
        std::fs::create_dir_all(&dir.0).context("creating the idle bench's directory")?;
        let output = dir.0.join("paths.jsonl");
        let config = dir.0.join("config.toml");
        std::fs::write(
            &config,
            config_text(&output.display().to_string(), &dst.to_string(), targets),
        )
        .context("writing the idle bench's config")?;
        let service = Service::start_with(&lab, &dir, None, Some(&config))?;
        std::thread::sleep(SETTLE);
        let runs_before = lines(&output);
        let cpu_before = cpu_seconds(service.pid())?;
        let started = Instant::now();
        std::thread::sleep(window);
        let cpu = cpu_seconds(service.pid())? - cpu_before;
        let elapsed = started.elapsed().as_secs_f64();
        let row = IdleRow {
            targets,
            rss_kib: rss_kib(service.pid())?,
            cpu_percent: 100.0 * cpu / elapsed,
            runs_in_window: lines(&output).saturating_sub(runs_before),
        };
        service.stop(&lab)?;
        rows.push(row);
    }
    Ok(IdleService {
        window_s: window.as_secs_f64(),
        rows,
    })
}

fn lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

fn config_text(output: &str, host: &str, targets: usize) -> String {
    let mut text = format!("[output]\npath = \"{output}\"\n");
    for _ in 0..targets {
        let _ = write!(
            text,
            "\n[[targets]]\nhost = \"{host}\"\nprotocol = \"udp\"\ninterval = \"{INTERVAL}\"\n"
        );
    }
    text
}

/// The report's section.
pub fn section(i: &IdleService) -> String {
    let mut out = format!(
        "## The service at rest: memory and CPU with scheduled targets\n\n\
         `traceroute-agent serve --config C` in the `chain` lab, every target due once \
         every {INTERVAL} (first runs spread over the interval), measured over {:.0} s \
         after a {} s start-up. CPU is a percentage of one core; runs that ended in the \
         window are counted, since with 10 000 targets a few fall in it.\n\n",
        i.window_s,
        SETTLE.as_secs()
    );
    let rows: Vec<Vec<String>> = i
        .rows
        .iter()
        .map(|r| {
            vec![
                r.targets.to_string(),
                format!("{:.1} MiB", r.rss_kib as f64 / 1024.0),
                format!("{:.2} %", r.cpu_percent),
                r.runs_in_window.to_string(),
            ]
        })
        .collect();
    out += &super::report::table(&["targets", "RSS", "CPU", "runs in window"], &rows);
    out
}

pub fn json(i: &IdleService) -> serde_json::Value {
    serde_json::json!({
        "window_s": i.window_s,
        "interval": INTERVAL,
        "rows": i.rows.iter().map(|r| serde_json::json!({
            "targets": r.targets,
            "rss_kib": r.rss_kib,
            "cpu_percent": r.cpu_percent,
            "runs_in_window": r.runs_in_window,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_schedules_each_target_once_a_day() {
        let text = config_text("/tmp/x.jsonl", "198.18.3.2", 2);
        assert_eq!(text.matches("[[targets]]").count(), 2);
        assert!(text.contains("interval = \"24h\"") && text.starts_with("[output]"));
    }
}
