//! GraphQL over HTTP as a client sees it: GET and POST, content negotiation, GraphiQL served
//! offline, health and metrics, CORS, and HTTP caching (`Cache-Control`, `ETag`, 304).

use reqwest::Url;
use reqwest::header::{ACCEPT, CONTENT_TYPE, IF_NONE_MATCH, ORIGIN};
use serde_json::json;

use crate::support::helpers::{GqlResponse, PRODUCT_BY_ID, TestApp};

const PRODUCT_NAME: &str = "query Name($id: ID!) { product(id: $id) { name } }";

/// `GET /graphql` with these query parameters, URL-encoded.
fn graphql_get_url(app: &TestApp, params: &[(&str, &str)]) -> Url {
    Url::parse_with_params(&app.url("/graphql"), params).expect("a valid URL")
}

async fn get(app: &TestApp, url: Url, headers: &[(&str, &str)]) -> GqlResponse {
    let mut request = app.client.get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    TestApp::read(request.send().await.expect("request")).await
}

#[tokio::test]
async fn a_query_can_be_sent_with_get_and_variables_as_a_json_parameter() {
    let app = TestApp::spawn().await;
    let url = graphql_get_url(
        &app,
        &[("query", PRODUCT_NAME), ("variables", r#"{"id":"7"}"#)],
    );
    let response = get(&app, url, &[]).await;
    assert_eq!(response.assert_ok()["product"]["name"], "Product 000007");
    assert!(
        response
            .header("content-type")
            .is_some_and(|value| value.starts_with("application/json"))
    );
}

#[tokio::test]
async fn a_get_with_variables_that_are_not_a_json_object_is_a_400() {
    let app = TestApp::spawn().await;
    for variables in ["{id: 7", "7", r#"["7"]"#] {
        let url = graphql_get_url(&app, &[("query", PRODUCT_NAME), ("variables", variables)]);
        let response = get(&app, url, &[]).await;
        assert_eq!(
            response.status, 400,
            "variables={variables}: {}",
            response.body
        );
        response.assert_error("BAD_REQUEST");
    }
    let url = graphql_get_url(&app, &[("query", "")]);
    let response = get(&app, url, &[]).await;
    assert_eq!(response.status, 400, "an empty query: {}", response.body);
    response.assert_error("BAD_REQUEST");
}

#[tokio::test]
async fn a_mutation_over_get_is_405_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let token = app.create_token("get").await;
    let mutation = "mutation { createCategory(input: { name: \"Via GET\" }) { id } }";
    let url = graphql_get_url(&app, &[("query", mutation)]);
    let authorization = format!("Bearer {token}");
    let response = get(&app, url, &[("authorization", authorization.as_str())]).await;
    assert_eq!(response.status, 405, "{}", response.body);
    assert_eq!(response.header("allow"), Some("POST"));
    response.assert_error("METHOD_NOT_ALLOWED");

    let categories = app.gql("{ categories { name } }", json!({})).await;
    let names = categories.assert_ok()["categories"].to_string();
    assert!(
        !names.contains("Via GET"),
        "the mutation ran over GET: {names}"
    );
}

#[tokio::test]
async fn a_browser_gets_graphiql_with_its_assets_served_by_the_binary() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .get(app.url("/graphql"))
        .header(ACCEPT, "text/html")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let page = response.text().await.expect("page");
    assert!(page.to_lowercase().contains("graphiql"), "{page}");

    // Offline: every script and stylesheet comes from this server.
    for attribute in ["src=", "href="] {
        for reference in page.split(attribute).skip(1) {
            let target = reference.trim_start_matches(['"', '\'']);
            assert!(
                !(target.starts_with("http://")
                    || target.starts_with("https://")
                    || target.starts_with("//")),
                "the page loads {attribute}{target:.60} from elsewhere"
            );
        }
    }

    let assets = [
        ("graphiql.min.js", "application/javascript"),
        ("graphiql.min.css", "text/css"),
        ("react.production.min.js", "application/javascript"),
        ("react-dom.production.min.js", "application/javascript"),
    ];
    for (name, expected_type) in assets {
        let path = format!("/graphiql/{name}");
        assert!(page.contains(&path), "the page does not reference {path}");
        let response = app
            .client
            .get(app.url(&path))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200, "{path}");
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("");
        assert!(
            content_type.starts_with(expected_type),
            "{path} is served as {content_type}"
        );
        assert!(
            !response.bytes().await.expect("asset").is_empty(),
            "{path} is empty"
        );
    }
    let missing = app
        .client
        .get(app.url("/graphiql/secrets.js"))
        .send()
        .await
        .expect("request");
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn a_get_without_a_query_from_a_non_browser_is_a_400() {
    let app = TestApp::spawn().await;
    let response = get(
        &app,
        graphql_get_url(&app, &[]),
        &[("accept", "application/json")],
    )
    .await;
    assert_eq!(response.status, 400, "{}", response.body);
    response.assert_error("BAD_REQUEST");
}

#[tokio::test]
async fn graphql_response_json_is_served_when_accepted_and_a_failed_request_is_then_a_400() {
    let app = TestApp::spawn().await;
    let accept = [(
        "accept",
        "application/graphql-response+json, application/json;q=0.9",
    )];
    let body = json!({ "query": PRODUCT_NAME, "variables": { "id": "3" } });
    let response = app.post_json(body, None, &accept).await;
    assert_eq!(response.assert_ok()["product"]["name"], "Product 000003");
    let content_type = response.header("content-type").unwrap_or("");
    assert!(
        content_type.starts_with("application/graphql-response+json"),
        "{content_type}"
    );

    let broken = json!({ "query": "{ product(id: \"3\") { name }" });
    let response = app.post_json(broken.clone(), None, &accept).await;
    assert_eq!(response.status, 400, "{}", response.body);
    response.assert_error("GRAPHQL_PARSE_FAILED");

    // Legacy `application/json` clients get 200 and read the errors from the body.
    let response = app
        .post_json(broken, None, &[("accept", "application/json")])
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    response.assert_error("GRAPHQL_PARSE_FAILED");
    assert!(
        response
            .header("content-type")
            .is_some_and(|value| value.starts_with("application/json"))
    );
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = TestApp::spawn().await;
    let health = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("request");
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.expect("body"), "ok");
    let ready = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("request");
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
async fn metrics_count_requests_errors_statements_and_cache_hits() {
    let app = TestApp::spawn().await;
    let query = json!({ "query": PRODUCT_NAME, "variables": { "id": "1" } });
    app.post_json(query.clone(), None, &[]).await.assert_ok();
    let hit = app.post_json(query, None, &[]).await;
    assert_eq!(hit.x_cache(), "HIT");
    app.gql("{ product(id: \"1\") {", json!({}))
        .await
        .assert_error("GRAPHQL_PARSE_FAILED");

    let response = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let metrics = response.text().await.expect("metrics");
    for family in [
        "catalog_graphql_requests_total",
        "catalog_graphql_errors_total",
        "catalog_db_statements_total",
        "catalog_cache_hits_total",
    ] {
        assert!(
            metrics.lines().any(|line| line.starts_with(family)),
            "no {family} in\n{metrics}"
        );
    }
    assert_eq!(
        sample(
            &metrics,
            r#"catalog_graphql_errors_total{code="GRAPHQL_PARSE_FAILED"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            r#"catalog_graphql_requests_total{operation="anonymous",cache="HIT"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "catalog_cache_hits_total"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "catalog_db_statements_total"),
        Some(app.statements() as f64),
        "{metrics}"
    );
}

/// The value of the sample whose name and labels are exactly `series`.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn cors_answers_only_the_configured_origins() {
    let app =
        TestApp::spawn_with(|config| config.cors_origins = vec!["https://shop.example".into()])
            .await;
    let body = json!({ "query": "{ categories { id } }" });

    let allowed = app
        .post_json(body.clone(), None, &[("origin", "https://shop.example")])
        .await;
    allowed.assert_ok();
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://shop.example")
    );
    // The answer depends on the origin, so a shared cache must key on it too.
    let vary: Vec<&str> = allowed
        .headers
        .get_all("vary")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect();
    assert!(
        vary.iter()
            .any(|value| value.to_lowercase().contains("origin")),
        "vary: {vary:?}"
    );

    let other = app
        .post_json(body, None, &[("origin", "https://evil.example")])
        .await;
    assert_eq!(other.header("access-control-allow-origin"), None);

    // A preflight for a JSON POST with a token is answered for the allowed origin only.
    for (origin, allowed) in [
        ("https://shop.example", true),
        ("https://evil.example", false),
    ] {
        assert_eq!(
            preflight_allows(&app, origin).await,
            allowed.then_some(origin.to_owned()),
            "preflight from {origin}"
        );
    }
}

/// The `Access-Control-Allow-Origin` a preflight for a JSON POST with a token gets.
async fn preflight_allows(app: &TestApp, origin: &str) -> Option<String> {
    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/graphql"))
        .header(ORIGIN, origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type, authorization",
        )
        .send()
        .await
        .expect("preflight");
    preflight
        .headers()
        .get("access-control-allow-origin")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// With no origins configured, a front end in development (a page on this machine, any port)
/// can call the server out of the box, and no other site can.
#[tokio::test]
async fn by_default_pages_served_from_this_machine_may_call_and_other_sites_may_not() {
    let app = TestApp::spawn().await;
    for origin in [
        "http://localhost:5173",
        "http://127.0.0.1:3000",
        "http://[::1]:8080",
        "https://localhost",
    ] {
        assert_eq!(
            preflight_allows(&app, origin).await.as_deref(),
            Some(origin),
            "preflight from {origin}"
        );
    }
    for origin in [
        "https://evil.example",
        "http://localhost.evil.example",
        "http://127.0.0.1.evil.example:3000",
        "http://localhost:abc",
        "null",
    ] {
        assert_eq!(
            preflight_allows(&app, origin).await,
            None,
            "preflight from {origin}"
        );
    }
    let response = app
        .post_json(
            json!({ "query": "{ categories { id } }" }),
            None,
            &[("origin", "http://localhost:5173")],
        )
        .await;
    response.assert_ok();
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some("http://localhost:5173")
    );
}

/// The default `Cache-Control` of a public result: browsers and CDNs may store it but must
/// revalidate with the ETag before reusing it, so no HTTP cache outlives a mutation.
const REVALIDATE: &str = "public, max-age=0, must-revalidate";

#[tokio::test]
async fn a_query_is_cacheable_by_http_and_answers_if_none_match_with_304() {
    let app = TestApp::spawn().await;
    let params = [("query", PRODUCT_NAME), ("variables", r#"{"id":"5"}"#)];
    let url = graphql_get_url(&app, &params);

    let first = get(&app, url.clone(), &[]).await;
    first.assert_ok();
    assert_eq!(first.header("cache-control"), Some(REVALIDATE));
    assert_eq!(first.x_cache(), "MISS");
    let etag = first.header("etag").expect("an etag").to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "a strong etag: {etag}"
    );

    let second = get(&app, url.clone(), &[]).await;
    assert_eq!(second.x_cache(), "HIT");
    assert_eq!(second.body, first.body);
    assert_eq!(second.header("etag"), Some(etag.as_str()));

    let not_modified = get(&app, url.clone(), &[("if-none-match", etag.as_str())]).await;
    assert_eq!(not_modified.status, 304);
    assert_eq!(
        not_modified.body,
        serde_json::Value::Null,
        "a 304 has an empty body"
    );
    assert_eq!(not_modified.header("etag"), Some(etag.as_str()));
    assert_eq!(not_modified.header("cache-control"), Some(REVALIDATE));

    // A proxy that compresses responses weakens the ETag; the client sends that form back.
    let weak = format!("W/{etag}");
    let not_modified = get(&app, url.clone(), &[("if-none-match", weak.as_str())]).await;
    assert_eq!(not_modified.status, 304, "If-None-Match compares weakly");
    let list = format!("\"something-else\", {etag}");
    let not_modified = get(&app, url.clone(), &[("if-none-match", list.as_str())]).await;
    assert_eq!(not_modified.status, 304, "any etag of the list matches");

    // Another result has another etag, so a stale one gets the full body.
    let other = graphql_get_url(
        &app,
        &[("query", PRODUCT_NAME), ("variables", r#"{"id":"6"}"#)],
    );
    let response = get(&app, other, &[(IF_NONE_MATCH.as_str(), etag.as_str())]).await;
    assert_eq!(response.assert_ok()["product"]["name"], "Product 000006");
    assert_ne!(response.header("etag"), Some(etag.as_str()));
}

#[tokio::test]
async fn if_none_match_is_answered_with_304_only_for_an_exact_etag_over_get() {
    let app = TestApp::spawn().await;
    let params = [("query", PRODUCT_NAME), ("variables", r#"{"id":"8"}"#)];
    let first = get(&app, graphql_get_url(&app, &params), &[]).await;
    first.assert_ok();
    let etag = first.header("etag").expect("an etag").to_owned();
    let unquoted = etag.trim_matches('"').to_owned();
    let prefix = etag[..etag.len() - 2].to_owned() + "\"";
    let inside_another = format!("\"x{unquoted}\"");

    // `*` would match any representation, and a result may change under the same URL: only
    // an ETag the client actually holds proves it has the current body.
    for (what, value) in [
        ("a wildcard", "*"),
        ("a wildcard in a list", "\"other\", *"),
        ("the etag without quotes", unquoted.as_str()),
        ("a prefix of the etag", prefix.as_str()),
        ("the etag inside another", inside_another.as_str()),
        ("an empty header", ""),
    ] {
        let response = get(
            &app,
            graphql_get_url(&app, &params),
            &[(IF_NONE_MATCH.as_str(), value)],
        )
        .await;
        assert_eq!(response.status, 200, "{what}: {value}");
        assert_eq!(response.body, first.body, "{what}: the full body");
    }

    // A POST is not a cacheable request: it always gets the full answer.
    let body = json!({ "query": PRODUCT_NAME, "variables": { "id": "8" } });
    let post = app
        .post_json(body, None, &[(IF_NONE_MATCH.as_str(), etag.as_str())])
        .await;
    assert_eq!(post.status, 200, "a POST with a matching If-None-Match");
    assert_eq!(post.body, first.body);
    assert_eq!(post.header("etag"), Some(etag.as_str()));
}

#[tokio::test]
async fn a_shared_max_age_is_sent_only_when_configured_and_never_beyond_the_result_max_age() {
    let params = [("query", PRODUCT_NAME), ("variables", r#"{"id":"9"}"#)];
    for (configured, expected) in [
        (0, REVALIDATE.to_owned()),
        (
            60,
            "public, max-age=0, s-maxage=60, must-revalidate".to_owned(),
        ),
        // Products are cacheable for 600 s; a CDN is never told to keep them longer.
        (
            86_400,
            "public, max-age=0, s-maxage=600, must-revalidate".to_owned(),
        ),
    ] {
        let app = TestApp::spawn_with(|config| config.http_shared_max_age_secs = configured).await;
        for round in ["miss", "hit"] {
            let response = get(&app, graphql_get_url(&app, &params), &[]).await;
            response.assert_ok();
            assert_eq!(
                response.header("cache-control"),
                Some(expected.as_str()),
                "CATALOG_HTTP_SHARED_MAX_AGE_SECS={configured}, {round}"
            );
        }
        let token = app.create_token("private").await;
        let private = app
            .gql_as(&token, "{ dashboardStats { totalProducts } }", json!({}))
            .await;
        private.assert_ok();
        assert_eq!(
            private.header("cache-control"),
            Some("private, no-store"),
            "a token-scoped result is never stored by a shared cache"
        );
    }
}

#[tokio::test]
async fn a_mutation_response_is_never_cached() {
    let app = TestApp::spawn().await;
    let token = app.create_token("http").await;
    let response = app
        .gql_as(
            &token,
            "mutation { createCategory(input: { name: \"Garden\" }) { id } }",
            json!({}),
        )
        .await;
    response.assert_ok();
    assert_eq!(response.header("cache-control"), Some("no-store"));
    assert_eq!(response.x_cache(), "BYPASS");
    assert_eq!(response.header("etag"), None);
}

#[tokio::test]
async fn shutting_down_lets_in_flight_requests_finish() {
    // The fill of the first read is held back 400 ms after execution: the request is in
    // flight when the shutdown signal arrives.
    let app = TestApp::spawn_with(|config| config.fault_fill_delay_ms = 400).await;
    let before = app.statements();
    let in_flight = {
        let client = app.client.clone();
        let url = app.url("/graphql");
        tokio::spawn(async move {
            let response = client
                .post(url)
                .json(&json!({ "query": "{ product(id: \"3\") { name } }" }))
                .send()
                .await
                .expect("the in-flight request is answered");
            (
                response.status(),
                response.json::<serde_json::Value>().await.expect("json"),
            )
        })
    };
    let executing =
        crate::support::helpers::eventually(std::time::Duration::from_secs(5), || async {
            app.statements() > before
        })
        .await;
    assert!(executing, "the request reached the database");
    let address = app.address;
    app.stop().await;
    let (status, body) = in_flight.await.expect("request task");
    assert_eq!(status, 200);
    assert_eq!(body["data"]["product"]["name"], "Product 000003");
    assert!(
        tokio::net::TcpStream::connect(address).await.is_err(),
        "the server no longer accepts connections"
    );
}

#[tokio::test]
async fn with_a_metrics_address_metrics_are_served_there_and_not_on_the_api_port() {
    let app = TestApp::spawn_with(|config| {
        config.metrics_bind = Some("127.0.0.1:0".parse().expect("address"));
    })
    .await;
    let metrics_address = app.metrics_address.expect("a metrics address is bound");
    assert_ne!(metrics_address, app.address);
    app.gql("{ __typename }", json!({})).await.assert_ok();

    let response = app
        .client
        .get(format!("http://{metrics_address}/metrics"))
        .send()
        .await
        .expect("metrics answer");
    assert_eq!(response.status(), 200);
    let metrics = response.text().await.expect("metrics");
    assert!(
        metrics.contains("catalog_db_statements_total"),
        "not the catalog's metrics: {metrics}"
    );

    let on_api = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("the API port answers");
    assert_eq!(on_api.status(), 404);
    let graphql_on_metrics = app
        .client
        .get(format!("http://{metrics_address}/healthz"))
        .send()
        .await
        .expect("the metrics port answers");
    assert_eq!(
        graphql_on_metrics.status(),
        404,
        "only /metrics is served there"
    );
}

#[tokio::test]
async fn a_request_past_its_timeout_gets_a_coded_error_and_the_work_still_completes() {
    // Every fill is held 2 s, so an uncached query takes longer than the 300 ms limit.
    let app = TestApp::spawn_with(|config| {
        config.request_timeout_ms = 300;
        config.fault_fill_delay_ms = 2_000;
    })
    .await;
    let started = std::time::Instant::now();
    let slow = app.gql(PRODUCT_BY_ID, json!({ "id": "9" })).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert_eq!(slow.status, 504, "{}", slow.body);
    slow.assert_error("TIMEOUT");
    assert!(slow.body.get("data").is_none());
    // The execution went on in the background and filled the cache.
    let filled = crate::support::helpers::eventually(std::time::Duration::from_secs(5), || async {
        app.gql(PRODUCT_BY_ID, json!({ "id": "9" })).await.x_cache() == "HIT"
    })
    .await;
    assert!(filled, "the timed-out execution still completes");
}
