//! Every client-caused failure is a GraphQL-shaped error with a stable `extensions.code`,
//! the right HTTP status, and no internals (SQL, driver names, panics) in the body.

use serde_json::{Value, json};

use crate::support::helpers::{GqlResponse, TestApp};

/// Words that would betray the server's internals if they reached a client.
const INTERNALS: [&str; 4] = ["SELECT", "sqlx", "sea_orm", "panicked"];

#[track_caller]
fn assert_no_internals(response: &GqlResponse) {
    let body = response.body.to_string();
    for word in INTERNALS {
        assert!(!body.contains(word), "{word:?} leaked in {body}");
    }
}

/// POSTs raw bytes as `application/json`, the way a broken client would.
async fn post_raw(app: &TestApp, body: impl Into<reqwest::Body>) -> GqlResponse {
    let response = app
        .client
        .post(app.url("/graphql"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    TestApp::read(response).await
}

#[track_caller]
fn assert_bad_request(response: &GqlResponse) {
    assert_eq!(response.status, 400, "status for {}", response.body);
    response.assert_error("BAD_REQUEST");
    assert!(
        response.body["errors"][0]["message"]
            .as_str()
            .is_some_and(|message| !message.is_empty()),
        "{}",
        response.body
    );
    assert_no_internals(response);
}

#[tokio::test]
async fn a_body_that_is_not_json_is_a_400_bad_request() {
    let app = TestApp::spawn().await;
    assert_bad_request(&post_raw(&app, r#"{"query": "{ categories { id } }""#).await);
    assert_bad_request(&post_raw(&app, "query { categories { id } }").await);
}

#[tokio::test]
async fn a_json_body_that_is_not_a_graphql_request_is_a_400_bad_request() {
    let app = TestApp::spawn().await;
    assert_bad_request(
        &app.post_json(json!("{ categories { id } }"), None, &[])
            .await,
    );
    assert_bad_request(&app.post_json(json!(5), None, &[]).await);
    assert_bad_request(&app.post_json(json!({ "query": 5 }), None, &[]).await);
    assert_bad_request(&app.post_json(json!({}), None, &[]).await);
    assert_bad_request(&app.post_json(json!({ "query": "  " }), None, &[]).await);
    assert_bad_request(
        &app.post_json(json!([{ "query": "{ categories { id } }" }, 5]), None, &[])
            .await,
    );
    let string_variables = json!({ "query": "{ categories { id } }", "variables": "{}" });
    assert_bad_request(&app.post_json(string_variables, None, &[]).await);
    let number_variables = json!({ "query": "{ categories { id } }", "variables": 5 });
    assert_bad_request(&app.post_json(number_variables, None, &[]).await);
}

#[tokio::test]
async fn a_batch_holds_one_to_max_batch_operations() {
    let app = TestApp::spawn().await;
    assert_eq!(
        app.config.max_batch, 10,
        "the default this test is written against"
    );

    assert_bad_request(&app.post_json(json!([]), None, &[]).await);

    let operation = json!({ "query": "{ categories { id } }" });
    let too_many = Value::Array(vec![operation.clone(); app.config.max_batch + 1]);
    assert_bad_request(&app.post_json(too_many, None, &[]).await);

    let full = Value::Array(vec![operation; app.config.max_batch]);
    let response = app.post_json(full, None, &[]).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        response.body.as_array().map(Vec::len),
        Some(10),
        "{}",
        response.body
    );
}

#[tokio::test]
async fn a_batch_of_two_queries_is_answered_with_an_array_of_two_results_in_order() {
    let app = TestApp::spawn().await;
    let batch = json!([
        { "query": "query One($id: ID!) { product(id: $id) { name } }", "variables": { "id": "1" } },
        { "query": "{ categories { id } }" },
    ]);
    let response = app.post_json(batch, None, &[]).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let results = response
        .body
        .as_array()
        .expect("a batch is answered with an array");
    assert_eq!(results.len(), 2, "{}", response.body);
    assert!(
        results.iter().all(|result| result.get("errors").is_none()),
        "{}",
        response.body
    );
    assert_eq!(results[0]["data"]["product"]["name"], "Product 000001");
    assert_eq!(
        results[1]["data"]["categories"].as_array().map(Vec::len),
        Some(10)
    );
}

#[tokio::test]
async fn a_body_over_one_mebibyte_is_a_413_payload_too_large() {
    let app = TestApp::spawn().await;
    assert_eq!(
        app.config.max_body_bytes,
        1024 * 1024,
        "the default this test is written against"
    );
    let huge = "x".repeat(1_100_000);
    let body = json!({ "query": "query Search($s: String) { products(filter: { search: $s }) { totalCount } }", "variables": { "s": huge } });
    let response = app.post_json(body, None, &[]).await;
    assert_eq!(response.status, 413, "{}", response.body);
    response.assert_error("PAYLOAD_TOO_LARGE");
    assert_no_internals(&response);
}

#[tokio::test]
async fn a_syntax_error_is_graphql_parse_failed() {
    let app = TestApp::spawn().await;
    let response = app
        .gql("{ products(first: 2) { edges { node { name } }", json!({}))
        .await;
    response.assert_error("GRAPHQL_PARSE_FAILED");
    assert_eq!(
        response.data(),
        &Value::Null,
        "nothing was executed: {}",
        response.body
    );
    assert_no_internals(&response);
}

#[tokio::test]
async fn an_unknown_field_is_graphql_validation_failed() {
    let app = TestApp::spawn_on_primary(|_| {}).await;
    let (response, statements) = app
        .count_statements(app.gql("{ products { edges { node { sku } } } }", json!({})))
        .await;
    response.assert_error("GRAPHQL_VALIDATION_FAILED");
    assert!(
        response.body["errors"][0]["message"]
            .as_str()
            .is_some_and(|message| message.contains("sku")),
        "{}",
        response.body
    );
    assert_eq!(
        statements, 0,
        "a document that does not validate is never executed"
    );
    assert_no_internals(&response);
}

#[tokio::test]
async fn a_variable_of_the_wrong_type_is_a_coded_input_error() {
    let app = TestApp::spawn_on_primary(|_| {}).await;
    let query = "query Page($first: Int) { products(first: $first) { totalCount } }";
    let (response, statements) = app
        .count_statements(app.gql(query, json!({ "first": "abc" })))
        .await;
    // async-graphql checks variable values while validating the document.
    response.assert_error("GRAPHQL_VALIDATION_FAILED");
    assert_eq!(statements, 0, "{}", response.body);
    assert_no_internals(&response);
}

#[tokio::test]
async fn an_unparsable_decimal_is_bad_user_input() {
    let app = TestApp::spawn().await;
    let query =
        "query Cheap($min: Decimal) { products(filter: { minPrice: $min }) { totalCount } }";
    let response = app.gql(query, json!({ "min": "abc" })).await;
    response.assert_error("BAD_USER_INPUT");
    assert_no_internals(&response);
}

#[tokio::test]
async fn a_query_nested_deeper_than_twelve_levels_is_refused_before_execution() {
    let app = TestApp::spawn_on_primary(|_| {}).await;
    assert_eq!(
        app.config.max_depth, 12,
        "the default this test is written against"
    );
    // product > category > products > edges > node > category > ... > name: 14 levels, and
    // pages of one row, so that depth (not complexity) is what refuses it.
    let query = "{ product(id: \"1\") { category { products(first: 1) { edges { node { category { products(first: 1) { \
                 edges { node { category { products(first: 1) { edges { node { name } } } } } } } } } } } } } }";
    let (response, statements) = app.count_statements(app.gql(query, json!({}))).await;
    response.assert_error("GRAPHQL_VALIDATION_FAILED");
    assert_eq!(
        response.body["errors"][0]["message"],
        "Query is nested too deep."
    );
    assert_eq!(statements, 0, "{}", response.body);
    assert_no_internals(&response);
}

#[tokio::test]
async fn nested_pages_of_a_hundred_are_too_complex_and_refused_before_execution() {
    let app = TestApp::spawn_on_primary(|_| {}).await;
    let query = "{ products(first: 100) { edges { node { category { products(first: 100) { edges { node { name } } } } } } } }";
    let (response, statements) = app.count_statements(app.gql(query, json!({}))).await;
    response.assert_error("GRAPHQL_VALIDATION_FAILED");
    assert_eq!(
        response.body["errors"][0]["message"],
        "Query is too complex."
    );
    assert_eq!(statements, 0, "{}", response.body);

    // Only the nesting is refused: the same outer page on its own is fine.
    let response = app
        .gql(
            "{ products(first: 100) { edges { node { category { name } } } } }",
            json!({}),
        )
        .await;
    let edges = response.assert_ok()["products"]["edges"]
        .as_array()
        .map(Vec::len);
    assert_eq!(edges, Some(100));
}

#[tokio::test]
async fn a_conflict_reports_a_code_and_no_database_details() {
    let app = TestApp::spawn().await;
    let token = app.create_token("errors").await;
    let create =
        "mutation Create($name: String!) { createCategory(input: { name: $name }) { id } }";
    app.gql_as(&token, create, json!({ "name": "Garden" }))
        .await
        .assert_ok();

    let response = app
        .gql_as(&token, create, json!({ "name": "Garden" }))
        .await;
    response.assert_error("CONFLICT");
    let body = response.body.to_string();
    assert_no_internals(&response);
    assert!(
        !body.contains("UNIQUE") && !body.contains("unique constraint"),
        "database detail leaked: {body}"
    );
}

#[tokio::test]
async fn every_response_carries_an_x_request_id() {
    let app = TestApp::spawn().await;
    let responses = [
        ("a query", app.gql("{ categories { id } }", json!({})).await),
        ("a parse error", app.gql("{ categories {", json!({})).await),
        ("a bad body", post_raw(&app, "not json").await),
        (
            "a bad token",
            app.gql_as("not-a-token", "{ categories { id } }", json!({}))
                .await,
        ),
    ];
    let mut ids = Vec::new();
    for (what, response) in &responses {
        let id = response
            .header("x-request-id")
            .unwrap_or_else(|| panic!("no x-request-id on {what}"));
        assert!(!id.is_empty(), "empty x-request-id on {what}");
        ids.push(id.to_owned());
    }
    for path in ["/healthz", "/metrics", "/graphiql/no-such-file.js"] {
        let response = app.client.get(app.url(path)).send().await.expect("request");
        assert!(
            response.headers().contains_key("x-request-id"),
            "no x-request-id on {path}"
        );
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), responses.len(), "each request gets its own id");

    // A client's own id is kept, so its logs and ours can be matched.
    let response = app
        .post_json(
            json!({ "query": "{ categories { id } }" }),
            None,
            &[("x-request-id", "client-chosen-42")],
        )
        .await;
    assert_eq!(response.header("x-request-id"), Some("client-chosen-42"));
}

#[tokio::test]
async fn a_price_too_large_for_any_decimal_arithmetic_is_bad_user_input_not_a_crash() {
    let app = TestApp::spawn().await;
    let token = app.create_token("writer").await;
    let response = app
        .gql_as(
            &token,
            "mutation($input: CreateProductInput!) { createProduct(input: $input) { id } }",
            json!({ "input": { "name": "Huge", "price": "79228162514264337593543950335", "categoryId": "1" } }),
        )
        .await;
    response.assert_error("BAD_USER_INPUT");
    let still_serving = app.gql("{ product(id: \"1\") { id } }", json!({})).await;
    still_serving.assert_ok();
}

#[tokio::test]
async fn a_post_that_is_not_json_is_refused_with_415() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .post(app.url("/graphql"))
        .header("content-type", "text/plain")
        .body(r#"{"query":"{ categories { id } }"}"#)
        .send()
        .await
        .expect("request");
    let response = TestApp::read(response).await;
    assert_eq!(response.status, 415);
    response.assert_error("BAD_REQUEST");
}

#[tokio::test]
async fn a_nul_byte_in_search_or_a_name_is_bad_user_input_on_every_backend() {
    let app = TestApp::spawn().await;
    let search = "query Search($s: String) { products(filter: { search: $s }) { totalCount } }";
    for text in ["a\u{0}b", "\u{0}", "lamp\u{0}"] {
        let response = app.gql(search, json!({ "s": text })).await;
        response.assert_error("BAD_USER_INPUT");
        assert_no_internals(&response);
    }

    let token = app.create_token("nul").await;
    let create_category =
        "mutation Create($name: String!) { createCategory(input: { name: $name }) { id } }";
    let create_product = "mutation Create($name: String!) { createProduct(input: { name: $name, price: \"1.00\", categoryId: \"1\" }) { id } }";
    let update_product = "mutation Update($name: String!) { updateProduct(id: \"1\", input: { name: $name }) { id } }";
    for mutation in [create_category, create_product, update_product] {
        let response = app
            .gql_as(&token, mutation, json!({ "name": "Desk\u{0}Lamp" }))
            .await;
        response.assert_error("BAD_USER_INPUT");
        assert_no_internals(&response);
    }
    // Nothing was written: the refusal happens before any statement.
    let response = app.gql(search, json!({ "s": "Desk" })).await;
    assert_eq!(response.assert_ok()["products"]["totalCount"], 0);
}

/// A request error (nothing executed) has no `data` entry, under either media type; an
/// execution error that nulls the whole result keeps `"data": null` and, under
/// `application/graphql-response+json`, a 200 (GraphQL over HTTP, "Status Codes").
#[tokio::test]
async fn a_request_error_has_no_data_entry_and_an_execution_error_keeps_data_null() {
    let app = TestApp::spawn().await;
    let request_errors = [
        (
            "{ products(first: 2) { edges { node { name } }",
            "GRAPHQL_PARSE_FAILED",
        ),
        ("{ products { nope } }", "GRAPHQL_VALIDATION_FAILED"),
        (
            "query Page($first: Int!) { products(first: $first) { totalCount } }",
            "GRAPHQL_VALIDATION_FAILED",
        ),
    ];
    for accept in [
        "application/graphql-response+json",
        "application/json",
        "application/graphql-response+json, application/json;q=0.9",
    ] {
        for (query, code) in request_errors {
            let response = app
                .post_json(json!({ "query": query }), None, &[("accept", accept)])
                .await;
            response.assert_error(code);
            assert!(
                response.body.get("data").is_none(),
                "a request error has no `data` entry (accept {accept}): {}",
                response.body
            );
            let expected_status = if accept.starts_with("application/graphql-response+json") {
                400
            } else {
                200
            };
            assert_eq!(response.status, expected_status, "{}", response.body);
        }
        // Runs, and a non-null root field fails: the data entry is present and null.
        let response = app
            .post_json(
                json!({ "query": "{ dashboardStats { totalProducts } }" }),
                None,
                &[("accept", accept)],
            )
            .await;
        response.assert_error("UNAUTHENTICATED");
        assert_eq!(
            response.body.get("data"),
            Some(&Value::Null),
            "{}",
            response.body
        );
        assert_eq!(response.status, 200, "{}", response.body);
    }
}

#[tokio::test]
async fn a_syntax_error_says_in_one_line_what_was_expected_and_what_was_found() {
    let app = TestApp::spawn().await;
    for (query, message, line, column) in [
        (
            "{",
            "syntax error: expected selection, found the end of the document",
            1,
            2,
        ),
        (
            "query {\n  products(first: ) { totalCount }\n}",
            "syntax error: expected value, found `)`",
            2,
            19,
        ),
        (
            "{ categories { id } } }",
            "syntax error: expected end of document or executable definition, found `}`",
            1,
            23,
        ),
    ] {
        let response = app.gql(query, json!({})).await;
        response.assert_error("GRAPHQL_PARSE_FAILED");
        let error = &response.body["errors"][0];
        assert_eq!(
            error["message"], message,
            "for {query:?}: {}",
            response.body
        );
        assert_eq!(
            error["locations"],
            json!([{ "line": line, "column": column }]),
            "for {query:?}"
        );
    }
}
