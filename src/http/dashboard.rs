//! The cache insights dashboard, `GET /dashboard`: a static page (`assets/dashboard/`) that
//! polls the token-gated `cacheInsights` query and draws it with uPlot, vendored under
//! `assets/vendor/uplot/` and compiled in like GraphiQL's assets, so it works offline.
//! The page and its scripts are public and hold no data; the data needs a token, which the
//! operator types into the page and which stays in that tab's `sessionStorage`.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::error::TransportError;

const PAGE: &[u8] = include_bytes!("../../assets/dashboard/index.html");

/// Scripts may come from this server only; uPlot sets element styles, hence inline styles.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'";

/// The files the page loads, served as `/dashboard/{name}`.
const FILES: [(&str, &str, &[u8]); 4] = [
    (
        "dashboard.js",
        "application/javascript",
        include_bytes!("../../assets/dashboard/dashboard.js"),
    ),
    (
        "dashboard.css",
        "text/css",
        include_bytes!("../../assets/dashboard/dashboard.css"),
    ),
    (
        "uPlot.iife.min.js",
        "application/javascript",
        include_bytes!("../../assets/vendor/uplot/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css",
        include_bytes!("../../assets/vendor/uplot/uPlot.min.css"),
    ),
];

/// `/dashboard` and its files; merge into the API's router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/dashboard", get(page))
        .route("/dashboard/{file}", get(file))
}

async fn page() -> Response {
    let mut response = (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    response
}

async fn file(Path(name): Path<String>) -> Response {
    let Some((_, content_type, bytes)) = FILES.iter().find(|(known, _, _)| *known == name) else {
        return TransportError::AssetNotFound(name).into_response();
    };
    (
        [
            (header::CONTENT_TYPE, *content_type),
            // Names carry no content hash; the page adds `?v=` and revalidates.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        *bytes,
    )
        .into_response()
}
