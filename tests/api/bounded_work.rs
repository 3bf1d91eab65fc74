//! Work a single request can cause is bounded whatever it asks: root fields per operation,
//! tags per cached entry (what a hit checks in Redis) and tags per invalidation (what a bulk
//! mutation stamps), and the coarser tags still retire every entry they stand for.

use serde_json::json;

use crate::support::helpers::{TestApp, redis_configured, redis_view};

const BULK_PRICES: &str =
    "mutation Bulk($updates: [PriceUpdateInput!]!) { bulkUpdatePrices(updates: $updates) { id } }";

fn aliased_products(count: usize) -> String {
    let fields: Vec<String> = (1..=count)
        .map(|id| format!("p{id}: product(id: \"{id}\") {{ id price category {{ name }} }}"))
        .collect();
    format!("{{ {} }}", fields.join(" "))
}

#[tokio::test]
async fn thousands_of_aliased_lookups_are_refused_before_they_run() {
    let app = TestApp::spawn().await;
    let (response, statements) = app
        .count_statements(app.gql(&aliased_products(2_400), json!({})))
        .await;
    response.assert_error("GRAPHQL_VALIDATION_FAILED");
    assert_eq!(statements, 0);
    app.gql(&aliased_products(100), json!({})).await.assert_ok();
}

/// The tags of every response entry under this test's prefix, read from Redis (every
/// primary of a cluster).
async fn stored_entry_tags(app: &TestApp) -> Vec<usize> {
    let Some(redis) = redis_view(app) else {
        return Vec::new();
    };
    let mut connection = redis.command_connection().await.expect("redis");
    let mut counts = Vec::new();
    for key in redis.keys().await.expect("keys") {
        if !redis.name_of(&key).starts_with("resp:") {
            continue;
        }
        let value: Vec<u8> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .expect("entry");
        let header = value
            .split(|byte| *byte == b'\n')
            .next()
            .unwrap_or_default();
        counts.push(String::from_utf8_lossy(header).split(' ').count() - 1);
    }
    counts
}

#[tokio::test]
async fn a_hundred_aliased_products_make_an_entry_with_few_tags_that_a_change_still_retires() {
    let app = TestApp::spawn().await;
    let token = app.create_token("writer").await;
    let query = aliased_products(100);
    app.gql(&query, json!({})).await.assert_ok();
    assert_eq!(app.gql(&query, json!({})).await.x_cache(), "HIT");
    if redis_configured() {
        let tags = stored_entry_tags(&app).await;
        assert!(!tags.is_empty());
        assert!(
            tags.iter()
                .all(|count| *count <= catalog_api::cache::tags::MAX_TAGS_PER_ENTRY),
            "{tags:?}"
        );
    }
    app.gql_as(
        &token,
        BULK_PRICES,
        json!({ "updates": [{ "id": "57", "price": "12.34" }] }),
    )
    .await
    .assert_ok();
    let after = app.gql(&query, json!({})).await;
    assert_eq!(after.assert_ok()["p57"]["price"], "12.34");
}

#[tokio::test]
async fn a_thousand_item_bulk_update_stamps_a_bounded_number_of_tags() {
    let app = TestApp::spawn().await;
    let token = app.create_token("writer").await;
    let lookup = "query One($id: ID!) { product(id: $id) { id price } }";
    app.gql(lookup, json!({ "id": "999" })).await.assert_ok();
    assert_eq!(
        app.gql(lookup, json!({ "id": "999" })).await.x_cache(),
        "HIT"
    );

    let before = app.metric("catalog_cache_invalidations").await;
    let updates: Vec<_> = (1..=1_000)
        .map(|id| json!({ "id": id.to_string(), "price": "1.23" }))
        .collect();
    app.gql_as(&token, BULK_PRICES, json!({ "updates": updates }))
        .await
        .assert_ok();
    let stamped = app.metric("catalog_cache_invalidations").await - before;
    assert!(
        stamped <= catalog_api::cache::tags::MAX_TAGS_PER_INVALIDATION as f64,
        "stamped {stamped} tags"
    );
    let after = app.gql(lookup, json!({ "id": "999" })).await;
    assert_eq!(after.assert_ok()["product"]["price"], "1.23");
}
