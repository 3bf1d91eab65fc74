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
use axum::http::{HeaderMap, header};
use axum::response::Response;
use serde_json::Value;
use tower_http::request_id::RequestId as TowerRequestId;

use super::error::{TransportError, insert_rate_limit_headers};
use super::recognized::Fingerprint;
use super::request_shape::{JsonSyntax, operation_shape};
use super::response::{GRAPHQL_RESPONSE_JSON, JSON, ResponseShape, accepts};
use super::state::AppState;
use super::{RequestId, graphiql};
use crate::auth::Credentials;
use crate::error::ApiError;
use crate::graphql::executor::{Caller, Operation, Outcome, Refusal, Transport};
use crate::rate_limit::{Client, REFUSED_COST, RateLimiter};

/// One HTTP request's operations, as read from its body or query string.
struct Received {
    operations: Vec<Operation>,
    batch: bool,
    transport: Transport,
    /// The raw request's fingerprint, when its answer may be recognized by it next time.
    fingerprint: Option<Fingerprint>,
}

pub(super) fn request_id(id: Option<Extension<TowerRequestId>>) -> RequestId {
    let id = id.and_then(|Extension(id)| id.header_value().to_str().ok().map(str::to_owned));
    RequestId(id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()))
}

pub async fn get_graphql(
    State(state): State<std::sync::Arc<AppState>>,
    headers: HeaderMap,
    id: Option<Extension<TowerRequestId>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    RawQuery(raw): RawQuery,
) -> Response {
    let fingerprint = recognizable(&state, &headers)
        .then(|| Fingerprint::of(Transport::Get, raw.as_deref().unwrap_or("").as_bytes()));
    if let Some(fingerprint) = &fingerprint
        && let Some(response) =
            answer_recognized(&state, &headers, peer, Transport::Get, fingerprint).await
    {
        return response;
    }
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
    let received = Received {
        operations: vec![operation],
        batch: false,
        transport: Transport::Get,
        fingerprint,
    };
    respond(
        &state,
        &headers,
        peer_address(peer),
        request_id(id),
        received,
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
    let fingerprint =
        recognizable(&state, &headers).then(|| Fingerprint::of(Transport::Post, &bytes));
    if let Some(fingerprint) = &fingerprint
        && let Some(response) =
            answer_recognized(&state, &headers, peer, Transport::Post, fingerprint).await
    {
        return response;
    }
    // The common case, one operation, is parsed straight into `Operation`.
    let first_byte = bytes
        .iter()
        .find(|byte| !byte.is_ascii_whitespace())
        .copied();
    if first_byte == Some(b'{')
        && let Ok(operation) = serde_json::from_slice::<Operation>(&bytes)
    {
        let received = Received {
            operations: vec![operation],
            batch: false,
            transport: Transport::Post,
            fingerprint,
        };
        return respond(
            &state,
            &headers,
            peer_address(peer),
            request_id(id),
            received,
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
    // A batch is never recognized: its parts are answered one by one.
    let received = Received {
        operations,
        batch,
        transport: Transport::Post,
        fingerprint: None,
    };
    respond(
        &state,
        &headers,
        peer_address(peer),
        request_id(id),
        received,
    )
    .await
}

fn peer_address(peer: Option<Extension<ConnectInfo<SocketAddr>>>) -> IpAddr {
    peer.map_or(
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        |Extension(ConnectInfo(peer))| peer.ip(),
    )
}

/// Whether a request may be answered by its bytes alone: a cache exists and the request
/// carries nothing that changes what it is answered with (no credentials, no bypass).
fn recognizable(state: &AppState, headers: &HeaderMap) -> bool {
    state.cache.is_some()
        && !headers.contains_key(header::AUTHORIZATION)
        && !headers.contains_key("x-bypass-cache")
}

/// The rate limiter and the client it charges, unless limits are off or the client's
/// address is exempt.
fn limited_client<'a>(
    state: &'a AppState,
    headers: &HeaderMap,
    peer: IpAddr,
    token_hash: Option<&str>,
) -> Option<(&'a RateLimiter, Client)> {
    let limiter = state.rate_limiter.as_ref()?;
    let address = limiter.addresses().client(peer, headers);
    if limiter.addresses().is_exempt(address) {
        return None;
    }
    let client = Client {
        address,
        token_hash: token_hash.map(str::to_owned),
    };
    Some((limiter, client))
}

/// The answer to a request recognized by its bytes (`recognized`), when its entry is fresh;
/// `None` sends it the whole way. Rate limits apply as to any request (a hit costs 1).
async fn answer_recognized(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    transport: Transport,
    fingerprint: &Fingerprint,
) -> Option<Response> {
    let recognized = state.recognized.get(fingerprint)?;
    let started = std::time::Instant::now();
    let entry = state.cache.as_ref()?.fresh_entry(&recognized.key).await?;
    let limited = limited_client(state, headers, peer_address(peer), None);
    if let Some((limiter, client)) = &limited
        && let Some(verdict) = limiter.check(client)
    {
        return Some(TransportError::RateLimited(verdict).counted(&state.metrics));
    }
    if let Some(name) = &recognized.operation_name {
        tracing::Span::current().record("operation", name.as_str());
    }
    let outcome = Outcome::hit(&entry, recognized.policy);
    let seconds = started.elapsed().as_secs_f64();
    if let (Some(cache), Some(document)) = (state.cache.as_ref(), recognized.document) {
        let label = &recognized.label;
        let milliseconds = seconds * 1000.0;
        cache
            .insights()
            .record(label, document, outcome.cache, None, milliseconds);
    }
    state
        .metrics
        .record_request(recognized.label.clone(), outcome.cache.as_str(), seconds);
    let mut response = ResponseShape::for_request(state, headers)
        .single(state, headers, outcome, transport, false)
        .await;
    if let Some((limiter, client)) = limited {
        let verdict = limiter.charge(&client, 1).await;
        insert_rate_limit_headers(response.headers_mut(), &verdict);
    }
    Some(response)
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
    received: Received,
) -> Response {
    if let Some(message) = received.operations.iter().find_map(malformed) {
        return TransportError::MalformedOperation(message).counted(&state.metrics);
    }
    let credentials = Credentials::from_header(headers.get(header::AUTHORIZATION));
    let token_hash = credentials
        .as_ref()
        .ok()
        .and_then(Credentials::claimed_token_hash);
    let Some((limiter, client)) = limited_client(state, headers, peer, token_hash) else {
        let mut cost = 0;
        return answer(state, headers, credentials, request_id, received, &mut cost).await;
    };
    if let Some(verdict) = limiter.check(&client) {
        return TransportError::RateLimited(verdict).counted(&state.metrics);
    }
    let mut cost = REFUSED_COST;
    let mut response = answer(state, headers, credentials, request_id, received, &mut cost).await;
    let verdict = limiter.charge(&client, cost).await;
    insert_rate_limit_headers(response.headers_mut(), &verdict);
    response
}

/// Executes the operations and writes the response; `cost` becomes what they cost (left as
/// it is for a request refused before execution).
async fn answer(
    state: &AppState,
    headers: &HeaderMap,
    credentials: Result<Credentials, ApiError>,
    request_id: RequestId,
    received: Received,
    cost: &mut u64,
) -> Response {
    let Received {
        operations,
        batch,
        transport,
        fingerprint,
    } = received;
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
    // Remembered with the answer when it may be recognized next time.
    let first_name = fingerprint
        .and(names.first())
        .map(|name| (*name).to_owned());
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
    let shape = ResponseShape::for_request(state, headers);
    if batch {
        return shape.batch(&outcomes, &wants_cache_info).await;
    }
    let Some(outcome) = outcomes.pop() else {
        return TransportError::NoOperation.counted(&state.metrics);
    };
    if let (Some(fingerprint), Some(key), Some(policy), false) = (
        fingerprint,
        outcome.public_key.as_ref(),
        outcome.policy,
        wants_cache_info[0],
    ) {
        let label = state.metrics.operation_label(first_name.as_deref());
        state.recognized.remember(
            fingerprint,
            key.clone(),
            policy,
            first_name,
            label,
            outcome.document,
        );
    }
    shape
        .single(state, headers, outcome, transport, wants_cache_info[0])
        .await
}

/// The answer to credentials that did not check out; a database found unavailable trips the
/// breaker, so the next requests are told at once.
fn refused_credentials(state: &AppState, error: ApiError, request_id: &RequestId) -> Response {
    if matches!(error, ApiError::ServiceUnavailable) {
        state.db_breaker.trip();
    }
    TransportError::from_authentication(error, request_id).counted(&state.metrics)
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
