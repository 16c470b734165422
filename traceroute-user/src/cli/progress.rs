//! A trace watched while it runs: on a terminal the table's rows are
//! printed as their TTLs settle (in order; a silent stretch is held back
//! until something answers after it, so a silent tail folds into one row),
//! and Ctrl-C ends the trace with what is known instead of nothing.
//!
//! Printing (and reverse DNS for the rows) runs in a task of its own, so a
//! slow terminal or resolver never delays the probing loop.

use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;

use tokio::sync::watch;

use crate::path::NetworkPath;
use crate::resolve::ReverseDns;
use crate::sinks::hops::{self, TtlRow};
use crate::sinks::table::{self, Style};
use crate::trace::{Progress, TraceError, TraceRequest, Tracer};

/// How a watched trace ended.
pub enum Outcome {
    Finished {
        path: NetworkPath,
        live: Option<LiveTable>,
    },
    /// Ctrl-C: the last snapshot (marked `incomplete`), if any hop was seen.
    Interrupted {
        path: Option<NetworkPath>,
        live: Option<LiveTable>,
    },
}

/// Runs `request`, feeding `live` (when given) as hops settle, until the
/// trace ends or Ctrl-C.
pub async fn run(
    tracer: &Tracer,
    request: &TraceRequest,
    live: Option<LiveTable>,
) -> Result<Outcome, TraceError> {
    let (progress, snapshots) = watch::channel::<Option<Progress>>(None);
    let rdns = request.reverse_dns().then(|| tracer.reverse_dns().clone());
    let printer = live.map(|table| tokio::spawn(table.follow(snapshots.clone(), rdns)));
    let mut trace = Box::pin(tracer.trace_live(request, &progress));
    let interrupted = tokio::select! {
        result = &mut trace => Err(result),
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
    // Dropping the trace ends it (its flows and capture are released); the
    // printer stops once the sender is gone, after the last snapshot.
    drop(trace);
    let last = snapshots.borrow().as_ref().map(|p| p.path.clone());
    drop(progress);
    let live = match printer {
        Some(task) => task.await.ok(),
        None => None,
    };
    match interrupted {
        Ok(()) => Ok(Outcome::Interrupted { path: last, live }),
        Err(result) => Ok(Outcome::Finished {
            path: result?,
            live,
        }),
    }
}

/// The table as it is printed live.
pub struct LiveTable {
    style: Style,
    width: usize,
    /// Lines printed, by TTL.
    printed: HashMap<u8, String>,
    /// The highest TTL printed (rows up to it are out).
    through: u8,
    header: bool,
    names: HashMap<IpAddr, String>,
}

impl LiveTable {
    pub fn new(style: Style) -> LiveTable {
        LiveTable {
            style,
            width: 0,
            printed: HashMap::new(),
            through: 0,
            header: false,
            names: HashMap::new(),
        }
    }

    /// Prints rows as snapshots arrive, until the sender is dropped.
    pub(super) async fn follow(
        mut self,
        mut snapshots: watch::Receiver<Option<Progress>>,
        rdns: Option<ReverseDns>,
    ) -> LiveTable {
        while snapshots.changed().await.is_ok() {
            let Some(progress) = snapshots.borrow_and_update().clone() else {
                continue;
            };
            let Some(settled) = progress.settled_through else {
                continue;
            };
            let mut rows = hops::rows(&progress.path);
            rows.retain(|r| r.ttl <= settled);
            if let Some(rdns) = &rdns {
                self.resolve(&mut rows, rdns).await;
            }
            self.print_header(&progress.path);
            // A silent row waits until an answer comes after it.
            let answered_to = rows.iter().rposition(|r| !r.silent).map_or(0, |i| i + 1);
            self.print(&rows[..answered_to]);
        }
        self
    }

    async fn resolve(&mut self, rows: &mut [TtlRow], rdns: &ReverseDns) {
        for row in rows.iter_mut() {
            for ip in &row.hosts {
                if !self.names.contains_key(ip)
                    && let Some(name) = rdns.lookup(*ip).await
                {
                    self.names.insert(*ip, name);
                }
                if let Some(name) = self.names.get(ip)
                    && !row.names.contains(name)
                {
                    row.names.push(name.clone());
                }
            }
        }
    }

    fn print_header(&mut self, path: &NetworkPath) {
        if self.header {
            return;
        }
        self.header = true;
        // Addresses fit; a long name widens its own line only (rows already
        // printed are not redrawn).
        let address = path
            .traceroute
            .runs
            .first()
            .map_or(0, |r| r.destination.ip_address.to_string().len());
        self.width = table::host_width(&[], self.style).max(address + 8);
        let mut out = table::header(path);
        out.push_str(&table::column_titles(self.width));
        emit(&out);
    }

    /// Prints the rows above the highest printed TTL.
    fn print(&mut self, rows: &[TtlRow]) {
        let mut out = String::new();
        let through = self.through;
        for row in rows.iter().filter(|r| r.ttl > through) {
            let line = table::row_line(row, &row.ttl.to_string(), self.width, self.style);
            out.push_str(&line);
            self.printed.insert(row.ttl, line);
            self.through = row.ttl;
        }
        emit(&out);
    }

    /// The rest of the finished trace: rows not printed yet (a silent tail
    /// folded), rows that changed after they were printed (a late answer to
    /// a re-probe) printed again, and the footer.
    pub fn finish(&mut self, path: &NetworkPath) -> std::io::Result<()> {
        self.print_header(path);
        let rows = hops::rows(path);
        let mut out = String::new();
        for row in rows.iter().filter(|r| r.ttl <= self.through) {
            let line = table::row_line(row, &row.ttl.to_string(), self.width, self.style);
            if self.printed.get(&row.ttl).is_some_and(|old| *old != line) {
                out.push_str(&line);
            }
        }
        let rest: Vec<TtlRow> = rows
            .iter()
            .filter(|r| r.ttl > self.through)
            .cloned()
            .collect();
        out.push_str(&table::lines(&rest, self.width, self.style, true));
        table::footer(path, &rows, &mut out);
        emit(&out);
        Ok(())
    }

    /// Ctrl-C: the settled rows not printed yet, and what was left open.
    pub fn interrupted(&mut self, path: &NetworkPath) -> std::io::Result<()> {
        self.print_header(path);
        let rows = hops::rows(path);
        let settled: Vec<TtlRow> = rows
            .iter()
            .filter(|r| r.ttl > self.through && r.no_answer != Some(cut_short()))
            .take_while(|r| !r.hosts.is_empty() || r.silent)
            .cloned()
            .collect();
        let mut out = table::lines(&settled, self.width, self.style, false);
        let open: Vec<u8> = rows
            .iter()
            .filter(|r| r.hosts.is_empty() && r.no_answer == Some(cut_short()))
            .map(|r| r.ttl)
            .collect();
        out.push_str(&format!(
            "interrupted: trace stopped by Ctrl-C{}\n",
            match (open.first(), open.last()) {
                (Some(a), Some(b)) if a == b => format!("; hop {a} was still waiting"),
                (Some(a), Some(b)) => format!("; hops {a}-{b} were still waiting"),
                _ => String::new(),
            }
        ));
        emit(&out);
        Ok(())
    }
}

fn cut_short() -> crate::path::NoAnswerKind {
    crate::path::NoAnswerKind::CutShort
}

fn emit(text: &str) {
    if text.is_empty() {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}
