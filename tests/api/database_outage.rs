//! The database goes away (a cut network path, through `TcpProxy`) and comes back: cached
//! reads keep being answered, requests that need the database fail fast with
//! SERVICE_UNAVAILABLE, `/readyz` says 503, and everything recovers without a restart.
//! PostgreSQL only: an embedded SQLite file has no network path to cut.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::helpers::{PRODUCT_BY_ID, TestApp, eventually, test_config};
use crate::support::tcp_proxy::TcpProxy;

const CREATE_CATEGORY: &str =
    "mutation Create($name: String!) { createCategory(input: { name: $name }) { id } }";

async fn readyz(app: &TestApp) -> u16 {
    app.client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz answers")
        .status()
        .as_u16()
}

#[tokio::test]
async fn with_the_database_cut_cached_reads_work_the_rest_fails_fast_and_all_recovers() {
    if std::env::var("CATALOG_TEST_DATABASE_URL").is_err() {
        println!(
            "skipped: the database outage test needs PostgreSQL (set CATALOG_TEST_DATABASE_URL)"
        );
        return;
    }
    let (app, proxy) = TestApp::spawn_behind_database_proxy(|config| {
        config.db_acquire_timeout_ms = 1_000;
    })
    .await;
    let token = app.create_token("outage").await;
    // Before the cut: one read is cached, the token's validation is remembered.
    app.gql(PRODUCT_BY_ID, json!({ "id": "1" }))
        .await
        .assert_ok();
    let cached = app.gql(PRODUCT_BY_ID, json!({ "id": "1" })).await;
    cached.assert_ok();
    assert_eq!(cached.x_cache(), "HIT");
    app.gql_as(&token, CREATE_CATEGORY, json!({ "name": "Before" }))
        .await
        .assert_ok();
    // The mutation made older cache entries stale; this request remembers the token anew.
    app.gql_as(&token, "{ __typename }", json!({}))
        .await
        .assert_ok();
    assert_eq!(readyz(&app).await, 200);

    proxy.cut();

    let started = Instant::now();
    let first = app.gql(PRODUCT_BY_ID, json!({ "id": "2" })).await;
    let first_failure = started.elapsed();
    first.assert_error("SERVICE_UNAVAILABLE");
    assert_eq!(
        first.status, 200,
        "a field error in a 200, per GraphQL over HTTP"
    );
    println!("first uncached read with the database cut failed after {first_failure:?}");
    assert!(
        first_failure < Duration::from_millis(2_500),
        "the first failure took {first_failure:?}"
    );

    // With the breaker open, resolvers do not even try the database. A token whose validation
    // is not in the cache (the in-process cache does not keep it here) is still checked
    // against the database, which the acquire timeout bounds.
    for (token, query, variables, bound) in [
        (None, PRODUCT_BY_ID, json!({ "id": "3" }), 500),
        (
            Some(&token),
            CREATE_CATEGORY,
            json!({ "name": "During" }),
            2_500,
        ),
    ] {
        let started = Instant::now();
        let response = match token {
            Some(token) => app.gql_as(token, query, variables).await,
            None => app.gql(query, variables).await,
        };
        let failure = started.elapsed();
        response.assert_error("SERVICE_UNAVAILABLE");
        println!("with the breaker open, {query:.40} failed after {failure:?}");
        assert!(
            failure < Duration::from_millis(bound),
            "with the breaker open, {query} failed after {failure:?}: {}",
            response.body
        );
    }

    let started = Instant::now();
    let still_cached = app.gql(PRODUCT_BY_ID, json!({ "id": "1" })).await;
    still_cached.assert_ok();
    assert_eq!(still_cached.x_cache(), "HIT");
    assert_eq!(readyz(&app).await, 503);
    assert!(started.elapsed() < Duration::from_millis(500));

    proxy.restore();
    let started = Instant::now();
    let recovered = eventually(Duration::from_secs(10), || async {
        app.gql(PRODUCT_BY_ID, json!({ "id": "4" }))
            .await
            .body
            .get("errors")
            .is_none()
    })
    .await;
    let recovery = started.elapsed();
    assert!(recovered, "reads did not recover within 10 s");
    println!("uncached reads answered again {recovery:?} after the path was restored");
    app.gql_as(&token, CREATE_CATEGORY, json!({ "name": "After" }))
        .await
        .assert_ok();
    assert_eq!(readyz(&app).await, 200);
}

/// The server's log lines (JSON, one object a line) as the binary writes them to stderr.
struct LogLines(std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>);

impl LogLines {
    fn collect(stderr: tokio::process::ChildStderr) -> LogLines {
        use tokio::io::AsyncBufReadExt;
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&lines);
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if let Ok(value) = serde_json::from_str(&line) {
                    sink.lock().expect("log lines").push(value);
                }
            }
        });
        LogLines(lines)
    }

    fn matching(&self, keep: impl Fn(&serde_json::Value) -> bool) -> Vec<serde_json::Value> {
        let lines = self.0.lock().expect("log lines");
        lines.iter().filter(|line| keep(line)).cloned().collect()
    }

    fn with_message(&self, start: &str) -> Vec<serde_json::Value> {
        self.matching(|line| {
            line["message"]
                .as_str()
                .is_some_and(|message| message.starts_with(start))
        })
    }
}

/// The binary, as an operator runs it, with the database cut while clients keep asking: the
/// outage is one ERROR line and the recovery one INFO line that counts what was refused
/// meanwhile, not a line per `/readyz` answer. A subprocess, because the log subscriber is
/// global to a process and this test must see exactly one server's lines.
#[tokio::test]
async fn a_database_outage_is_logged_once_when_it_starts_and_once_when_it_ends() {
    if std::env::var("CATALOG_TEST_DATABASE_URL").is_err() {
        println!("skipped: the outage log test needs PostgreSQL (set CATALOG_TEST_DATABASE_URL)");
        return;
    }
    let (mut config, _files) = test_config().await;
    let proxy = TcpProxy::in_front_of_database(&mut config).await;
    let database_url = config.database_url.clone();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_catalog-api"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &database_url)
        .env("CATALOG_BIND", "127.0.0.1:0")
        .env("CATALOG_DEMO_DATA", "false")
        .env("CATALOG_LOG_FORMAT", "json")
        .env("CATALOG_DB_ACQUIRE_TIMEOUT_MS", "500")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let logs = LogLines::collect(child.stderr.take().expect("stderr"));
    let mut address = None;
    let started = eventually(Duration::from_secs(60), || {
        let found = logs
            .with_message("GraphiQL at")
            .first()
            .and_then(|line| line["address"].as_str().map(str::to_owned));
        address = found.clone();
        async move { found.is_some() }
    })
    .await;
    assert!(
        started,
        "the server did not start: {:?}",
        logs.matching(|_| true)
    );
    let base = format!("http://{}", address.expect("an address"));
    let client = reqwest::Client::new();
    let ready = || async {
        client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .expect("readyz answers")
            .status()
            .as_u16()
    };
    assert_eq!(ready().await, 200);

    proxy.cut();
    // Clients go on asking during the outage: readiness checks and reads that need the database.
    let mut unavailable = 0;
    for _ in 0..40 {
        if ready().await == 503 {
            unavailable += 1;
        }
        let response = client
            .post(format!("{base}/graphql"))
            .json(&json!({ "query": PRODUCT_BY_ID, "variables": { "id": "1" } }))
            .send()
            .await
            .expect("graphql answers");
        assert_eq!(
            response.status(),
            200,
            "a field error, not an outage of the API"
        );
    }
    assert!(
        unavailable >= 35,
        "readyz said 503 {unavailable} times of 40"
    );

    proxy.restore();
    let recovered = eventually(Duration::from_secs(15), || async {
        !logs.with_message("database reachable again").is_empty() && ready().await == 200
    })
    .await;
    assert!(recovered, "no recovery: {:?}", logs.matching(|_| true));
    child.start_kill().expect("stop the server");
    let _ = child.wait().await;

    let level = |line: &serde_json::Value, wanted: &str| line["level"] == wanted;
    let errors = logs.matching(|line| level(line, "ERROR"));
    assert_eq!(
        errors.len(),
        1,
        "one ERROR line for the outage: {errors:#?}"
    );
    assert!(
        errors[0]["message"]
            .as_str()
            .is_some_and(|message| message.starts_with("database unreachable")),
        "{errors:#?}"
    );
    let back = logs.with_message("database reachable again");
    assert_eq!(back.len(), 1, "{back:#?}");
    assert_eq!(back[0]["level"], "INFO");
    let refused = back[0]["refused"].as_u64().expect("the repeats, counted");
    assert!(
        refused >= unavailable,
        "the recovery counts the refusals: {refused} < {unavailable}"
    );
    let warnings = logs.matching(|line| level(line, "WARN"));
    assert!(warnings.len() <= 2, "no warning per request: {warnings:#?}");
}
