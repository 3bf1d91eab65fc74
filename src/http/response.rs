//! Writing a GraphQL response: its media type (`Accept`), coding (`Accept-Encoding`),
//! `Cache-Control`, ETag and 304, and the cache's own headers. One place, so a request
//! answered by the whole executor and one recognized by its bytes (`recognized`) go out
//! exactly alike.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};

use super::cache_status;
use super::encoding::{ResponseEncoding, insert_content_encoding};
use super::state::AppState;
use crate::cache::Policy;
use crate::compression::{Encoded, names_etag, representation_etag};
use crate::graphql::executor::{CacheStatus, Outcome, Transport};

pub(super) const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";
pub(super) const JSON: &str = "application/json";

pub(super) fn accepts(headers: &HeaderMap, media_type: &str) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| {
            value
                .split(',')
                .any(|part| part.trim().starts_with(media_type))
        })
}

/// How this request's responses are shaped: media type, coding and `Vary`.
pub(super) struct ResponseShape {
    media_type: &'static str,
    content_type: HeaderValue,
    encoding: ResponseEncoding,
    vary: HeaderValue,
}

impl ResponseShape {
    pub(super) fn for_request(state: &AppState, headers: &HeaderMap) -> Self {
        let media_type = if accepts(headers, GRAPHQL_RESPONSE_JSON) {
            GRAPHQL_RESPONSE_JSON
        } else {
            JSON
        };
        ResponseShape {
            media_type,
            content_type: HeaderValue::from_static(if media_type == JSON {
                "application/json"
            } else {
                "application/graphql-response+json; charset=utf-8"
            }),
            encoding: ResponseEncoding::for_request(headers, state.config.compress_from_bytes()),
            vary: HeaderValue::from_static(if state.config.compression {
                "Authorization, Accept, Accept-Encoding"
            } else {
                "Authorization, Accept"
            }),
        }
    }

    /// A batch's response: never cached by HTTP caches (`no-store`).
    pub(super) async fn batch(self, outcomes: &[Outcome], wants_cache_info: &[bool]) -> Response {
        let ResponseShape {
            content_type,
            encoding,
            vary,
            ..
        } = self;
        let mut body = BytesMut::new();
        body.put_u8(b'[');
        for (index, outcome) in outcomes.iter().enumerate() {
            if index > 0 {
                body.put_u8(b',');
            }
            body.put_slice(&with_cache_info(outcome, wants_cache_info[index]));
        }
        body.put_u8(b']');
        let (body, content_encoding) = encoding.encode(body.freeze(), &Encoded::default()).await;
        let status = if outcomes
            .iter()
            .all(|outcome| outcome.cache == CacheStatus::Hit)
        {
            CacheStatus::Hit
        } else if outcomes
            .iter()
            .any(|outcome| outcome.cache == CacheStatus::Miss)
        {
            CacheStatus::Miss
        } else if outcomes
            .iter()
            .any(|outcome| outcome.cache == CacheStatus::Stale)
        {
            CacheStatus::Stale
        } else {
            CacheStatus::Bypass
        };
        let mut response = Response::new(Body::from(body));
        let response_headers = response.headers_mut();
        response_headers.insert(header::CONTENT_TYPE, content_type);
        insert_content_encoding(response_headers, content_encoding);
        response_headers.insert(header::VARY, vary);
        response_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response_headers.insert("x-cache", HeaderValue::from_static(status.as_str()));
        if let Ok(value) = HeaderValue::from_str(&cache_status::batch_cache_status(status)) {
            response_headers.insert(cache_status::HEADER, value);
        }
        response
    }

    /// A single operation's response.
    pub(super) async fn single(
        self,
        state: &AppState,
        headers: &HeaderMap,
        outcome: Outcome,
        transport: Transport,
        wants_cache_info: bool,
    ) -> Response {
        let ResponseShape {
            media_type,
            content_type,
            encoding,
            vary,
        } = self;
        tracing::Span::current().record("cache", outcome.cache.as_str());
        // With an edge that is purged on commit, shared caches keep a public result for its
        // whole TTL: a mutation's purge, not time, retires it there.
        let shared_max_age = match state.edge_purger {
            Some(_) => u32::MAX,
            None => state.config.http_shared_max_age_secs,
        };
        let cache_control = cache_control(outcome.policy, shared_max_age);
        // A soft-purged object is stale, not gone: an edge told it may serve stale content would
        // serve what a mutation purged, so with soft purges no stale directive is sent.
        let soft_purges = state.edge_purger.is_some() && state.config.edge_soft_purge;
        let windows = state.freshness.windows_for(&outcome.tags);
        let stale =
            cache_status::stale_directives(outcome.policy, windows).filter(|_| !soft_purges);
        let cache_control = match stale {
            Some(stale) => format!("{cache_control}, {stale}"),
            None => cache_control,
        };
        // Only a GET is a cacheable request an HTTP cache revalidates; a POST always gets the body.
        let not_modified = transport == Transport::Get
            && outcome
                .etag
                .as_deref()
                .is_some_and(|etag| if_none_match(headers, etag));
        let status = if not_modified {
            StatusCode::NOT_MODIFIED
        } else if media_type == GRAPHQL_RESPONSE_JSON && outcome.data_absent {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        };
        // A 304 names the representation the client would have been sent.
        let (body, content_encoding) = if not_modified {
            (Bytes::new(), encoding.for_length(outcome.body.len()))
        } else if wants_cache_info {
            let spliced = with_cache_info(&outcome, true);
            encoding.encode(spliced, &Encoded::default()).await
        } else {
            encoding
                .encode(outcome.body.clone(), &outcome.encoded)
                .await
        };
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = status;
        let response_headers = response.headers_mut();
        if !not_modified {
            response_headers.insert(header::CONTENT_TYPE, content_type);
            insert_content_encoding(response_headers, content_encoding);
        }
        if let Ok(value) = HeaderValue::from_str(&cache_control) {
            response_headers.insert(header::CACHE_CONTROL, value);
        }
        if let Some(etag) = outcome.etag.as_ref().and_then(|etag| {
            HeaderValue::from_str(&representation_etag(etag, content_encoding)).ok()
        }) {
            response_headers.insert(header::ETAG, etag);
        }
        response_headers.insert("x-cache", HeaderValue::from_static(outcome.cache.as_str()));
        if let Some(surrogate_keys) = &state.surrogate_keys
            && outcome.policy.is_some_and(|policy| !policy.private)
        {
            surrogate_keys.insert(response_headers, &outcome.tags);
        }
        if let Ok(value) = HeaderValue::from_str(&cache_status::cache_status(&outcome)) {
            response_headers.insert(cache_status::HEADER, value);
        }
        response_headers.insert(header::VARY, vary);
        response
    }
}

/// `Cache-Control` for a single result. A public result may be stored anywhere but reused
/// only after revalidating with its ETag (a 304 costs a cache lookup, not an execution), so no
/// browser or CDN keeps serving what a mutation has changed; an operator who accepts that
/// delay lets shared caches reuse it for `shared_max_age` seconds, never beyond its max-age.
fn cache_control(policy: Option<Policy>, shared_max_age: u32) -> String {
    match policy {
        Some(policy) if !policy.private => {
            let shared_max_age = shared_max_age.min(policy.max_age);
            if shared_max_age == 0 {
                "public, max-age=0, must-revalidate".to_owned()
            } else {
                format!("public, max-age=0, s-maxage={shared_max_age}, must-revalidate")
            }
        }
        Some(_) => "private, no-store".to_owned(),
        None => "no-store".to_owned(),
    }
}

/// Whether `If-None-Match` names this ETag, in any of its codings' forms. Weak comparison
/// (RFC 9110 13.1.2): a proxy that compresses the body turns our strong ETag into `W/"..."`,
/// and the client sends that back. `*` never matches: it asks "any representation", and a
/// GraphQL URL's result changes.
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|candidate| names_etag(candidate.strip_prefix("W/").unwrap_or(candidate), etag))
}

/// The body, with `extensions.cache` spliced in when the client asked for it.
fn with_cache_info(outcome: &Outcome, wanted: bool) -> Bytes {
    if !wanted || outcome.body.last() != Some(&b'}') {
        return outcome.body.clone();
    }
    let info = serde_json::json!({
        "status": outcome.cache.as_str(),
        "maxAge": outcome.policy.map(|policy| policy.max_age),
        "scope": outcome.policy.map(|policy| if policy.private { "PRIVATE" } else { "PUBLIC" }),
        "cacheStatus": cache_status::cache_status(outcome),
    });
    let body = &outcome.body[..outcome.body.len() - 1];
    let has_members = body.len() > 1;
    let mut spliced = BytesMut::with_capacity(outcome.body.len() + 96);
    spliced.put_slice(body);
    if has_members {
        spliced.put_u8(b',');
    }
    spliced.put_slice(b"\"extensions\":{\"cache\":");
    spliced.put_slice(info.to_string().as_bytes());
    spliced.put_slice(b"}}");
    spliced.freeze()
}
