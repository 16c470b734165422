//! Part 1: routers with a slow control plane. In `slow` (no ICMP limits)
//! and `slow_limited` (the kernel's defaults), r2 sends its own ICMP errors
//! 30 ms late and r3 120 ms late while forwarding at once. Measured at
//! their defaults: a fresh agent CLI trace (TCP), a fresh service's first
//! API request (first contact) and the one right after it (the path
//! known), traceroute -T, scamper and mtr; each with which routers it
//! found.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::Result;
use traceroute_lab::{Family, Lab, named};

use super::{
    Condition, LabSpec, Measured, Peer, api, api_path, cli, cli_args, found, refill_if, service,
    workdir,
};
use crate::REFILL;
use crate::counter::ProbeCounter;
use crate::peers::Unavailable;
use crate::trace::text_hops;

/// The slowest router's answer time: r3's.
pub const SLOWEST: Duration = named::SLOW_R3;

/// Row names.
pub const CLI: &str = "agent CLI";
pub const FIRST: &str = "agent API, first contact";
pub const KNOWN: &str = "agent API, path known";

/// One lab of part 1.
pub struct SlowLab {
    pub name: &'static str,
    pub limited: bool,
    pub destination: IpAddr,
    /// Ground truth: r1..r4, then dst.
    pub truth: Vec<String>,
    /// Every tool in every condition, the agent's first.
    pub rows: Vec<Measured>,
}

impl SlowLab {
    /// The row of `tool` in `condition`.
    pub fn row(&self, tool: &str, condition: Condition) -> Option<&Measured> {
        self.rows
            .iter()
            .find(|m| m.tool == tool && m.condition == condition)
    }

    /// The conditions measured here.
    pub fn conditions(&self) -> Vec<Condition> {
        if self.limited {
            vec![Condition::Refill, Condition::BackToBack]
        } else {
            vec![Condition::BackToBack]
        }
    }
}

const LABS: [LabSpec; 2] = [
    LabSpec {
        name: "slow",
        topology: named::slow,
        limited: false,
    },
    LabSpec {
        name: "slow_limited",
        topology: named::slow_limited,
        limited: true,
    },
];

pub fn run(runs: u32, unavailable: &Unavailable) -> Result<Vec<SlowLab>> {
    LABS.iter()
        .map(|&spec| run_lab(spec, runs, unavailable))
        .collect()
}

fn run_lab(spec: LabSpec, runs: u32, unavailable: &Unavailable) -> Result<SlowLab> {
    let LabSpec { name, limited, .. } = spec;
    println!("bench: routers, lab `{name}`: src - r1 - r2 (30 ms) - r3 (120 ms) - r4 - dst");
    let (lab, counter) = spec.up("r1")?;
    let destination = lab.primary("dst", Family::V4)?;
    let mut truth: Vec<String> = lab
        .expected_hops("src", "dst", Family::V4)?
        .into_iter()
        .map(|h| h.map_or_else(|| "*".to_string(), |a| a.to_string()))
        .collect();
    truth.push(destination.to_string());
    let mut slow = SlowLab {
        name,
        limited,
        destination,
        truth,
        rows: Vec::new(),
    };
    for condition in slow.conditions() {
        let rows = measure(&lab, &counter, &slow, condition, runs, unavailable)?;
        slow.rows.extend(rows);
    }
    Ok(slow)
}

/// Every tool of part 1 in one condition.
fn measure(
    lab: &Lab,
    counter: &ProbeCounter,
    slow: &SlowLab,
    condition: Condition,
    runs: u32,
    unavailable: &Unavailable,
) -> Result<Vec<Measured>> {
    let dst = slow.destination.to_string();
    let dir = workdir(slow.name)?;
    let args = cli_args(&dst, "-T");
    let path = api_path(&dst, None);
    let mut cli_row = Measured::new(
        CLI,
        format!("traceroute-agent {}", args.join(" ")),
        condition,
    );
    let mut first = Measured::new(
        FIRST,
        format!("GET {path} (a service just started in src)"),
        condition,
    );
    let mut known = Measured::new(
        KNOWN,
        format!("GET {path} again, right after the first"),
        condition,
    );
    // mtr once per lab: in `slow_limited` after a refill.
    let peers = peers(&dst, !(slow.limited && condition == Condition::BackToBack));
    let mut peer_rows: Vec<Measured> = peers
        .iter()
        .map(|p| p.measured(condition, unavailable))
        .collect();
    // A fresh service per run: its first request is first contact.
    let api_pair = |pause: bool, first: &mut Measured, known: &mut Measured| -> Result<()> {
        let service = service(lab, &dir, None)?;
        if pause {
            std::thread::sleep(REFILL);
        }
        let a = api(lab, counter, &service, &path);
        let b = a.as_ref().ok().map(|_| api(lab, counter, &service, &path));
        let stopped = service.stop(lab);
        first.push(a?);
        if let Some(b) = b {
            known.push(b?);
        }
        stopped
    };
    let label = condition.label();
    match condition {
        Condition::Refill => {
            for run in 1..=runs {
                println!("bench: routers, {}, {label}, run {run}/{runs}", slow.name);
                std::thread::sleep(REFILL);
                cli_row.push(cli(lab, counter, &args)?);
                api_pair(true, &mut first, &mut known)?;
                for (p, m) in peers.iter().zip(&mut peer_rows) {
                    if p.tool != "mtr" || run == 1 {
                        std::thread::sleep(REFILL);
                        p.once_into(lab, counter, m)?;
                    }
                }
            }
        }
        Condition::BackToBack => {
            println!("bench: routers, {}, {label}, {runs} runs each", slow.name);
            refill_if(slow.limited);
            for _ in 0..runs {
                cli_row.push(cli(lab, counter, &args)?);
            }
            refill_if(slow.limited);
            for _ in 0..runs {
                api_pair(false, &mut first, &mut known)?;
            }
            for (p, m) in peers.iter().zip(&mut peer_rows) {
                refill_if(slow.limited);
                let n = if p.tool == "mtr" { 1 } else { runs };
                for _ in 0..n {
                    p.once_into(lab, counter, m)?;
                }
            }
        }
    }
    let mut rows = vec![cli_row, first, known];
    rows.extend(peer_rows);
    Ok(rows)
}

/// The peers at their defaults, reverse DNS off; mtr (one run: its 10
/// rounds at one a second take ~15 s) when `mtr`.
fn peers(dst: &str, mtr: bool) -> Vec<Peer> {
    let args = |a: &[&str]| a.iter().map(ToString::to_string).collect::<Vec<_>>();
    let mut peers = vec![
        Peer {
            tool: "traceroute -T",
            package: "traceroute",
            program: "traceroute",
            args: args(&["-n", "-T", dst]),
            read: text_hops,
        },
        Peer {
            tool: "scamper",
            package: "scamper",
            program: "scamper",
            args: args(&["-O", "json", "-c", "trace", "-i", dst]),
            read: found::scamper_hops,
        },
    ];
    if mtr {
        peers.push(Peer {
            tool: "mtr",
            package: "mtr-tiny",
            program: "mtr",
            args: args(&["-n", "--report", dst]),
            read: text_hops,
        });
    }
    peers
}
