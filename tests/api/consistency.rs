//! The reproductions from the consistency review, one test each: identical mutations are
//! never merged, a read sent after a mutation's response never joins an older execution, a
//! Redis restored from an old snapshot never serves what a mutation retired, and a mutation
//! whose invalidation is delayed answers only once it landed. The randomized checker
//! (`checker.rs`) covers the same promises under load and faults.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::helpers::{PRODUCT_BY_ID, TestApp, eventually, test_config};
use crate::support::redis_process::RedisProcess;

const CREATE_PRODUCT: &str =
    "mutation Create($input: CreateProductInput!) { createProduct(input: $input) { id } }";
const DELETE_PRODUCT: &str = "mutation Delete($id: ID!) { deleteProduct(id: $id) }";
const DASHBOARD: &str = "query Dashboard { dashboardStats { totalProducts categoriesCount } }";
const UPDATE_PRICE: &str = "mutation Update($id: ID!, $price: Decimal!) { updateProduct(id: $id, input: { price: $price }) { id price } }";

async fn product_rows(app: &TestApp) -> u64 {
    use sea_orm::{EntityTrait, PaginatorTrait};
    catalog_api::entities::product::Entity::find()
        .count(&app.state.db)
        .await
        .expect("count products")
}

#[tokio::test]
async fn identical_concurrent_mutations_each_take_effect_once() {
    let app = TestApp::spawn().await;
    let tokens = [app.create_token("one").await, app.create_token("two").await];
    let before = product_rows(&app).await;
    let input = json!({ "input": { "name": "Twin", "price": "1.00", "categoryId": "1" } });
    let creates = (0..40).map(|i| app.gql_as(&tokens[i % 2], CREATE_PRODUCT, input.clone()));
    let responses = futures::future::join_all(creates).await;
    let mut ids: Vec<String> = responses
        .iter()
        .map(|response| {
            response.assert_ok()["createProduct"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 40, "40 creates answered 40 distinct products");
    assert_eq!(product_rows(&app).await, before + 40);

    let deletes = (0..20).map(|i| app.gql_as(&tokens[i % 2], DELETE_PRODUCT, json!({ "id": "7" })));
    let responses = futures::future::join_all(deletes).await;
    let succeeded = responses
        .iter()
        .filter(|response| response.body.get("errors").is_none())
        .count();
    assert_eq!(succeeded, 1, "exactly one of 20 identical deletes succeeds");
    for response in responses
        .iter()
        .filter(|response| response.body.get("errors").is_some())
    {
        response.assert_error("NOT_FOUND");
    }
}

#[tokio::test]
async fn a_read_sent_after_a_mutation_never_joins_an_execution_that_started_before_it() {
    // Every fill is held back 1.5 s after its execution, so an old execution is still in
    // flight when the mutation answers.
    let app = TestApp::spawn_with(|config| config.fault_fill_delay_ms = 1_500).await;
    let token = app.create_token("writer").await;
    // Learn the document's policy first, so the next reads are ordinary misses.
    app.gql(PRODUCT_BY_ID, json!({ "id": "41" }))
        .await
        .assert_ok();

    let early = app.gql(PRODUCT_BY_ID, json!({ "id": "42" }));
    let late = async {
        // The early read's execution has started when its flight is registered.
        assert!(
            eventually(Duration::from_secs(5), || async {
                app.state
                    .cache
                    .as_ref()
                    .is_none_or(|cache| cache.in_flight() > 0)
            })
            .await
        );
        app.gql_as(&token, UPDATE_PRICE, json!({ "id": "42", "price": "3.00" }))
            .await
            .assert_ok();
        app.gql(PRODUCT_BY_ID, json!({ "id": "42" })).await
    };
    let (_, after) = tokio::join!(early, late);
    assert_eq!(
        after.assert_ok()["product"]["price"],
        "3.00",
        "a read sent after the mutation's response reflects it"
    );
}

async fn spawn_on(redis: &RedisProcess, first: Option<&TestApp>) -> TestApp {
    spawn_configured_on(redis, first, |_| {}).await
}

/// `spawn_on`, with `configure` applied last.
async fn spawn_configured_on(
    redis: &RedisProcess,
    first: Option<&TestApp>,
    configure: impl FnOnce(&mut catalog_api::Config),
) -> TestApp {
    let (mut config, files) = match first {
        Some(first) => (first.config.clone(), None),
        None => test_config().await,
    };
    config.bind = "127.0.0.1:0".parse().expect("address");
    config.redis_url = Some(redis.url());
    config.redis_command_timeout_ms = 100;
    config.redis_connect_timeout_ms = 200;
    configure(&mut config);
    let seed = first.is_none().then_some(catalog_api::db::seed::SeedPlan {
        categories: 10,
        products: 1000,
    });
    TestApp::start(config, files, seed).await
}

/// Two instances on `redis`, a writer's token, and product 42 cached by the reader.
async fn writer_and_cached_reader(redis: &RedisProcess) -> (TestApp, TestApp, String) {
    let writer = spawn_on(redis, None).await;
    let reader = spawn_on(redis, Some(&writer)).await;
    let token = writer.create_token("writer").await;
    price_of(&reader, "42").await;
    assert_eq!(price_of(&reader, "42").await.1, "HIT");
    (writer, reader, token)
}

/// The status and `X-Cache` of a private query.
async fn dashboard(app: &TestApp, token: &str) -> (u16, String) {
    let response = app.gql_as(token, DASHBOARD, json!({})).await;
    (response.status.as_u16(), response.x_cache().to_owned())
}

async fn price_of(app: &TestApp, id: &str) -> (Value, String) {
    let response = app.gql(PRODUCT_BY_ID, json!({ "id": id })).await;
    (
        response.assert_ok()["product"]["price"].clone(),
        response.x_cache().to_owned(),
    )
}

#[tokio::test]
async fn a_private_hit_is_one_plain_read_and_revoking_its_token_retires_it_on_every_instance() {
    let Some(redis) = RedisProcess::start().await else {
        return;
    };
    let (writer, reader, token) = writer_and_cached_reader(&redis).await;
    dashboard(&reader, &token).await;
    assert_eq!(dashboard(&reader, &token).await, (200, "HIT".to_owned()));

    // The private entry carries its owner's token tag, so its freshness vouches for the token:
    // 20 hits are 20 MGETs, with no read of the token's cached validation (that would be 40).
    redis.reset_command_stats().await.expect("RESETSTAT");
    for _ in 0..20 {
        assert_eq!(dashboard(&reader, &token).await, (200, "HIT".to_owned()));
    }
    let reads = redis.command_calls("mget").await.expect("INFO");
    assert!(
        (20..30).contains(&reads),
        "{reads} MGETs for 20 private hits"
    );
    assert!(redis.command_calls("evalsha").await.expect("INFO") <= 2);

    // Revoked through the other instance, as `catalog-api token revoke` does with REDIS_URL:
    // the reader refuses the token on its very next request, cached private result included.
    let hash = catalog_api::auth::hash_token(&token);
    let record = catalog_api::auth::find_active(&writer.state.db, &hash)
        .await
        .expect("read the token")
        .expect("the token is active");
    catalog_api::auth::revoke(&writer.state.db, record.id)
        .await
        .expect("revoke");
    let cache = writer.state.cache.as_ref().expect("the cache is on");
    cache.forget_token(&hash).await.expect("forget the token");
    assert_eq!(
        dashboard(&reader, &token).await.0,
        401,
        "the revoked token is refused"
    );
}

#[tokio::test]
async fn a_private_entry_lives_no_longer_than_the_validation_it_stands_for() {
    let Some(redis) = RedisProcess::start().await else {
        return;
    };
    let app = spawn_configured_on(&redis, None, |config| config.token_cache_secs = 1).await;
    let token = app.create_token("short-lived validations").await;
    dashboard(&app, &token).await;
    assert_eq!(dashboard(&app, &token).await, (200, "HIT".to_owned()));
    // `dashboardStats` may be cached 1,800 s, but its entry answers without a token lookup,
    // so it expires with the 1 s validation it stands for.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(dashboard(&app, &token).await, (200, "MISS".to_owned()));
}

#[tokio::test]
async fn a_redis_restored_from_an_old_snapshot_never_serves_what_a_mutation_retired() {
    let Some(mut redis) = RedisProcess::start_persistent().await else {
        return;
    };
    let app = spawn_on(&redis, None).await;
    let token = app.create_token("writer").await;
    price_of(&app, "42").await;
    assert_eq!(price_of(&app, "42").await.1, "HIT");
    redis.save().await.expect("SAVE");
    app.gql_as(&token, UPDATE_PRICE, json!({ "id": "42", "price": "7.77" }))
        .await
        .assert_ok();

    // The snapshot holds the old entry and not the invalidation that retired it.
    redis.restart_from_snapshot().await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        let (price, _) = price_of(&app, "42").await;
        assert_eq!(price, "7.77", "never the price from before the mutation");
    }
    assert!(app.metric("catalog_cache_epochs").await >= 1.0);
    assert!(app.metric("catalog_cache_unprovable").await >= 1.0);
    // Caching resumes in the new epoch.
    assert!(
        eventually(Duration::from_secs(5), || async {
            price_of(&app, "42").await.1 == "HIT"
        })
        .await
    );
}

#[tokio::test]
async fn a_mutation_whose_invalidation_is_delayed_answers_only_once_it_landed() {
    let Some(redis) = RedisProcess::start().await else {
        return;
    };
    let (writer, reader, token) = writer_and_cached_reader(&redis).await;

    // Redis stalls for 300 ms, three command timeouts: the writer's invalidation fails
    // at first and is retried; its response must wait for it.
    redis.pause();
    let resume = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        redis.resume();
    };
    let update = writer.gql_as(&token, UPDATE_PRICE, json!({ "id": "42", "price": "5.55" }));
    let (_, update) = tokio::join!(resume, update);
    update.assert_ok();
    let (price, _) = price_of(&reader, "42").await;
    assert_eq!(
        price, "5.55",
        "the other instance reads the new price at once"
    );
}

#[tokio::test]
async fn a_hit_on_a_known_entry_is_one_plain_read_and_a_retired_one_is_never_served() {
    let Some(redis) = RedisProcess::start().await else {
        return;
    };
    let (writer, reader, token) = writer_and_cached_reader(&redis).await;

    // The reader filled the entry, so it knows its tags: 20 hits are 20 MGETs, no script.
    redis.reset_command_stats().await.expect("RESETSTAT");
    for _ in 0..20 {
        assert_eq!(price_of(&reader, "42").await.1, "HIT");
    }
    // (The monitor's background flush may run a script meanwhile; a lookup script per hit
    // would be 20.)
    let scripts = redis.command_calls("evalsha").await.expect("INFO");
    assert!(scripts <= 2, "{scripts} scripts for 20 hits");
    assert!(redis.command_calls("mget").await.expect("INFO") >= 20);

    // Retired by the other instance's mutation: the plain read sees the stamp and misses.
    writer
        .gql_as(&token, UPDATE_PRICE, json!({ "id": "42", "price": "6.66" }))
        .await
        .assert_ok();
    let (price, cache) = price_of(&reader, "42").await;
    assert_eq!((price, cache.as_str()), (json!("6.66"), "MISS"));
    assert_eq!(price_of(&reader, "42").await.1, "HIT");
}
