//! The read-through protocol, beside the invariants it keeps. A query is answered from a fresh
//! entry, or executed (at most once per instance for concurrent identical requests) and stored.
//!
//! 1. A request observes the invalidation sequence (from its lookup, or a sequence read on a
//!    document's first sight) before anything executes for it; a fill records that sequence,
//!    so an entry whose execution may have read the database before a commit is never fresh
//!    after that commit's invalidation.
//! 2. A request joins a running execution only if that execution observed at least the same
//!    sequence (`SingleFlight`): it never receives data read before a commit it follows.
//! 3. Only queries reach this module; mutations and anything that is not a query execute
//!    alone, every time. Without a sequence (backend unavailable) nothing is joined or stored.
//! 4. A fill older than `MAX_FILL_AGE` is dropped, so no entry outlives the tag stamp that
//!    retires it; the backend refuses fills from before its current epoch.
//! 5. The WAL position read with the sequence goes to the execution, which reads only a
//!    database that has replayed it (a replica that has, or the primary): an invalidation
//!    records the position after its commit, so a fill never stores data older than the
//!    invalidations its sequence follows, and a joined execution observed at least as much.
//! 6. Sequences are compared only within one partition (a Redis Cluster has one sequence per
//!    partition, `storage::cluster`): a flight's key and every key its fill may store share
//!    the placement of the response key the sequence was read for.
//! 7. A stale entry answers only when rule 1 still holds for it (the backend found no tag
//!    stamped after its fill: a mutation's invalidation retires it, fresh or stale), only in
//!    the public scope (a private entry never outlives its cached validation), and only within
//!    a window past its freshness (`Freshness`): stale-while-revalidate answers at once and
//!    starts one refill (rule 1's watermark read with the stale entry, through the single
//!    flight); stale-if-error answers when the execution found the database unavailable or
//!    the request's deadline passed. A refill stores a new entry with its own freshness; the
//!    stale entry is never stored again.
//!
//! Each answer says why the cache did not serve it (`Outcome::miss`, see `insights`): the
//! reason is decided here, where the lookup's result is known, and costs no round trip.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use moka::ops::compute::{CompResult, Op};
use serde_json::Value;

use super::entry::Entry;
use super::entry::now_millis;
use super::insights::{DocumentId, MissReason};
use super::key::{ResponseKey, Scope};
use super::monitor::RecordedOperation;
use super::storage::Watermark;
use super::tags::Tag;
use super::{CacheLookup, MAX_FILL_AGE, Policy, ResponseCache};
use crate::compression::Encoded;

/// Whether the cache answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    /// An entry past its freshness that no mutation invalidated (see rule 7).
    Stale,
    Miss,
    Bypass,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Stale => "STALE",
            CacheStatus::Miss => "MISS",
            CacheStatus::Bypass => "BYPASS",
        }
    }
}

/// Why a stale entry answered (RFC 5861's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleReason {
    WhileRevalidate,
    IfError,
}

impl StaleReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StaleReason::WhileRevalidate => "stale-while-revalidate",
            StaleReason::IfError => "stale-if-error",
        }
    }
}

/// What the cache did beyond its status, as RFC 9211's `Cache-Status` reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheDetail {
    /// For an entry that answered: whole seconds of freshness left, negative once stale.
    pub ttl: Option<i64>,
    /// An executed result was stored.
    pub stored: bool,
    /// Why a stale entry answered.
    pub stale: Option<StaleReason>,
}

/// A finished operation, ready to become an HTTP response.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub body: Bytes,
    /// The body's stored compressed forms: a cached result's, made when it was stored.
    pub encoded: Encoded,
    pub cache: CacheStatus,
    /// `Some` for cacheable query results.
    pub policy: Option<Policy>,
    pub etag: Option<String>,
    /// True when the response has no `data` (the request failed before execution).
    pub data_absent: bool,
    /// The tags a public result depends on (its entry's), for the edge's surrogate keys;
    /// empty for private results and errors.
    pub tags: Vec<String>,
    pub detail: CacheDetail,
    /// The execution failed because the database was unavailable (`SERVICE_UNAVAILABLE`):
    /// a stale entry may answer instead (stale-if-error).
    pub unavailable: bool,
    /// What answering it cost, for rate limits: 1 for a hit or a request error, else the
    /// fields the operation selects (see `Executed::cost`).
    pub cost: u64,
    /// The public entry that answered or was stored, so the HTTP layer can recognize the
    /// same request bytes next time (`http::recognized`); `None` for anything else.
    pub public_key: Option<ResponseKey>,
    /// Why a query was not answered from the cache (`None` for hits, and for anything that
    /// is not a query: mutations, request errors).
    pub miss: Option<MissReason>,
    /// The document the executor ran, for the cache insights and recognized requests.
    pub document: Option<DocumentId>,
}

impl Outcome {
    /// A request error: no `data`, never cached.
    pub fn request_error(message: &str, code: &str) -> Self {
        let body = serde_json::to_vec(&crate::error::request_error_body(message, code))
            .unwrap_or_default();
        Outcome {
            body: Bytes::from(body),
            encoded: Encoded::default(),
            cache: CacheStatus::Bypass,
            policy: None,
            etag: None,
            data_absent: true,
            tags: Vec::new(),
            detail: CacheDetail::default(),
            unavailable: false,
            cost: 1,
            public_key: None,
            miss: None,
            document: None,
        }
    }

    /// The answer of a fresh entry.
    pub fn hit(entry: &Entry, policy: Policy) -> Self {
        Outcome {
            body: entry.body.clone(),
            encoded: entry.encoded.clone(),
            cache: CacheStatus::Hit,
            policy: Some(policy),
            etag: Some(entry.etag.clone()),
            data_absent: false,
            tags: if policy.private {
                Vec::new()
            } else {
                entry.tags.clone()
            },
            detail: CacheDetail {
                ttl: Some(entry.ttl_at(now_millis())),
                ..CacheDetail::default()
            },
            unavailable: false,
            cost: 1,
            public_key: None,
            miss: None,
            document: None,
        }
    }

    fn stale(entry: &Entry, policy: Policy, reason: StaleReason) -> Self {
        Outcome {
            cache: CacheStatus::Stale,
            detail: CacheDetail {
                ttl: Some(entry.ttl_at(now_millis())),
                stored: false,
                stale: Some(reason),
            },
            ..Outcome::hit(entry, policy)
        }
    }
}

/// What names a query's result, apart from who may see it.
#[derive(Debug, Clone)]
pub struct Identity {
    pub query: String,
    /// SHA-256 of the query text.
    pub document: String,
    pub operation_name: Option<String>,
    pub variables: Value,
    /// The operation's label in `/metrics` (bounded), for the insights.
    pub label: String,
}

impl Identity {
    fn key(&self, scope: &Scope) -> ResponseKey {
        ResponseKey::new(
            &self.document,
            self.operation_name.as_deref(),
            &self.variables,
            scope,
        )
    }
}

/// Who asks: private results are keyed to the token's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requester {
    Anonymous,
    Token { token_hash: String },
}

impl Requester {
    /// The scope a result of `policy` is stored under for this requester; `None` when a
    /// private result has no owner to be stored for.
    fn scope(&self, policy: Policy) -> Option<Scope> {
        match (self, policy.private) {
            (_, false) => Some(Scope::Public),
            (Requester::Token { token_hash }, true) => Some(Scope::Private(token_hash.clone())),
            (Requester::Anonymous, true) => None,
        }
    }

    fn token_hash(&self) -> Option<&str> {
        match self {
            Requester::Token { token_hash } => Some(token_hash),
            Requester::Anonymous => None,
        }
    }

    /// The scope first-sight requests are coalesced in (the policy is not known yet).
    fn own_scope(&self) -> Scope {
        match self {
            Requester::Token { token_hash } => Scope::Private(token_hash.clone()),
            Requester::Anonymous => Scope::Private("anonymous".to_owned()),
        }
    }
}

/// The result of executing a query, as the cache needs it.
pub struct Executed {
    pub outcome_body: Bytes,
    pub etag: Option<String>,
    /// `Some` when the result may be cached (a query without errors and a max-age).
    pub policy: Option<Policy>,
    pub tags: Vec<Tag>,
    pub data_absent: bool,
    /// An error said the database was unavailable (`SERVICE_UNAVAILABLE`).
    pub unavailable: bool,
    /// The operation's label for execution-time statistics, and how long it took.
    pub timed_as: String,
    pub elapsed_ms: f64,
    /// The fields the operation selects with fragments expanded (`DocumentCost`), at least 1.
    pub cost: u64,
}

impl Executed {
    /// The tags of a public result, by their names in the cache; none for anything else.
    pub fn public_tags(&self) -> Vec<String> {
        match self.policy {
            Some(policy) if !policy.private => self.tags.iter().map(Tag::key).collect(),
            _ => Vec::new(),
        }
    }
}

/// The WAL position an execution must read at or after (see `Watermark::lsn`): `Some(0)`
/// when the cache requires nothing (the execution still honours this instance's own
/// commits), `None` when the backend lost it and the execution must read it from the primary.
pub type RequiredPosition = Option<u64>;

/// What no cache backend vouches for: only this instance's own commits bind the execution.
pub const NO_REQUIRED_POSITION: RequiredPosition = Some(0);

/// An execution waiting for the WAL position it must read at: boxed once a request misses.
type BoxedExecution =
    Box<dyn FnOnce(RequiredPosition) -> Pin<Box<dyn Future<Output = Executed> + Send>> + Send>;

/// What a private look found: a fresh entry, answered; or not, and the lookup it made.
pub enum PrivateLook {
    Hit(Outcome),
    Missed(EarlierLookup),
}

/// A lookup made before the caller's token was checked, handed on to `read_through` so the
/// same key is not read twice.
pub struct EarlierLookup {
    /// The scope the key was made for: a request in the same scope reuses the key unhashed.
    scope: Scope,
    key: ResponseKey,
    found: CacheLookup,
}

/// Where a fill's sequence comes from, decided before the execution is shared.
enum Ticket {
    /// Nothing proves freshness: execute alone and store nothing.
    Unproven,
    /// First sight of the document: the watermark read, and a second look for an entry a
    /// just-finished execution may have stored meanwhile.
    FirstSight(Watermark),
    /// A miss, with the watermark its lookup read. There is no second look inside the flight:
    /// a flight that finished in between costs one more execution, never a stale answer (its
    /// fill records this older watermark), and every miss would pay a round trip for it.
    Missed(Watermark),
}

impl ResponseCache {
    /// Looks up `token_hash`'s private entry before the token is checked. Every private entry
    /// carries its owner's `Token:<hash>` tag, which revoking the token stamps, and is filled
    /// only after the token was checked; so a fresh one proves the token was valid at the
    /// fill and is unrevoked since, by the same rule that proves a cached validation. Only
    /// where validations are cached (Redis), so that this is never later than a token lookup:
    /// the in-process cache checks the database on every request. `None` where it does not
    /// apply; a miss is handed back for `read_through` to go on from once the token checks
    /// out (its watermark was read before anything executes, as a lookup's always is).
    pub async fn private_look(
        &self,
        identity: &Identity,
        policy: Policy,
        token_hash: &str,
    ) -> Option<PrivateLook> {
        if !policy.private || !self.caches_validations() {
            return None;
        }
        let scope = Scope::Private(token_hash.to_owned());
        let key = identity.key(&scope);
        Some(match self.lookup(&key).await {
            CacheLookup::Hit(entry) => PrivateLook::Hit(Outcome::hit(&entry, policy)),
            found => PrivateLook::Missed(EarlierLookup { scope, key, found }),
        })
    }

    /// Serves a query through the cache: a fresh entry, a share of an execution that observed
    /// at least what this request observed, or `execute` run and its result stored. `None`
    /// when `deadline` passed while it waited for an execution (a hit arms no timer). An
    /// `earlier` lookup of the same key stands for this one's.
    pub async fn read_through<Execute, Running>(
        &self,
        identity: Arc<Identity>,
        requester: Requester,
        earlier: Option<EarlierLookup>,
        deadline: tokio::time::Instant,
        execute: Execute,
    ) -> Option<Outcome>
    where
        Execute: FnOnce(RequiredPosition) -> Running + Send + 'static,
        Running: Future<Output = Executed> + Send + 'static,
    {
        let policy = self.policy(&identity.document, identity.operation_name.as_deref());
        let observed_at = now_millis();
        // A stale entry that may answer if the execution finds the database unavailable.
        let mut if_error = None;
        // Why the cache does not answer, if it does not (an execution may learn better).
        let mut reason = MissReason::Cold;
        let (flight, ticket) = match policy {
            Some(policy) => match requester.scope(policy) {
                // A private document without a token is refused by its guard: run it uncached.
                None => {
                    reason = MissReason::TokenScoped;
                    (None, Ticket::Unproven)
                }
                Some(scope) => {
                    let (key, found) = match earlier.filter(|earlier| earlier.scope == scope) {
                        Some(earlier) => (earlier.key, earlier.found),
                        None => {
                            let key = identity.key(&scope);
                            let found = self.lookup(&key).await;
                            (key, found)
                        }
                    };
                    let found = match found {
                        CacheLookup::Stale(entry, mark) => match self.stale_use(&entry, policy) {
                            Some(StaleReason::WhileRevalidate) => {
                                let replaced = entry.fresh_until;
                                self.revalidate(key, replaced, mark, identity, requester, execute);
                                self.inner.metrics.cache_stale_while_revalidate.inc();
                                return Some(Outcome::stale(
                                    &entry,
                                    policy,
                                    StaleReason::WhileRevalidate,
                                ));
                            }
                            Some(StaleReason::IfError) => {
                                if_error = Some((entry, policy));
                                reason = MissReason::Expired;
                                CacheLookup::Miss(mark)
                            }
                            None => {
                                reason = MissReason::Expired;
                                CacheLookup::Miss(mark)
                            }
                        },
                        found => found,
                    };
                    match found {
                        CacheLookup::Hit(entry) => {
                            let mut outcome = Outcome::hit(&entry, policy);
                            outcome.public_key = (!policy.private).then_some(key);
                            return Some(outcome);
                        }
                        CacheLookup::Miss(mark) | CacheLookup::Stale(_, mark) => {
                            if reason != MissReason::Expired {
                                reason = self.inner.insights.miss_reason(
                                    key.as_str(),
                                    policy.private,
                                    &identity.label,
                                    DocumentId::of_hash(&identity.document),
                                );
                            }
                            (
                                Some((key.as_str().to_owned(), mark.seq)),
                                Ticket::Missed(mark),
                            )
                        }
                        CacheLookup::Unavailable => {
                            reason = MissReason::BackendError;
                            (None, Ticket::Unproven)
                        }
                    }
                }
            },
            None => {
                // First sight: the policy is unknown until the document executes, so
                // concurrent first requests are coalesced per requester. Every scope's key
                // has this key's placement, so the sequence read for it is the one the
                // fill's key is compared with.
                let key = identity.key(&requester.own_scope());
                match self.sequence(&key).await {
                    Some(mark) => (
                        Some((format!("first:{}", key.as_str()), mark.seq)),
                        Ticket::FirstSight(mark),
                    ),
                    None => {
                        reason = MissReason::BackendError;
                        (None, Ticket::Unproven)
                    }
                }
            }
        };
        let cache = self.clone();
        // Boxed: the execution's future is large (async-graphql's executor lives inside it),
        // and kept inline it would make every request's future, hits included, that large
        // and copied that much each time a layer moves it.
        let execute: BoxedExecution = Box::new(move |required| Box::pin(execute(required)));
        let work = Box::pin(async move {
            let missed = Missed {
                reason,
                observed_at,
            };
            cache
                .execute_and_fill(identity, requester, ticket, missed, execute)
                .await
        });
        let Some((flight_key, observed)) = flight else {
            return tokio::time::timeout_at(deadline, work).await.ok();
        };
        let shared = self.inner.flights.run(flight_key, observed, work);
        let finished = tokio::time::timeout_at(deadline, shared).await;
        if let Some((entry, policy)) = if_error
            && match &finished {
                // The request's deadline passed while the database was slow.
                Err(_) => true,
                Ok(outcome) => outcome.as_ref().is_some_and(|outcome| outcome.unavailable),
            }
        {
            self.inner.metrics.cache_stale_if_error.inc();
            return Some(Outcome::stale(&entry, policy, StaleReason::IfError));
        }
        match finished.ok()? {
            Some(outcome) => Some(outcome),
            // The execution panicked: its followers get an internal error.
            None => Some(Outcome::request_error(
                "the execution failed",
                crate::error::codes::INTERNAL_SERVER_ERROR,
            )),
        }
    }

    /// Whether an unretired entry past its freshness may answer a request of `policy` now,
    /// and why (rule 7): public entries only, within a window after their freshness.
    fn stale_use(&self, entry: &Entry, policy: Policy) -> Option<StaleReason> {
        if policy.private {
            return None;
        }
        let stale_for = std::time::Duration::from_millis(entry.stale_for(now_millis()));
        let windows = self.inner.freshness.windows_for(&entry.tags);
        if stale_for < windows.while_revalidate {
            Some(StaleReason::WhileRevalidate)
        } else if stale_for < windows.if_error {
            Some(StaleReason::IfError)
        } else {
            None
        }
    }

    /// Starts the one background refill of the stale entry whose freshness ended at
    /// `replaced`, unless one runs or has stored its replacement: through the single flight,
    /// recording the watermark read with the stale entry, so a request that misses meanwhile
    /// joins it only if it observed no later invalidation (rule 2). A refill that stores
    /// nothing (the database is away) lets the next stale request try again.
    fn revalidate<Execute, Running>(
        &self,
        key: ResponseKey,
        replaced: u64,
        mark: Watermark,
        identity: Arc<Identity>,
        requester: Requester,
        execute: Execute,
    ) where
        Execute: FnOnce(RequiredPosition) -> Running + Send + 'static,
        Running: Future<Output = Executed> + Send + 'static,
    {
        let flight_key = key.as_str().to_owned();
        let started = self
            .inner
            .refreshing
            .entry_by_ref(&flight_key)
            .and_compute_with(|known| match known {
                Some(known) if *known.value() >= replaced => Op::Nop,
                _ => Op::Put(replaced),
            });
        if !matches!(
            started,
            CompResult::Inserted(_) | CompResult::ReplacedWith(_)
        ) {
            return;
        }
        let refreshing = Refreshing {
            cache: self.clone(),
            key: flight_key.clone(),
            replaced,
            stored: false,
        };
        let execute: BoxedExecution = Box::new(move |required| Box::pin(execute(required)));
        let cache = self.clone();
        tokio::spawn(async move {
            // The whole guard moves into the task (not only the field set below).
            let mut refreshing = refreshing;
            let work = {
                let cache = cache.clone();
                async move {
                    let missed = Missed {
                        reason: MissReason::Expired,
                        observed_at: now_millis(),
                    };
                    let ticket = Ticket::Missed(mark);
                    cache
                        .execute_and_fill(identity, requester, ticket, missed, execute)
                        .await
                }
            };
            let outcome = cache.inner.flights.run(flight_key, mark.seq, work).await;
            refreshing.stored = outcome.is_some_and(|outcome| outcome.detail.stored);
        });
    }

    async fn execute_and_fill(
        &self,
        identity: Arc<Identity>,
        requester: Requester,
        ticket: Ticket,
        missed: Missed,
        execute: BoxedExecution,
    ) -> Outcome {
        let fill_started = Instant::now();
        let first_sight = matches!(ticket, Ticket::FirstSight(_));
        let mark = match ticket {
            Ticket::Unproven => None,
            Ticket::FirstSight(mark) => {
                let learned = self
                    .policy(&identity.document, identity.operation_name.as_deref())
                    .and_then(|policy| Some((identity.key(&requester.scope(policy)?), policy)));
                if let Some((key, policy)) = learned
                    && let CacheLookup::Hit(entry) = self.recheck(&key).await
                {
                    return Outcome::hit(&entry, policy);
                }
                Some(mark)
            }
            Ticket::Missed(mark) => Some(mark),
        };
        let required = match mark {
            Some(mark) => mark.lsn,
            None => NO_REQUIRED_POSITION,
        };
        let seq = mark.map(|mark| mark.seq);
        let executed = execute(required).await;
        self.record_execution(&executed.timed_as, executed.elapsed_ms);
        if identity.operation_name.is_none() {
            let document = DocumentId::of_hash(&identity.document);
            self.inner.insights.learn_name(document, &executed.timed_as);
        }
        let mut outcome = Outcome {
            tags: executed.public_tags(),
            body: executed.outcome_body,
            encoded: Encoded::default(),
            cache: CacheStatus::Bypass,
            policy: executed.policy,
            etag: executed.etag,
            data_absent: executed.data_absent,
            detail: CacheDetail::default(),
            unavailable: executed.unavailable,
            cost: executed.cost,
            public_key: None,
            miss: Some(missed.reason),
            document: None,
        };
        let Some(policy) = executed.policy else {
            self.record_bypass();
            outcome.miss = Some(MissReason::Uncacheable);
            return outcome;
        };
        if first_sight && policy.private {
            outcome.miss = Some(MissReason::TokenScoped);
        }
        if requester.scope(policy).is_none() {
            outcome.miss = Some(MissReason::TokenScoped);
        }
        let seq = seq.filter(|_| fill_started.elapsed() < MAX_FILL_AGE);
        if let (Some(scope), Some(seq), Some(etag)) = (requester.scope(policy), seq, &outcome.etag)
        {
            outcome.cache = CacheStatus::Miss;
            let key = identity.key(&scope);
            if outcome.body.len() > self.inner.limits.max_entry_bytes {
                self.inner.insights.too_large(key.as_str());
                outcome.miss = Some(MissReason::TooLarge);
                self.learn_policy(
                    &identity.document,
                    identity.operation_name.as_deref(),
                    policy,
                );
                return outcome;
            }
            let fault_delay = self.inner.fault_fill_delay;
            if !fault_delay.is_zero() {
                tokio::time::sleep(fault_delay).await;
            }
            outcome.encoded = self.encodings(&outcome.body).await;
            outcome.detail.stored = self
                .fill(
                    &key,
                    seq,
                    missed.observed_at,
                    &executed.tags,
                    requester.token_hash(),
                    outcome.body.clone(),
                    outcome.encoded.clone(),
                    etag.clone(),
                    policy,
                )
                .await;
            if outcome.detail.stored && !policy.private {
                outcome.public_key = Some(key.clone());
            }
            if !policy.private {
                self.record_operation(
                    key.id().to_owned(),
                    &RecordedOperation {
                        query: identity.query.clone(),
                        operation_name: identity.operation_name.clone(),
                        variables: identity.variables.clone(),
                    },
                );
            }
        }
        // Learned only once the entry is stored: a request that sees the policy must find the
        // entry, or it would execute a second time.
        self.learn_policy(
            &identity.document,
            identity.operation_name.as_deref(),
            policy,
        );
        outcome
    }
}

/// Why a request that reaches an execution was not answered from the cache, as far as its
/// lookup could tell, and when it read its sequence (the time its fill is remembered with).
struct Missed {
    reason: MissReason,
    observed_at: u64,
}

/// Forgets a refill that stored nothing when it ends, however it ends (a panic included), so
/// that the next stale request starts another.
struct Refreshing {
    cache: ResponseCache,
    key: String,
    replaced: u64,
    stored: bool,
}

impl Drop for Refreshing {
    fn drop(&mut self) {
        if self.stored {
            return;
        }
        let replaced = self.replaced;
        self.cache
            .inner
            .refreshing
            .entry_by_ref(&self.key)
            .and_compute_with(|known| match known {
                Some(known) if *known.value() == replaced => Op::Remove,
                _ => Op::Nop,
            });
    }
}
