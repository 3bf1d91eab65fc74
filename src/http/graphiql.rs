//! GraphiQL, the in-browser GraphQL IDE, served by the binary itself so it works offline:
//! the page and its assets are vendored under `assets/vendor/graphiql/` (versions and licences
//! in its README; third-party files live under a `vendor` folder so tools that look for
//! repeated code pass them over) and compiled in with `include_bytes!`, so no CDN and no files on disk are needed.
//! Only the four listed assets are served; any other name under `/graphiql/` is a 404.
//! Their compressed forms (3.5 MB of JavaScript is about 1 MB in br) are made once, on the
//! first request that accepts each coding, and kept for the process's life.

use std::sync::{Arc, OnceLock};

use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};
use bytes::Bytes;

use super::encoding::{ResponseEncoding, insert_content_encoding};
use super::error::TransportError;
use crate::compression::{ContentEncoding, Effort};

/// The page that boots GraphiQL against this server's `/graphql`.
const PAGE: &[u8] = include_bytes!("../../assets/vendor/graphiql/index.html");

/// The asset names are not content-hashed; the page adds a `?v=` query to bust this
/// long-lived cache when the vendored version changes.
const CACHE_FOREVER: &str = "public, max-age=31536000, immutable";

/// One vendored file, served as `/graphiql/{name}`.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

/// An [`Asset`] for a file of the vendored GraphiQL folder, compiled in.
macro_rules! vendored {
    ($name:literal, $content_type:literal) => {
        Asset {
            name: $name,
            content_type: $content_type,
            bytes: include_bytes!(concat!("../../assets/vendor/graphiql/", $name)),
        }
    };
}

const ASSETS: [Asset; 4] = [
    vendored!("graphiql.min.js", "application/javascript"),
    vendored!("graphiql.min.css", "text/css"),
    vendored!("react.production.min.js", "application/javascript"),
    vendored!("react-dom.production.min.js", "application/javascript"),
];

/// Each asset's compressed forms, by `ASSETS` index and `ContentEncoding::ALL` index.
#[derive(Default)]
struct CompressedAssets {
    forms: [[OnceLock<Bytes>; 3]; ASSETS.len()],
}

/// Routes for the vendored assets, `GET /graphiql/{file}`; merge them into the app's router.
/// `compress_from_bytes` is `None` when compression is off.
pub fn routes<S: Clone + Send + Sync + 'static>(compress_from_bytes: Option<usize>) -> Router<S> {
    let compressed = Arc::new(CompressedAssets::default());
    Router::new().route(
        "/graphiql/{file}",
        get(move |file: Path<String>, headers: HeaderMap| {
            asset(file, headers, compress_from_bytes, State(compressed))
        }),
    )
}

/// The GraphiQL page itself, for whichever path the app serves it on.
pub fn page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response()
}

async fn asset(
    Path(file): Path<String>,
    headers: HeaderMap,
    compress_from_bytes: Option<usize>,
    State(compressed): State<Arc<CompressedAssets>>,
) -> Response {
    let Some(index) = ASSETS.iter().position(|asset| asset.name == file) else {
        return TransportError::AssetNotFound(file).into_response();
    };
    let asset = &ASSETS[index];
    let encoding =
        ResponseEncoding::for_request(&headers, compress_from_bytes).for_length(asset.bytes.len());
    let (body, encoding) = match encoding {
        None => (Bytes::from_static(asset.bytes), None),
        Some(encoding) => {
            let slot = ContentEncoding::ALL
                .iter()
                .position(|known| *known == encoding)
                .unwrap_or(0);
            let compressing = Arc::clone(&compressed);
            // Compressing megabytes takes a while: off the async workers, once per coding
            // (a concurrent first request waits for that one compression).
            let form = tokio::task::spawn_blocking(move || {
                compressing.forms[index][slot]
                    .get_or_init(|| encoding.compress(ASSETS[index].bytes, Effort::Stored))
                    .clone()
            })
            .await;
            match form {
                Ok(form) => (form, Some(encoding)),
                // The blocking pool is shutting down: send the file as it is.
                Err(_) => (Bytes::from_static(asset.bytes), None),
            }
        }
    };
    let mut response = (
        [
            (header::CONTENT_TYPE, asset.content_type),
            (header::CACHE_CONTROL, CACHE_FOREVER),
        ],
        body,
    )
        .into_response();
    if compress_from_bytes.is_some() {
        response
            .headers_mut()
            .insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    insert_content_encoding(response.headers_mut(), encoding);
    response
}
