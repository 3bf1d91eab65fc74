//! A private `redis-server` on a free port that a test can kill, restart, pause and resume,
//! to prove the cache survives outages; a persistent one can also be restarted from an older
//! snapshot (a failover to a lagging replica). Tests using it skip (with a message) when the
//! `redis-server` binary is not installed.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::helpers::eventually;
use crate::support::ports::restartable_port;

pub struct RedisProcess {
    child: Option<Child>,
    pub port: u16,
    /// Where `save()` writes the snapshot that `restart_from_snapshot()` loads; `None` for a
    /// server that never persists anything.
    snapshots: Option<tempfile::TempDir>,
}

const SNAPSHOT_FILE: &str = "dump.rdb";

pub fn installed() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok()
}

impl RedisProcess {
    /// Starts a server, or returns `None` when `redis-server` is not installed.
    pub async fn start() -> Option<RedisProcess> {
        Self::start_with(None).await
    }

    /// Starts a server that snapshots only when told to (`save()`), so that a restart can
    /// bring back an older state. Automatic saving stays off.
    pub async fn start_persistent() -> Option<RedisProcess> {
        Self::start_with(Some(tempfile::tempdir().expect("snapshot directory"))).await
    }

    async fn start_with(snapshots: Option<tempfile::TempDir>) -> Option<RedisProcess> {
        if !installed() {
            eprintln!("redis-server is not installed: skipping this outage test");
            return None;
        }
        let mut process = RedisProcess {
            child: None,
            port: restartable_port(),
            snapshots,
        };
        process.restart().await;
        Some(process)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn answers(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(Ok(mut connection)) = tokio::time::timeout(
            Duration::from_millis(200),
            client.get_multiplexed_async_connection(),
        )
        .await
        else {
            return false;
        };
        matches!(
            tokio::time::timeout(
                Duration::from_millis(200),
                redis::cmd("PING").query_async::<String>(&mut connection)
            )
            .await,
            Ok(Ok(_))
        )
    }

    /// (Re)starts the server on the same port, empty, and waits until it answers.
    pub async fn restart(&mut self) {
        self.kill().await;
        // The snapshot is moved aside while the server starts, so it starts empty and a later
        // `restart_from_snapshot()` still finds it.
        let snapshot = self
            .snapshots
            .as_ref()
            .map(|directory| directory.path().join(SNAPSHOT_FILE))
            .filter(|file| file.exists());
        let kept = snapshot.as_ref().map(|file| file.with_extension("kept"));
        if let (Some(file), Some(kept)) = (&snapshot, &kept) {
            std::fs::rename(file, kept).expect("move the snapshot aside");
        }
        self.launch().await;
        if let (Some(file), Some(kept)) = (&snapshot, &kept) {
            std::fs::rename(kept, file).expect("put the snapshot back");
        }
    }

    /// Kills the server (no chance to save) and starts it again from the last `save()`: the
    /// entries and counters it holds go back in time.
    pub async fn restart_from_snapshot(&mut self) {
        self.kill().await;
        self.launch().await;
    }

    /// Writes a snapshot now (SAVE), for a later `restart_from_snapshot()`.
    pub async fn save(&self) -> redis::RedisResult<()> {
        let mut connection = self.connection().await?;
        redis::cmd("SAVE").query_async(&mut connection).await
    }

    /// Starts Redis' per-command statistics afresh (CONFIG RESETSTAT).
    pub async fn reset_command_stats(&self) -> redis::RedisResult<()> {
        let mut connection = self.connection().await?;
        redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut connection)
            .await
    }

    /// Calls of one command since the last `reset_command_stats()` (0 when never called).
    pub async fn command_calls(&self, command: &str) -> redis::RedisResult<u64> {
        let mut connection = self.connection().await?;
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut connection)
            .await?;
        Ok(stats
            .lines()
            .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .and_then(|rest| rest.split(',').next()?.parse().ok())
            .unwrap_or(0))
    }

    /// Closes every subscriber connection (CLIENT KILL TYPE pubsub), as a network blip would;
    /// returns how many were closed.
    pub async fn kill_subscriptions(&self) -> redis::RedisResult<u64> {
        let mut connection = self.connection().await?;
        redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(&mut connection)
            .await
    }

    async fn connection(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        redis::Client::open(self.url())?
            .get_multiplexed_async_connection()
            .await
    }

    async fn launch(&mut self) {
        let port = self.port.to_string();
        let mut arguments = vec![
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ];
        let directory = self
            .snapshots
            .as_ref()
            .map(|directory| directory.path().display().to_string());
        if let Some(directory) = &directory {
            arguments.extend(["--dir", directory, "--dbfilename", SNAPSHOT_FILE]);
        }
        let child = Command::new("redis-server")
            .args(arguments)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let answered = eventually(Duration::from_secs(10), || self.answers()).await;
        let exited = self
            .child
            .as_mut()
            .and_then(|child| child.try_wait().ok().flatten());
        assert!(
            answered && exited.is_none(),
            "redis-server on port {} did not start (exit status: {exited:?}; answered: {answered})",
            self.port
        );
    }

    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
        }
    }

    /// Freezes the server: connections stay open but nothing answers (a slow Redis).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.resume();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
