//! Why the HTTP layer refuses a request before (or instead of) a GraphQL execution: one enum,
//! one table of statuses and codes (`status_and_code`; the codes are `crate::error::codes`) and
//! one `IntoResponse` that writes the GraphQL-shaped body clients parse. Internal errors exist
//! only through `TransportError::internal`, which logs the detail with the request id and keeps
//! nothing but the id for the client.

use std::fmt::Display;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::request_shape::JsonSyntax;
use crate::error::{ApiError, codes, report_internal, request_error_body};
use crate::rate_limit::Verdict;
use crate::telemetry::{Metrics, RequestId};

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("malformed query string")]
    MalformedQueryString,
    #[error("a GET request needs a `query` parameter")]
    MissingQueryParameter,
    /// A GET parameter (`variables`, `extensions`) that must hold JSON.
    #[error("`{0}` is not valid JSON")]
    ParameterNotJson(&'static str),
    #[error("`extensions` must be a JSON object")]
    ExtensionsNotObject,
    #[error("the request body did not arrive within {timeout_ms} ms")]
    BodyReadTimeout { timeout_ms: u64 },
    #[error("the request body exceeds {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("POST bodies must be `Content-Type: application/json`")]
    UnsupportedMediaType,
    #[error("the body is not valid JSON: {0}")]
    BodyNotJson(JsonSyntax),
    #[error("the body must be a JSON object or array")]
    BodyNotObjectOrArray,
    #[error("a batch holds 1 to {max} operations (got {got})")]
    BatchSize { max: usize, got: usize },
    #[error("not a GraphQL request: {0}")]
    NotGraphQLRequest(String),
    /// An operation without a document, or with `variables` that are not a map.
    #[error("{0}")]
    MalformedOperation(&'static str),
    #[error("no operation")]
    NoOperation,
    /// A bearer token that is malformed, unknown or revoked.
    #[error("{}", ApiError::InvalidToken)]
    InvalidToken,
    /// The token could not be checked: the database is away.
    #[error("{}", ApiError::ServiceUnavailable)]
    ServiceUnavailable,
    #[error("the request did not finish within {timeout_ms} ms (a mutation may still complete)")]
    Timeout { timeout_ms: u128 },
    #[error("mutations are not allowed over GET; use POST")]
    MutationOverGet,
    /// A name under `/graphiql/` or `/dashboard/` that is not one of its files.
    #[error("no asset is named `{0}`")]
    AssetNotFound(String),
    /// The client's query-cost budget is spent until its window ends.
    #[error("rate limit exceeded: retry in {} s", .0.retry_after_secs())]
    RateLimited(Verdict),
    /// Built only by [`TransportError::internal`], after the detail was logged.
    #[error("internal server error")]
    Internal { request_id: RequestId },
}

impl TransportError {
    /// The one table of this enum's HTTP statuses and `extensions.code`s.
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        use TransportError as E;
        match self {
            E::MalformedQueryString
            | E::MissingQueryParameter
            | E::ParameterNotJson(_)
            | E::ExtensionsNotObject
            | E::BodyNotJson(_)
            | E::BodyNotObjectOrArray
            | E::BatchSize { .. }
            | E::NotGraphQLRequest(_)
            | E::MalformedOperation(_)
            | E::NoOperation => (StatusCode::BAD_REQUEST, codes::BAD_REQUEST),
            E::BodyReadTimeout { .. } => (StatusCode::REQUEST_TIMEOUT, codes::REQUEST_TIMEOUT),
            E::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, codes::PAYLOAD_TOO_LARGE),
            E::UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, codes::BAD_REQUEST),
            E::InvalidToken => (StatusCode::UNAUTHORIZED, ApiError::InvalidToken.code()),
            E::ServiceUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                ApiError::ServiceUnavailable.code(),
            ),
            E::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, codes::TIMEOUT),
            E::MutationOverGet => (StatusCode::METHOD_NOT_ALLOWED, codes::METHOD_NOT_ALLOWED),
            E::AssetNotFound(_) => (StatusCode::NOT_FOUND, codes::NOT_FOUND),
            E::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, codes::RATE_LIMITED),
            E::Internal { .. } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                codes::INTERNAL_SERVER_ERROR,
            ),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status_and_code().0
    }

    pub fn code(&self) -> &'static str {
        self.status_and_code().1
    }

    /// The one way to answer an internal error: the detail goes to the log with the request
    /// id, the client gets "internal server error" and that id.
    pub fn internal(detail: impl Display, request_id: &RequestId) -> Self {
        report_internal(&detail, Some(&request_id.0));
        TransportError::Internal {
            request_id: request_id.clone(),
        }
    }

    /// Why the authenticator refused: a bad token is the client's 401, an unreachable database
    /// a 503 (retry later), and anything else ours, logged.
    pub fn from_authentication(error: ApiError, request_id: &RequestId) -> Self {
        match error {
            ApiError::InvalidToken | ApiError::Unauthenticated => TransportError::InvalidToken,
            ApiError::ServiceUnavailable => TransportError::ServiceUnavailable,
            ApiError::Internal(detail) => {
                Self::internal(format_args!("authentication: {detail}"), request_id)
            }
            other => Self::internal(format_args!("authentication: {other:?}"), request_id),
        }
    }

    /// The response, counted in the error metrics by its code.
    pub fn counted(self, metrics: &Metrics) -> Response {
        metrics.record_error(self.code());
        self.into_response()
    }
}

impl IntoResponse for TransportError {
    fn into_response(self) -> Response {
        let mut body = request_error_body(&self.to_string(), self.code());
        if let TransportError::Internal { request_id } = &self {
            body["errors"][0]["extensions"]["requestId"] = request_id.0.clone().into();
        }
        let mut response = (self.status(), axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert("x-cache", HeaderValue::from_static("BYPASS"));
        match self {
            // The rest of the body may still come: the connection cannot carry another request.
            TransportError::BodyReadTimeout { .. } => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            TransportError::InvalidToken => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            TransportError::MutationOverGet => {
                headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
            }
            TransportError::RateLimited(verdict) => {
                headers.insert(header::RETRY_AFTER, verdict.retry_after_secs().into());
                insert_rate_limit_headers(headers, &verdict);
            }
            _ => {}
        }
        response
    }
}

/// The `RateLimit-Policy` and `RateLimit` headers of a verdict (on every limited response).
pub fn insert_rate_limit_headers(headers: &mut axum::http::HeaderMap, verdict: &Verdict) {
    for (name, value) in [
        ("ratelimit-policy", verdict.policy_header()),
        ("ratelimit", verdict.limit_header()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Log lines written while the test runs, for asserting what `internal` logs.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    async fn body_json(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("a body");
        serde_json::from_slice(&bytes).expect("a JSON body")
    }

    #[tokio::test]
    async fn an_internal_error_is_logged_with_its_request_id_and_answered_without_its_detail() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let request_id = RequestId("req-1234".into());
        let error = tracing::subscriber::with_default(subscriber, || {
            TransportError::from_authentication(
                ApiError::Internal("database: no such table: api_tokens".into()),
                &request_id,
            )
        });
        let log = String::from_utf8(captured.0.lock().expect("log").clone()).expect("UTF-8");
        assert!(log.contains("ERROR"), "logged as an error: {log}");
        assert!(log.contains("req-1234"), "with the request id: {log}");
        assert!(log.contains("no such table"), "with the detail: {log}");

        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(response.headers().get(header::WWW_AUTHENTICATE).is_none());
        let body = body_json(response).await;
        assert_eq!(
            body,
            serde_json::json!({ "errors": [{
                "message": "internal server error",
                "extensions": { "code": "INTERNAL_SERVER_ERROR", "requestId": "req-1234" },
            }] })
        );
    }

    #[tokio::test]
    async fn the_authenticator_s_refusals_keep_their_statuses_codes_and_headers() {
        let request_id = RequestId("-".into());
        let cases = [
            (
                ApiError::InvalidToken,
                401,
                "UNAUTHENTICATED",
                Some("Bearer"),
            ),
            (
                ApiError::ServiceUnavailable,
                503,
                "SERVICE_UNAVAILABLE",
                None,
            ),
        ];
        for (error, status, code, challenge) in cases {
            let response = TransportError::from_authentication(error, &request_id).into_response();
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(
                response
                    .headers()
                    .get(header::WWW_AUTHENTICATE)
                    .and_then(|value| value.to_str().ok()),
                challenge
            );
            assert_eq!(response.headers()["cache-control"], "no-store");
            assert_eq!(response.headers()["x-cache"], "BYPASS");
            let body = body_json(response).await;
            assert_eq!(body["errors"][0]["extensions"]["code"], code);
            assert!(
                body.get("data").is_none(),
                "a request error has no data entry"
            );
        }
    }
}
