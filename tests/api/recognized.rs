//! Requests recognized by their bytes: a repeated anonymous query is answered from its entry
//! without being parsed, with the same body and headers as the whole path gives, and only
//! while that entry is fresh; credentials, bypasses and `cacheInfo` always take the whole way.

use reqwest::header::{ETAG, IF_NONE_MATCH};
use serde_json::json;

use crate::support::helpers::{PRODUCT_BY_ID, TestApp};

const UPDATE_PRICE: &str = "mutation($id: ID!, $price: Decimal!) { updateProduct(id: $id, input: { price: $price }) { id price } }";

/// The headers a client can tell apart, in order.
fn visible(response: &crate::support::helpers::GqlResponse) -> Vec<(String, Option<String>)> {
    [
        "content-type",
        "cache-control",
        "etag",
        "vary",
        "x-cache",
        "cache-status",
    ]
    .into_iter()
    .map(|name| (name.to_owned(), response.header(name).map(str::to_owned)))
    .collect()
}

#[tokio::test]
async fn a_repeated_anonymous_query_is_recognized_by_its_bytes_and_only_while_fresh() {
    let app = TestApp::spawn_on_primary(|_| {}).await;
    let body = json!({ "query": PRODUCT_BY_ID, "variables": { "id": "42" } });
    let first = app.post_json(body.clone(), None, &[]).await;
    assert_eq!(first.x_cache(), "MISS");
    assert_eq!(
        app.state.recognized.len(),
        1,
        "the stored answer is remembered"
    );

    let whole_way = app
        .post_json(body.clone(), None, &[("x-unrelated", "1")])
        .await;
    let (recognized, statements) = app
        .count_statements(app.post_json(body.clone(), None, &[]))
        .await;
    assert_eq!(statements, 0);
    assert_eq!(recognized.x_cache(), "HIT");
    assert_eq!(recognized.body, whole_way.body);
    assert_eq!(visible(&recognized), visible(&whole_way));
    let hits = app.metric("catalog_cache_hits_total").await;

    // Another spelling of the same request is another fingerprint for the same entry.
    let spaced = format!(
        "{{ \"variables\": {{\"id\": \"42\"}},\n  \"query\": {} }}",
        serde_json::to_string(PRODUCT_BY_ID).expect("JSON string")
    );
    let sent = app
        .client
        .post(app.url("/graphql"))
        .header("content-type", "application/json")
        .body(spaced)
        .send()
        .await
        .expect("POST");
    assert_eq!(TestApp::read(sent).await.x_cache(), "HIT");
    assert_eq!(app.state.recognized.len(), 2);
    assert!(app.metric("catalog_cache_hits_total").await > hits);

    // A committed change: the recognized request is answered with the new price at once.
    let token = app.create_token("recognized").await;
    app.gql_as(&token, UPDATE_PRICE, json!({ "id": "42", "price": "7.77" }))
        .await
        .assert_ok();
    let after = app.post_json(body.clone(), None, &[]).await;
    assert_eq!(after.x_cache(), "MISS");
    assert_eq!(after.data()["product"]["price"], "7.77");
    let again = app.post_json(body, None, &[]).await;
    assert_eq!(again.x_cache(), "HIT");
    assert_eq!(again.data()["product"]["price"], "7.77");
    app.stop().await;
}

#[tokio::test]
async fn a_recognized_get_revalidates_with_its_etag() {
    let app = TestApp::spawn().await;
    let query = [("query", PRODUCT_BY_ID), ("variables", r#"{"id":"9"}"#)];
    let get = |etag: Option<&str>| {
        let request = app.client.get(app.url("/graphql")).query(&query);
        let request = match etag {
            Some(etag) => request.header(IF_NONE_MATCH, etag),
            None => request,
        };
        async move { request.send().await.expect("GET") }
    };
    let first = get(None).await;
    let etag = first.headers()[ETAG].to_str().expect("ETag").to_owned();
    assert_eq!(app.state.recognized.len(), 1);
    let second = get(None).await;
    assert_eq!(second.headers()["x-cache"], "HIT");
    let revalidated = get(Some(&etag)).await;
    assert_eq!(revalidated.status(), 304);
    app.stop().await;
}

#[tokio::test]
async fn credentials_bypasses_cache_info_and_private_results_are_never_recognized() {
    let app = TestApp::spawn_with(|config| config.allow_cache_bypass = true).await;
    let token = app.create_token("private").await;
    let body = json!({ "query": PRODUCT_BY_ID, "variables": { "id": "5" } });
    for _ in 0..2 {
        app.post_json(body.clone(), Some(&token), &[])
            .await
            .assert_ok();
        app.post_json(body.clone(), None, &[("x-bypass-cache", "1")])
            .await
            .assert_ok();
        let with_info = json!({
            "query": PRODUCT_BY_ID, "variables": { "id": "5" },
            "extensions": { "cacheInfo": true },
        });
        app.post_json(with_info, None, &[]).await.assert_ok();
        app.gql_as(&token, "{ dashboardStats { totalProducts } }", json!({}))
            .await
            .assert_ok();
    }
    assert_eq!(app.state.recognized.len(), 0);
    // A bad token on a recognized request is still refused.
    app.post_json(body.clone(), None, &[]).await.assert_ok();
    app.post_json(body.clone(), None, &[]).await.assert_ok();
    assert_eq!(app.state.recognized.len(), 1);
    let refused = app.post_json(body, Some("not-a-token"), &[]).await;
    assert_eq!(refused.status, 401);
    app.stop().await;
}
