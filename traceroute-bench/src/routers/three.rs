//! Part 2: three plain routers, unlimited (`three`) and at the kernel's
//! default limits (`three_limited`, for contrast). (a) API requests
//! alternating with `traceroute -n -q 3 -T` back to back; (b) 64 API
//! traces of 10 queries at once to a service allowed 64 (16 in `--quick`). In
//! `three_limited` also part 3 (e): one target traced over UDP by three
//! fresh CLI processes back to back.

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::Result;
use traceroute_lab::{Family, Lab, named};

use super::found::{self, Completeness, Placement};
use super::{
    Condition, LabSpec, Measured, Peer, api, api_path, at_once, cli, cli_args, config, refill_if,
    service, workdir,
};
use crate::counter::ProbeCounter;
use crate::peers::Unavailable;
use crate::trace::text_hops;

/// API requests in (a), each followed by a traceroute.
pub const ALTERNATIONS: u32 = 5;
/// `traceroute_queries` of each request in (b).
pub const QUERIES: u32 = 10;
/// Fresh CLI traces of the same UDP target in (e).
pub const UDP_TRACES: usize = 3;

/// One lab of part 2.
pub struct ThreeLab {
    pub name: &'static str,
    pub limited: bool,
    pub destination: IpAddr,
    /// Ground truth: r1..r3, then dst.
    pub truth: Vec<String>,
    /// (a): the API requests and the traceroutes between them.
    pub api: Measured,
    pub traceroute: Measured,
    /// (b)
    pub concurrent: Concurrent,
    /// Part 3 (e), measured in `three_limited` only.
    pub udp: Option<UdpTraces>,
}

impl ThreeLab {
    /// Median API time over traceroute's, both from (a).
    pub fn ratio(&self) -> Option<f64> {
        Some(self.api.wall()?.median / self.traceroute.wall()?.median)
    }
}

/// Many API requests at once, none retried.
#[derive(Debug, Default)]
pub struct Concurrent {
    pub command: String,
    pub requests: usize,
    /// 200 with every expected hop in every run.
    pub complete: usize,
    /// 200 with hops missing, each marked `rate_limited` or `not_sent`.
    pub excused: usize,
    /// 200 with an answering hop reported silent or wrong.
    pub missing: usize,
    /// 503 BUSY.
    pub busy: usize,
    /// Anything else, by status and code.
    pub failed: BTreeMap<String, usize>,
    /// From sending to the last answer.
    pub last_answer_s: f64,
    pub probes: u64,
}

/// Part 3 (e): the same UDP target traced by fresh CLI processes back to back.
pub struct UdpTraces {
    pub command: String,
    /// The destination's TTL.
    pub distance: u64,
    pub traces: Vec<UdpTrace>,
}

pub struct UdpTrace {
    pub wall_s: f64,
    pub probes: u64,
    /// Every router and the destination found (in some run).
    pub every_hop: bool,
    pub placements: Vec<Placement>,
    /// Unanswered hops by `no_answer` marker, over the runs.
    pub unanswered: BTreeMap<String, usize>,
}

const LABS: [LabSpec; 2] = [
    LabSpec {
        name: "three",
        topology: named::three,
        limited: false,
    },
    LabSpec {
        name: "three_limited",
        topology: named::three_limited,
        limited: true,
    },
];

/// Both labs; (b) sends `concurrent` requests at once.
pub fn run(concurrent: usize, unavailable: &Unavailable) -> Result<Vec<ThreeLab>> {
    LABS.iter()
        .map(|&spec| run_lab(spec, concurrent, unavailable))
        .collect()
}

fn run_lab(spec: LabSpec, requests: usize, unavailable: &Unavailable) -> Result<ThreeLab> {
    let LabSpec { name, limited, .. } = spec;
    println!("bench: routers, lab `{name}`: src - r1 - r2 - r3 - dst");
    let (lab, counter) = spec.up("r1")?;
    let destination = lab.primary("dst", Family::V4)?;
    let expected = lab.expected_hops("src", "dst", Family::V4)?;
    let mut truth: Vec<String> = expected
        .iter()
        .map(|h| h.map_or_else(|| "*".to_string(), |a| a.to_string()))
        .collect();
    truth.push(destination.to_string());
    let mut judged = expected;
    judged.push(Some(destination));
    let dst = destination.to_string();
    let dir = workdir(name)?;

    // (a) In the fresh lab (every budget full), a service that knows
    // nothing yet; every request and traceroute right after the previous one.
    println!("bench: routers, {name}: {ALTERNATIONS} API requests alternating with traceroute");
    let path = api_path(&dst, Some(3));
    let mut api_row = Measured::new(
        "agent API",
        format!("GET {path} (a service just started in src)"),
        Condition::BackToBack,
    );
    let tr = Peer {
        tool: "traceroute -T",
        package: "traceroute",
        program: "traceroute",
        args: ["-n", "-q", "3", "-T", &dst].map(String::from).to_vec(),
        read: text_hops,
    };
    let mut tr_row = tr.measured(Condition::BackToBack, unavailable);
    let agent = service(&lab, &dir, None)?;
    for _ in 0..ALTERNATIONS {
        api_row.push(api(&lab, &counter, &agent, &path)?);
        tr.once_into(&lab, &counter, &mut tr_row)?;
    }
    agent.stop(&lab)?;

    // (b) A fresh service allowed 64 traces at once.
    println!("bench: routers, {name}: {requests} API traces of {QUERIES} queries at once");
    let config = config(
        &dir,
        &format!("[api]\nmax_concurrent_traces = {requests}\n"),
    )?;
    let agent = service(&lab, &dir, Some(&config))?;
    refill_if(limited);
    let path = api_path(&dst, Some(QUERIES));
    let paths = vec![path.clone(); requests];
    let (answers, wall, probes) = at_once(&lab, &counter, &agent, &paths)?;
    agent.stop(&lab)?;
    let mut concurrent = Concurrent {
        command: format!(
            "traceroute-agent serve --socket S --config C ([api] max_concurrent_traces = \
             {requests}); {requests} x GET {path} at once"
        ),
        requests,
        last_answer_s: wall,
        probes,
        ..Concurrent::default()
    };
    for a in &answers {
        match &a.record {
            Some(record) => match found::completeness(record, &judged) {
                Completeness::Every => concurrent.complete += 1,
                Completeness::Excused => concurrent.excused += 1,
                Completeness::Missing => concurrent.missing += 1,
            },
            None if a.busy() => concurrent.busy += 1,
            None => {
                *concurrent
                    .failed
                    .entry(a.failure().unwrap_or_default())
                    .or_default() += 1;
            }
        }
    }

    let udp = if limited {
        Some(udp_traces(&lab, &counter, &dst, &truth)?)
    } else {
        None
    };
    Ok(ThreeLab {
        name,
        limited,
        destination,
        truth,
        api: api_row,
        traceroute: tr_row,
        concurrent,
        udp,
    })
}

/// Part 3 (e): [`UDP_TRACES`] fresh CLI processes, `-U`, back to back
/// after one refill.
fn udp_traces(lab: &Lab, counter: &ProbeCounter, dst: &str, truth: &[String]) -> Result<UdpTraces> {
    println!("bench: routers, three_limited: {UDP_TRACES} UDP traces of one target back to back");
    let args = cli_args(dst, "-U");
    refill_if(true);
    let mut traces = Vec::new();
    for _ in 0..UDP_TRACES {
        let once = cli(lab, counter, &args)?;
        let record = once.record.unwrap_or_default();
        let mut unanswered = BTreeMap::new();
        for run in crate::truth::agent_runs(&record) {
            for hop in run.iter().filter(|h| h.addr.is_none()) {
                let marker = hop.no_answer.clone().unwrap_or_else(|| "-".into());
                *unanswered.entry(marker).or_default() += 1;
            }
        }
        traces.push(UdpTrace {
            wall_s: once.wall_s,
            probes: once.probes,
            every_hop: found::runs_complete(&[once.hops], truth) == 1,
            placements: found::placements(&record),
            unanswered,
        });
    }
    Ok(UdpTraces {
        command: format!("traceroute-agent {}", args.join(" ")),
        distance: truth.len() as u64,
        traces,
    })
}
