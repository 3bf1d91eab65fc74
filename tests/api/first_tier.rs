//! The first tier is exact across instances: a mutation answers only once every other
//! instance's first tier has heard its invalidation or lost its lease, so a read that starts
//! after the answer is fresh on every instance, and an instance cut off from Redis costs a
//! writer at most one and a half leases.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::helpers::{PRODUCT_BY_ID, TestApp, redis_view, test_config};
use crate::support::redis_process::RedisProcess;
use crate::support::tcp_proxy::TcpProxy;

const UPDATE_PRICE: &str = "mutation Update($id: ID!, $input: UpdateProductInput!) { updateProduct(id: $id, input: $input) { id price } }";
const LEASE_MS: u64 = 500;

async fn spawn_with_tier(redis_url: String) -> TestApp {
    let (mut config, files) = test_config().await;
    config.redis_url = Some(redis_url);
    config.redis_command_timeout_ms = 100;
    config.redis_connect_timeout_ms = 200;
    config.cache_local_tier = true;
    config.cache_local_lease_ms = LEASE_MS;
    TestApp::start(
        config,
        files,
        Some(catalog_api::db::seed::SeedPlan {
            categories: 5,
            products: 100,
        }),
    )
    .await
}

/// A second instance on the first one's database, reaching Redis at `redis_url`.
async fn second_instance(first: &TestApp, redis_url: String) -> TestApp {
    let mut config = first.config.clone();
    config.bind = "127.0.0.1:0".parse().expect("address");
    config.redis_url = Some(redis_url);
    TestApp::start(config, None, None).await
}

async fn price_on(app: &TestApp, id: &str) -> String {
    let response = app.gql(PRODUCT_BY_ID, json!({ "id": id })).await;
    response.data()["product"]["price"]
        .as_str()
        .expect("a price")
        .to_owned()
}

/// Waits until an instance's first tier holds its lease: a read it has cached comes back
/// from its tier.
async fn until_leased(app: &TestApp, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        app.gql(PRODUCT_BY_ID, json!({ "id": id }))
            .await
            .assert_ok();
        let before = app.metric("catalog_cache_first_tier_hits_total").await;
        app.gql(PRODUCT_BY_ID, json!({ "id": id }))
            .await
            .assert_ok();
        if app.metric("catalog_cache_first_tier_hits_total").await > before {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the first tier never took a lease"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn percentile(sorted: &[Duration], share: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * share).round() as usize]
}

#[tokio::test]
async fn a_read_on_another_instance_right_after_a_mutation_is_fresh_with_first_tiers_on() {
    let Some(redis) = RedisProcess::start().await else {
        return;
    };
    let first = spawn_with_tier(redis.url()).await;
    let second = second_instance(&first, redis.url()).await;
    let token = first.create_token("writer").await;
    until_leased(&second, "7").await;

    let mut latencies = Vec::new();
    for round in 0..40u32 {
        let id = (round % 4 + 7).to_string();
        // The other instance's tier holds the old price.
        price_on(&second, &id).await;
        price_on(&second, &id).await;
        let price = format!("{}.{:02}", 10 + round, round);
        let started = Instant::now();
        first
            .gql_as(
                &token,
                UPDATE_PRICE,
                json!({ "id": id, "input": { "price": price } }),
            )
            .await
            .assert_ok();
        latencies.push(started.elapsed());
        assert_eq!(
            price_on(&second, &id).await,
            price,
            "round {round}: read on the other instance right after the mutation's answer"
        );
    }
    latencies.sort();
    println!(
        "mutation latency with two leased first tiers: p50 {:?}, p90 {:?}, max {:?}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        latencies[latencies.len() - 1]
    );
    assert!(
        first
            .metric("catalog_cache_first_tier_settle_seconds_count")
            .await
            >= 40.0
    );
    assert_eq!(
        first
            .metric("catalog_cache_first_tier_lease_evictions_total")
            .await,
        0.0,
        "an instance that hears every invalidation keeps its lease"
    );
    second.stop().await;
    first.stop().await;
}

#[tokio::test]
async fn an_instance_cut_off_from_redis_stops_serving_its_tier_and_delays_a_writer_at_most_a_lease_and_a_half()
 {
    let Some(redis) = RedisProcess::start().await else {
        return;
    };
    let first = spawn_with_tier(redis.url()).await;
    let proxy = TcpProxy::start(redis.url().trim_start_matches("redis://").to_owned()).await;
    let second = second_instance(&first, format!("redis://{}", proxy.address)).await;
    let token = first.create_token("writer").await;
    until_leased(&second, "9").await;
    let old = price_on(&second, "9").await;

    // Half-open: the second instance's subscription and lease renewals go silent, and its
    // keepalive notices only after a second or two. The writer waits until its lease has
    // run out (its breaker may well have opened sooner; the lease does not rely on that).
    proxy.freeze();
    let started = Instant::now();
    first
        .gql_as(
            &token,
            UPDATE_PRICE,
            json!({ "id": "9", "input": { "price": "77.77" } }),
        )
        .await
        .assert_ok();
    let waited = started.elapsed();
    println!("mutation latency with the other instance frozen: {waited:?}");
    assert!(
        waited < Duration::from_millis(LEASE_MS * 3 / 2 + 400),
        "a frozen instance delayed the writer {waited:?}"
    );
    let read = second.gql(PRODUCT_BY_ID, json!({ "id": "9" })).await;
    assert_ne!(old, "77.77");
    assert_eq!(
        read.data()["product"]["price"],
        "77.77",
        "the frozen instance served its first tier after the mutation's answer"
    );

    // Back on the network, it resubscribes, takes a lease again, and writes settle at once.
    proxy.restore();
    until_leased(&second, "9").await;
    let started = Instant::now();
    first
        .gql_as(
            &token,
            UPDATE_PRICE,
            json!({ "id": "9", "input": { "price": "78.78" } }),
        )
        .await
        .assert_ok();
    assert!(started.elapsed() < Duration::from_millis(LEASE_MS / 2));
    assert_eq!(price_on(&second, "9").await, "78.78");
    second.stop().await;
    first.stop().await;
}

#[tokio::test]
async fn an_instance_that_renews_without_hearing_invalidations_is_evicted_and_waited_out() {
    let Some(redis) = RedisProcess::start().await else {
        return;
    };
    let writer = spawn_with_tier(redis.url()).await;
    let token = writer.create_token("writer").await;
    let view = redis_view(&writer).expect("a Redis view");
    let mut connection = view
        .dedicated_connection()
        .await
        .expect("a Redis connection");
    // A member that renews on time but never hears anything: stuck at sequence 0.
    let granted = view
        .leases()
        .renew(&view, &mut connection, "deaf", true, &[0])
        .await
        .expect("joined");
    assert!(matches!(
        granted,
        catalog_api::cache::storage::redis::leases::Renewal::Granted(_)
    ));
    let renewing = tokio::spawn(async move {
        let mut refused_after = None;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(3) {
            let renewal = leases_renew(&view, &mut connection).await;
            if renewal == Some(catalog_api::cache::storage::redis::leases::Renewal::Refused) {
                refused_after = Some(started.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(LEASE_MS / 5)).await;
        }
        refused_after
    });

    let started = Instant::now();
    writer
        .gql_as(
            &token,
            UPDATE_PRICE,
            json!({ "id": "3", "input": { "price": "12.34" } }),
        )
        .await
        .assert_ok();
    let waited = started.elapsed();
    println!("mutation latency with a member that never acknowledges: {waited:?}");
    // Half a lease of patience, then the evicted lease is waited out (renewed at most a
    // heartbeat before, so it had at least four fifths of a lease left).
    assert!(
        waited >= Duration::from_millis(LEASE_MS / 2 + LEASE_MS * 3 / 5),
        "the writer answered before the deaf member's lease ended: {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(LEASE_MS * 3 / 2 + 400),
        "{waited:?}"
    );
    assert_eq!(
        writer
            .metric("catalog_cache_first_tier_lease_evictions_total")
            .await,
        1.0
    );
    let refused_after = renewing.await.expect("the renewing task");
    assert!(
        refused_after.is_some(),
        "the evicted member's next renewal must be refused"
    );
    writer.stop().await;
}

async fn leases_renew(
    view: &catalog_api::cache::storage::redis::RedisStorage,
    connection: &mut catalog_api::cache::storage::redis::Connection,
) -> Option<catalog_api::cache::storage::redis::leases::Renewal> {
    view.leases()
        .renew(view, connection, "deaf", false, &[0])
        .await
        .ok()
}
