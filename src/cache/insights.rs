//! Cache insights: for each query operation (its label and a short document hash), how often
//! the cache answered it, why it missed, how long it took and what hit rate it would reach if
//! no entry expired; and which mutations invalidate most and whose entries they made miss.
//!
//! In process and per instance (nothing goes to the cache backend, so a request pays no round
//! trip for it): one short lock per request plus, on a miss, a lookup in two bounded maps.
//! Bounded however many operations clients invent: `MAX_OPERATIONS` operations (the least
//! requested one is dropped for a newcomer), `MAX_MUTATIONS` mutations, `REMEMBERED_FILLS_BYTES`
//! of fill records, `REMEMBERED_TAGS` invalidated tags and `LEARNED_NAMES` documents' names;
//! `MEMORY_BOUND_BYTES` (about 7.3 MiB) in all.
//!
//! A miss's reason (`MissReason`) is decided where the cache knows it (`read_through`):
//! - `Expired`: the storage found an entry past its freshness that it did not serve, or this
//!   instance stored the key and the entry's freshness has ended since (and no tag of it was
//!   invalidated after its fill);
//! - `Invalidated`: this instance stored the key and, after the request that filled it read
//!   its sequence, a mutation on this instance invalidated one of its tags; the miss is
//!   attributed to the latest such mutation (by its field name, e.g. `updateProduct`);
//! - `Evicted`: this instance stored the key, it is neither expired nor invalidated here: the
//!   backend dropped it for capacity, or another instance's mutation retired it;
//! - `Cold`: this instance has no record of storing the key (first request, a record already
//!   forgotten, or an entry another instance stored and lost); `TokenScoped`: the same for a
//!   private (per-token) result, or a private operation asked without a token;
//! - `Bypassed` (`X-Bypass-Cache`), `Uncacheable` (no max-age, or errors), `TooLarge` (past
//!   `CATALOG_CACHE_MAX_ENTRY_BYTES`, never stored), `BackendError` (backend unavailable).
//!
//! Hit rate is (hits + stale answers) / requests. The maximum achievable hit rate is what it
//! would be had no entry expired: (hits + stale answers + `Expired` misses) / requests. Every
//! other miss would still happen with unlimited TTLs, so it does not count as achievable.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64};

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::entry::now_millis;
use super::read_through::CacheStatus;

/// Operations tracked at most; a newcomer replaces the least requested one.
pub const MAX_OPERATIONS: usize = 100;
/// Mutations tracked at most (mutation field names: the schema has fewer).
pub const MAX_MUTATIONS: usize = 50;
/// Documents whose operation name was learned from their execution (for requests that send
/// no `operationName`); past this, such requests are counted as `anonymous`.
pub const LEARNED_NAMES: usize = 1_000;
/// Operations each mutation remembers as the ones whose misses it caused most.
pub const OPERATIONS_PER_MUTATION: usize = 5;
/// Bytes of fill records (response key, freshness and tags of each stored entry) kept for
/// attributing misses; the least recently used are forgotten first.
pub const REMEMBERED_FILLS_BYTES: u64 = 4 * 1024 * 1024;
/// Invalidated tags remembered (with the mutation and time), least recently used forgotten.
pub const REMEMBERED_TAGS: u64 = 20_000;
/// Bytes one remembered tag may take at most (its name, the mutation's name, bookkeeping).
const TAG_RECORD_BYTES: u64 = 160;
/// Bytes one tracked operation takes at most (its stats, a 64-byte label, the map's share).
const OPERATION_BYTES: usize = 800;
/// Bytes one tracked mutation takes at most (counters and its remembered operations).
const MUTATION_BYTES: usize = 800;
/// What all of the insights may hold, in bytes (about 7.3 MiB).
pub const MEMORY_BOUND_BYTES: u64 = REMEMBERED_FILLS_BYTES
    + REMEMBERED_TAGS * TAG_RECORD_BYTES
    + (MAX_OPERATIONS * OPERATION_BYTES) as u64
    + (MAX_MUTATIONS * MUTATION_BYTES) as u64
    + (LEARNED_NAMES * 100) as u64;

/// Why a query was not answered from the cache: a fixed set, so `/metrics` labels stay bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, async_graphql::Enum)]
pub enum MissReason {
    /// This instance has no record of storing the entry (a first request).
    Cold,
    /// The entry's max-age ran out: the one reason a longer max-age would have avoided.
    Expired,
    /// A mutation on this instance invalidated a tag of the entry after its fill.
    Invalidated,
    /// Stored, neither expired nor invalidated here: evicted, or retired by another instance.
    Evicted,
    /// The client asked to bypass the cache (`X-Bypass-Cache`).
    Bypassed,
    /// A private result, kept per token: another token (or none) misses.
    TokenScoped,
    /// No max-age, or the result had errors.
    Uncacheable,
    /// Longer than the entry size limit: answered, never stored.
    TooLarge,
    /// The cache backend was unavailable.
    BackendError,
}

impl MissReason {
    pub const ALL: [MissReason; 9] = [
        MissReason::Cold,
        MissReason::Expired,
        MissReason::Invalidated,
        MissReason::Evicted,
        MissReason::Bypassed,
        MissReason::TokenScoped,
        MissReason::Uncacheable,
        MissReason::TooLarge,
        MissReason::BackendError,
    ];

    /// The `reason` label in `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            MissReason::Cold => "cold",
            MissReason::Expired => "expired",
            MissReason::Invalidated => "invalidated",
            MissReason::Evicted => "evicted",
            MissReason::Bypassed => "bypassed",
            MissReason::TokenScoped => "token_scoped",
            MissReason::Uncacheable => "uncacheable",
            MissReason::TooLarge => "too_large",
            MissReason::BackendError => "backend_error",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A document, by the first 6 bytes of its SHA-256 (12 hex digits): enough to tell an
/// operation's versions apart, and `Copy`, so a request carries it without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DocumentId([u8; 6]);

impl DocumentId {
    /// From a document's hex SHA-256 (`key::document_hash`, or a persisted query's hash).
    pub fn of_hash(hex: &str) -> Self {
        let mut bytes = [0u8; 6];
        for (index, byte) in bytes.iter_mut().enumerate() {
            *byte = hex
                .get(index * 2..index * 2 + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .unwrap_or(0);
        }
        DocumentId(bytes)
    }
}

impl std::fmt::Display for DocumentId {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for byte in self.0 {
            write!(formatter, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// The label of requests that name no operation (`Metrics::operation_label`).
const ANONYMOUS: &str = "anonymous";

/// Latency buckets: upper bounds from 0.05 ms growing by √2 (the last is everything above).
const LATENCY_BUCKETS: usize = 40;

fn bucket_bound_ms(index: usize) -> f64 {
    0.05 * std::f64::consts::SQRT_2.powi(index as i32)
}

fn bucket_of(milliseconds: f64) -> usize {
    if milliseconds <= 0.05 {
        return 0;
    }
    let index = ((milliseconds / 0.05).log2() * 2.0).ceil();
    (index as usize).min(LATENCY_BUCKETS - 1)
}

#[derive(Debug, Clone, Default)]
struct Counts {
    requests: u64,
    hits: u64,
    stale: u64,
    misses: [u64; MissReason::ALL.len()],
}

impl Counts {
    fn add(&mut self, status: CacheStatus, miss: Option<MissReason>) {
        self.requests += 1;
        match (status, miss) {
            (CacheStatus::Hit, _) => self.hits += 1,
            (CacheStatus::Stale, _) => self.stale += 1,
            (_, Some(reason)) => self.misses[reason.index()] += 1,
            (_, None) => {}
        }
    }

    fn figures(&self) -> InsightTotals {
        InsightTotals {
            requests: self.requests,
            hits: self.hits,
            stale: self.stale,
            misses: self.misses.iter().sum(),
            hit_rate: self.hit_rate(),
            max_achievable_hit_rate: self.max_achievable_hit_rate(),
            misses_by_reason: reasons(self),
        }
    }

    fn hit_rate(&self) -> f64 {
        ratio(self.hits + self.stale, self.requests)
    }

    fn max_achievable_hit_rate(&self) -> f64 {
        ratio(
            self.hits + self.stale + self.misses[MissReason::Expired.index()],
            self.requests,
        )
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

struct OperationStats {
    name: String,
    counts: Counts,
    latency: [u64; LATENCY_BUCKETS],
}

impl OperationStats {
    /// The latency below which `quantile` of the requests fell, as its bucket's upper bound
    /// (nearest rank): never below the true value, at most √2 times it.
    fn latency_ms(&self, quantile: f64) -> f64 {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let rank = ((quantile * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (index, count) in self.latency.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return bucket_bound_ms(index);
            }
        }
        bucket_bound_ms(LATENCY_BUCKETS - 1)
    }
}

#[derive(Default)]
struct MutationStats {
    invalidations: u64,
    tags: u64,
    misses_caused: u64,
    /// The operations whose misses it caused most: at most `OPERATIONS_PER_MUTATION`.
    operations: Vec<(String, u64)>,
}

#[derive(Default)]
struct Tables {
    /// By document, its operations (a document rarely holds more than one name).
    operations: HashMap<DocumentId, Vec<OperationStats>>,
    tracked: usize,
    mutations: HashMap<Arc<str>, MutationStats>,
    /// By document, the name of its only operation, learned when it executed: a request
    /// that names no operation is counted under it (hits never parse the document).
    learned: HashMap<DocumentId, String>,
    /// Every recorded request, including those of operations no longer tracked.
    totals: Counts,
}

/// What this instance remembers of an entry it stored.
struct Filled {
    /// When the request that filled it read its sequence (ms since the epoch).
    observed_at: u64,
    fresh_until: u64,
    tags: Box<[String]>,
    /// Not stored: larger than the entry limit.
    too_large: bool,
}

pub struct Insights {
    tables: Mutex<Tables>,
    fills: moka::sync::Cache<String, Arc<Filled>>,
    /// By tag, the last mutation on this instance that invalidated it, and when.
    invalidated_tags: moka::sync::Cache<String, (Arc<str>, u64)>,
}

impl Default for Insights {
    fn default() -> Self {
        Self::new()
    }
}

impl Insights {
    pub fn new() -> Self {
        Insights {
            tables: Mutex::new(Tables::default()),
            fills: moka::sync::Cache::builder()
                .max_capacity(REMEMBERED_FILLS_BYTES)
                .weigher(|key: &String, filled: &Arc<Filled>| {
                    let tags: usize = filled.tags.iter().map(|tag| tag.len() + 24).sum();
                    (key.len() + tags + 64).min(u32::MAX as usize) as u32
                })
                .time_to_live(super::TAG_TTL)
                .build(),
            invalidated_tags: moka::sync::Cache::builder()
                .max_capacity(REMEMBERED_TAGS)
                .time_to_live(super::TAG_TTL)
                .build(),
        }
    }

    /// Counts one answered query: `miss` is its reason when the cache did not answer it.
    pub fn record(
        &self,
        operation: &str,
        document: DocumentId,
        status: CacheStatus,
        miss: Option<MissReason>,
        milliseconds: f64,
    ) {
        let mut tables = self.tables.lock();
        let tables = &mut *tables;
        tables.totals.add(status, miss);
        let operation = match tables.learned.get(&document) {
            Some(learned) if operation == ANONYMOUS => learned.as_str(),
            _ => operation,
        };
        let tracked = tables
            .operations
            .get(&document)
            .is_some_and(|named| named.iter().any(|stats| stats.name == operation));
        if !tracked {
            if tables.tracked >= MAX_OPERATIONS && evict_least_requested(&mut tables.operations) {
                tables.tracked -= 1;
            }
            tables.tracked += 1;
            tables
                .operations
                .entry(document)
                .or_default()
                .push(OperationStats {
                    name: operation.to_owned(),
                    counts: Counts::default(),
                    latency: [0; LATENCY_BUCKETS],
                });
        }
        let Some(stats) = tables
            .operations
            .get_mut(&document)
            .and_then(|named| named.iter_mut().find(|stats| stats.name == operation))
        else {
            return;
        };
        stats.counts.add(status, miss);
        stats.latency[bucket_of(milliseconds)] += 1;
    }

    /// Remembers the name of a document's only operation, learned from its execution, for
    /// the requests that send no `operationName` (`name` is a bounded `/metrics` label).
    pub fn learn_name(&self, document: DocumentId, name: &str) {
        if name == ANONYMOUS {
            return;
        }
        let mut tables = self.tables.lock();
        if tables.learned.len() < LEARNED_NAMES || tables.learned.contains_key(&document) {
            tables.learned.insert(document, name.to_owned());
        }
    }

    /// Bytes the fill and tag records hold now (each tag record counted at its bound).
    pub fn remembered_bytes(&self) -> u64 {
        self.fills.run_pending_tasks();
        self.invalidated_tags.run_pending_tasks();
        self.fills.weighted_size() + self.invalidated_tags.entry_count() * TAG_RECORD_BYTES
    }

    /// Remembers a stored entry (or one refused as too large) to explain its key's next miss.
    pub fn filled(&self, key: &str, observed_at: u64, fresh_until: u64, tags: &[String]) {
        self.fills.insert(
            key.to_owned(),
            Arc::new(Filled {
                observed_at,
                fresh_until,
                tags: tags.into(),
                too_large: false,
            }),
        );
    }

    pub fn too_large(&self, key: &str) {
        self.fills.insert(
            key.to_owned(),
            Arc::new(Filled {
                observed_at: 0,
                fresh_until: 0,
                tags: Box::new([]),
                too_large: true,
            }),
        );
    }

    /// Why `key`'s lookup missed (see the module doc); an `Invalidated` miss is counted
    /// against the mutation it is attributed to.
    pub fn miss_reason(
        &self,
        key: &str,
        private: bool,
        operation: &str,
        document: DocumentId,
    ) -> MissReason {
        let Some(filled) = self.fills.get(key) else {
            return if private {
                MissReason::TokenScoped
            } else {
                MissReason::Cold
            };
        };
        if filled.too_large {
            return MissReason::TooLarge;
        }
        let invalidator = filled
            .tags
            .iter()
            .filter_map(|tag| self.invalidated_tags.get(tag))
            .filter(|(_, at)| *at >= filled.observed_at)
            .max_by_key(|(_, at)| *at);
        if let Some((mutation, _)) = invalidator {
            self.caused_miss(&mutation, operation, document);
            return MissReason::Invalidated;
        }
        if now_millis() >= filled.fresh_until {
            MissReason::Expired
        } else {
            MissReason::Evicted
        }
    }

    /// Counts a committed mutation's invalidation of `tags`.
    pub fn invalidated(&self, mutation: &str, tags: &[String]) {
        let at = now_millis();
        let name = {
            let mut tables = self.tables.lock();
            let known = tables
                .mutations
                .get_key_value(mutation)
                .map(|(name, _)| Arc::clone(name));
            let name = match known {
                Some(name) => name,
                None if tables.mutations.len() < MAX_MUTATIONS => Arc::from(mutation),
                None => Arc::from("other"),
            };
            let stats = tables.mutations.entry(Arc::clone(&name)).or_default();
            stats.invalidations += 1;
            stats.tags += tags.len() as u64;
            name
        };
        for tag in tags {
            self.invalidated_tags
                .insert(tag.clone(), (Arc::clone(&name), at));
        }
    }

    fn caused_miss(&self, mutation: &Arc<str>, operation: &str, document: DocumentId) {
        let mut tables = self.tables.lock();
        let tables = &mut *tables;
        let operation = match tables.learned.get(&document) {
            Some(learned) if operation == ANONYMOUS => learned.as_str(),
            _ => operation,
        };
        let Some(stats) = tables.mutations.get_mut(mutation) else {
            return;
        };
        stats.misses_caused += 1;
        let operations = &mut stats.operations;
        if let Some((_, count)) = operations.iter_mut().find(|(name, _)| name == operation) {
            *count += 1;
        } else if operations.len() < OPERATIONS_PER_MUTATION {
            operations.push((operation.to_owned(), 1));
        } else if let Some(least) = operations.iter_mut().min_by_key(|(_, count)| *count) {
            // Replace the least counted: a space-saving sketch of the top few.
            *least = (operation.to_owned(), least.1 + 1);
        }
    }

    /// The `first` most requested operations and every tracked mutation, most first.
    pub fn snapshot(&self, first: usize) -> InsightsSnapshot {
        let tables = self.tables.lock();
        let mut operations: Vec<OperationInsight> = tables
            .operations
            .iter()
            .flat_map(|(document, named)| named.iter().map(move |stats| (document, stats)))
            .map(|(document, stats)| OperationInsight {
                name: stats.name.clone(),
                document_hash: document.to_string(),
                figures: stats.counts.figures(),
                p50_ms: stats.latency_ms(0.5),
                p99_ms: stats.latency_ms(0.99),
            })
            .collect();
        operations.sort_by(|a, b| {
            b.figures
                .requests
                .cmp(&a.figures.requests)
                .then_with(|| a.name.cmp(&b.name))
                .then_with(|| a.document_hash.cmp(&b.document_hash))
        });
        operations.truncate(first);
        let mut top_invalidators: Vec<InvalidatorInsight> = tables
            .mutations
            .iter()
            .map(|(mutation, stats)| {
                let mut operations = stats.operations.clone();
                operations.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                InvalidatorInsight {
                    mutation: mutation.to_string(),
                    invalidations: stats.invalidations,
                    tags: stats.tags,
                    misses_caused: stats.misses_caused,
                    operations: operations
                        .into_iter()
                        .map(|(operation, misses)| MissesCaused { operation, misses })
                        .collect(),
                }
            })
            .collect();
        top_invalidators.sort_by(|a, b| {
            b.misses_caused
                .cmp(&a.misses_caused)
                .then(b.invalidations.cmp(&a.invalidations))
                .then_with(|| a.mutation.cmp(&b.mutation))
        });
        InsightsSnapshot {
            operations,
            top_invalidators,
            totals: tables.totals.figures(),
            tracked_operations: tables.tracked as u64,
            operation_capacity: MAX_OPERATIONS as u64,
            memory_bound_bytes: MEMORY_BOUND_BYTES,
        }
    }

    /// The insights as Prometheus metrics: at most `MAX_OPERATIONS` operations (each with at
    /// most one series per `MissReason`) and `MAX_MUTATIONS` mutations.
    pub fn registry(&self) -> Registry {
        let snapshot = self.snapshot(MAX_OPERATIONS);
        let mut registry = Registry::default();
        let requests = Family::<OperationLabels, Counter>::default();
        let hits = Family::<OperationLabels, Counter>::default();
        let stale = Family::<OperationLabels, Counter>::default();
        let misses = Family::<ReasonLabels, Counter>::default();
        let latency = Family::<QuantileLabels, Gauge<f64, AtomicU64>>::default();
        let max_achievable = Family::<OperationLabels, Gauge<f64, AtomicU64>>::default();
        let invalidations = Family::<MutationLabels, Counter>::default();
        let caused = Family::<MutationLabels, Counter>::default();
        for operation in &snapshot.operations {
            let labels = OperationLabels {
                operation: operation.name.clone(),
                document: operation.document_hash.clone(),
            };
            requests
                .get_or_create(&labels)
                .inc_by(operation.figures.requests);
            hits.get_or_create(&labels).inc_by(operation.figures.hits);
            stale.get_or_create(&labels).inc_by(operation.figures.stale);
            max_achievable
                .get_or_create(&labels)
                .set(operation.figures.max_achievable_hit_rate);
            for missed in &operation.figures.misses_by_reason {
                misses
                    .get_or_create(&ReasonLabels {
                        operation: labels.operation.clone(),
                        document: labels.document.clone(),
                        reason: missed.reason.as_str().to_owned(),
                    })
                    .inc_by(missed.count);
            }
            for (quantile, value) in [("0.5", operation.p50_ms), ("0.99", operation.p99_ms)] {
                latency
                    .get_or_create(&QuantileLabels {
                        operation: labels.operation.clone(),
                        document: labels.document.clone(),
                        quantile: quantile.to_owned(),
                    })
                    .set(value / 1000.0);
            }
        }
        for invalidator in &snapshot.top_invalidators {
            let labels = MutationLabels {
                mutation: invalidator.mutation.clone(),
            };
            invalidations
                .get_or_create(&labels)
                .inc_by(invalidator.invalidations);
            caused
                .get_or_create(&labels)
                .inc_by(invalidator.misses_caused);
        }
        registry.register(
            "catalog_cache_operation_requests",
            "Queries answered, by operation (the most requested operations this instance tracks)",
            requests,
        );
        registry.register(
            "catalog_cache_operation_hits",
            "Queries answered by a fresh cache entry, by operation",
            hits,
        );
        registry.register(
            "catalog_cache_operation_stale",
            "Queries answered by a stale cache entry, by operation",
            stale,
        );
        registry.register(
            "catalog_cache_operation_misses",
            "Queries the cache did not answer, by operation and reason",
            misses,
        );
        registry.register(
            "catalog_cache_operation_latency_seconds",
            "Latency quantiles (0.5, 0.99) of queries, by operation (bucket upper bounds)",
            latency,
        );
        registry.register(
            "catalog_cache_operation_max_achievable_hit_ratio",
            "The hit ratio an operation would reach if no entry expired",
            max_achievable,
        );
        registry.register(
            "catalog_cache_invalidator_invalidations",
            "Committed mutations that invalidated cache tags, by mutation field",
            invalidations,
        );
        registry.register(
            "catalog_cache_invalidator_misses_caused",
            "Cache misses attributed to a mutation's invalidation, by mutation field",
            caused,
        );
        let tracked = Gauge::<i64, AtomicI64>::default();
        tracked.set(i64::try_from(snapshot.tracked_operations).unwrap_or(i64::MAX));
        registry.register(
            "catalog_cache_insights_operations",
            "Operations the cache insights track (at most 100)",
            tracked,
        );
        registry
    }

    /// The insights' `/metrics` text, for tests and tools (`registry` is what `/metrics` adds).
    pub fn render(&self) -> String {
        let mut text = String::new();
        let registry = self.registry();
        if prometheus_client::encoding::text::encode_registry(&mut text, &registry).is_err() {
            let _ = writeln!(text, "# could not encode the cache insights");
        }
        text
    }
}

fn reasons(counts: &Counts) -> Vec<ReasonCount> {
    MissReason::ALL
        .iter()
        .filter(|reason| counts.misses[reason.index()] > 0)
        .map(|reason| ReasonCount {
            reason: *reason,
            count: counts.misses[reason.index()],
        })
        .collect()
}

/// Drops the least requested operation (the first found among equals); false if none.
fn evict_least_requested(operations: &mut HashMap<DocumentId, Vec<OperationStats>>) -> bool {
    let least = operations
        .iter()
        .flat_map(|(document, named)| {
            named
                .iter()
                .enumerate()
                .map(move |(index, stats)| (*document, index, stats.counts.requests))
        })
        .min_by_key(|(_, _, requests)| *requests);
    let Some((document, index, _)) = least else {
        return false;
    };
    let Some(named) = operations.get_mut(&document) else {
        return false;
    };
    named.swap_remove(index);
    if named.is_empty() {
        operations.remove(&document);
    }
    true
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
    document: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    operation: String,
    document: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QuantileLabels {
    operation: String,
    document: String,
    quantile: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MutationLabels {
    mutation: String,
}

/// What `cacheInsights` answers: this instance's figures since it started.
#[derive(Debug, Clone, async_graphql::SimpleObject)]
#[graphql(name = "CacheInsights")]
pub struct InsightsSnapshot {
    /// The most requested operations, most first.
    pub operations: Vec<OperationInsight>,
    /// Mutations by the misses their invalidations caused, most first.
    pub top_invalidators: Vec<InvalidatorInsight>,
    /// Every query this instance recorded, tracked operations or not.
    pub totals: InsightTotals,
    pub tracked_operations: u64,
    /// Most operations tracked at once.
    pub operation_capacity: u64,
    /// Most bytes the insights may hold.
    pub memory_bound_bytes: u64,
}

/// One operation's figures on this instance since it was last (re)tracked: it is dropped
/// when a new operation comes while it is the least requested of the 100 tracked.
#[derive(Debug, Clone, async_graphql::SimpleObject)]
pub struct OperationInsight {
    /// The operation's name as `/metrics` labels it (`anonymous`, or `other` past 200 names).
    pub name: String,
    /// The first 12 hex digits of the document's SHA-256.
    pub document_hash: String,
    #[graphql(flatten)]
    pub figures: InsightTotals,
    /// Median latency in milliseconds (the upper bound of its √2-wide bucket).
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// How many misses had one reason.
#[derive(Debug, Clone, async_graphql::SimpleObject)]
pub struct ReasonCount {
    pub reason: MissReason,
    pub count: u64,
}

/// Counts and rates of the queries of one operation, or of all (`totals`).
#[derive(Debug, Clone, async_graphql::SimpleObject)]
pub struct InsightTotals {
    pub requests: u64,
    pub hits: u64,
    /// Answered by an expired entry that no mutation invalidated.
    pub stale: u64,
    pub misses: u64,
    /// (hits + stale) / requests.
    pub hit_rate: f64,
    /// (hits + stale + expired misses) / requests: the hit rate if no entry expired.
    pub max_achievable_hit_rate: f64,
    /// Reasons with at least one miss.
    pub misses_by_reason: Vec<ReasonCount>,
}

/// A mutation field whose invalidations made entries miss.
#[derive(Debug, Clone, async_graphql::SimpleObject)]
pub struct InvalidatorInsight {
    /// The mutation field (`updateProduct`), or `other` past 50 names.
    pub mutation: String,
    /// Committed calls that invalidated at least one tag.
    pub invalidations: u64,
    /// Tags those calls invalidated.
    pub tags: u64,
    /// Misses on this instance attributed to its invalidations.
    pub misses_caused: u64,
    /// The operations whose misses it caused most (at most 5).
    pub operations: Vec<MissesCaused>,
}

/// An operation and the misses one mutation's invalidations caused it.
#[derive(Debug, Clone, async_graphql::SimpleObject)]
pub struct MissesCaused {
    pub operation: String,
    pub misses: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document(n: u32) -> DocumentId {
        DocumentId::of_hash(&format!("{n:012x}"))
    }

    #[test]
    fn rates_count_expired_misses_as_achievable_and_nothing_else() {
        let insights = Insights::new();
        let script = [
            (CacheStatus::Miss, Some(MissReason::Cold)),
            (CacheStatus::Hit, None),
            (CacheStatus::Hit, None),
            (CacheStatus::Miss, Some(MissReason::Expired)),
            (CacheStatus::Stale, None),
            (CacheStatus::Miss, Some(MissReason::Invalidated)),
            (CacheStatus::Bypass, Some(MissReason::Bypassed)),
            (CacheStatus::Miss, Some(MissReason::Expired)),
        ];
        for (status, miss) in script {
            insights.record("Products", document(1), status, miss, 1.0);
        }
        let snapshot = insights.snapshot(10);
        let operation = &snapshot.operations[0];
        assert_eq!(operation.figures.requests, 8);
        assert_eq!(operation.figures.hit_rate, 3.0 / 8.0);
        assert_eq!(operation.figures.max_achievable_hit_rate, 5.0 / 8.0);
        assert_eq!(operation.document_hash, "000000000001");
        assert_eq!(snapshot.totals.max_achievable_hit_rate, 5.0 / 8.0);
    }

    #[test]
    fn latency_quantiles_are_the_upper_bounds_of_their_buckets() {
        let insights = Insights::new();
        for milliseconds in 1..=100 {
            insights.record(
                "Slow",
                document(2),
                CacheStatus::Hit,
                None,
                f64::from(milliseconds),
            );
        }
        let operation = &insights.snapshot(1).operations[0];
        assert!(
            (50.0..=50.0 * std::f64::consts::SQRT_2).contains(&operation.p50_ms),
            "{}",
            operation.p50_ms
        );
        assert!(
            (99.0..=99.0 * std::f64::consts::SQRT_2).contains(&operation.p99_ms),
            "{}",
            operation.p99_ms
        );
    }

    #[test]
    fn a_flood_of_operations_keeps_the_busy_ones_and_the_bound() {
        let insights = Insights::new();
        for _ in 0..5 {
            insights.record("Busy", document(0), CacheStatus::Hit, None, 1.0);
        }
        for n in 1..=10_000 {
            insights.record(
                &format!("Op{n}"),
                document(n),
                CacheStatus::Miss,
                Some(MissReason::Cold),
                1.0,
            );
        }
        let snapshot = insights.snapshot(usize::MAX);
        assert_eq!(snapshot.tracked_operations, MAX_OPERATIONS as u64);
        assert_eq!(snapshot.operations.len(), MAX_OPERATIONS);
        assert_eq!(snapshot.operations[0].name, "Busy");
        assert_eq!(snapshot.totals.requests, 10_005);
    }

    #[test]
    fn a_miss_after_an_invalidation_is_attributed_to_the_mutation() {
        let insights = Insights::new();
        let tags = vec!["Product:1".to_owned()];
        let observed = now_millis();
        insights.filled("k1", observed, observed + 60_000, &tags);
        insights.filled("k2", observed, observed + 60_000, &["Product:2".to_owned()]);
        insights.filled("k3", observed, observed.saturating_sub(1), &[]);
        insights.invalidated("updateProduct", &tags);
        assert_eq!(
            insights.miss_reason("k1", false, "Product", document(1)),
            MissReason::Invalidated
        );
        assert_eq!(
            insights.miss_reason("k2", false, "Product", document(1)),
            MissReason::Evicted
        );
        assert_eq!(
            insights.miss_reason("k3", false, "Product", document(1)),
            MissReason::Expired
        );
        assert_eq!(
            insights.miss_reason("unknown", false, "Product", document(1)),
            MissReason::Cold
        );
        assert_eq!(
            insights.miss_reason("unknown", true, "Me", document(2)),
            MissReason::TokenScoped
        );
        let invalidators = insights.snapshot(1).top_invalidators;
        assert_eq!(invalidators[0].mutation, "updateProduct");
        assert_eq!(invalidators[0].misses_caused, 1);
        assert_eq!(invalidators[0].operations[0].operation, "Product");
    }

    #[test]
    fn requests_that_name_no_operation_count_under_the_learned_name() {
        let insights = Insights::new();
        insights.record(
            ANONYMOUS,
            document(3),
            CacheStatus::Miss,
            Some(MissReason::Cold),
            1.0,
        );
        insights.learn_name(document(3), "Named");
        insights.record(ANONYMOUS, document(3), CacheStatus::Hit, None, 1.0);
        insights.record("Named", document(3), CacheStatus::Hit, None, 1.0);
        let snapshot = insights.snapshot(10);
        let named = snapshot
            .operations
            .iter()
            .find(|operation| operation.name == "Named")
            .expect("the learned name");
        assert_eq!((named.figures.requests, named.figures.hits), (2, 2));
        insights.learn_name(document(4), ANONYMOUS);
        insights.record(ANONYMOUS, document(4), CacheStatus::Hit, None, 1.0);
        assert!(
            insights
                .snapshot(10)
                .operations
                .iter()
                .any(|operation| operation.name == ANONYMOUS)
        );
    }
}
