//! `TestApp`: the real server on a free port with an isolated database and cache prefix,
//! and the small client helpers the tests read like.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use catalog_api::config::Config;
use catalog_api::db::seed::{self, SeedPlan};
use catalog_api::{App, AppState};
use reqwest::header::HeaderMap;
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};

/// The data set most tests start from: 10 categories, 1,000 products (the seed's formula).
pub const CATEGORIES: u32 = 10;
pub const PRODUCTS: u32 = 1_000;

pub struct TestApp {
    pub address: std::net::SocketAddr,
    /// Where `/metrics` is served when the configuration gives it its own address.
    pub metrics_address: Option<std::net::SocketAddr>,
    pub state: AppState,
    pub client: reqwest::Client,
    pub config: Config,
    server: tokio::task::JoinHandle<()>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    _files: Option<tempfile::TempDir>,
}

pub struct GqlResponse {
    pub status: reqwest::StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl GqlResponse {
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    pub fn x_cache(&self) -> &str {
        self.header("x-cache").unwrap_or("")
    }

    /// The `extensions.code` of every error, in order.
    pub fn error_codes(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .map(|error| {
                        error["extensions"]["code"]
                            .as_str()
                            .unwrap_or("")
                            .to_owned()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    #[track_caller]
    pub fn assert_ok(&self) -> &Value {
        assert!(
            self.body.get("errors").is_none(),
            "unexpected errors: {}",
            self.body
        );
        assert_eq!(self.status, 200, "status for {}", self.body);
        self.data()
    }

    #[track_caller]
    pub fn assert_error(&self, code: &str) {
        assert_eq!(
            self.error_codes().first().map(String::as_str),
            Some(code),
            "errors of {}",
            self.body
        );
    }
}

/// Where this test's database lives.
async fn database_url() -> (String, Option<tempfile::TempDir>) {
    match std::env::var("CATALOG_TEST_DATABASE_URL") {
        Ok(admin_url) if !admin_url.is_empty() => {
            let name = format!("catalog_test_{}", uuid::Uuid::new_v4().simple());
            let admin = Database::connect(&admin_url)
                .await
                .expect("connect to CATALOG_TEST_DATABASE_URL");
            admin
                .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                .await
                .expect("create test database");
            admin.close().await.ok();
            let base = admin_url
                .rsplit_once('/')
                .map(|(base, _)| base)
                .unwrap_or(&admin_url);
            (format!("{base}/{name}"), None)
        }
        _ => {
            let files = tempfile::tempdir().expect("temporary directory");
            let url = format!(
                "sqlite://{}?mode=rwc",
                files.path().join("catalog.db").display()
            );
            (url, Some(files))
        }
    }
}

/// The same database on the streaming replica named by `CATALOG_TEST_DATABASE_REPLICA_URL`
/// (a standby of `CATALOG_TEST_DATABASE_URL`'s server, e.g. from `scripts/pg-replica.sh`):
/// with it, every test server reads through a real replica, as a scaled-out deployment does.
fn replica_of(url: &str) -> Option<String> {
    let replica = std::env::var("CATALOG_TEST_DATABASE_REPLICA_URL")
        .ok()
        .filter(|replica| !replica.is_empty())?;
    let (_, name) = url.rsplit_once('/')?;
    let base = replica
        .rsplit_once('/')
        .map_or(replica.as_str(), |(base, _)| base);
    Some(format!("{base}/{name}"))
}

/// The configuration every test starts from: port 0, no demo data, its own cache prefix.
pub async fn test_config() -> (Config, Option<tempfile::TempDir>) {
    let (url, files) = database_url().await;
    let replica = replica_of(&url).filter(|_| files.is_none());
    let mut config = Config::for_database(url);
    config.database_replica_urls = replica.into_iter().collect();
    config.bind = "127.0.0.1:0".parse().expect("address");
    config.demo_data = false;
    config.db_pool_size = 5;
    config.redis_url = std::env::var("CATALOG_TEST_REDIS_URL")
        .ok()
        .filter(|url| !url.is_empty());
    config.cache_prefix = format!("catalog-test:{}:", uuid::Uuid::new_v4().simple());
    (config, files)
}

pub fn redis_configured() -> bool {
    std::env::var("CATALOG_TEST_REDIS_URL").is_ok_and(|url| !url.is_empty())
}

/// With `TEST_LOG=1` (or `true`), the servers' logs (`RUST_LOG` filters them, `info` by default) go to
/// the test harness's output, which shows them for a test that fails; installed once for the
/// whole binary. Without it the tests run silent, as the server installs no subscriber itself.
fn install_test_log() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    if std::env::var("TEST_LOG").is_ok_and(|value| matches!(value.as_str(), "1" | "true")) {
        INSTALLED.call_once(|| {
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
            // Another subscriber may already be installed: then that one keeps the logs.
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        });
    }
}

impl TestApp {
    /// A server over the standard test data set.
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// A server whose reads all go to the primary, for tests that count SQL statements: with a
    /// read replica (`CATALOG_TEST_DATABASE_REPLICA_URL`) a read also runs WAL position probes.
    pub async fn spawn_on_primary(adjust: impl FnOnce(&mut Config)) -> TestApp {
        Self::spawn_with(|config| {
            config.database_replica_urls.clear();
            adjust(config);
        })
        .await
    }

    pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
        let (mut config, files) = test_config().await;
        adjust(&mut config);
        Self::start(
            config,
            files,
            Some(SeedPlan {
                categories: CATEGORIES,
                products: PRODUCTS,
            }),
        )
        .await
    }

    /// A server over the standard test data set whose database connections go through a
    /// proxy the test can cut (PostgreSQL only), with no read replica: an outage of the only
    /// database (a replica would go on serving reads, which is what replicas are for).
    pub async fn spawn_behind_database_proxy(
        adjust: impl FnOnce(&mut Config),
    ) -> (TestApp, crate::support::tcp_proxy::TcpProxy) {
        let (mut config, files) = test_config().await;
        let proxy = crate::support::tcp_proxy::TcpProxy::in_front_of_database(&mut config).await;
        config.database_replica_urls.clear();
        adjust(&mut config);
        let plan = SeedPlan {
            categories: CATEGORIES,
            products: PRODUCTS,
        };
        (Self::start(config, files, Some(plan)).await, proxy)
    }

    /// Starts a server on an explicit configuration (e.g. a second instance on a shared database).
    pub async fn start(
        config: Config,
        files: Option<tempfile::TempDir>,
        seed_plan: Option<SeedPlan>,
    ) -> TestApp {
        install_test_log();
        let app = App::build(config.clone()).await.expect("the app starts");
        if let Some(plan) = seed_plan {
            seed::seed(&app.state().db, plan).await.expect("seed");
        }
        let address = app.address();
        let metrics_address = app.metrics_address();
        let state = app.state().clone();
        let (shutdown, signal) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let _ = app
                .serve(async move {
                    let _ = signal.await;
                })
                .await;
        });
        TestApp {
            address,
            metrics_address,
            state,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                // The server closes a connection that sends no request for the header read
                // timeout (10 s): a client must let idle connections go sooner, or a request
                // sent on one as the server closes it fails in transit.
                .pool_idle_timeout(Duration::from_secs(5))
                .build()
                .expect("client"),
            config,
            server,
            shutdown: Some(shutdown),
            _files: files,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub async fn post_json(
        &self,
        body: Value,
        token: Option<&str>,
        extra: &[(&str, &str)],
    ) -> GqlResponse {
        let mut request = self.client.post(self.url("/graphql")).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        Self::read(request.send().await.expect("request")).await
    }

    pub async fn read(response: reqwest::Response) -> GqlResponse {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        GqlResponse {
            status,
            headers,
            body,
        }
    }

    /// POSTs a query with variables, anonymously.
    pub async fn gql(&self, query: &str, variables: Value) -> GqlResponse {
        self.post_json(json!({ "query": query, "variables": variables }), None, &[])
            .await
    }

    /// POSTs a query with variables as the holder of `token`.
    pub async fn gql_as(&self, token: &str, query: &str, variables: Value) -> GqlResponse {
        self.post_json(
            json!({ "query": query, "variables": variables }),
            Some(token),
            &[],
        )
        .await
    }

    /// Creates an API token, as `catalog-api token create` does.
    pub async fn create_token(&self, name: &str) -> String {
        catalog_api::auth::create(&self.state.db, name)
            .await
            .expect("token")
            .0
    }

    /// SQL statements this server has executed so far.
    pub fn statements(&self) -> u64 {
        self.state.metrics.db_statements.get()
    }

    /// Runs `request` and returns how many SQL statements it cost.
    pub async fn count_statements<T>(&self, request: impl Future<Output = T>) -> (T, u64) {
        let before = self.statements();
        let result = request.await;
        (result, self.statements() - before)
    }

    /// The value of a Prometheus metric this server exports (0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .find(|line| line.starts_with(name) && !line.starts_with('#'))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
            .unwrap_or(0.0)
    }

    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.server).await;
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Polls `condition` until it holds or `deadline` passes; no fixed sleeps.
pub async fn eventually<F, Fut>(deadline: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if condition().await {
            return true;
        }
        if started.elapsed() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The expected price of seeded product `j`, as the API prints it.
pub fn seeded_price(j: u32) -> String {
    let cents = seed::product_price_cents(j);
    format!("{}.{:02}", cents / 100, cents % 100)
}

pub const PRODUCT_BY_ID: &str = "query ProductById($id: ID!) { product(id: $id) { id name price createdAt category { id name } } }";

/// Runs the `catalog-api` binary as an operator would, with only the environment given
/// (nothing inherited that could point it at a real database or Redis).
pub async fn run_binary(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_catalog-api"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the command finishes within a minute")
        .expect("the binary runs")
}

/// The product ids of one `products` connection, in the order returned.
pub fn page_ids(connection: &Value) -> Vec<u32> {
    connection["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|edge| {
            edge["node"]["id"]
                .as_str()
                .and_then(|id| id.parse().ok())
                .unwrap_or_else(|| panic!("a numeric id, got {}", edge["node"]["id"]))
        })
        .collect()
}

/// The test's own view of the Redis it was given (one Redis or a cluster), with its prefix:
/// for tests that look at what the cache stored. `None` without Redis.
pub fn redis_view(app: &TestApp) -> Option<catalog_api::cache::storage::redis::RedisStorage> {
    let url = app.config.redis_url.as_ref()?;
    catalog_api::cache::storage::redis::RedisStorage::new(
        url,
        &app.config.cache_prefix,
        app.config.cache_partitions,
        2,
        std::time::Duration::from_secs(2),
        std::time::Duration::from_secs(2),
        catalog_api::cache::TAG_TTL,
        app.config.cache_compress_above,
        std::time::Duration::from_millis(app.config.cache_local_lease_ms),
        std::sync::Arc::new(catalog_api::telemetry::Metrics::new()),
    )
    .ok()
}
