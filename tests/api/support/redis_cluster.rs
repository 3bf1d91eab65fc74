//! A private Redis Cluster (3 primaries, 3 replicas) on free ports, for the cluster tests and
//! the checker: nodes in a temporary directory, killed when the value is dropped. It can kill a
//! primary (`kill -9`) and bring the node back as a replica, or fail a primary over to its
//! replica (`CLUSTER FAILOVER`). Tests using it skip, loudly, when `redis-server` or
//! `redis-cli` is missing. Shares `redis_process`'s port and binary checks.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::helpers::eventually;
use crate::support::ports::restartable_port;
use crate::support::redis_process::installed;

const PRIMARIES: usize = 3;

struct Node {
    port: u16,
    child: Option<Child>,
}

pub struct RedisCluster {
    nodes: Vec<Node>,
    /// Replicas per primary: 1, or 0 for a cluster of primaries alone.
    replicas: usize,
    directory: tempfile::TempDir,
}

fn cli_installed() -> bool {
    Command::new("redis-cli")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok()
}

async fn command(port: u16, arguments: &[&str]) -> redis::RedisResult<String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let mut connection = tokio::time::timeout(
        Duration::from_millis(500),
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| redis::RedisError::from(std::io::Error::other("connect timed out")))??;
    let mut command = redis::cmd(arguments[0]);
    for argument in &arguments[1..] {
        command.arg(*argument);
    }
    let value: redis::Value =
        tokio::time::timeout(Duration::from_secs(2), command.query_async(&mut connection))
            .await
            .map_err(|_| redis::RedisError::from(std::io::Error::other("command timed out")))??;
    Ok(match value {
        redis::Value::Okay => "OK".to_owned(),
        other => redis::from_redis_value(other).unwrap_or_default(),
    })
}

impl RedisCluster {
    /// Starts the cluster (3 primaries, a replica each) and waits until every slot is served,
    /// or returns `None` (after saying so) when the binaries are missing.
    pub async fn start() -> Option<RedisCluster> {
        Self::start_with_replicas(1).await
    }

    /// `start` with `replicas` replicas per primary (0 or 1).
    pub async fn start_with_replicas(replicas: usize) -> Option<RedisCluster> {
        if !installed() || !cli_installed() {
            eprintln!(
                "SKIPPED: redis-server and redis-cli are needed for the Redis Cluster tests (apt-get install redis-server)"
            );
            return None;
        }
        let directory = tempfile::tempdir().expect("cluster directory");
        let mut cluster = RedisCluster {
            nodes: (0..PRIMARIES * (1 + replicas))
                .map(|_| Node {
                    port: restartable_port(),
                    child: None,
                })
                .collect(),
            replicas,
            directory,
        };
        for index in 0..cluster.nodes.len() {
            cluster.launch(index).await;
        }
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run redis-cli --cluster create");
        assert!(created.success(), "redis-cli --cluster create failed");
        cluster.wait_healthy().await;
        Some(cluster)
    }

    /// `redis+cluster://` with every node.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    async fn launch(&mut self, index: usize) {
        let port = self.nodes[index].port;
        let directory = self.directory.path().join(port.to_string());
        std::fs::create_dir_all(&directory).expect("node directory");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
            .arg("--cluster-config-file")
            .arg(directory.join(format!("nodes-{port}.conf")))
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--logfile")
            .arg(directory.join("log"))
            .arg("--dir")
            .arg(&directory)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.nodes[index].child = Some(child);
        assert!(
            eventually(Duration::from_secs(10), || async {
                command(port, &["PING"]).await.is_ok()
            })
            .await,
            "redis-server on {port} did not start"
        );
    }

    /// The nodes as `CLUSTER NODES` on a live node tells them: (port, is primary, primary's id
    /// or own id, failed).
    async fn topology(&self) -> Vec<(u16, bool, String, String, bool)> {
        for node in self.nodes.iter().filter(|node| node.child.is_some()) {
            if let Ok(text) = command(node.port, &["CLUSTER", "NODES"]).await {
                return text
                    .lines()
                    .filter_map(|line| {
                        let fields: Vec<&str> = line.split_whitespace().collect();
                        let port = fields.get(1)?.split('@').next()?.rsplit_once(':')?.1;
                        let flags = fields.get(2)?;
                        Some((
                            port.parse().ok()?,
                            flags.contains("master"),
                            (*fields.first()?).to_owned(),
                            (*fields.get(3)?).to_owned(),
                            // `fail?` is one node's suspicion under load, not a failover.
                            flags.split(',').any(|flag| flag == "fail"),
                        ))
                    })
                    .collect();
            }
        }
        Vec::new()
    }

    /// The ports of the primaries that serve slots now.
    pub async fn primaries(&self) -> Vec<u16> {
        self.topology()
            .await
            .into_iter()
            .filter(|(_, primary, _, _, failed)| *primary && !failed)
            .map(|(port, ..)| port)
            .collect()
    }

    /// How many times the primaries ran `name` (lower case, as `INFO commandstats` names it).
    pub async fn calls_on_primaries(&self, name: &str) -> u64 {
        let mut calls = 0;
        for port in self.primaries().await {
            let stats = command(port, &["INFO", "commandstats"])
                .await
                .expect("INFO commandstats");
            calls += stats
                .lines()
                .find_map(|line| line.strip_prefix(&format!("cmdstat_{name}:calls=")))
                .and_then(|rest| rest.split(',').next()?.parse::<u64>().ok())
                .unwrap_or(0);
        }
        calls
    }

    /// Waits until every running node reports `cluster_state:ok`, three primaries serve, and,
    /// with replicas, each has one in sync (`state=online`: a replica that never synced cannot
    /// take over). Up to 120 s: in CI several clusters start at once beside the shared one on
    /// two cores (30 s, then 60 s, were each once too short). A cluster that never becomes
    /// healthy fails with what was still missing.
    pub async fn wait_healthy(&self) {
        let missing = parking_lot::Mutex::new(String::new());
        let healthy = eventually(Duration::from_secs(120), || async {
            match self.unhealthy().await {
                None => true,
                Some(reason) => {
                    *missing.lock() = reason;
                    false
                }
            }
        })
        .await;
        assert!(
            healthy,
            "the Redis Cluster did not become healthy: {}",
            missing.lock()
        );
    }

    /// What keeps the cluster from being healthy (see `wait_healthy`), or `None`.
    async fn unhealthy(&self) -> Option<String> {
        for node in self.nodes.iter().filter(|node| node.child.is_some()) {
            match command(node.port, &["CLUSTER", "INFO"]).await {
                Ok(info) if info.contains("cluster_state:ok") => {}
                Ok(info) => {
                    let state = info.lines().find(|line| line.starts_with("cluster_state"));
                    return Some(format!("node {}: {state:?}", node.port));
                }
                Err(error) => return Some(format!("node {}: {error}", node.port)),
            }
        }
        let primaries = self.primaries().await;
        if primaries.len() != PRIMARIES {
            return Some(format!("primaries serving: {primaries:?}"));
        }
        for port in primaries.into_iter().filter(|_| self.replicas > 0) {
            match command(port, &["INFO", "replication"]).await {
                Ok(info)
                    if info.contains("connected_slaves:1") && info.contains("state=online") => {}
                Ok(info) => {
                    let replicas: Vec<&str> = info
                        .lines()
                        .filter(|line| {
                            line.starts_with("connected_slaves") || line.starts_with("slave0")
                        })
                        .collect();
                    return Some(format!("primary {port}: {replicas:?}"));
                }
                Err(error) => return Some(format!("primary {port}: {error}")),
            }
        }
        None
    }

    /// `kill -9` of a primary, then waits until its replica serves its slots; the killed node
    /// comes back (empty, same node id) and rejoins as a replica. Returns the killed port.
    pub async fn kill_primary(&mut self, choice: usize) -> u16 {
        let primaries = self.primaries().await;
        let port = primaries[choice % primaries.len()];
        let index = self
            .nodes
            .iter()
            .position(|node| node.port == port)
            .expect("a node of ours");
        if let Some(mut child) = self.nodes[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let promoted = eventually(Duration::from_secs(30), || async {
            self.topology()
                .await
                .iter()
                .filter(|(other, primary, _, _, failed)| *other != port && *primary && !failed)
                .count()
                == 3
        })
        .await;
        if !promoted {
            for node in &self.nodes {
                let log = std::fs::read_to_string(
                    self.directory
                        .path()
                        .join(node.port.to_string())
                        .join("log"),
                )
                .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                eprintln!(
                    "--- node {} log (newest first):\n{}",
                    node.port,
                    tail.join("\n")
                );
            }
        }
        assert!(
            promoted,
            "no replica took over from {port}: {:?}",
            self.topology().await
        );
        self.launch(index).await;
        self.wait_healthy().await;
        port
    }

    /// `CLUSTER FAILOVER` on the replica of one primary (a coordinated switch: the replica
    /// catches up first); waits until the replica serves. Returns the new primary's port.
    pub async fn failover(&self, choice: usize) -> u16 {
        let nodes = self.topology().await;
        let primaries: Vec<_> = nodes
            .iter()
            .filter(|(_, primary, _, _, failed)| *primary && !failed)
            .collect();
        let (_, _, primary_id, _, _) = primaries[choice % primaries.len()];
        let (replica, ..) = nodes
            .iter()
            .find(|(_, primary, _, of, _)| !primary && of == primary_id)
            .expect("every primary has a replica");
        let replica = *replica;
        command(replica, &["CLUSTER", "FAILOVER"])
            .await
            .expect("CLUSTER FAILOVER");
        let switched = eventually(Duration::from_secs(30), || async {
            self.primaries().await.contains(&replica)
        })
        .await;
        assert!(switched, "{replica} did not take over");
        self.wait_healthy().await;
        replica
    }

    /// Closes every pub/sub connection on every node (a network blip for subscribers).
    pub async fn kill_subscriptions(&self) {
        for node in &self.nodes {
            let _ = command(node.port, &["CLIENT", "KILL", "TYPE", "pubsub"]).await;
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
