//! The response cache: whole query results, keyed by document, variables and scope,
//! invalidated by the tags that committed mutations announce.
//!
//! Freshness rule (race-safe): a fill records the backend's invalidation sequence *before*
//! it executes; an invalidation advances the sequence and stamps each changed tag with it.
//! An entry is fresh only while none of its tags carries a stamp newer than its fill, so a
//! fill that read the database before a commit can never outlive that commit's invalidation.
//! A failed invalidation is kept and replayed, and until it succeeds this instance does not
//! read from the backend. The cache never fails a request: backend errors become misses.
//! With read replicas, an invalidation also records the primary's WAL position after the
//! commit, and a fill reads only a database that has replayed the position it observed
//! (`storage::Watermark`), so a lagging replica cannot store data older than an invalidation.
//! Time only decides whether an entry that passes this rule is fresh or stale: a public entry
//! is kept past its TTL for the stale windows (`Freshness`), and `read_through` decides when a
//! stale one may answer. An entry a tag stamp retired is never served, fresh or stale.

pub mod entry;
pub mod insights;
pub mod key;
pub mod monitor;
pub mod read_through;
pub mod single_flight;
pub mod storage;
pub mod tags;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tracing::Instrument;

use self::entry::Entry;
use self::insights::Insights;
use self::monitor::{Monitor, Outcome};
use self::storage::{GuardedStorage, Lookup, StorageResult, Watermark};
use self::tags::{Changes, Tag};
use crate::compression::Encoded;
use crate::telemetry::Metrics;

/// What the static analysis of a document says about caching it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub max_age: u32,
    pub private: bool,
}

pub enum CacheLookup {
    Hit(Arc<Entry>),
    /// Unretired but past its freshness; a refill (or a miss) records this watermark.
    Stale(Arc<Entry>, Watermark),
    /// Not cached; a fill must record this watermark.
    Miss(Watermark),
    /// The backend is unavailable: execute without caching.
    Unavailable,
}

/// Longest TTL (freshness) any entry may have.
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// Longest stale window: an entry is kept at most this long past its freshness.
pub const MAX_STALE_WINDOW: Duration = Duration::from_secs(crate::config::MAX_STALE_WINDOW_SECS);
/// How long a tag stamp lives: longer than any entry it may retire is kept (its TTL plus the
/// longest stale window) plus `MAX_FILL_AGE`. Raised by `MAX_STALE_WINDOW` when stale windows
/// came, so that the rule holds whatever windows any instance of a fleet is configured with.
pub const TAG_TTL: Duration = Duration::from_secs(3600 + 3600 + 60);
/// Longest time from a fill's sequence read to its store; older fills are dropped, so no
/// entry can outlive a tag stamp newer than its sequence
/// (`TAG_TTL - (MAX_TTL + MAX_STALE_WINDOW)` > this).
pub const MAX_FILL_AGE: Duration = Duration::from_secs(30);
const _: () = assert!(
    TAG_TTL.as_secs() > MAX_TTL.as_secs() + MAX_STALE_WINDOW.as_secs() + MAX_FILL_AGE.as_secs()
);

/// How long entries are fresh, and how long past that an unretired public entry may answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// Caps every cache hint's max-age (at most `MAX_TTL`).
    pub max_ttl: Duration,
    /// An expired entry answers while one background refill replaces it.
    pub stale_while_revalidate: Duration,
    /// An expired entry answers when the execution finds the database unavailable or slow.
    pub stale_if_error: Duration,
    /// Windows of results holding products (product lists and counts too), when they differ.
    pub product: Option<StaleWindows>,
    /// Windows of results holding categories (the category list too), when they differ.
    pub category: Option<StaleWindows>,
}

/// The two stale windows of one result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StaleWindows {
    pub while_revalidate: Duration,
    pub if_error: Duration,
}

impl StaleWindows {
    fn smaller(self, other: StaleWindows) -> StaleWindows {
        StaleWindows {
            while_revalidate: self.while_revalidate.min(other.while_revalidate),
            if_error: self.if_error.min(other.if_error),
        }
    }
}

impl Freshness {
    pub fn from_config(config: &crate::config::Config) -> Self {
        let mut freshness = Freshness {
            max_ttl: config.cache_max_ttl().min(MAX_TTL),
            stale_while_revalidate: config.stale_while_revalidate().min(MAX_STALE_WINDOW),
            stale_if_error: config.stale_if_error().min(MAX_STALE_WINDOW),
            product: None,
            category: None,
        };
        // `Config::validate` refused a malformed list before anything was built.
        for (kind, revalidate, if_error) in config.stale_by_type().unwrap_or_default() {
            let windows = Some(StaleWindows {
                while_revalidate: Duration::from_secs(revalidate).min(MAX_STALE_WINDOW),
                if_error: Duration::from_secs(if_error).min(MAX_STALE_WINDOW),
            });
            match kind {
                crate::config::StaleType::Product => freshness.product = windows,
                crate::config::StaleType::Category => freshness.category = windows,
            }
        }
        freshness
    }

    /// The windows of an entry tagged `tags` (the cache's tag names): the smallest among the
    /// types its tags name, each type's own windows or the global ones.
    pub fn windows_for(&self, tags: &[String]) -> StaleWindows {
        let global = StaleWindows {
            while_revalidate: self.stale_while_revalidate,
            if_error: self.stale_if_error,
        };
        let holds = |prefix: &str| tags.iter().any(|tag| tag.starts_with(prefix));
        let mut windows: Option<StaleWindows> = None;
        for (held, own) in [
            (holds("Product"), self.product),
            (holds("Categor"), self.category),
        ] {
            if held {
                let own = own.unwrap_or(global);
                windows = Some(windows.map_or(own, |windows| windows.smaller(own)));
            }
        }
        windows.unwrap_or(global)
    }

    /// How long past its freshness a public entry is kept: its longest window.
    fn longest_window(&self, tags: &[String]) -> Duration {
        let windows = self.windows_for(tags);
        windows.while_revalidate.max(windows.if_error)
    }
}

impl Default for Freshness {
    /// Hints capped only by `MAX_TTL`, no stale windows.
    fn default() -> Self {
        Freshness {
            max_ttl: MAX_TTL,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            product: None,
            category: None,
        }
    }
}
/// A registered persisted query lives this long after its last registration.
const PERSISTED_QUERY_TTL: Duration = Duration::from_secs(24 * 3600);
/// The bounded collection (see `ValueStore::set_bounded`) of persisted-query documents.
const PERSISTED_QUERIES: &str = "apq:documents";

/// Bounds on what requests, anonymous ones included, can make the cache keep beside
/// responses (the README's "Limits" section states the worst case they give).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longer persisted-query documents are answered but not registered.
    pub persisted_document_bytes: usize,
    /// Most persisted-query documents kept in the backend.
    pub persisted_documents: usize,
    /// Operations kept in the ranking that `cache warm-up` replays.
    pub ranked_operations: usize,
    /// Bodies at least this long are stored with their br, zstd and gzip forms beside them
    /// (`None`: compression is off), so that no hit compresses.
    pub compress_from_bytes: Option<usize>,
    /// Results longer than this many bytes are answered but never stored.
    pub max_entry_bytes: usize,
}

impl Limits {
    pub fn from_config(config: &crate::config::Config) -> Self {
        Limits {
            persisted_document_bytes: config.apq_max_document_bytes,
            persisted_documents: config.apq_max_documents,
            ranked_operations: config.ranked_operations,
            compress_from_bytes: config.compress_from_bytes(),
            max_entry_bytes: config.cache_max_entry_bytes,
        }
    }
}

struct Inner {
    storage: GuardedStorage,
    policies: moka::sync::Cache<(String, Option<String>), Policy>,
    /// Persisted documents seen by this instance. A hash names one document forever, so
    /// this copy never needs invalidating.
    persisted_documents: moka::sync::Cache<String, Arc<str>>,
    metrics: Arc<Metrics>,
    monitor: Monitor,
    /// Per-operation hit rates and miss reasons, in process (see `insights`).
    insights: Insights,
    limits: Limits,
    token_ttl: Option<Duration>,
    invalidation_deadline: Duration,
    pending_invalidations: Mutex<BTreeSet<String>>,
    /// The highest WAL position among the pending invalidations.
    pending_position: Mutex<Option<u64>>,
    flights: single_flight::SingleFlight<read_through::Outcome>,
    freshness: Freshness,
    /// By key, the freshness end of the stale entry a stale-while-revalidate refill replaces
    /// (running, or done and stored): that entry starts no other refill. Kept `MAX_FILL_AGE`.
    refreshing: moka::sync::Cache<String, u64>,
    /// Fault injection for tests: how long a fill is held back after its execution.
    fault_fill_delay: Duration,
}

#[derive(Clone)]
pub struct ResponseCache {
    inner: Arc<Inner>,
}

impl ResponseCache {
    /// `token_ttl` is `None` when validated tokens must not be cached (an in-process backend
    /// cannot hear about a revocation made by another process).
    pub fn new(
        storage: GuardedStorage,
        metrics: Arc<Metrics>,
        token_ttl: Option<Duration>,
        invalidation_deadline: Duration,
        fault_fill_delay: Duration,
        limits: Limits,
        freshness: Freshness,
    ) -> Self {
        let cache = ResponseCache {
            inner: Arc::new(Inner {
                storage,
                policies: moka::sync::Cache::builder().max_capacity(10_000).build(),
                persisted_documents: moka::sync::Cache::builder()
                    .max_capacity(16 * 1024 * 1024)
                    .weigher(|key: &String, value: &Arc<str>| {
                        (key.len() + value.len()).min(u32::MAX as usize) as u32
                    })
                    .build(),
                metrics,
                monitor: Monitor::new(limits.ranked_operations),
                insights: Insights::new(),
                limits,
                token_ttl,
                invalidation_deadline,
                pending_invalidations: Mutex::new(BTreeSet::new()),
                pending_position: Mutex::new(None),
                flights: single_flight::SingleFlight::default(),
                freshness,
                refreshing: moka::sync::Cache::builder()
                    .max_capacity(100_000)
                    .time_to_live(MAX_FILL_AGE)
                    .build(),
                fault_fill_delay,
            }),
        };
        cache.spawn_background_flush();
        cache
    }

    /// Flushes monitoring buffers and replays failed invalidations, until the cache is dropped.
    fn spawn_background_flush(&self) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(200));
            let mut ticks: u64 = 0;
            loop {
                ticker.tick().await;
                ticks += 1;
                let Some(inner) = weak.upgrade() else { return };
                let cache = ResponseCache { inner };
                cache.replay_invalidations().await;
                if ticks.is_multiple_of(5) {
                    let _ = cache.inner.monitor.flush(&cache.inner.storage).await;
                }
            }
        });
    }

    /// Executions running in single flight on this instance.
    pub fn in_flight(&self) -> usize {
        self.inner.flights.in_flight()
    }

    pub fn backend_name(&self) -> &'static str {
        self.inner.storage.backend_name()
    }

    pub fn storage(&self) -> &GuardedStorage {
        &self.inner.storage
    }

    pub fn monitor(&self) -> &Monitor {
        &self.inner.monitor
    }

    pub fn insights(&self) -> &Insights {
        &self.inner.insights
    }

    pub fn policy(&self, document: &str, operation_name: Option<&str>) -> Option<Policy> {
        self.inner
            .policies
            .get(&(document.to_owned(), operation_name.map(str::to_owned)))
    }

    fn learn_policy(&self, document: &str, operation_name: Option<&str>, policy: Policy) {
        self.inner.policies.insert(
            (document.to_owned(), operation_name.map(str::to_owned)),
            policy,
        );
    }

    fn reads_allowed(&self) -> bool {
        self.inner.pending_invalidations.lock().is_empty()
    }

    /// Invalidated tags kept for replay (see `invalidate`); reads resume when none are left.
    pub fn deferred_invalidations(&self) -> usize {
        self.inner.pending_invalidations.lock().len()
    }

    /// Traced as `cache.lookup` with its outcome (hit, miss, stale or unavailable) and, on a
    /// hit, the entry's tags: recorded only when a trace layer enabled the span.
    pub async fn lookup(&self, key: &key::ResponseKey) -> CacheLookup {
        self.traced_lookup(key, true).await
    }

    /// A fresh entry under `key`, or `None` for anything else (a miss, a stale entry, the
    /// backend away), counted only when it answers: the caller then goes the whole way
    /// (`read_through`), whose own lookup counts the miss once. The proof of freshness is
    /// `lookup`'s, so an entry found here may answer exactly when one found there may.
    pub async fn fresh_entry(&self, key: &key::ResponseKey) -> Option<Arc<Entry>> {
        match self.traced_lookup(key, false).await {
            CacheLookup::Hit(entry) => Some(entry),
            _ => None,
        }
    }

    /// `lookup`, counting misses and errors only when `count_misses` (hits always).
    async fn traced_lookup(&self, key: &key::ResponseKey, count_misses: bool) -> CacheLookup {
        let span = tracing::debug_span!(
            "cache.lookup",
            outcome = tracing::field::Empty,
            tags = tracing::field::Empty,
        );
        // Not wrapped when disabled: an instrumented future enters and leaves its span on
        // every poll, which a hit would pay for nothing.
        let (found, outcome) = if span.is_disabled() {
            self.look(key).await
        } else {
            self.look(key).instrument(span.clone()).await
        };
        match &found {
            CacheLookup::Hit(_) => self.record(Outcome::Hit),
            // Counted as a miss: only `read_through` knows whether it answers (and counts it
            // in `catalog_cache_stale_*` then).
            CacheLookup::Miss { .. } | CacheLookup::Stale(..) if count_misses => {
                self.record(Outcome::Miss)
            }
            CacheLookup::Unavailable if count_misses => self.record(Outcome::Error),
            _ => {}
        }
        if !span.is_disabled() {
            span.record("outcome", outcome);
            if let CacheLookup::Hit(entry) = &found {
                span.record("tags", entry.tags.join(" ").as_str());
            }
        }
        found
    }

    /// Whether validated tokens are cached (and so revocations reach the cache at once).
    fn caches_validations(&self) -> bool {
        self.inner.token_ttl.is_some()
    }

    /// A second look inside a single flight, not counted in the statistics.
    async fn recheck(&self, key: &key::ResponseKey) -> CacheLookup {
        self.look(key).await.0
    }

    /// A look and its outcome's name in traces: `stale` is an entry past its freshness that no
    /// mutation retired; `unprovable` one found but not provably fresh, served as a miss.
    async fn look(&self, key: &key::ResponseKey) -> (CacheLookup, &'static str) {
        if !self.reads_allowed() {
            return (CacheLookup::Unavailable, "unavailable");
        }
        match self.inner.storage.lookup(key.as_str()).await {
            Ok(Lookup::Hit(entry)) => (CacheLookup::Hit(entry), "hit"),
            Ok(Lookup::Stale(entry, mark)) => (CacheLookup::Stale(entry, mark), "stale"),
            Ok(Lookup::Miss(mark)) => (CacheLookup::Miss(mark), "miss"),
            Ok(Lookup::Unprovable(mark)) => {
                self.inner.metrics.cache_unprovable.inc();
                (CacheLookup::Miss(mark), "unprovable")
            }
            Err(_) => (CacheLookup::Unavailable, "unavailable"),
        }
    }

    /// The watermark to record for a fill whose key is not known before execution (the
    /// first request for a document), read for `placed`, a key with the same placement as
    /// every key the fill may store (see `key::ResponseKey`): counted as a miss.
    async fn sequence(&self, placed: &key::ResponseKey) -> Option<Watermark> {
        if !self.reads_allowed() {
            self.record(Outcome::Error);
            return None;
        }
        match self.inner.storage.sequence(placed.as_str()).await {
            Ok(mark) => {
                self.record(Outcome::Miss);
                Some(mark)
            }
            Err(_) => {
                self.record(Outcome::Error);
                None
            }
        }
    }

    fn record(&self, outcome: Outcome) {
        match outcome {
            Outcome::Hit => self.inner.metrics.cache_hits.inc(),
            Outcome::Miss => self.inner.metrics.cache_misses.inc(),
            Outcome::Error => 0,
        };
        self.inner.monitor.record_outcome(outcome);
    }

    pub fn record_bypass(&self) {
        self.inner.metrics.cache_bypasses.inc();
    }

    /// Stores a successful result, fresh for its max-age (capped) from now; errors are
    /// logged by the storage guard and ignored (`false`). A stored entry is remembered by the
    /// insights with `observed_at`, when its sequence was read, to explain its next miss. A private result (one with an
    /// `owner`) also carries its owner's token tag, so revoking the token retires it, and
    /// lives no longer than a cached validation; only a public one is kept for the stale
    /// windows after its freshness.
    #[allow(clippy::too_many_arguments)]
    async fn fill(
        &self,
        key: &key::ResponseKey,
        seq: u64,
        observed_at: u64,
        tags: &[Tag],
        owner: Option<&str>,
        body: Bytes,
        encoded: Encoded,
        etag: String,
        policy: Policy,
    ) -> bool {
        let freshness = self.inner.freshness;
        let mut ttl = Duration::from_secs(u64::from(policy.max_age))
            .min(freshness.max_ttl)
            .min(MAX_TTL);
        // A private entry answers without a token lookup (`private_look`), so it never outlives
        // the validation it stands for: should a revocation ever reach the database but not
        // the cache, it is served no longer than the cached validation would have been.
        if let (Some(_), Some(token_ttl)) = (owner, self.inner.token_ttl) {
            ttl = ttl.min(token_ttl);
        }
        let mut entry_tags: Vec<String> = tags.iter().map(Tag::key).collect();
        let kept = if policy.private {
            ttl
        } else {
            ttl + freshness.longest_window(&entry_tags)
        };
        entry_tags.extend(owner.map(token_tag));
        let fresh_until = entry::now_millis() + ttl.as_millis() as u64;
        let entry = Arc::new(Entry {
            seq,
            tags: entry_tags,
            etag,
            max_age: policy.max_age,
            fresh_until,
            body,
            encoded,
        });
        let stored = self
            .inner
            .storage
            .store(key.as_str(), Arc::clone(&entry), kept)
            .await
            .is_ok();
        if stored {
            self.inner.metrics.cache_fills.inc();
            self.inner
                .insights
                .filled(key.as_str(), observed_at, fresh_until, &entry.tags);
        }
        stored
    }

    /// The compressed forms a result of this size is stored with (none below the threshold).
    /// Compressing a large body takes milliseconds, so it runs off the async workers.
    async fn encodings(&self, body: &Bytes) -> Encoded {
        /// Larger bodies are compressed on a blocking thread.
        const INLINE_MAX_BYTES: usize = 64 * 1024;
        let Some(min_bytes) = self.inner.limits.compress_from_bytes else {
            return Encoded::default();
        };
        if body.len() < min_bytes {
            return Encoded::default();
        }
        if body.len() <= INLINE_MAX_BYTES {
            return Encoded::of(body, min_bytes);
        }
        let body = body.clone();
        tokio::task::spawn_blocking(move || Encoded::of(&body, min_bytes))
            .await
            .unwrap_or_default()
    }

    /// Invalidates everything a committed mutation made stale, before its response is sent,
    /// and records `lsn`, the primary's WAL position after the commit (with read replicas).
    /// A failed attempt is retried (past the circuit breaker) until the invalidation deadline;
    /// only then does the mutation answer with the invalidation kept for replay, and this
    /// instance stops reading the cache until the replay succeeds. Returns whether the backend
    /// acknowledged it (false: deferred). `mutation` (the mutation field's name) is what the
    /// insights attribute the misses it causes to.
    pub async fn invalidate(&self, changes: &Changes, lsn: Option<u64>, mutation: &str) -> bool {
        if changes.is_empty() {
            return true;
        }
        let tags: Vec<String> = changes.tags().iter().map(Tag::key).collect();
        self.inner.insights.invalidated(mutation, &tags);
        self.inner
            .metrics
            .cache_invalidations
            .inc_by(tags.len() as u64);
        let deadline = tokio::time::Instant::now() + self.inner.invalidation_deadline;
        let mut pause = Duration::from_millis(20);
        loop {
            if let Ok(sequences) = self.inner.storage.invalidate_now(&tags, lsn).await {
                self.settle(&sequences).await;
                return true;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break;
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
        let mut pending = self.inner.pending_invalidations.lock();
        if pending.is_empty() {
            tracing::warn!(
                tags = tags.len(),
                "invalidation deferred until the cache backend answers; this instance reads no cached entries until then"
            );
        }
        pending.extend(tags);
        let mut position = self.inner.pending_position.lock();
        *position = (*position).max(lsn);
        false
    }

    /// Waits until every other instance's first tier heard invalidations up to `sequences`
    /// or stopped serving. Only a writer cut off from Redis for longer than its bound answers
    /// without that (logged): the same exception as a deferred invalidation.
    async fn settle(&self, sequences: &[u64]) {
        if let Err(error) = self.inner.storage.settle(sequences).await {
            tracing::warn!(%error, "answering before every first tier acknowledged the invalidation");
        }
    }

    async fn replay_invalidations(&self) {
        let pending: Vec<String> = self
            .inner
            .pending_invalidations
            .lock()
            .iter()
            .cloned()
            .collect();
        if pending.is_empty() {
            return;
        }
        // Taken with the tags: a position deferred later is replayed with later tags.
        let position = *self.inner.pending_position.lock();
        if self
            .inner
            .storage
            .invalidate(&pending, position)
            .await
            .is_ok()
        {
            let mut remaining = self.inner.pending_invalidations.lock();
            for tag in &pending {
                remaining.remove(tag);
            }
            let mut kept = self.inner.pending_position.lock();
            if *kept == position && remaining.is_empty() {
                *kept = None;
            }
            tracing::info!(tags = pending.len(), "replayed deferred invalidations");
        }
    }

    /// Records a WAL position read from the primary when the backend had lost its own
    /// (`Watermark::lsn` was `None`), so later fills need not read the primary for it.
    pub async fn establish_position(&self, lsn: u64) {
        let _ = self.inner.storage.establish_position(lsn).await;
    }

    pub fn record_execution(&self, operation: &str, milliseconds: f64) {
        self.inner.monitor.record_execution(operation, milliseconds);
    }

    fn record_operation(&self, id: String, operation: &monitor::RecordedOperation) {
        self.inner.monitor.record_operation(id, operation);
    }

    pub async fn flush_monitor(&self) -> StorageResult<()> {
        self.inner.monitor.flush(&self.inner.storage).await
    }

    // Persisted queries live in the backend, so every instance knows every registered hash:
    // one copy per document under `apq:<hash>`, in a collection of at most
    // `Limits::persisted_documents`, each for `PERSISTED_QUERY_TTL`. The in-process copy is
    // a read cache bounded in bytes.

    pub async fn persisted_query(&self, hash: &str) -> Option<String> {
        if let Some(document) = self.inner.persisted_documents.get(hash) {
            return Some(document.to_string());
        }
        let bytes = self
            .inner
            .storage
            .get(&format!("apq:{hash}"))
            .await
            .ok()??;
        let document = String::from_utf8(bytes).ok()?;
        self.inner
            .persisted_documents
            .insert(hash.to_owned(), Arc::from(document.as_str()));
        Some(document)
    }

    /// Registers a document that parsed and validated (the executor calls this only after
    /// such an execution); a document longer than the limit is not kept anywhere.
    pub async fn register_persisted_query(&self, hash: &str, query: &str) {
        if query.len() > self.inner.limits.persisted_document_bytes {
            return;
        }
        self.inner
            .persisted_documents
            .insert(hash.to_owned(), Arc::from(query));
        let _ = self
            .inner
            .storage
            .set_bounded(storage::BoundedMember {
                collection: PERSISTED_QUERIES,
                key: &format!("apq:{hash}"),
                value: query.as_bytes().to_vec(),
                ttl: PERSISTED_QUERY_TTL,
                capacity: self.inner.limits.persisted_documents,
            })
            .await;
    }

    // Validated tokens are cache entries like responses: keyed by the token's hash (never the
    // token), tagged `Token:<hash>`. Revoking invalidates that tag, which every backend and
    // every first tier honours exactly as it honours a mutation, so no instance keeps
    // accepting a revoked token.

    /// Looks up a cached validation; a miss carries the sequence a later fill must record.
    pub async fn token_lookup(&self, token_hash: &str) -> TokenLookup {
        if self.inner.token_ttl.is_none() || !self.reads_allowed() {
            return TokenLookup::Unknown { seq: None };
        }
        match self
            .inner
            .storage
            .lookup(&format!("token:{token_hash}"))
            .await
        {
            Ok(Lookup::Hit(entry)) => match std::str::from_utf8(&entry.body)
                .ok()
                .and_then(|id| id.parse().ok())
            {
                Some(token_id) => TokenLookup::Valid(token_id),
                None => TokenLookup::Unknown { seq: None },
            },
            // A validation is never served past its freshness.
            Ok(Lookup::Miss(mark) | Lookup::Unprovable(mark) | Lookup::Stale(_, mark)) => {
                TokenLookup::Unknown {
                    seq: Some(mark.seq),
                }
            }
            Err(_) => TokenLookup::Unknown { seq: None },
        }
    }

    /// The cached validation of a token, if any.
    pub async fn cached_token(&self, token_hash: &str) -> Option<i32> {
        match self.token_lookup(token_hash).await {
            TokenLookup::Valid(token_id) => Some(token_id),
            TokenLookup::Unknown { .. } => None,
        }
    }

    /// Remembers a validation checked against the database after `token_lookup` gave `seq`.
    pub async fn remember_token(&self, token_hash: &str, token_id: i32, seq: u64) {
        let Some(ttl) = self.inner.token_ttl else {
            return;
        };
        let entry = Entry {
            seq,
            tags: vec![token_tag(token_hash)],
            etag: String::from("-"),
            max_age: ttl.as_secs().min(u64::from(u32::MAX)) as u32,
            fresh_until: entry::now_millis() + ttl.as_millis() as u64,
            body: Bytes::from(token_id.to_string()),
            encoded: Default::default(),
        };
        let _ = self
            .inner
            .storage
            .store(&format!("token:{token_hash}"), Arc::new(entry), ttl)
            .await;
    }

    /// Makes every cached validation of a token stale, in Redis and in every first tier.
    pub async fn forget_token(&self, token_hash: &str) -> StorageResult<()> {
        let sequences = self
            .inner
            .storage
            .invalidate(&[token_tag(token_hash)], None)
            .await?;
        self.settle(&sequences).await;
        self.inner
            .storage
            .delete(&format!("token:{token_hash}"))
            .await
    }
}

fn token_tag(token_hash: &str) -> String {
    format!("Token:{token_hash}")
}

pub enum TokenLookup {
    Valid(i32),
    Unknown { seq: Option<u64> },
}

/// The cache a configuration asks for: Redis when `REDIS_URL` is set, else in-process;
/// `None` when caching is turned off. Returns the Redis backend too (its pool for `/metrics`,
/// its connections for the rate limiter).
pub fn from_config(
    config: &crate::config::Config,
    metrics: Arc<Metrics>,
) -> StorageResult<Option<(ResponseCache, Option<Arc<storage::redis::RedisStorage>>)>> {
    if !config.cache_enabled {
        return Ok(None);
    }
    type Stores = (
        Arc<dyn storage::ResponseStore>,
        Arc<dyn storage::ValueStore>,
    );
    let (backend_name, (responses, values), pool, token_ttl): (_, Stores, _, _) =
        match &config.redis_url {
            Some(url) => {
                let redis = Arc::new(storage::redis::RedisStorage::new(
                    url,
                    &config.cache_prefix,
                    config.cache_partitions,
                    config.redis_pool_size,
                    config.redis_connect_timeout(),
                    config.redis_command_timeout(),
                    TAG_TTL,
                    config.cache_compress_above,
                    Duration::from_millis(config.cache_local_lease_ms),
                    Arc::clone(&metrics),
                )?);
                let shared = Arc::clone(&redis);
                let values = Arc::clone(&redis) as Arc<dyn storage::ValueStore>;
                let (backend_name, responses): (_, Arc<dyn storage::ResponseStore>) =
                    if config.cache_local_tier {
                        let tiered = storage::tiered::TieredStorage::new(
                            redis,
                            config.cache_local_bytes,
                            Duration::from_secs(config.cache_local_ttl_secs.max(1)),
                            TAG_TTL,
                            Arc::clone(&metrics),
                        )?;
                        ("redis+local", Arc::new(tiered))
                    } else {
                        ("redis", redis)
                    };
                (
                    backend_name,
                    (responses, values),
                    Some(shared),
                    Some(Duration::from_secs(config.token_cache_secs)),
                )
            }
            None => {
                let memory = Arc::new(storage::memory::MemoryStorage::new(
                    config.cache_local_bytes,
                    TAG_TTL,
                    Some(Arc::clone(&metrics)),
                ));
                (
                    "memory",
                    (
                        Arc::clone(&memory) as Arc<dyn storage::ResponseStore>,
                        memory as Arc<dyn storage::ValueStore>,
                    ),
                    None,
                    None,
                )
            }
        };
    let guarded = GuardedStorage::new(
        backend_name,
        responses,
        values,
        config.redis_command_timeout(),
        Arc::clone(&metrics),
    );
    Ok(Some((
        ResponseCache::new(
            guarded,
            metrics,
            token_ttl,
            Duration::from_millis(config.invalidation_deadline_ms),
            Duration::from_millis(config.fault_fill_delay_ms),
            Limits::from_config(config),
            Freshness::from_config(config),
        ),
        pool,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seconds(while_revalidate: u64, if_error: u64) -> StaleWindows {
        StaleWindows {
            while_revalidate: Duration::from_secs(while_revalidate),
            if_error: Duration::from_secs(if_error),
        }
    }

    #[test]
    fn an_entry_gets_the_smallest_windows_among_the_types_it_holds() {
        let freshness = Freshness {
            stale_while_revalidate: Duration::from_secs(30),
            stale_if_error: Duration::from_secs(60),
            product: Some(seconds(10, 100)),
            category: None,
            ..Freshness::default()
        };
        let tags = |keys: &[&str]| keys.iter().map(|key| key.to_string()).collect::<Vec<_>>();
        assert_eq!(
            freshness.windows_for(&tags(&["Products:category:7"])),
            seconds(10, 100)
        );
        assert_eq!(
            freshness.windows_for(&tags(&["Categories"])),
            seconds(30, 60)
        );
        assert_eq!(
            freshness.windows_for(&tags(&["Product:1", "Category:2", "Products:any"])),
            seconds(10, 60)
        );
        assert_eq!(freshness.windows_for(&[]), seconds(30, 60));
    }
}
