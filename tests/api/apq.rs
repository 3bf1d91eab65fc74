//! Automatic persisted queries (Apollo's protocol) over POST and GET, and the safelist mode.

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::support::helpers::{PRODUCT_BY_ID, TestApp, test_config};

fn sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn persisted(hash: &str) -> serde_json::Value {
    json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } })
}

#[tokio::test]
async fn an_unknown_hash_asks_for_the_query_then_the_hash_alone_works_over_post_and_get() {
    let app = TestApp::spawn().await;
    let hash = sha256(PRODUCT_BY_ID);
    let unknown = app
        .post_json(
            json!({ "variables": { "id": "42" }, "extensions": persisted(&hash) }),
            None,
            &[],
        )
        .await;
    unknown.assert_error("PERSISTED_QUERY_NOT_FOUND");
    assert_eq!(
        unknown.body["errors"][0]["message"],
        "PersistedQueryNotFound"
    );

    let registered = app
        .post_json(json!({ "query": PRODUCT_BY_ID, "variables": { "id": "42" }, "extensions": persisted(&hash) }), None, &[])
        .await;
    assert_eq!(registered.assert_ok()["product"]["name"], "Product 000042");

    let by_hash = app
        .post_json(
            json!({ "variables": { "id": "43" }, "extensions": persisted(&hash) }),
            None,
            &[],
        )
        .await;
    assert_eq!(by_hash.assert_ok()["product"]["name"], "Product 000043");

    let get = app
        .client
        .get(app.url("/graphql"))
        .query(&[
            ("variables", &json!({ "id": "42" }).to_string()),
            ("extensions", &persisted(&hash).to_string()),
        ])
        .send()
        .await
        .expect("GET");
    let get = TestApp::read(get).await;
    assert_eq!(get.assert_ok()["product"]["name"], "Product 000042");
    assert_eq!(
        get.x_cache(),
        "HIT",
        "the GET shares the POST's cache entry"
    );
    let etag = get.header("etag").expect("an ETag").to_owned();

    let revalidated = app
        .client
        .get(app.url("/graphql"))
        .query(&[
            ("variables", &json!({ "id": "42" }).to_string()),
            ("extensions", &persisted(&hash).to_string()),
        ])
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("GET");
    assert_eq!(revalidated.status(), 304);
    assert!(revalidated.bytes().await.expect("body").is_empty());
}

#[tokio::test]
async fn a_hash_that_does_not_match_the_query_is_refused() {
    let app = TestApp::spawn().await;
    let wrong = sha256("query { categories { id } }");
    let response = app
        .post_json(json!({ "query": PRODUCT_BY_ID, "variables": { "id": "1" }, "extensions": persisted(&wrong) }), None, &[])
        .await;
    response.assert_error("BAD_USER_INPUT");
    let bad_version = app
        .post_json(
            json!({ "query": PRODUCT_BY_ID, "variables": { "id": "1" }, "extensions": { "persistedQuery": { "version": 2, "sha256Hash": sha256(PRODUCT_BY_ID) } } }),
            None,
            &[],
        )
        .await;
    bad_version.assert_error("BAD_USER_INPUT");
}

#[tokio::test]
async fn safelist_mode_runs_only_manifest_operations() {
    let files = tempfile::tempdir().expect("temporary directory");
    let manifest_path = files.path().join("manifest.json");
    let manifest = json!({
        "format": "apollo-persisted-query-manifest",
        "version": 1,
        "operations": [{ "id": sha256(PRODUCT_BY_ID), "name": "ProductById", "type": "query", "body": PRODUCT_BY_ID }]
    });
    std::fs::write(&manifest_path, manifest.to_string()).expect("write manifest");
    let (mut config, database_files) = test_config().await;
    config.persisted_only = Some(manifest_path);
    let app = TestApp::start(
        config,
        database_files,
        Some(catalog_api::db::seed::SeedPlan {
            categories: 10,
            products: 1000,
        }),
    )
    .await;

    let by_hash = app
        .post_json(
            json!({ "variables": { "id": "42" }, "extensions": persisted(&sha256(PRODUCT_BY_ID)) }),
            None,
            &[],
        )
        .await;
    assert_eq!(by_hash.assert_ok()["product"]["name"], "Product 000042");
    let full_text = app.gql(PRODUCT_BY_ID, json!({ "id": "42" })).await;
    full_text.assert_ok();
    let other = app.gql("{ categories { id } }", json!({})).await;
    other.assert_error("PERSISTED_QUERY_NOT_ALLOWED");
    let unknown_hash = app
        .post_json(
            json!({ "extensions": persisted(&sha256("{ categories { id } }")) }),
            None,
            &[],
        )
        .await;
    unknown_hash.assert_error("PERSISTED_QUERY_NOT_ALLOWED");
}

/// Asks for a persisted query by its hash alone, over GET, as a CDN-friendly client does.
async fn get_by_hash(app: &TestApp, hash: &str) -> crate::support::helpers::GqlResponse {
    let response = app
        .client
        .get(app.url("/graphql"))
        .query(&[("extensions", &persisted(hash).to_string())])
        .send()
        .await
        .expect("GET");
    TestApp::read(response).await
}

#[tokio::test]
async fn documents_that_fail_to_parse_or_validate_or_are_too_long_are_not_registered() {
    let app = TestApp::spawn_with(|config| config.apq_max_document_bytes = 512).await;
    let unparsable = "query { product(id: \"1\") { name ";
    let invalid = "query { noSuchField }";
    let too_long = format!(
        "query {{ product(id: \"1\") {{ name }} }} # {}",
        "x".repeat(600)
    );
    for (document, expected) in [
        (unparsable, Some("GRAPHQL_PARSE_FAILED")),
        (invalid, Some("GRAPHQL_VALIDATION_FAILED")),
        (too_long.as_str(), None),
    ] {
        let hash = sha256(document);
        let sent = app
            .post_json(
                json!({ "query": document, "extensions": persisted(&hash) }),
                None,
                &[],
            )
            .await;
        match expected {
            Some(code) => sent.assert_error(code),
            None => {
                // Answered normally, just not stored.
                assert_eq!(sent.assert_ok()["product"]["name"], "Product 000001");
            }
        }
        get_by_hash(&app, &hash)
            .await
            .assert_error("PERSISTED_QUERY_NOT_FOUND");
    }

    // A valid document within the bound is registered after its first execution.
    let valid = "query { product(id: \"2\") { name } }";
    let hash = sha256(valid);
    app.post_json(
        json!({ "query": valid, "extensions": persisted(&hash) }),
        None,
        &[],
    )
    .await
    .assert_ok();
    assert_eq!(
        get_by_hash(&app, &hash).await.assert_ok()["product"]["name"],
        "Product 000002"
    );
}
