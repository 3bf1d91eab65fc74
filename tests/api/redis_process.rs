//! A private `redis-server` on a free port that a test can kill, restart, pause and resume,
//! to prove the cache survives outages. Tests using it skip (with a message) when the
//! `redis-server` binary is not installed.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::helpers::eventually;

pub struct RedisProcess {
    child: Option<Child>,
    pub port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

impl RedisProcess {
    /// Starts a server, or returns `None` when `redis-server` is not installed.
    pub async fn start() -> Option<RedisProcess> {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            eprintln!("redis-server is not installed: skipping this outage test");
            return None;
        }
        let mut process = RedisProcess {
            child: None,
            port: free_port(),
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
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        assert!(
            eventually(Duration::from_secs(10), || self.answers()).await,
            "redis-server did not start"
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
