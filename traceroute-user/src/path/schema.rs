//! The JSON Schema of `NetworkPath` records, extras included.
//!
//! Every record the tests produce is checked with [`validate`]; consumers can
//! use the schema file itself.

/// Text of `schema/network-path.schema.json` (draft 2020-12).
pub const SCHEMA: &str = include_str!("../../schema/network-path.schema.json");

/// Validates a record against [`SCHEMA`] (formats such as ipv4/uuid included),
/// one message per violation.
pub fn validate(record: &serde_json::Value) -> Result<(), Vec<String>> {
    const LOCATION: &str = "network-path.schema.json";
    let schema: serde_json::Value = serde_json::from_str(SCHEMA).expect("schema is JSON");
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    compiler.enable_format_assertions();
    compiler
        .add_resource(LOCATION, schema)
        .expect("schema resource loads");
    let index = compiler
        .compile(LOCATION, &mut schemas)
        .expect("schema compiles");
    schemas.validate(record, index).map_err(|err| {
        // Display lists one violation per line after a summary line.
        let text = err.to_string();
        let lines: Vec<String> = text.lines().skip(1).map(|l| l.trim().to_string()).collect();
        if lines.is_empty() { vec![text] } else { lines }
    })
}
