//! The fleet path against a real ClickHouse (Debian's clickhouse-server,
//! 18.16), in a lab namespace of its own: agents in their own namespaces
//! ship their scheduled records through the spool; every record arrives
//! exactly once, through an outage of the store and through refusals (wrong
//! password, missing table) that are logged and lose nothing; the schema
//! and the queries in docs/clickhouse/ run against what the agents wrote.
//! Needs root and clickhouse-server (`cargo xtask setup` installs it).

mod service_support;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use service_support::{Agent, TempDir, eventually, lines};
use traceroute_lab::clickhouse::{PASSWORD, Store, statements};
use traceroute_lab::{Family, IcmpRateLimit, Lab, Topology};

const SCHEMA: &str = include_str!("../../docs/clickhouse/schema.sql");
const DISTRIBUTED: &str = include_str!("../../docs/clickhouse/distributed.sql");

/// Two agents (a1, a2) and the store behind one router; the target beyond it.
fn fleet() -> Lab {
    Lab::up(
        &Topology::new("fleet")
            .host("a1")
            .host("a2")
            .router("r")
            .host("dst")
            .host("store")
            .link("a1", "r")
            .link("a2", "r")
            .link("r", "dst")
            .link("r", "store")
            // The routers answer every probe: this is about shipping records.
            .icmp_rate_limit_all(IcmpRateLimit::UNLIMITED),
    )
    .expect("lab up")
}

/// A server in `node` with the schema applied.
fn store(lab: &Lab, node: &str) -> Store {
    let store =
        Store::start(lab, node, &[]).expect("clickhouse-server (cargo xtask setup installs it)");
    store.apply(lab, SCHEMA).unwrap();
    store
}

fn query(lab: &Lab, store: &Store, sql: &str) -> String {
    store
        .query(lab, sql)
        .unwrap_or_else(|e| panic!("{sql}\n{e}"))
}

/// An agent's config: scheduled UDP traces of `target`, JSON lines to a
/// file, and the store.
fn config(
    namespace: &str,
    dir: &TempDir,
    url: &str,
    password_file: &Path,
    target: &str,
    (interval, count): (&str, u32),
) -> String {
    format!(
        "{}[[targets]]\nhost = \"{target}\"\nprotocol = \"udp\"\ninterval = \"{interval}\"\ncount = {count}\n",
        outputs(namespace, dir, url, password_file)
    )
}

/// The config's namespace and outputs (JSON lines to a file, and the store).
fn outputs(namespace: &str, dir: &TempDir, url: &str, password_file: &Path) -> String {
    format!(
        "namespace = \"{namespace}\"\n\
         [output]\npath = \"{jsonl}\"\n\
         [output.clickhouse]\nurl = \"{url}\"\nuser = \"agent\"\npassword_file = \"{pw}\"\n\
         batch_records = 3\nbatch_age = \"300ms\"\nretry_max = \"1s\"\nspool_dir = \"{spool}\"\n",
        jsonl = dir.path("paths.jsonl").display(),
        pw = password_file.display(),
        spool = dir.path("spool").display(),
    )
}

/// The records an agent wrote as JSON lines.
fn written(dir: &TempDir) -> Vec<Value> {
    lines(&dir.path("paths.jsonl"))
        .iter()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn hops_in(records: &[Value]) -> usize {
    records
        .iter()
        .flat_map(|r| r["traceroute"]["runs"].as_array().unwrap().iter())
        .map(|run| run["hops"].as_array().unwrap().len())
        .sum()
}

/// Waits until the store holds `want` distinct records of `namespace`.
fn until_stored(lab: &Lab, store: &Store, namespace: &str, want: usize, agent: &Agent) {
    let sql =
        format!("SELECT count() FROM traceroute.paths FINAL WHERE agent_namespace = '{namespace}'");
    let mut last = String::new();
    let ok = eventually(Duration::from_secs(60), || {
        last = store.query(lab, &sql).unwrap_or_default();
        last == want.to_string()
    });
    assert!(
        ok,
        "{namespace}: {last} of {want} records stored\n{}",
        agent.log()
    );
}

#[test]
fn every_record_arrives_once_through_an_outage_of_the_store() {
    let lab = fleet();
    let mut store = store(&lab, "store");
    let target = lab.primary("dst", Family::V4).unwrap().to_string();
    let secrets = TempDir::new("secret");
    let password_file = secrets.path("clickhouse.password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();

    // One run a second for 75 s, a minute of it with the store down.
    let count = 75;
    let dirs = [TempDir::new("fleet-a1"), TempDir::new("fleet-a2")];
    let agents: Vec<Agent> = ["a1", "a2"]
        .iter()
        .zip(&dirs)
        .map(|(node, dir)| {
            let text = config(
                node,
                dir,
                &store.url(),
                &password_file,
                &target,
                ("1s", count),
            );
            Agent::start_with(&lab, node, Some(&text), &[])
        })
        .collect();

    // Some records in, then the store goes away while the agents go on.
    assert!(eventually(Duration::from_secs(30), || {
        store
            .query(&lab, "SELECT count() FROM traceroute.paths")
            .is_ok_and(|n| n.parse::<u32>().unwrap_or(0) >= 2)
    }));
    store.down();
    for agent in &agents {
        assert!(
            eventually(Duration::from_secs(30), || {
                agent.metric("traceroute_agent_clickhouse_batches_failed_total", "") > 0.0
                    && agent.metric("traceroute_agent_clickhouse_spool_batches", "") > 0.0
            }),
            "the spool did not fill during the outage:\n{}",
            agent.log()
        );
        assert!(agent.metric("traceroute_agent_clickhouse_oldest_unsent_age_seconds", "") > 0.0);
    }
    std::thread::sleep(Duration::from_secs(60));
    // The records of the minute wait in the spool.
    for agent in &agents {
        let spooled = agent.metric("traceroute_agent_clickhouse_spool_bytes", "");
        assert!(spooled > 10_000.0, "{spooled} bytes spooled");
        assert!(agent.metric("traceroute_agent_clickhouse_oldest_unsent_age_seconds", "") >= 55.0);
    }
    store.up(&lab).unwrap();

    for ((agent, dir), namespace) in agents.iter().zip(&dirs).zip(["a1", "a2"]) {
        assert!(
            eventually(Duration::from_secs(30), || written(dir).len()
                == count as usize),
            "{namespace} did not finish its runs:\n{}",
            agent.log()
        );
        until_stored(&lab, &store, namespace, count as usize, agent);
        let records = written(dir);
        // The same records, by identity, and their hops.
        let stored: HashSet<String> = query(
                &lab,
                &store,
                &format!("SELECT test_run_id FROM traceroute.paths FINAL WHERE agent_namespace = '{namespace}'"),
            )
            .lines()
            .map(str::to_string)
            .collect();
        let wrote: HashSet<String> = records
            .iter()
            .map(|r| r["test_run_id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(stored, wrote, "{namespace}");
        let hops = query(
            &lab,
            &store,
            &format!(
                "SELECT count() FROM traceroute.hops FINAL WHERE agent_namespace = '{namespace}'"
            ),
        );
        assert_eq!(hops, hops_in(&records).to_string(), "{namespace}");
        assert!(
            eventually(Duration::from_secs(10), || {
                agent.metric("traceroute_agent_clickhouse_spool_bytes", "") == 0.0
            }),
            "the spool did not drain"
        );
        assert_eq!(
            agent.metric("traceroute_agent_clickhouse_records_dropped_total", ""),
            0.0
        );
        assert!(
            agent
                .log()
                .contains("clickhouse: the store takes rows again"),
            "{}",
            agent.log()
        );
    }
    // Exactly once in the tables, also after the merges that deduplicate.
    query(&lab, &store, "OPTIMIZE TABLE traceroute.paths FINAL");
    query(&lab, &store, "OPTIMIZE TABLE traceroute.hops FINAL");
    assert_eq!(
        query(
            &lab,
            &store,
            "SELECT count(), uniqExact(test_run_id) FROM traceroute.paths"
        ),
        format!("{}\t{}", 2 * count, 2 * count)
    );
    let hops: usize = dirs.iter().map(|d| hops_in(&written(d))).sum();
    assert_eq!(
        query(&lab, &store, "SELECT count() FROM traceroute.hops"),
        hops.to_string()
    );
    // The hops say what the lab's path is.
    let want: Vec<String> = lab
        .expected_hops("a1", "dst", Family::V4)
        .unwrap()
        .into_iter()
        .map(|h| h.map(|a| a.to_string()).unwrap_or_default())
        .chain([target.clone()])
        .collect();
    let got = query(
        &lab,
        &store,
        "SELECT ttl, any(ip_address) FROM traceroute.hops FINAL WHERE agent_namespace = 'a1' \
         GROUP BY ttl ORDER BY ttl",
    );
    let got: Vec<String> = got
        .lines()
        .map(|l| l.split('\t').nth(1).unwrap().to_string())
        .collect();
    assert_eq!(got, want);
    drop(agents);
}

#[test]
fn a_store_that_refuses_loses_nothing_and_says_why() {
    let lab = fleet();
    let store = store(&lab, "store");
    query(&lab, &store, "DROP TABLE traceroute.hops");
    let target = lab.primary("dst", Family::V4).unwrap().to_string();
    let secrets = TempDir::new("secret");
    let wrong = secrets.path("wrong.password");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let right = secrets.path("clickhouse.password");
    std::fs::write(&right, format!("{PASSWORD}\n")).unwrap();
    let dir = TempDir::new("refused");
    let count = 6;

    // A wrong password: refused, said once, kept.
    let mut agent = Agent::start_with(
        &lab,
        "a1",
        Some(&config(
            "a1",
            &dir,
            &store.url(),
            &wrong,
            &target,
            ("400ms", count),
        )),
        &[],
    );
    assert!(eventually(Duration::from_secs(30), || written(&dir).len()
        == count as usize));
    assert!(
        eventually(Duration::from_secs(10), || agent
            .log()
            .contains("check the credentials")),
        "{}",
        agent.log()
    );
    assert!(
        !agent.log().contains("not-the-password"),
        "the password was logged"
    );
    assert!(agent.metric("traceroute_agent_clickhouse_batches_failed_total", "") > 0.0);
    assert_eq!(
        agent.metric("traceroute_agent_clickhouse_records_sent_total", ""),
        0.0
    );
    assert!(agent.stop().success(), "{}", agent.log());
    let spooled = std::fs::read_dir(dir.path("spool")).unwrap().count();
    assert!(spooled > 0, "nothing kept in the spool");

    // The right password, the same spool, no more runs wanted: the table
    // `hops` is missing, which is said too.
    let text = config("a1", &dir, &store.url(), &right, &target, ("400ms", count))
        .replace(&format!("count = {count}\n"), "count = 1\n");
    let mut agent = Agent::start_with(&lab, "a1", Some(&text), &[]);
    assert!(
        eventually(Duration::from_secs(30), || agent
            .log()
            .contains("doesn't exist")),
        "{}",
        agent.log()
    );
    // The schema fixed: everything arrives, once.
    store.apply(&lab, SCHEMA).unwrap();
    until_stored(&lab, &store, "a1", count as usize + 1, &agent);
    let records = written(&dir);
    assert_eq!(records.len(), count as usize + 1);
    assert!(eventually(Duration::from_secs(30), || {
        store
            .query(&lab, "SELECT count() FROM traceroute.hops FINAL")
            .is_ok_and(|n| n == hops_in(&records).to_string())
    }));
    assert_eq!(
        agent.metric("traceroute_agent_clickhouse_records_dropped_total", ""),
        0.0
    );
    assert!(agent.stop().success());
}

/// A query of docs/clickhouse/queries/ with its windows shrunk to the test's
/// seconds: `INTERVAL 10 MINUTE` (the recent window) becomes `recent_s`.
fn query_file(name: &str, recent_s: u64) -> String {
    let path = format!(
        "{}/../docs/clickhouse/queries/{name}.sql",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let sql = statements(&text).concat();
    assert!(!sql.is_empty(), "{name}");
    sql.replace("INTERVAL 10 MINUTE", &format!("INTERVAL {recent_s} SECOND"))
}

fn rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// Records of `dir` per target.
fn count_for(dir: &TempDir, target: &str) -> usize {
    written(dir)
        .iter()
        .filter(|r| r["destination"]["hostname"] == target)
        .count()
}

#[test]
fn the_questions_answer_what_the_lab_did_on_one_server_and_on_two_shards() {
    // Two agents, two targets on dst; r reaches dst directly, or through r2
    // once the route for the first target changes mid-run.
    let lab = Lab::up(
        &Topology::new("fleetq")
            .host("a1")
            .host("a2")
            .router("r")
            .router("r2")
            .host("dst")
            .host("s1")
            .host("s2")
            .host("one")
            .link("a1", "r")
            .link("a2", "r")
            .link("r", "dst")
            .link("r", "r2")
            .link("r2", "dst")
            .link("r", "s1")
            .link("r", "s2")
            .link("r", "one")
            .targets("dst", 2)
            .icmp_rate_limit_all(IcmpRateLimit::UNLIMITED),
    )
    .expect("lab up");
    let shards: Vec<String> = ["s1", "s2"]
        .iter()
        .map(|n| lab.primary(n, Family::V4).unwrap().to_string())
        .collect();
    let cluster: Vec<Store> = ["s1", "s2"]
        .iter()
        .map(|n| {
            let store = Store::start(&lab, n, &shards).unwrap();
            store.apply(&lab, SCHEMA).unwrap();
            store
        })
        .collect();
    for store in &cluster {
        store.apply(&lab, DISTRIBUTED).unwrap();
    }
    let one = store(&lab, "one");

    let targets = lab.targets("dst").unwrap();
    let (moved, stays) = (targets[0].to_string(), targets[1].to_string());
    let secrets = TempDir::new("secret");
    let password_file = secrets.path("clickhouse.password");
    std::fs::write(&password_file, PASSWORD).unwrap();
    let dirs = [TempDir::new("fleetq-a1"), TempDir::new("fleetq-a2")];
    let mut agents: Vec<Agent> = ["a1", "a2"]
        .iter()
        .zip(&dirs)
        .map(|(node, dir)| {
            let mut text = outputs(node, dir, &cluster[0].url(), &password_file);
            for target in [&moved, &stays] {
                text.push_str(&format!(
                    "[[targets]]\nhost = \"{target}\"\nprotocol = \"udp\"\ninterval = \"300ms\"\nqueries = 1\n"
                ));
            }
            Agent::start_with(&lab, node, Some(&text), &[])
        })
        .collect();
    let enough = |n: usize| {
        dirs.iter()
            .all(|d| count_for(d, &moved) >= n && count_for(d, &stays) >= n)
    };
    assert!(eventually(Duration::from_secs(30), || enough(10)));
    let before: Vec<usize> = dirs.iter().map(|d| count_for(d, &moved)).collect();
    let via_r2 = lab.addr("r2", "r", Family::V4).unwrap().to_string();
    let out = lab
        .exec(
            "r",
            "ip",
            ["route", "replace", &format!("{moved}/32"), "via", &via_r2],
        )
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let changed = std::time::Instant::now();
    assert!(eventually(Duration::from_secs(30), || {
        dirs.iter()
            .zip(&before)
            .all(|(d, b)| count_for(d, &moved) >= b + 10)
    }));
    // a2 stops reporting; a1 goes on.
    let mut a2 = agents.pop().unwrap();
    assert!(a2.stop().success(), "{}", a2.log());
    std::thread::sleep(Duration::from_secs(4));
    let recent_s = changed.elapsed().as_secs().saturating_sub(1);
    let silent = query(&lab, &cluster[0], &query_file("silent_agents", 3));
    let mut a1 = agents.pop().unwrap();
    assert!(a1.stop().success(), "{}", a1.log());

    // Everything the agents wrote, once, in the sharded store.
    let written_total: usize = dirs.iter().map(|d| written(d).len()).sum();
    // (A Distributed table forwards to the shards in the background.)
    let sql = "SELECT count() FROM traceroute.paths FINAL";
    assert!(
        eventually(Duration::from_secs(30), || cluster[0]
            .query(&lab, sql)
            .is_ok_and(|n| n == written_total.to_string())),
        "{} of {written_total} records in the cluster",
        query(&lab, &cluster[0], sql)
    );
    let sql = "SELECT count() FROM traceroute.hops FINAL";
    let hops_total: usize = dirs.iter().map(|d| hops_in(&written(d))).sum();
    assert!(
        eventually(Duration::from_secs(30), || cluster[0]
            .query(&lab, sql)
            .is_ok_and(|n| n == hops_total.to_string())),
        "{} of {hops_total} hops in the cluster",
        query(&lab, &cluster[0], sql)
    );
    for store in &cluster {
        let local: usize = store
            .query(&lab, "SELECT count() FROM traceroute.paths_local FINAL")
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            local > 0 && local < written_total,
            "both shards hold rows: {local}"
        );
    }
    // The same rows into the single server.
    for table in ["paths", "hops"] {
        let dump = query(
            &lab,
            &cluster[0],
            &format!("SELECT * FROM traceroute.{table} FORMAT JSONEachRow"),
        );
        let file = secrets.path(&format!("{table}.json"));
        std::fs::write(&file, dump + "\n").unwrap();
        one.insert(&lab, &format!("traceroute.{table}"), &file)
            .unwrap();
    }

    let answers = |name: &str| {
        let sql = query_file(name, recent_s);
        let sharded = query(&lab, &cluster[0], &sql);
        let single = query(&lab, &one, &sql);
        assert_eq!(sharded, single, "{name}: two shards and one server differ");
        rows(&single)
    };
    let r_for = |agent: &str| lab.addr("r", agent, Family::V4).unwrap().to_string();

    // One path change per agent, for the target whose route changed.
    let changes = answers("path_changes");
    assert_eq!(changes.len(), 2, "{changes:?}");
    for (row, agent) in changes.iter().zip(["a1", "a2"]) {
        assert_eq!(row[0], agent);
        assert_eq!(row[2], moved);
        assert_eq!(row[7], format!("[(1,'{}'),(2,'{moved}')]", r_for(agent)));
        assert_eq!(
            row[8],
            format!("[(1,'{}'),(2,'{via_r2}'),(3,'{moved}')]", r_for(agent))
        );
    }
    // Routers by the paths crossing them: r (by the address each agent sees)
    // for both targets, r2 for the moved one from both agents.
    let routers = answers("routers_by_paths");
    let mut want = vec![
        vec![r_for("a1"), "2".into(), "1".into()],
        vec![r_for("a2"), "2".into(), "1".into()],
        vec![via_r2.clone(), "2".into(), "2".into()],
    ];
    want.sort_by(|a, b| b[1].cmp(&a[1]).then(a[0].cmp(&b[0])));
    assert_eq!(routers, want);
    // Every router answered every probe, with an RTT.
    let loss = answers("router_loss_rtt");
    assert!(!loss.is_empty());
    for row in &loss {
        assert_eq!(row[2], row[3], "probes and answers: {row:?}");
        assert_eq!(row[4], "0", "{row:?}");
        assert!(
            row[5].starts_with('[') && !row[5].starts_with("[0,"),
            "{row:?}"
        );
    }
    // The moved target's distance moved, for both agents; the other's did not.
    let moved_rows = answers("moved_targets");
    assert_eq!(moved_rows.len(), 2, "{moved_rows:?}");
    for (row, agent) in moved_rows.iter().zip(["a1", "a2"]) {
        assert_eq!((row[0].as_str(), row[2].as_str()), (agent, moved.as_str()));
        assert_eq!((row[4].as_str(), row[5].as_str()), ("2", "3"), "{row:?}");
    }
    // a2 stopped reporting while a1 went on.
    let silent = rows(&silent);
    assert_eq!(silent.len(), 1, "{silent:?}");
    assert_eq!(silent[0][0], "a2");

    // A current ClickHouse (chdb) takes the schema, the retention and the
    // same rows, and answers the same (its quantiles interpolate
    // differently from 18.16's: the RTT columns are left out).
    let queries = [
        "path_changes",
        "routers_by_paths",
        "router_loss_rtt",
        "moved_targets",
        "silent_agents",
    ];
    let current = current_clickhouse(
        &secrets,
        &queries.map(|name| (name, query_file(name, recent_s))),
    );
    for (name, columns) in [
        ("path_changes", 9),
        ("routers_by_paths", 3),
        ("router_loss_rtt", 5),
        ("moved_targets", 6),
    ] {
        let cut = |rows: Vec<Vec<String>>| -> Vec<Vec<String>> {
            rows.into_iter().map(|r| r[..columns].to_vec()).collect()
        };
        let old = cut(rows(&query(&lab, &one, &query_file(name, recent_s))));
        assert_eq!(
            cut(rows(&current[name])),
            old,
            "{name}: 18.16 and a current release differ"
        );
    }
}

/// Runs the schema, the retention, the rows dumped into DIR/paths.json and
/// DIR/hops.json, and each query on chdb's current ClickHouse engine; the
/// answers (TSV) by query name.
fn current_clickhouse(
    dir: &TempDir,
    queries: &[(&str, String)],
) -> std::collections::HashMap<String, String> {
    const SCRIPT: &str = r#"
import json, sys
from chdb import session
def statements(sql):
    text = "\n".join(l for l in sql.splitlines() if not l.strip().startswith("--"))
    return [s.strip() for s in text.split(";") if s.strip()]
schema, retention, paths, hops, queries = sys.argv[1:6]
s = session.Session()
for st in statements(open(schema).read()) + statements(open(retention).read()):
    s.query(st)
for table, f in (("paths", paths), ("hops", hops)):
    s.query(f"INSERT INTO traceroute.{table} FORMAT JSONEachRow " + open(f).read())
answers = {name: str(s.query(sql, "TSV")) for name, sql in json.load(open(queries)).items()}
print(json.dumps(answers))
"#;
    let docs = format!("{}/../docs/clickhouse", env!("CARGO_MANIFEST_DIR"));
    let wanted: serde_json::Map<String, Value> = queries
        .iter()
        .map(|(name, sql)| (name.to_string(), Value::from(sql.as_str())))
        .collect();
    std::fs::write(dir.path("queries.json"), Value::Object(wanted).to_string()).unwrap();
    let out = std::process::Command::new("python3")
        .args(["-c", SCRIPT])
        .arg(format!("{docs}/schema.sql"))
        .arg(format!("{docs}/retention.sql"))
        .arg(dir.path("paths.json"))
        .arg(dir.path("hops.json"))
        .arg(dir.path("queries.json"))
        .output()
        .expect("python3 (cargo xtask setup installs chdb)");
    assert!(
        out.status.success(),
        "chdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: std::collections::HashMap<String, String> =
        serde_json::from_slice(&out.stdout).expect("the answers as JSON");
    answers
        .into_iter()
        .map(|(name, text)| (name, text.trim_end().to_string()))
        .collect()
}

/// A tmpfs of `size` mounted on a fresh directory; unmounted on drop.
struct TinyDisk(TempDir);

impl TinyDisk {
    fn mount(size: &str) -> TinyDisk {
        let dir = TempDir::new("tiny-disk");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir.0)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount: {out:?}");
        TinyDisk(dir)
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0.0).status();
    }
}

#[test]
fn a_full_disk_refuses_a_batch_whole_and_the_spool_goes_on() {
    use traceroute_agent::sinks::clickhouse::spool::{Batch, Spool};
    let disk = TinyDisk::mount("64k");
    let dir = disk.0.path("spool");
    // The bound is far above the disk: the disk fills first.
    let mut spool = Spool::open(&dir, 1 << 30).unwrap();
    let batch = Batch {
        records: 10,
        first_ms: 1,
        paths: vec![b'p'; 12 * 1024],
        hops: vec![b'h'; 4 * 1024],
    };
    let mut stored = 0;
    let err = loop {
        match spool.push(&batch) {
            Ok(_) => stored += 1,
            Err(e) => break e,
        }
        assert!(
            stored < 100,
            "a 64 KiB disk took {stored} batches of 16 KiB"
        );
    };
    assert_eq!(err.kind(), std::io::ErrorKind::StorageFull, "{err}");
    // Whole batches or none: no half-written file is left or counted.
    assert_eq!(spool.state().batches, stored);
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    let (first, back) = spool.oldest().unwrap().unwrap();
    assert_eq!(back, batch);
    // Room again once the store took a batch.
    spool.remove(first);
    spool.push(&batch).expect("a batch fits again");
    assert_eq!(spool.state().batches, stored);
}
