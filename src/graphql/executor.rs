//! Runs one GraphQL operation the way the product promises: resolve a persisted query,
//! answer from the response cache when a fresh entry exists, otherwise execute once (single
//! flight) with per-request DataLoaders and tag recording, then fill the cache.
//!
//! The cache sits in front of async-graphql's parser on purpose: a hit costs a key hash and
//! one backend round trip, not a parse and validation. What a document may be cached as
//! (`Policy`: max-age, public or private) is learned from async-graphql's static cache-control
//! analysis the first time the document executes, and is a property of the document alone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use async_graphql::parser::types::OperationType;
use async_graphql::{Request, Variables};
use bytes::Bytes;
use sea_orm::DatabaseConnection;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tracing::Instrument;

use super::document_cost::{DocumentCost, MAX_EXPANDED_FIELDS, MAX_INTROSPECTION_COST};
use super::loaders::Loaders;
use super::response_body::{self, EncodedResponse};
use super::response_order::ResponseOrder;
use super::schema::Schemas;
use crate::auth::Principal;
use crate::cache::key::{Scope, document_hash, response_key};
use crate::cache::monitor::RecordedOperation;
use crate::cache::single_flight::SingleFlight;
use crate::cache::tags::TagRecorder;
use crate::cache::{CacheLookup, Policy, ResponseCache};
use crate::error::{ApiError, Phase, codes};
use crate::http::RequestId;
use crate::telemetry::Metrics;

/// One GraphQL request as a client sent it (one element of a batch).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default)]
    pub operation_name: Option<String>,
    #[serde(default)]
    pub variables: Option<Value>,
    #[serde(default)]
    pub extensions: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Get,
    Post,
}

/// Who sent the operation and how.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub request_id: RequestId,
    pub transport: Transport,
    /// `X-Bypass-Cache: 1`, honoured only when the server allows it.
    pub bypass_cache: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
    Bypass,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Bypass => "BYPASS",
        }
    }
}

/// A finished operation, ready to become an HTTP response.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub body: Bytes,
    pub cache: CacheStatus,
    /// `Some` for cacheable query results.
    pub policy: Option<Policy>,
    pub etag: Option<String>,
    /// True when the response has no `data` (the request failed before execution).
    pub data_absent: bool,
}

impl Outcome {
    fn hit(entry: &crate::cache::entry::Entry, policy: Policy) -> Self {
        Outcome {
            body: entry.body.clone(),
            cache: CacheStatus::Hit,
            policy: Some(policy),
            etag: Some(entry.etag.clone()),
            data_absent: false,
        }
    }
}

/// A request the HTTP layer refuses outright.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    MutationOverGet,
}

pub struct Executor {
    schemas: Schemas,
    db: DatabaseConnection,
    cache: Option<ResponseCache>,
    metrics: Arc<Metrics>,
    /// The safelist: when set, only these documents (by SHA-256) may run.
    manifest: Option<HashMap<String, String>>,
    allow_cache_bypass: bool,
    fill_delay: std::time::Duration,
    flights: SingleFlight<Outcome>,
}

pub fn etag_of(body: &[u8]) -> String {
    format!("\"{}\"", &hex::encode(Sha256::digest(body))[..32])
}

fn error_outcome(error: ApiError) -> Outcome {
    let code = error.code();
    let body = serde_json::to_vec(&crate::error::request_error_body(&error.to_string(), code))
        .unwrap_or_default();
    Outcome {
        body: Bytes::from(body),
        cache: CacheStatus::Bypass,
        policy: None,
        etag: None,
        data_absent: true,
    }
}

/// Where a fill gets the invalidation sequence it must record.
enum SequenceSource {
    Known(Option<u64>),
    /// First sight of a query: the sequence it observed, and a second look for an entry a
    /// just-finished flight may have stored.
    FirstSight(u64),
    /// A miss: look again inside the flight (a flight that just finished may have filled it).
    Recheck(String, Policy),
}

struct Resolved {
    query: String,
    document: String,
}

impl Executor {
    pub fn new(
        schemas: Schemas,
        db: DatabaseConnection,
        cache: Option<ResponseCache>,
        metrics: Arc<Metrics>,
        manifest: Option<HashMap<String, String>>,
        allow_cache_bypass: bool,
        fill_delay: std::time::Duration,
    ) -> Self {
        Executor {
            schemas,
            db,
            cache,
            metrics,
            manifest,
            allow_cache_bypass,
            fill_delay,
            flights: SingleFlight::default(),
        }
    }

    pub fn cache(&self) -> Option<&ResponseCache> {
        self.cache.as_ref()
    }

    /// Finds the document to run: the query text, or a persisted query by its hash.
    async fn resolve(&self, operation: &Operation) -> Result<Resolved, ApiError> {
        let persisted = operation
            .extensions
            .as_ref()
            .and_then(|extensions| extensions.get("persistedQuery"));
        let Some(persisted) = persisted else {
            let query = operation
                .query
                .clone()
                .filter(|query| !query.trim().is_empty())
                .ok_or_else(|| ApiError::bad_input("the request has no `query`"))?;
            let document = document_hash(&query);
            if let Some(manifest) = &self.manifest
                && !manifest.contains_key(&document)
            {
                return Err(ApiError::PersistedQueryNotAllowed);
            }
            return Ok(Resolved { query, document });
        };
        let version = persisted.get("version").and_then(Value::as_i64);
        if version != Some(1) {
            return Err(ApiError::bad_input("persistedQuery.version must be 1"));
        }
        let hash = persisted
            .get("sha256Hash")
            .and_then(Value::as_str)
            .filter(|hash| hash.len() == 64 && hash.bytes().all(|byte| byte.is_ascii_hexdigit()))
            .ok_or_else(|| ApiError::bad_input("persistedQuery.sha256Hash must be 64 hex digits"))?
            .to_ascii_lowercase();
        if let Some(query) = operation.query.as_ref().filter(|query| !query.is_empty()) {
            if document_hash(query) != hash {
                return Err(ApiError::PersistedQueryHashMismatch);
            }
            if let Some(manifest) = &self.manifest {
                if !manifest.contains_key(&hash) {
                    return Err(ApiError::PersistedQueryNotAllowed);
                }
            } else if let Some(cache) = &self.cache {
                cache.register_persisted_query(&hash, query).await;
            }
            return Ok(Resolved {
                query: query.clone(),
                document: hash,
            });
        }
        if let Some(query) = self
            .manifest
            .as_ref()
            .and_then(|manifest| manifest.get(&hash))
        {
            return Ok(Resolved {
                query: query.clone(),
                document: hash,
            });
        }
        if self.manifest.is_some() {
            return Err(ApiError::PersistedQueryNotAllowed);
        }
        match &self.cache {
            Some(cache) => match cache.persisted_query(&hash).await {
                Some(query) => Ok(Resolved {
                    query,
                    document: hash,
                }),
                None => Err(ApiError::PersistedQueryNotFound),
            },
            None => Err(ApiError::PersistedQueryNotFound),
        }
    }

    pub async fn execute(&self, operation: Operation, caller: &Caller) -> Result<Outcome, Refusal> {
        let started = Instant::now();
        let label = self
            .metrics
            .operation_label(operation.operation_name.as_deref());
        let outcome = self.execute_inner(operation, caller, &label).await;
        if let Ok(outcome) = &outcome {
            self.metrics.record_request(
                label,
                outcome.cache.as_str(),
                started.elapsed().as_secs_f64(),
            );
        }
        outcome
    }

    async fn execute_inner(
        &self,
        operation: Operation,
        caller: &Caller,
        label: &str,
    ) -> Result<Outcome, Refusal> {
        let resolved = match self.resolve(&operation).await {
            Ok(resolved) => resolved,
            Err(error) => {
                self.metrics.record_error(error.code());
                return Ok(error_outcome(error));
            }
        };
        let operation_name = operation
            .operation_name
            .clone()
            .filter(|name| !name.is_empty());
        let variables = match operation.variables {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(Value::Object(map)) => Value::Object(map),
            Some(_) => {
                self.metrics.record_error(codes::BAD_USER_INPUT);
                return Ok(error_outcome(ApiError::bad_input(
                    "`variables` must be a JSON object",
                )));
            }
        };
        let cache = self
            .cache
            .as_ref()
            .filter(|_| !(caller.bypass_cache && self.allow_cache_bypass));
        let policy =
            cache.and_then(|cache| cache.policy(&resolved.document, operation_name.as_deref()));

        // A document whose policy is not known yet is parsed to learn its kind: mutations
        // (and anything that is not a query) are never coalesced and never read the sequence.
        let is_query = match policy {
            Some(_) => true,
            None => {
                let kind = operation_kind(&resolved.query, operation_name.as_deref());
                if caller.transport == Transport::Get && kind == Some(OperationType::Mutation) {
                    return Err(Refusal::MutationOverGet);
                }
                kind == Some(OperationType::Query)
            }
        };

        // A private document without a token runs uncached: it is refused by its guard.
        let cache = cache.filter(|_| {
            is_query
                && !policy
                    .is_some_and(|policy| policy.private && !caller.principal.is_authenticated())
        });
        let Some(cache) = cache else {
            if let Some(cache) = &self.cache {
                cache.record_bypass();
            }
            let run = self.run(
                resolved,
                operation_name,
                variables,
                caller,
                label,
                SequenceSource::Known(None),
            );
            return Ok(run.await);
        };

        let principal_scope = match &caller.principal {
            Principal::Token { token_hash, .. } => Scope::Private(token_hash.clone()),
            Principal::Anonymous => Scope::Private("anonymous".to_owned()),
        };
        // `flight` is the single-flight key and the sequence this request observed; without a
        // sequence there is no proof that a running flight read the database after the
        // commits this request follows, so it executes alone.
        let (flight, sequence) = match policy {
            Some(policy) => {
                let scope = if policy.private {
                    principal_scope
                } else {
                    Scope::Public
                };
                let key = response_key(
                    &resolved.document,
                    operation_name.as_deref(),
                    &variables,
                    &scope,
                );
                match cache.lookup(&key).await {
                    CacheLookup::Hit(entry) => return Ok(Outcome::hit(&entry, policy)),
                    CacheLookup::Miss { seq } => (
                        Some((key.clone(), seq)),
                        SequenceSource::Recheck(key, policy),
                    ),
                    CacheLookup::Unavailable => (None, SequenceSource::Known(None)),
                }
            }
            None => {
                // First sight of this query: its policy is unknown until it executes, so
                // concurrent first requests are coalesced per principal.
                let key = response_key(
                    &resolved.document,
                    operation_name.as_deref(),
                    &variables,
                    &principal_scope,
                );
                match cache.sequence().await {
                    Some(seq) => (
                        Some((format!("first:{key}"), seq)),
                        SequenceSource::FirstSight(seq),
                    ),
                    None => (None, SequenceSource::Known(None)),
                }
            }
        };
        let run = self
            .run(resolved, operation_name, variables, caller, label, sequence)
            .instrument(tracing::Span::current());
        let Some((flight_key, observed)) = flight else {
            return Ok(run.await);
        };
        Ok(self
            .flights
            .run(flight_key, observed, run)
            .await
            .unwrap_or_else(|| {
                error_outcome(ApiError::Internal("the execution task failed".into()))
            }))
    }

    /// Executes against the database and, when `seq` is known and the result is cacheable,
    /// fills the cache. Owns everything it needs, so it can run as a single-flight task.
    fn run(
        &self,
        resolved: Resolved,
        operation_name: Option<String>,
        variables: Value,
        caller: &Caller,
        label: &str,
        sequence: SequenceSource,
    ) -> impl Future<Output = Outcome> + Send + 'static {
        let schemas = self.schemas.clone();
        let db = self.db.clone();
        let cache = self.cache.clone();
        let metrics = Arc::clone(&self.metrics);
        let caller = caller.clone();
        let label = label.to_owned();
        let fill_delay = self.fill_delay;
        async move {
            let fill_started = Instant::now();
            // Inside the flight, so that no await separates a request's decision to lead
            // from its registration, and a late leader finds what the previous one stored.
            let seq = match (sequence, &cache) {
                (SequenceSource::Known(seq), _) => seq,
                (_, None) => None,
                (SequenceSource::FirstSight(seq), Some(cache)) => {
                    // A flight that finished while this request read the sequence may have
                    // learned the policy and filled the entry.
                    let learned = cache
                        .policy(&resolved.document, operation_name.as_deref())
                        .and_then(|policy| {
                            let scope = match (&caller.principal, policy.private) {
                                (_, false) => Scope::Public,
                                (Principal::Token { token_hash, .. }, true) => {
                                    Scope::Private(token_hash.clone())
                                }
                                (Principal::Anonymous, true) => return None,
                            };
                            let key = response_key(
                                &resolved.document,
                                operation_name.as_deref(),
                                &variables,
                                &scope,
                            );
                            Some((key, policy))
                        });
                    if let Some((key, policy)) = learned
                        && let CacheLookup::Hit(entry) = cache.recheck(&key).await
                    {
                        return Outcome::hit(&entry, policy);
                    }
                    Some(seq)
                }
                (SequenceSource::Recheck(key, policy), Some(cache)) => {
                    match cache.recheck(&key).await {
                        CacheLookup::Hit(entry) => return Outcome::hit(&entry, policy),
                        CacheLookup::Miss { seq } => Some(seq),
                        CacheLookup::Unavailable => None,
                    }
                }
            };
            let started = Instant::now();
            let tags = Arc::new(TagRecorder::default());
            let mut request = Request::new(resolved.query.clone())
                .variables(Variables::from_json(variables.clone()))
                .data(Loaders::new(&db))
                .data(caller.principal.clone())
                .data(caller.request_id.clone())
                .data(Arc::clone(&tags));
            if let Some(name) = &operation_name {
                request = request.operation_name(name.clone());
            }
            // Parsed here (async-graphql keeps the parsed document in the request and does not
            // parse again), so the executor learns what the document is without a schema
            // extension: any extension puts a hook around every field, which cost half of the
            // CPU of a 100-product page (docs/performance.md).
            let (facts, order, mut response) = match request.parsed_query() {
                Ok(document) => {
                    let facts = DocumentFacts::of(document);
                    let cost = DocumentCost::of(document, operation_name.as_deref());
                    let order = ResponseOrder::of(document, operation_name.as_deref());
                    let response = match schemas.select(cost) {
                        Ok(schema) => schema.execute(request).await,
                        Err(refusal) => async_graphql::Response::from_errors(vec![
                            async_graphql::ServerError::new(refusal, None),
                        ]),
                    };
                    (facts, order, response)
                }
                Err(error) => (
                    DocumentFacts::default(),
                    None,
                    async_graphql::Response::from_errors(vec![
                        crate::error::readable_syntax_error(error, &resolved.query),
                    ]),
                ),
            };
            let parse_failed = facts.is_empty();
            for error in &mut response.errors {
                let phase = if parse_failed {
                    Phase::Parse
                } else if error.path.is_empty() {
                    Phase::Validation
                } else {
                    Phase::Execution
                };
                crate::error::assign_code(error, phase, Some(&caller.request_id.0));
                if let Some(async_graphql::Value::String(code)) = error
                    .extensions
                    .as_ref()
                    .and_then(|extensions| extensions.get("code"))
                {
                    metrics.record_error(code);
                }
            }
            let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
            let is_query =
                facts.operation_type(operation_name.as_deref()) == Some(OperationType::Query);
            let EncodedResponse { body, data_absent } =
                response_body::encode(&mut response, order.as_ref());
            let etag = is_query.then(|| etag_of(&body));
            let control = response.cache_control;
            let policy =
                (is_query && response.errors.is_empty() && control.max_age > 0).then_some(Policy {
                    max_age: control.max_age as u32,
                    private: !control.public,
                });

            let mut status = CacheStatus::Bypass;
            if let Some(cache) = &cache {
                let timed_as = match (&operation_name, facts.single_operation_name()) {
                    (None, Some(name)) => metrics.operation_label(Some(&name)),
                    _ => label.clone(),
                };
                cache.record_execution(&timed_as, elapsed_ms);
                if let Some(policy) = policy {
                    let scope = match (&caller.principal, policy.private) {
                        (_, false) => Some(Scope::Public),
                        (Principal::Token { token_hash, .. }, true) => {
                            Some(Scope::Private(token_hash.clone()))
                        }
                        (Principal::Anonymous, true) => None,
                    };
                    // A fill older than `MAX_FILL_AGE` is dropped: tag stamps outlive the
                    // longest entry TTL by just that margin, so a later fill could outlive the
                    // stamp that makes it stale.
                    let seq = seq.filter(|_| fill_started.elapsed() < crate::cache::MAX_FILL_AGE);
                    if let (Some(scope), Some(seq)) = (scope, seq) {
                        status = CacheStatus::Miss;
                        let key = response_key(
                            &resolved.document,
                            operation_name.as_deref(),
                            &variables,
                            &scope,
                        );
                        let tag_list = tags.take().normalized();
                        if !fill_delay.is_zero() {
                            tokio::time::sleep(fill_delay).await;
                        }
                        if let Some(etag) = &etag {
                            cache
                                .fill(&key, seq, &tag_list, body.clone(), etag.clone(), policy)
                                .await;
                        }
                        if !policy.private {
                            // Public scope: the response key is the operation's identity.
                            cache.record_operation(
                                key.trim_start_matches("resp:").to_owned(),
                                RecordedOperation {
                                    query: resolved.query.clone(),
                                    operation_name: operation_name.clone(),
                                    variables,
                                },
                            );
                        }
                    }
                    // Learned only once the entry is stored: a request that sees the policy
                    // must find the entry, or it would execute a second time.
                    cache.learn_policy(&resolved.document, operation_name.as_deref(), policy);
                } else {
                    cache.record_bypass();
                }
            }
            Outcome {
                body,
                cache: status,
                policy,
                etag,
                data_absent,
            }
        }
    }
}

impl Schemas {
    /// The schema that may run a document of this cost, or why none may. Runs before
    /// async-graphql validates, so validation never sees an over-budget document.
    fn select(&self, cost: Option<DocumentCost>) -> Result<&super::CatalogSchema, String> {
        let Some(cost) = cost else {
            return Ok(&self.api);
        };
        if cost.expanded_fields > MAX_EXPANDED_FIELDS {
            return Err(format!(
                "the operation selects {} fields once its fragments are expanded; the limit is {MAX_EXPANDED_FIELDS}",
                if cost.expanded_fields == u64::MAX {
                    "too many".to_owned()
                } else {
                    cost.expanded_fields.to_string()
                }
            ));
        }
        if cost.uses_introspection && !self.introspection_enabled {
            return Err("introspection is turned off on this server".to_owned());
        }
        if !cost.introspection_only {
            return Ok(&self.api);
        }
        if cost.introspection_cost > MAX_INTROSPECTION_COST {
            return Err(format!(
                "the introspection query nests lists too deeply (estimated {} values; the limit is {MAX_INTROSPECTION_COST})",
                cost.introspection_cost
            ));
        }
        Ok(&self.introspection)
    }
}

/// The operations a parsed document holds: their names and kinds.
#[derive(Debug, Default)]
struct DocumentFacts {
    operations: Vec<(Option<String>, OperationType)>,
}

impl DocumentFacts {
    fn of(document: &async_graphql::parser::types::ExecutableDocument) -> Self {
        use async_graphql::parser::types::DocumentOperations;
        let operations = match &document.operations {
            DocumentOperations::Single(operation) => vec![(None, operation.node.ty)],
            DocumentOperations::Multiple(operations) => operations
                .iter()
                .map(|(name, operation)| (Some(name.to_string()), operation.node.ty))
                .collect(),
        };
        DocumentFacts { operations }
    }

    fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }

    /// The type of the operation that `operation_name` selects.
    fn operation_type(&self, operation_name: Option<&str>) -> Option<OperationType> {
        match operation_name {
            None if self.operations.len() == 1 => self.operations.first().map(|(_, kind)| *kind),
            None => None,
            Some(name) => self
                .operations
                .iter()
                .find(|(candidate, _)| candidate.as_deref() == Some(name))
                .map(|(_, kind)| *kind),
        }
    }

    /// The name of the document's only operation, when it has exactly one and it is named.
    fn single_operation_name(&self) -> Option<String> {
        match self.operations.as_slice() {
            [(name, _)] => name.clone(),
            _ => None,
        }
    }
}

/// The kind of the operation a document selects (parsing only; errors are left for
/// execution to report): `None` when it does not parse or selects no operation.
fn operation_kind(query: &str, operation_name: Option<&str>) -> Option<OperationType> {
    async_graphql::parser::parse_query(query)
        .ok()
        .and_then(|document| DocumentFacts::of(&document).operation_type(operation_name))
}
