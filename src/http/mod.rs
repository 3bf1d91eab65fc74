//! HTTP: the axum router, its layers (`envelope`: request ids, tracing, panics; CORS), health, readiness,
//! metrics and the shutdown signal. GraphQL transport rules live in `graphql`; connection
//! limits and graceful shutdown in `server`; which HTTP version a connection speaks in
//! `protocol`.

pub mod cache_status;
pub mod dashboard;
mod encoding;
mod envelope;
pub mod error;
pub mod graphiql;
pub mod graphql;
mod protocol;
pub mod recognized;
mod request_shape;
mod response;
pub mod server;
pub mod state;

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

pub use self::error::TransportError;
pub use self::state::AppState;

pub use crate::telemetry::RequestId;

/// The API. `/metrics` is part of it unless a separate metrics address is configured.
pub fn router(state: AppState) -> Router {
    // One `Arc` for every request to clone, not the state's dozen fields.
    let state = std::sync::Arc::new(state);
    let cors = cors_layer(&state.config.cors_origins);
    let traces = state.config.traces_enabled();
    let mut routes =
        Router::new()
            .route(
                "/graphql",
                get(graphql::get_graphql).post(graphql::post_graphql).layer(
                    middleware::map_response(|mut response: Response| async move {
                        cache_status::ensure_cache_status(&mut response);
                        response
                    }),
                ),
            )
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz));
    if state.config.metrics_bind.is_none() {
        routes = routes.route("/metrics", get(metrics));
    }
    routes
        .merge(graphiql::routes(state.config.compress_from_bytes()))
        .merge(dashboard::routes())
        // Inside CORS, so a panic's 500 gets CORS headers too (a preflight, answered by CORS
        // alone, carries no request id: it reaches no handler).
        .layer(envelope::EnvelopeLayer::new(
            std::sync::Arc::clone(&state.metrics),
            traces,
        ))
        .layer(cors)
        .with_state(state)
}

/// `/metrics` alone, for the metrics address (`CATALOG_METRICS_BIND`), which can stay private.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(std::sync::Arc::new(state))
}

fn cors_layer(origins: &[String]) -> CorsLayer {
    let base = CorsLayer::new()
        .allow_methods([
            axum::http::Method::GET,
            axum::http::Method::POST,
            axum::http::Method::OPTIONS,
        ])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::IF_NONE_MATCH,
        ])
        .expose_headers([
            header::ETAG,
            header::HeaderName::from_static("x-cache"),
            header::HeaderName::from_static(cache_status::HEADER),
            header::HeaderName::from_static("x-request-id"),
            header::RETRY_AFTER,
            header::HeaderName::from_static("ratelimit"),
            header::HeaderName::from_static("ratelimit-policy"),
        ])
        .max_age(Duration::from_secs(600));
    if origins.iter().any(|origin| origin == "*") {
        return base.allow_origin(Any);
    }
    if origins.is_empty() {
        return base.allow_origin(AllowOrigin::predicate(|origin, _| {
            is_loopback_origin(origin)
        }));
    }
    let allowed: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|origin| HeaderValue::from_str(origin.trim()).ok())
        .collect();
    base.allow_origin(AllowOrigin::list(allowed))
}

/// A page served from this machine (`localhost`, `127.0.0.1` or `[::1]`, any port): the
/// origins allowed when none are configured, so a front end in development can call the
/// server out of the box while other sites cannot. Tokens are bearer tokens, never cookies,
/// so an allowed origin gains nothing a page could not already do with its own token.
fn is_loopback_origin(origin: &HeaderValue) -> bool {
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let Some(authority) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let (host, port) = match authority.strip_prefix("[::1]") {
        Some(port) => ("[::1]", port),
        None => authority.split_at(authority.find(':').unwrap_or(authority.len())),
    };
    let port_is_valid = port.is_empty()
        || port.strip_prefix(':').is_some_and(|digits| {
            !digits.is_empty() && digits.bytes().all(|byte| byte.is_ascii_digit())
        });
    matches!(host, "localhost" | "127.0.0.1" | "[::1]") && port_is_valid
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready when the primary database answers (the cache and the replicas are optional: without
/// them the server still works). While the database breaker is open the answer is 503 at once;
/// a failed ping opens it. The JSON body reports each replica's state.
async fn readyz(State(state): State<std::sync::Arc<AppState>>) -> Response {
    let replicas = state
        .replicas
        .as_ref()
        .map(|replicas| replicas.statuses())
        .unwrap_or_default();
    let answer = |status: StatusCode, database: &str| {
        let body = serde_json::json!({
            "status": if status == StatusCode::OK { "ready" } else { "unavailable" },
            "database": database,
            "replicas": replicas,
        });
        (status, axum::Json(body)).into_response()
    };
    if state.db_breaker.refuses() {
        return answer(StatusCode::SERVICE_UNAVAILABLE, "unreachable");
    }
    let timeout = 2 * state.config.db_acquire_timeout();
    match tokio::time::timeout(timeout, state.db.ping()).await {
        Ok(Ok(())) => answer(StatusCode::OK, "up"),
        _ => {
            state.db_breaker.trip();
            answer(StatusCode::SERVICE_UNAVAILABLE, "unreachable")
        }
    }
}

async fn metrics(State(state): State<std::sync::Arc<AppState>>) -> Response {
    state
        .metrics
        .database_unreachable
        .set(i64::from(state.db_breaker.is_open()));
    if let Some(cache) = state.cache.as_ref() {
        state
            .metrics
            .cache_backend_unreachable
            .set(i64::from(cache.storage().is_down()));
        let deferred = i64::try_from(cache.deferred_invalidations()).unwrap_or(i64::MAX);
        state.metrics.cache_invalidations_deferred.set(deferred);
    }
    if let Some(limiter) = state.rate_limiter.as_ref() {
        let clients = i64::try_from(limiter.tracked_clients()).unwrap_or(i64::MAX);
        state.metrics.rate_limit_clients.set(clients);
    }
    if let Some(pool) = state.redis_pool.as_ref() {
        let status = pool.status();
        state.metrics.redis_pool_size.set(status.size as i64);
        state
            .metrics
            .redis_pool_available
            .set(status.available as i64);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render_with(
            state
                .cache
                .as_ref()
                .map(|cache| cache.insights().registry())
                .as_ref(),
        ),
    )
        .into_response()
}

/// Resolves on SIGTERM or Ctrl-C; the server then stops accepting and lets in-flight requests
/// finish, for at most the shutdown grace period.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
