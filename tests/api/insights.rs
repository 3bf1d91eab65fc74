//! Cache insights (`cacheInsights`, the `catalog_cache_operation_*` metrics): each miss is
//! counted under the reason that caused it, invalidation misses are attributed to the
//! mutation, the maximum achievable hit rate follows its definition on a scripted sequence,
//! and a flood of distinct operations leaves the tables and `/metrics` bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::helpers::{GqlResponse, TestApp};

const INSIGHTS: &str = "query Insights($first: Int) { cacheInsights(first: $first) {
    trackedOperations operationCapacity memoryBoundBytes
    totals { requests hits stale misses }
    operations { name documentHash requests hits stale misses hitRate maxAchievableHitRate
                 p50Ms p99Ms missesByReason { reason count } }
    topInvalidators { mutation invalidations tags missesCaused operations { operation misses } } } }";

async fn insights(app: &TestApp, token: &str) -> Value {
    let response = app.gql_as(token, INSIGHTS, json!({ "first": 100 })).await;
    response.assert_ok()["cacheInsights"].clone()
}

/// The operation named `name` in an insights answer.
fn operation<'a>(insights: &'a Value, name: &str) -> &'a Value {
    insights["operations"]
        .as_array()
        .and_then(|operations| operations.iter().find(|op| op["name"] == name))
        .unwrap_or_else(|| panic!("no operation {name} in {insights}"))
}

/// An operation's misses by reason, as `{ "EXPIRED": 1, ... }`.
fn reasons(operation: &Value) -> BTreeMap<String, u64> {
    operation["missesByReason"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| {
            (
                entry["reason"].as_str().unwrap_or_default().to_owned(),
                entry["count"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

fn expect_reasons(operation: &Value, expected: &[(&str, u64)]) {
    let expected: BTreeMap<String, u64> = expected
        .iter()
        .map(|(reason, count)| ((*reason).to_owned(), *count))
        .collect();
    assert_eq!(reasons(operation), expected, "{operation}");
}

/// The `/metrics` text of `app` (its API address).
pub(crate) async fn metrics_text(app: &TestApp) -> String {
    app.client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

/// The value of the sample `name{labels}` where every `(label, value)` pair matches.
pub(crate) fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .find(|line| {
            labels
                .iter()
                .all(|(label, value)| line.contains(&format!("{label}=\"{value}\"")))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

const PRODUCT: &str = "query OneProduct($id: ID!) { product(id: $id) { id name } }";
const UPDATE: &str = "mutation Rename($id: ID!, $name: String!) {
    updateProduct(id: $id, input: { name: $name }) { id } }";

#[tokio::test]
async fn each_miss_is_counted_under_its_reason_and_invalidations_under_their_mutation() {
    let app = TestApp::spawn_on_primary(|config| {
        config.allow_cache_bypass = true;
        config.cache_max_entry_bytes = 400;
    })
    .await;
    let token = app.create_token("insights").await;

    // Cold, then a hit; a mutation on this product retires it: invalidated, by updateProduct.
    let one = json!({ "id": "1" });
    assert_eq!(app.gql(PRODUCT, one.clone()).await.x_cache(), "MISS");
    assert_eq!(app.gql(PRODUCT, one.clone()).await.x_cache(), "HIT");
    app.gql_as(&token, UPDATE, json!({ "id": "1", "name": "Renamed" }))
        .await
        .assert_ok();
    assert_eq!(app.gql(PRODUCT, one.clone()).await.x_cache(), "MISS");
    // Another product's entry was untouched by the mutation: a cold miss, then a hit.
    assert_eq!(
        app.gql(PRODUCT, json!({ "id": "2" })).await.x_cache(),
        "MISS"
    );

    // Bypassed on request.
    let bypassed = app
        .post_json(
            json!({ "query": PRODUCT, "variables": one }),
            None,
            &[("x-bypass-cache", "1")],
        )
        .await;
    assert_eq!(bypassed.x_cache(), "BYPASS");

    // Uncacheable: a validation error is never stored.
    let broken = "query Broken { product(id: \"1\") { nope } }";
    for _ in 0..2 {
        assert_eq!(app.gql(broken, json!({})).await.x_cache(), "BYPASS");
    }

    // Token-scoped: a private result is kept per token, so a second token misses too.
    let other = app.create_token("another").await;
    let private = "query Private { dashboardStats { totalProducts } }";
    for holder in [&token, &other] {
        let response = app.gql_as(holder, private, json!({})).await;
        response.assert_ok();
        assert_eq!(response.x_cache(), "MISS");
    }

    // Too large: the page is longer than the 400-byte entry limit, so it is never stored.
    let large = "query Large { products(first: 20) { edges { node { id name price } } } }";
    for _ in 0..2 {
        let response = app.gql(large, json!({})).await;
        response.assert_ok();
        assert_eq!(response.x_cache(), "MISS");
    }

    let insights = insights(&app, &token).await;
    let product = operation(&insights, "OneProduct");
    assert_eq!(product["requests"], 5, "{product}");
    assert_eq!(product["hits"], 1, "{product}");
    expect_reasons(product, &[("COLD", 2), ("INVALIDATED", 1), ("BYPASSED", 1)]);
    expect_reasons(operation(&insights, "Broken"), &[("UNCACHEABLE", 2)]);
    expect_reasons(operation(&insights, "Private"), &[("TOKEN_SCOPED", 2)]);
    expect_reasons(operation(&insights, "Large"), &[("TOO_LARGE", 2)]);
    let invalidators = insights["topInvalidators"]
        .as_array()
        .expect("invalidators");
    assert_eq!(invalidators.len(), 1, "{insights}");
    assert_eq!(invalidators[0]["mutation"], "updateProduct");
    assert_eq!(invalidators[0]["invalidations"], 1);
    assert_eq!(invalidators[0]["missesCaused"], 1);
    assert_eq!(
        invalidators[0]["operations"],
        json!([{ "operation": "OneProduct", "misses": 1 }])
    );

    // `/metrics` says the same, with the same bounded labels.
    let text = metrics_text(&app).await;
    let document = product["documentHash"].as_str().expect("hash");
    let labels = [("operation", "OneProduct"), ("document", document)];
    assert_eq!(
        sample(&text, "catalog_cache_operation_requests_total", &labels),
        Some(5.0)
    );
    let invalidated = [labels[0], labels[1], ("reason", "invalidated")];
    assert_eq!(
        sample(&text, "catalog_cache_operation_misses_total", &invalidated),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "catalog_cache_invalidator_misses_caused_total",
            &[("mutation", "updateProduct")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "catalog_cache_operation_misses_total",
            &[("operation", "Large"), ("reason", "too_large")]
        ),
        Some(2.0)
    );
}

#[tokio::test]
async fn max_achievable_hit_rate_counts_expired_misses_and_only_those() {
    let app = TestApp::spawn_on_primary(|config| config.cache_max_ttl_secs = 1).await;
    let token = app.create_token("insights").await;
    let mut seen: Vec<String> = Vec::new();
    let mut ask = async |app: &TestApp| {
        let response: GqlResponse = app.gql(PRODUCT, json!({ "id": "7" })).await;
        response.assert_ok();
        seen.push(response.x_cache().to_owned());
        response.x_cache().to_owned()
    };
    assert_eq!(ask(&app).await, "MISS");
    assert_eq!(ask(&app).await, "HIT");
    // Ask until the one-second entry has expired and missed.
    let mut expired = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if ask(&app).await == "MISS" {
            expired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(expired, "the entry expired within 10 s: {seen:?}");
    app.gql_as(&token, UPDATE, json!({ "id": "7", "name": "Seven" }))
        .await
        .assert_ok();
    assert_eq!(ask(&app).await, "MISS", "invalidated by the mutation");
    ask(&app).await;

    let requests = seen.len() as u64;
    let hits = seen.iter().filter(|status| *status == "HIT").count() as u64;
    let misses = requests - hits;
    let insights = insights(&app, &token).await;
    let product = operation(&insights, "OneProduct");
    let found = reasons(product);
    assert_eq!(found.get("COLD"), Some(&1), "{product}");
    assert_eq!(found.get("INVALIDATED"), Some(&1), "{product}");
    // Every other miss happened because the one-second entry expired.
    let expired_misses = misses - 2;
    assert!(expired_misses >= 1, "{seen:?}");
    assert_eq!(found.get("EXPIRED"), Some(&expired_misses), "{product}");
    assert_eq!(product["requests"], requests, "{product}");
    assert_eq!(product["hits"], hits, "{product}");
    // serde_json may read a float one unit in the last place off: compare within that.
    let rate = |value: &Value| value.as_f64().expect("a rate");
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12;
    assert!(
        close(rate(&product["hitRate"]), hits as f64 / requests as f64),
        "{product}"
    );
    assert!(
        close(
            rate(&product["maxAchievableHitRate"]),
            (hits + expired_misses) as f64 / requests as f64
        ),
        "{product}"
    );
    assert!(product["p50Ms"].as_f64() > Some(0.0), "{product}");
    assert!(product["p99Ms"].as_f64() >= product["p50Ms"].as_f64());
}

#[tokio::test]
async fn ten_thousand_distinct_operations_leave_the_tables_and_metrics_bounded() {
    let app = TestApp::spawn_on_primary(|_| {}).await;
    let token = app.create_token("insights").await;
    // One operation that clients use most.
    for _ in 0..30 {
        app.gql(PRODUCT, json!({ "id": "3" })).await.assert_ok();
    }
    // 10,000 distinct documents, each asked once, eight at a time.
    let flood = futures::stream::iter(0..10_000u32).map(|n| {
        let app = &app;
        async move {
            let query = format!(
                "query Flood{n} {{ product(id: \"{}\") {{ id }} }}",
                n % 1000 + 1
            );
            app.gql(&query, json!({})).await.assert_ok().clone()
        }
    });
    use futures::StreamExt;
    let answered: Vec<Value> = flood.buffer_unordered(8).collect().await;
    assert_eq!(answered.len(), 10_000);

    let insights = insights(&app, &token).await;
    let capacity = insights["operationCapacity"].as_u64().expect("capacity");
    assert_eq!(capacity, 100);
    assert_eq!(
        insights["trackedOperations"], capacity,
        "{}",
        insights["trackedOperations"]
    );
    assert_eq!(
        insights["totals"]["requests"], 10_030,
        "every request is in the totals"
    );
    let top = &insights["operations"][0];
    assert_eq!(top["name"], "OneProduct", "{top}");
    assert_eq!(top["requests"], 30, "{top}");
    let cache = app.state.cache.as_ref().expect("a cache");
    let held = cache.insights().remembered_bytes();
    assert!(
        held <= catalog_api::cache::insights::REMEMBERED_FILLS_BYTES
            + catalog_api::cache::insights::REMEMBERED_TAGS * 160,
        "the fill and tag records hold {held} bytes"
    );

    // `/metrics`: at most 100 operations, reasons from the fixed set, nothing unbounded.
    let text = metrics_text(&app).await;
    let mut operations = BTreeSet::new();
    let mut reasons_seen = BTreeSet::new();
    for line in text
        .lines()
        .filter(|line| line.starts_with("catalog_cache_operation_"))
    {
        let label = |name: &str| {
            line.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .map(str::to_owned)
        };
        if let (Some(operation), Some(document)) = (label("operation"), label("document")) {
            operations.insert((operation, document));
        }
        if let Some(reason) = label("reason") {
            reasons_seen.insert(reason);
        }
    }
    assert_eq!(operations.len(), 100, "tracked operations in /metrics");
    let allowed: BTreeSet<String> = catalog_api::cache::insights::MissReason::ALL
        .iter()
        .map(|reason| reason.as_str().to_owned())
        .collect();
    assert!(reasons_seen.is_subset(&allowed), "{reasons_seen:?}");
    // Operation labels themselves stay within `operation_label`'s bound (200 names + 2).
    let names: BTreeSet<&String> = operations.iter().map(|(name, _)| name).collect();
    assert!(names.len() <= 202, "{}", names.len());
}

#[tokio::test]
async fn cache_insights_needs_a_token_and_a_sane_first() {
    let app = TestApp::spawn().await;
    let anonymous = app.gql(INSIGHTS, json!({ "first": 5 })).await;
    anonymous.assert_error("UNAUTHENTICATED");
    assert!(anonymous.data().is_null(), "{}", anonymous.body);
    let token = app.create_token("insights").await;
    for first in [0, 101, -1] {
        app.gql_as(&token, INSIGHTS, json!({ "first": first }))
            .await
            .assert_error("BAD_USER_INPUT");
    }
    // The default is 20; within the bounds the answer holds at most `first` operations.
    for n in 1..=3 {
        let query = format!("query Asked{n} {{ product(id: \"{n}\") {{ id }} }}");
        app.gql(&query, json!({})).await.assert_ok();
    }
    let answer = app.gql_as(&token, INSIGHTS, json!({ "first": 2 })).await;
    let operations = answer.assert_ok()["cacheInsights"]["operations"].clone();
    assert_eq!(operations.as_array().map(Vec::len), Some(2), "{operations}");
}
