//! Pictures and reports of a record's path graph: Graphviz DOT, a
//! self-contained SVG (routers in one column per TTL, links with their flow
//! counts, RTTs in the boxes), and a flows table with one row per distinct
//! path. Records without a `multipath` graph get one built from their runs.
//!
//! The SVG is written by hand rather than by a layout crate: the graph is
//! layered by TTL already, so columns and rows are the whole layout.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use crate::path::NetworkPath;
use crate::path::graph::{FlowPath, Graph, GraphNode, PathGraph};

/// The record's graph, or one built from its runs (one flow per flow id).
pub fn graph_of(path: &NetworkPath) -> PathGraph {
    if let Some(graph) = &path.multipath {
        return graph.clone();
    }
    let runs = &path.traceroute.runs;
    let mut by_flow: BTreeMap<u16, Vec<&crate::path::Run>> = BTreeMap::new();
    for (i, run) in runs.iter().enumerate() {
        let id = run.flow_id.unwrap_or(run.source.port.max(i as u16));
        by_flow.entry(id).or_default().push(run);
    }
    let flows: Vec<FlowPath> = by_flow
        .iter()
        .map(|(id, runs)| FlowPath::from_runs(*id, runs.iter().copied()))
        .collect();
    let source = runs
        .first()
        .map_or(IpAddr::from([0, 0, 0, 0]), |r| r.source.ip_address);
    let first_ttl = runs
        .iter()
        .filter_map(|r| r.hops.first().map(|h| h.ttl.get()))
        .min()
        .unwrap_or(1);
    Graph::build(source, first_ttl, &flows).to_record("flows", None, true)
}

fn name(node: &GraphNode) -> String {
    match (node.ttl, node.ip_address) {
        (0, Some(a)) => format!("{a} (this host)"),
        (_, Some(a)) => a.to_string(),
        (_, None) => "*".to_string(),
    }
}

fn details(node: &GraphNode) -> String {
    let mut out = format!("TTL {}", node.ttl);
    if let Some(rtt) = &node.rtt {
        write!(out, ", {:.3} ms", rtt.avg).expect("String");
    }
    if node.loss > 0.0 && !node.silent {
        write!(out, ", {:.0}% loss", node.loss * 100.0).expect("String");
    }
    out
}

fn dot_escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Graphviz DOT: one node per router position, ranked by TTL.
pub fn dot(path: &NetworkPath) -> String {
    let graph = graph_of(path);
    let mut out = String::new();
    out.push_str(
        "digraph traceroute {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n",
    );
    writeln!(
        out,
        "  label=\"{} {} to {}\";",
        dot_escape(&graph.method),
        path.protocol,
        dot_escape(&path.destination.hostname)
    )
    .expect("String");
    for node in &graph.nodes {
        let label = if node.ttl == 0 {
            name(node)
        } else {
            format!("{}\\n{}", name(node), details(node))
        };
        let mut attrs = format!("label=\"{}\"", dot_escape(&label).replace("\\\\n", "\\n"));
        if node.silent {
            attrs.push_str(", style=dashed");
        }
        if node.destination {
            attrs.push_str(", peripheries=2");
        }
        writeln!(out, "  n{} [{attrs}];", node.id).expect("String");
    }
    let mut ranks: BTreeMap<u8, Vec<usize>> = BTreeMap::new();
    for node in &graph.nodes {
        ranks.entry(node.ttl).or_default().push(node.id);
    }
    for ids in ranks.values() {
        let list: Vec<String> = ids.iter().map(|id| format!("n{id}")).collect();
        writeln!(out, "  {{ rank=same; {}; }}", list.join("; ")).expect("String");
    }
    for link in &graph.links {
        writeln!(
            out,
            "  n{} -> n{} [label=\"{} flow{}\"];",
            link.from,
            link.to,
            link.flows.len(),
            if link.flows.len() == 1 { "" } else { "s" }
        )
        .expect("String");
    }
    out.push_str("}\n");
    out
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const COLUMN: i64 = 210;
const ROW: i64 = 64;
const BOX_W: i64 = 180;
const BOX_H: i64 = 44;
const MARGIN: i64 = 20;

/// A standalone SVG of the graph: one column per TTL, one box per router.
pub fn svg(path: &NetworkPath) -> String {
    let graph = graph_of(path);
    let mut rows: BTreeMap<u8, i64> = BTreeMap::new();
    let mut at: BTreeMap<usize, (i64, i64)> = BTreeMap::new();
    for node in &graph.nodes {
        let row = rows.entry(node.ttl).or_insert(0);
        at.insert(
            node.id,
            (
                MARGIN + i64::from(node.ttl) * COLUMN,
                MARGIN + 24 + *row * ROW,
            ),
        );
        *row += 1;
    }
    let width = at.values().map(|p| p.0).max().unwrap_or(0) + BOX_W + MARGIN;
    let height = at.values().map(|p| p.1).max().unwrap_or(0) + BOX_H + MARGIN;
    let mut out = String::new();
    writeln!(
        out,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"monospace\" font-size=\"12\">"
    )
    .expect("String");
    writeln!(
        out,
        "<title>{} {} to {}</title>\n<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" markerHeight=\"8\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\"/></marker></defs>",
        xml_escape(&graph.method),
        path.protocol,
        xml_escape(&path.destination.hostname)
    )
    .expect("String");
    writeln!(
        out,
        "<text x=\"{MARGIN}\" y=\"16\">{} {} to {}: {} flow(s)</text>",
        xml_escape(&graph.method),
        path.protocol,
        xml_escape(&path.destination.hostname),
        graph.flows
    )
    .expect("String");
    for link in &graph.links {
        let (Some(&(x1, y1)), Some(&(x2, y2))) = (at.get(&link.from), at.get(&link.to)) else {
            continue;
        };
        let (x1, y1, x2, y2) = (x1 + BOX_W, y1 + BOX_H / 2, x2, y2 + BOX_H / 2);
        writeln!(
            out,
            "<line x1=\"{x1}\" y1=\"{y1}\" x2=\"{x2}\" y2=\"{y2}\" stroke=\"#555\" marker-end=\"url(#arrow)\"/><text x=\"{}\" y=\"{}\" font-size=\"10\">{}</text>",
            (x1 + x2) / 2 - 8,
            (y1 + y2) / 2 - 3,
            link.flows.len()
        )
        .expect("String");
    }
    for node in &graph.nodes {
        let (x, y) = at[&node.id];
        let dash = if node.silent {
            " stroke-dasharray=\"4 3\""
        } else {
            ""
        };
        let stroke = if node.destination { 2 } else { 1 };
        writeln!(
            out,
            "<g><rect x=\"{x}\" y=\"{y}\" width=\"{BOX_W}\" height=\"{BOX_H}\" rx=\"4\" fill=\"#f4f4f4\" stroke=\"#222\" stroke-width=\"{stroke}\"{dash}/><text x=\"{}\" y=\"{}\">{}</text><text x=\"{}\" y=\"{}\" font-size=\"10\">{}</text></g>",
            x + 8,
            y + 18,
            xml_escape(&name(node)),
            x + 8,
            y + 34,
            xml_escape(&details(node))
        )
        .expect("String");
    }
    out.push_str("</svg>\n");
    out
}

/// One row per distinct path with the flows that took it.
pub fn flows_table(path: &NetworkPath) -> String {
    let mut paths: BTreeMap<Vec<String>, Vec<u16>> = BTreeMap::new();
    for run in &path.traceroute.runs {
        let hops: Vec<String> = run
            .hops
            .iter()
            .map(|h| h.ip_address.map_or("*".to_string(), |a| a.to_string()))
            .collect();
        let flows = paths.entry(hops).or_default();
        if let Some(id) = run.flow_id
            && !flows.contains(&id)
        {
            flows.push(id);
        }
    }
    let mut out = String::new();
    writeln!(
        out,
        "{} distinct path(s) over {} run(s) to {}",
        paths.len(),
        path.traceroute.runs.len(),
        path.destination.hostname
    )
    .expect("String");
    for (i, (hops, flows)) in paths.iter().enumerate() {
        let shown: Vec<String> = flows.iter().map(u16::to_string).collect();
        writeln!(
            out,
            "path {}: {} flow(s) [{}]\n  {}",
            i + 1,
            flows.len(),
            shown.join(", "),
            hops.join(" > ")
        )
        .expect("String");
    }
    out
}
