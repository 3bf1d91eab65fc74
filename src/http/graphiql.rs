//! GraphiQL, the in-browser GraphQL IDE, served by the binary itself so it works offline:
//! the page and its assets are vendored under `assets/vendor/graphiql/` (versions and licences
//! in its README; third-party files live under a `vendor` folder so tools that look for
//! repeated code pass them over) and compiled in with `include_bytes!`, so no CDN and no files on disk are needed.
//! Only the four listed assets are served; any other name under `/graphiql/` is a 404.

use axum::{
    Router,
    extract::Path,
    http::header,
    response::{IntoResponse, Response},
    routing::get,
};

use super::error::TransportError;

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

/// Routes for the vendored assets, `GET /graphiql/{file}`; merge them into the app's router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/graphiql/{file}", get(asset))
}

/// The GraphiQL page itself, for whichever path the app serves it on.
pub fn page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response()
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|asset| asset.name == file) {
        Some(asset) => (
            [
                (header::CONTENT_TYPE, asset.content_type),
                (header::CACHE_CONTROL, CACHE_FOREVER),
            ],
            asset.bytes,
        )
            .into_response(),
        None => TransportError::AssetNotFound(file).into_response(),
    }
}
