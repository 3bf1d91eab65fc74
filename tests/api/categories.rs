//! Categories over HTTP: the list, one category with its product count and product pages,
//! the mutations (unique names, refusing to delete a category that still has products) and
//! the dashboard totals, checked against the seed's formula.

use std::str::FromStr;

use catalog_api::db::seed::{product_category_id, product_price_cents};
use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::support::helpers::{CATEGORIES, PRODUCT_BY_ID, PRODUCTS, TestApp, page_ids};

const CATEGORY: &str = "query Category($id: ID!, $first: Int, $after: String) {
    category(id: $id) {
        id name productCount
        products(first: $first, after: $after) {
            totalCount
            edges { cursor node { id name category { id } } }
            pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
        }
    }
}";

const CATEGORY_NAME: &str =
    "query CategoryName($id: ID!) { category(id: $id) { id name productCount } }";

const ALL_CATEGORIES: &str = "{ categories { id name } }";

const CREATE: &str = "mutation Create($name: String!) { createCategory(input: { name: $name }) { id name productCount } }";

const UPDATE: &str = "mutation Rename($id: ID!, $name: String!) { updateCategory(id: $id, input: { name: $name }) { id name } }";

const DELETE: &str = "mutation Delete($id: ID!) { deleteCategory(id: $id) }";

const DASHBOARD: &str = "{ dashboardStats { totalProducts categoriesCount avgPrice productsByCategory { categoryId name productCount } } }";

/// Ids of the seeded products of `category_id`, ascending.
fn seeded_in(category_id: i32) -> Vec<u32> {
    (1..=PRODUCTS)
        .filter(|j| product_category_id(*j, CATEGORIES) == category_id)
        .collect()
}

/// The mean of `cents` rounded half up to a whole cent, as a two-place decimal.
fn mean_price(cents: &[i64]) -> Decimal {
    let count = cents.len() as i64;
    let sum: i64 = cents.iter().sum();
    Decimal::new((2 * sum + count) / (2 * count), 2)
}

#[tokio::test]
async fn categories_are_listed_by_id_with_their_names() {
    let app = TestApp::spawn().await;
    let response = app.gql(ALL_CATEGORIES, json!({})).await;
    let expected: Vec<Value> = (1..=CATEGORIES)
        .map(|i| json!({ "id": i.to_string(), "name": format!("Category {i:02}") }))
        .collect();
    assert_eq!(response.assert_ok()["categories"], json!(expected));
}

#[tokio::test]
async fn a_category_counts_its_products_and_pages_through_them_with_cursors() {
    let app = TestApp::spawn().await;
    let expected = seeded_in(4);
    let response = app.gql(CATEGORY, json!({ "id": "4", "first": 5 })).await;
    let category = &response.assert_ok()["category"];
    assert_eq!(
        (&category["id"], &category["name"]),
        (&json!("4"), &json!("Category 04"))
    );
    assert_eq!(category["productCount"], 100);
    let connection = &category["products"];
    assert_eq!(connection["totalCount"], 100);
    assert_eq!(page_ids(connection), expected[..5]);
    assert_eq!(page_ids(connection), [3, 13, 23, 33, 43]);
    assert!(
        connection["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .all(|edge| edge["node"]["category"]["id"] == "4")
    );
    let info = &connection["pageInfo"];
    assert_eq!(
        (&info["hasNextPage"], &info["hasPreviousPage"]),
        (&json!(true), &json!(false))
    );
    assert_eq!(info["startCursor"], connection["edges"][0]["cursor"]);
    assert_eq!(info["endCursor"], connection["edges"][4]["cursor"]);

    let response = app
        .gql(
            CATEGORY,
            json!({ "id": "4", "first": 5, "after": info["endCursor"] }),
        )
        .await;
    let next = &response.assert_ok()["category"]["products"];
    assert_eq!(page_ids(next), expected[5..10]);
    assert_eq!(
        (
            &next["pageInfo"]["hasNextPage"],
            &next["pageInfo"]["hasPreviousPage"]
        ),
        (&json!(true), &json!(true))
    );
}

#[tokio::test]
async fn walking_a_categorys_pages_visits_each_of_its_products_once() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    let mut after = Value::Null;
    for _ in 0..=PRODUCTS {
        let response = app
            .gql(CATEGORY, json!({ "id": "8", "first": 30, "after": after }))
            .await;
        let connection = &response.assert_ok()["category"]["products"];
        ids.extend(page_ids(connection));
        if connection["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = connection["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(ids, seeded_in(8));
}

#[tokio::test]
async fn an_unknown_category_reads_as_null_and_a_malformed_id_is_bad_user_input() {
    let app = TestApp::spawn().await;
    let response = app.gql(CATEGORY_NAME, json!({ "id": "11" })).await;
    assert_eq!(response.assert_ok()["category"], Value::Null);
    for id in ["eleven", "-3", "0"] {
        app.gql(CATEGORY_NAME, json!({ "id": id }))
            .await
            .assert_error("BAD_USER_INPUT");
    }
}

#[tokio::test]
async fn category_product_pages_validate_their_size_and_cursor() {
    let app = TestApp::spawn().await;
    for first in [0, 101] {
        app.gql(CATEGORY, json!({ "id": "1", "first": first }))
            .await
            .assert_error("BAD_USER_INPUT");
    }
    app.gql(CATEGORY, json!({ "id": "1", "after": "garbage" }))
        .await
        .assert_error("BAD_USER_INPUT");
    let response = app
        .gql(
            "{ products(orderBy: PRICE_ASC, first: 1) { pageInfo { endCursor } } }",
            json!({}),
        )
        .await;
    let price_cursor = response.assert_ok()["products"]["pageInfo"]["endCursor"].clone();
    app.gql(CATEGORY, json!({ "id": "1", "after": price_cursor }))
        .await
        .assert_error("BAD_USER_INPUT");
}

#[tokio::test]
async fn create_category_returns_an_empty_category_that_reads_back() {
    let app = TestApp::spawn().await;
    let token = app.create_token("categories").await;
    let response = app
        .gql_as(&token, CREATE, json!({ "name": "  Garden " }))
        .await;
    let created = &response.assert_ok()["createCategory"];
    assert_eq!(
        (&created["name"], &created["productCount"]),
        (&json!("Garden"), &json!(0))
    );
    let id = created["id"].clone();

    let response = app.gql(CATEGORY, json!({ "id": id })).await;
    let category = &response.assert_ok()["category"];
    assert_eq!(category["name"], "Garden");
    assert_eq!(category["products"]["edges"], json!([]));
    assert_eq!(category["products"]["totalCount"], 0);
    assert_eq!(category["products"]["pageInfo"]["hasNextPage"], false);
    assert_eq!(category["products"]["pageInfo"]["endCursor"], Value::Null);
    let response = app.gql(ALL_CATEGORIES, json!({})).await;
    let all = response.assert_ok()["categories"]
        .as_array()
        .expect("categories")
        .clone();
    assert_eq!(all.len(), CATEGORIES as usize + 1);
    assert_eq!(
        all.last().map(|last| &last["id"]),
        Some(&id),
        "listed last, by id"
    );
}

#[tokio::test]
async fn update_category_renames_it_for_its_products_too() {
    let app = TestApp::spawn().await;
    let token = app.create_token("categories").await;
    let response = app
        .gql_as(&token, UPDATE, json!({ "id": "3", "name": "Lighting" }))
        .await;
    assert_eq!(
        response.assert_ok()["updateCategory"],
        json!({ "id": "3", "name": "Lighting" })
    );
    let response = app.gql(PRODUCT_BY_ID, json!({ "id": "42" })).await;
    assert_eq!(
        response.assert_ok()["product"]["category"],
        json!({ "id": "3", "name": "Lighting" })
    );
    let response = app
        .gql_as(&token, UPDATE, json!({ "id": "3", "name": "Lighting" }))
        .await;
    assert_eq!(
        response.assert_ok()["updateCategory"]["name"],
        "Lighting",
        "keeping its own name is no conflict"
    );
}

#[tokio::test]
async fn category_names_are_unique_on_create_and_on_rename() {
    let app = TestApp::spawn().await;
    let token = app.create_token("categories").await;
    app.gql_as(&token, CREATE, json!({ "name": "Category 01" }))
        .await
        .assert_error("CONFLICT");
    app.gql_as(&token, UPDATE, json!({ "id": "2", "name": "Category 01" }))
        .await
        .assert_error("CONFLICT");
    let response = app.gql(ALL_CATEGORIES, json!({})).await;
    let names: Vec<&str> = response.assert_ok()["categories"]
        .as_array()
        .expect("categories")
        .iter()
        .map(|category| category["name"].as_str().expect("name"))
        .collect();
    let expected: Vec<String> = (1..=CATEGORIES)
        .map(|i| format!("Category {i:02}"))
        .collect();
    assert_eq!(
        names, expected,
        "neither a new category nor a rename was written"
    );
}

#[tokio::test]
async fn a_category_that_still_has_products_cannot_be_deleted() {
    let app = TestApp::spawn().await;
    let token = app.create_token("categories").await;
    app.gql_as(&token, DELETE, json!({ "id": "5" }))
        .await
        .assert_error("CONFLICT");
    let response = app.gql(CATEGORY_NAME, json!({ "id": "5" })).await;
    assert_eq!(
        response.assert_ok()["category"],
        json!({ "id": "5", "name": "Category 05", "productCount": 100 })
    );
}

#[tokio::test]
async fn an_empty_category_is_deleted_and_then_reads_as_null() {
    let app = TestApp::spawn().await;
    let token = app.create_token("categories").await;
    let response = app
        .gql_as(&token, CREATE, json!({ "name": "Seasonal" }))
        .await;
    let id = response.assert_ok()["createCategory"]["id"].clone();
    let response = app.gql(CATEGORY_NAME, json!({ "id": id })).await;
    assert_eq!(response.assert_ok()["category"]["name"], "Seasonal");

    let response = app.gql_as(&token, DELETE, json!({ "id": id })).await;
    assert_eq!(response.assert_ok()["deleteCategory"], id);
    let response = app.gql(CATEGORY_NAME, json!({ "id": id })).await;
    assert_eq!(response.assert_ok()["category"], Value::Null);
    app.gql_as(&token, DELETE, json!({ "id": id }))
        .await
        .assert_error("NOT_FOUND");
}

#[tokio::test]
async fn a_category_emptied_of_its_products_can_be_deleted() {
    let app = TestApp::spawn().await;
    let token = app.create_token("categories").await;
    let response = app
        .gql_as(&token, CREATE, json!({ "name": "Clearance" }))
        .await;
    let id = response.assert_ok()["createCategory"]["id"].clone();
    let create_product = "mutation($category: ID!) { createProduct(input: { name: \"Last One\", price: \"1\", categoryId: $category }) { id } }";
    let response = app
        .gql_as(&token, create_product, json!({ "category": id }))
        .await;
    let product_id = response.assert_ok()["createProduct"]["id"].clone();

    app.gql_as(&token, DELETE, json!({ "id": id }))
        .await
        .assert_error("CONFLICT");
    let delete_product = "mutation($id: ID!) { deleteProduct(id: $id) }";
    app.gql_as(&token, delete_product, json!({ "id": product_id }))
        .await
        .assert_ok();
    let response = app.gql_as(&token, DELETE, json!({ "id": id })).await;
    assert_eq!(response.assert_ok()["deleteCategory"], id);
}

#[tokio::test]
async fn category_names_must_have_one_to_one_hundred_characters() {
    let app = TestApp::spawn().await;
    let token = app.create_token("categories").await;
    for name in [
        "x".repeat(101),
        String::new(),
        "  ".to_owned(),
        "tab\there".to_owned(),
    ] {
        app.gql_as(&token, CREATE, json!({ "name": name }))
            .await
            .assert_error("BAD_USER_INPUT");
        app.gql_as(&token, UPDATE, json!({ "id": "1", "name": name }))
            .await
            .assert_error("BAD_USER_INPUT");
    }
    let response = app.gql(CATEGORY_NAME, json!({ "id": "1" })).await;
    assert_eq!(response.assert_ok()["category"]["name"], "Category 01");
    let longest = "x".repeat(100);
    let response = app.gql_as(&token, CREATE, json!({ "name": longest })).await;
    assert_eq!(response.assert_ok()["createCategory"]["name"], longest);
}

#[tokio::test]
async fn renaming_or_deleting_an_unknown_category_is_not_found() {
    let app = TestApp::spawn().await;
    let token = app.create_token("categories").await;
    app.gql_as(&token, UPDATE, json!({ "id": "404", "name": "Nowhere" }))
        .await
        .assert_error("NOT_FOUND");
    app.gql_as(&token, DELETE, json!({ "id": "404" }))
        .await
        .assert_error("NOT_FOUND");
}

#[tokio::test]
async fn dashboard_stats_total_the_seeded_catalog() {
    let app = TestApp::spawn().await;
    let token = app.create_token("dashboard").await;
    let response = app.gql_as(&token, DASHBOARD, json!({})).await;
    let stats = &response.assert_ok()["dashboardStats"];
    assert_eq!(stats["totalProducts"], PRODUCTS);
    assert_eq!(stats["categoriesCount"], CATEGORIES);

    let prices: Vec<i64> = (1..=PRODUCTS).map(product_price_cents).collect();
    let average = stats["avgPrice"]
        .as_str()
        .expect("avgPrice is a decimal string");
    let average = Decimal::from_str(average).expect("avgPrice parses");
    assert_eq!(average, mean_price(&prices));
    assert!(average.scale() <= 2, "rounded to cents: {average}");

    let expected: Vec<Value> = (1..=CATEGORIES)
        .map(|i| json!({ "categoryId": i.to_string(), "name": format!("Category {i:02}"), "productCount": 100 }))
        .collect();
    assert_eq!(stats["productsByCategory"], json!(expected));
}

#[tokio::test]
async fn dashboard_stats_follow_a_new_product_and_an_empty_category() {
    let app = TestApp::spawn().await;
    let token = app.create_token("dashboard").await;
    app.gql_as(&token, DASHBOARD, json!({})).await.assert_ok();
    let response = app
        .gql_as(&token, CREATE, json!({ "name": "Empty Shelf" }))
        .await;
    let empty_id = response.assert_ok()["createCategory"]["id"].clone();
    let create_product = "mutation { createProduct(input: { name: \"Pricey\", price: \"99999.99\", categoryId: \"1\" }) { id } }";
    app.gql_as(&token, create_product, json!({}))
        .await
        .assert_ok();

    let response = app.gql_as(&token, DASHBOARD, json!({})).await;
    let stats = &response.assert_ok()["dashboardStats"];
    assert_eq!(stats["totalProducts"], PRODUCTS + 1);
    assert_eq!(stats["categoriesCount"], CATEGORIES + 1);
    let mut prices: Vec<i64> = (1..=PRODUCTS).map(product_price_cents).collect();
    prices.push(9_999_999);
    let average =
        Decimal::from_str(stats["avgPrice"].as_str().expect("avgPrice")).expect("decimal");
    assert_eq!(average, mean_price(&prices));
    let by_category = stats["productsByCategory"].as_array().expect("list");
    assert_eq!(by_category[0]["productCount"], 101);
    assert_eq!(
        by_category.last(),
        Some(&json!({ "categoryId": empty_id, "name": "Empty Shelf", "productCount": 0 }))
    );
}

#[tokio::test]
async fn dashboard_stats_require_a_token() {
    let app = TestApp::spawn().await;
    let response = app.gql(DASHBOARD, json!({})).await;
    response.assert_error("UNAUTHENTICATED");
    assert!(
        response.data()["dashboardStats"].is_null(),
        "no totals: {}",
        response.body
    );
}
