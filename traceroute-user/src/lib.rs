//! traceroute-agent: an eBPF-assisted network path agent.
//!
//! The modules follow the data flow of a trace:
//! [`resolve`] the target → [`route`] lookup (interface, source, gateway) →
//! [`probe`] crafting → [`trace`] engine (pacing, sending, bookkeeping) →
//! [`capture`] of replies (eBPF, or sockets as fallback) → [`reply`] decoding and
//! correlation → [`path`] assembly of the `NetworkPath` record → [`sinks`].

pub mod capture;
pub mod clock;
pub mod error;
pub mod path;
pub mod probe;
pub mod reply;
pub mod resolve;
pub mod route;
pub mod service;
pub mod sinks;
pub mod sync;
pub mod trace;
