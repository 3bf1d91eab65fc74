//! Products over HTTP: lookups, keyset pages in every ordering, filters, and the mutations
//! with their validation and all-or-nothing bulk writes. Expected values come from the
//! seed's formula, so every assertion compares against data computed independently.

use std::str::FromStr;

use catalog_api::db::seed::{product_category_id, product_price_cents};
use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::support::helpers::{
    CATEGORIES, PRODUCT_BY_ID, PRODUCTS, TestApp, page_ids, seeded_price,
};

const PAGE: &str =
    "query Page($filter: ProductFilter, $orderBy: ProductOrder, $first: Int, $after: String) {
    products(filter: $filter, orderBy: $orderBy, first: $first, after: $after) {
        totalCount
        edges { cursor node { id name price createdAt category { id } } }
        pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    }
}";

const CREATE: &str = "mutation Create($input: CreateProductInput!) {
    createProduct(input: $input) { id name price category { id name } }
}";

const UPDATE: &str = "mutation Update($id: ID!, $input: UpdateProductInput!) {
    updateProduct(id: $id, input: $input) { id name price category { id name } }
}";

const DELETE: &str = "mutation Delete($id: ID!) { deleteProduct(id: $id) }";

const BULK_CREATE: &str = "mutation BulkCreate($inputs: [CreateProductInput!]!) {
    bulkCreateProducts(inputs: $inputs) { id name price category { id } }
}";

const BULK_PRICES: &str = "mutation BulkPrices($updates: [PriceUpdateInput!]!) {
    bulkUpdatePrices(updates: $updates) { id price }
}";

const TOTAL: &str =
    "query Total($filter: ProductFilter) { products(filter: $filter, first: 1) { totalCount } }";

/// The seeded products, by id, that satisfy `keep`.
fn seeded(keep: impl Fn(u32) -> bool) -> Vec<u32> {
    (1..=PRODUCTS).filter(|j| keep(*j)).collect()
}

/// Every seeded product, in the order `compare` defines.
fn seeded_sorted_by(compare: impl Fn(&u32, &u32) -> std::cmp::Ordering) -> Vec<u32> {
    let mut ids = seeded(|_| true);
    ids.sort_by(compare);
    ids
}

fn category_of(j: u32) -> i32 {
    product_category_id(j, CATEGORIES)
}

fn id_of(value: &Value) -> u32 {
    value
        .as_str()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("a numeric ID, got {value}"))
}

fn decimal(value: &Value) -> Decimal {
    value
        .as_str()
        .and_then(|text| Decimal::from_str(text).ok())
        .unwrap_or_else(|| panic!("a decimal, got {value}"))
}

/// Follows `endCursor` from the first page to the last and returns every id seen, in order,
/// and the number of pages. Checks each page's `pageInfo` on the way.
async fn walk_all_pages(
    app: &TestApp,
    filter: Value,
    order: &str,
    first: usize,
) -> (Vec<u32>, usize) {
    let mut ids = Vec::new();
    let mut after = Value::Null;
    for page in 1..=PRODUCTS as usize {
        let variables =
            json!({ "filter": filter, "orderBy": order, "first": first, "after": after });
        let response = app.gql(PAGE, variables).await;
        let connection = &response.assert_ok()["products"];
        let page_ids = page_ids(connection);
        let info = &connection["pageInfo"];
        assert_eq!(
            info["hasPreviousPage"],
            page > 1,
            "hasPreviousPage of page {page}"
        );
        let edges = connection["edges"].as_array().expect("edges");
        assert_eq!(
            info["startCursor"],
            edges
                .first()
                .map_or(Value::Null, |edge| edge["cursor"].clone())
        );
        assert_eq!(
            info["endCursor"],
            edges
                .last()
                .map_or(Value::Null, |edge| edge["cursor"].clone())
        );
        ids.extend(page_ids.iter().copied());
        if info["hasNextPage"] == false {
            return (ids, page);
        }
        assert_eq!(page_ids.len(), first, "a page followed by another is full");
        after = info["endCursor"].clone();
    }
    panic!("more pages than products: the cursor does not advance")
}

async fn total_count(app: &TestApp, filter: Value) -> i64 {
    let response = app.gql(TOTAL, json!({ "filter": filter })).await;
    response.assert_ok()["products"]["totalCount"]
        .as_i64()
        .expect("totalCount")
}

/// A cursor with the given (decoded) content, as a client might forge one.
fn cursor_of(content: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(content)
}

fn new_product(name: &str, price: &str, category_id: &str) -> Value {
    json!({ "name": name, "price": price, "categoryId": category_id })
}

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

#[tokio::test]
async fn an_unknown_product_id_reads_as_null_without_an_error() {
    let app = TestApp::spawn().await;
    let response = app.gql(PRODUCT_BY_ID, json!({ "id": "1001" })).await;
    assert_eq!(response.assert_ok()["product"], Value::Null);
}

#[tokio::test]
async fn a_malformed_product_id_is_bad_user_input() {
    let app = TestApp::spawn().await;
    for id in ["abc", "-1", "0", "1.5", ""] {
        let response = app.gql(PRODUCT_BY_ID, json!({ "id": id })).await;
        response.assert_error("BAD_USER_INPUT");
        assert_eq!(
            response.data()["product"],
            Value::Null,
            "no product for {id:?}"
        );
    }
}

#[tokio::test]
async fn the_default_page_is_the_first_twenty_products_by_id() {
    let app = TestApp::spawn().await;
    let response = app.gql(PAGE, json!({})).await;
    let connection = &response.assert_ok()["products"];
    assert_eq!(page_ids(connection), (1..=20).collect::<Vec<u32>>());
    assert_eq!(connection["totalCount"], PRODUCTS);
    let info = &connection["pageInfo"];
    assert_eq!(info["hasNextPage"], true);
    assert_eq!(info["hasPreviousPage"], false);
    let edges = connection["edges"].as_array().expect("edges");
    assert_eq!(info["startCursor"], edges[0]["cursor"]);
    assert_eq!(info["endCursor"], edges[19]["cursor"]);
    let mut cursors: Vec<&str> = edges
        .iter()
        .map(|edge| edge["cursor"].as_str().expect("cursor"))
        .collect();
    cursors.sort_unstable();
    cursors.dedup();
    assert_eq!(cursors.len(), 20, "every edge has its own cursor");
    let node = &edges[6]["node"];
    assert_eq!(node["name"], "Product 000007");
    assert_eq!(node["price"], seeded_price(7));
    assert_eq!(node["category"]["id"], category_of(7).to_string());
}

#[tokio::test]
async fn walking_every_page_of_a_category_visits_each_of_its_products_once_in_order() {
    let app = TestApp::spawn().await;
    let expected = seeded(|j| category_of(j) == 7);
    let (ids, pages) = walk_all_pages(&app, json!({ "categoryId": "7" }), "ID_ASC", 30).await;
    assert_eq!(ids, expected);
    assert_eq!(pages, expected.len().div_ceil(30));
    assert_eq!(
        total_count(&app, json!({ "categoryId": "7" })).await,
        expected.len() as i64
    );
}

#[tokio::test]
async fn price_ascending_sorts_by_price_then_id() {
    let app = TestApp::spawn().await;
    let response = app
        .gql(PAGE, json!({ "orderBy": "PRICE_ASC", "first": 100 }))
        .await;
    let connection = &response.assert_ok()["products"];
    let expected = seeded_sorted_by(|a, b| {
        product_price_cents(*a)
            .cmp(&product_price_cents(*b))
            .then(a.cmp(b))
    });
    assert_eq!(page_ids(connection), expected[..100]);
    let prices: Vec<Decimal> = connection["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|edge| decimal(&edge["node"]["price"]))
        .collect();
    assert!(
        prices.windows(2).all(|pair| pair[0] <= pair[1]),
        "ascending prices: {prices:?}"
    );
}

#[tokio::test]
async fn price_descending_sorts_by_price_from_the_most_expensive() {
    let app = TestApp::spawn().await;
    let response = app
        .gql(PAGE, json!({ "orderBy": "PRICE_DESC", "first": 100 }))
        .await;
    let connection = &response.assert_ok()["products"];
    let expected = seeded_sorted_by(|a, b| {
        product_price_cents(*b)
            .cmp(&product_price_cents(*a))
            .then(b.cmp(a))
    });
    assert_eq!(page_ids(connection), expected[..100]);
    assert_eq!(
        connection["edges"][0]["node"]["price"],
        seeded_price(expected[0])
    );
}

#[tokio::test]
async fn newest_first_sorts_by_creation_time_descending() {
    let app = TestApp::spawn().await;
    let response = app
        .gql(PAGE, json!({ "orderBy": "NEWEST_FIRST", "first": 50 }))
        .await;
    let connection = &response.assert_ok()["products"];
    assert_eq!(
        page_ids(connection),
        (951..=1000).rev().collect::<Vec<u32>>()
    );
    let created: Vec<&str> = connection["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|edge| edge["node"]["createdAt"].as_str().expect("createdAt"))
        .collect();
    assert_eq!(
        created[0], "2025-01-01T16:40:00+00:00",
        "product 1000 was created 1000 minutes after the epoch"
    );
    assert!(
        created.windows(2).all(|pair| pair[0] > pair[1]),
        "strictly newest first: {created:?}"
    );
}

#[tokio::test]
async fn paging_price_ascending_with_cursors_yields_one_sorted_sequence_without_duplicates() {
    let app = TestApp::spawn().await;
    let expected = seeded_sorted_by(|a, b| {
        product_price_cents(*a)
            .cmp(&product_price_cents(*b))
            .then(a.cmp(b))
    });
    let mut ids = Vec::new();
    let mut after = Value::Null;
    for _ in 0..3 {
        let response = app
            .gql(
                PAGE,
                json!({ "orderBy": "PRICE_ASC", "first": 50, "after": after }),
            )
            .await;
        let connection = &response.assert_ok()["products"];
        ids.extend(page_ids(connection));
        assert_eq!(connection["pageInfo"]["hasNextPage"], true);
        after = connection["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(ids, expected[..150]);
}

#[tokio::test]
async fn paging_price_descending_and_newest_first_covers_every_product_once() {
    let app = TestApp::spawn().await;
    let by_price = seeded_sorted_by(|a, b| {
        product_price_cents(*b)
            .cmp(&product_price_cents(*a))
            .then(b.cmp(a))
    });
    let (ids, _) = walk_all_pages(&app, json!({ "categoryId": "2" }), "PRICE_DESC", 40).await;
    assert_eq!(
        ids,
        by_price
            .into_iter()
            .filter(|j| category_of(*j) == 2)
            .collect::<Vec<u32>>()
    );
    let (ids, _) = walk_all_pages(&app, json!({ "categoryId": "9" }), "NEWEST_FIRST", 40).await;
    assert_eq!(
        ids,
        seeded(|j| category_of(j) == 9)
            .into_iter()
            .rev()
            .collect::<Vec<u32>>()
    );
}

#[tokio::test]
async fn equal_prices_are_ordered_by_id_and_paged_without_skipping_or_repeating() {
    let app = TestApp::spawn().await;
    let token = app.create_token("products").await;
    let inputs: Vec<Value> = (0..5)
        .map(|n| new_product(&format!("Same Price {n}"), "1234.56", "1"))
        .collect();
    let response = app
        .gql_as(&token, BULK_CREATE, json!({ "inputs": inputs }))
        .await;
    let created: Vec<u32> = response.assert_ok()["bulkCreateProducts"]
        .as_array()
        .expect("list")
        .iter()
        .map(|product| id_of(&product["id"]))
        .collect();
    let mut ascending = created.clone();
    ascending.sort_unstable();
    let same_price = json!({ "minPrice": "1234.56", "maxPrice": "1234.56" });

    let (ids, pages) = walk_all_pages(&app, same_price.clone(), "PRICE_ASC", 2).await;
    assert_eq!((ids, pages), (ascending.clone(), 3));
    let (ids, _) = walk_all_pages(&app, same_price, "PRICE_DESC", 2).await;
    assert_eq!(ids, ascending.into_iter().rev().collect::<Vec<u32>>());
}

#[tokio::test]
async fn price_bounds_are_inclusive() {
    let app = TestApp::spawn().await;
    // Bounds equal to the prices of two seeded products, so both ends are exercised.
    let (low, high) = (product_price_cents(10), product_price_cents(10) + 4_000);
    let expected = seeded(|j| (low..=high).contains(&product_price_cents(j)));
    assert!(
        expected.contains(&10) && expected.len() > 2 && expected.len() <= 100,
        "a useful range: {expected:?}"
    );
    let top = *expected
        .iter()
        .max_by_key(|j| product_price_cents(**j))
        .expect("a product");
    let filter = json!({ "minPrice": seeded_price(10), "maxPrice": seeded_price(top) });
    let response = app
        .gql(PAGE, json!({ "filter": filter, "first": 100 }))
        .await;
    let connection = &response.assert_ok()["products"];
    let expected: Vec<u32> = expected
        .into_iter()
        .filter(|j| product_price_cents(*j) <= product_price_cents(top))
        .collect();
    assert_eq!(page_ids(connection), expected);
    assert_eq!(connection["totalCount"], expected.len());
}

#[tokio::test]
async fn min_price_alone_and_max_price_alone_narrow_the_list() {
    let app = TestApp::spawn().await;
    let cheap = seeded(|j| product_price_cents(j) <= 1_000);
    let dear = seeded(|j| product_price_cents(j) >= 99_000);
    assert_eq!(
        total_count(&app, json!({ "maxPrice": "10" })).await,
        cheap.len() as i64
    );
    assert_eq!(
        total_count(&app, json!({ "minPrice": "990.00" })).await,
        dear.len() as i64
    );
    let response = app
        .gql(
            PAGE,
            json!({ "filter": { "maxPrice": "10" }, "first": 100 }),
        )
        .await;
    assert_eq!(page_ids(&response.assert_ok()["products"]), cheap);
}

#[tokio::test]
async fn search_matches_a_substring_of_the_product_name_in_any_case() {
    let app = TestApp::spawn().await;
    let expected = seeded(|j| format!("product {j:06}").contains("product 00012"));
    assert_eq!(expected, (120..=129).collect::<Vec<u32>>());
    for search in ["product 00012", "PRODUCT 00012", "Product 00012"] {
        let response = app
            .gql(
                PAGE,
                json!({ "filter": { "search": search }, "first": 100 }),
            )
            .await;
        let connection = &response.assert_ok()["products"];
        assert_eq!(page_ids(connection), expected, "search {search:?}");
        assert_eq!(connection["totalCount"], expected.len());
    }
}

#[tokio::test]
async fn search_matches_the_category_name_too() {
    let app = TestApp::spawn().await;
    let expected = seeded(|j| category_of(j) == 3);
    let (ids, _) = walk_all_pages(&app, json!({ "search": "category 03" }), "ID_ASC", 100).await;
    assert_eq!(ids, expected);
    assert_eq!(
        total_count(&app, json!({ "search": "CATEGORY 03" })).await,
        expected.len() as i64
    );
}

/// Search folds case and normalizes in every language, on every backend: German, Turkish,
/// Greek and Korean names, typed in other cases and (Korean, accents) decomposed, as some
/// keyboards and systems send them; renames and category names too; rows written before the
/// search keys existed get theirs at start-up.
#[tokio::test]
async fn search_folds_case_and_normalizes_in_every_language() {
    let app = TestApp::spawn().await;
    let token = app.create_token("products").await;
    let category = app
        .gql_as(
            &token,
            "mutation { createCategory(input: {name: \"ΣΟΦΊΑ Ελληνικά\"}) { id } }",
            json!({}),
        )
        .await;
    let category_id = category.assert_ok()["createCategory"]["id"].clone();
    let mut created = std::collections::BTreeMap::new();
    for name in [
        "Äpfel Grün",
        "İSTANBUL Çayı",
        "Straße der Lampen",
        "한국어 사전",
        "Café Crème",
    ] {
        let response = app
            .gql_as(
                &token,
                CREATE,
                json!({ "input": { "name": name, "price": "1.00", "categoryId": category_id } }),
            )
            .await;
        created.insert(name, response.assert_ok()["createProduct"]["id"].clone());
    }
    let decomposed_korean: String =
        unicode_normalization::UnicodeNormalization::nfd("한국어").collect();
    let decomposed_cafe = "cafe\u{301} cre\u{300}me";
    for (search, name) in [
        ("äpfel grün", "Äpfel Grün"),
        ("ÄPFEL", "Äpfel Grün"),
        ("istanbul çayı", "İSTANBUL Çayı"),
        ("ÇAYI", "İSTANBUL Çayı"),
        ("STRASSE", "Straße der Lampen"),
        (decomposed_korean.as_str(), "한국어 사전"),
        (decomposed_cafe, "Café Crème"),
    ] {
        let found = app
            .gql(
                PAGE,
                json!({ "filter": { "search": search }, "first": 100 }),
            )
            .await;
        let ids: Vec<&Value> = found.assert_ok()["products"]["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .map(|edge| &edge["node"]["id"])
            .collect();
        assert_eq!(
            ids,
            vec![&created[name]],
            "search {search:?} finds {name:?}"
        );
    }
    // The category's name, in another case.
    let by_category = app
        .gql(
            PAGE,
            json!({ "filter": { "search": "σοφία ελληνικά" }, "first": 100 }),
        )
        .await;
    assert_eq!(
        by_category.assert_ok()["products"]["totalCount"],
        created.len()
    );
    // A rename is searched by its new name.
    let renamed = app
        .gql_as(
            &token,
            UPDATE,
            json!({ "id": created["Café Crème"], "input": { "name": "ΟΔΟΣ Lamp" } }),
        )
        .await;
    renamed.assert_ok();
    let found = app
        .gql(
            PAGE,
            json!({ "filter": { "search": "οδος lamp" }, "first": 100 }),
        )
        .await;
    assert_eq!(found.assert_ok()["products"]["totalCount"], 1);

    // A row without its key (written before the keys existed) is keyed at the next start.
    use sea_orm::ConnectionTrait;
    let db = &app.state.db;
    db.execute_unprepared("UPDATE product SET name_search = '' WHERE name = 'Äpfel Grün'")
        .await
        .expect("clear a key");
    let restarted = TestApp::start(app.config.clone(), None, None).await;
    let found = restarted
        .gql(
            PAGE,
            json!({ "filter": { "search": "ÄPFEL" }, "first": 100 }),
        )
        .await;
    assert_eq!(found.assert_ok()["products"]["totalCount"], 1);
}

#[tokio::test]
async fn search_treats_like_wildcards_literally() {
    let app = TestApp::spawn().await;
    for search in ["%", "_", "Product_000042", "Product%42", "\\"] {
        assert_eq!(
            total_count(&app, json!({ "search": search })).await,
            0,
            "search {search:?}"
        );
    }
    let token = app.create_token("products").await;
    app.gql_as(
        &token,
        CREATE,
        json!({ "input": new_product("100% wool_scarf", "10", "1") }),
    )
    .await
    .assert_ok();
    assert_eq!(
        total_count(&app, json!({ "search": "100% WOOL_" })).await,
        1
    );
}

#[tokio::test]
async fn filters_combine() {
    let app = TestApp::spawn().await;
    let filter = json!({ "categoryId": "3", "search": "product 0001", "minPrice": "100", "maxPrice": "800.00" });
    let expected = seeded(|j| {
        category_of(j) == 3
            && format!("product {j:06}").contains("product 0001")
            && (10_000..=80_000).contains(&product_price_cents(j))
    });
    assert!(!expected.is_empty(), "the filter keeps some products");
    let response = app
        .gql(PAGE, json!({ "filter": filter, "first": 100 }))
        .await;
    let connection = &response.assert_ok()["products"];
    assert_eq!(page_ids(connection), expected);
    assert_eq!(connection["totalCount"], expected.len());
}

#[tokio::test]
async fn an_empty_filter_result_has_an_empty_page() {
    let app = TestApp::spawn().await;
    let response = app
        .gql(PAGE, json!({ "filter": { "categoryId": "999" } }))
        .await;
    let connection = &response.assert_ok()["products"];
    assert_eq!(connection["edges"], json!([]));
    assert_eq!(connection["totalCount"], 0);
    assert_eq!(
        connection["pageInfo"],
        json!({ "hasNextPage": false, "hasPreviousPage": false, "startCursor": null, "endCursor": null })
    );
}

#[tokio::test]
async fn invalid_filters_are_bad_user_input() {
    let app = TestApp::spawn().await;
    for filter in [
        json!({ "minPrice": "10", "maxPrice": "5" }),
        json!({ "minPrice": "-1" }),
        json!({ "maxPrice": "1.001" }),
        json!({ "categoryId": "seven" }),
        json!({ "search": "x".repeat(201) }),
    ] {
        app.gql(PAGE, json!({ "filter": filter }))
            .await
            .assert_error("BAD_USER_INPUT");
    }
}

#[tokio::test]
async fn page_size_must_be_between_one_and_one_hundred() {
    let app = TestApp::spawn().await;
    for first in [0, -1, 101] {
        let response = app.gql(PAGE, json!({ "first": first })).await;
        response.assert_error("BAD_USER_INPUT");
        assert_eq!(response.data()["products"], Value::Null);
    }
    let response = app.gql(PAGE, json!({ "first": 100 })).await;
    assert_eq!(page_ids(&response.assert_ok()["products"]).len(), 100);
}

#[tokio::test]
async fn a_malformed_cursor_is_bad_user_input() {
    let app = TestApp::spawn().await;
    for (order, after) in [
        ("ID_ASC", "not a cursor".to_owned()),
        ("ID_ASC", String::new()),
        ("ID_ASC", cursor_of("v1:id:0:x")),
        ("ID_ASC", cursor_of("v2:id:0:1")),
        ("PRICE_ASC", cursor_of("v1:pa:cheap:1")),
        // A creation time beyond any representable date.
        ("NEWEST_FIRST", cursor_of(&format!("v1:nf:{}:1", i64::MAX))),
    ] {
        app.gql(PAGE, json!({ "orderBy": order, "after": after }))
            .await
            .assert_error("BAD_USER_INPUT");
    }
}

#[tokio::test]
async fn a_cursor_only_continues_the_ordering_it_came_from() {
    let app = TestApp::spawn().await;
    let response = app
        .gql(PAGE, json!({ "orderBy": "PRICE_ASC", "first": 5 }))
        .await;
    let cursor = response.assert_ok()["products"]["pageInfo"]["endCursor"].clone();
    for order in ["ID_ASC", "PRICE_DESC", "NEWEST_FIRST"] {
        app.gql(PAGE, json!({ "orderBy": order, "after": cursor }))
            .await
            .assert_error("BAD_USER_INPUT");
    }
    let response = app
        .gql(
            PAGE,
            json!({ "orderBy": "PRICE_ASC", "first": 5, "after": cursor }),
        )
        .await;
    assert_eq!(
        response.assert_ok()["products"]["pageInfo"]["hasPreviousPage"],
        true
    );
}

#[tokio::test]
async fn create_product_returns_the_product_with_its_category_and_a_two_place_price() {
    let app = TestApp::spawn().await;
    let token = app.create_token("products").await;
    let response = app
        .gql_as(
            &token,
            CREATE,
            json!({ "input": new_product("  Desk Lamp ", "12.5", "4") }),
        )
        .await;
    let created = &response.assert_ok()["createProduct"];
    assert_eq!(created["name"], "Desk Lamp", "names are trimmed");
    assert_eq!(decimal(&created["price"]), Decimal::new(1250, 2));
    assert_eq!(created["price"], "12.50", "prices print with two places");
    assert_eq!(
        created["category"],
        json!({ "id": "4", "name": "Category 04" })
    );
    assert!(id_of(&created["id"]) > PRODUCTS, "a new id");

    let response = app.gql(PRODUCT_BY_ID, json!({ "id": created["id"] })).await;
    let read = &response.assert_ok()["product"];
    assert_eq!(read["name"], "Desk Lamp");
    assert_eq!(read["price"], "12.50");
    assert_eq!(total_count(&app, json!({ "categoryId": "4" })).await, 101);
}

#[tokio::test]
async fn update_product_changes_only_the_given_fields() {
    let app = TestApp::spawn().await;
    let token = app.create_token("products").await;
    let response = app
        .gql_as(
            &token,
            UPDATE,
            json!({ "id": "42", "input": { "name": "Renamed" } }),
        )
        .await;
    let updated = &response.assert_ok()["updateProduct"];
    assert_eq!(updated["name"], "Renamed");
    assert_eq!(updated["price"], seeded_price(42));
    assert_eq!(updated["category"]["id"], "3");

    let response = app
        .gql_as(
            &token,
            UPDATE,
            json!({ "id": "42", "input": { "price": "7" } }),
        )
        .await;
    let updated = &response.assert_ok()["updateProduct"];
    assert_eq!(
        (&updated["name"], &updated["price"]),
        (&json!("Renamed"), &json!("7.00"))
    );

    let response = app.gql(PRODUCT_BY_ID, json!({ "id": "42" })).await;
    let read = &response.assert_ok()["product"];
    assert_eq!(
        (&read["name"], &read["price"], &read["category"]["id"]),
        (&json!("Renamed"), &json!("7.00"), &json!("3"))
    );
}

#[tokio::test]
async fn update_product_moves_a_product_to_another_category() {
    let app = TestApp::spawn().await;
    let token = app.create_token("products").await;
    let response = app
        .gql_as(
            &token,
            UPDATE,
            json!({ "id": "42", "input": { "categoryId": "5" } }),
        )
        .await;
    let moved = &response.assert_ok()["updateProduct"];
    assert_eq!(
        moved["category"],
        json!({ "id": "5", "name": "Category 05" })
    );
    assert_eq!(
        (&moved["name"], &moved["price"]),
        (&json!("Product 000042"), &json!(seeded_price(42)))
    );
    assert_eq!(total_count(&app, json!({ "categoryId": "5" })).await, 101);
    assert_eq!(total_count(&app, json!({ "categoryId": "3" })).await, 99);
}

#[tokio::test]
async fn update_product_refuses_unknown_products_and_categories() {
    let app = TestApp::spawn().await;
    let token = app.create_token("products").await;
    for (id, input, code) in [
        ("5000", json!({ "name": "Ghost" }), "NOT_FOUND"),
        ("42", json!({ "categoryId": "99" }), "NOT_FOUND"),
        ("42", json!({ "name": "" }), "BAD_USER_INPUT"),
        ("42", json!({ "price": "-3" }), "BAD_USER_INPUT"),
    ] {
        let variables = json!({ "id": id, "input": input });
        app.gql_as(&token, UPDATE, variables)
            .await
            .assert_error(code);
    }
    let response = app.gql(PRODUCT_BY_ID, json!({ "id": "42" })).await;
    let read = &response.assert_ok()["product"];
    assert_eq!(
        (&read["name"], &read["price"], &read["category"]["id"]),
        (
            &json!("Product 000042"),
            &json!(seeded_price(42)),
            &json!("3")
        )
    );
}

#[tokio::test]
async fn delete_product_returns_its_id_and_the_product_is_gone() {
    let app = TestApp::spawn().await;
    let token = app.create_token("products").await;
    let response = app.gql_as(&token, DELETE, json!({ "id": "42" })).await;
    assert_eq!(response.assert_ok()["deleteProduct"], "42");
    assert_eq!(
        app.gql(PRODUCT_BY_ID, json!({ "id": "42" }))
            .await
            .assert_ok()["product"],
        Value::Null
    );
    assert_eq!(total_count(&app, json!({})).await, i64::from(PRODUCTS) - 1);
    app.gql_as(&token, DELETE, json!({ "id": "42" }))
        .await
        .assert_error("NOT_FOUND");
}

#[tokio::test]
async fn bulk_create_products_writes_every_item_and_returns_them_in_order() {
    let app = TestApp::spawn().await;
    let token = app.create_token("products").await;
    let inputs = [
        new_product("Bulk Chair", "49.99", "1"),
        new_product("Bulk Table", "150", "2"),
        new_product("Bulk Sofa", "0", "2"),
    ];
    let response = app
        .gql_as(&token, BULK_CREATE, json!({ "inputs": inputs }))
        .await;
    let created = response.assert_ok()["bulkCreateProducts"]
        .as_array()
        .expect("list")
        .clone();
    let summary: Vec<(&str, &str, &str)> = created
        .iter()
        .map(|product| {
            (
                product["name"].as_str().expect("name"),
                product["price"].as_str().expect("price"),
                product["category"]["id"].as_str().expect("category"),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("Bulk Chair", "49.99", "1"),
            ("Bulk Table", "150.00", "2"),
            ("Bulk Sofa", "0.00", "2")
        ]
    );

    for product in &created {
        let response = app.gql(PRODUCT_BY_ID, json!({ "id": product["id"] })).await;
        assert_eq!(response.assert_ok()["product"]["name"], product["name"]);
    }
    assert_eq!(total_count(&app, json!({ "search": "bulk " })).await, 3);
    assert_eq!(total_count(&app, json!({})).await, i64::from(PRODUCTS) + 3);
}

#[tokio::test]
async fn bulk_update_prices_sets_every_price() {
    let app = TestApp::spawn().await;
    let token = app.create_token("products").await;
    let updates = json!([{ "id": "3", "price": "1.5" }, { "id": "1", "price": "0.99" }, { "id": "700", "price": "99999999.99" }]);
    let response = app
        .gql_as(&token, BULK_PRICES, json!({ "updates": updates }))
        .await;
    assert_eq!(
        response.assert_ok()["bulkUpdatePrices"],
        json!([{ "id": "3", "price": "1.50" }, { "id": "1", "price": "0.99" }, { "id": "700", "price": "99999999.99" }]),
        "the answer follows the order of `updates`"
    );
    let response = app
        .gql("{ a: product(id: \"1\") { price } b: product(id: \"3\") { price } c: product(id: \"700\") { price } d: product(id: \"2\") { price } }", json!({}))
        .await;
    assert_eq!(
        response.assert_ok(),
        &json!({ "a": { "price": "0.99" }, "b": { "price": "1.50" }, "c": { "price": "99999999.99" }, "d": { "price": seeded_price(2) } })
    );
}

#[tokio::test]
async fn bulk_create_with_one_unknown_category_writes_nothing() {
    let app = TestApp::spawn().await;
    let token = app.create_token("products").await;
    let inputs = [
        new_product("Atomic One", "1", "1"),
        new_product("Atomic Two", "2", "77"),
        new_product("Atomic Three", "3", "2"),
    ];
    let response = app
        .gql_as(&token, BULK_CREATE, json!({ "inputs": inputs }))
        .await;
    response.assert_error("NOT_FOUND");
    assert_eq!(response.data(), &Value::Null);
    assert_eq!(total_count(&app, json!({ "search": "atomic" })).await, 0);
    assert_eq!(total_count(&app, json!({})).await, i64::from(PRODUCTS));
}

#[tokio::test]
async fn bulk_update_prices_answers_in_the_order_of_its_input() {
    let app = TestApp::spawn().await;
    let token = app.create_token("products").await;
    let descending: Vec<u32> = (1..=40).rev().collect();
    // A fixed permutation that is neither ascending nor descending (17 is coprime with 97).
    let shuffled: Vec<u32> = (0..97).map(|index| 1 + (index * 17 + 5) % 97).collect();
    for ids in [descending, shuffled] {
        let updates: Vec<Value> = ids
            .iter()
            .map(|id| json!({ "id": id.to_string(), "price": format!("{id}.25") }))
            .collect();
        let response = app
            .gql_as(&token, BULK_PRICES, json!({ "updates": updates }))
            .await;
        let expected: Vec<Value> = ids
            .iter()
            .map(|id| json!({ "id": id.to_string(), "price": format!("{id}.25") }))
            .collect();
        assert_eq!(
            response.assert_ok()["bulkUpdatePrices"],
            json!(expected),
            "the i-th result answers the i-th update"
        );
    }
}

#[tokio::test]
async fn bulk_update_prices_with_one_unknown_id_changes_no_price() {
    let app = TestApp::spawn().await;
    let token = app.create_token("products").await;
    let updates = json!([{ "id": "1", "price": "1.00" }, { "id": "5000", "price": "2.00" }, { "id": "2", "price": "3.00" }]);
    let response = app
        .gql_as(&token, BULK_PRICES, json!({ "updates": updates }))
        .await;
    response.assert_error("NOT_FOUND");
    let response = app
        .gql(
            "{ a: product(id: \"1\") { price } b: product(id: \"2\") { price } }",
            json!({}),
        )
        .await;
    assert_eq!(
        response.assert_ok(),
        &json!({ "a": { "price": seeded_price(1) }, "b": { "price": seeded_price(2) } })
    );
}

#[tokio::test]
async fn bulk_update_prices_refuses_an_id_given_twice() {
    let app = TestApp::spawn().await;
    let token = app.create_token("products").await;
    let updates = json!([{ "id": "1", "price": "1.00" }, { "id": "1", "price": "2.00" }]);
    app.gql_as(&token, BULK_PRICES, json!({ "updates": updates }))
        .await
        .assert_error("BAD_USER_INPUT");
    let response = app.gql("{ product(id: \"1\") { price } }", json!({})).await;
    assert_eq!(response.assert_ok()["product"]["price"], seeded_price(1));
}

#[tokio::test]
async fn bulk_mutations_take_one_to_one_thousand_items() {
    let app = TestApp::spawn().await;
    let token = app.create_token("products").await;
    let too_many: Vec<Value> = (0..1001)
        .map(|n| new_product(&format!("Crowd {n}"), "1", "1"))
        .collect();
    app.gql_as(&token, BULK_CREATE, json!({ "inputs": too_many }))
        .await
        .assert_error("BAD_USER_INPUT");
    app.gql_as(&token, BULK_CREATE, json!({ "inputs": [] }))
        .await
        .assert_error("BAD_USER_INPUT");
    let too_many_prices: Vec<Value> = (1..=1001)
        .map(|id| json!({ "id": id.to_string(), "price": "1" }))
        .collect();
    app.gql_as(&token, BULK_PRICES, json!({ "updates": too_many_prices }))
        .await
        .assert_error("BAD_USER_INPUT");
    assert_eq!(total_count(&app, json!({ "search": "crowd" })).await, 0);
    assert_eq!(
        total_count(&app, json!({ "maxPrice": "1" })).await,
        seeded(|j| product_price_cents(j) <= 100).len() as i64
    );

    let thousand: Vec<Value> = (0..1000)
        .map(|n| new_product(&format!("Crowd {n}"), "1", "1"))
        .collect();
    let response = app
        .gql_as(&token, BULK_CREATE, json!({ "inputs": thousand }))
        .await;
    assert_eq!(
        response.assert_ok()["bulkCreateProducts"]
            .as_array()
            .map(Vec::len),
        Some(1000)
    );
    assert_eq!(
        total_count(&app, json!({})).await,
        i64::from(PRODUCTS) + 1000
    );
}

#[tokio::test]
async fn invalid_prices_are_bad_user_input_and_write_nothing() {
    let app = TestApp::spawn().await;
    let token = app.create_token("products").await;
    for price in ["-1", "1.234", "100000000", "-0.01", "lots"] {
        let response = app
            .gql_as(
                &token,
                CREATE,
                json!({ "input": new_product("Mispriced", price, "1") }),
            )
            .await;
        response.assert_error("BAD_USER_INPUT");
        let inputs = [
            new_product("Mispriced", "1", "1"),
            new_product("Mispriced", price, "1"),
        ];
        app.gql_as(&token, BULK_CREATE, json!({ "inputs": inputs }))
            .await
            .assert_error("BAD_USER_INPUT");
        let updates = json!([{ "id": "1", "price": "5" }, { "id": "2", "price": price }]);
        app.gql_as(&token, BULK_PRICES, json!({ "updates": updates }))
            .await
            .assert_error("BAD_USER_INPUT");
    }
    assert_eq!(total_count(&app, json!({ "search": "mispriced" })).await, 0);
    let response = app.gql("{ product(id: \"1\") { price } }", json!({})).await;
    assert_eq!(response.assert_ok()["product"]["price"], seeded_price(1));
}

#[tokio::test]
async fn the_largest_price_and_trailing_zeros_are_accepted() {
    let app = TestApp::spawn().await;
    let token = app.create_token("products").await;
    for (price, printed) in [
        ("99999999.99", "99999999.99"),
        ("12.500", "12.50"),
        ("0", "0.00"),
    ] {
        let response = app
            .gql_as(
                &token,
                CREATE,
                json!({ "input": new_product("Priced", price, "1") }),
            )
            .await;
        assert_eq!(
            response.assert_ok()["createProduct"]["price"],
            printed,
            "price {price}"
        );
    }
}

#[tokio::test]
async fn product_names_must_have_one_to_two_hundred_characters() {
    let app = TestApp::spawn().await;
    let token = app.create_token("products").await;
    for name in [String::new(), "   ".to_owned(), "x".repeat(201)] {
        let response = app
            .gql_as(
                &token,
                CREATE,
                json!({ "input": new_product(&name, "1", "1") }),
            )
            .await;
        response.assert_error("BAD_USER_INPUT");
    }
    assert_eq!(total_count(&app, json!({})).await, i64::from(PRODUCTS));
    let longest = "é".repeat(200);
    let response = app
        .gql_as(
            &token,
            CREATE,
            json!({ "input": new_product(&longest, "1", "1") }),
        )
        .await;
    assert_eq!(response.assert_ok()["createProduct"]["name"], longest);
}

#[tokio::test]
async fn create_product_in_an_unknown_category_is_not_found() {
    let app = TestApp::spawn().await;
    let token = app.create_token("products").await;
    let response = app
        .gql_as(
            &token,
            CREATE,
            json!({ "input": new_product("Orphan", "1", "11") }),
        )
        .await;
    response.assert_error("NOT_FOUND");
    app.gql_as(
        &token,
        CREATE,
        json!({ "input": new_product("Orphan", "1", "x") }),
    )
    .await
    .assert_error("BAD_USER_INPUT");
    assert_eq!(total_count(&app, json!({ "search": "orphan" })).await, 0);
}
