//! The GraphQL spec serializes a response's fields in the order the query selected them
//! (CollectFields: aliases are response keys, fragments merge in document order, the first
//! occurrence of a key fixes its place), whatever order the resolvers finished in. These
//! tests read key order from the raw body text, which a JSON map would forget.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::json;

use crate::support::helpers::TestApp;

/// A JSON value that remembers the order of its object keys.
#[derive(Debug)]
enum Ordered {
    Scalar,
    List(Vec<Ordered>),
    Object(Vec<(String, Ordered)>),
}

impl Ordered {
    fn keys(&self) -> Vec<&str> {
        match self {
            Ordered::Object(members) => members.iter().map(|(key, _)| key.as_str()).collect(),
            other => panic!("not an object: {other:?}"),
        }
    }

    #[track_caller]
    fn get(&self, key: &str) -> &Ordered {
        match self {
            Ordered::Object(members) => members
                .iter()
                .find(|(candidate, _)| candidate == key)
                .map(|(_, value)| value)
                .unwrap_or_else(|| panic!("no {key:?} in {:?}", self.keys())),
            other => panic!("not an object: {other:?}"),
        }
    }

    fn items(&self) -> &[Ordered] {
        match self {
            Ordered::List(items) => items,
            other => panic!("not a list: {other:?}"),
        }
    }
}

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OrderedVisitor;
        impl<'de> Visitor<'de> for OrderedVisitor {
            type Value = Ordered;
            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("JSON")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Ordered, E> {
                Ok(Ordered::Scalar)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Ordered, E> {
                Ok(Ordered::Scalar)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Ordered, E> {
                Ok(Ordered::Scalar)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Ordered, E> {
                Ok(Ordered::Scalar)
            }
            fn visit_str<E>(self, _: &str) -> Result<Ordered, E> {
                Ok(Ordered::Scalar)
            }
            fn visit_unit<E>(self) -> Result<Ordered, E> {
                Ok(Ordered::Scalar)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Ordered, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Ordered::List(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut members = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, Ordered>()? {
                    members.push((key, value));
                }
                Ok(Ordered::Object(members))
            }
        }
        deserializer.deserialize_any(OrderedVisitor)
    }
}

/// POSTs `query` and returns the body with its key order, checking there are no errors.
async fn ordered(app: &TestApp, query: &str) -> (Ordered, String) {
    let response = app
        .client
        .post(app.url("/graphql"))
        .json(&json!({ "query": query }))
        .send()
        .await
        .expect("request");
    let cache = response
        .headers()
        .get("x-cache")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = response.text().await.expect("body");
    assert!(!text.contains("\"errors\""), "errors in {text}");
    let body: Ordered = serde_json::from_str(&text).expect("JSON body");
    (body, cache)
}

#[tokio::test]
async fn fields_come_back_in_the_order_the_query_selected_them() {
    let app = TestApp::spawn().await;
    // `pageInfo` and `totalCount` finish before the page's rows arrive; the query puts them
    // after `edges`, and the answer must too, on a miss and on a hit.
    let query = "{ products(first: 3) { edges { node { name id price } cursor } totalCount pageInfo { hasNextPage endCursor } } }";
    for expected_cache in ["MISS", "HIT"] {
        let (body, cache) = ordered(&app, query).await;
        if app.state.executor.cache().is_some() {
            assert_eq!(cache, expected_cache);
        }
        let products = body.get("data").get("products");
        assert_eq!(products.keys(), ["edges", "totalCount", "pageInfo"]);
        assert_eq!(
            products.get("pageInfo").keys(),
            ["hasNextPage", "endCursor"]
        );
        let edges = products.get("edges").items();
        assert_eq!(edges.len(), 3);
        for edge in edges {
            assert_eq!(edge.keys(), ["node", "cursor"]);
            assert_eq!(edge.get("node").keys(), ["name", "id", "price"]);
        }
    }
}

#[tokio::test]
async fn aliases_and_fragments_keep_the_first_occurrence_of_each_response_key() {
    let app = TestApp::spawn().await;
    let query = r#"
        query Page {
            ...Totals
            last: products(first: 2, orderBy: PRICE_DESC) { pageInfo { hasNextPage } edges { cursor } }
            first: products(first: 2) {
                ... on ProductConnection { total: totalCount }
                edges { node { ...ProductName } }
                pageInfo { endCursor }
                edges { cursor node { id name } }
                total: totalCount
            }
            categories { name id }
        }
        fragment Totals on Query { count: products(first: 1) { totalCount } }
        fragment ProductName on Product { name category { name } }
    "#;
    let (body, _) = ordered(&app, query).await;
    let data = body.get("data");
    assert_eq!(data.keys(), ["count", "last", "first", "categories"]);
    assert_eq!(data.get("last").keys(), ["pageInfo", "edges"]);
    let first = data.get("first");
    assert_eq!(first.keys(), ["total", "edges", "pageInfo"]);
    for edge in first.get("edges").items() {
        assert_eq!(edge.keys(), ["node", "cursor"]);
        assert_eq!(edge.get("node").keys(), ["name", "category", "id"]);
    }
    for category in data.get("categories").items() {
        assert_eq!(category.keys(), ["name", "id"]);
    }
}
