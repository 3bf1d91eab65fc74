//! The cache on a real Redis Cluster (3 primaries, 3 replicas, `support/redis_cluster.rs`): reads hit
//! and mutations invalidate with the bookkeeping partitioned over every primary, two instances
//! hear each other's invalidations through sharded pub/sub, management commands reach every
//! primary, and a primary killed with `kill -9` or switched with `CLUSTER FAILOVER` under load
//! neither fails a request nor lets a read return data older than an acknowledged mutation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::json;

use crate::support::helpers::{PRODUCT_BY_ID, TestApp, eventually, redis_view, test_config};
use crate::support::redis_cluster::RedisCluster;

const UPDATE_PRICE: &str = "mutation Update($id: ID!, $price: Decimal!) { updateProduct(id: $id, input: { price: $price }) { id price } }";

/// Longer than a failover takes (node timeout 1 s plus the election), so a mutation made while
/// a primary is down answers only once its invalidation reached the promoted replica.
const INVALIDATION_DEADLINE_MS: u64 = 15_000;

async fn spawn_on(cluster: &RedisCluster, first: Option<&TestApp>, local_tier: bool) -> TestApp {
    let (mut config, files) = match first {
        Some(first) => (first.config.clone(), None),
        None => test_config().await,
    };
    config.bind = "127.0.0.1:0".parse().expect("address");
    config.redis_url = Some(cluster.url());
    config.redis_command_timeout_ms = 200;
    config.redis_connect_timeout_ms = 1_000;
    config.invalidation_deadline_ms = INVALIDATION_DEADLINE_MS;
    config.cache_local_tier = local_tier;
    let seed = first.is_none().then_some(catalog_api::db::seed::SeedPlan {
        categories: 5,
        products: 200,
    });
    TestApp::start(config, files, seed).await
}

async fn price_of(app: &TestApp, id: &str) -> (String, String) {
    let response = app.gql(PRODUCT_BY_ID, json!({ "id": id })).await;
    (
        response.assert_ok()["product"]["price"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        response.x_cache().to_owned(),
    )
}

/// Keys under the test's prefix on each primary, read node by node.
async fn keys_per_primary(cluster: &RedisCluster, prefix: &str) -> Vec<usize> {
    let mut counts = Vec::new();
    for port in cluster.primaries().await {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("client");
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{{{prefix}*"))
            .query_async(&mut connection)
            .await
            .expect("keys");
        counts.push(keys.len());
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_reads_hit_mutations_invalidate_and_instances_hear_each_other() {
    let Some(cluster) = RedisCluster::start().await else {
        return;
    };
    let first = spawn_on(&cluster, None, true).await;
    let second = spawn_on(&cluster, Some(&first), true).await;
    let token = first.create_token("writer").await;

    // Entries spread over the partitions, so over every primary.
    for id in 1..=60 {
        price_of(&first, &id.to_string()).await;
    }
    assert_eq!(price_of(&first, "42").await.1, "HIT");
    // The second instance learns the document's policy on its first sight of it.
    price_of(&second, "61").await;
    assert_eq!(
        price_of(&second, "42").await.1,
        "HIT",
        "filled by the other instance"
    );
    let spread = keys_per_primary(&cluster, &first.config.cache_prefix).await;
    assert_eq!(spread.len(), 3);
    assert!(
        spread.iter().all(|keys| *keys >= 5),
        "keys per primary: {spread:?}"
    );

    // Both first tiers hold product 42; a mutation on one instance reaches the other.
    assert_eq!(price_of(&second, "42").await.1, "HIT");
    first
        .gql_as(&token, UPDATE_PRICE, json!({ "id": "42", "price": "4.21" }))
        .await
        .assert_ok();
    assert_eq!(price_of(&first, "42").await.0, "4.21", "the writer at once");
    assert!(
        eventually(Duration::from_millis(500), || async {
            price_of(&second, "42").await.0 == "4.21"
        })
        .await,
        "the other instance hears the invalidation through sharded pub/sub"
    );
    // A subscriber cut off (every pub/sub connection closed) drops what it cannot prove
    // fresh: after a mutation made meanwhile, the other instance never serves the old price.
    assert_eq!(price_of(&second, "42").await, ("4.21".into(), "HIT".into()));
    let gaps = second.metric("catalog_cache_first_tier_gaps").await;
    cluster.kill_subscriptions().await;
    first
        .gql_as(&token, UPDATE_PRICE, json!({ "id": "42", "price": "4.22" }))
        .await
        .assert_ok();
    assert!(
        eventually(Duration::from_millis(500), || async {
            price_of(&second, "42").await.0 == "4.22"
        })
        .await
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            second.metric("catalog_cache_first_tier_gaps").await > gaps
        })
        .await,
        "the lost subscription started a new generation"
    );
    assert_eq!(first.metric("catalog_cache_errors").await, 0.0);
    assert_eq!(second.metric("catalog_cache_errors").await, 0.0);

    // Management reaches every primary: stats count every key, clear deletes the entries on
    // all of them (the bookkeeping stays) and nothing stale is served after it.
    let cache = first.state.cache.as_ref().expect("a cache");
    // The monitors' buffers are flushed first, so no flush adds keys in between.
    for app in [&first, &second] {
        let cache = app.state.cache.as_ref().expect("a cache");
        cache.flush_monitor().await.expect("flush");
    }
    // Counted until two counts agree: an execution the test's clients left running may still
    // store its entry between the listing and the stats.
    let agree = eventually(Duration::from_secs(5), || async {
        let listed: usize = keys_per_primary(&cluster, &first.config.cache_prefix)
            .await
            .iter()
            .sum();
        let stats = cache.storage().stats().await.expect("stats");
        stats.prefix_keys as usize == listed
    })
    .await;
    assert!(agree, "stats count every key on every primary");
    let deleted = cache.storage().clear().await.expect("clear");
    assert!(deleted >= 60, "deleted {deleted}");
    let left = keys_per_primary(&cluster, &first.config.cache_prefix).await;
    assert!(
        left.iter().sum::<usize>() <= 2 * 16 + 1,
        "only bookkeeping is left: {left:?}"
    );
    assert_eq!(price_of(&first, "42").await, ("4.22".into(), "MISS".into()));
    assert_eq!(price_of(&second, "42").await.0, "4.22");
}

/// How a primary goes away.
#[derive(Clone, Copy, Debug)]
enum Failover {
    Kill,
    Switch,
}

/// Readers on two instances and one writer per product run while a primary goes away. Each
/// write sets a product's price to the next version; a read must never return a version older
/// than the last one acknowledged before the read was sent, and no request may fail.
async fn failover_under_load(failover: Failover) {
    let Some(mut cluster) = RedisCluster::start().await else {
        return;
    };
    let first = spawn_on(&cluster, None, false).await;
    let second = spawn_on(&cluster, Some(&first), false).await;
    let apps = Arc::new([first, second]);
    let token = apps[0].create_token("writer").await;
    let products: Vec<u32> = (1..=24).collect();
    let acknowledged: Arc<BTreeMap<u32, AtomicU64>> =
        Arc::new(products.iter().map(|id| (*id, AtomicU64::new(0))).collect());
    let violations = Arc::new(Mutex::new(Vec::<String>::new()));
    let running = Arc::new(AtomicBool::new(true));
    let reads = Arc::new(AtomicU64::new(0));

    let mut workers = Vec::new();
    for reader in 0..4usize {
        let (apps, acknowledged, violations, running, reads) = (
            Arc::clone(&apps),
            Arc::clone(&acknowledged),
            Arc::clone(&violations),
            Arc::clone(&running),
            Arc::clone(&reads),
        );
        let products = products.clone();
        workers.push(tokio::spawn(async move {
            let mut turn = reader;
            while running.load(Ordering::SeqCst) {
                turn += 1;
                let id = products[turn % products.len()];
                let floor = acknowledged[&id].load(Ordering::SeqCst);
                let response = apps[turn % 2]
                    .gql(PRODUCT_BY_ID, json!({ "id": id.to_string() }))
                    .await;
                reads.fetch_add(1, Ordering::Relaxed);
                let Some(price) = response.body["data"]["product"]["price"].as_str() else {
                    violations
                        .lock()
                        .push(format!("read of {id} failed: {}", response.body));
                    continue;
                };
                let version = price
                    .split('.')
                    .next()
                    .and_then(|whole| whole.parse::<u64>().ok())
                    .unwrap_or(0);
                if version < floor && floor > 0 {
                    violations.lock().push(format!(
                        "product {id}: read {price} ({}) after version {floor} was acknowledged",
                        response.x_cache()
                    ));
                }
            }
        }));
    }
    let writer = {
        let (apps, acknowledged, violations, running) = (
            Arc::clone(&apps),
            Arc::clone(&acknowledged),
            Arc::clone(&violations),
            Arc::clone(&running),
        );
        let products = products.clone();
        tokio::spawn(async move {
            let mut version = 1000u64;
            while running.load(Ordering::SeqCst) {
                version += 1;
                let id = products[version as usize % products.len()];
                let response = apps[version as usize % 2]
                    .gql_as(
                        &token,
                        UPDATE_PRICE,
                        json!({ "id": id.to_string(), "price": format!("{version}.00") }),
                    )
                    .await;
                if response.body.get("errors").is_some() {
                    violations
                        .lock()
                        .push(format!("update of {id} failed: {}", response.body));
                    continue;
                }
                acknowledged[&id].fetch_max(version, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    tokio::time::sleep(Duration::from_secs(2)).await;
    let hits_before = apps[0].metric("catalog_cache_hits").await;
    match failover {
        Failover::Kill => eprintln!("killed primary {}", cluster.kill_primary(1).await),
        Failover::Switch => eprintln!("switched to primary {}", cluster.failover(1).await),
    }
    // Load continues on the new primary.
    tokio::time::sleep(Duration::from_secs(3)).await;
    running.store(false, Ordering::SeqCst);
    for worker in workers {
        worker.await.expect("reader");
    }
    writer.await.expect("writer");
    let hits_after = apps[0].metric("catalog_cache_hits").await;
    let violations = violations.lock().clone();
    eprintln!(
        "{failover:?}: {} reads, {} violations, hits {hits_before} -> {hits_after}",
        reads.load(Ordering::Relaxed),
        violations.len()
    );
    assert!(
        violations.is_empty(),
        "{} violation(s), first: {:#?}",
        violations.len(),
        &violations[..violations.len().min(10)]
    );
    assert!(
        hits_after > hits_before,
        "caching went on after the failover"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_under_load_fails_no_request_and_loses_no_acknowledged_invalidation() {
    failover_under_load(Failover::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_failover_under_load_fails_no_request_and_loses_no_acknowledged_invalidation() {
    failover_under_load(Failover::Switch).await;
}

/// What a promoted replica (or a restarted node) looks like to the scripts: the run id kept
/// beside a partition's data is not the serving node's. A hit is not checked (acknowledged
/// invalidations reached the replica through `WAIT`), but everything else is: the next
/// invalidation starts a new epoch in every partition, and nothing filled before it is served.
/// A primary with no replica has nothing a failover could promote: its invalidations wait for
/// none (a `WAIT 1` there would block each mutation for its whole timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_without_replicas_mutations_wait_for_no_replica() {
    let Some(cluster) = RedisCluster::start_with_replicas(0).await else {
        return;
    };
    let app = spawn_on(&cluster, None, false).await;
    let token = app.create_token("writer").await;
    assert_eq!(price_of(&app, "7").await.1, "MISS");
    assert_eq!(price_of(&app, "7").await.1, "HIT");
    for round in 1..=5 {
        let price = format!("{round}.25");
        app.gql_as(&token, UPDATE_PRICE, json!({ "id": "7", "price": price }))
            .await
            .assert_ok();
        assert_eq!(price_of(&app, "7").await.0, price, "invalidated");
    }
    assert_eq!(cluster.calls_on_primaries("wait").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookkeeping_from_another_node_starts_a_new_epoch_before_anything_is_stored() {
    let Some(cluster) = RedisCluster::start().await else {
        return;
    };
    let app = spawn_on(&cluster, None, false).await;
    let token = app.create_token("writer").await;
    for id in 1..=40 {
        price_of(&app, &id.to_string()).await;
    }
    assert_eq!(price_of(&app, "7").await.1, "HIT");
    let redis = redis_view(&app).expect("a cluster");
    let mut connection = redis.command_connection().await.expect("connect");
    let mut books = 0;
    for key in redis.keys().await.expect("keys") {
        if redis.name_of(&key) == "book" {
            redis::cmd("HSET")
                .arg(&key)
                .arg("#runid")
                .arg("another-node")
                .query_async::<()>(&mut connection)
                .await
                .expect("HSET");
            books += 1;
        }
    }
    // One per partition (40 entries fill every one of them).
    assert_eq!(books, app.config.cache_partitions, "bookkeeping hashes");
    let unprovable = app.metric("catalog_cache_unprovable").await;
    app.gql_as(&token, UPDATE_PRICE, json!({ "id": "42", "price": "1.23" }))
        .await
        .assert_ok();
    for id in (1..=40).filter(|id| *id != 42) {
        assert_eq!(
            price_of(&app, &id.to_string()).await.1,
            "MISS",
            "product {id} was cached before the new epoch"
        );
    }
    assert!(app.metric("catalog_cache_unprovable").await >= unprovable + 39.0);
    assert_eq!(price_of(&app, "7").await.1, "HIT", "caching resumes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_splits_the_cluster_cache_differently_serves_from_the_database() {
    let Some(cluster) = RedisCluster::start().await else {
        return;
    };
    let first = spawn_on(&cluster, None, false).await;
    price_of(&first, "7").await;
    assert_eq!(price_of(&first, "7").await.1, "HIT");

    // Another partition count would stamp partitions the first never reads (or the reverse):
    // it must not use the cache, and still answer from the database.
    let mut config = first.config.clone();
    config.cache_partitions = first.config.cache_partitions + 2;
    config.invalidation_deadline_ms = 300;
    let other = TestApp::start(config, None, None).await;
    let token = other.create_token("writer").await;
    for _ in 0..3 {
        let (_, cache) = price_of(&other, "7").await;
        assert_ne!(cache, "HIT");
    }
    other
        .gql_as(&token, UPDATE_PRICE, json!({ "id": "7", "price": "4.44" }))
        .await
        .assert_ok();
    assert_eq!(price_of(&other, "7").await.0, "4.44");
}
