//! A field that fails is answered the way the GraphQL spec ("Handling Execution Errors") and
//! the clients that follow it expect: its key is there with `null`, beside siblings that
//! resolved; a failure in a non-null field makes the nearest nullable ancestor `null`, or the
//! whole `data` when there is none. No key ever goes missing.

use serde_json::{Value, json};

use crate::support::helpers::{GqlResponse, TestApp};

#[track_caller]
fn assert_null_member(object: &Value, key: &str) {
    assert_eq!(
        object.get(key),
        Some(&Value::Null),
        "`{key}` should be present and null in {object}"
    );
}

#[track_caller]
fn assert_data_null(response: &GqlResponse) {
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        response.body.get("data"),
        Some(&Value::Null),
        "{}",
        response.body
    );
}

#[tokio::test]
async fn a_failed_nullable_root_field_is_null_beside_the_fields_that_resolved() {
    let app = TestApp::spawn().await;
    let response = app
        .gql(
            r#"{ first: product(id: "nope") { id } second: product(id: "2") { name }
                 third: product(id: "-1") { id } }"#,
            json!({}),
        )
        .await;
    let data = response.data();
    assert_null_member(data, "first");
    assert_null_member(data, "third");
    assert_eq!(data["second"]["name"], "Product 000002", "{data}");
    assert_eq!(
        response.error_codes(),
        ["BAD_USER_INPUT", "BAD_USER_INPUT"],
        "{}",
        response.body
    );
    let paths: Vec<&Value> = response.body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|error| &error["path"])
        .collect();
    assert_eq!(paths, [&json!(["first"]), &json!(["third"])]);
}

#[tokio::test]
async fn a_failed_nullable_root_field_alone_leaves_data_with_its_null() {
    let app = TestApp::spawn().await;
    let response = app
        .gql(r#"{ product(id: "nope") { id } }"#, json!({}))
        .await;
    response.assert_error("BAD_USER_INPUT");
    assert_null_member(response.data(), "product");
}

#[tokio::test]
async fn a_failed_non_null_field_makes_its_nearest_nullable_ancestor_null() {
    let app = TestApp::spawn().await;
    // `Category.products` is non-null, `Product.category` is nullable.
    let response = app
        .gql(
            r#"{ product(id: "1") { name category { name products(first: 0) { totalCount } } } }"#,
            json!({}),
        )
        .await;
    response.assert_error("BAD_USER_INPUT");
    let product = &response.data()["product"];
    assert_eq!(product["name"], "Product 000001", "{}", response.body);
    assert_null_member(product, "category");
    assert_eq!(
        response.body["errors"][0]["path"],
        json!(["product", "category", "products"])
    );
}

/// Failures whose `null` reaches a non-null position all the way up: `data` is null.
#[tokio::test]
async fn a_null_with_no_nullable_ancestor_makes_data_null() {
    let app = TestApp::spawn().await;
    let queries = [
        // `products: ProductConnection!` fails at the root.
        r#"{ categories { id } products(first: -1) { totalCount } }"#,
        // `categories: [Category!]!`: each category's failed page nulls the category, which a
        // list of non-null items cannot hold, so the list and then `data` are null.
        r#"{ product(id: "1") { name } categories { name products(first: 0) { totalCount } } }"#,
        // Each category's only field fails: still a null category in `[Category!]!`, not a
        // list of nulls.
        r#"{ categories { products(first: 0) { totalCount } } }"#,
    ];
    for query in queries {
        let response = app.gql(query, json!({})).await;
        let codes = response.error_codes();
        assert!(
            !codes.is_empty() && codes.iter().all(|code| code == "BAD_USER_INPUT"),
            "{query}: {}",
            response.body
        );
        assert_data_null(&response);
    }
}

#[tokio::test]
async fn a_failed_mutation_field_is_reported_and_data_is_null() {
    let app = TestApp::spawn().await;
    let token = app.create_token("field-errors").await;
    // Mutation fields run one after the other: the first commits, the second fails, and
    // `deleteProduct: ID!` cannot be null, so `data` is.
    let response = app
        .gql_as(
            &token,
            r#"mutation { createCategory(input: { name: "Committed" }) { id }
                          deleteProduct(id: "abc") }"#,
            json!({}),
        )
        .await;
    response.assert_error("BAD_USER_INPUT");
    assert_data_null(&response);
    let names = app.gql("{ categories { name } }", json!({})).await;
    assert!(
        names.assert_ok()["categories"]
            .as_array()
            .expect("categories")
            .iter()
            .any(|category| category["name"] == "Committed"),
        "the first mutation field committed: {}",
        names.body
    );
}
