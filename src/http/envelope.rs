//! What every request gets around its handler, in one layer: a request id (the client's
//! `X-Request-Id`, or a new one), returned on the response; the `request` span with the
//! "served" log line, made only when a subscriber wants them; and a panic caught and answered
//! as an internal error carrying the id. One layer instead of four (request id, trace,
//! propagate, panic catcher) because each costs every request its own future and clones, which
//! a cache hit, answered in microseconds, would mostly spend there.

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Request};
use axum::response::Response;
use futures::FutureExt;
use futures::future::BoxFuture;
use tower::{Layer, Service};
use tower_http::request_id::RequestId as TowerRequestId;
use tracing::Instrument;

use super::error::TransportError;
use crate::telemetry::{Metrics, RequestId};

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// New request ids: a random 64-bit prefix for this process and a counter, so ids are unique
/// across instances and restarts without a random draw (a system call) per request.
struct RequestIds {
    prefix: u64,
    next: AtomicU64,
}

impl RequestIds {
    fn new() -> Self {
        let mut bytes = [0u8; 8];
        // Without the OS's randomness, the clock still separates processes in practice.
        if getrandom::fill(&mut bytes).is_err() {
            bytes = crate::cache::entry::now_millis().to_le_bytes();
        }
        RequestIds {
            prefix: u64::from_le_bytes(bytes),
            next: AtomicU64::new(0),
        }
    }

    fn next(&self) -> HeaderValue {
        let count = self.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:016x}{count:016x}", self.prefix);
        HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("-"))
    }
}

#[derive(Clone)]
pub(super) struct EnvelopeLayer {
    ids: Arc<RequestIds>,
    metrics: Arc<Metrics>,
    /// Whether spans are exported (a client's `traceparent` then continues its trace).
    traces: bool,
}

impl EnvelopeLayer {
    pub(super) fn new(metrics: Arc<Metrics>, traces: bool) -> Self {
        EnvelopeLayer {
            ids: Arc::new(RequestIds::new()),
            metrics,
            traces,
        }
    }
}

impl<S> Layer<S> for EnvelopeLayer {
    type Service = Envelope<S>;

    fn layer(&self, inner: S) -> Envelope<S> {
        Envelope {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub(super) struct Envelope<S> {
    inner: S,
    layer: EnvelopeLayer,
}

impl<S> Service<Request<Body>> for Envelope<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let id = match request.headers().get(X_REQUEST_ID) {
            Some(id) => id.clone(),
            None => self.layer.ids.next(),
        };
        request
            .extensions_mut()
            .insert(TowerRequestId::new(id.clone()));
        let span = tracing::info_span!(
            "request",
            method = %request.method(),
            path = %request.uri().path(),
            request_id = id.to_str().unwrap_or("-"),
            operation = tracing::field::Empty,
            cache = tracing::field::Empty,
        );
        let started = (!span.is_disabled()).then(Instant::now);
        if self.layer.traces && !span.is_disabled() {
            crate::telemetry::traces::continue_client_trace(&span, request.headers());
        }
        let metrics = Arc::clone(&self.layer.metrics);
        let handled = AssertUnwindSafe(self.inner.call(request)).catch_unwind();
        Box::pin(
            async move {
                let mut response = match handled.await {
                    Ok(Ok(response)) => response,
                    Err(panic) => panic_response(panic, &id, &metrics),
                };
                response.headers_mut().insert(X_REQUEST_ID, id);
                if let Some(started) = started {
                    // Not an ERROR line per 5xx: an internal error is logged with its detail
                    // where it happens, and an outage once by the breaker.
                    tracing::info!(
                        status = response.status().as_u16(),
                        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
                        "served"
                    );
                }
                Ok(response)
            }
            .instrument(span),
        )
    }
}

/// A handler that panicked: an internal error with its request id (the panic's message only
/// in the log); the server and the connection go on.
fn panic_response(
    panic: Box<dyn std::any::Any + Send>,
    id: &HeaderValue,
    metrics: &Metrics,
) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message");
    let request_id = RequestId(id.to_str().unwrap_or("-").to_owned());
    TransportError::internal(
        format_args!("a request handler panicked: {message}"),
        &request_id,
    )
    .counted(metrics)
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    async fn panicking_handler() -> &'static str {
        panic!("the handler's secret detail")
    }

    #[tokio::test]
    async fn a_panicking_handler_is_answered_with_an_internal_error_that_carries_the_request_id() {
        let metrics = Arc::new(Metrics::new());
        let router = Router::new()
            .route("/boom", get(panicking_handler))
            .layer(EnvelopeLayer::new(Arc::clone(&metrics), false));
        let request = Request::get("/boom")
            .header("x-request-id", "req-panic")
            .body(Body::empty())
            .expect("a request");

        let response = router.oneshot(request).await.expect("an answer");

        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()["x-request-id"], "req-panic");
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("a body");
        let body: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
        assert_eq!(
            body,
            serde_json::json!({ "errors": [{
                "message": "internal server error",
                "extensions": { "code": "INTERNAL_SERVER_ERROR", "requestId": "req-panic" },
            }] })
        );
        let rendered = metrics.render();
        assert!(
            rendered.contains("catalog_graphql_errors_total{code=\"INTERNAL_SERVER_ERROR\"} 1"),
            "counted once: {rendered}"
        );
    }

    #[test]
    fn new_request_ids_are_distinct_and_share_the_process_prefix() {
        let ids = RequestIds::new();
        let first = ids.next();
        let second = ids.next();
        assert_ne!(first, second);
        assert_eq!(first.len(), 32);
        assert_eq!(first.as_bytes()[..16], second.as_bytes()[..16]);
    }
}
