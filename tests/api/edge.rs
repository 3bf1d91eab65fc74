//! The cache at the edge: public responses name their tags for CDNs, a committed mutation
//! purges exactly those tags before it answers, and what the edge missed is delivered from
//! the outbox. Proven through a real Varnish with xkey running the shipped VCL, and against
//! local servers that check Fastly's and Cloudflare's documented request shapes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use catalog_api::config::{Config, EdgePurgeBackend};
use parking_lot::Mutex;
use serde_json::{Value, json};

use catalog_api::db::seed::SeedPlan;

use crate::support::helpers::{
    CATEGORIES, GqlResponse, PRODUCTS, TestApp, eventually, test_config,
};
use crate::support::tcp_proxy::TcpProxy;
use crate::support::varnish_process::{VarnishProcess, reserve_port};

const PRODUCT: &str = "query Product($id: ID!) { product(id: $id) { id name price } }";
const CATEGORY_PAGE: &str = "query Page($category: ID!) { products(filter: {categoryId: $category}, first: 100) { totalCount edges { node { id price } } } }";
const ALL_CATEGORIES: &str =
    "{ categories { id products(first: 100) { edges { node { id price } } } } }";
const UPDATE_PRICE: &str = "mutation Price($id: ID!, $price: Decimal!) { updateProduct(id: $id, input: {price: $price}) { id price } }";

/// A server purging a Varnish that runs the shipped VCL in front of it; `None` (the test
/// skips) without Varnish installed.
async fn behind_varnish(adjust: impl FnOnce(&mut Config)) -> Option<(TestApp, VarnishProcess)> {
    let port = reserve_port()?;
    let app = TestApp::spawn_with(|config| {
        config.edge_purge = EdgePurgeBackend::Varnish;
        config.edge_varnish_urls = vec![format!("http://127.0.0.1:{port}")];
        adjust(config);
    })
    .await;
    let varnish = VarnishProcess::start(port, app.address).await;
    Some((app, varnish))
}

/// A query sent as a GET, as a CDN caches it.
async fn get(app: &TestApp, url: String, query: &str, variables: Value) -> GqlResponse {
    let response = app
        .client
        .get(url)
        .query(&[("query", query), ("variables", &variables.to_string())])
        .send()
        .await
        .expect("GET");
    TestApp::read(response).await
}

async fn via_varnish(
    app: &TestApp,
    varnish: &VarnishProcess,
    query: &str,
    variables: Value,
) -> GqlResponse {
    get(app, varnish.url("/graphql"), query, variables).await
}

async fn set_price(app: &TestApp, token: &str, id: u32, price: &str) -> GqlResponse {
    let answer = app
        .gql_as(
            token,
            UPDATE_PRICE,
            json!({ "id": id.to_string(), "price": price }),
        )
        .await;
    answer.assert_ok();
    answer
}

fn purge_state(answer: &GqlResponse) -> &str {
    answer.body["extensions"]["edgePurge"]
        .as_str()
        .unwrap_or("")
}

#[tokio::test]
async fn public_results_name_their_tags_for_cdns_and_private_ones_name_none() {
    let app = TestApp::spawn_with(|config| {
        config.edge_tags = Some(true);
        config.edge_tag_prefix = "shop.".to_owned();
    })
    .await;
    let token = app.create_token("edge").await;
    let product = get(&app, app.url("/graphql"), PRODUCT, json!({ "id": "42" })).await;
    product.assert_ok();
    let keys = product
        .header("surrogate-key")
        .expect("Surrogate-Key")
        .to_owned();
    let tags: Vec<&str> = keys.split(' ').collect();
    assert!(tags.contains(&"shop.Product-42"), "{keys}");
    assert!(tags.contains(&"shop.all"), "{keys}");
    assert_eq!(product.header("cache-tag"), Some(tags.join(",").as_str()));
    // The same tags on a hit as on the miss that stored the entry.
    let hit = get(&app, app.url("/graphql"), PRODUCT, json!({ "id": "42" })).await;
    assert_eq!(hit.x_cache(), "HIT");
    assert_eq!(hit.header("surrogate-key"), Some(keys.as_str()));
    // No purger configured: shared caches revalidate, as before.
    assert_eq!(
        hit.header("cache-control"),
        Some("public, max-age=0, must-revalidate")
    );

    let private = app
        .gql_as(&token, "{ dashboardStats { totalProducts } }", json!({}))
        .await;
    private.assert_ok();
    assert_eq!(private.header("cache-control"), Some("private, no-store"));
    assert_eq!(private.header("surrogate-key"), None);
    assert_eq!(private.header("cache-tag"), None);

    // Off, and by default without an edge to purge: no tags.
    for edge_tags in [Some(false), None] {
        let off = TestApp::spawn_with(|config| config.edge_tags = edge_tags).await;
        let untagged = get(&off, off.url("/graphql"), PRODUCT, json!({ "id": "42" })).await;
        untagged.assert_ok();
        assert_eq!(untagged.header("surrogate-key"), None, "{edge_tags:?}");
        assert_eq!(untagged.header("cache-tag"), None);
    }
}

#[tokio::test]
async fn varnish_serves_repeated_public_queries_and_every_update_purges_what_it_changed() {
    let Some((app, varnish)) = behind_varnish(|_| {}).await else {
        return;
    };
    let token = app.create_token("edge").await;
    let first = via_varnish(&app, &varnish, PRODUCT, json!({ "id": "7" })).await;
    first.assert_ok();
    assert_eq!(first.header("x-edge-cache"), Some("MISS"));
    assert_eq!(
        first.header("cache-control"),
        Some("public, max-age=0, s-maxage=600, must-revalidate"),
        "with a purger the edge keeps results for their TTL"
    );
    let second = via_varnish(&app, &varnish, PRODUCT, json!({ "id": "7" })).await;
    assert_eq!(second.header("x-edge-cache"), Some("HIT"));
    assert_eq!(
        second.header("x-varnish").map(|ids| ids.split(' ').count()),
        Some(2),
        "a hit names the request and the object's fetch"
    );
    assert!(second.header("age").is_some());
    let origin_before = app.metric("catalog_graphql_requests_total").await;

    // 30 updates; after each answer, every read through Varnish shows the new price: the
    // product, its category's page and count, the list of all categories' products, and the
    // token's dashboard (passed through: private).
    for round in 0..30u32 {
        let id = 1 + round * 33 % 1_000;
        let placed = app
            .gql(
                "query ($id: ID!) { product(id: $id) { category { id } } }",
                json!({ "id": id.to_string() }),
            )
            .await;
        let category = json!({ "category": placed.data()["product"]["category"]["id"] });
        for warm in [
            (PRODUCT, json!({ "id": id.to_string() })),
            (CATEGORY_PAGE, category.clone()),
            (ALL_CATEGORIES, json!({})),
        ] {
            via_varnish(&app, &varnish, warm.0, warm.1)
                .await
                .assert_ok();
        }
        let price = format!("{}.{:02}", 5_000 + round, round);
        let id_text = id.to_string();
        let answer = set_price(&app, &token, id, &price).await;
        assert_eq!(purge_state(&answer), "ACKNOWLEDGED", "{}", answer.body);

        let product = via_varnish(&app, &varnish, PRODUCT, json!({ "id": id.to_string() })).await;
        assert_eq!(
            product.data()["product"]["price"],
            price,
            "round {round}: product"
        );
        let page = via_varnish(&app, &varnish, CATEGORY_PAGE, category).await;
        let prices: Vec<&Value> = page.data()["products"]["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .filter(|edge| edge["node"]["id"] == id_text.as_str())
            .map(|edge| &edge["node"]["price"])
            .collect();
        assert_eq!(prices, vec![&json!(price)], "round {round}: category page");
        let all = via_varnish(&app, &varnish, ALL_CATEGORIES, json!({})).await;
        assert!(
            all.body
                .to_string()
                .contains(&format!("\"price\":\"{price}\"")),
            "round {round}: all categories"
        );
        let dashboard = app
            .client
            .get(varnish.url("/graphql"))
            .bearer_auth(&token)
            .query(&[("query", "{ dashboardStats { avgPrice } }")])
            .send()
            .await
            .expect("dashboard");
        assert_eq!(dashboard.headers()["x-edge-cache"], "MISS");
    }
    let origin_after = app.metric("catalog_graphql_requests_total").await;
    assert!(
        origin_after >= origin_before,
        "the origin counts its requests"
    );
    assert!(
        app.metric("catalog_edge_purge_requests_total{result=\"ok\"}")
            .await
            >= 30.0
    );
    assert_eq!(
        app.metric("catalog_edge_purge_requests_total{result=\"failed\"}")
            .await,
        0.0
    );
}

#[tokio::test]
async fn a_bulk_update_purges_every_affected_page_in_a_handful_of_requests() {
    let Some((app, varnish)) = behind_varnish(|config| config.edge_repurge_after_ms = 0).await
    else {
        return;
    };
    let token = app.create_token("edge").await;
    for category in 1..=10 {
        let variables = json!({ "category": category.to_string() });
        via_varnish(&app, &varnish, CATEGORY_PAGE, variables.clone())
            .await
            .assert_ok();
        let cached = via_varnish(&app, &varnish, CATEGORY_PAGE, variables).await;
        assert_eq!(cached.header("x-edge-cache"), Some("HIT"));
    }
    let requests_before = app
        .metric("catalog_edge_purge_requests_total{result=\"ok\"}")
        .await;
    let updates: Vec<Value> = (1..=1_000)
        .map(|id| json!({ "id": id.to_string(), "price": "1.23" }))
        .collect();
    let answer = app
        .gql_as(
            &token,
            "mutation Bulk($updates: [PriceUpdateInput!]!) { bulkUpdatePrices(updates: $updates) { id } }",
            json!({ "updates": updates }),
        )
        .await;
    answer.assert_ok();
    assert_eq!(purge_state(&answer), "ACKNOWLEDGED");
    let requests = app
        .metric("catalog_edge_purge_requests_total{result=\"ok\"}")
        .await
        - requests_before;
    assert!(
        (1.0..=3.0).contains(&requests),
        "{requests} purge requests for 1,000 prices"
    );
    for category in 1..=10 {
        let page = via_varnish(
            &app,
            &varnish,
            CATEGORY_PAGE,
            json!({ "category": category.to_string() }),
        )
        .await;
        assert_eq!(
            page.header("x-edge-cache"),
            Some("MISS"),
            "category {category}"
        );
        for edge in page.data()["products"]["edges"].as_array().expect("edges") {
            assert_eq!(edge["node"]["price"], "1.23", "category {category}");
        }
    }
}

/// Tags past the edge's limits are coarsened, never dropped: a 100-product page and a
/// 1,000-product query, each tagged with at most two tags, are still purged by a change to
/// any product in them.
#[tokio::test]
async fn coarsened_tags_still_purge_a_hundred_product_page_and_a_thousand_product_query() {
    let Some((app, varnish)) = behind_varnish(|config| config.edge_tag_max_count = 2).await else {
        return;
    };
    let token = app.create_token("edge").await;
    let aliased: String = (1..=100)
        .map(|id| format!("p{id}: product(id: \"{id}\") {{ id price }}"))
        .collect::<Vec<_>>()
        .join(" ");
    let aliased = format!("{{ {aliased} }}");
    for (round, id) in [(0, 5u32), (1, 99), (2, 100)] {
        for query in [aliased.as_str(), ALL_CATEGORIES] {
            let warm = via_varnish(&app, &varnish, query, json!({})).await;
            warm.assert_ok();
            let keys = warm.header("surrogate-key").expect("tags").to_owned();
            assert!(keys.split(' ').count() <= 2, "{keys}");
            assert_eq!(
                via_varnish(&app, &varnish, query, json!({}))
                    .await
                    .header("x-edge-cache"),
                Some("HIT")
            );
        }
        let price = format!("{}.00", 7_000 + round);
        set_price(&app, &token, id, &price).await;
        let page = via_varnish(&app, &varnish, &aliased, json!({})).await;
        assert_eq!(page.data()[format!("p{id}")]["price"], price);
        let all = via_varnish(&app, &varnish, ALL_CATEGORIES, json!({})).await;
        assert!(
            all.body
                .to_string()
                .contains(&format!("\"id\":\"{id}\",\"price\":\"{price}\""))
        );
    }
}

#[tokio::test]
async fn nothing_token_scoped_is_stored_by_varnish() {
    let Some((app, varnish)) = behind_varnish(|_| {}).await else {
        return;
    };
    let token = app.create_token("edge").await;
    for query in ["{ dashboardStats { totalProducts } }", PRODUCT] {
        for _ in 0..3 {
            let response = app
                .client
                .get(varnish.url("/graphql"))
                .bearer_auth(&token)
                .query(&[("query", query), ("variables", "{\"id\": \"3\"}")])
                .send()
                .await
                .expect("GET with a token");
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["x-edge-cache"], "MISS", "{query}");
        }
    }
    // A private query without a token is refused, and the refusal is not stored either.
    for _ in 0..2 {
        let refused = via_varnish(
            &app,
            &varnish,
            "{ dashboardStats { totalProducts } }",
            json!({}),
        )
        .await;
        assert_eq!(refused.header("x-edge-cache"), Some("MISS"));
        assert_eq!(refused.header("cache-control"), Some("no-store"));
    }
}

/// The edge unreachable (the path to it cut): the mutation answers within its bound with the
/// purge pending, `/metrics` shows it, and once the path is back the outbox delivers it, so
/// the copy the edge kept is replaced.
#[tokio::test]
async fn a_purge_the_edge_missed_is_delivered_from_the_outbox_once_it_is_back() {
    let Some(port) = reserve_port() else {
        return;
    };
    let path = TcpProxy::start(format!("127.0.0.1:{port}")).await;
    let app = TestApp::spawn_with(|config| {
        config.edge_purge = EdgePurgeBackend::Varnish;
        config.edge_varnish_urls = vec![format!("http://{}", path.address)];
        config.edge_purge_wait_ms = 300;
    })
    .await;
    let mut varnish = VarnishProcess::start(port, app.address).await;
    let token = app.create_token("edge").await;
    via_varnish(&app, &varnish, PRODUCT, json!({ "id": "11" }))
        .await
        .assert_ok();

    path.cut();
    let started = std::time::Instant::now();
    let answer = set_price(&app, &token, 11, "4321.00").await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the wait is bounded"
    );
    assert_eq!(purge_state(&answer), "PENDING", "{}", answer.body);
    let stale = via_varnish(&app, &varnish, PRODUCT, json!({ "id": "11" })).await;
    assert_ne!(
        stale.data()["product"]["price"],
        "4321.00",
        "the edge kept its copy"
    );
    assert!(
        app.metric("catalog_edge_purge_answered_pending_total")
            .await
            >= 1.0
    );
    let counted = eventually(Duration::from_secs(5), || async {
        app.metric("catalog_edge_purge_pending ").await >= 1.0
    })
    .await;
    assert!(counted, "/metrics counts the pending purge");

    path.restore();
    let delivered = eventually(Duration::from_secs(40), || async {
        let read = via_varnish(&app, &varnish, PRODUCT, json!({ "id": "11" })).await;
        read.data()["product"]["price"] == "4321.00"
    })
    .await;
    assert!(
        delivered,
        "the outbox delivered the purge once the edge was reachable"
    );
    let drained = eventually(Duration::from_secs(10), || async {
        app.metric("catalog_edge_purge_pending ").await == 0.0
    })
    .await;
    assert!(drained, "the outbox is empty once the edge acknowledged");

    // Varnish stopped outright: refused at once, pending, and delivered after its restart.
    varnish.stop();
    let answer = set_price(&app, &token, 12, "4322.00").await;
    assert_eq!(purge_state(&answer), "PENDING");
    varnish.restart().await;
    let delivered = eventually(Duration::from_secs(40), || async {
        app.metric("catalog_edge_purge_retried_total").await >= 2.0
            && app.metric("catalog_edge_purge_pending ").await == 0.0
    })
    .await;
    assert!(delivered, "the purge was delivered after Varnish came back");
}

/// One request a fake edge API received.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Value,
}

/// A local stand-in for Fastly's and Cloudflare's purge APIs that answers as they document
/// and refuses (400) any request whose shape they would refuse; `failing` makes it a 503.
#[derive(Clone, Default)]
struct FakeEdgeApi {
    received: Arc<Mutex<Vec<Received>>>,
    failing: Arc<AtomicBool>,
}

impl FakeEdgeApi {
    async fn start() -> (FakeEdgeApi, SocketAddr) {
        let api = FakeEdgeApi::default();
        let router = axum::Router::new()
            .route("/service/{service}/purge", post(fastly))
            .route("/client/v4/zones/{zone}/purge_cache", post(cloudflare))
            .with_state(api.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        (api, address)
    }

    /// The request body as JSON, or the answer the API gives first: 503 while `failing`,
    /// 400 for a body that is not JSON.
    fn accepted(&self, body: &str) -> Result<Value, (StatusCode, String)> {
        if self.failing.load(Ordering::SeqCst) {
            return Err((StatusCode::SERVICE_UNAVAILABLE, "down".into()));
        }
        serde_json::from_str(body).map_err(|_| (StatusCode::BAD_REQUEST, "not JSON".into()))
    }

    fn record(&self, path: String, headers: HeaderMap, body: Value) {
        self.received.lock().push(Received {
            path,
            headers,
            body,
        });
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().clone()
    }

    /// Every tag purged so far.
    fn purged(&self, field: &str) -> Vec<String> {
        self.received()
            .iter()
            .flat_map(|request| request.body[field].as_array().cloned().unwrap_or_default())
            .filter_map(|tag| tag.as_str().map(str::to_owned))
            .collect()
    }
}

/// Fastly: `POST /service/{id}/purge`, `Fastly-Key`, a JSON body of at most 256 keys.
async fn fastly(
    State(api): State<FakeEdgeApi>,
    Path(service): Path<String>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    let body = match api.accepted(&body) {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    let keys = body["surrogate_keys"].as_array();
    let valid = service == "svc-1"
        && headers
            .get("fastly-key")
            .is_some_and(|key| key == "fastly-token")
        && keys.is_some_and(|keys| {
            (1..=256).contains(&keys.len()) && keys.iter().all(Value::is_string)
        });
    if !valid {
        return (StatusCode::BAD_REQUEST, "bad purge request".into());
    }
    let answer: serde_json::Map<String, Value> = keys
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|key| (key.to_owned(), json!("108-1391560174-974124")))
        .collect();
    api.record(format!("/service/{service}/purge"), headers, body);
    (StatusCode::OK, Value::Object(answer).to_string())
}

/// Cloudflare: `POST /zones/{zone}/purge_cache`, a bearer token, `{"tags": [...]}` of at most
/// 100 tags; answers `{"success": true, ...}`.
async fn cloudflare(
    State(api): State<FakeEdgeApi>,
    Path(zone): Path<String>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    let body = match api.accepted(&body) {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    let tags = body["tags"].as_array();
    let valid = zone == "zone-1"
        && headers
            .get("authorization")
            .is_some_and(|value| value == "Bearer cf-token")
        && headers
            .get("content-type")
            .is_some_and(|value| value.to_str().unwrap_or("").starts_with("application/json"))
        && tags.is_some_and(|tags| {
            (1..=100).contains(&tags.len()) && tags.iter().all(Value::is_string)
        });
    if !valid {
        let refusal =
            json!({ "success": false, "errors": [{ "code": 1012, "message": "bad request" }] });
        return (StatusCode::BAD_REQUEST, refusal.to_string());
    }
    api.record(format!("/zones/{zone}/purge_cache"), headers, body);
    let answer = json!({ "success": true, "errors": [], "messages": [], "result": { "id": "9a7806061c88ada191ed06f989cc3dac" } });
    (StatusCode::OK, answer.to_string())
}

fn fastly_config(config: &mut Config, api: SocketAddr) {
    config.edge_purge = EdgePurgeBackend::Fastly;
    config.edge_fastly_service_id = Some("svc-1".to_owned());
    config.edge_fastly_api_token = Some("fastly-token".to_owned());
    config.edge_fastly_api_url = format!("http://{api}");
    config.edge_soft_purge = true;
    config.edge_repurge_after_ms = 0;
}

fn cloudflare_config(config: &mut Config, api: SocketAddr) {
    config.edge_purge = EdgePurgeBackend::Cloudflare;
    config.edge_cloudflare_zone_id = Some("zone-1".to_owned());
    config.edge_cloudflare_api_token = Some("cf-token".to_owned());
    config.edge_cloudflare_api_url = format!("http://{api}/client/v4");
    config.edge_repurge_after_ms = 0;
}

#[tokio::test]
async fn fastly_purges_are_authenticated_soft_surrogate_key_requests() {
    let (api, address) = FakeEdgeApi::start().await;
    let app = TestApp::spawn_with(|config| fastly_config(config, address)).await;
    let token = app.create_token("edge").await;
    let answer = set_price(&app, &token, 42, "12.34").await;
    assert_eq!(purge_state(&answer), "ACKNOWLEDGED", "{}", answer.body);
    let received = api.received();
    assert_eq!(received.len(), 1, "one request");
    assert_eq!(received[0].path, "/service/svc-1/purge");
    assert_eq!(received[0].headers["fastly-soft-purge"], "1");
    let purged = api.purged("surrogate_keys");
    for tag in ["Product-42", "Products"] {
        assert!(purged.contains(&tag.to_owned()), "{purged:?}");
    }
    // What the mutation purged covers the tags the product's response carries.
    let read = get(&app, app.url("/graphql"), PRODUCT, json!({ "id": "42" })).await;
    let keys = read.header("surrogate-key").expect("tags").to_owned();
    assert!(
        keys.split(' ').any(|tag| purged.contains(&tag.to_owned())),
        "{keys}"
    );
}

#[tokio::test]
async fn cloudflare_purges_are_authenticated_cache_tag_requests_of_at_most_100_tags() {
    let (api, address) = FakeEdgeApi::start().await;
    let app = TestApp::spawn_with(|config| {
        cloudflare_config(config, address);
        config.edge_purge_coalesce_ms = 500;
    })
    .await;
    let token = app.create_token("edge").await;
    // A burst of 150 mutations: their 160-odd tags go out in few requests (coalesced), each
    // of at most 100 tags (the fake refuses more).
    let burst = (1..=150u32).map(|id| {
        let (app, token) = (&app, &token);
        async move { set_price(app, token, id, &format!("{id}.50")).await }
    });
    for answer in futures::future::join_all(burst).await {
        assert_eq!(purge_state(&answer), "ACKNOWLEDGED", "{}", answer.body);
    }
    let received = api.received();
    assert!(
        (2..=30).contains(&received.len()),
        "{} requests for 150 mutations",
        received.len()
    );
    let purged = api.purged("tags");
    for id in 1..=150 {
        assert!(purged.contains(&format!("Product-{id}")), "product {id}");
    }
}

/// A server that committed a mutation but could not purge (its edge answered 503) and then
/// went away: another instance on the same database delivers the purge from the outbox.
#[tokio::test]
async fn a_purge_left_by_a_stopped_instance_is_delivered_by_another() {
    let (api, address) = FakeEdgeApi::start().await;
    // The database outlives both instances.
    let (mut config, _files) = test_config().await;
    fastly_config(&mut config, address);
    config.edge_purge_wait_ms = 500;
    let plan = SeedPlan {
        categories: CATEGORIES,
        products: PRODUCTS,
    };
    let first = TestApp::start(config.clone(), None, Some(plan)).await;
    let token = first.create_token("edge").await;
    api.failing.store(true, Ordering::SeqCst);
    let answer = set_price(&first, &token, 77, "77.77").await;
    assert_eq!(purge_state(&answer), "PENDING");
    first.stop().await;
    assert!(api.received().is_empty());

    api.failing.store(false, Ordering::SeqCst);
    let second = TestApp::start(config, None, None).await;
    let delivered = eventually(Duration::from_secs(30), || async {
        api.purged("surrogate_keys")
            .contains(&"Product-77".to_owned())
    })
    .await;
    assert!(
        delivered,
        "the second instance delivered the first one's purge"
    );
    let drained = eventually(Duration::from_secs(10), || async {
        second.metric("catalog_edge_purge_pending ").await == 0.0
    })
    .await;
    assert!(drained);
}

/// `catalog-api cache clear` drops the origin's entries and purges the edge's copies too (the
/// deployment's `all` tag, which every tagged response carries).
#[tokio::test]
async fn cache_clear_also_purges_every_edge_copy() {
    if !crate::support::helpers::redis_configured() {
        eprintln!("cache commands need the shared cache: set CATALOG_TEST_REDIS_URL");
        return;
    }
    let (api, address) = FakeEdgeApi::start().await;
    let app = TestApp::spawn_with(|config| {
        fastly_config(config, address);
        config.edge_tag_prefix = "clear.".to_owned();
    })
    .await;
    let read = get(&app, app.url("/graphql"), PRODUCT, json!({ "id": "5" })).await;
    let tags = read.header("surrogate-key").expect("tags").to_owned();
    assert!(tags.split(' ').any(|tag| tag == "clear.all"), "{tags}");
    let config = &app.config;
    let api_url = format!("http://{address}");
    let output = crate::support::helpers::run_binary(
        &["cache", "clear"],
        &[
            ("DATABASE_URL", config.database_url.as_str()),
            ("REDIS_URL", config.redis_url.as_deref().unwrap_or_default()),
            ("CATALOG_CACHE_PREFIX", config.cache_prefix.as_str()),
            ("CATALOG_DEMO_DATA", "false"),
            ("CATALOG_EDGE_TAG_PREFIX", "clear."),
            ("CATALOG_EDGE_PURGE", "fastly"),
            ("CATALOG_EDGE_FASTLY_SERVICE_ID", "svc-1"),
            ("CATALOG_EDGE_FASTLY_API_TOKEN", "fastly-token"),
            ("CATALOG_EDGE_FASTLY_API_URL", api_url.as_str()),
        ],
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("ACKNOWLEDGED"), "{stderr}");
    assert_eq!(api.purged("surrogate_keys"), vec!["clear.all".to_owned()]);
}

/// What Apollo Client sends with `useGETForHashedQueries`: a persisted query's hash over GET,
/// which Varnish caches by URL and a mutation purges like any other public result. A POST of
/// the same operation is passed through, never stored.
#[tokio::test]
async fn varnish_caches_persisted_queries_sent_as_get_and_passes_posts() {
    let Some((app, varnish)) = behind_varnish(|_| {}).await else {
        return;
    };
    let token = app.create_token("edge").await;
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(PRODUCT.as_bytes()));
    let extensions = json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } });
    let register =
        json!({ "query": PRODUCT, "variables": { "id": "9" }, "extensions": extensions });
    app.post_json(register, None, &[]).await.assert_ok();
    let by_hash = || async {
        let response = app
            .client
            .get(varnish.url("/graphql"))
            .query(&[
                ("operationName", "Product"),
                ("variables", "{\"id\":\"9\"}"),
                ("extensions", &extensions.to_string()),
            ])
            .send()
            .await
            .expect("GET by hash");
        TestApp::read(response).await
    };
    assert_eq!(by_hash().await.header("x-edge-cache"), Some("MISS"));
    let hit = by_hash().await;
    assert_eq!(hit.header("x-edge-cache"), Some("HIT"));
    assert_ne!(hit.data()["product"]["price"], "3.21");
    set_price(&app, &token, 9, "3.21").await;
    let fresh = by_hash().await;
    assert_eq!(fresh.data()["product"]["price"], "3.21");

    for _ in 0..2 {
        let post = app
            .client
            .post(varnish.url("/graphql"))
            .json(&json!({ "query": PRODUCT, "variables": { "id": "9" } }))
            .send()
            .await
            .expect("POST through Varnish");
        assert_eq!(post.headers()["x-edge-cache"], "MISS");
    }
}

/// A soft purge keeps the object only to revalidate it: the next read through Varnish asks
/// the API (with the kept ETag) and gets the new result, never the purged one.
#[tokio::test]
async fn a_soft_purged_object_is_revalidated_never_served() {
    let Some((app, varnish)) = behind_varnish(|config| {
        config.edge_soft_purge = true;
        config.cache_stale_while_revalidate_secs = 30;
        config.cache_stale_if_error_secs = 60;
    })
    .await
    else {
        return;
    };
    let token = app.create_token("edge").await;
    for round in 0..5u32 {
        let id = 20 + round;
        let before = via_varnish(&app, &varnish, PRODUCT, json!({ "id": id.to_string() })).await;
        before.assert_ok();
        // A soft-purged object is stale, not gone: no edge may be told to serve stale content.
        assert_eq!(
            before.header("cache-control"),
            Some("public, max-age=0, s-maxage=600, must-revalidate")
        );
        let cached = via_varnish(&app, &varnish, PRODUCT, json!({ "id": id.to_string() })).await;
        assert_eq!(cached.header("x-edge-cache"), Some("HIT"));
        let price = format!("{}.25", 600 + round);
        let answer = set_price(&app, &token, id, &price).await;
        assert_eq!(purge_state(&answer), "ACKNOWLEDGED");
        let after = via_varnish(&app, &varnish, PRODUCT, json!({ "id": id.to_string() })).await;
        assert_eq!(after.data()["product"]["price"], price, "round {round}");
    }
}
