//! Integration tests: each lab feature checked with ordinary tools (ping,
//! traceroute, plain sockets) as ground truth. They need root; they are not
//! skipped without it, they fail.

mod chain;
mod common;
mod delay;
mod ecmp;
mod fanout;
mod features;
mod named;
mod nat;
mod slow;
mod teardown;
