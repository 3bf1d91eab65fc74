//! Read replicas against a real streaming replica: the test starts its own PostgreSQL primary
//! and a standby (`pg_basebackup -R`) that applies WAL one second late, in temporary
//! directories on free ports, as the `postgres` system user. It never touches a shared server.
//! It skips (with a message) when the PostgreSQL binaries or the `postgres` user are missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use catalog_api::config::Config;
use catalog_api::db::replicas::parse_lsn;
use catalog_api::db::seed::SeedPlan;
use catalog_api::telemetry::DatabaseLabels;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use serde_json::{Value, json};

use crate::support::helpers::{TestApp, eventually};
use crate::support::ports::restartable_port;

const PRODUCT_PRICE: &str = "query Price($id: ID!) { product(id: $id) { id name price } }";
const PRODUCT_LIST: &str = "query List { products(first: 20) { edges { node { id price } } } }";
const UPDATE_PRICE: &str = "mutation Update($id: ID!, $input: UpdateProductInput!) { updateProduct(id: $id, input: $input) { id price } }";
const PRODUCTS: u32 = 20;

/// The directory holding `initdb`, `pg_ctl` and `pg_basebackup`, when all are installed.
fn binaries() -> Option<PathBuf> {
    let output = Command::new("pg_config").arg("--bindir").output().ok()?;
    let mut candidates = vec![PathBuf::from(
        String::from_utf8_lossy(&output.stdout).trim(),
    )];
    candidates.push(PathBuf::from("/usr/lib/postgresql/15/bin"));
    candidates.into_iter().find(|dir| {
        ["initdb", "pg_ctl", "pg_basebackup", "postgres"]
            .iter()
            .all(|binary| dir.join(binary).exists())
    })
}

fn postgres_user_exists() -> bool {
    Command::new("id")
        .arg("postgres")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// A primary and a replica of its own, stopped when dropped.
struct Cluster {
    binaries: PathBuf,
    root: tempfile::TempDir,
    primary_port: u16,
    replica_port: u16,
}

impl Cluster {
    fn primary_dir(&self) -> PathBuf {
        self.root.path().join("primary")
    }

    fn replica_dir(&self) -> PathBuf {
        self.root.path().join("replica")
    }

    /// Runs a PostgreSQL binary as the `postgres` user (PostgreSQL refuses to run as root).
    fn run(&self, binary: &str, args: &[&str]) {
        let output = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.binaries.join(binary))
            .args(args)
            .output()
            .expect("runuser runs");
        assert!(
            output.status.success(),
            "{binary} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn pg_ctl(&self, data: &Path, action: &[&str]) {
        let log = data.with_extension("log");
        let mut args = vec!["-D", data.to_str().expect("path"), "-l"];
        args.push(log.to_str().expect("path"));
        args.extend_from_slice(action);
        self.run("pg_ctl", &args);
    }

    fn start() -> Option<Cluster> {
        let Some(binaries) = binaries() else {
            eprintln!(
                "PostgreSQL binaries (initdb, pg_ctl, pg_basebackup) not found: skipping the replica test"
            );
            return None;
        };
        if !postgres_user_exists() {
            eprintln!("no `postgres` system user: skipping the replica test");
            return None;
        }
        let root = tempfile::tempdir().expect("temporary directory");
        let owned = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(root.path())
            .status()
            .is_ok_and(|status| status.success());
        if !owned {
            eprintln!(
                "cannot hand a directory to the `postgres` user (not root?): skipping the replica test"
            );
            return None;
        }
        let cluster = Cluster {
            binaries,
            root,
            primary_port: restartable_port(),
            replica_port: restartable_port(),
        };
        let primary = cluster.primary_dir();
        let primary_path = primary.to_str().expect("path");
        cluster.run(
            "initdb",
            &[
                "-D",
                primary_path,
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            ],
        );
        let settings = format!(
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             wal_level = replica\nmax_wal_senders = 5\nfsync = off\nhot_standby = on\n",
            cluster.primary_port,
            cluster.root.path().display()
        );
        append(&primary.join("postgresql.conf"), &settings);
        append(
            &primary.join("pg_hba.conf"),
            "\nhost replication postgres 127.0.0.1/32 trust\n",
        );
        cluster.pg_ctl(&primary, &["-w", "start"]);
        let replica = cluster.replica_dir();
        let port = cluster.primary_port.to_string();
        cluster.run(
            "pg_basebackup",
            &[
                "-R",
                "-D",
                replica.to_str().expect("path"),
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        // Later lines win: the replica's own port, and a fixed apply delay so that it lags
        // deterministically behind every commit.
        append(
            &replica.join("postgresql.auto.conf"),
            &format!(
                "\nport = {}\nrecovery_min_apply_delay = '1s'\n",
                cluster.replica_port
            ),
        );
        cluster.start_replica();
        Some(cluster)
    }

    fn start_replica(&self) {
        self.pg_ctl(&self.replica_dir(), &["-w", "start"]);
    }

    fn stop_replica(&self) {
        self.pg_ctl(&self.replica_dir(), &["-m", "immediate", "-w", "stop"]);
    }

    fn url(port: u16) -> String {
        format!("postgres://postgres@127.0.0.1:{port}/postgres")
    }

    fn primary_url(&self) -> String {
        Self::url(self.primary_port)
    }

    fn replica_url(&self) -> String {
        Self::url(self.replica_port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for data in [self.replica_dir(), self.primary_dir()] {
            let _ = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(self.binaries.join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("configuration file");
    file.write_all(text.as_bytes()).expect("append");
}

async fn scalar(db: &DatabaseConnection, sql: &str) -> Option<String> {
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .ok()??;
    row.try_get_by_index::<Option<String>>(0).ok()?
}

async fn replica_state(app: &TestApp) -> Value {
    let response = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz answers");
    assert_eq!(
        response.status(),
        200,
        "readyz stays 200 while the primary is up"
    );
    let body: Value = response.json().await.expect("JSON");
    body["replicas"][0].clone()
}

fn reads(app: &TestApp, database: &str) -> u64 {
    app.state
        .metrics
        .db_reads
        .get_or_create(&DatabaseLabels {
            database: database.to_owned(),
        })
        .get()
}

/// True once the replica has replayed everything the primary has written.
async fn caught_up(primary: &DatabaseConnection, replica: &DatabaseConnection) -> bool {
    let wanted = scalar(primary, "SELECT pg_current_wal_lsn()::text").await;
    let replayed = scalar(replica, "SELECT pg_last_wal_replay_lsn()::text").await;
    match (
        wanted.as_deref().and_then(parse_lsn),
        replayed.as_deref().and_then(parse_lsn),
    ) {
        (Some(wanted), Some(replayed)) => replayed >= wanted,
        _ => false,
    }
}

async fn price(app: &TestApp, id: u32, bypass: bool) -> String {
    let headers: &[(&str, &str)] = if bypass {
        &[("x-bypass-cache", "1")]
    } else {
        &[]
    };
    let response = app
        .post_json(
            json!({ "query": PRODUCT_PRICE, "variables": { "id": id.to_string() } }),
            None,
            headers,
        )
        .await;
    response.assert_ok()["product"]["price"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn listed_price(app: &TestApp, id: u32) -> String {
    let response = app.gql(PRODUCT_LIST, json!({})).await;
    let data = response.assert_ok();
    let id = id.to_string();
    data["products"]["edges"]
        .as_array()
        .and_then(|edges| {
            edges
                .iter()
                .find(|edge| edge["node"]["id"].as_str() == Some(id.as_str()))
                .and_then(|edge| edge["node"]["price"].as_str())
        })
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn replicas_serve_reads_without_ever_serving_data_older_than_a_mutation() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let mut config = Config::for_database(cluster.primary_url());
    config.bind = "127.0.0.1:0".parse().expect("address");
    config.demo_data = false;
    config.db_pool_size = 5;
    config.database_replica_urls = vec![cluster.replica_url()];
    // Wider than the replica's 1 s apply delay: a replica that lags behind a mutation stays in
    // rotation, so only the WAL position rule keeps old data out.
    config.replica_max_lag_ms = 5_000;
    config.replica_check_interval_ms = 100;
    config.allow_cache_bypass = true;
    config.redis_url = std::env::var("CATALOG_TEST_REDIS_URL")
        .ok()
        .filter(|url| !url.is_empty());
    config.cache_prefix = format!("catalog-test:{}:", uuid::Uuid::new_v4().simple());
    let app = TestApp::start(
        config,
        None,
        Some(SeedPlan {
            categories: 3,
            products: PRODUCTS,
        }),
    )
    .await;
    let token = app.create_token("replica-test").await;
    let primary = Database::connect(cluster.primary_url())
        .await
        .expect("primary");
    let replica = Database::connect(cluster.replica_url())
        .await
        .expect("replica");

    // The replica catches up with the seed and comes into rotation.
    assert!(
        eventually(Duration::from_secs(30), || async {
            caught_up(&primary, &replica).await
                && replica_state(&app).await["state"] == "in_rotation"
        })
        .await,
        "the replica never came into rotation: {}",
        replica_state(&app).await
    );

    // Proof that reads go to the replica: with its replay paused, a change written to the
    // primary behind the API's back (no invalidation, no position) is invisible to reads.
    scalar(&replica, "SELECT pg_wal_replay_pause()::text").await;
    primary
        .execute_unprepared("UPDATE product SET name = 'only on the primary' WHERE id = 1")
        .await
        .expect("direct write");
    let before = reads(&app, "replica-1");
    let response = app
        .post_json(
            json!({ "query": PRODUCT_PRICE, "variables": { "id": "1" } }),
            None,
            &[("x-bypass-cache", "1")],
        )
        .await;
    assert_ne!(
        response.assert_ok()["product"]["name"],
        "only on the primary",
        "a read served by the replica cannot see a write it has not replayed"
    );
    assert_eq!(reads(&app, "replica-1"), before + 1);
    scalar(&replica, "SELECT pg_wal_replay_resume()::text").await;

    // The trap: after each mutation the replica lags a second behind it, in rotation. No read,
    // cached or not, single or listed, may show the old price.
    for round in 0..4u32 {
        let id = round % PRODUCTS + 2;
        // Fill the cache (from the replica when it has caught up) with the current price.
        let _ = price(&app, id, false).await;
        let _ = listed_price(&app, id).await;
        let new_price = format!("{}.{:02}", 1000 + round, round);
        let update = app
            .gql_as(
                &token,
                UPDATE_PRICE,
                json!({ "id": id.to_string(), "input": { "price": new_price } }),
            )
            .await;
        assert_eq!(update.assert_ok()["updateProduct"]["price"], new_price);
        for attempt in 0..10 {
            assert_eq!(
                price(&app, id, false).await,
                new_price,
                "cached read {attempt}"
            );
            assert_eq!(
                price(&app, id, true).await,
                new_price,
                "uncached read {attempt}"
            );
            assert_eq!(listed_price(&app, id).await, new_price, "listed {attempt}");
        }
    }

    // Once the replica has caught up, reads go to it again.
    assert!(
        eventually(Duration::from_secs(10), || caught_up(&primary, &replica)).await,
        "the replica did not catch up"
    );
    let before = reads(&app, "replica-1");
    for id in 1..=PRODUCTS {
        price(&app, id, true).await;
    }
    let served = reads(&app, "replica-1") - before;
    assert!(
        served >= u64::from(PRODUCTS) / 2,
        "only {served} of {PRODUCTS} reads went to a caught-up replica"
    );
    let (on_replica, on_primary) = (reads(&app, "replica-1"), reads(&app, "primary"));
    eprintln!(
        "reads served by the replica: {on_replica} of {} ({}%)",
        on_replica + on_primary,
        on_replica * 100 / (on_replica + on_primary).max(1)
    );

    // The replica goes down: out of rotation, and reads keep working from the primary.
    cluster.stop_replica();
    let stopped = Instant::now();
    // Reads go on meanwhile: one routed to the dead replica runs again on the primary.
    let (client, url) = (app.client.clone(), app.url("/graphql"));
    let reader = tokio::spawn(async move {
        let mut failures = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            let request = json!({ "query": PRODUCT_PRICE, "variables": { "id": "3" } });
            let answer = client
                .post(&url)
                .header("x-bypass-cache", "1")
                .json(&request)
                .send()
                .await;
            let body: Value = match answer {
                Ok(response) => response.json().await.unwrap_or(Value::Null),
                Err(error) => Value::String(error.to_string()),
            };
            if body["data"]["product"]["price"].as_str().is_none() {
                failures.push(body.to_string());
            }
        }
        failures
    });
    assert!(
        eventually(Duration::from_secs(10), || async {
            replica_state(&app).await["state"] == "down"
        })
        .await,
        "the stopped replica stayed in rotation"
    );
    eprintln!(
        "replica taken out of rotation {} ms after it stopped",
        stopped.elapsed().as_millis()
    );
    let failures = reader.await.expect("the reader finishes");
    assert!(failures.is_empty(), "reads failed: {failures:?}");
    let before = reads(&app, "primary");
    for id in 1..=5 {
        price(&app, id, true).await;
    }
    assert_eq!(reads(&app, "primary"), before + 5);
    let state = replica_state(&app).await;
    assert_eq!(state["state"], "down", "{state}");
    assert!(state["error"].is_string(), "{state}");

    // Restarted, it comes back into rotation and serves reads again.
    cluster.start_replica();
    let restarted = Instant::now();
    assert!(
        eventually(Duration::from_secs(30), || async {
            replica_state(&app).await["state"] == "in_rotation"
        })
        .await,
        "the restarted replica never came back: {}",
        replica_state(&app).await
    );
    eprintln!(
        "replica back in rotation {} ms after it restarted",
        restarted.elapsed().as_millis()
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            let before = reads(&app, "replica-1");
            price(&app, 4, true).await;
            reads(&app, "replica-1") > before
        })
        .await,
        "no read went to the restarted replica"
    );
    app.stop().await;
}
