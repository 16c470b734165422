//! The routers section of the report: a table per part, then one line per
//! target with its figure and whether it is met; the same figures as JSON;
//! and the headline's lines.

use serde_json::{Value, json};

use super::fanout::{FanRow, FanoutLab};
use super::found::{self, too_far};
use super::mda::{self, DEFAULTS, HAND, LIMITED_RUNS, Mda, TRACELB};
use super::slow::{CLI, FIRST, KNOWN, SLOWEST, SlowLab};
use super::three::{ALTERNATIONS, QUERIES, ThreeLab, UDP_TRACES, UdpTraces};
use super::{Condition, Measured, RoutersBench};
use crate::REFILL;
use crate::multipath::{MultipathBench, ToolResult};
use crate::report::{ratio_text, spread_json, spread_text, table};

/// The second API trace may take this many times the slowest router's
/// answer time.
const SECOND_LIMIT: f64 = 1.5;
/// (a) of part 2: the agent's API time over traceroute's.
const ALTERNATION_LIMIT: f64 = 1.0;
/// (b) of part 2: share of the requests answered with every hop.
const CONCURRENT_SHARE: f64 = 0.95;
/// Part 3: share of the (trace, router) pairs found.
const PAIRS_SHARE: f64 = 0.90;
/// Part 4: MDA at its defaults over the run with limits off by hand.
const MDA_UNLIMITED_LIMIT: f64 = 2.0;
/// Part 4: MDA at its defaults over scamper tracelb, limited routers.
const MDA_LIMITED_LIMIT: f64 = 1.0;

fn met(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "**met**",
        Some(false) => "**not met**",
        None => "not measured",
    }
}

fn pct(n: usize, of: usize) -> String {
    if of == 0 {
        return "-".into();
    }
    format!("{n}/{of} ({:.0} %)", 100.0 * n as f64 / of as f64)
}

fn share(n: usize, of: usize) -> Option<f64> {
    (of > 0).then(|| n as f64 / of as f64)
}

/// Median (min-max) seconds: 4 decimals below 0.1 s (a trace through
/// routers without delay takes about a millisecond), else 3.
fn wall(m: &Measured) -> String {
    let decimals = if m.wall().is_some_and(|s| s.median < 0.1) {
        4
    } else {
        3
    };
    spread_text(m.wall(), decimals, " s")
}

fn probes(m: &Measured) -> String {
    spread_text(m.probes_sent(), 0, "")
}

/// Runs of `m` with every entry of `truth`, as `n/runs`.
fn every(m: &Measured, truth: &[String]) -> String {
    format!("{}/{}", found::runs_complete(&m.hops, truth), m.runs())
}

fn failure_note(m: &Measured) -> String {
    m.failure.clone().unwrap_or_default()
}

pub fn section(r: &RoutersBench) -> String {
    let mut out = format!(
        "## Routers of every kind\n\n\
         Routers differ: Linux ones answer one source 6 ICMP errors, then 1 a second; \
         unlimited ones answer everything; routers with a slow control plane send their own \
         errors tens of milliseconds late while they forward at once. The agent learns each \
         router as it answers; its peers run at their own defaults (reverse DNS off). Times \
         are medians (min-max) over {runs} unless a row says otherwise, as its client sees \
         them: a process from start to exit, an API request from connecting to the last byte of \
         the answer. Probes: packets leaving src's interface toward the lab during the run \
         (nftables egress counter). Found: against the lab's ground truth, per TTL the first \
         address any of a trace's runs reported. **After a refill**: each timed run starts \
         {refill} s after anything else probed, so every router's budget is full. **Back to \
         back**: a tool's runs follow each other at once (in labs with limits a block of them \
         starts after a refill, so it inherits no other tool's spending); this is what hurts a \
         tool that spends router budgets. Targets are stated, not asserted.\n",
        runs = match r.scale.runs {
            1 => "1 run".to_string(),
            n => format!("{n} runs"),
        },
        refill = REFILL.as_secs(),
    );
    out += &slow_part(&r.slow);
    out += &three_part(&r.three);
    out += &fanout_part(&r.fanout, r.three.iter().find_map(|t| t.udp.as_ref()));
    out += &mda_part(&r.mda);
    out
}

fn slow_part(labs: &[SlowLab]) -> String {
    let mut out = format!(
        "\n### 1. Slow control planes: `slow` and `slow_limited`\n\n\
         src - r1 - r2 - r3 - r4 - dst; r2 sends its own ICMP errors {r2} ms late, r3 {r3} ms \
         late, forwarding is immediate. `slow` has no ICMP limits (a refill changes nothing \
         there, so only back to back), `slow_limited` the kernel's defaults. Every tool at its \
         defaults; the agent over TCP to port 80 (dst listens there). The API rows: a service \
         started in src for each run (not timed), its first request (first contact: it knows \
         nothing) and a second one right after it (the path known). mtr runs once per lab, \
         in `slow_limited` after a refill (its 10 rounds at one a second take ~15 s). Back to \
         back in `slow_limited`, each run's service starts while the routers' budgets are still \
         spent by the run before (its two requests took 6 answers of each router, which \
         gives back 1 a second).\n",
        r2 = traceroute_lab::named::SLOW_R2.as_millis(),
        r3 = SLOWEST.as_millis(),
    );
    for lab in labs {
        let truth = &lab.truth;
        out += &format!(
            "\n`{}`: destination {}; expected hops {}\n\n",
            lab.name,
            lab.destination,
            truth.join(" ")
        );
        let headers = [
            "tool",
            "condition",
            "runs",
            "time",
            "probes",
            "r2 found",
            "r3 found",
            "every hop",
            "notes",
        ];
        let rows: Vec<Vec<String>> = lab
            .rows
            .iter()
            .map(|m| {
                vec![
                    m.tool.clone(),
                    m.condition.label().to_string(),
                    m.runs().to_string(),
                    wall(m),
                    probes(m),
                    format!("{}/{}", found::runs_with(&m.hops, 2, &truth[1]), m.runs()),
                    format!("{}/{}", found::runs_with(&m.hops, 3, &truth[2]), m.runs()),
                    every(m, truth),
                    failure_note(m),
                ]
            })
            .collect();
        out += &table(&headers, &rows);
    }
    out += "\nCommands (in src's namespace):\n\n";
    if let Some(lab) = labs.first() {
        for condition in [Condition::BackToBack] {
            for m in lab.rows.iter().filter(|m| m.condition == condition) {
                out += &format!("- {}: `{}`\n", m.tool, m.command);
            }
        }
    }
    out += "\nTargets:\n\n";
    for line in slow_targets(labs) {
        out += &format!("- {line}\n");
    }
    out
}

/// Whether every run of `m` found every hop (and there were runs).
fn all_runs(m: Option<&Measured>, truth: &[String]) -> Option<bool> {
    let m = m.filter(|m| m.runs() > 0)?;
    Some(found::runs_complete(&m.hops, truth) == m.runs())
}

fn runs_text(m: Option<&Measured>, truth: &[String]) -> String {
    m.map_or("-".into(), |m| every(m, truth))
}

/// The second API trace's median over the slowest router's answer time.
pub fn second_ratio(lab: &SlowLab, condition: Condition) -> Option<f64> {
    Some(lab.row(KNOWN, condition)?.wall()?.median / SLOWEST.as_secs_f64())
}

fn slow_targets(labs: &[SlowLab]) -> Vec<String> {
    let mut lines = Vec::new();
    for lab in labs {
        for condition in lab.conditions() {
            let (cli, first) = (lab.row(CLI, condition), lab.row(FIRST, condition));
            let ok = all_runs(cli, &lab.truth).zip(all_runs(first, &lab.truth));
            lines.push(format!(
                "`{}`, {}: every router found on first contact by the agent: CLI in {} runs, \
                 API in {}: {}",
                lab.name,
                condition.label(),
                runs_text(cli, &lab.truth),
                runs_text(first, &lab.truth),
                met(ok.map(|(a, b)| a && b)),
            ));
            let known = lab.row(KNOWN, condition);
            let ratio = second_ratio(lab, condition);
            let complete = all_runs(known, &lab.truth);
            let verdict = match (ratio, complete) {
                (Some(r), Some(true)) => met(Some(r <= SECOND_LIMIT)).to_string(),
                (Some(_), Some(false)) => format!("{} (missed hops)", met(Some(false))),
                _ => met(None).to_string(),
            };
            lines.push(format!(
                "`{}`, {}: the agent's second API trace {} = **{}** the slowest router's {} ms \
                 (target <= {SECOND_LIMIT}x), every hop in {} runs: {verdict}",
                lab.name,
                condition.label(),
                known.map_or("-".into(), wall),
                ratio_text(ratio),
                SLOWEST.as_millis(),
                runs_text(known, &lab.truth),
            ));
        }
    }
    lines
}

fn three_part(labs: &[ThreeLab]) -> String {
    let concurrent = labs.first().map_or(0, |l| l.concurrent.requests);
    let mut out = format!(
        "\n### 2. Unlimited routers: `three` (and `three_limited` for contrast)\n\n\
         src - r1 - r2 - r3 - dst; `three` has no ICMP limits, `three_limited` the kernel's \
         defaults. (a) A service just started in src answers {ALTERNATIONS} API requests (TCP \
         to port 80, 3 queries), each followed at once by `traceroute -n -q 3 -T` at its \
         defaults: back to back, no pause. (b) A fresh service with `[api] \
         max_concurrent_traces = {concurrent}` gets {concurrent} requests of {QUERIES} queries \
         (TCP) at once, none retried; every hop: every run of the record has every router and \
         the destination; marked: the missing ones say `rate_limited` or `not_sent`; unmarked: \
         an answering hop reported silent or wrong.\n\n(a)\n\n"
    );
    let headers = [
        "lab",
        "tool",
        "runs",
        "time",
        "probes",
        "every hop",
        "notes",
    ];
    let mut rows = Vec::new();
    for lab in labs {
        for m in [&lab.api, &lab.traceroute] {
            rows.push(vec![
                lab.name.to_string(),
                m.tool.clone(),
                m.runs().to_string(),
                wall(m),
                probes(m),
                every(m, &lab.truth),
                failure_note(m),
            ]);
        }
    }
    out += &table(&headers, &rows);
    out += "\n(b)\n\n";
    let headers = [
        "lab",
        "requests",
        "200, every hop",
        "200, marked",
        "200, unmarked",
        "503 BUSY",
        "other",
        "last answer",
        "probes",
    ];
    let rows: Vec<Vec<String>> = labs
        .iter()
        .map(|lab| {
            let c = &lab.concurrent;
            let other: Vec<String> = c.failed.iter().map(|(k, n)| format!("{k} x{n}")).collect();
            vec![
                lab.name.to_string(),
                c.requests.to_string(),
                pct(c.complete, c.requests),
                c.excused.to_string(),
                c.missing.to_string(),
                c.busy.to_string(),
                if other.is_empty() {
                    "0".into()
                } else {
                    other.join(", ")
                },
                format!("{:.2} s", c.last_answer_s),
                c.probes.to_string(),
            ]
        })
        .collect();
    out += &table(&headers, &rows);
    out += "\nCommands (in src's namespace):\n\n";
    if let Some(lab) = labs.first() {
        out += &format!("- (a) agent API: `{}`\n", lab.api.command);
        out += &format!("- (a) traceroute: `{}`\n", lab.traceroute.command);
        out += &format!("- (b) `{}`\n", lab.concurrent.command);
    }
    out += "\nTargets:\n\n";
    for lab in labs.iter().filter(|l| !l.limited) {
        let complete =
            lab.api.runs() > 0 && found::runs_complete(&lab.api.hops, &lab.truth) == lab.api.runs();
        let verdict = match lab.ratio() {
            Some(r) if complete => met(Some(r <= ALTERNATION_LIMIT)).to_string(),
            Some(_) => format!("{} (missed hops)", met(Some(false))),
            None => met(None).to_string(),
        };
        out += &format!(
            "- `{}` (a): agent API {} / traceroute {} = **{}** (target <= {}), every hop: \
             agent {}, traceroute {}: {verdict}\n",
            lab.name,
            wall(&lab.api),
            wall(&lab.traceroute),
            ratio_text(lab.ratio()),
            ratio_text(Some(ALTERNATION_LIMIT)),
            every(&lab.api, &lab.truth),
            every(&lab.traceroute, &lab.truth),
        );
        let c = &lab.concurrent;
        out += &format!(
            "- `{}` (b): {} of {} requests answered with every hop (target >= {:.0} %), {} \
             refused, last answer after {:.2} s: {}\n",
            lab.name,
            pct(c.complete, c.requests),
            c.requests,
            CONCURRENT_SHARE * 100.0,
            c.busy,
            c.last_answer_s,
            met(share(c.complete, c.requests).map(|s| s >= CONCURRENT_SHARE)),
        );
    }
    for lab in labs.iter().filter(|l| l.limited) {
        out += &format!(
            "- `{}` (contrast, no target): (a) agent API / traceroute = {}; (b) {} answered \
             with every hop, {} refused.\n",
            lab.name,
            ratio_text(lab.ratio()),
            pct(lab.concurrent.complete, lab.concurrent.requests),
            lab.concurrent.busy,
        );
    }
    out
}

fn fan_row(lab: &FanoutLab, r: &FanRow) -> Vec<String> {
    let mut notes: Vec<String> = r.failed.iter().map(|(k, n)| format!("{k} x{n}")).collect();
    notes.extend(r.failure.clone());
    vec![
        r.what.clone(),
        if r.failure.is_some() && r.traced == 0 {
            "-".into()
        } else {
            format!("{:.2} s", r.wall_s)
        },
        r.probes.to_string(),
        pct(r.pairs, lab.pairs_total()),
        format!("{}/{}", r.traced, lab.targets.len()),
        r.busy.to_string(),
        notes.join("; "),
    ]
}

fn fanout_part(labs: &[FanoutLab], udp: Option<&UdpTraces>) -> String {
    let targets = labs.first().map_or(0, |l| l.targets.len());
    let per_host = targets / 4;
    let mut out = format!(
        "\n### 3. Fan-out behind shared routers: `fanout_deep` and `fanout_deep_unlimited`\n\n\
         src - gw - r2 - r3 - {{d1..d4}}; {targets} targets, {per_host} on each d_i (TCP 80 open). \
         `fanout_deep` has the kernel's default limits, `fanout_deep_unlimited` none. Pairs: \
         (trace, router) pairs found over the 3 shared routers gw, r2, r3 ({targets} x 3); a \
         trace refused (503) finds none. (a) {targets} API requests at once (TCP, defaults) to \
         a service started fresh in src, then a second round right after; (b) {targets} fresh \
         CLI processes (`-T`) one after another; (c) Linux traceroute at its defaults (UDP) \
         over the same targets one after another; (d) scamper at its defaults tracing them as \
         a list (it parallelises a list). Times: the whole round or sequence. In \
         `fanout_deep` each of (a)-(d) starts after a refill.\n"
    );
    for lab in labs {
        out += &format!("\n`{}`\n\n", lab.name);
        let headers = [
            "what",
            "time",
            "probes",
            "pairs found",
            "traced",
            "503",
            "notes",
        ];
        let rows: Vec<Vec<String>> = lab.rows.iter().map(|r| fan_row(lab, r)).collect();
        out += &table(&headers, &rows);
    }
    out += "\nCommands (in src's namespace):\n\n";
    if let Some(lab) = labs.first() {
        let mut previous = "";
        for r in &lab.rows {
            if r.command != previous {
                out += &format!("- {}: `{}`\n", r.what, r.command);
            }
            previous = &r.command;
        }
    }
    if let Some(udp) = udp {
        out += &udp_part(udp);
    }
    out += "\nTargets:\n\n";
    for lab in labs {
        for r in lab.rows.iter().filter(|r| r.what.starts_with("agent API")) {
            out += &format!(
                "- `{}`, {}: {} pairs found (target >= {:.0} %), {} refused, {:.2} s: {}\n",
                lab.name,
                r.what,
                pct(r.pairs, lab.pairs_total()),
                PAIRS_SHARE * 100.0,
                r.busy,
                r.wall_s,
                met(share(r.pairs, lab.pairs_total()).map(|s| s >= PAIRS_SHARE)),
            );
        }
    }
    if let Some(udp) = udp {
        let every = udp.traces.iter().filter(|t| t.every_hop).count();
        let far: usize = udp
            .traces
            .iter()
            .map(|t| too_far(&t.placements, udp.distance))
            .sum();
        out += &format!(
            "- `three_limited` (e): every router and the destination found in {every} of {} \
             traces, {far} runs placed the destination beyond TTL {}: {}\n",
            udp.traces.len(),
            udp.distance,
            met((!udp.traces.is_empty()).then_some(every == udp.traces.len() && far == 0)),
        );
    }
    out
}

fn udp_part(udp: &UdpTraces) -> String {
    let mut out = format!(
        "\n(e) `three_limited` (src - r1 - r2 - r3 - dst, kernel default limits): the same \
         target traced {UDP_TRACES} times back to back by fresh CLI processes over UDP, after \
         one refill. dst answers at TTL {}; a run whose last hop lies beyond it must say \
         `distance_uncertain`. `{}`\n\n",
        udp.distance, udp.command
    );
    let headers = [
        "trace",
        "time",
        "probes",
        "every router and dst",
        "last hop TTL per run",
        "distance_uncertain",
        "placed too far",
        "unanswered hops",
    ];
    let rows: Vec<Vec<String>> = udp
        .traces
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let ttls: Vec<String> = t
                .placements
                .iter()
                .map(|p| p.last_ttl.to_string())
                .collect();
            let unanswered: Vec<String> = t
                .unanswered
                .iter()
                .map(|(k, n)| format!("{k} x{n}"))
                .collect();
            vec![
                (i + 1).to_string(),
                format!("{:.3} s", t.wall_s),
                t.probes.to_string(),
                if t.every_hop { "yes" } else { "NO" }.into(),
                ttls.join(", "),
                t.placements
                    .iter()
                    .filter(|p| p.uncertain)
                    .count()
                    .to_string(),
                too_far(&t.placements, udp.distance).to_string(),
                if unanswered.is_empty() {
                    "-".into()
                } else {
                    unanswered.join(", ")
                },
            ]
        })
        .collect();
    out += &table(&headers, &rows);
    out
}

fn mda_rows(lab: &str, b: &MultipathBench, rows: &mut Vec<Vec<String>>) {
    let fmt = |s: Option<crate::Spread>, d: usize, unit: &str| spread_text(s, d, unit);
    for t in &b.tools {
        let runs = match &t.failure {
            Some(why) if t.runs == 0 => format!("0: {why}"),
            Some(why) => format!("{} ({why})", t.runs),
            None => t.runs.to_string(),
        };
        rows.push(vec![
            format!("`{lab}`"),
            t.name.clone(),
            fmt(t.seconds, 2, " s"),
            fmt(t.probes, 0, ""),
            t.routers_found.map_or("-".into(), |s| {
                format!("{:.0} / {}", s.median, b.routers_expected)
            }),
            format!("{} of {}", t.destination_found, t.runs),
            runs,
        ]);
    }
}

fn seconds(t: Option<&ToolResult>) -> String {
    t.and_then(|t| t.seconds)
        .map_or("-".into(), |s| spread_text(Some(s), 2, " s"))
}

fn mda_part(m: &Mda) -> String {
    let mut out = format!(
        "\n### 4. MDA at its defaults: `nested` and `nested_limited`\n\n\
         The nested diamond (src - r1 - {{a1..a4}} - {{m1, m2}} - r4 - dst, L4 ECMP hashing) \
         mapped with `--multipath mda` over UDP. In `nested` (no ICMP limits) the agent at \
         its defaults (it assumes Linux's 6, then 1/s, and learns) beside the same trace with \
         the limits switched off by hand, {} runs each, one after another. In \
         `nested_limited` (the kernel's defaults) the agent at its defaults beside scamper \
         tracelb at its defaults, {LIMITED_RUNS} runs each, each after a refill (each takes tens \
         of seconds); a run is stopped after 60 s. The agent's MDA at its defaults uses the lite \
         stopping rule (`--mda-rule lite`).\n\n",
        m.runs
    );
    let headers = [
        "lab",
        "tool",
        "time",
        "probes",
        "routers found",
        "destination",
        "runs",
    ];
    let mut labs = vec![("nested", &m.unlimited)];
    labs.extend(m.limited.as_ref().map(|l| ("nested_limited", l)));
    let mut rows = Vec::new();
    for (name, b) in &labs {
        mda_rows(name, b, &mut rows);
    }
    out += &table(&headers, &rows);
    out += "\nCommands (in src's namespace):\n\n";
    let agent = crate::agent_binary().display().to_string();
    for (name, b) in &labs {
        for t in &b.tools {
            let command = t.command.replace(&agent, "traceroute-agent");
            out += &format!("- `{name}`, {}: `{command}`\n", t.name);
        }
    }
    let (hand, defaults) = (
        mda::tool(&m.unlimited, HAND),
        mda::tool(&m.unlimited, DEFAULTS),
    );
    out += &format!(
        "\nTargets:\n\n\
         - `nested`: at its defaults {} / limits off by hand {} = **{}** (target <= {}): {}\n",
        seconds(defaults),
        seconds(hand),
        ratio_text(m.unlimited_ratio()),
        ratio_text(Some(MDA_UNLIMITED_LIMIT)),
        met(m.unlimited_ratio().map(|r| r <= MDA_UNLIMITED_LIMIT)),
    );
    let Some(limited) = &m.limited else {
        out += "- `nested_limited`: not run (`--quick`)\n";
        return out;
    };
    let (agent, tracelb) = (mda::tool(limited, DEFAULTS), mda::tool(limited, TRACELB));
    let verdict = match (m.limited_ratio(), agent) {
        (Some(r), _) => met(Some(r < MDA_LIMITED_LIMIT)).to_string(),
        (None, Some(a)) if a.runs == 0 && tracelb.and_then(|t| t.seconds).is_some() => format!(
            "{} ({})",
            met(Some(false)),
            a.failure.as_deref().unwrap_or("no result")
        ),
        _ => met(None).to_string(),
    };
    out += &format!(
        "- `nested_limited`: the agent at its defaults {} / scamper tracelb {} = **{}** (target \
         < {}, ahead of tracelb): {verdict}\n",
        seconds(agent),
        seconds(tracelb),
        ratio_text(m.limited_ratio()),
        ratio_text(Some(MDA_LIMITED_LIMIT)),
    );
    out
}

/// The headline's lines for this section.
pub fn headline(r: &RoutersBench) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(lab) = r.slow.iter().find(|l| l.limited) {
        let c = Condition::BackToBack;
        let tr = lab.row("traceroute -T", c);
        lines.push(format!(
            "Slow control planes (`{}`, back to back): the agent found every router on first \
             contact in {} CLI and {} API runs (traceroute -T at its defaults: r3 in {}); its \
             second API trace took {} s, **{}** the slowest router's {} ms.",
            lab.name,
            runs_text(lab.row(CLI, c), &lab.truth),
            runs_text(lab.row(FIRST, c), &lab.truth),
            tr.map_or("-".into(), |m| format!(
                "{}/{}",
                found::runs_with(&m.hops, 3, &lab.truth[2]),
                m.runs()
            )),
            lab.row(KNOWN, c)
                .and_then(Measured::wall)
                .map_or("-".into(), |s| format!("{:.3}", s.median)),
            ratio_text(second_ratio(lab, c)),
            SLOWEST.as_millis(),
        ));
    }
    if let Some(lab) = r.three.iter().find(|l| !l.limited) {
        lines.push(format!(
            "Unlimited routers (`{}`): agent API / traceroute -T back to back **{}**; {} \
             traces of {} queries at once: {} answered with every hop, {} refused.",
            lab.name,
            ratio_text(lab.ratio()),
            lab.concurrent.requests,
            QUERIES,
            pct(lab.concurrent.complete, lab.concurrent.requests),
            lab.concurrent.busy,
        ));
    }
    if let Some(lab) = r.fanout.iter().find(|l| l.limited) {
        let pairs = |prefix: &str| {
            lab.row(prefix)
                .map_or("-".into(), |row| pct(row.pairs, lab.pairs_total()))
        };
        lines.push(format!(
            "{} targets behind 3 shared Linux routers (`{}`): (trace, router) pairs \
             found by the agent API at once {}, fresh agent CLIs one after another {}, \
             traceroute {}, scamper {}.",
            lab.targets.len(),
            lab.name,
            pairs("agent API"),
            pairs("agent CLI"),
            pairs("traceroute"),
            pairs("scamper"),
        ));
    }
    let (u, l) = (r.mda.unlimited_ratio(), r.mda.limited_ratio());
    lines.push(format!(
        "MDA at its defaults: `nested` **{}** the run with limits off by hand; `nested_limited` \
         {} scamper tracelb's time{}.",
        ratio_text(u),
        l.map_or("-".into(), |l| format!("**{l:.2}x**")),
        match r.mda.limited.as_ref().and_then(|l| mda::tool(l, DEFAULTS)) {
            Some(t) if t.runs == 0 => format!(" (agent: {})", t.failure.as_deref().unwrap_or("-")),
            _ => String::new(),
        }
    ));
    lines
}

fn measured_json(m: &Measured, truth: &[String]) -> Value {
    json!({
        "tool": m.tool,
        "command": m.command,
        "condition": m.condition.label(),
        "wall_s": m.wall_s,
        "wall": spread_json(m.wall()),
        "probes": m.probes,
        "hops": m.hops,
        "every_hop_runs": found::runs_complete(&m.hops, truth),
        "failure": m.failure,
    })
}

fn multipath_json(b: &MultipathBench) -> Value {
    crate::multipath::json(b)
}

pub fn json(r: &RoutersBench) -> Value {
    json!({
        "runs": r.scale.runs,
        "part_seconds": r.part_s,
        "slow": r.slow.iter().map(|lab| json!({
            "lab": lab.name,
            "destination": lab.destination.to_string(),
            "expected": lab.truth,
            "slowest_router_ms": SLOWEST.as_millis() as u64,
            "second_api_over_slowest": lab.conditions().iter().map(|&c| json!({
                "condition": c.label(),
                "ratio": second_ratio(lab, c),
            })).collect::<Vec<_>>(),
            "tools": lab.rows.iter().map(|m| measured_json(m, &lab.truth)).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "three": r.three.iter().map(|lab| json!({
            "lab": lab.name,
            "destination": lab.destination.to_string(),
            "expected": lab.truth,
            "alternation": {
                "api": measured_json(&lab.api, &lab.truth),
                "traceroute": measured_json(&lab.traceroute, &lab.truth),
                "ratio": lab.ratio(),
            },
            "concurrent": {
                "command": lab.concurrent.command,
                "requests": lab.concurrent.requests,
                "every_hop": lab.concurrent.complete,
                "marked": lab.concurrent.excused,
                "unmarked": lab.concurrent.missing,
                "busy": lab.concurrent.busy,
                "failed": lab.concurrent.failed,
                "last_answer_s": lab.concurrent.last_answer_s,
                "probes": lab.concurrent.probes,
            },
            "udp_back_to_back": lab.udp.as_ref().map(|u| json!({
                "command": u.command,
                "distance": u.distance,
                "traces": u.traces.iter().map(|t| json!({
                    "wall_s": t.wall_s,
                    "probes": t.probes,
                    "every_hop": t.every_hop,
                    "last_ttls": t.placements.iter().map(|p| p.last_ttl).collect::<Vec<_>>(),
                    "distance_uncertain_runs": t.placements.iter().filter(|p| p.uncertain).count(),
                    "placed_too_far": too_far(&t.placements, u.distance),
                    "unanswered": t.unanswered,
                })).collect::<Vec<_>>(),
            })),
        })).collect::<Vec<_>>(),
        "fanout": r.fanout.iter().map(|lab| json!({
            "lab": lab.name,
            "targets": lab.targets.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "routers": lab.routers,
            "pairs_total": lab.pairs_total(),
            "rows": lab.rows.iter().map(|row| json!({
                "what": row.what,
                "command": row.command,
                "wall_s": row.wall_s,
                "probes": row.probes,
                "pairs": row.pairs,
                "traced": row.traced,
                "busy": row.busy,
                "failed": row.failed,
                "failure": row.failure,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "mda": {
            "nested": multipath_json(&r.mda.unlimited),
            "nested_limited": r.mda.limited.as_ref().map(multipath_json),
            "defaults_over_hand_unlimited": r.mda.unlimited_ratio(),
            "limited_over_tracelb": r.mda.limited_ratio(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_and_verdicts() {
        assert_eq!(pct(19, 20), "19/20 (95 %)");
        assert_eq!(pct(0, 0), "-");
        assert_eq!(share(57, 60).map(|s| s >= PAIRS_SHARE), Some(true));
        assert_eq!(share(1, 0), None);
        assert_eq!(met(Some(true)), "**met**");
        assert_eq!(met(None), "not measured");
    }

    fn measured(tool: &str, condition: Condition, walls: &[f64], hops: &[&[&str]]) -> Measured {
        let mut m = Measured::new(tool, String::new(), condition);
        m.wall_s = walls.to_vec();
        m.probes = vec![15; walls.len()];
        m.hops = hops
            .iter()
            .map(|h| h.iter().map(ToString::to_string).collect())
            .collect();
        m
    }

    #[test]
    fn slow_targets_need_every_router_and_the_time() {
        let all: &[&str] = &["r1", "r2", "r3", "r4", "dst"];
        let missed: &[&str] = &["r1", "*", "*", "r4", "dst"];
        let lab = SlowLab {
            name: "slow",
            limited: false,
            destination: "198.18.5.2".parse().unwrap(),
            truth: all.iter().map(ToString::to_string).collect(),
            rows: vec![
                measured(CLI, Condition::BackToBack, &[0.2, 0.3], &[all, all]),
                measured(FIRST, Condition::BackToBack, &[0.13, 0.12], &[all, missed]),
                measured(KNOWN, Condition::BackToBack, &[0.12, 0.12], &[all, all]),
            ],
        };
        let ratio = second_ratio(&lab, Condition::BackToBack).unwrap();
        assert!((ratio - 1.0).abs() < 1e-9);
        assert_eq!(second_ratio(&lab, Condition::Refill), None);
        let lines = slow_targets(&[lab]);
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].contains("CLI in 2/2 runs, API in 1/2"),
            "{}",
            lines[0]
        );
        assert!(lines[0].ends_with("**not met**"), "{}", lines[0]);
        assert!(lines[1].contains("**1.00x**"), "{}", lines[1]);
        assert!(lines[1].ends_with("**met**"), "{}", lines[1]);
    }

    fn tool_result(name: &str, seconds: Option<f64>, failure: Option<&str>) -> ToolResult {
        let s = seconds.map(|v| crate::Spread {
            median: v,
            min: v,
            max: v,
        });
        ToolResult {
            name: name.into(),
            command: format!("x {name}"),
            seconds: s,
            probes: None,
            routers_found: None,
            destination_found: usize::from(s.is_some()),
            runs: usize::from(s.is_some()),
            failure: failure.map(String::from),
        }
    }

    /// A whole section with a little in every part.
    fn bench() -> RoutersBench {
        let all: &[&str] = &["r1", "r2", "r3", "r4", "dst"];
        let slow = SlowLab {
            name: "slow_limited",
            limited: true,
            destination: "198.18.5.2".parse().unwrap(),
            truth: all.iter().map(ToString::to_string).collect(),
            rows: vec![
                measured(CLI, Condition::BackToBack, &[0.2], &[all]),
                measured(FIRST, Condition::BackToBack, &[0.12], &[all]),
                measured(KNOWN, Condition::BackToBack, &[0.15], &[all]),
                measured(
                    "traceroute -T",
                    Condition::BackToBack,
                    &[0.02],
                    &[&["r1", "*", "*", "r4", "dst"]],
                ),
            ],
        };
        let three_truth: &[&str] = &["r1", "r2", "r3", "dst"];
        let three = ThreeLab {
            name: "three",
            limited: false,
            destination: "198.18.4.2".parse().unwrap(),
            truth: three_truth.iter().map(ToString::to_string).collect(),
            api: measured("agent API", Condition::BackToBack, &[0.002], &[three_truth]),
            traceroute: measured(
                "traceroute -T",
                Condition::BackToBack,
                &[0.004],
                &[three_truth],
            ),
            concurrent: super::super::three::Concurrent {
                requests: 64,
                complete: 62,
                busy: 2,
                last_answer_s: 1.5,
                ..Default::default()
            },
            udp: None,
        };
        let fanout = FanoutLab {
            name: "fanout_deep",
            limited: true,
            targets: vec!["198.19.128.1".parse().unwrap(); 20],
            routers: vec!["gw".into(), "r2".into(), "r3".into()],
            rows: vec![FanRow {
                what: "agent API, 20 at once, first round".into(),
                pairs: 57,
                traced: 20,
                ..FanRow::default()
            }],
        };
        RoutersBench {
            scale: super::super::Scale::new(1, true),
            slow: vec![slow],
            three: vec![three],
            fanout: vec![fanout],
            mda: Mda {
                runs: 1,
                unlimited: MultipathBench {
                    routers_expected: 8,
                    tools: vec![
                        tool_result(HAND, Some(0.2), None),
                        tool_result(DEFAULTS, Some(0.3), None),
                    ],
                },
                limited: Some(MultipathBench {
                    routers_expected: 8,
                    tools: vec![
                        tool_result(DEFAULTS, None, Some("did not finish within 60 s")),
                        tool_result(TRACELB, Some(34.0), None),
                    ],
                }),
            },
            part_s: vec![1.0, 2.0, 3.0, 4.0],
        }
    }

    #[test]
    fn headline_and_section_carry_every_part() {
        let r = bench();
        let lines = headline(&r);
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(
            lines[0].contains("1/1 CLI and 1/1 API runs"),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains("r3 in 0/1"), "{}", lines[0]);
        assert!(lines[0].contains("**1.25x**"), "{}", lines[0]);
        assert!(lines[1].contains("**0.50x**"), "{}", lines[1]);
        assert!(lines[1].contains("62/64 (97 %)"), "{}", lines[1]);
        assert!(lines[2].starts_with("20 targets"), "{}", lines[2]);
        assert!(lines[2].contains("57/60 (95 %)"), "{}", lines[2]);
        assert!(lines[3].contains("**1.50x**"), "{}", lines[3]);
        assert!(
            lines[3].contains("did not finish within 60 s"),
            "{}",
            lines[3]
        );
        let text = section(&r);
        for heading in ["### 1.", "### 2.", "### 3.", "### 4."] {
            assert!(text.contains(heading), "{heading}");
        }
        assert!(text.contains("**not met** (did not finish within 60 s)"));
        let j = json(&r);
        let ratio = j["mda"]["defaults_over_hand_unlimited"].as_f64().unwrap();
        assert!((ratio - 1.5).abs() < 1e-9, "{ratio}");
        assert!(j["mda"]["limited_over_tracelb"].is_null());
        assert_eq!(j["three"][0]["concurrent"]["every_hop"], 62);
        assert_eq!(j["part_seconds"].as_array().map(Vec::len), Some(4));
    }

    #[test]
    fn renders_a_part_without_runs() {
        let lab = FanoutLab {
            name: "fanout_deep",
            limited: true,
            targets: vec!["198.19.128.1".parse().unwrap(); 2],
            routers: vec!["a".into(), "b".into(), "c".into()],
            rows: vec![FanRow {
                what: "agent API, 2 at once, first round".into(),
                pairs: 5,
                traced: 2,
                ..FanRow::default()
            }],
        };
        let text = fanout_part(&[lab], None);
        assert!(text.contains("5/6 (83 %)"), "{text}");
        assert!(text.contains("**not met**"), "{text}");
    }
}
