//! DataLoader batching, proven by counting the SQL statements each request really runs
//! (sea-orm's metric callback): a list of any size costs a constant number of statements.
//! Measured requests bypass the response cache, so every one of them reaches the database.

use serde_json::{Value, json};

use crate::support::helpers::{CATEGORIES, GqlResponse, PRODUCTS, TestApp};

async fn spawn_without_cache() -> TestApp {
    TestApp::spawn_on_primary(|config| config.allow_cache_bypass = true).await
}

/// Runs `query` past the response cache and returns the response and its statement count.
async fn run_counted(app: &TestApp, query: &str) -> (GqlResponse, u64) {
    let request = app.post_json(json!({ "query": query }), None, &[("x-bypass-cache", "1")]);
    let (response, statements) = app.count_statements(request).await;
    response.assert_ok();
    assert_eq!(
        response.x_cache(),
        "BYPASS",
        "the measured request reached the resolvers"
    );
    (response, statements)
}

fn products_with_categories(first: u32) -> String {
    format!(
        "{{ products(first: {first}) {{ edges {{ node {{ id name category {{ id name }} }} }} }} }}"
    )
}

/// `catalog_db_statements_total` as `/metrics` reports it.
async fn statements_metric(app: &TestApp) -> u64 {
    let response = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("metrics body");
    let line = text
        .lines()
        .find(|line| line.starts_with("catalog_db_statements_total"))
        .unwrap_or_else(|| panic!("no catalog_db_statements_total in:\n{text}"));
    line.split_whitespace()
        .nth(1)
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("a count in {line:?}"))
}

#[tokio::test]
async fn a_page_of_products_with_their_categories_costs_two_statements() {
    let app = spawn_without_cache().await;
    let (response, statements) = run_counted(&app, &products_with_categories(100)).await;
    assert_eq!(statements, 2, "one page query and one category IN (...)");

    let edges = response.data()["products"]["edges"]
        .as_array()
        .expect("edges")
        .clone();
    assert_eq!(edges.len(), 100);
    for edge in &edges {
        let id: u32 = edge["node"]["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .expect("numeric id");
        let category = id % CATEGORIES + 1;
        assert_eq!(
            edge["node"]["category"],
            json!({ "id": category.to_string(), "name": format!("Category {category:02}") })
        );
    }
}

#[tokio::test]
async fn total_count_adds_exactly_one_statement() {
    let app = spawn_without_cache().await;
    let query = "{ products(first: 100) { totalCount edges { node { name category { name } } } } }";
    let (response, statements) = run_counted(&app, query).await;
    assert_eq!(response.data()["products"]["totalCount"], 1000);
    assert_eq!(statements, 3);
}

#[tokio::test]
async fn page_size_does_not_change_the_statement_count() {
    let app = spawn_without_cache().await;
    let (_, for_ten) = run_counted(&app, &products_with_categories(10)).await;
    let (_, for_a_hundred) = run_counted(&app, &products_with_categories(100)).await;
    assert_eq!((for_ten, for_a_hundred), (2, 2));
}

#[tokio::test]
async fn categories_with_counts_and_product_pages_cost_three_statements() {
    let app = spawn_without_cache().await;
    let query =
        "{ categories { id name productCount products(first: 5) { edges { node { id name } } } } }";
    let (response, statements) = run_counted(&app, query).await;
    assert_eq!(
        statements, 3,
        "categories, one grouped count, one windowed page query"
    );

    let categories = response.data()["categories"]
        .as_array()
        .expect("categories")
        .clone();
    assert_eq!(categories.len(), CATEGORIES as usize);
    for (index, category) in categories.iter().enumerate() {
        let category_id = index as u32 + 1;
        assert_eq!(category["productCount"], 100);
        let expected: Vec<Value> = (1..=PRODUCTS)
            .filter(|j| j % CATEGORIES + 1 == category_id)
            .take(5)
            .map(|j| json!({ "node": { "id": j.to_string(), "name": format!("Product {j:06}") } }))
            .collect();
        assert_eq!(
            category["products"]["edges"],
            json!(expected),
            "first page of category {category_id}"
        );
    }
}

#[tokio::test]
async fn aliased_product_lookups_share_one_statement_per_loader() {
    let app = spawn_without_cache().await;
    let query = "{
        a: product(id: \"1\") { name category { name } }
        b: product(id: \"2\") { name category { name } }
        c: product(id: \"11\") { name category { name } }
    }";
    let (response, statements) = run_counted(&app, query).await;
    assert_eq!(
        statements, 2,
        "one IN (...) for the products, one for their categories"
    );
    assert_eq!(
        response.data(),
        &json!({
            "a": { "name": "Product 000001", "category": { "name": "Category 02" } },
            "b": { "name": "Product 000002", "category": { "name": "Category 03" } },
            "c": { "name": "Product 000011", "category": { "name": "Category 02" } },
        })
    );
}

#[tokio::test]
async fn the_metrics_endpoint_counts_the_statements_a_query_runs() {
    let app = spawn_without_cache().await;
    let before = statements_metric(&app).await;
    assert_eq!(
        before,
        app.statements(),
        "the endpoint reports the counter the tests read"
    );
    let (_, statements) = run_counted(&app, &products_with_categories(20)).await;
    let after = statements_metric(&app).await;
    assert_eq!(after - before, statements);
    assert!(
        after > before,
        "a query raised catalog_db_statements_total ({before} -> {after})"
    );
}

#[tokio::test]
async fn bulk_mutations_cost_the_same_statements_for_ten_items_as_for_five_hundred() {
    let app = TestApp::spawn().await;
    let token = app.create_token("writer").await;
    let create =
        "mutation($inputs: [CreateProductInput!]!) { bulkCreateProducts(inputs: $inputs) { id } }";
    let inputs = |count: usize| {
        serde_json::Value::Array(
            (0..count)
                .map(|index| json!({ "name": format!("Bulk {index}"), "price": "1.00", "categoryId": format!("{}", index % 10 + 1) }))
                .collect(),
        )
    };
    // One authenticated request first, so that both measured calls see the token the same way
    // (validated from the shared cache with Redis, from the database in-process).
    app.gql_as(&token, create, json!({ "inputs": inputs(1) }))
        .await
        .assert_ok();
    let (small, small_cost) = app
        .count_statements(app.gql_as(&token, create, json!({ "inputs": inputs(10) })))
        .await;
    small.assert_ok();
    let (large, large_cost) = app
        .count_statements(app.gql_as(&token, create, json!({ "inputs": inputs(500) })))
        .await;
    assert_eq!(
        large.assert_ok()["bulkCreateProducts"]
            .as_array()
            .map(Vec::len),
        Some(500)
    );
    assert_eq!(
        small_cost, large_cost,
        "one category check and one multi-row INSERT, whatever the size"
    );

    let prices =
        "mutation($updates: [PriceUpdateInput!]!) { bulkUpdatePrices(updates: $updates) { id } }";
    let updates = |count: usize| {
        serde_json::Value::Array(
            (1..=count)
                .map(|id| json!({ "id": id.to_string(), "price": "2.50" }))
                .collect(),
        )
    };
    let (_, small_cost) = app
        .count_statements(app.gql_as(&token, prices, json!({ "updates": updates(10) })))
        .await;
    let (large, large_cost) = app
        .count_statements(app.gql_as(&token, prices, json!({ "updates": updates(500) })))
        .await;
    large.assert_ok();
    assert_eq!(
        small_cost, large_cost,
        "one check, one UPDATE ... CASE, one read back"
    );
    // The token check (in-process cache: validations are not cached) plus those three.
    assert!(
        large_cost <= 4,
        "bulkUpdatePrices cost {large_cost} statements"
    );
}
