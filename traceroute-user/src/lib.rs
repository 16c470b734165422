//! traceroute-agent: an eBPF-assisted network path agent.
//!
//! The modules follow the data flow of a trace: `resolve` the target →
//! `route` lookup (interface, source, gateway) → `probe` crafting → `trace`
//! engine (pacing, sending, bookkeeping) → `capture` of replies (eBPF, or
//! sockets as fallback) → `reply` decoding and correlation → `path` assembly
//! of the `NetworkPath` record → `sinks`. `service` runs traces for the HTTP
//! API and the schedule; `cli` is the command line. docs/ARCHITECTURE.md
//! walks through them.
//!
//! The modules are the crate's own. What a program embedding the agent
//! needs is re-exported here:
//!
//! - a trace: [`TraceParams`] (what the CLI, the API and the config fill)
//!   builds a checked [`TraceRequest`]; a [`Tracer`] runs it, optionally as
//!   a [`Call`] says (deadline, admission wait), and returns a
//!   [`NetworkPath`] or a [`TraceError`] whose [`ErrorCode`] says what kind
//!   of failure it was; [`schema`] holds the record's JSON Schema and a
//!   validator;
//! - the service: [`serve`] with its [`ServiceOptions`] and [`Config`];
//! - the command line: [`cli::main`];
//! - every parameter's range and default: [`limits`].
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use traceroute_agent::{Protocol, TraceParams, Tracer, TracerConfig};
//!
//! let tracer = Tracer::new(TracerConfig::default()).await?;
//! let request = TraceParams::new("198.18.5.2", Protocol::Udp).build()?;
//! let path = tracer.trace(&request).await?;
//! println!("{}", serde_json::to_string(&path)?);
//! # Ok(())
//! # }
//! ```
//!
//! With the `internals` feature the modules themselves are public. Only this
//! repository's integration tests turn it on (they drive the capture, the
//! route cache and the prober directly); it carries no stability promise.

/// Declares the engine's modules: private to the crate, public with the
/// `internals` feature.
macro_rules! modules {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[cfg(feature = "internals")]
        pub mod $name;
        $(#[$doc])*
        #[cfg(not(feature = "internals"))]
        mod $name;
    )*};
}

modules! {
    capture;
    clock;
    error;
    path;
    probe;
    random;
    reply;
    resolve;
    route;
    service;
    sinks;
    sync;
    trace;
}

pub mod cli;

pub use error::ErrorCode;
pub use path::{NetworkPath, schema};
pub use probe::Protocol;
pub use service::{Config, Options as ServiceOptions, run as serve};
pub use trace::request::{MdaRule, Mode, Multipath, TraceParams};
pub use trace::{Call, TcpMethod, TraceError, TraceRequest, Tracer, TracerConfig};

/// Every request parameter's range and default, as all entry points check
/// them (docs/CLI.md, HTTP_API.md and SERVICE.md list the same).
pub mod limits {
    pub use crate::trace::request::{
        Bounds, CYCLES, E2E_QUERIES, MAX_TTL, MDA_MAX_FLOWS, PATHS, PROBES_PER_SECOND, QUERIES,
        TIMEOUT, WINDOW,
    };
}
