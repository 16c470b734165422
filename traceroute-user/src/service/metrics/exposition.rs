//! Which text format `/metrics` answers in, and the classic Prometheus text
//! format (0.0.4) made from the OpenMetrics text `prometheus-client` writes.
//!
//! Prometheus asks for OpenMetrics first; `curl`, `promtool check metrics`
//! and older scrapers get the classic format, whose parser would read every
//! OpenMetrics counter family (`# TYPE foo counter` over `foo_total`
//! samples) as an untyped `foo_total`. `prometheus-client` writes only
//! OpenMetrics, and the two differ in a few header lines, so the conversion
//! is done here rather than by keeping a second metrics library.

/// The content type of the OpenMetrics exposition.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of the classic text exposition.
pub const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The two text formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    Classic,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics when it is
    /// accepted at least as much as plain text, classic otherwise (and
    /// without a header).
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Classic;
        };
        let mut openmetrics = 0.0f64;
        let mut text = 0.0f64;
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.strip_prefix("q="))
                .find_map(|q| q.parse::<f64>().ok())
                .unwrap_or(1.0);
            match media.as_str() {
                "application/openmetrics-text" => openmetrics = openmetrics.max(q),
                "text/plain" | "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
        if openmetrics > 0.0 && openmetrics >= text {
            Format::OpenMetrics
        } else {
            Format::Classic
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS,
            Format::Classic => CLASSIC,
        }
    }
}

/// The classic text format of an OpenMetrics exposition: counter families
/// are named after their `_total` samples, `unknown` becomes `untyped`, and
/// `# UNIT` and `# EOF` lines go.
pub fn to_classic(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some((name, kind)) = rest.split_once(' ')
            && kind == "counter"
        {
            counters.insert(name.to_string());
        }
    }
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let header = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match header {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let name = if counters.contains(name) {
                    format!("{name}_total")
                } else {
                    name.to_string()
                };
                let tail = if prefix == "# TYPE " && tail == "unknown" {
                    "untyped"
                } else {
                    tail
                };
                out.push_str(&format!("{prefix}{name} {tail}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_gets_openmetrics_and_everyone_else_classic_text() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(None), Format::Classic);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Classic);
        assert_eq!(
            Format::negotiate(Some("text/plain;version=0.0.4")),
            Format::Classic
        );
        assert_eq!(
            Format::negotiate(Some("text/plain;q=0.9, application/openmetrics-text;q=0.5")),
            Format::Classic
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text")),
            Format::OpenMetrics
        );
    }

    #[test]
    fn counter_families_are_named_after_their_samples_in_classic_text() {
        let om = "# HELP a_runs Traces run.\n# TYPE a_runs counter\na_runs_total{p=\"UDP\"} 3\n\
                  # HELP a_up Up.\n# TYPE a_up gauge\na_up 1\n# TYPE a_x unknown\na_x 2\n\
                  # UNIT a_d seconds\n# EOF\n";
        assert_eq!(
            to_classic(om),
            "# HELP a_runs_total Traces run.\n# TYPE a_runs_total counter\na_runs_total{p=\"UDP\"} 3\n\
             # HELP a_up Up.\n# TYPE a_up gauge\na_up 1\n# TYPE a_x untyped\na_x 2\n"
        );
    }
}
