//! A private Prometheus (Debian's `prometheus` package) on a port below the ephemeral range,
//! with its own storage directory, scraping one test server's `/metrics` every second and
//! evaluating the shipped rules every second. Tests using it skip (with a message) when
//! `prometheus` or `promtool` is missing; `.ci/run` installs the package.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::helpers::eventually;
use crate::support::ports::restartable_port;

/// The job name the shipped alert rules expect (`deploy/prometheus/prometheus.yml`).
pub const JOB: &str = "catalog-api";

pub fn installed() -> bool {
    ["prometheus", "promtool"].iter().all(|binary| {
        Command::new(binary)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    })
}

pub struct PrometheusProcess {
    child: Child,
    pub port: u16,
    client: reqwest::Client,
    _workdir: tempfile::TempDir,
}

impl PrometheusProcess {
    /// Starts Prometheus scraping `target` (a metrics address) as the job `catalog-api`,
    /// with the rules in `rule_file`, and waits until it is ready.
    pub async fn start(target: SocketAddr, rule_file: &Path) -> PrometheusProcess {
        let workdir = tempfile::tempdir().expect("prometheus directory");
        let config = workdir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {rules}\n\
                 scrape_configs:\n  - job_name: {JOB}\n    metrics_path: /metrics\n    \
                 static_configs:\n      - targets: [\"{target}\"]\n",
                rules = rule_file.display(),
            ),
        )
        .expect("write the prometheus configuration");
        let port = restartable_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                workdir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        let prometheus = PrometheusProcess {
            child,
            port,
            client: reqwest::Client::new(),
            _workdir: workdir,
        };
        let ready = eventually(Duration::from_secs(30), || async {
            matches!(
                prometheus.client.get(prometheus.url("/-/ready")).send().await,
                Ok(response) if response.status().is_success()
            )
        })
        .await;
        assert!(ready, "prometheus did not become ready on port {port}");
        prometheus
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The `data` of a successful answer from the HTTP API at `path`.
    pub async fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let body: Value = self
            .client
            .get(self.url(path))
            .query(query)
            .send()
            .await
            .expect("prometheus answers")
            .json()
            .await
            .expect("a JSON answer");
        assert_eq!(body["status"], "success", "{path} {query:?}: {body}");
        body["data"].clone()
    }

    /// The instant vector `expr` evaluates to now, as (labels, value) pairs.
    pub async fn query(&self, expr: &str) -> Vec<(Value, f64)> {
        let data = self.api("/api/v1/query", &[("query", expr)]).await;
        assert_eq!(data["resultType"], "vector", "{expr}: {data}");
        data["result"]
            .as_array()
            .expect("a result list")
            .iter()
            .map(|sample| {
                let value = sample["value"][1]
                    .as_str()
                    .and_then(|value| value.parse::<f64>().ok())
                    .expect("a sample value");
                (sample["metric"].clone(), value)
            })
            .collect()
    }

    /// The single value `expr` evaluates to now, if it has exactly one.
    pub async fn value(&self, expr: &str) -> Option<f64> {
        match self.query(expr).await.as_slice() {
            [(_, value)] => Some(*value),
            _ => None,
        }
    }
}

impl Drop for PrometheusProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
