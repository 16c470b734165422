//! A ClickHouse server (Debian's `clickhouse-server`) in a lab node, for the
//! fleet tests and the bench: its own directory, config and users (`default`
//! without a password, `agent` with [`PASSWORD`]), HTTP on port 8123 of the
//! node's addresses, optionally one shard of a `traceroute_cluster`. Killed
//! on drop, its directory removed; [`Store::down`] and [`Store::up`] stop and
//! start it on the same data (an outage).

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::{Family, Lab, LabError};

/// The password of the `agent` user.
pub const PASSWORD: &str = "lab-agent-password";

/// How long a server may take to answer after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Store {
    child: Option<Child>,
    dir: PathBuf,
    node: String,
    address: String,
}

impl Store {
    /// Starts a server in `node`; `shards` (addresses of every server of the
    /// cluster, this one included) makes it part of `traceroute_cluster`.
    pub fn start(lab: &Lab, node: &str, shards: &[String]) -> Result<Store, LabError> {
        let dir = std::env::temp_dir().join(format!(
            "trl-clickhouse-{}-{node}-{}",
            lab.prefix(),
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(LabError::io(dir.display().to_string()))?;
        let root = dir.display();
        let cluster: String = shards
            .iter()
            .map(|host| {
                format!("<shard><replica><host>{host}</host><port>9000</port></replica></shard>")
            })
            .collect();
        let config = format!(
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
  <remote_servers><traceroute_cluster>{cluster}</traceroute_cluster></remote_servers>
</yandex>
"#
        );
        let users = format!(
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
        );
        for (name, text) in [("config.xml", config), ("users.xml", users)] {
            std::fs::write(dir.join(name), text).map_err(LabError::io(name))?;
        }
        let mut store = Store {
            child: None,
            dir,
            node: node.to_string(),
            address: lab.primary(node, Family::V4)?.to_string(),
        };
        store.up(lab)?;
        Ok(store)
    }

    /// Its HTTP interface, `http://ADDRESS:8123`.
    pub fn url(&self) -> String {
        format!("http://{}:8123", self.address)
    }

    /// Starts the server (again) and waits until it answers.
    pub fn up(&mut self, lab: &Lab) -> Result<(), LabError> {
        let log = self.dir.join("server.log");
        let mut cmd = lab.command(&self.node, "clickhouse-server")?;
        cmd.arg(format!(
            "--config-file={}",
            self.dir.join("config.xml").display()
        ))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).map_err(LabError::io("server.log"))?)
        .stderr(Stdio::null());
        self.child = Some(cmd.spawn().map_err(LabError::io("clickhouse-server"))?);
        let deadline = Instant::now() + START_TIMEOUT;
        while self.query(lab, "SELECT 1").as_deref() != Ok("1") {
            if Instant::now() > deadline {
                return Err(LabError::Command {
                    command: "clickhouse-server".into(),
                    status: "no answer".into(),
                    stderr: std::fs::read_to_string(&log).unwrap_or_default(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Kills the server (its data stays).
    pub fn down(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs one statement as `default` (curl from the store's node); its
    /// answer, trimmed, or the server's error.
    pub fn query(&self, lab: &Lab, sql: &str) -> Result<String, String> {
        self.post(lab, "/", sql)
    }

    /// Inserts `rows` (JSONEachRow) into `table`.
    pub fn insert(&self, lab: &Lab, table: &str, rows: &Path) -> Result<String, String> {
        self.post(
            lab,
            &format!("/?query=INSERT%20INTO%20{table}%20FORMAT%20JSONEachRow"),
            &format!("@{}", rows.display()),
        )
    }

    fn post(&self, lab: &Lab, target: &str, data: &str) -> Result<String, String> {
        let out = lab
            .exec(
                &self.node,
                "curl",
                [
                    "-sS",
                    "--fail-with-body",
                    "--max-time",
                    "60",
                    "--data-binary",
                    data,
                    &format!("{}{target}", self.url()),
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

    /// Runs every statement of an SQL file (comments dropped).
    pub fn apply(&self, lab: &Lab, sql: &str) -> Result<(), String> {
        for statement in statements(sql) {
            self.query(lab, &statement)
                .map_err(|e| format!("{statement}\n{e}"))?;
        }
        Ok(())
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.down();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The SQL statements of a file: `--` comment lines dropped, split at `;`.
pub fn statements(sql: &str) -> Vec<String> {
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
