//! The response cache, proven with real requests: repeated queries cost no SQL, every
//! mutation invalidates exactly what it changed, private results stay with their token,
//! concurrent misses execute once, and a Redis outage never fails a request.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::helpers::{
    GqlResponse, PRODUCT_BY_ID, TestApp, eventually, seeded_price, test_config,
};
use crate::support::redis_process::RedisProcess;

const CATEGORY_LIST: &str = "query CategoryProducts($id: ID!) { products(filter: { categoryId: $id }, first: 100) { totalCount edges { node { id name price } } } }";
const ALL_PRODUCTS: &str = "query AllProducts { products(first: 5, orderBy: PRICE_DESC) { totalCount edges { node { id price } } } }";
const SEARCH: &str = "query Search($text: String!) { products(filter: { search: $text }) { totalCount edges { node { id name category { name } } } } }";
const CATEGORY_COUNT: &str =
    "query CategoryCount($id: ID!) { category(id: $id) { name productCount } }";
const DASHBOARD: &str =
    "query Dashboard { dashboardStats { totalProducts categoriesCount avgPrice } }";
const UPDATE_PRODUCT: &str = "mutation Update($id: ID!, $input: UpdateProductInput!) { updateProduct(id: $id, input: $input) { id price } }";
const CREATE_PRODUCT: &str = "mutation Create($input: CreateProductInput!) { createProduct(input: $input) { id name category { id } } }";

/// Sends the same query twice; the second answer must come from the cache.
async fn cached(app: &TestApp, query: &str, variables: Value) -> GqlResponse {
    let first = app.gql(query, variables.clone()).await;
    first.assert_ok();
    let (second, statements) = app.count_statements(app.gql(query, variables)).await;
    assert_eq!(second.x_cache(), "HIT", "second read of {query} should hit");
    assert_eq!(statements, 0, "a cache hit executes no SQL");
    assert_eq!(second.body, first.body);
    second
}

#[tokio::test]
async fn a_repeated_query_is_answered_from_the_cache_without_sql() {
    let app = TestApp::spawn_on_primary(|_| {}).await;
    let (first, statements) = app
        .count_statements(app.gql(PRODUCT_BY_ID, json!({ "id": "42" })))
        .await;
    assert_eq!(first.x_cache(), "MISS");
    assert_eq!(statements, 2);
    cached(&app, PRODUCT_BY_ID, json!({ "id": "42" })).await;
}

#[tokio::test]
async fn variable_key_order_does_not_change_the_cache_key() {
    let app = TestApp::spawn().await;
    let query = "query P($filter: ProductFilter, $first: Int) { products(filter: $filter, first: $first) { edges { node { id } } } }";
    app.gql(
        query,
        json!({ "filter": { "categoryId": "7", "minPrice": "10" }, "first": 3 }),
    )
    .await
    .assert_ok();
    let reordered = app
        .gql(
            query,
            json!({ "first": 3, "filter": { "minPrice": "10", "categoryId": "7" } }),
        )
        .await;
    assert_eq!(reordered.x_cache(), "HIT");
    let different = app
        .gql(
            query,
            json!({ "first": 4, "filter": { "minPrice": "10", "categoryId": "7" } }),
        )
        .await;
    assert_eq!(different.x_cache(), "MISS");
}

#[tokio::test]
async fn updating_a_product_invalidates_its_lookups_lists_and_stats_but_not_other_categories() {
    let app = TestApp::spawn().await;
    let token = app.create_token("writer").await;
    // Product 42 is in category 3; category 5 is unrelated.
    cached(&app, PRODUCT_BY_ID, json!({ "id": "42" })).await;
    cached(&app, CATEGORY_LIST, json!({ "id": "3" })).await;
    cached(&app, CATEGORY_LIST, json!({ "id": "5" })).await;
    cached(&app, ALL_PRODUCTS, json!({})).await;
    app.gql_as(&token, DASHBOARD, json!({})).await.assert_ok();

    let update = app
        .gql_as(
            &token,
            UPDATE_PRODUCT,
            json!({ "id": "42", "input": { "price": "99999.99" } }),
        )
        .await;
    assert_eq!(update.assert_ok()["updateProduct"]["price"], "99999.99");

    let product = app.gql(PRODUCT_BY_ID, json!({ "id": "42" })).await;
    assert_eq!(product.x_cache(), "MISS");
    assert_eq!(product.assert_ok()["product"]["price"], "99999.99");
    let list = app.gql(CATEGORY_LIST, json!({ "id": "3" })).await;
    assert_eq!(list.x_cache(), "MISS");
    let listed = list.assert_ok()["products"]["edges"]
        .as_array()
        .expect("edges")
        .clone();
    assert!(
        listed
            .iter()
            .any(|edge| edge["node"]["id"] == "42" && edge["node"]["price"] == "99999.99")
    );
    let top = app.gql(ALL_PRODUCTS, json!({})).await;
    assert_eq!(
        top.assert_ok()["products"]["edges"][0]["node"]["id"],
        "42",
        "the most expensive product now"
    );
    let dashboard = app.gql_as(&token, DASHBOARD, json!({})).await;
    assert_eq!(dashboard.x_cache(), "MISS", "stats depend on every price");

    let untouched = app.gql(CATEGORY_LIST, json!({ "id": "5" })).await;
    assert_eq!(
        untouched.x_cache(),
        "HIT",
        "a list of another category stays cached"
    );
}

#[tokio::test]
async fn creating_a_product_invalidates_every_list_it_enters_and_a_cached_null() {
    let app = TestApp::spawn().await;
    let token = app.create_token("writer").await;
    let missing = app.gql(PRODUCT_BY_ID, json!({ "id": "1001" })).await;
    assert_eq!(missing.assert_ok()["product"], Value::Null);
    cached(&app, PRODUCT_BY_ID, json!({ "id": "1001" })).await;
    let before_category = cached(&app, CATEGORY_LIST, json!({ "id": "7" })).await;
    let before_all = cached(&app, ALL_PRODUCTS, json!({})).await;
    let before_search = cached(&app, SEARCH, json!({ "text": "lamp" })).await;
    let before_count = cached(&app, CATEGORY_COUNT, json!({ "id": "7" })).await;
    let before_stats = app.gql_as(&token, DASHBOARD, json!({})).await;

    let created = app
        .gql_as(
            &token,
            CREATE_PRODUCT,
            json!({ "input": { "name": "Desk Lamp", "price": "25.00", "categoryId": "7" } }),
        )
        .await;
    assert_eq!(created.assert_ok()["createProduct"]["id"], "1001");

    let total = |response: &GqlResponse| {
        response.data()["products"]["totalCount"]
            .as_i64()
            .expect("totalCount")
    };
    assert_eq!(
        total(&app.gql(CATEGORY_LIST, json!({ "id": "7" })).await),
        total(&before_category) + 1
    );
    assert_eq!(
        total(&app.gql(ALL_PRODUCTS, json!({})).await),
        total(&before_all) + 1
    );
    assert_eq!(
        total(&app.gql(SEARCH, json!({ "text": "lamp" })).await),
        total(&before_search) + 1
    );
    let count = app.gql(CATEGORY_COUNT, json!({ "id": "7" })).await;
    assert_eq!(
        count.data()["category"]["productCount"].as_i64(),
        before_count.data()["category"]["productCount"]
            .as_i64()
            .map(|count| count + 1)
    );
    let stats = app.gql_as(&token, DASHBOARD, json!({})).await;
    assert_eq!(
        stats.data()["dashboardStats"]["totalProducts"].as_i64(),
        before_stats.data()["dashboardStats"]["totalProducts"]
            .as_i64()
            .map(|count| count + 1)
    );
    let found = app.gql(PRODUCT_BY_ID, json!({ "id": "1001" })).await;
    assert_eq!(
        found.assert_ok()["product"]["name"],
        "Desk Lamp",
        "the cached null is gone"
    );
}

#[tokio::test]
async fn moving_and_deleting_products_invalidates_both_categories() {
    let app = TestApp::spawn().await;
    let token = app.create_token("writer").await;
    let total = |response: &GqlResponse| {
        response.data()["products"]["totalCount"]
            .as_i64()
            .expect("totalCount")
    };
    let three = cached(&app, CATEGORY_LIST, json!({ "id": "3" })).await;
    let four = cached(&app, CATEGORY_LIST, json!({ "id": "4" })).await;

    app.gql_as(
        &token,
        UPDATE_PRODUCT,
        json!({ "id": "42", "input": { "categoryId": "4" } }),
    )
    .await
    .assert_ok();
    assert_eq!(
        total(&app.gql(CATEGORY_LIST, json!({ "id": "3" })).await),
        total(&three) - 1
    );
    assert_eq!(
        total(&app.gql(CATEGORY_LIST, json!({ "id": "4" })).await),
        total(&four) + 1
    );

    cached(&app, CATEGORY_LIST, json!({ "id": "4" })).await;
    cached(&app, PRODUCT_BY_ID, json!({ "id": "42" })).await;
    app.gql_as(&token, "mutation { deleteProduct(id: \"42\") }", json!({}))
        .await
        .assert_ok();
    assert_eq!(
        total(&app.gql(CATEGORY_LIST, json!({ "id": "4" })).await),
        total(&four)
    );
    assert_eq!(
        app.gql(PRODUCT_BY_ID, json!({ "id": "42" })).await.data()["product"],
        Value::Null
    );
}

#[tokio::test]
async fn bulk_mutations_invalidate_every_product_they_touch() {
    let app = TestApp::spawn().await;
    let token = app.create_token("writer").await;
    cached(&app, PRODUCT_BY_ID, json!({ "id": "1" })).await;
    cached(&app, PRODUCT_BY_ID, json!({ "id": "2" })).await;
    let before = cached(&app, CATEGORY_LIST, json!({ "id": "9" })).await;

    let prices = "mutation { bulkUpdatePrices(updates: [{ id: \"1\", price: \"1.11\" }, { id: \"2\", price: \"2.22\" }]) { id } }";
    app.gql_as(&token, prices, json!({})).await.assert_ok();
    assert_eq!(
        app.gql(PRODUCT_BY_ID, json!({ "id": "1" })).await.data()["product"]["price"],
        "1.11"
    );
    assert_eq!(
        app.gql(PRODUCT_BY_ID, json!({ "id": "2" })).await.data()["product"]["price"],
        "2.22"
    );

    let create = "mutation { bulkCreateProducts(inputs: [{ name: \"A\", price: \"1\", categoryId: \"9\" }, { name: \"B\", price: \"2\", categoryId: \"9\" }]) { id } }";
    app.gql_as(&token, create, json!({})).await.assert_ok();
    let after = app.gql(CATEGORY_LIST, json!({ "id": "9" })).await;
    assert_eq!(
        after.data()["products"]["totalCount"].as_i64(),
        before.data()["products"]["totalCount"]
            .as_i64()
            .map(|count| count + 2)
    );
}

#[tokio::test]
async fn renaming_a_category_invalidates_nested_names_and_category_search() {
    let app = TestApp::spawn().await;
    let token = app.create_token("writer").await;
    cached(&app, PRODUCT_BY_ID, json!({ "id": "42" })).await;
    let before = cached(&app, SEARCH, json!({ "text": "garden" })).await;
    assert_eq!(before.data()["products"]["totalCount"], 0);

    let rename = "mutation { updateCategory(id: \"3\", input: { name: \"Garden\" }) { name } }";
    app.gql_as(&token, rename, json!({})).await.assert_ok();
    let product = app.gql(PRODUCT_BY_ID, json!({ "id": "42" })).await;
    assert_eq!(product.data()["product"]["category"]["name"], "Garden");
    let search = app.gql(SEARCH, json!({ "text": "garden" })).await;
    assert_eq!(
        search.data()["products"]["totalCount"],
        100,
        "category 3's products match by category name"
    );
}

#[tokio::test]
async fn private_results_never_reach_another_token_or_an_anonymous_client() {
    let app = TestApp::spawn().await;
    let alice = app.create_token("alice").await;
    let bob = app.create_token("bob").await;
    let first = app.gql_as(&alice, DASHBOARD, json!({})).await;
    first.assert_ok();
    assert_eq!(first.header("cache-control"), Some("private, no-store"));
    assert_eq!(
        app.gql_as(&alice, DASHBOARD, json!({})).await.x_cache(),
        "HIT"
    );

    let for_bob = app.gql_as(&bob, DASHBOARD, json!({})).await;
    for_bob.assert_ok();
    assert_eq!(
        for_bob.x_cache(),
        "MISS",
        "bob's answer is not alice's entry"
    );
    let anonymous = app.gql(DASHBOARD, json!({})).await;
    anonymous.assert_error("UNAUTHENTICATED");
    assert_ne!(anonymous.x_cache(), "HIT");
    assert_eq!(anonymous.data(), &Value::Null);
}

#[tokio::test]
async fn a_revoked_token_cannot_read_its_cached_private_result() {
    let app = TestApp::spawn().await;
    let (token, record) = catalog_api::auth::create(&app.state.db, "short-lived")
        .await
        .expect("token");
    app.gql_as(&token, DASHBOARD, json!({})).await.assert_ok();
    assert_eq!(
        app.gql_as(&token, DASHBOARD, json!({})).await.x_cache(),
        "HIT"
    );
    let hash = catalog_api::auth::revoke(&app.state.db, record.id)
        .await
        .expect("revoke");
    if let Some(cache) = &app.state.cache {
        cache
            .forget_token(&hash)
            .await
            .expect("forget the cached validation");
    }
    let refused = app.gql_as(&token, DASHBOARD, json!({})).await;
    assert_eq!(refused.status, 401);
    refused.assert_error("UNAUTHENTICATED");
}

#[tokio::test]
async fn results_with_errors_and_mutations_are_never_cached() {
    let app = TestApp::spawn().await;
    let token = app.create_token("writer").await;
    let broken = "query { products(first: 500) { totalCount } }";
    app.gql(broken, json!({}))
        .await
        .assert_error("BAD_USER_INPUT");
    let again = app.gql(broken, json!({})).await;
    assert_ne!(again.x_cache(), "HIT");
    let mutation = app
        .gql_as(
            &token,
            "mutation { createCategory(input: { name: \"Toys\" }) { id } }",
            json!({}),
        )
        .await;
    mutation.assert_ok();
    assert_eq!(mutation.x_cache(), "BYPASS");
    assert_eq!(mutation.header("cache-control"), Some("no-store"));
}

#[tokio::test]
async fn a_fill_that_started_before_a_mutation_never_outlives_it() {
    // The fill of the first read is held back for 400 ms after it read the database, long
    // enough for a mutation to commit and invalidate in between.
    let app = TestApp::spawn_with(|config| config.fault_fill_delay_ms = 400).await;
    let token = app.create_token("writer").await;
    let before = app.statements();
    let slow_read = {
        let client = app.client.clone();
        let url = app.url("/graphql");
        tokio::spawn(async move {
            client
                .post(url)
                .json(&json!({ "query": PRODUCT_BY_ID, "variables": { "id": "42" } }))
                .send()
                .await
                .expect("read")
                .json::<Value>()
                .await
                .expect("json")
        })
    };
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.statements() >= before + 2
        })
        .await,
        "the read executed"
    );
    app.gql_as(
        &token,
        UPDATE_PRODUCT,
        json!({ "id": "42", "input": { "price": "7.77" } }),
    )
    .await
    .assert_ok();
    let stale = slow_read.await.expect("the slow read finishes");
    assert_eq!(
        stale["data"]["product"]["price"],
        seeded_price(42),
        "it read before the commit"
    );

    let after = app.gql(PRODUCT_BY_ID, json!({ "id": "42" })).await;
    assert_eq!(
        after.data()["product"]["price"],
        "7.77",
        "the late fill must not be served"
    );
    assert_eq!(after.x_cache(), "MISS");
}

#[tokio::test]
async fn a_hundred_concurrent_identical_misses_execute_once() {
    let app = TestApp::spawn_on_primary(|_| {}).await;
    let before = app.statements();
    let requests = (0..100).map(|_| app.gql(PRODUCT_BY_ID, json!({ "id": "77" })));
    let responses = futures::future::join_all(requests).await;
    for response in &responses {
        assert_eq!(response.assert_ok()["product"]["name"], "Product 000077");
    }
    assert_eq!(
        app.statements() - before,
        2,
        "one execution: one product lookup, one category lookup"
    );
}

#[tokio::test]
async fn the_cache_can_be_bypassed_only_when_the_server_allows_it() {
    let locked = TestApp::spawn().await;
    locked
        .gql(PRODUCT_BY_ID, json!({ "id": "5" }))
        .await
        .assert_ok();
    let ignored = locked
        .post_json(
            json!({ "query": PRODUCT_BY_ID, "variables": { "id": "5" } }),
            None,
            &[("x-bypass-cache", "1")],
        )
        .await;
    assert_eq!(ignored.x_cache(), "HIT", "the header is ignored by default");

    let open = TestApp::spawn_on_primary(|config| config.allow_cache_bypass = true).await;
    open.gql(PRODUCT_BY_ID, json!({ "id": "5" }))
        .await
        .assert_ok();
    let (bypassed, statements) = open
        .count_statements(open.post_json(
            json!({ "query": PRODUCT_BY_ID, "variables": { "id": "5" } }),
            None,
            &[("x-bypass-cache", "1")],
        ))
        .await;
    assert_eq!(bypassed.x_cache(), "BYPASS");
    assert_eq!(statements, 2);
}

#[tokio::test]
async fn clients_can_ask_for_cache_details_in_extensions() {
    let app = TestApp::spawn().await;
    let body = json!({ "query": PRODUCT_BY_ID, "variables": { "id": "8" }, "extensions": { "cacheInfo": true } });
    let miss = app.post_json(body.clone(), None, &[]).await;
    assert_eq!(miss.body["extensions"]["cache"]["status"], "MISS");
    assert_eq!(
        miss.body["extensions"]["cache"]["cacheStatus"],
        "catalog-api; fwd=uri-miss; stored"
    );
    let hit = app.post_json(body, None, &[]).await;
    let cache_status = hit.header("cache-status").expect("Cache-Status");
    assert!(cache_status.starts_with("catalog-api; hit; ttl="));
    assert_eq!(
        hit.body["extensions"]["cache"],
        json!({ "status": "HIT", "maxAge": 600, "scope": "PUBLIC", "cacheStatus": cache_status })
    );
    assert_eq!(hit.data()["product"]["name"], "Product 000008");
}

#[tokio::test]
async fn cache_and_performance_statistics_are_reported_with_a_token() {
    let app = TestApp::spawn().await;
    let token = app.create_token("ops").await;
    for _ in 0..3 {
        app.gql(PRODUCT_BY_ID, json!({ "id": "9" }))
            .await
            .assert_ok();
    }
    let stats = app
        .gql_as(
            &token,
            "{ cacheStats { hits misses total hitRate } }",
            json!({}),
        )
        .await;
    let stats = &stats.assert_ok()["cacheStats"];
    assert!(stats["hits"].as_i64() >= Some(2), "{stats}");
    assert!(stats["misses"].as_i64() >= Some(1), "{stats}");
    assert_eq!(
        stats["total"].as_i64(),
        Some(stats["hits"].as_i64().unwrap_or(0) + stats["misses"].as_i64().unwrap_or(0))
    );
    let performance = app
        .gql_as(
            &token,
            "{ performanceStats(operation: \"ProductById\") { count min max p50 p99 } }",
            json!({}),
        )
        .await;
    let performance = &performance.assert_ok()["performanceStats"];
    assert_eq!(
        performance["count"], 1,
        "only the execution is timed, not the hits"
    );
    assert!(performance["min"].as_f64() <= performance["p99"].as_f64());
    app.gql("{ cacheStats { hits } }", json!({}))
        .await
        .assert_error("UNAUTHENTICATED");
    app.gql_as(
        &token,
        "{ performanceStats(operation: \"Nope\") { count } }",
        json!({}),
    )
    .await
    .assert_error("NOT_FOUND");
}

async fn spawn_on_redis(
    redis: &RedisProcess,
    adjust: impl FnOnce(&mut catalog_api::Config),
) -> TestApp {
    let (mut config, files) = test_config().await;
    config.redis_url = Some(redis.url());
    config.redis_command_timeout_ms = 100;
    config.redis_connect_timeout_ms = 200;
    adjust(&mut config);
    TestApp::start(
        config,
        files,
        Some(catalog_api::db::seed::SeedPlan {
            categories: 10,
            products: 1000,
        }),
    )
    .await
}

#[tokio::test]
async fn requests_keep_succeeding_while_redis_is_down_and_caching_resumes_after() {
    let Some(mut redis) = RedisProcess::start().await else {
        return;
    };
    let app = spawn_on_redis(&redis, |_| {}).await;
    cached(&app, PRODUCT_BY_ID, json!({ "id": "42" })).await;

    redis.kill().await;
    for id in ["42", "43", "44"] {
        let response = app.gql(PRODUCT_BY_ID, json!({ "id": id })).await;
        assert_eq!(
            response.assert_ok()["product"]["name"],
            format!("Product {:06}", id.parse::<u32>().expect("id"))
        );
        assert_eq!(response.x_cache(), "BYPASS");
    }
    redis.restart().await;
    let resumed = eventually(Duration::from_secs(10), || async {
        app.gql(PRODUCT_BY_ID, json!({ "id": "42" }))
            .await
            .x_cache()
            == "HIT"
    })
    .await;
    assert!(resumed, "caching resumes by itself once Redis is back");
}

#[tokio::test]
async fn a_mutation_during_a_redis_stall_is_never_read_stale_afterwards() {
    let Some(redis) = RedisProcess::start().await else {
        return;
    };
    let app = spawn_on_redis(&redis, |_| {}).await;
    let token = app.create_token("writer").await;
    cached(&app, PRODUCT_BY_ID, json!({ "id": "42" })).await;

    redis.pause();
    let started = std::time::Instant::now();
    let update = app
        .gql_as(
            &token,
            UPDATE_PRODUCT,
            json!({ "id": "42", "input": { "price": "3.33" } }),
        )
        .await;
    assert_eq!(
        update.assert_ok()["updateProduct"]["price"],
        "3.33",
        "the write succeeds without the cache"
    );
    let during = app.gql(PRODUCT_BY_ID, json!({ "id": "42" })).await;
    assert_eq!(during.data()["product"]["price"], "3.33");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a stalled Redis costs at most a timeout, not a hang"
    );

    redis.resume();
    for _ in 0..20 {
        let after = app.gql(PRODUCT_BY_ID, json!({ "id": "42" })).await;
        assert_eq!(
            after.data()["product"]["price"],
            "3.33",
            "the entry cached before the stall is never served"
        );
    }
}

#[tokio::test]
async fn two_instances_on_one_redis_never_read_stale_after_a_mutation() {
    let Some(redis) = RedisProcess::start().await else {
        return;
    };
    for local_tier in [false, true] {
        let first = spawn_on_redis(&redis, |config| config.cache_local_tier = local_tier).await;
        let mut config = first.config.clone();
        config.bind = "127.0.0.1:0".parse().expect("address");
        let second = TestApp::start(config, None, None).await;
        let token = first.create_token("writer").await;

        second
            .gql(PRODUCT_BY_ID, json!({ "id": "42" }))
            .await
            .assert_ok();
        assert_eq!(
            second
                .gql(PRODUCT_BY_ID, json!({ "id": "42" }))
                .await
                .x_cache(),
            "HIT"
        );
        let update = first
            .gql_as(
                &token,
                UPDATE_PRODUCT,
                json!({ "id": "42", "input": { "price": "4.44" } }),
            )
            .await;
        update.assert_ok();
        // With or without first tiers, the other instance sees the invalidation at once: the
        // mutation answered only after the second instance's tier had heard it.
        let immediate = second.gql(PRODUCT_BY_ID, json!({ "id": "42" })).await;
        assert_eq!(
            immediate.data()["product"]["price"],
            "4.44",
            "local tier {local_tier}: the second instance must see the new price at once"
        );
        second.stop().await;
        first.stop().await;
    }
}

/// Runs the real binary against `app`'s database and Redis, as an operator would.
async fn catalog_api(app: &TestApp, args: &[&str]) -> std::process::Output {
    crate::support::helpers::run_binary(
        args,
        &[
            ("DATABASE_URL", &app.config.database_url),
            ("REDIS_URL", app.config.redis_url.as_deref().unwrap_or("")),
            ("CATALOG_CACHE_PREFIX", &app.config.cache_prefix),
            ("CATALOG_DEMO_DATA", "false"),
        ],
    )
    .await
}

#[tokio::test]
async fn cache_management_commands_warm_clear_and_report_only_their_prefix() {
    let Some(redis) = RedisProcess::start().await else {
        return;
    };
    let app = spawn_on_redis(&redis, |_| {}).await;
    let client = redis::Client::open(redis.url()).expect("client");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    redis::cmd("SET")
        .arg("another-app:key")
        .arg("keep me")
        .query_async::<()>(&mut connection)
        .await
        .expect("set");

    for id in ["42", "43"] {
        app.gql(PRODUCT_BY_ID, json!({ "id": id }))
            .await
            .assert_ok();
    }
    flush_monitor(&app).await;

    let stats = catalog_api(&app, &["cache", "stats"]).await;
    assert!(
        stats.status.success(),
        "{}",
        String::from_utf8_lossy(&stats.stderr)
    );
    let stats: Value = serde_json::from_slice(&stats.stdout).expect("stats are JSON");
    assert!(stats["prefixKeys"].as_u64() > Some(0), "{stats}");
    assert!(
        stats["redisVersion"]
            .as_str()
            .is_some_and(|version| !version.is_empty())
    );
    assert!(stats["today"]["misses"].as_i64() >= Some(2), "{stats}");

    let cleared = catalog_api(&app, &["cache", "clear"]).await;
    assert!(
        cleared.status.success(),
        "{}",
        String::from_utf8_lossy(&cleared.stderr)
    );
    assert_eq!(
        app.gql(PRODUCT_BY_ID, json!({ "id": "42" }))
            .await
            .x_cache(),
        "MISS",
        "cleared"
    );
    let kept: Option<String> = redis::cmd("GET")
        .arg("another-app:key")
        .query_async(&mut connection)
        .await
        .expect("get");
    assert_eq!(
        kept.as_deref(),
        Some("keep me"),
        "clear never touches another prefix"
    );

    // The ranking was cleared too; record the two operations again, clear the entries only
    // by invalidating, then warm up from the ranking.
    app.gql(PRODUCT_BY_ID, json!({ "id": "43" }))
        .await
        .assert_ok();
    flush_monitor(&app).await;
    let token = app.create_token("writer").await;
    app.gql_as(
        &token,
        UPDATE_PRODUCT,
        json!({ "id": "43", "input": { "name": "Renamed" } }),
    )
    .await
    .assert_ok();
    let warmed = catalog_api(&app, &["cache", "warm-up", "--top", "10"]).await;
    assert!(
        warmed.status.success(),
        "{}",
        String::from_utf8_lossy(&warmed.stderr)
    );
    let after = app.gql(PRODUCT_BY_ID, json!({ "id": "43" })).await;
    assert_eq!(
        after.x_cache(),
        "HIT",
        "warm-up filled the most requested operation"
    );
    assert_eq!(
        after.data()["product"]["name"],
        "Renamed",
        "with fresh data"
    );
}

#[tokio::test]
async fn cache_commands_explain_that_the_in_process_cache_belongs_to_the_server() {
    let app = TestApp::spawn_with(|config| config.redis_url = None).await;
    let output = catalog_api(&app, &["cache", "stats"]).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("error:") && stderr.contains("REDIS_URL"),
        "{stderr}"
    );
}

#[tokio::test]
async fn token_gated_statistics_never_make_a_shared_entry_that_an_anonymous_client_could_read() {
    let app = TestApp::spawn().await;
    let token = app.create_token("ops").await;
    let mixed = "query Mixed { cacheStats { hits } products(first: 1) { totalCount } }";
    let first = app.gql_as(&token, mixed, json!({})).await;
    first.assert_ok();
    assert_eq!(first.header("cache-control"), Some("no-store"));
    assert_eq!(
        app.gql_as(&token, mixed, json!({})).await.x_cache(),
        "BYPASS"
    );
    let anonymous = app.gql(mixed, json!({})).await;
    anonymous.assert_error("UNAUTHENTICATED");
    assert_ne!(anonymous.x_cache(), "HIT");
    assert!(
        anonymous.data().is_null() || anonymous.data()["cacheStats"].is_null(),
        "{}",
        anonymous.body
    );
}

/// Flushes the monitor's counts to the backend. On a loaded machine a Redis command can time
/// out and open the storage guard's breaker for a moment: the flush is retried until it goes
/// through.
async fn flush_monitor(app: &TestApp) {
    let cache = app.state.cache.as_ref().expect("cache");
    let flushed = eventually(Duration::from_secs(10), || async {
        cache.flush_monitor().await.is_ok()
    })
    .await;
    assert!(flushed, "flush the monitor");
}
