//! traceroute-agent: an eBPF-assisted network path agent.
//!
//! The modules follow the data flow: a request names a target, probes go out,
//! [`capture`] sees the replies (in the kernel when it can, with sockets when it
//! cannot), and the results become `NetworkPath` records.

pub mod capture;
pub mod packet;
pub mod path;
pub mod probe;
pub mod reply;
