//! The HTTP layer's refusals, over real HTTP: each keeps its status, `extensions.code` and
//! headers (the table clients and dashboards rely on), and an internal error on the token path
//! is answered with the request id it was logged under and none of its detail.

use reqwest::Method;
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

use crate::support::helpers::{GqlResponse, TestApp};

/// One refusal: how to provoke it, and what the client must see.
struct Refusal {
    what: &'static str,
    method: Method,
    path: &'static str,
    content_type: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: Vec<u8>,
    status: u16,
    code: &'static str,
    /// A header the refusal adds (`Allow`, `WWW-Authenticate`), with its value.
    extra: Option<(&'static str, &'static str)>,
}

fn refusals(max_body_bytes: usize) -> Vec<Refusal> {
    let post = |what, body: &[u8], status, code| Refusal {
        what,
        method: Method::POST,
        path: "/graphql",
        content_type: "application/json",
        headers: &[],
        body: body.to_vec(),
        status,
        code,
        extra: None,
    };
    let get = |what, path, status, code| Refusal {
        what,
        method: Method::GET,
        path,
        content_type: "application/json",
        headers: &[],
        body: Vec::new(),
        status,
        code,
        extra: None,
    };
    vec![
        get("a GET without a query", "/graphql", 400, "BAD_REQUEST"),
        get(
            "GET variables that are not JSON",
            "/graphql?query=%7B__typename%7D&variables=%7Bnope",
            400,
            "BAD_REQUEST",
        ),
        get(
            "GET extensions that are not an object",
            "/graphql?query=%7B__typename%7D&extensions=%5B1%5D",
            400,
            "BAD_REQUEST",
        ),
        Refusal {
            extra: Some(("allow", "POST")),
            ..get(
                "a mutation over GET",
                "/graphql?query=mutation%7BdeleteProduct(id%3A%221%22)%7D",
                405,
                "METHOD_NOT_ALLOWED",
            )
        },
        get(
            "an asset GraphiQL does not have",
            "/graphiql/secrets.js",
            404,
            "NOT_FOUND",
        ),
        post("a body that is not JSON", b"{ nope", 400, "BAD_REQUEST"),
        post("a JSON number", b"42", 400, "BAD_REQUEST"),
        post("an empty batch", b"[]", 400, "BAD_REQUEST"),
        post("a batch of numbers", b"[1]", 400, "BAD_REQUEST"),
        post("an operation without a query", b"{}", 400, "BAD_REQUEST"),
        post(
            "variables that are a list",
            br#"{"query":"{ __typename }","variables":[1]}"#,
            400,
            "BAD_REQUEST",
        ),
        post(
            "a body past the limit",
            &vec![b' '; max_body_bytes + 1],
            413,
            "PAYLOAD_TOO_LARGE",
        ),
        Refusal {
            content_type: "text/plain",
            ..post(
                "a body that is not declared JSON",
                br#"{"query":"{ __typename }"}"#,
                415,
                "BAD_REQUEST",
            )
        },
        Refusal {
            headers: &[("authorization", "Bearer cat_never-issued")],
            extra: Some(("www-authenticate", "Bearer")),
            ..post(
                "a token the server never issued",
                br#"{"query":"{ __typename }"}"#,
                401,
                "UNAUTHENTICATED",
            )
        },
    ]
}

async fn send(app: &TestApp, refusal: &Refusal) -> GqlResponse {
    let mut request = app
        .client
        .request(refusal.method.clone(), app.url(refusal.path))
        .header("content-type", refusal.content_type);
    for (name, value) in refusal.headers {
        request = request.header(*name, *value);
    }
    if refusal.method == Method::POST {
        request = request.body(refusal.body.clone());
    }
    TestApp::read(request.send().await.expect("request")).await
}

#[tokio::test]
async fn every_transport_refusal_keeps_its_status_code_and_headers() {
    let app = TestApp::spawn().await;
    for refusal in refusals(app.config.max_body_bytes) {
        let response = send(&app, &refusal).await;
        let what = refusal.what;
        assert_eq!(
            response.status, refusal.status,
            "status for {what}: {}",
            response.body
        );
        assert_eq!(
            response.error_codes(),
            vec![refusal.code.to_owned()],
            "codes for {what}"
        );
        let message = response.body["errors"][0]["message"].as_str();
        assert!(
            message.is_some_and(|message| !message.is_empty()),
            "a message for {what}: {}",
            response.body
        );
        assert!(
            response.body.get("data").is_none(),
            "a request error has no data entry ({what}): {}",
            response.body
        );
        assert_eq!(response.header("cache-control"), Some("no-store"), "{what}");
        assert_eq!(response.header("x-cache"), Some("BYPASS"), "{what}");
        assert!(response.header("x-request-id").is_some(), "{what}");
        if let Some((name, value)) = refusal.extra {
            assert_eq!(response.header(name), Some(value), "{name} for {what}");
        }
        if refusal.status != 401 {
            assert_eq!(response.header("www-authenticate"), None, "{what}");
        }
    }
}

#[tokio::test]
async fn an_internal_error_while_checking_a_token_carries_the_request_id_and_no_internals() {
    let app = TestApp::spawn().await;
    // The database answers, but the token table is gone (a botched migration, a restore
    // of the wrong dump): checking a token fails with an error that is ours, not the client's.
    app.state
        .db
        .execute_unprepared("DROP TABLE api_token")
        .await
        .expect("drop the token table");
    let internal_errors_before = app
        .metric("catalog_graphql_errors_total{code=\"INTERNAL_SERVER_ERROR\"}")
        .await;

    let response = app
        .post_json(
            json!({ "query": "{ __typename }" }),
            Some("cat_a-well-formed-token-the-cache-does-not-know"),
            &[],
        )
        .await;

    assert_eq!(response.status, 500, "{}", response.body);
    let request_id = response
        .header("x-request-id")
        .expect("an x-request-id header")
        .to_owned();
    assert_eq!(
        response.body,
        json!({ "errors": [{
            "message": "internal server error",
            "extensions": { "code": "INTERNAL_SERVER_ERROR", "requestId": request_id },
        }] }),
        "the id the error was logged under, and nothing of the database's message"
    );
    assert_eq!(response.header("www-authenticate"), None);
    assert_eq!(response.header("cache-control"), Some("no-store"));
    assert_eq!(
        app.metric("catalog_graphql_errors_total{code=\"INTERNAL_SERVER_ERROR\"}")
            .await,
        internal_errors_before + 1.0,
        "counted once in the error metrics"
    );

    // Requests without a token never look at the table: they still work.
    let anonymous = app.gql("{ __typename }", Value::Null).await;
    assert_eq!(anonymous.assert_ok()["__typename"], "Query");
}

/// A malformed body is explained in the request's terms (where the JSON breaks and what
/// belongs there, which member has the wrong type), never with the parser's own words or a
/// Rust type name.
#[tokio::test]
async fn malformed_bodies_are_explained_in_the_requests_terms() {
    let app = TestApp::spawn().await;
    for (body, expected) in [
        (
            &b"{ nope"[..],
            "unexpected `n` at line 1, column 3: object keys are strings in double quotes",
        ),
        (
            b"{\"query\": \"{ a }\"",
            "ends at line 1, column 17 before the JSON is complete (an object is not closed)",
        ),
        (
            b"[{\"query\": 5}]",
            "`query` must be a string (got a number)",
        ),
        (
            b"{\"query\": \"{ a }\", \"extensions\": [1]}",
            "`extensions` must be an object (got an array)",
        ),
        (
            b"[7]",
            "an operation is a JSON object with a `query` string (got a number)",
        ),
    ] {
        let response = app
            .client
            .post(app.url("/graphql"))
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), 400);
        let answer: serde_json::Value = response.json().await.expect("JSON error body");
        let message = answer["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(expected),
            "{message:?} for {}",
            String::from_utf8_lossy(body)
        );
        for jargon in ["EOF", "struct", "Operation", "invalid type"] {
            assert!(!message.contains(jargon), "{message:?}");
        }
        assert_eq!(answer["errors"][0]["extensions"]["code"], "BAD_REQUEST");
    }
}
