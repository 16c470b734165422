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

use crate::path::graph::{FlowPath, Graph, GraphNode, PathGraph};
use crate::path::{NetworkPath, Run};

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

/// One row per distinct path with the flows that took it. After MDA, the
/// flows it stopped early (their routers needed them only so deep) are not
/// paths: they are listed apart, as the prefixes they probed.
pub fn flows_table(path: &NetworkPath) -> String {
    let mda = path.multipath.as_ref().is_some_and(|g| g.method == "mda");
    let groups = FlowGroups::of(&path.traceroute.runs, mda);
    let mut out = String::new();
    write!(
        out,
        "{} distinct path(s) over {} run(s) to {}",
        groups.paths.len(),
        path.traceroute.runs.len(),
        path.destination.hostname
    )
    .expect("String");
    let stopped: usize = groups.stopped.values().map(Vec::len).sum();
    if stopped > 0 {
        write!(out, "; {stopped} flow(s) MDA stopped early, apart below").expect("String");
    }
    out.push('\n');
    for (i, (hops, flows)) in groups.paths.iter().enumerate() {
        writeln!(
            out,
            "path {}: {} flow(s) [{}]\n  {}",
            i + 1,
            flows.len(),
            ids(flows),
            hops.join(" > ")
        )
        .expect("String");
    }
    if stopped > 0 {
        out.push_str("stopped early by MDA (not paths: probed only as deep as shown):\n");
        for (hops, flows) in &groups.stopped {
            writeln!(
                out,
                "  {} flow(s) [{}]\n    {} > …",
                flows.len(),
                ids(flows),
                hops.join(" > ")
            )
            .expect("String");
        }
    }
    out
}

fn ids(flows: &[u16]) -> String {
    let shown: Vec<String> = flows.iter().map(u16::to_string).collect();
    shown.join(", ")
}

/// Runs grouped by the hops they show: whole paths, and (after MDA) the
/// prefixes of flows stopped early.
struct FlowGroups {
    paths: BTreeMap<Vec<String>, Vec<u16>>,
    stopped: BTreeMap<Vec<String>, Vec<u16>>,
}

impl FlowGroups {
    /// A flow MDA stopped early did not reach the destination and ends
    /// short of the deepest TTL any flow probed (the first round maps
    /// every TTL; later flows go only as deep as a router needs them).
    fn of(runs: &[Run], mda: bool) -> FlowGroups {
        let deepest = runs
            .iter()
            .filter_map(|r| r.hops.last())
            .map(|h| h.ttl)
            .max();
        let mut groups = FlowGroups {
            paths: BTreeMap::new(),
            stopped: BTreeMap::new(),
        };
        for run in runs {
            let last = run.hops.last().map(|h| h.ttl);
            let stopped = mda && !run.destination_reached && last < deepest;
            let hops: Vec<String> = run
                .hops
                .iter()
                .map(|h| h.ip_address.map_or("*".to_string(), |a| a.to_string()))
                .collect();
            let group = if stopped {
                &mut groups.stopped
            } else {
                &mut groups.paths
            };
            let flows = group.entry(hops).or_default();
            if let Some(id) = run.flow_id
                && !flows.contains(&id)
            {
                flows.push(id);
            }
        }
        groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::{AttemptOutcome, HopObservation};
    use crate::probe::Ttl;
    use std::time::Duration;

    /// A run of flow `id` answered by `addrs` from TTL 1; "*" is silent.
    /// `reached`: the last address is the destination.
    fn run(id: u16, addrs: &[&str], reached: bool) -> Run {
        let observations: Vec<HopObservation> = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let ttl = Ttl::new(i as u8 + 1).unwrap();
                let attempt = match a.parse::<IpAddr>() {
                    Ok(ip) => AttemptOutcome {
                        is_destination: reached && i + 1 == addrs.len(),
                        ..AttemptOutcome::answered(ip, Duration::from_millis(1))
                    },
                    Err(_) => AttemptOutcome::silent(),
                };
                HopObservation {
                    ttl,
                    attempts: vec![attempt],
                }
            })
            .collect();
        let mut run = Run::from_observations(
            "198.18.0.1:40000".parse().unwrap(),
            "198.18.9.2:33434".parse().unwrap(),
            &observations,
        );
        run.flow_id = Some(id);
        run
    }

    #[test]
    fn flows_mda_stopped_early_are_apart_from_the_paths() {
        let runs = vec![
            run(1, &["198.18.1.2", "198.18.50.2", "198.18.9.2"], true),
            run(2, &["198.18.1.2", "198.18.51.2", "198.18.9.2"], true),
            run(3, &["198.18.1.2", "198.18.50.2"], false),
            run(4, &["198.18.1.2", "*"], false),
            run(5, &["198.18.1.2", "198.18.50.2"], false),
        ];
        assert!(runs[0].destination_reached && !runs[2].destination_reached);
        let groups = FlowGroups::of(&runs, true);
        assert_eq!(groups.paths.len(), 2, "{:?}", groups.paths);
        assert!(groups.paths.values().all(|f| f.len() == 1));
        let stopped: Vec<(&Vec<String>, &Vec<u16>)> = groups.stopped.iter().collect();
        assert_eq!(stopped.len(), 2);
        assert!(stopped.contains(&(
            &vec!["198.18.1.2".into(), "198.18.50.2".into()],
            &vec![3, 5]
        )));
        assert!(stopped.contains(&(&vec!["198.18.1.2".into(), "*".into()], &vec![4])));
        // Without MDA every run is a path, as it was traced.
        let fixed = FlowGroups::of(&runs, false);
        assert_eq!(fixed.paths.len(), 4);
        assert!(fixed.stopped.is_empty());
    }
}
