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
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::Value;
use service_support::{Agent, TempDir, eventually, lines};
use traceroute_lab::{Family, Lab, Topology};

const SCHEMA: &str = include_str!("../../docs/clickhouse/schema.sql");
const PASSWORD: &str = "lab-agent-password";

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
            .link("r", "store"),
    )
    .expect("lab up")
}

/// clickhouse-server in the lab's `store` node; killed on drop. Its data
/// survives a stop and start (the outage).
struct Store {
    child: Option<Child>,
    dir: TempDir,
    node: String,
    lab_store: String,
}

impl Store {
    fn start(lab: &Lab, node: &str) -> Store {
        let dir = TempDir::new("clickhouse");
        let root = dir.0.display().to_string();
        std::fs::write(
            dir.path("config.xml"),
            format!(
                r#"<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><console>1</console></logger>
  <http_port>8123</http_port>
  <tcp_port>9000</tcp_port>
  <listen_host>0.0.0.0</listen_host>
  <path>{root}/data/</path>
  <tmp_path>{root}/tmp/</tmp_path>
  <user_files_path>{root}/user_files/</user_files_path>
  <format_schema_path>{root}/format_schemas/</format_schema_path>
  <users_config>users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>5368709</mark_cache_size>
</yandex>
"#
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path("users.xml"),
            format!(
                r#"<?xml version="1.0"?>
<yandex>
  <profiles><default></default></profiles>
  <users>
    <default><password></password><networks><ip>::/0</ip></networks><profile>default</profile><quota>default</quota></default>
    <agent><password>{PASSWORD}</password><networks><ip>::/0</ip></networks><profile>default</profile><quota>default</quota></agent>
  </users>
  <quotas><default></default></quotas>
</yandex>
"#
            ),
        )
        .unwrap();
        let mut store = Store {
            child: None,
            dir,
            node: node.to_string(),
            lab_store: lab.primary("store", Family::V4).unwrap().to_string(),
        };
        store.up(lab);
        store
    }

    fn url(&self) -> String {
        format!("http://{}:8123", self.lab_store)
    }

    fn up(&mut self, lab: &Lab) {
        let mut cmd = lab.command(&self.node, "clickhouse-server").unwrap();
        cmd.arg(format!(
            "--config-file={}",
            self.dir.path("config.xml").display()
        ))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(self.dir.path("server.log")).unwrap())
        .stderr(Stdio::inherit());
        self.child = Some(
            cmd.spawn()
                .expect("clickhouse-server (cargo xtask setup installs it)"),
        );
        assert!(
            eventually(Duration::from_secs(30), || self
                .try_query(lab, "SELECT 1")
                .is_ok_and(|r| r == "1")),
            "clickhouse-server did not answer: {}",
            std::fs::read_to_string(self.dir.path("server.log")).unwrap_or_default()
        );
    }

    fn down(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn try_query(&self, lab: &Lab, sql: &str) -> Result<String, String> {
        let out = lab
            .exec(
                &self.node,
                "curl",
                [
                    "-sS",
                    "--fail-with-body",
                    "--max-time",
                    "20",
                    "--data-binary",
                    sql,
                    &format!("{}/", self.url()),
                ],
            )
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!("{text} {}", String::from_utf8_lossy(&out.stderr)))
        }
    }

    fn query(&self, lab: &Lab, sql: &str) -> String {
        self.try_query(lab, sql)
            .unwrap_or_else(|e| panic!("{sql}\n{e}"))
    }

    /// Applies docs/clickhouse/schema.sql statement by statement.
    fn apply_schema(&self, lab: &Lab) {
        for statement in statements(SCHEMA) {
            self.query(lab, &statement);
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.down();
    }
}

/// The SQL statements of a file, comments dropped.
fn statements(sql: &str) -> Vec<String> {
    let text: String = sql
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    text.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// An agent's config: scheduled UDP traces of `target`, JSON lines to a
/// file, and the store.
fn config(
    namespace: &str,
    dir: &TempDir,
    url: &str,
    password_file: &Path,
    target: &str,
    count: u32,
) -> String {
    format!(
        "namespace = \"{namespace}\"\n\
         [output]\npath = \"{jsonl}\"\n\
         [output.clickhouse]\nurl = \"{url}\"\nuser = \"agent\"\npassword_file = \"{pw}\"\n\
         batch_records = 3\nbatch_age = \"300ms\"\nretry_max = \"1s\"\nspool_dir = \"{spool}\"\n\
         [[targets]]\nhost = \"{target}\"\nprotocol = \"udp\"\ninterval = \"400ms\"\ncount = {count}\n",
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
        last = store.try_query(lab, &sql).unwrap_or_default();
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
    let mut store = Store::start(&lab, "store");
    store.apply_schema(&lab);
    let target = lab.primary("dst", Family::V4).unwrap().to_string();
    let secrets = TempDir::new("secret");
    let password_file = secrets.path("clickhouse.password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();

    let count = 12;
    let dirs = [TempDir::new("fleet-a1"), TempDir::new("fleet-a2")];
    let agents: Vec<Agent> = ["a1", "a2"]
        .iter()
        .zip(&dirs)
        .map(|(node, dir)| {
            let text = config(node, dir, &store.url(), &password_file, &target, count);
            Agent::start_with(&lab, node, Some(&text), &[])
        })
        .collect();

    // Some records in, then the store goes away while the agents go on.
    assert!(eventually(Duration::from_secs(30), || {
        store
            .try_query(&lab, "SELECT count() FROM traceroute.paths")
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
    std::thread::sleep(Duration::from_secs(2));
    store.up(&lab);

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
        let stored: HashSet<String> = store
            .query(
                &lab,
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
        let hops = store.query(
            &lab,
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
    store.query(&lab, "OPTIMIZE TABLE traceroute.paths FINAL");
    store.query(&lab, "OPTIMIZE TABLE traceroute.hops FINAL");
    assert_eq!(
        store.query(
            &lab,
            "SELECT count(), uniqExact(test_run_id) FROM traceroute.paths"
        ),
        format!("{}\t{}", 2 * count, 2 * count)
    );
    let hops: usize = dirs.iter().map(|d| hops_in(&written(d))).sum();
    assert_eq!(
        store.query(&lab, "SELECT count() FROM traceroute.hops"),
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
    let got = store.query(
        &lab,
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
    let store = Store::start(&lab, "store");
    store.apply_schema(&lab);
    store.query(&lab, "DROP TABLE traceroute.hops");
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
        Some(&config("a1", &dir, &store.url(), &wrong, &target, count)),
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
    let text = config("a1", &dir, &store.url(), &right, &target, count)
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
    store.apply_schema(&lab);
    until_stored(&lab, &store, "a1", count as usize + 1, &agent);
    let records = written(&dir);
    assert_eq!(records.len(), count as usize + 1);
    assert!(eventually(Duration::from_secs(30), || {
        store
            .try_query(&lab, "SELECT count() FROM traceroute.hops FINAL")
            .is_ok_and(|n| n == hops_in(&records).to_string())
    }));
    assert_eq!(
        agent.metric("traceroute_agent_clickhouse_records_dropped_total", ""),
        0.0
    );
    assert!(agent.stop().success());
}
