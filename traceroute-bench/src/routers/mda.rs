//! Part 4: the agent's MDA at its defaults on the nested diamond. With
//! unlimited routers (`nested`) beside the same trace with the limits
//! switched off by hand (what it would take if it knew), and with Linux's
//! limits (`nested_limited`) beside scamper tracelb at its defaults. Runs
//! with the multipath benchmark's machinery.

use anyhow::Result;
use traceroute_lab::named;

use crate::REFILL;
use crate::multipath::{self, HAND_UNLIMITED, MultipathBench, Spec, ToolResult};
use crate::peers::Unavailable;

pub const HAND: &str = "agent MDA, limits off by hand";
pub const DEFAULTS: &str = "agent MDA, defaults";
pub const TRACELB: &str = "scamper tracelb, defaults";

/// Runs of each tool in `nested_limited`: each takes tens of seconds, and
/// how long depends on how the flows hash (which of them the rate-limited
/// routers answer), so one run says little.
pub const LIMITED_RUNS: u32 = 3;

pub struct Mda {
    /// Runs of each tool in `nested`.
    pub runs: u32,
    /// `nested`: [`HAND`], [`DEFAULTS`].
    pub unlimited: MultipathBench,
    /// `nested_limited`: [`DEFAULTS`], [`TRACELB`]; not run in `--quick`.
    pub limited: Option<MultipathBench>,
}

/// The tool of `b` whose name starts with `name`.
pub fn tool<'a>(b: &'a MultipathBench, name: &str) -> Option<&'a ToolResult> {
    b.tools.iter().find(|t| t.name.starts_with(name))
}

/// Median seconds of `a` over `b`'s, both finished.
fn ratio(a: Option<&ToolResult>, b: Option<&ToolResult>) -> Option<f64> {
    Some(a?.seconds?.median / b?.seconds?.median)
}

impl Mda {
    /// `nested`: defaults over limits off by hand.
    pub fn unlimited_ratio(&self) -> Option<f64> {
        ratio(tool(&self.unlimited, DEFAULTS), tool(&self.unlimited, HAND))
    }

    /// `nested_limited`: the agent at its defaults over scamper tracelb.
    pub fn limited_ratio(&self) -> Option<f64> {
        let limited = self.limited.as_ref()?;
        ratio(tool(limited, DEFAULTS), tool(limited, TRACELB))
    }
}

/// `nested` with `runs` runs per tool; `nested_limited` too when `limited`.
pub fn run(runs: u32, limited: bool, unavailable: &Unavailable) -> Result<Mda> {
    println!("bench: routers, MDA on `nested`: defaults beside limits off by hand");
    let hand = Spec::Agent {
        name: HAND,
        extra: HAND_UNLIMITED,
    };
    let defaults = Spec::Agent {
        name: DEFAULTS,
        extra: &[],
    };
    let unlimited =
        multipath::measure(&named::nested(), &[hand, defaults], runs, None, unavailable)?;
    let limited = if limited {
        println!("bench: routers, MDA on `nested_limited`: defaults beside scamper tracelb");
        Some(multipath::measure(
            &named::nested_limited(),
            &[defaults, Spec::Tracelb],
            LIMITED_RUNS,
            Some(REFILL),
            unavailable,
        )?)
    } else {
        None
    };
    Ok(Mda {
        runs,
        unlimited,
        limited,
    })
}
