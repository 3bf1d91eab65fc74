//! Stale-while-revalidate and stale-if-error at the origin: an entry whose TTL ran out but
//! that no mutation invalidated answers within its window (and says so in `X-Cache`,
//! `Cache-Status` and `Cache-Control`), one refill replaces it, and an invalidated entry is
//! never served stale. TTLs are capped to a second or two (`CATALOG_CACHE_MAX_TTL_SECS`), and
//! the tests sleep only to let one run out.

use std::time::{Duration, Instant};

use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

use crate::support::helpers::{GqlResponse, PRODUCT_BY_ID, TestApp, eventually};

const UPDATE_NAME: &str = "mutation Rename($id: ID!, $name: String!) { updateProduct(id: $id, input: { name: $name }) { id name } }";
const TTL: Duration = Duration::from_secs(1);

/// Lets an entry filled at `filled` run past its freshness (the one kind of sleep allowed).
async fn let_the_ttl_run_out(filled: Instant) {
    tokio::time::sleep_until((filled + TTL + Duration::from_millis(100)).into()).await;
}

fn name_of(response: &GqlResponse) -> Value {
    response.assert_ok()["product"]["name"].clone()
}

/// Renames a product through the API: its entries are invalidated before the answer.
async fn rename(app: &TestApp, token: &str, id: &str, name: &str) -> GqlResponse {
    let response = app
        .gql_as(token, UPDATE_NAME, json!({ "id": id, "name": name }))
        .await;
    response.assert_ok();
    response
}

/// Renames a product in the database behind the cache's back: no invalidation, so a cached
/// entry of it stays unretired (a change the cache learns of only by refilling).
async fn rename_behind_the_cache(app: &TestApp, id: u32, name: &str) {
    app.state
        .db
        .execute_unprepared(&format!(
            "UPDATE product SET name = '{name}' WHERE id = {id}"
        ))
        .await
        .expect("rename in the database");
}

fn assert_stale(response: &GqlResponse, detail: &str) {
    assert_eq!(response.x_cache(), "STALE", "{:?}", response.headers);
    let status = response.header("cache-status").expect("Cache-Status");
    assert!(
        status.starts_with("catalog-api; fwd=stale; ttl=-")
            && status.ends_with(&format!("; detail={detail}")),
        "Cache-Status: {status}"
    );
}

#[tokio::test]
async fn an_expired_entry_is_served_stale_while_one_refill_replaces_it() {
    let app = TestApp::spawn_on_primary(|config| {
        config.cache_max_ttl_secs = TTL.as_secs();
        config.cache_stale_while_revalidate_secs = 30;
    })
    .await;
    let variables = json!({ "id": "11" });
    let first = app.gql(PRODUCT_BY_ID, variables.clone()).await;
    let filled = Instant::now();
    assert_eq!(first.x_cache(), "MISS");
    assert_eq!(
        first.header("cache-status"),
        Some("catalog-api; fwd=uri-miss; stored")
    );
    assert_eq!(
        first.header("cache-control"),
        Some("public, max-age=0, must-revalidate, stale-while-revalidate=30")
    );
    let old_name = name_of(&first);
    let hit = app.gql(PRODUCT_BY_ID, variables.clone()).await;
    assert_eq!(hit.x_cache(), "HIT");
    assert_eq!(hit.header("cache-status"), Some("catalog-api; hit; ttl=0"));

    rename_behind_the_cache(&app, 11, "Renamed behind the cache").await;
    let_the_ttl_run_out(filled).await;

    // Concurrent requests for the expired entry all get it at once; one refill runs.
    let before = app.statements();
    let stale =
        futures::future::join_all((0..12).map(|_| app.gql(PRODUCT_BY_ID, variables.clone()))).await;
    for response in &stale {
        assert_stale(response, "stale-while-revalidate");
        assert_eq!(name_of(response), old_name);
        assert_eq!(
            response.header("cache-control"),
            Some("public, max-age=0, must-revalidate, stale-while-revalidate=30")
        );
    }
    let refreshed = eventually(Duration::from_secs(5), || async {
        let response = app.gql(PRODUCT_BY_ID, variables.clone()).await;
        response.x_cache() == "HIT" && name_of(&response) == "Renamed behind the cache"
    })
    .await;
    assert!(refreshed, "the refill did not replace the stale entry");
    // One execution of the query (the product, then its category through the DataLoader).
    assert_eq!(app.statements() - before, 2, "exactly one refill ran");
    assert!(
        app.metric("catalog_cache_stale_while_revalidate_total")
            .await
            >= 12.0
    );
}

#[tokio::test]
async fn an_entry_a_mutation_invalidated_is_never_served_stale() {
    let app = TestApp::spawn_with(|config| {
        config.cache_max_ttl_secs = TTL.as_secs();
        config.cache_stale_while_revalidate_secs = 30;
        config.cache_stale_if_error_secs = 30;
    })
    .await;
    let token = app.create_token("writer").await;
    for id in ["12", "13"] {
        app.gql(PRODUCT_BY_ID, json!({ "id": id }))
            .await
            .assert_ok();
    }
    let filled = Instant::now();
    // Invalidated while fresh, then expired: the entry is retired, not stale.
    rename(&app, &token, "12", "Renamed while fresh").await;
    let_the_ttl_run_out(filled).await;
    // Expired first, then invalidated: within both windows, still never stale.
    rename(&app, &token, "13", "Renamed once expired").await;
    for (id, name) in [
        ("12", "Renamed while fresh"),
        ("13", "Renamed once expired"),
    ] {
        let read = app.gql(PRODUCT_BY_ID, json!({ "id": id })).await;
        assert_eq!(read.x_cache(), "MISS", "product {id}: {:?}", read.headers);
        assert_eq!(name_of(&read), name, "product {id}");
    }
}

#[tokio::test]
async fn a_request_whose_deadline_passes_gets_an_expired_entry_under_stale_if_error() {
    // Every execution is held back past the request's deadline (the fault fill delay): the
    // "times out" case, which needs no database cut and so runs on SQLite too. The first
    // request times out while its execution goes on and fills the cache.
    let app = TestApp::spawn_with(|config| {
        config.cache_max_ttl_secs = TTL.as_secs();
        config.cache_stale_if_error_secs = 30;
        config.request_timeout_ms = 400;
        config.fault_fill_delay_ms = 1_000;
    })
    .await;
    let variables = json!({ "id": "14" });
    app.gql(PRODUCT_BY_ID, variables.clone())
        .await
        .assert_error("TIMEOUT");
    let hit = eventually(Duration::from_secs(5), || async {
        app.gql(PRODUCT_BY_ID, variables.clone()).await.x_cache() == "HIT"
    })
    .await;
    assert!(hit, "the timed-out execution did not fill the cache");
    let_the_ttl_run_out(Instant::now()).await;

    let stale = app.gql(PRODUCT_BY_ID, variables.clone()).await;
    assert_stale(&stale, "stale-if-error");
    assert_eq!(stale.status, 200);
    assert_eq!(name_of(&stale), "Product 000014");
    assert_eq!(
        stale.header("cache-control"),
        Some("public, max-age=0, must-revalidate, stale-if-error=30")
    );
    assert!(app.metric("catalog_cache_stale_if_error_total").await >= 1.0);
}

#[tokio::test]
async fn with_the_database_cut_an_expired_entry_answers_within_the_stale_if_error_window_only() {
    if std::env::var("CATALOG_TEST_DATABASE_URL").is_err() {
        println!("skipped: the database cut needs PostgreSQL (set CATALOG_TEST_DATABASE_URL)");
        return;
    }
    const WINDOW: Duration = Duration::from_secs(3);
    let (app, proxy) = TestApp::spawn_behind_database_proxy(|config| {
        config.db_acquire_timeout_ms = 500;
        config.cache_max_ttl_secs = TTL.as_secs();
        config.cache_stale_if_error_secs = WINDOW.as_secs();
    })
    .await;
    let token = app.create_token("writer").await;
    let cached = app.gql(PRODUCT_BY_ID, json!({ "id": "15" })).await;
    app.gql(PRODUCT_BY_ID, json!({ "id": "16" }))
        .await
        .assert_ok();
    let filled = Instant::now();
    rename(&app, &token, "16", "Renamed before the cut").await;

    proxy.cut();
    let_the_ttl_run_out(filled).await;
    let stale = app.gql(PRODUCT_BY_ID, json!({ "id": "15" })).await;
    assert_stale(&stale, "stale-if-error");
    assert_eq!(name_of(&stale), name_of(&cached));
    // The invalidated entry is not an answer, even with the database away.
    let retired = app.gql(PRODUCT_BY_ID, json!({ "id": "16" })).await;
    retired.assert_error("SERVICE_UNAVAILABLE");
    assert_eq!(retired.header("x-cache"), Some("BYPASS"));

    tokio::time::sleep_until((filled + TTL + WINDOW + Duration::from_millis(200)).into()).await;
    let late = app.gql(PRODUCT_BY_ID, json!({ "id": "15" })).await;
    late.assert_error("SERVICE_UNAVAILABLE");

    proxy.restore();
    let recovered = eventually(Duration::from_secs(10), || async {
        let response = app.gql(PRODUCT_BY_ID, json!({ "id": "16" })).await;
        response.body.get("errors").is_none() && name_of(&response) == "Renamed before the cut"
    })
    .await;
    assert!(recovered, "reads did not recover within 10 s");
}

#[tokio::test]
async fn every_graphql_response_says_what_the_cache_did_and_private_results_get_no_stale_directives()
 {
    let app = TestApp::spawn_with(|config| {
        config.cache_stale_while_revalidate_secs = 30;
        config.cache_stale_if_error_secs = 600;
    })
    .await;
    let token = app.create_token("reader").await;
    let body = json!({ "query": PRODUCT_BY_ID, "variables": { "id": "17" }, "extensions": { "cacheInfo": true } });
    app.post_json(body.clone(), None, &[]).await.assert_ok();
    let hit = app.post_json(body, None, &[]).await;
    let status = hit.header("cache-status").expect("Cache-Status").to_owned();
    assert!(
        status.starts_with("catalog-api; hit; ttl=59"),
        "a 600 s entry just filled: {status}"
    );
    assert_eq!(hit.body["extensions"]["cache"]["cacheStatus"], status);
    assert_eq!(
        hit.header("cache-control"),
        Some("public, max-age=0, must-revalidate, stale-while-revalidate=30, stale-if-error=600")
    );

    let private = app
        .gql_as(&token, "{ dashboardStats { totalProducts } }", json!({}))
        .await;
    private.assert_ok();
    assert_eq!(private.header("cache-control"), Some("private, no-store"));
    assert_eq!(
        private.header("cache-status"),
        Some("catalog-api; fwd=uri-miss; stored")
    );

    let mutation = rename(&app, &token, "17", "Renamed").await;
    assert_eq!(
        mutation.header("cache-status"),
        Some("catalog-api; fwd=bypass")
    );
    assert_eq!(mutation.header("cache-control"), Some("no-store"));

    // Answers the cache never saw: a body that is not JSON, a bad token.
    let not_json = app
        .client
        .post(app.url("/graphql"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .expect("request");
    assert_eq!(not_json.status(), 400);
    assert_eq!(
        not_json
            .headers()
            .get("cache-status")
            .map(|value| value.as_bytes()),
        Some(&b"catalog-api; fwd=bypass"[..])
    );
    let refused = app
        .gql_as("not-a-token", PRODUCT_BY_ID, json!({ "id": "1" }))
        .await;
    assert_eq!(
        refused.header("cache-status"),
        Some("catalog-api; fwd=bypass")
    );

    let batch = app
        .post_json(
            json!([
                { "query": PRODUCT_BY_ID, "variables": { "id": "17" } },
                { "query": PRODUCT_BY_ID, "variables": { "id": "17" } }
            ]),
            None,
            &[],
        )
        .await;
    assert_eq!(
        batch.header("cache-status"),
        Some("catalog-api; fwd=uri-miss")
    );
}

/// Windows per type (`CATALOG_CACHE_STALE_BY_TYPE`): a result holding a type with windows of
/// its own gets them (the smallest when it holds several types), in what the origin serves and
/// in what `Cache-Control` announces.
#[tokio::test]
async fn stale_windows_set_per_type_apply_to_the_results_holding_that_type() {
    let app = TestApp::spawn_on_primary(|config| {
        config.cache_max_ttl_secs = TTL.as_secs();
        config.cache_stale_while_revalidate_secs = 30;
        config.cache_stale_by_type = vec!["Category=0:0".to_owned(), "Product=20:40".to_owned()];
    })
    .await;
    const CATEGORIES: &str = "{ categories { id name } }";
    let product = app.gql(PRODUCT_BY_ID, json!({ "id": "12" })).await;
    let categories = app.gql(CATEGORIES, json!({})).await;
    let filled = Instant::now();
    assert_eq!(
        product.header("cache-control"),
        Some("public, max-age=0, must-revalidate"),
        "a product with its category: the category's windows (off) are the smaller"
    );
    assert_eq!(
        categories.header("cache-control"),
        Some("public, max-age=0, must-revalidate"),
        "categories: no stale windows"
    );
    let_the_ttl_run_out(filled).await;
    let categories = app.gql(CATEGORIES, json!({})).await;
    assert_eq!(
        categories.x_cache(),
        "MISS",
        "an expired category list is not served stale"
    );
    let product = app.gql(PRODUCT_BY_ID, json!({ "id": "12" })).await;
    assert_eq!(
        product.x_cache(),
        "MISS",
        "its category's windows are off: the smallest wins"
    );
    let only_products = "query ($id: ID!) { product(id: $id) { id name price } }";
    let fresh = app.gql(only_products, json!({ "id": "13" })).await;
    let filled = Instant::now();
    assert_eq!(
        fresh.header("cache-control"),
        Some("public, max-age=0, must-revalidate, stale-while-revalidate=20, stale-if-error=40"),
        "products alone: the product windows"
    );
    let_the_ttl_run_out(filled).await;
    let stale = app.gql(only_products, json!({ "id": "13" })).await;
    assert_stale(&stale, "stale-while-revalidate");
}
