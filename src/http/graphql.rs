//! GraphQL over HTTP, per the GraphQL-over-HTTP specification: POST with a JSON body (one
//! operation or a batch array), GET with query parameters (queries only: a mutation over GET
//! is 405), `application/graphql-response+json` when the client accepts it, 400 for bodies
//! that are not GraphQL requests, 413 past the body limit, 408 past the body read deadline,
//! 401 for a bad token (503 when the token cannot be checked because the database is away).
//! Every response says whether the cache answered (`X-Cache`), and query responses carry
//! `Cache-Control` (revalidate by default) and a strong `ETag` that `If-None-Match` on a GET
//! turns into a 304.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::Extension;
use axum::body::Body;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::Value;
use tower_http::request_id::RequestId as TowerRequestId;

use super::encoding::{ResponseEncoding, insert_content_encoding};
use super::error::{TransportError, insert_rate_limit_headers};
use super::request_shape::{JsonSyntax, operation_shape};
use super::state::AppState;
use super::{RequestId, cache_status, graphiql};
use crate::auth::Credentials;
use crate::cache::Policy;
use crate::compression::{Encoded, base_etag, representation_etag};
use crate::error::ApiError;
use crate::graphql::executor::{CacheStatus, Caller, Operation, Outcome, Refusal, Transport};
use crate::rate_limit::{Client, REFUSED_COST};

const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";
const JSON: &str = "application/json";

pub(super) fn request_id(id: Option<Extension<TowerRequestId>>) -> RequestId {
    let id = id.and_then(|Extension(id)| id.header_value().to_str().ok().map(str::to_owned));
    RequestId(id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()))
}

fn accepts(headers: &HeaderMap, media_type: &str) -> bool {
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

pub async fn get_graphql(
    State(state): State<std::sync::Arc<AppState>>,
    headers: HeaderMap,
    id: Option<Extension<TowerRequestId>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    RawQuery(raw): RawQuery,
) -> Response {
    let params: HashMap<String, String> =
        match serde_urlencoded::from_str(raw.as_deref().unwrap_or("")) {
            Ok(params) => params,
            Err(_) => {
                return TransportError::MalformedQueryString.counted(&state.metrics);
            }
        };
    if !params.contains_key("query") && !params.contains_key("extensions") {
        if accepts(&headers, "text/html") {
            return graphiql::page();
        }
        return TransportError::MissingQueryParameter.counted(&state.metrics);
    }
    let parse_json = |name: &'static str| -> Result<Option<Value>, Box<Response>> {
        match params.get(name).filter(|text| !text.is_empty()) {
            None => Ok(None),
            Some(text) => serde_json::from_str(text).map(Some).map_err(|_| {
                Box::new(TransportError::ParameterNotJson(name).counted(&state.metrics))
            }),
        }
    };
    let variables = match parse_json("variables") {
        Ok(variables) => variables,
        Err(response) => return *response,
    };
    let extensions = match parse_json("extensions") {
        Ok(None) => None,
        Ok(Some(Value::Object(map))) => Some(map),
        Ok(Some(_)) => {
            return TransportError::ExtensionsNotObject.counted(&state.metrics);
        }
        Err(response) => return *response,
    };
    let operation = Operation {
        query: params.get("query").cloned(),
        operation_name: params.get("operationName").cloned(),
        variables,
        extensions,
    };
    respond(
        &state,
        &headers,
        peer_address(peer),
        request_id(id),
        vec![operation],
        false,
        Transport::Get,
    )
    .await
}

pub async fn post_graphql(
    State(state): State<std::sync::Arc<AppState>>,
    headers: HeaderMap,
    id: Option<Extension<TowerRequestId>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    body: Body,
) -> Response {
    // One deadline for the whole body: a client that sends it a byte at a time cannot hold
    // the connection longer than this.
    let read = tokio::time::timeout(
        state.config.body_read_timeout(),
        axum::body::to_bytes(body, state.config.max_body_bytes),
    )
    .await;
    let bytes = match read {
        Ok(Ok(bytes)) => bytes,
        Err(_) => {
            let timeout_ms = state.config.body_read_timeout_ms;
            return TransportError::BodyReadTimeout { timeout_ms }.counted(&state.metrics);
        }
        Ok(Err(_)) => {
            let limit = state.config.max_body_bytes;
            return TransportError::BodyTooLarge { limit }.counted(&state.metrics);
        }
    };
    if !is_json_content_type(&headers) {
        return TransportError::UnsupportedMediaType.counted(&state.metrics);
    }
    // The common case, one operation, is parsed straight into `Operation`.
    let first_byte = bytes
        .iter()
        .find(|byte| !byte.is_ascii_whitespace())
        .copied();
    if first_byte == Some(b'{')
        && let Ok(operation) = serde_json::from_slice::<Operation>(&bytes)
    {
        return respond(
            &state,
            &headers,
            peer_address(peer),
            request_id(id),
            vec![operation],
            false,
            Transport::Post,
        )
        .await;
    }
    let value: Value = match serde_json::from_slice(&bytes) {
        Ok(value) => value,
        Err(error) => {
            let syntax = JsonSyntax::of(&error, &bytes);
            return TransportError::BodyNotJson(syntax).counted(&state.metrics);
        }
    };
    let (items, batch) = match value {
        Value::Array(items) => (items, true),
        object @ Value::Object(_) => (vec![object], false),
        _ => return TransportError::BodyNotObjectOrArray.counted(&state.metrics),
    };
    if batch && (items.is_empty() || items.len() > state.config.max_batch) {
        let (max, got) = (state.config.max_batch, items.len());
        return TransportError::BatchSize { max, got }.counted(&state.metrics);
    }
    let mut operations = Vec::with_capacity(items.len());
    for item in items {
        match <Operation as serde::Deserialize>::deserialize(&item) {
            Ok(operation) => operations.push(operation),
            Err(_) => {
                let shape = operation_shape(&item);
                return TransportError::NotGraphQLRequest(shape).counted(&state.metrics);
            }
        }
    }
    respond(
        &state,
        &headers,
        peer_address(peer),
        request_id(id),
        operations,
        batch,
        Transport::Post,
    )
    .await
}

fn peer_address(peer: Option<Extension<ConnectInfo<SocketAddr>>>) -> IpAddr {
    peer.map_or(
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        |Extension(ConnectInfo(peer))| peer.ip(),
    )
}

/// Answers the operations, within the client's rate limit when one applies: a client whose
/// budget is spent is refused before anything runs, and an answered request is charged its
/// cost (see `crate::rate_limit`). Exempt addresses, and every request while limits are
/// off, go straight to `answer`.
async fn respond(
    state: &AppState,
    headers: &HeaderMap,
    peer: IpAddr,
    request_id: RequestId,
    operations: Vec<Operation>,
    batch: bool,
    transport: Transport,
) -> Response {
    if let Some(message) = operations.iter().find_map(malformed) {
        return TransportError::MalformedOperation(message).counted(&state.metrics);
    }
    let credentials = Credentials::from_header(headers.get(header::AUTHORIZATION));
    let limiter = state.rate_limiter.as_ref().and_then(|limiter| {
        let address = limiter.addresses().client(peer, headers);
        let exempt = limiter.addresses().is_exempt(address);
        (!exempt).then_some((limiter, address))
    });
    let Some((limiter, address)) = limiter else {
        let mut cost = 0;
        return answer(
            state,
            headers,
            credentials,
            request_id,
            operations,
            batch,
            transport,
            &mut cost,
        )
        .await;
    };
    let client = Client {
        address,
        token_hash: credentials
            .as_ref()
            .ok()
            .and_then(Credentials::claimed_token_hash)
            .map(str::to_owned),
    };
    if let Some(verdict) = limiter.check(&client) {
        return TransportError::RateLimited(verdict).counted(&state.metrics);
    }
    let mut cost = REFUSED_COST;
    let mut response = answer(
        state,
        headers,
        credentials,
        request_id,
        operations,
        batch,
        transport,
        &mut cost,
    )
    .await;
    let verdict = limiter.charge(&client, cost).await;
    insert_rate_limit_headers(response.headers_mut(), &verdict);
    response
}

/// Executes the operations and writes the response; `cost` becomes what they cost (left as
/// it is for a request refused before execution).
#[expect(
    clippy::too_many_arguments,
    reason = "one request's parts, each used once"
)]
async fn answer(
    state: &AppState,
    headers: &HeaderMap,
    credentials: Result<Credentials, ApiError>,
    request_id: RequestId,
    operations: Vec<Operation>,
    batch: bool,
    transport: Transport,
    cost: &mut u64,
) -> Response {
    let credentials = match credentials {
        Ok(credentials) => credentials,
        Err(error) => return refused_credentials(state, error, &request_id),
    };
    let span = tracing::Span::current();
    let names: Vec<&str> = operations
        .iter()
        .filter_map(|operation| operation.operation_name.as_deref())
        .collect();
    if !names.is_empty() {
        span.record("operation", names.join(",").as_str());
    }
    let caller = Caller {
        deadline: tokio::time::Instant::now() + state.config.request_timeout(),
        credentials,
        request_id,
        transport,
        bypass_cache: headers
            .get("x-bypass-cache")
            .is_some_and(|value| value.as_bytes() == b"1"),
    };
    let wants_cache_info: Vec<bool> = operations
        .iter()
        .map(|operation| {
            operation
                .extensions
                .as_ref()
                .and_then(|extensions| extensions.get("cacheInfo"))
                == Some(&Value::Bool(true))
        })
        .collect();
    let execute_all = async {
        let mut outcomes = Vec::with_capacity(operations.len());
        for operation in operations {
            outcomes.push(state.executor.execute(operation, &caller).await?);
        }
        Ok::<_, Refusal>(outcomes)
    };
    let mut outcomes = match execute_all.await {
        Ok(outcomes) => {
            *cost = outcomes.iter().map(|outcome| outcome.cost).sum();
            outcomes
        }
        Err(Refusal::MutationOverGet) => {
            return TransportError::MutationOverGet.counted(&state.metrics);
        }
        Err(Refusal::Authentication(error)) => {
            return refused_credentials(state, error, &caller.request_id);
        }
        Err(Refusal::Timeout) => {
            let timeout_ms = state.config.request_timeout().as_millis();
            return TransportError::Timeout { timeout_ms }.counted(&state.metrics);
        }
    };
    let media_type = if accepts(headers, GRAPHQL_RESPONSE_JSON) {
        GRAPHQL_RESPONSE_JSON
    } else {
        JSON
    };
    let content_type = HeaderValue::from_static(if media_type == JSON {
        "application/json"
    } else {
        "application/graphql-response+json; charset=utf-8"
    });
    let encoding = ResponseEncoding::for_request(headers, state.config.compress_from_bytes());
    let vary = HeaderValue::from_static(if state.config.compression {
        "Authorization, Accept, Accept-Encoding"
    } else {
        "Authorization, Accept"
    });

    if batch {
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
        return response;
    }

    let Some(outcome) = outcomes.pop() else {
        return TransportError::NoOperation.counted(&state.metrics);
    };
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
    let stale = cache_status::stale_directives(outcome.policy, windows).filter(|_| !soft_purges);
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
    } else if wants_cache_info[0] {
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
    if let Some(etag) = outcome
        .etag
        .as_ref()
        .and_then(|etag| HeaderValue::from_str(&representation_etag(etag, content_encoding)).ok())
    {
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

/// The answer to credentials that did not check out; a database found unavailable trips the
/// breaker, so the next requests are told at once.
fn refused_credentials(state: &AppState, error: ApiError, request_id: &RequestId) -> Response {
    if matches!(error, ApiError::ServiceUnavailable) {
        state.db_breaker.trip();
    }
    TransportError::from_authentication(error, request_id).counted(&state.metrics)
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
        .any(|candidate| base_etag(candidate.strip_prefix("W/").unwrap_or(candidate)) == etag)
}

/// Why an operation is not a GraphQL request, if it is not: no document (neither a `query`
/// nor a persisted query's hash) or `variables` that are not a map. Like a body that is not
/// JSON, that is the client's request error (400), not a GraphQL error of an execution.
fn malformed(operation: &Operation) -> Option<&'static str> {
    let has_query = operation
        .query
        .as_deref()
        .is_some_and(|query| !query.trim().is_empty());
    let persisted = operation
        .extensions
        .as_ref()
        .is_some_and(|extensions| extensions.contains_key("persistedQuery"));
    if !has_query && !persisted {
        return Some("the request has no `query`");
    }
    if !matches!(
        operation.variables,
        None | Some(Value::Null | Value::Object(_))
    ) {
        return Some("`variables` must be a JSON object");
    }
    None
}

/// `application/json` (any parameters), or the GraphQL response type some clients send.
/// Refusing other types keeps simple cross-site form posts from reaching the API.
fn is_json_content_type(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| {
            value
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|media_type| {
            media_type == JSON
                || media_type == GRAPHQL_RESPONSE_JSON
                || media_type == "application/graphql+json"
        })
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
