//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod agent;
pub mod netns;
pub mod packets;
pub mod topologies;
