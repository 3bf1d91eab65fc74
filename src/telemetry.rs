//! Logs, traces and metrics: the tracing subscriber (pretty or JSON, plus the OpenTelemetry
//! exporter of `traces` when configured) and the Prometheus registry.
//!
//! Each `App` owns its own `Metrics`, so several servers in one process (as in the test
//! suite) never mix their counts. Operation names are client-chosen, so the number of
//! distinct label values is capped to keep `/metrics` bounded.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, AtomicU64};

use opentelemetry_sdk::trace::SdkTracerProvider;
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{Config, LogFormat};

pub mod traces;

/// The installed exporter, to flush when the process ends.
#[must_use = "call `shutdown` at exit, or the last spans are lost"]
pub struct Tracing {
    provider: Option<SdkTracerProvider>,
}

impl Tracing {
    /// Exports the spans still buffered and stops the exporter (blocks up to its timeout).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("could not flush the last traces: {error}");
        }
    }
}

/// Installs the global tracing subscriber once; later calls (tests) are no-ops. Without an
/// OTLP endpoint the subscriber is the log formatter alone, exactly as before traces existed.
pub fn init_tracing(config: &Config) -> Result<Tracing, traces::ExporterError> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,sea_orm=warn,tower_http=info"));
    let Some(provider) = traces::tracer_provider(config)? else {
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        let _already_installed = match config.log_format {
            LogFormat::Pretty => builder.try_init(),
            LogFormat::Json => builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .try_init(),
        };
        return Ok(Tracing { provider: None });
    };
    // Each layer has its own filter: the log lines stay what `RUST_LOG` asks for, while the
    // exporter sees the DEBUG spans below the request (see `traces`).
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match config.log_format {
        LogFormat::Pretty => logs.with_filter(filter).boxed(),
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_filter(filter)
            .boxed(),
    };
    let installed = tracing_subscriber::registry()
        .with(logs)
        .with(traces::layer(&provider).with_filter(traces::span_filter()))
        .try_init()
        .is_ok();
    Ok(Tracing {
        provider: installed.then_some(provider),
    })
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: String,
    pub cache: String,
}

/// Which database served a query execution: `primary` or a replica's name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DatabaseLabels {
    pub database: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
}

const MAX_OPERATION_LABELS: usize = 200;

pub struct Metrics {
    registry: Registry,
    pub requests: Family<OperationLabels, Counter>,
    pub request_seconds: Family<OperationLabels, Histogram, fn() -> Histogram>,
    pub errors: Family<CodeLabels, Counter>,
    pub db_statements: Counter,
    pub db_reads: Family<DatabaseLabels, Counter>,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub cache_bypasses: Counter,
    pub cache_errors: Counter,
    pub cache_fills: Counter,
    pub cache_invalidations: Counter,
    pub cache_evictions: Counter,
    pub cache_unprovable: Counter,
    /// Stale entries served while a refill replaced them.
    pub cache_stale_while_revalidate: Counter,
    /// Stale entries served because the database failed or timed out.
    pub cache_stale_if_error: Counter,
    pub cache_epochs: Counter,
    pub cache_first_tier_gaps: Counter,
    /// Hits answered from the first tier, with no call to Redis.
    pub cache_first_tier_hits: Counter,
    /// How long writers waited for other instances' first tiers to hear an invalidation.
    pub cache_first_tier_settle_seconds: Histogram,
    /// First-tier leases writers took away because an invalidation went unacknowledged.
    pub cache_first_tier_lease_evictions: Counter,
    pub redis_seconds: Histogram,
    pub redis_pool_size: Gauge<i64, AtomicI64>,
    pub redis_pool_available: Gauge<i64, AtomicI64>,
    /// Clients the in-process rate limiter tracks (bounded by `CATALOG_RATE_LIMIT_MAX_CLIENTS`).
    pub rate_limit_clients: Gauge<i64, AtomicI64>,
    /// 1 while the database breaker is open (the database is known to be unreachable).
    pub database_unreachable: Gauge<i64, AtomicI64>,
    /// 1 while the cache backend's breaker is open (requests skip the cache).
    pub cache_backend_unreachable: Gauge<i64, AtomicI64>,
    /// Invalidated tags kept for replay because the cache backend did not acknowledge them.
    pub cache_invalidations_deferred: Gauge<i64, AtomicI64>,
    pub edge: EdgeMetrics,
    known_operations: Mutex<HashSet<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<OperationLabels, Counter>::default();
        let request_seconds =
            Family::<OperationLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            );
        let errors = Family::<CodeLabels, Counter>::default();
        let db_statements = Counter::default();
        let db_reads = Family::<DatabaseLabels, Counter>::default();
        let cache_hits = Counter::default();
        let cache_misses = Counter::default();
        let cache_bypasses = Counter::default();
        let cache_errors = Counter::default();
        let cache_fills = Counter::default();
        let cache_invalidations = Counter::default();
        let cache_evictions = Counter::default();
        let cache_unprovable = Counter::default();
        let cache_stale_while_revalidate = Counter::default();
        let cache_stale_if_error = Counter::default();
        let cache_epochs = Counter::default();
        let cache_first_tier_gaps = Counter::default();
        let cache_first_tier_hits = Counter::default();
        let cache_first_tier_settle_seconds = latency_histogram();
        let cache_first_tier_lease_evictions = Counter::default();
        let redis_seconds = latency_histogram();
        let redis_pool_size = Gauge::<i64, AtomicI64>::default();
        let redis_pool_available = Gauge::<i64, AtomicI64>::default();
        let rate_limit_clients = Gauge::<i64, AtomicI64>::default();
        let database_unreachable = Gauge::<i64, AtomicI64>::default();
        let cache_backend_unreachable = Gauge::<i64, AtomicI64>::default();
        let cache_invalidations_deferred = Gauge::<i64, AtomicI64>::default();

        registry.register(
            "catalog_graphql_requests",
            "GraphQL operations served, by operation and cache outcome",
            requests.clone(),
        );
        registry.register(
            "catalog_graphql_request_seconds",
            "GraphQL operation latency, by operation and cache outcome",
            request_seconds.clone(),
        );
        registry.register(
            "catalog_graphql_errors",
            "GraphQL errors returned, by extensions.code",
            errors.clone(),
        );
        registry.register(
            "catalog_db_statements",
            "SQL statements executed",
            db_statements.clone(),
        );
        registry.register(
            "catalog_db_reads",
            "Query executions with read replicas configured, by the database they read (primary or a replica)",
            db_reads.clone(),
        );
        registry.register(
            "catalog_cache_hits",
            "Responses served from the response cache",
            cache_hits.clone(),
        );
        registry.register(
            "catalog_cache_misses",
            "Cacheable responses that had to be executed",
            cache_misses.clone(),
        );
        registry.register(
            "catalog_cache_bypasses",
            "Responses that skipped the cache (mutations, private without token, bypass header)",
            cache_bypasses.clone(),
        );
        registry.register(
            "catalog_cache_errors",
            "Cache backend errors and timeouts (requests still succeed)",
            cache_errors.clone(),
        );
        registry.register(
            "catalog_cache_fills",
            "Responses stored in the cache",
            cache_fills.clone(),
        );
        registry.register(
            "catalog_cache_invalidations",
            "Tags invalidated by committed mutations",
            cache_invalidations.clone(),
        );
        registry.register(
            "catalog_cache_evictions",
            "Entries evicted from the in-process cache for capacity",
            cache_evictions.clone(),
        );
        registry.register(
            "catalog_cache_unprovable",
            "Entries found but not served: filled before the cache's current epoch, so their freshness cannot be proven",
            cache_unprovable.clone(),
        );
        registry.register(
            "catalog_cache_stale_while_revalidate",
            "Expired entries that no mutation invalidated, served while one refill replaced them",
            cache_stale_while_revalidate.clone(),
        );
        registry.register(
            "catalog_cache_stale_if_error",
            "Expired entries that no mutation invalidated, served because the database was unavailable or too slow",
            cache_stale_if_error.clone(),
        );
        registry.register(
            "catalog_cache_epochs",
            "New cache epochs this instance started (the backend restarted, was restored, failed over or lost its bookkeeping)",
            cache_epochs.clone(),
        );
        registry.register(
            "catalog_cache_first_tier_gaps",
            "Times the first tier dropped its entries after a gap in the invalidation stream",
            cache_first_tier_gaps.clone(),
        );
        registry.register(
            "catalog_cache_first_tier_hits",
            "Cache hits answered from this instance's first tier, with no call to Redis",
            cache_first_tier_hits.clone(),
        );
        registry.register(
            "catalog_cache_first_tier_settle_seconds",
            "How long a mutation waited for other instances' first tiers to hear its invalidation",
            cache_first_tier_settle_seconds.clone(),
        );
        registry.register(
            "catalog_cache_first_tier_lease_evictions",
            "First-tier leases taken away because an instance did not acknowledge an invalidation in time",
            cache_first_tier_lease_evictions.clone(),
        );
        registry.register(
            "catalog_redis_command_seconds",
            "Redis round-trip latency",
            redis_seconds.clone(),
        );
        registry.register(
            "catalog_redis_pool_size",
            "Redis connections open",
            redis_pool_size.clone(),
        );
        registry.register(
            "catalog_redis_pool_available",
            "Redis connections idle in the pool",
            redis_pool_available.clone(),
        );
        registry.register(
            "catalog_rate_limit_clients",
            "Client addresses and tokens the in-process rate limiter tracks",
            rate_limit_clients.clone(),
        );
        // The three states below are read from the app state at each scrape (`/metrics`).
        registry.register(
            "catalog_database_unreachable",
            "1 while the database is known to be unreachable (its breaker is open: requests that need it fail at once), else 0",
            database_unreachable.clone(),
        );
        registry.register(
            "catalog_cache_backend_unreachable",
            "1 while the cache backend is considered down (its breaker is open: requests are answered from the database), else 0",
            cache_backend_unreachable.clone(),
        );
        registry.register(
            "catalog_cache_invalidations_deferred",
            "Invalidated tags waiting for the cache backend to acknowledge them; while above 0 this instance reads no cached entries",
            cache_invalidations_deferred.clone(),
        );

        let edge = EdgeMetrics::registered(&mut registry);
        Metrics {
            registry,
            requests,
            request_seconds,
            errors,
            db_statements,
            db_reads,
            cache_hits,
            cache_misses,
            cache_bypasses,
            cache_errors,
            cache_fills,
            cache_invalidations,
            cache_evictions,
            cache_unprovable,
            cache_stale_while_revalidate,
            cache_stale_if_error,
            cache_epochs,
            cache_first_tier_gaps,
            cache_first_tier_hits,
            cache_first_tier_settle_seconds,
            cache_first_tier_lease_evictions,
            redis_seconds,
            redis_pool_size,
            redis_pool_available,
            rate_limit_clients,
            database_unreachable,
            cache_backend_unreachable,
            cache_invalidations_deferred,
            edge,
            known_operations: Mutex::new(HashSet::new()),
        }
    }

    /// The label for a client-chosen operation name: itself while few names are known.
    pub fn operation_label(&self, name: Option<&str>) -> String {
        let Some(name) = name.filter(|name| {
            !name.is_empty()
                && name.len() <= 64
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        }) else {
            return "anonymous".to_owned();
        };
        let mut known = self.known_operations.lock();
        if known.contains(name) || known.len() < MAX_OPERATION_LABELS {
            known.insert(name.to_owned());
            name.to_owned()
        } else {
            "other".to_owned()
        }
    }

    pub fn record_request(&self, operation: String, cache: &str, seconds: f64) {
        let labels = OperationLabels {
            operation,
            cache: cache.to_owned(),
        };
        self.requests.get_or_create(&labels).inc();
        self.request_seconds.get_or_create(&labels).observe(seconds);
    }

    pub fn record_error(&self, code: &str) {
        self.errors
            .get_or_create(&CodeLabels {
                code: code.to_owned(),
            })
            .inc();
    }

    pub fn render(&self) -> String {
        self.render_with(None)
    }

    /// The registry's metrics and `extra`'s (metrics made at the scrape, such as the cache
    /// insights'), before the one end-of-exposition line.
    pub fn render_with(&self, extra: Option<&Registry>) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut text = String::new();
        let encoded = encode_registry(&mut text, &self.registry)
            .and_then(|()| extra.map_or(Ok(()), |extra| encode_registry(&mut text, extra)))
            .and_then(|()| encode_eof(&mut text));
        if encoded.is_err() {
            tracing::error!("could not encode metrics");
        }
        text
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

/// The edge purger's counts: requests sent to the edge by result, purges waiting in the
/// outbox and the age of the oldest, mutations answered before their purge was acknowledged.
#[derive(Clone)]
pub struct EdgeMetrics {
    pub requests: Family<ResultLabels, Counter>,
    pub outbox: Gauge<i64, AtomicI64>,
    pub oldest_seconds: Gauge<f64, AtomicU64>,
    pub answered_pending: Counter,
    pub retried: Counter,
}

impl EdgeMetrics {
    fn registered(registry: &mut Registry) -> Self {
        let metrics = EdgeMetrics {
            requests: Family::default(),
            outbox: Gauge::default(),
            oldest_seconds: Gauge::default(),
            answered_pending: Counter::default(),
            retried: Counter::default(),
        };
        registry.register(
            "catalog_edge_purge_requests",
            "Purge requests sent to the edge, by result (ok or failed)",
            metrics.requests.clone(),
        );
        registry.register(
            "catalog_edge_purge_pending",
            "Purges in the outbox: not yet acknowledged by the edge (or by its second purge)",
            metrics.outbox.clone(),
        );
        registry.register(
            "catalog_edge_purge_oldest_seconds",
            "Age of the oldest purge in the outbox (0 when it is empty)",
            metrics.oldest_seconds.clone(),
        );
        registry.register(
            "catalog_edge_purge_answered_pending",
            "Mutations answered before the edge acknowledged their purge",
            metrics.answered_pending.clone(),
        );
        registry.register(
            "catalog_edge_purge_retried",
            "Outbox purges retried after their writer did not see them through",
            metrics.retried.clone(),
        );
        metrics
    }

    pub fn record_request(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.requests
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }
}

/// The id of one HTTP request, echoed in `X-Request-Id`, logged with every line of the
/// request, and attached to internal errors so a client report can be found in the logs.
/// It lives here, below every layer that logs with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);
