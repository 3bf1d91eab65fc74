//! Runs one GraphQL operation the way the product promises: resolve a persisted query,
//! answer from the response cache when a fresh entry exists, otherwise execute once (single
//! flight) with per-request DataLoaders and tag recording, then fill the cache.
//!
//! The cache sits in front of async-graphql's parser on purpose: a hit costs a key hash and
//! one backend round trip, not a parse and validation. What a document may be cached as
//! (`Policy`: max-age, public or private) is learned from async-graphql's static cache-control
//! analysis the first time the document executes, and is a property of the document alone.
//! With read replicas, a query reads the database `Replicas::route` picks for the WAL position
//! the cache observed; everything else (mutations and what they return) reads the primary.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use async_graphql::parser::types::OperationType;
use async_graphql::{Request, Variables};
use sea_orm::DatabaseConnection;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tracing::Instrument;

use super::context::ReplicaRead;
use super::document_cost::{
    DocumentCost, MAX_EXPANDED_FIELDS, MAX_INTROSPECTION_COST, MAX_ROOT_FIELDS,
};
use super::loaders::Loaders;
use super::response_body::{self, EncodedResponse};
use super::response_order::ResponseOrder;
use super::schema::Schemas;
use crate::auth::{Authenticator, Credentials, Principal};
use crate::cache::insights::{DocumentId, MissReason};
use crate::cache::key::document_hash;
use crate::cache::read_through::{
    Executed, Identity, NO_REQUIRED_POSITION, PrivateLook, Requester, RequiredPosition,
};
use crate::cache::tags::TagRecorder;
use crate::cache::{Policy, ResponseCache};
use crate::db::replicas::Replicas;
use crate::error::{ApiError, Phase, codes};
use crate::telemetry::Metrics;
use crate::telemetry::RequestId;

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
    /// Checked only when the operation needs its principal (see `Credentials`).
    pub credentials: Credentials,
    /// When the request times out. Past it the client gets an answer and the wait is
    /// dropped; the work itself is cancel-safe: queries execute in single-flight tasks, and
    /// mutations in tasks of their own, so a commit is always followed by its invalidation.
    /// Only waits that may be long are timed (a token checked in the database, an execution):
    /// a cache hit is bounded by the cache's command timeout and arms no timer.
    pub deadline: tokio::time::Instant,
    pub request_id: RequestId,
    pub transport: Transport,
    /// `X-Bypass-Cache: 1`, honoured only when the server allows it.
    pub bypass_cache: bool,
}

pub use crate::cache::read_through::{CacheDetail, CacheStatus, Outcome, StaleReason};

/// A request the HTTP layer refuses outright.
#[derive(Debug)]
pub enum Refusal {
    MutationOverGet,
    /// The credentials did not check out (or could not be checked).
    Authentication(ApiError),
    /// The request's deadline passed.
    Timeout,
}

/// Built once by the app state from its parts.
pub struct Executor {
    pub schemas: Schemas,
    pub db: DatabaseConnection,
    pub replicas: Option<Replicas>,
    pub cache: Option<ResponseCache>,
    pub metrics: Arc<Metrics>,
    /// Checks a caller's credentials when an operation needs its principal.
    pub authenticator: Authenticator,
    /// The safelist: when set, only these documents (by SHA-256) may run.
    pub manifest: Option<HashMap<String, String>>,
    /// Whether `X-Bypass-Cache: 1` is honoured.
    pub allow_cache_bypass: bool,
}

pub fn etag_of(body: &[u8]) -> String {
    format!(
        "\"{}\"",
        crate::cache::key::hex_string(&Sha256::digest(body)[..16])
    )
}

fn error_outcome(error: ApiError) -> Outcome {
    Outcome::request_error(&error.to_string(), error.code())
}

struct Resolved {
    query: String,
    document: String,
    /// A persisted query sent with its text: registered once it has parsed and validated.
    register: bool,
}

impl Executor {
    pub fn cache(&self) -> Option<&ResponseCache> {
        self.cache.as_ref()
    }

    /// The caller's principal, checked once per request.
    async fn principal(&self, caller: &Caller) -> Result<Principal, Refusal> {
        let check = self.authenticator.principal(&caller.credentials);
        tokio::time::timeout_at(caller.deadline, check)
            .await
            .map_err(|_| Refusal::Timeout)?
            .map_err(Refusal::Authentication)
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
            return Ok(Resolved {
                query,
                document,
                register: false,
            });
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
            if let Some(manifest) = &self.manifest
                && !manifest.contains_key(&hash)
            {
                return Err(ApiError::PersistedQueryNotAllowed);
            }
            return Ok(Resolved {
                query: query.clone(),
                document: hash,
                register: self.manifest.is_none(),
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
                register: false,
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
                    register: false,
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
        let mut document = None;
        let mut outcome = self
            .execute_inner(operation, caller, &label, &mut document)
            .await;
        if let Ok(outcome) = &mut outcome {
            let seconds = started.elapsed().as_secs_f64();
            outcome.document = document;
            // Queries only: anything else has no reason to have missed.
            if let (Some(cache), Some(document)) = (&self.cache, document)
                && (outcome.cache != CacheStatus::Bypass || outcome.miss.is_some())
            {
                cache.insights().record(
                    &label,
                    document,
                    outcome.cache,
                    outcome.miss,
                    seconds * 1000.0,
                );
            }
            self.metrics
                .record_request(label, outcome.cache.as_str(), seconds);
        }
        outcome
    }

    /// `document` is set to the document's id once it is known.
    async fn execute_inner(
        &self,
        operation: Operation,
        caller: &Caller,
        label: &str,
        document: &mut Option<DocumentId>,
    ) -> Result<Outcome, Refusal> {
        let resolved = match self.resolve(&operation).await {
            Ok(resolved) => resolved,
            Err(error) => {
                // A bad token is reported before anything else, as it is for every operation.
                self.principal(caller).await?;
                self.metrics.record_error(error.code());
                return Ok(error_outcome(error));
            }
        };
        *document = Some(DocumentId::of_hash(&resolved.document));
        let operation_name = operation
            .operation_name
            .clone()
            .filter(|name| !name.is_empty());
        let variables = match operation.variables {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(Value::Object(map)) => Value::Object(map),
            Some(_) => {
                self.principal(caller).await?;
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
        // (and anything that is not a query) never go through the cache's flights.
        // The parsed document goes on to the execution, which does not parse it again.
        let mut parsed = None;
        let is_query = match policy {
            Some(_) => true,
            None => {
                parsed = parse_document(&resolved.query)
                    .instrument(tracing::debug_span!("graphql.parse"))
                    .await
                    .ok();
                let kind = parsed.as_ref().and_then(|document| {
                    DocumentFacts::of(document).operation_type(operation_name.as_deref())
                });
                if caller.transport == Transport::Get && kind == Some(OperationType::Mutation) {
                    self.principal(caller).await?;
                    return Err(Refusal::MutationOverGet);
                }
                kind == Some(OperationType::Query)
            }
        };
        // A document with a known policy has executed without errors before.
        let mut register_as = None;
        if let Some(cache) = self.cache.as_ref().filter(|_| resolved.register) {
            if policy.is_some() {
                cache
                    .register_persisted_query(&resolved.document, &resolved.query)
                    .await;
            } else {
                register_as = Some((
                    cache.clone(),
                    resolved.document.clone(),
                    resolved.query.clone(),
                ));
            }
        }
        let identity = Arc::new(Identity {
            query: resolved.query,
            document: resolved.document,
            operation_name,
            variables,
            label: label.to_owned(),
        });
        let earlier = match (
            cache.filter(|_| is_query),
            policy,
            caller.credentials.claimed_token_hash(),
        ) {
            (Some(cache), Some(policy), Some(token_hash)) => {
                match cache.private_look(&identity, policy, token_hash).await {
                    Some(PrivateLook::Hit(outcome)) => return Ok(outcome),
                    Some(PrivateLook::Missed(earlier)) => Some(earlier),
                    None => None,
                }
            }
            _ => None,
        };
        let principal = self.principal(caller).await?;
        let requester = match &principal {
            Principal::Token { token_hash, .. } => Requester::Token {
                token_hash: token_hash.clone(),
            },
            Principal::Anonymous => Requester::Anonymous,
        };
        let execution = Execution {
            schemas: self.schemas.clone(),
            db: self.db.clone(),
            replicas: self.replicas.clone(),
            cache: self.cache.clone(),
            metrics: Arc::clone(&self.metrics),
            principal,
            request_id: caller.request_id.clone(),
            label: label.to_owned(),
            parsed,
            identity: Arc::clone(&identity),
            register_as,
        };
        let Some(cache) = cache.filter(|_| is_query) else {
            // Uncached: only this instance's own commits bind a replica read. In a task of its
            // own: a client that goes away (or times out) mid-mutation must not cancel the work
            // between its commit and its invalidation.
            // Boxed before it is spawned: see `ResponseCache::read_through`.
            let run = Box::pin(
                execution
                    .run(NO_REQUIRED_POSITION)
                    .instrument(tracing::Span::current()),
            );
            let finished = tokio::time::timeout_at(caller.deadline, tokio::spawn(run));
            let executed = match finished.await.map_err(|_| Refusal::Timeout)? {
                Ok(executed) => executed,
                Err(_) => {
                    return Ok(error_outcome(ApiError::Internal(
                        "the execution task failed".into(),
                    )));
                }
            };
            if let Some(cache) = &self.cache {
                cache.record_bypass();
                cache.record_execution(&executed.timed_as, executed.elapsed_ms);
                if identity.operation_name.is_none() {
                    let document = DocumentId::of_hash(&identity.document);
                    cache.insights().learn_name(document, &executed.timed_as);
                }
            }
            let mut outcome = executed.into_uncached();
            // A query that skipped the cache did so because the client asked.
            if is_query && self.cache.is_some() {
                outcome.miss = Some(MissReason::Bypassed);
            }
            return Ok(outcome);
        };
        let span = tracing::Span::current();
        cache
            .read_through(
                identity,
                requester,
                earlier,
                caller.deadline,
                move |required| execution.run(required).instrument(span),
            )
            .await
            .ok_or(Refusal::Timeout)
    }
}

/// Everything one execution needs, owned, so it can run as a shared (single-flight) task.
struct Execution {
    schemas: Schemas,
    db: DatabaseConnection,
    replicas: Option<Replicas>,
    /// Told the WAL position a query read from the primary when the cache had lost its own.
    cache: Option<ResponseCache>,
    metrics: Arc<Metrics>,
    principal: Principal,
    request_id: RequestId,
    label: String,
    /// The document, when the executor already parsed it to learn its kind.
    parsed: Option<async_graphql::parser::types::ExecutableDocument>,
    /// The query text, operation name and variables, shared with the cache (no copies on a hit).
    identity: Arc<Identity>,
    /// The cache, hash and text of a persisted query to register if it parses and validates.
    register_as: Option<(ResponseCache, String, String)>,
}

impl Execution {
    fn request(&self, tags: &Arc<TagRecorder>) -> Request {
        let request = Request::new(self.identity.query.clone())
            .variables(Variables::from_json(self.identity.variables.clone()))
            .data(self.principal.clone())
            .data(self.request_id.clone())
            .data(Arc::clone(tags));
        match &self.identity.operation_name {
            Some(name) => request.operation_name(name.clone()),
            None => request,
        }
    }

    /// Runs a parsed request on the database it should read: a query on the replica
    /// `Replicas::route` picks for `required` (again on the primary if a read there fails),
    /// anything else on the primary.
    async fn execute_routed(
        &self,
        schema: &super::CatalogSchema,
        request: Request,
        is_query: bool,
        required: RequiredPosition,
        tags: &Arc<TagRecorder>,
    ) -> async_graphql::Response {
        let Some(replicas) = self.replicas.as_ref().filter(|_| is_query) else {
            return schema.execute(request.data(Loaders::new(&self.db))).await;
        };
        let route = replicas.route(required).await;
        if let (Some(lsn), Some(cache)) = (route.established, &self.cache) {
            cache.establish_position(lsn).await;
        }
        let Some(index) = route.replica else {
            return schema.execute(request.data(Loaders::new(&route.db))).await;
        };
        let read = Arc::new(ReplicaRead::new(replicas.clone(), index));
        let response = schema
            .execute(
                request
                    .data(Loaders::new(&route.db))
                    .data(route.db.clone())
                    .data(Arc::clone(&read)),
            )
            .await;
        if !read.failed() {
            return response;
        }
        tracing::warn!("a read on a replica failed: running the query on the primary");
        let retry = self.request(tags).data(Loaders::new(&self.db));
        schema.execute(retry).await
    }

    /// Executes the document against the database with per-request DataLoaders, recording
    /// the tags the result depends on. A query reads a database that has replayed `required`.
    async fn run(mut self, required: RequiredPosition) -> Executed {
        let started = Instant::now();
        let tags = Arc::new(TagRecorder::default());
        let mut request = self.request(&tags);
        // Parsed here (async-graphql keeps the parsed document in the request and does not
        // parse again), so the executor learns what the document is without a schema
        // extension: any extension puts a hook around every field, which cost half of the
        // CPU of a 100-product page (docs/performance.md). A large document is parsed off the
        // async workers, so parsing it never delays other requests.
        let parsed = match self.parsed.take() {
            Some(document) => Ok(document),
            None => {
                parse_document(&request.query)
                    .instrument(tracing::debug_span!("graphql.parse"))
                    .await
            }
        };
        if let Ok(document) = parsed {
            request.set_parsed_query(document);
        }
        let mut fields = 1;
        let (facts, order, mut response) = match request.parsed_query() {
            Ok(document) => {
                let facts = DocumentFacts::of(document);
                let cost = DocumentCost::of(document, self.identity.operation_name.as_deref());
                if let Some(cost) = cost {
                    fields = cost.expanded_fields.max(1);
                }
                let order = ResponseOrder::of(document, self.identity.operation_name.as_deref());
                let is_query = facts.operation_type(self.identity.operation_name.as_deref())
                    == Some(OperationType::Query);
                let response =
                    match self.schemas.select(cost) {
                        // One span for validation and execution: async-graphql runs both in
                        // `execute`, and only an extension (a hook around every field, see
                        // above) could time them apart.
                        Ok(schema) => {
                            self.execute_routed(schema, request, is_query, required, &tags)
                                .instrument(tracing::debug_span!("graphql.execute"))
                                .await
                        }
                        Err(refusal) => async_graphql::Response::from_errors(vec![
                            async_graphql::ServerError::new(refusal, None),
                        ]),
                    };
                (facts, order, response)
            }
            Err(error) => (
                DocumentFacts::default(),
                None,
                async_graphql::Response::from_errors(vec![crate::error::readable_syntax_error(
                    error,
                    &self.identity.query,
                )]),
            ),
        };
        let parse_failed = facts.is_empty();
        let mut unavailable = false;
        for error in &mut response.errors {
            let phase = if parse_failed {
                Phase::Parse
            } else if error.path.is_empty() {
                Phase::Validation
            } else {
                Phase::Execution
            };
            crate::error::assign_code(error, phase, Some(&self.request_id.0));
            if let Some(async_graphql::Value::String(code)) = error
                .extensions
                .as_ref()
                .and_then(|extensions| extensions.get("code"))
            {
                self.metrics.record_error(code);
                unavailable |= code == codes::SERVICE_UNAVAILABLE;
            }
        }
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        // Errors without a path are the parse and validation phases' (see above).
        if let Some((cache, hash, query)) = &self.register_as
            && !parse_failed
            && response.errors.iter().all(|error| !error.path.is_empty())
        {
            cache.register_persisted_query(hash, query).await;
        }
        let is_query = facts.operation_type(self.identity.operation_name.as_deref())
            == Some(OperationType::Query);
        if let Some(state) = response
            .http_headers
            .get(super::mutation::EDGE_PURGE_HEADER)
            .and_then(|value| value.to_str().ok())
        {
            let state = async_graphql::Value::String(state.to_owned());
            response.extensions.insert("edgePurge".to_owned(), state);
        }
        let EncodedResponse { body, data_absent } =
            response_body::encode(&mut response, order.as_ref());
        let etag = is_query.then(|| etag_of(&body));
        let control = response.cache_control;
        let policy =
            (is_query && response.errors.is_empty() && control.max_age > 0).then_some(Policy {
                max_age: control.max_age as u32,
                private: !control.public,
            });
        let timed_as = match (&self.identity.operation_name, facts.single_operation_name()) {
            (None, Some(name)) => self.metrics.operation_label(Some(&name)),
            _ => self.label,
        };
        Executed {
            outcome_body: body,
            etag,
            policy,
            tags: tags.take().normalized(),
            data_absent,
            unavailable,
            timed_as,
            elapsed_ms,
            cost: fields,
        }
    }
}

trait IntoUncached {
    fn into_uncached(self) -> Outcome;
}

impl IntoUncached for Executed {
    /// The outcome of an execution the cache never saw.
    fn into_uncached(self) -> Outcome {
        Outcome {
            tags: self.public_tags(),
            body: self.outcome_body,
            encoded: Default::default(),
            cache: CacheStatus::Bypass,
            policy: self.policy,
            etag: self.etag,
            data_absent: self.data_absent,
            detail: CacheDetail::default(),
            unavailable: self.unavailable,
            cost: self.cost,
            public_key: None,
            miss: None,
            document: None,
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
        if cost.root_fields > MAX_ROOT_FIELDS {
            return Err(format!(
                "the operation selects {} fields at its root; the limit is {MAX_ROOT_FIELDS}",
                cost.root_fields
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

/// Documents larger than this are parsed on the blocking pool (parsing is linear, but a
/// 1 MiB document still takes milliseconds of CPU that health checks should not wait for).
const LARGE_DOCUMENT_BYTES: usize = 16 * 1024;

/// Parses a document: a large one on the blocking pool, a small one in place.
async fn parse_document(
    query: &str,
) -> async_graphql::parser::Result<async_graphql::parser::types::ExecutableDocument> {
    if query.len() <= LARGE_DOCUMENT_BYTES {
        return async_graphql::parser::parse_query(query);
    }
    let owned = query.to_owned();
    match tokio::task::spawn_blocking(move || async_graphql::parser::parse_query(owned)).await {
        Ok(parsed) => parsed,
        // The blocking pool lost the task: parse in place rather than fail the request.
        Err(_) => async_graphql::parser::parse_query(query),
    }
}
