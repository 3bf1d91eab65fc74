//! Product queries: lookups, filtered keyset pages, ordering.

use serde_json::json;

use crate::helpers::{PRODUCT_BY_ID, TestApp, seeded_price};

#[tokio::test]
async fn a_product_is_read_by_id_with_its_category() {
    let app = TestApp::spawn().await;
    let response = app.gql(PRODUCT_BY_ID, json!({ "id": "42" })).await;
    let product = &response.assert_ok()["product"];
    assert_eq!(product["name"], "Product 000042");
    assert_eq!(product["price"], seeded_price(42));
    assert_eq!(product["createdAt"], "2025-01-01T00:42:00+00:00");
    assert_eq!(product["category"]["id"], "3");
    assert_eq!(product["category"]["name"], "Category 03");
}
