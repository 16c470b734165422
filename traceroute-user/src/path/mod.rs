//! The `NetworkPath` record (docs/NETWORK_PATH.md) and its assembly from probe results.
//!
//! [`model`] is the serde shape, field for field; our additions are optional
//! fields with their own names, documented in `schema/network-path.schema.json`
//! ([`schema::SCHEMA`]). [`assemble`] turns what the tracer observed per TTL
//! ([`HopObservation`]) into runs, hop counts and end-to-end statistics.

pub mod assemble;
pub mod graph;
pub mod model;
pub mod schema;

pub use assemble::{AttemptOutcome, HopObservation};
pub use model::{
    CaptureInfo, DistanceUncertain, E2eProbe, Hop, Interface, InterfaceInfo, InterfaceRole, MplsLabel, NetworkPath, NoAnswer,
    NoAnswerKind, NotSentReason, PathChange, PathDestination, PathSource, Probing, Rewritten, Run,
    SharedHop, TcpAnswer, TimestampSource, Via,
};

#[cfg(test)]
pub(crate) mod tests;
