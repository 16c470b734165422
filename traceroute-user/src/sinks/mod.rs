//! Where finished `NetworkPath` records go: JSON (one object per line), and
//! for people a table, markdown, CSV and per-hop JSON lines; for fleets,
//! rows in ClickHouse.

pub mod clickhouse;
pub mod file;
pub mod graph;
pub mod hops;
pub mod markdown;
pub mod rows;
pub mod table;

use std::io::{self, Write};

use crate::path::NetworkPath;

/// Writes `path` as one JSON line: the format log shippers and the API use.
pub fn write_json_line(out: &mut impl Write, path: &NetworkPath) -> io::Result<()> {
    let mut line = serde_json::to_vec(path).map_err(io::Error::other)?;
    line.push(b'\n');
    // One write call per record: no interleaving of partial lines.
    out.write_all(&line)?;
    out.flush()
}
