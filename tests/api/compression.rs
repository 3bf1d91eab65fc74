//! Compression as clients see it: a cached page goes out in the coding the client prefers,
//! from bytes made once when the entry was stored (a hit never compresses); each coding has
//! its own ETag, which revalidates; uncached and spliced bodies are compressed as they are
//! sent; small bodies and clients that accept nothing get the body as it is.

use std::io::Read;

use catalog_api::compression::{ContentEncoding, Effort};
use reqwest::header::{ACCEPT_ENCODING, CONTENT_ENCODING, ETAG, IF_NONE_MATCH, VARY};
use serde_json::{Value, json};

use crate::support::helpers::{PRODUCT_BY_ID, TestApp};

const PAGE: &str = "query Page($id: ID!) { products(filter: { categoryId: $id }, first: 100) { totalCount edges { node { id name price } } } }";

struct Sent {
    status: u16,
    encoding: Option<String>,
    etag: Option<String>,
    vary: Option<String>,
    x_cache: String,
    bytes: Vec<u8>,
}

impl Sent {
    /// The body as the client's decoder gives it back.
    fn decoded(&self) -> Vec<u8> {
        let mut decoded = Vec::new();
        match self.encoding.as_deref() {
            None => decoded.clone_from(&self.bytes),
            Some("br") => {
                brotli::Decompressor::new(&self.bytes[..], 4096)
                    .read_to_end(&mut decoded)
                    .expect("valid brotli");
            }
            Some("zstd") => decoded = zstd::stream::decode_all(&self.bytes[..]).expect("zstd"),
            Some("gzip") => {
                flate2::read::GzDecoder::new(&self.bytes[..])
                    .read_to_end(&mut decoded)
                    .expect("valid gzip");
            }
            Some(other) => panic!("unexpected coding {other}"),
        }
        decoded
    }
}

async fn send(request: reqwest::RequestBuilder) -> Sent {
    let response = request.send().await.expect("a response");
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|value: &reqwest::header::HeaderValue| value.to_str().ok())
            .map(str::to_owned)
    };
    Sent {
        status: response.status().as_u16(),
        encoding: header(CONTENT_ENCODING),
        etag: header(ETAG),
        vary: header(VARY),
        x_cache: header(reqwest::header::HeaderName::from_static("x-cache")).unwrap_or_default(),
        bytes: response.bytes().await.expect("a body").to_vec(),
    }
}

fn post(app: &TestApp, body: &Value, accept_encoding: Option<&str>) -> reqwest::RequestBuilder {
    let request = app.client.post(app.url("/graphql")).json(body);
    match accept_encoding {
        Some(value) => request.header(ACCEPT_ENCODING, value),
        None => request,
    }
}

fn page(category: &str) -> Value {
    json!({ "query": PAGE, "variables": { "id": category } })
}

#[tokio::test]
async fn a_cached_page_goes_out_in_each_coding_from_bytes_stored_when_it_was_filled() {
    let app = TestApp::spawn().await;
    let body = page("3");
    let miss = send(post(&app, &body, Some("gzip, deflate, br, zstd"))).await;
    assert_eq!(miss.x_cache, "MISS");
    assert_eq!(miss.encoding.as_deref(), Some("br"), "br is the smallest");
    let identity = send(post(&app, &body, None)).await;
    assert_eq!(identity.x_cache, "HIT");
    assert_eq!(identity.encoding, None, "no Accept-Encoding, no coding");
    assert!(identity.bytes.len() > 4096, "a page of 100 products");
    assert_eq!(miss.decoded(), identity.bytes);
    let parsed: Value = serde_json::from_slice(&identity.bytes).expect("JSON");
    assert_eq!(
        parsed["data"]["products"]["edges"].as_array().map(Vec::len),
        Some(100)
    );

    for (accept, coding) in [
        ("br", ContentEncoding::Brotli),
        ("zstd", ContentEncoding::Zstd),
        ("gzip", ContentEncoding::Gzip),
        ("gzip;q=0.5, zstd;q=0.9, br;q=0.1", ContentEncoding::Zstd),
    ] {
        let hit = send(post(&app, &body, Some(accept))).await;
        assert_eq!(hit.x_cache, "HIT", "{accept}");
        assert_eq!(hit.encoding.as_deref(), Some(coding.as_str()), "{accept}");
        assert_eq!(
            hit.decoded(),
            identity.bytes,
            "{accept} decodes to the body"
        );
        // The stored form (made with the fill's effort), not one compressed for this hit.
        assert_eq!(
            hit.bytes,
            coding.compress(&identity.bytes, Effort::Stored).to_vec(),
            "{accept}: the bytes stored at fill"
        );
        assert!(
            hit.bytes.len() * 4 < identity.bytes.len(),
            "{accept}: {} of {} bytes",
            hit.bytes.len(),
            identity.bytes.len()
        );
        assert!(
            hit.vary
                .as_deref()
                .is_some_and(|vary| vary.contains("Accept-Encoding")),
            "{:?}",
            hit.vary
        );
        let etag = hit.etag.clone().expect("an ETag");
        let base = identity.etag.clone().expect("an ETag");
        assert_ne!(etag, base, "each coding is its own representation");
        assert!(etag.ends_with(&format!("-{}\"", coding.as_str())), "{etag}");
    }
    app.stop().await;
}

#[tokio::test]
async fn every_codings_etag_revalidates_over_get() {
    let app = TestApp::spawn().await;
    let variables = json!({ "id": "4" }).to_string();
    let get = |accept: Option<&'static str>, etag: Option<String>| {
        let mut request = app
            .client
            .get(app.url("/graphql"))
            .query(&[("query", PAGE), ("variables", variables.as_str())]);
        if let Some(accept) = accept {
            request = request.header(ACCEPT_ENCODING, accept);
        }
        if let Some(etag) = etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        request
    };
    let gzip = send(get(Some("gzip"), None)).await;
    assert_eq!(gzip.status, 200);
    assert_eq!(gzip.encoding.as_deref(), Some("gzip"));
    let gzip_etag = gzip.etag.clone().expect("an ETag");

    let again = send(get(Some("gzip"), Some(gzip_etag.clone()))).await;
    assert_eq!(again.status, 304);
    assert!(again.bytes.is_empty());
    assert_eq!(again.etag.as_deref(), Some(gzip_etag.as_str()));
    // A proxy that weakened it, or a client that now takes another coding: the same result.
    let weakened = send(get(Some("br"), Some(format!("W/{gzip_etag}")))).await;
    assert_eq!(weakened.status, 304);
    assert!(weakened.etag.is_some_and(|etag| etag.ends_with("-br\"")));
    let identity = send(get(None, Some(gzip_etag))).await;
    assert_eq!(identity.status, 304);

    // A committed change makes every coding's ETag stale.
    let token = app.create_token("compression").await;
    let first_id = serde_json::from_slice::<Value>(&gzip.decoded()).expect("JSON")["data"]
        ["products"]["edges"][0]["node"]["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    app.gql_as(
        &token,
        "mutation($id: ID!) { updateProduct(id: $id, input: { price: \"1.23\" }) { id } }",
        json!({ "id": first_id }),
    )
    .await
    .assert_ok();
    let changed = send(get(Some("gzip"), Some(gzip.etag.clone().expect("etag")))).await;
    assert_eq!(changed.status, 200);
    assert!(
        String::from_utf8(changed.decoded())
            .expect("UTF-8")
            .contains("\"1.23\"")
    );
    app.stop().await;
}

#[tokio::test]
async fn small_bodies_and_clients_that_accept_no_offered_coding_get_the_body_as_it_is() {
    let app = TestApp::spawn().await;
    let one = json!({ "query": PRODUCT_BY_ID, "variables": { "id": "1" } });
    for _ in 0..2 {
        let small = send(post(&app, &one, Some("br, gzip"))).await;
        assert_eq!(small.encoding, None, "a small body is not worth a coding");
        serde_json::from_slice::<Value>(&small.bytes).expect("plain JSON");
    }
    for accept in ["identity", "deflate", "br;q=0, gzip;q=0, zstd;q=0", "*;q=0"] {
        let page = send(post(&app, &page("5"), Some(accept))).await;
        assert_eq!(page.encoding, None, "{accept}");
        serde_json::from_slice::<Value>(&page.bytes).expect("plain JSON");
    }
    app.stop().await;
}

#[tokio::test]
async fn responses_the_cache_does_not_hold_are_compressed_as_they_are_sent() {
    let app = TestApp::spawn().await;
    // A spliced `extensions.cache` and a batch: neither is a stored body.
    let spliced = json!({
        "query": PAGE, "variables": { "id": "6" }, "extensions": { "cacheInfo": true },
    });
    let batch = json!([page("7"), page("8")]);
    for body in [spliced, batch] {
        let plain = send(post(&app, &body, None)).await;
        let gzip = send(post(&app, &body, Some("gzip"))).await;
        assert_eq!(gzip.encoding.as_deref(), Some("gzip"));
        let decoded: Value = serde_json::from_slice(&gzip.decoded()).expect("JSON");
        let expected: Value = serde_json::from_slice(&plain.bytes).expect("JSON");
        // `extensions.cache` says MISS then HIT; the data is the same.
        let data = |value: &Value| match value {
            Value::Array(items) => items.iter().map(|item| item["data"].clone()).collect(),
            single => vec![single["data"].clone()],
        };
        assert_eq!(data(&decoded), data(&expected));
    }
    app.stop().await;
}

#[tokio::test]
async fn with_compression_off_nothing_is_compressed_or_stored_compressed() {
    let app = TestApp::spawn_with(|config| config.compression = false).await;
    let body = page("2");
    for _ in 0..2 {
        let sent = send(post(&app, &body, Some("br, gzip, zstd"))).await;
        assert_eq!(sent.encoding, None);
        assert!(
            sent.vary
                .as_deref()
                .is_some_and(|vary| !vary.contains("Accept-Encoding")),
            "{:?}",
            sent.vary
        );
        serde_json::from_slice::<Value>(&sent.bytes).expect("plain JSON");
    }
    app.stop().await;
}

#[tokio::test]
async fn graphiqls_assets_go_out_compressed_and_decode_to_the_vendored_files() {
    let app = TestApp::spawn().await;
    let url = app.url("/graphiql/graphiql.min.js");
    let plain = send(app.client.get(&url)).await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.encoding, None);
    assert!(plain.bytes.len() > 1_000_000, "the GraphiQL bundle");
    for accept in ["br", "gzip", "zstd"] {
        // Twice: the second is the form kept from the first.
        for _ in 0..2 {
            let sent = send(app.client.get(&url).header(ACCEPT_ENCODING, accept)).await;
            assert_eq!(sent.encoding.as_deref(), Some(accept));
            assert_eq!(sent.vary.as_deref(), Some("Accept-Encoding"));
            assert!(
                sent.bytes.len() * 2 < plain.bytes.len(),
                "{accept}: {} of {} bytes",
                sent.bytes.len(),
                plain.bytes.len()
            );
            assert_eq!(sent.decoded(), plain.bytes, "{accept}");
        }
    }
    app.stop().await;
}
