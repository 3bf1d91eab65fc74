//! The one configuration struct, parsed once from flags and environment variables.
//!
//! Every setting has a flag and an environment variable; `validate` turns a bad combination
//! into one clear line at start-up instead of a failure deep in a request.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, ValueEnum};

/// The longest a validated token may be cached: the cache's longest TTL, so a cached
/// validation never outlives the tag stamp a revocation leaves (stamps live a little longer).
/// `crate::auth::revocations` checks at compile time that this stays within the cache's bound.
pub const MAX_TOKEN_CACHE_SECS: u64 = 3600;

/// The longest stale window (`CATALOG_CACHE_STALE_WHILE_REVALIDATE_SECS`,
/// `CATALOG_CACHE_STALE_IF_ERROR_SECS`): tag stamps must outlive every entry that could still
/// be served, so `crate::cache::TAG_TTL` is sized for the longest TTL plus this, and checks it.
pub const MAX_STALE_WINDOW_SECS: u64 = 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Declares `Config`, one entry a setting: `field: Type = "ENV_VAR" [further clap arguments]`.
/// Every setting is a `--field-name` flag and an environment variable, global so that it may
/// follow any subcommand; the entry's doc comment is its `--help` text.
macro_rules! settings {
    ($(
        $(#[doc = $doc:tt])*
        $field:ident: $type:ty = $env:tt $([$($argument:tt)*])?,
    )*) => {
        #[derive(Debug, Clone, Args)]
        pub struct Config {
            $(
                $(#[doc = $doc])*
                #[arg(long, env = $env, global = true $(, $($argument)*)?)]
                pub $field: $type,
            )*
        }
    };
}

settings! {
    /// Database to serve: SQLite (the embedded default) or PostgreSQL.
    database_url: String = "DATABASE_URL" [default_value = "sqlite://catalog.db?mode=rwc"],

    /// PostgreSQL read replicas (streaming standbys of `DATABASE_URL`), comma separated:
    /// queries read from one that has replayed every change they must see, else from the
    /// primary. Empty: every statement goes to `DATABASE_URL`.
    database_replica_urls: Vec<String> = "DATABASE_REPLICA_URLS" [value_delimiter = ','],

    /// Milliseconds a replica may lag behind the primary before it is taken out of rotation.
    replica_max_lag_ms: u64 = "CATALOG_REPLICA_MAX_LAG_MS" [default_value_t = 1_000],

    /// Milliseconds between two health checks of each replica (its replay position and the
    /// primary's WAL position).
    replica_check_interval_ms: u64 = "CATALOG_REPLICA_CHECK_INTERVAL_MS" [default_value_t = 200],

    /// Maximum database connections in the pool.
    db_pool_size: u32 = "CATALOG_DB_POOL_SIZE" [default_value_t = 16],

    /// Milliseconds a request waits for a database connection before it fails as unavailable.
    db_acquire_timeout_ms: u64 = "CATALOG_DB_ACQUIRE_TIMEOUT_MS" [default_value_t = 1_000],

    /// Address the HTTP server listens on (port 0 picks a free port).
    bind: SocketAddr = "CATALOG_BIND" [default_value = "127.0.0.1:8000"],

    /// Address that serves `/metrics` alone; unset, `/metrics` stays on the API address.
    metrics_bind: Option<SocketAddr> = "CATALOG_METRICS_BIND",

    /// Milliseconds a client has to send a request's headers before its connection is closed.
    header_read_timeout_ms: u64 = "CATALOG_HEADER_READ_TIMEOUT_MS" [default_value_t = 10_000],

    /// Milliseconds a client has to send a whole request body; past it the answer is a 408.
    body_read_timeout_ms: u64 = "CATALOG_BODY_READ_TIMEOUT_MS" [default_value_t = 30_000],

    /// Milliseconds a GraphQL request may take once read; past it the client gets a
    /// `TIMEOUT` error (504) while the work finishes in the background (a mutation still
    /// commits and invalidates).
    request_timeout_ms: u64 = "CATALOG_REQUEST_TIMEOUT_MS" [default_value_t = 10_000],

    /// Most connections open at once; further clients wait in the listen backlog.
    /// 0 picks three quarters of the open-file limit (10,000 where it cannot be read).
    max_connections: usize = "CATALOG_MAX_CONNECTIONS" [default_value_t = 0],

    /// Milliseconds a graceful shutdown waits for open connections before closing them.
    shutdown_grace_ms: u64 = "CATALOG_SHUTDOWN_GRACE_MS" [default_value_t = 10_000],

    /// Log format: human-readable or one JSON object per line.
    log_format: LogFormat = "CATALOG_LOG_FORMAT" [value_enum, default_value_t = LogFormat::Pretty],

    /// Origins allowed by CORS, comma separated; `*` allows any origin. Unset: pages served
    /// from this machine (`localhost`, `127.0.0.1`, `[::1]`, any port) only.
    cors_origins: Vec<String> = "CATALOG_CORS_ORIGINS" [value_delimiter = ','],

    /// Serve schema introspection (GraphiQL and codegen need it).
    introspection: bool = "CATALOG_INTROSPECTION" [default_value_t = true, action = ArgAction::Set],

    /// Load the demo data set when the database is empty at start.
    demo_data: bool = "CATALOG_DEMO_DATA" [default_value_t = true, action = ArgAction::Set],

    /// Deepest selection nesting a query may have.
    max_depth: usize = "CATALOG_MAX_DEPTH" [default_value_t = 12],

    /// Highest complexity score a query may have.
    max_complexity: usize = "CATALOG_MAX_COMPLEXITY" [default_value_t = 5_000],

    /// Most operations in one batched (JSON array) request.
    max_batch: usize = "CATALOG_MAX_BATCH" [default_value_t = 10],

    /// Largest request body in bytes.
    max_body_bytes: usize = "CATALOG_MAX_BODY_BYTES" [default_value_t = 1024 * 1024],

    /// Redis for the response cache; without it an in-process cache is used.
    redis_url: Option<String> = "REDIS_URL",

    /// Maximum Redis connections in the pool (management commands and reconnects; requests
    /// share 4 multiplexed connections taken from it).
    redis_pool_size: usize = "CATALOG_REDIS_POOL_SIZE" [default_value_t = 32],

    /// Redis connect timeout in milliseconds.
    redis_connect_timeout_ms: u64 = "CATALOG_REDIS_CONNECT_TIMEOUT_MS" [default_value_t = 500],

    /// Redis command timeout in milliseconds; a slower Redis is treated as down.
    redis_command_timeout_ms: u64 = "CATALOG_REDIS_COMMAND_TIMEOUT_MS" [default_value_t = 250],

    /// Prefix of every cache key, so the cache can share a Redis with other applications.
    cache_prefix: String = "CATALOG_CACHE_PREFIX" [default_value = "catalog:"],

    /// On a Redis Cluster (`REDIS_URL=redis+cluster://...`), how many partitions the cache's
    /// bookkeeping is split into (each in one hash slot, spread over the primaries): the
    /// number of primaries. Hits spread over that many, and every write stamps each one. It
    /// must be the same on every instance. Ignored on a single Redis, which keeps one.
    cache_partitions: usize = "CATALOG_CACHE_PARTITIONS" [default_value_t = 3],

    /// Turn the response cache off entirely.
    cache_enabled: bool = "CATALOG_CACHE_ENABLED" [default_value_t = true, action = ArgAction::Set],

    /// In-process first tier in front of Redis (kept coherent by Redis pub/sub).
    cache_local_tier: bool = "CATALOG_CACHE_LOCAL_TIER"
        [default_value_t = false, action = ArgAction::Set],

    /// Capacity of the in-process cache in bytes (the embedded backend and the first tier).
    cache_local_bytes: u64 = "CATALOG_CACHE_LOCAL_BYTES" [default_value_t = 64 * 1024 * 1024],

    /// Longest time an entry stays in the in-process first tier, in seconds (1 to 60).
    cache_local_ttl_secs: u64 = "CATALOG_CACHE_LOCAL_TTL_SECS" [default_value_t = 5],

    /// The first tier's lease, in milliseconds (50 to 10000): an instance serves from its
    /// first tier only while it holds one, and a mutation answers once every other leased
    /// instance has heard its invalidation or lost its lease. An instance that stops
    /// answering costs a writer at most 1.5 leases, once (see docs/cache.md).
    cache_local_lease_ms: u64 = "CATALOG_CACHE_LOCAL_LEASE_MS" [default_value_t = 500],

    /// How long a mutation keeps retrying its cache invalidation before it answers, in
    /// milliseconds. Past it the invalidation is kept and replayed, and this instance stops
    /// reading the cache until it succeeds; other instances could then read stale entries
    /// only while Redis answers them but not this instance.
    invalidation_deadline_ms: u64 = "CATALOG_INVALIDATION_DEADLINE_MS" [default_value_t = 1000],

    /// Longest time a response entry stays fresh, in seconds (1 to 3600): caps every cache
    /// hint's max-age for the response cache (`Cache-Control` still says the hint's max-age).
    cache_max_ttl_secs: u64 = "CATALOG_CACHE_MAX_TTL_SECS" [default_value_t = 3600],

    /// Seconds an expired public entry that no mutation invalidated may still answer while one
    /// background refill replaces it (RFC 5861 `stale-while-revalidate`, also sent in
    /// `Cache-Control`). 0, the default, turns it off; at most 3600.
    cache_stale_while_revalidate_secs: u64 = "CATALOG_CACHE_STALE_WHILE_REVALIDATE_SECS"
        [default_value_t = 0],

    /// Seconds an expired public entry that no mutation invalidated may still answer when the
    /// database is unavailable or too slow (its breaker open, a timeout): RFC 5861
    /// `stale-if-error`, also sent in `Cache-Control`. 0, the default, turns it off; at most 3600.
    cache_stale_if_error_secs: u64 = "CATALOG_CACHE_STALE_IF_ERROR_SECS" [default_value_t = 0],

    /// Stale windows per GraphQL type, overriding the two above for results holding that
    /// type: `Type=while_revalidate:if_error` in seconds, comma separated, for `Product` (also
    /// product lists and counts) and `Category` (also the category list), e.g.
    /// `Category=600:3600,Product=30:300`. A result holding several types gets the smallest.
    cache_stale_by_type: Vec<String> = "CATALOG_CACHE_STALE_BY_TYPE" [value_delimiter = ','],

    /// Cached values larger than this many bytes are compressed (lz4).
    cache_compress_above: usize = "CATALOG_CACHE_COMPRESS_ABOVE" [default_value_t = 1024],

    /// Query results longer than this many bytes are answered but never stored in the cache
    /// (counted as `too_large` misses in the cache insights).
    cache_max_entry_bytes: usize = "CATALOG_CACHE_MAX_ENTRY_BYTES" [default_value_t = 8 * 1024 * 1024],

    /// Persisted-query documents longer than this many bytes are answered but not registered
    /// (the client keeps sending the full text). Real clients' operations are a few KiB.
    apq_max_document_bytes: usize = "CATALOG_APQ_MAX_DOCUMENT_BYTES" [default_value_t = 64 * 1024],

    /// Most persisted-query documents the cache backend keeps; past it the oldest
    /// registrations are dropped (their clients register again). Each lives 24 hours.
    apq_max_documents: usize = "CATALOG_APQ_MAX_DOCUMENTS" [default_value_t = 2_000],

    /// How many of the most executed operations the ranking (and `cache warm-up`) keeps,
    /// with their recorded documents.
    ranked_operations: usize = "CATALOG_RANKED_OPERATIONS" [default_value_t = 200],

    /// Honour the `X-Bypass-Cache: 1` request header (benchmarks only; never in production).
    allow_cache_bypass: bool = "CATALOG_ALLOW_CACHE_BYPASS"
        [default_value_t = false, action = ArgAction::Set],

    /// Only operations of this persisted-query manifest may run (Apollo's format).
    persisted_only: Option<PathBuf> = "CATALOG_PERSISTED_ONLY",

    /// Fault injection for tests: wait this long between executing a query and storing its
    /// result, so a test can commit a mutation in between. Never set in production.
    fault_fill_delay_ms: u64 = "CATALOG_FAULT_FILL_DELAY_MS" [default_value_t = 0, hide = true],

    /// Seconds shared HTTP caches (CDNs, proxies) may reuse a public result without
    /// revalidating (`s-maxage`, never beyond the result's own max-age). 0, the default, makes
    /// every HTTP cache revalidate with the ETag, so none serves a result a mutation changed.
    http_shared_max_age_secs: u32 = "CATALOG_HTTP_SHARED_MAX_AGE_SECS" [default_value_t = 0],

    /// Compress responses for clients that accept it (`Accept-Encoding`: br, zstd, gzip).
    /// Cached results are compressed once, when stored, and every hit sends the stored bytes.
    compression: bool = "CATALOG_COMPRESSION" [default_value_t = true, action = ArgAction::Set],

    /// Bodies shorter than this many bytes are sent uncompressed (compression would save less
    /// than a packet and cost every client a decoder pass).
    compression_min_bytes: usize = "CATALOG_COMPRESSION_MIN_BYTES" [default_value_t = 1024],

    /// Seconds a validated bearer token is remembered by the cache (at most 3600, the
    /// cache's longest TTL).
    token_cache_secs: u64 = "CATALOG_TOKEN_CACHE_SECS" [default_value_t = 300],

    /// Milliseconds between two polls of the database for revoked tokens: a revoked token is
    /// refused by every server within this interval plus one request, however it was revoked.
    revocation_poll_ms: u64 = "CATALOG_REVOCATION_POLL_MS" [default_value_t = 1000],

    /// Whether public cacheable responses carry their cache tags for CDNs (see
    /// `CATALOG_EDGE_TAG_HEADERS`), so that an edge can purge exactly what a mutation changed.
    /// Unset: on exactly when `CATALOG_EDGE_PURGE` names an edge (set it to `true` for a CDN
    /// purged by other means); the headers cost every hit some bytes and work.
    edge_tags: Option<bool> = "CATALOG_EDGE_TAGS" [action = ArgAction::Set],

    /// The response headers that carry the tags, comma separated: `Surrogate-Key` (Fastly,
    /// Varnish's xkey; space separated) and `Cache-Tag` (Cloudflare; comma separated, as is
    /// Akamai's `Edge-Cache-Tag`).
    edge_tag_headers: Vec<String> = "CATALOG_EDGE_TAG_HEADERS"
        [value_delimiter = ',', default_value = "Surrogate-Key,Cache-Tag"],

    /// Prepended to every edge tag, so several deployments can share one CDN service
    /// (letters, digits, `-`, `_` and `.`; at most 32).
    edge_tag_prefix: String = "CATALOG_EDGE_TAG_PREFIX" [default_value = ""],

    /// Most bytes of tags one header may carry (Cloudflare and Fastly: 16 KB); past it, fine
    /// tags are replaced by the coarser tags that cover them, never dropped without them.
    edge_tag_max_bytes: usize = "CATALOG_EDGE_TAG_MAX_BYTES" [default_value_t = 16 * 1024],

    /// Most tags one response may carry (Akamai: 128); past it, tags are coarsened likewise.
    edge_tag_max_count: usize = "CATALOG_EDGE_TAG_MAX_COUNT" [default_value_t = 128],

    /// The edge to purge when a mutation commits: `none`, `varnish`, `fastly` or
    /// `cloudflare`. With one, public results get `s-maxage` up to their TTL.
    edge_purge: EdgePurgeBackend = "CATALOG_EDGE_PURGE"
        [value_enum, default_value_t = EdgePurgeBackend::None],

    /// Varnish servers to send `PURGE` requests to (the xkey module's `xkey-purge` header),
    /// comma separated, e.g. `http://127.0.0.1:6081`.
    edge_varnish_urls: Vec<String> = "CATALOG_EDGE_VARNISH_URLS" [value_delimiter = ','],

    /// Soft purges: Varnish's `xkey.softpurge`, Fastly's `Fastly-Soft-Purge: 1`. The edge keeps
    /// a purged object only to revalidate it (a 304 instead of a body), never to serve it.
    edge_soft_purge: bool = "CATALOG_EDGE_SOFT_PURGE"
        [default_value_t = false, action = ArgAction::Set],

    /// Fastly's service id (purge by surrogate key).
    edge_fastly_service_id: Option<String> = "CATALOG_EDGE_FASTLY_SERVICE_ID",

    /// Fastly API token with purge rights (sent as `Fastly-Key`).
    edge_fastly_api_token: Option<String> = "CATALOG_EDGE_FASTLY_API_TOKEN" [hide_env_values = true],

    /// Fastly's API address.
    edge_fastly_api_url: String = "CATALOG_EDGE_FASTLY_API_URL"
        [default_value = "https://api.fastly.com"],

    /// Cloudflare's zone id (purge by cache tag).
    edge_cloudflare_zone_id: Option<String> = "CATALOG_EDGE_CLOUDFLARE_ZONE_ID",

    /// Cloudflare API token with the Cache Purge permission (sent as a bearer token).
    edge_cloudflare_api_token: Option<String> = "CATALOG_EDGE_CLOUDFLARE_API_TOKEN"
        [hide_env_values = true],

    /// Cloudflare's API address.
    edge_cloudflare_api_url: String = "CATALOG_EDGE_CLOUDFLARE_API_URL"
        [default_value = "https://api.cloudflare.com/client/v4"],

    /// Milliseconds a mutation waits for the edge to acknowledge its purge before it answers
    /// with the purge pending (kept in the outbox and retried until it succeeds).
    edge_purge_wait_ms: u64 = "CATALOG_EDGE_PURGE_WAIT_MS" [default_value_t = 2_000],

    /// Milliseconds purges are gathered before they are sent: a burst of mutations in this
    /// window costs one request per batch of tags.
    edge_purge_coalesce_ms: u64 = "CATALOG_EDGE_PURGE_COALESCE_MS" [default_value_t = 5],

    /// Limit each client's query cost per window (see `docs/limits.md`). Off, the limiter does
    /// no work at all.
    rate_limit_enabled: bool = "CATALOG_RATE_LIMIT_ENABLED"
        [default_value_t = true, action = ArgAction::Set],

    /// The rate limit's window in seconds (fixed windows starting at a client's first
    /// request; with Redis, shared by every instance).
    rate_limit_window_secs: u64 = "CATALOG_RATE_LIMIT_WINDOW_SECS" [default_value_t = 60],

    /// Query cost one client address may spend per window. A cache hit costs 1, an executed
    /// operation the fields it selects (fragments expanded), a refused one 1.
    rate_limit_cost_per_address: u64 = "CATALOG_RATE_LIMIT_COST_PER_ADDRESS"
        [default_value_t = 100_000],

    /// Query cost one bearer token may spend per window, whatever address sends it (its
    /// address's budget applies too).
    rate_limit_cost_per_token: u64 = "CATALOG_RATE_LIMIT_COST_PER_TOKEN"
        [default_value_t = 100_000],

    /// Client addresses never limited, as CIDR blocks, comma separated (health checkers,
    /// dashboards, this machine). Empty (`CATALOG_RATE_LIMIT_EXEMPT=`): none.
    rate_limit_exempt: Vec<String> = "CATALOG_RATE_LIMIT_EXEMPT"
        [value_delimiter = ',', default_value = "127.0.0.0/8,::1/128"],

    /// Proxies whose `X-Forwarded-For` names the client, as CIDR blocks, comma separated.
    /// A request from any other peer is limited by its peer address.
    rate_limit_trusted_proxies: Vec<String> = "CATALOG_RATE_LIMIT_TRUSTED_PROXIES"
        [value_delimiter = ','],

    /// Most clients (addresses and tokens) the in-process limiter tracks; past it the least
    /// recently seen are forgotten. About 200 bytes each.
    rate_limit_max_clients: u64 = "CATALOG_RATE_LIMIT_MAX_CLIENTS" [default_value_t = 100_000],

    /// Milliseconds after which a mutation's tags are purged a second time: an edge fetch that
    /// was in flight while the mutation committed may have stored a result computed before
    /// it. 0 turns the second purge off.
    edge_repurge_after_ms: u64 = "CATALOG_EDGE_REPURGE_AFTER_MS" [default_value_t = 1_000],

    /// OpenTelemetry collector to send traces to over OTLP/HTTP (protobuf), e.g.
    /// `http://127.0.0.1:4318`; spans go to its `/v1/traces`. Unset: no traces (docs/tracing.md).
    otel_exporter_otlp_endpoint: Option<String> = "OTEL_EXPORTER_OTLP_ENDPOINT",

    /// The `service.name` of the exported spans.
    otel_service_name: String = "OTEL_SERVICE_NAME" [default_value = "catalog-api"],

    /// Which traces are recorded: `always_on`, `always_off`, `traceidratio`, or one of these
    /// behind `parentbased_` (a client's sampled flag in `traceparent` decides for its trace).
    otel_traces_sampler: TraceSampler = "OTEL_TRACES_SAMPLER"
        [value_enum, default_value_t = TraceSampler::ParentbasedAlwaysOn],

    /// The ratio of traces a `traceidratio` sampler records, from 0 to 1 (default 1).
    otel_traces_sampler_arg: Option<f64> = "OTEL_TRACES_SAMPLER_ARG",

    /// Milliseconds finished spans are gathered before they are exported in one batch.
    otel_bsp_schedule_delay_ms: u64 = "OTEL_BSP_SCHEDULE_DELAY" [default_value_t = 5_000],
}

/// `OTEL_TRACES_SAMPLER`'s values, spelled as the OpenTelemetry specification spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TraceSampler {
    #[value(name = "always_on")]
    AlwaysOn,
    #[value(name = "always_off")]
    AlwaysOff,
    #[value(name = "traceidratio")]
    TraceIdRatio,
    #[value(name = "parentbased_always_on")]
    ParentbasedAlwaysOn,
    #[value(name = "parentbased_always_off")]
    ParentbasedAlwaysOff,
    #[value(name = "parentbased_traceidratio")]
    ParentbasedTraceIdRatio,
}

/// The GraphQL types whose results may have stale windows of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleType {
    Product,
    Category,
}

/// Where committed mutations' purges go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EdgePurgeBackend {
    None,
    Varnish,
    Fastly,
    Cloudflare,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("DATABASE_URL must start with sqlite:// or postgres:// (got {0:?})")]
    DatabaseUrl(String),
    #[error("REDIS_URL must start with redis://, rediss:// or redis+cluster:// (got {0:?})")]
    RedisUrl(String),
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    #[error("{name} must be between {low} and {high} (got {value})")]
    OutOfRange {
        name: &'static str,
        low: u64,
        high: u64,
        value: u64,
    },
    #[error("CATALOG_CACHE_PREFIX must be 1 to 64 printable characters without spaces or braces")]
    CachePrefix,
    #[error("DATABASE_REPLICA_URLS must hold postgres:// URLs (got {0:?})")]
    ReplicaUrl(String),
    #[error("DATABASE_REPLICA_URLS needs a PostgreSQL DATABASE_URL (replicas stream from it)")]
    ReplicasWithoutPostgres,
    #[error(
        "CATALOG_CACHE_STALE_BY_TYPE takes `Product` or `Category`=seconds:seconds, each at most 3600 (got {0:?})"
    )]
    StaleByType(String),
    #[error("CATALOG_EDGE_TAG_PREFIX may hold at most 32 letters, digits, `-`, `_` or `.`")]
    EdgeTagPrefix,
    #[error("CATALOG_EDGE_TAG_HEADERS must name valid HTTP headers (got {0:?})")]
    EdgeTagHeader(String),
    #[error("{name} must hold CIDR blocks such as 10.0.0.0/8 or ::1/128 (got {value:?})")]
    Cidr { name: &'static str, value: String },
    #[error("OTEL_TRACES_SAMPLER_ARG must be a ratio from 0 to 1 (got {0})")]
    SamplerRatio(f64),
    #[error("OTEL_EXPORTER_OTLP_ENDPOINT must be an http:// or https:// URL (got {0:?})")]
    OtlpEndpoint(String),
    #[error("CATALOG_EDGE_PURGE={backend} needs {missing}")]
    EdgePurgeIncomplete {
        backend: &'static str,
        missing: &'static str,
    },
}

impl Config {
    /// A configuration with every default, as a test or library user starts from.
    pub fn for_database(database_url: impl Into<String>) -> Self {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: Config,
        }
        let mut config = Wrapper::parse_from(["catalog-api"]).config;
        config.database_url = database_url.into();
        config
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = self.database_url.as_str();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::DatabaseUrl(redact(url)));
        }
        let replicas = self.replica_urls();
        for replica in &replicas {
            if !(replica.starts_with("postgres://") || replica.starts_with("postgresql://")) {
                return Err(ConfigError::ReplicaUrl(redact(replica)));
            }
        }
        if !replicas.is_empty() && !self.is_postgres() {
            return Err(ConfigError::ReplicasWithoutPostgres);
        }
        if let Some(ratio) = self.otel_traces_sampler_arg
            && !(0.0..=1.0).contains(&ratio)
        {
            return Err(ConfigError::SamplerRatio(ratio));
        }
        if let Some(endpoint) = &self.otel_exporter_otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(ConfigError::OtlpEndpoint(redact(endpoint)));
        }
        if let Some(redis) = &self.redis_url
            && !(redis.starts_with("redis://")
                || redis.starts_with("rediss://")
                || redis.starts_with("redis+cluster://"))
        {
            return Err(ConfigError::RedisUrl(redact(redis)));
        }
        for (name, value) in [
            ("CATALOG_DB_POOL_SIZE", self.db_pool_size as usize),
            ("CATALOG_REDIS_POOL_SIZE", self.redis_pool_size),
            ("CATALOG_MAX_DEPTH", self.max_depth),
            ("CATALOG_MAX_COMPLEXITY", self.max_complexity),
            ("CATALOG_MAX_BATCH", self.max_batch),
            ("CATALOG_MAX_BODY_BYTES", self.max_body_bytes),
            (
                "CATALOG_APQ_MAX_DOCUMENT_BYTES",
                self.apq_max_document_bytes,
            ),
            ("CATALOG_APQ_MAX_DOCUMENTS", self.apq_max_documents),
            ("CATALOG_RANKED_OPERATIONS", self.ranked_operations),
            ("CATALOG_CACHE_MAX_ENTRY_BYTES", self.cache_max_entry_bytes),
            (
                "CATALOG_RATE_LIMIT_COST_PER_ADDRESS",
                usize::try_from(self.rate_limit_cost_per_address).unwrap_or(usize::MAX),
            ),
            (
                "CATALOG_RATE_LIMIT_COST_PER_TOKEN",
                usize::try_from(self.rate_limit_cost_per_token).unwrap_or(usize::MAX),
            ),
            (
                "CATALOG_RATE_LIMIT_MAX_CLIENTS",
                usize::try_from(self.rate_limit_max_clients).unwrap_or(usize::MAX),
            ),
            (
                "CATALOG_REVOCATION_POLL_MS",
                usize::try_from(self.revocation_poll_ms).unwrap_or(usize::MAX),
            ),
            (
                "CATALOG_HEADER_READ_TIMEOUT_MS",
                self.header_read_timeout_ms as usize,
            ),
            (
                "CATALOG_REQUEST_TIMEOUT_MS",
                usize::try_from(self.request_timeout_ms).unwrap_or(usize::MAX),
            ),
            (
                "CATALOG_BODY_READ_TIMEOUT_MS",
                self.body_read_timeout_ms as usize,
            ),
            (
                "CATALOG_DB_ACQUIRE_TIMEOUT_MS",
                self.db_acquire_timeout_ms as usize,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        for (name, value, low, high) in [
            (
                "CATALOG_CACHE_LOCAL_TTL_SECS",
                self.cache_local_ttl_secs,
                1,
                60,
            ),
            (
                "CATALOG_CACHE_LOCAL_LEASE_MS",
                self.cache_local_lease_ms,
                50,
                10_000,
            ),
            (
                "CATALOG_INVALIDATION_DEADLINE_MS",
                self.invalidation_deadline_ms,
                0,
                60_000,
            ),
            (
                "CATALOG_TOKEN_CACHE_SECS",
                self.token_cache_secs,
                0,
                MAX_TOKEN_CACHE_SECS,
            ),
            (
                "CATALOG_CACHE_PARTITIONS",
                self.cache_partitions as u64,
                1,
                1024,
            ),
            (
                "CATALOG_CACHE_MAX_TTL_SECS",
                self.cache_max_ttl_secs,
                1,
                3600,
            ),
            (
                "CATALOG_CACHE_STALE_WHILE_REVALIDATE_SECS",
                self.cache_stale_while_revalidate_secs,
                0,
                MAX_STALE_WINDOW_SECS,
            ),
            (
                "CATALOG_CACHE_STALE_IF_ERROR_SECS",
                self.cache_stale_if_error_secs,
                0,
                MAX_STALE_WINDOW_SECS,
            ),
            (
                "CATALOG_RATE_LIMIT_WINDOW_SECS",
                self.rate_limit_window_secs,
                1,
                86_400,
            ),
            (
                "CATALOG_REPLICA_MAX_LAG_MS",
                self.replica_max_lag_ms,
                1,
                3_600_000,
            ),
            (
                "CATALOG_REPLICA_CHECK_INTERVAL_MS",
                self.replica_check_interval_ms,
                10,
                60_000,
            ),
        ] {
            if !(low..=high).contains(&value) {
                return Err(ConfigError::OutOfRange {
                    name,
                    low,
                    high,
                    value,
                });
            }
        }
        let prefix_ok = !self.cache_prefix.is_empty()
            && self.cache_prefix.len() <= 64
            && self.cache_prefix.chars().all(|c| c.is_ascii_graphic())
            // Braces would break the hash tags of the cluster layout.
            && !self.cache_prefix.contains(['{', '}']);
        if !prefix_ok {
            return Err(ConfigError::CachePrefix);
        }
        self.stale_by_type()?;
        for (name, blocks) in [
            ("CATALOG_RATE_LIMIT_EXEMPT", &self.rate_limit_exempt),
            (
                "CATALOG_RATE_LIMIT_TRUSTED_PROXIES",
                &self.rate_limit_trusted_proxies,
            ),
        ] {
            if let Err(value) = cidr_blocks(blocks) {
                return Err(ConfigError::Cidr { name, value });
            }
        }
        self.validate_edge()
    }

    /// The per-type stale windows (`CATALOG_CACHE_STALE_BY_TYPE`), in seconds.
    pub fn stale_by_type(&self) -> Result<Vec<(StaleType, u64, u64)>, ConfigError> {
        let mut windows = Vec::new();
        for item in self.cache_stale_by_type.iter().map(|item| item.trim()) {
            if item.is_empty() {
                continue;
            }
            let refused = || ConfigError::StaleByType(item.to_owned());
            let (name, seconds) = item.split_once('=').ok_or_else(refused)?;
            let kind = match name.trim() {
                "Product" => StaleType::Product,
                "Category" => StaleType::Category,
                _ => return Err(refused()),
            };
            let (revalidate, if_error) = seconds.split_once(':').ok_or_else(refused)?;
            let parse = |text: &str| {
                text.trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|seconds| *seconds <= MAX_STALE_WINDOW_SECS)
                    .ok_or_else(refused)
            };
            windows.push((kind, parse(revalidate)?, parse(if_error)?));
        }
        Ok(windows)
    }

    fn validate_edge(&self) -> Result<(), ConfigError> {
        let prefix_ok = self.edge_tag_prefix.len() <= 32
            && self
                .edge_tag_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !prefix_ok {
            return Err(ConfigError::EdgeTagPrefix);
        }
        for name in &self.edge_tag_headers {
            if http::HeaderName::from_bytes(name.trim().as_bytes()).is_err() {
                return Err(ConfigError::EdgeTagHeader(name.clone()));
            }
        }
        // 64 bytes and one tag always fit the cover tag every other tag falls back to.
        for (name, value, low) in [
            ("CATALOG_EDGE_TAG_MAX_BYTES", self.edge_tag_max_bytes, 64),
            ("CATALOG_EDGE_TAG_MAX_COUNT", self.edge_tag_max_count, 1),
        ] {
            if value < low {
                return Err(ConfigError::OutOfRange {
                    name,
                    low: low as u64,
                    high: u64::MAX,
                    value: value as u64,
                });
            }
        }
        let missing = match self.edge_purge {
            EdgePurgeBackend::None => None,
            EdgePurgeBackend::Varnish => self
                .edge_varnish_urls
                .iter()
                .all(|url| url.trim().is_empty())
                .then_some(("varnish", "CATALOG_EDGE_VARNISH_URLS")),
            EdgePurgeBackend::Fastly => {
                if self.edge_fastly_service_id.is_none() {
                    Some(("fastly", "CATALOG_EDGE_FASTLY_SERVICE_ID"))
                } else {
                    self.edge_fastly_api_token
                        .is_none()
                        .then_some(("fastly", "CATALOG_EDGE_FASTLY_API_TOKEN"))
                }
            }
            EdgePurgeBackend::Cloudflare => {
                if self.edge_cloudflare_zone_id.is_none() {
                    Some(("cloudflare", "CATALOG_EDGE_CLOUDFLARE_ZONE_ID"))
                } else {
                    self.edge_cloudflare_api_token
                        .is_none()
                        .then_some(("cloudflare", "CATALOG_EDGE_CLOUDFLARE_API_TOKEN"))
                }
            }
        };
        match missing {
            Some((backend, missing)) => Err(ConfigError::EdgePurgeIncomplete { backend, missing }),
            None => Ok(()),
        }
    }

    /// The connection bound: the configured one, or three quarters of the open-file limit, so
    /// that database, Redis and log descriptors are left when clients hold the rest.
    pub fn max_connections(&self) -> usize {
        if self.max_connections > 0 {
            return self.max_connections;
        }
        open_file_limit()
            .map(|limit| (limit / 4 * 3).max(1))
            .unwrap_or(10_000)
    }

    /// Whether spans are exported (`OTEL_EXPORTER_OTLP_ENDPOINT` is set).
    /// The size from which responses are compressed; `None` when compression is off.
    pub fn compress_from_bytes(&self) -> Option<usize> {
        self.compression.then_some(self.compression_min_bytes)
    }

    pub fn traces_enabled(&self) -> bool {
        self.otel_exporter_otlp_endpoint.is_some()
    }

    pub fn is_postgres(&self) -> bool {
        self.database_url.starts_with("postgres")
    }

    /// The configured replicas, without empty items (`DATABASE_REPLICA_URLS=` means none).
    pub fn replica_urls(&self) -> Vec<String> {
        self.database_replica_urls
            .iter()
            .map(|url| url.trim())
            .filter(|url| !url.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// Each setting given in milliseconds (`*_ms`) or seconds (`*_secs`) as the `Duration` its
/// users want, under the name they call it by: one accessor per line, no arithmetic to repeat.
macro_rules! durations {
    ($($name:ident: $unit:ident($field:ident),)*) => {
        impl Config {
            $(
                pub fn $name(&self) -> Duration {
                    Duration::$unit(self.$field)
                }
            )*
        }
    };
}

durations! {
    redis_command_timeout: from_millis(redis_command_timeout_ms),
    redis_connect_timeout: from_millis(redis_connect_timeout_ms),
    revocation_poll_interval: from_millis(revocation_poll_ms),
    token_cache_ttl: from_secs(token_cache_secs),
    cache_max_ttl: from_secs(cache_max_ttl_secs),
    stale_while_revalidate: from_secs(cache_stale_while_revalidate_secs),
    stale_if_error: from_secs(cache_stale_if_error_secs),
    header_read_timeout: from_millis(header_read_timeout_ms),
    request_timeout: from_millis(request_timeout_ms),
    body_read_timeout: from_millis(body_read_timeout_ms),
    shutdown_grace: from_millis(shutdown_grace_ms),
    db_acquire_timeout: from_millis(db_acquire_timeout_ms),
    edge_purge_wait: from_millis(edge_purge_wait_ms),
    edge_purge_coalesce: from_millis(edge_purge_coalesce_ms),
    edge_repurge_after: from_millis(edge_repurge_after_ms),
    replica_max_lag: from_millis(replica_max_lag_ms),
    replica_check_interval: from_millis(replica_check_interval_ms),
    rate_limit_window: from_secs(rate_limit_window_secs),
}

/// The soft limit on open files, from `/proc/self/limits` (Linux); `None` elsewhere or when
/// unlimited.
fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CIDR blocks from a list setting (empty items skipped; a bare address is its own block), or
/// the first item that is not one.
pub fn cidr_blocks(items: &[String]) -> Result<Vec<ipnet::IpNet>, String> {
    items
        .iter()
        .map(|item| item.trim())
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| item.to_owned())
        })
        .collect()
}

/// Hides a password in a connection URL before it is printed.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &credentials[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_cache_longer_than_the_longest_cache_ttl_is_refused() {
        let mut config = Config::for_database("sqlite::memory:");
        config.token_cache_secs = MAX_TOKEN_CACHE_SECS;
        assert!(config.validate().is_ok());
        config.token_cache_secs = MAX_TOKEN_CACHE_SECS + 1;
        let error = config.validate().expect_err("over the bound");
        assert_eq!(
            error.to_string(),
            "CATALOG_TOKEN_CACHE_SECS must be between 0 and 3600 (got 3601)"
        );
    }

    #[test]
    fn stale_windows_per_type_are_parsed_and_malformed_ones_refused() {
        let mut config = Config::for_database("sqlite::memory:");
        config.cache_stale_by_type = vec!["Product=30:300".into(), " Category = 0:60".into()];
        assert_eq!(
            config.stale_by_type().expect("valid"),
            vec![(StaleType::Product, 30, 300), (StaleType::Category, 0, 60)]
        );
        for refused in [
            "Dashboard=1:1",
            "Product=30",
            "Product=a:1",
            "Product=1:3601",
        ] {
            config.cache_stale_by_type = vec![refused.into()];
            assert!(config.validate().is_err(), "{refused}");
        }
    }

    #[test]
    fn stale_windows_are_off_by_default_and_bounded() {
        let mut config = Config::for_database("sqlite::memory:");
        assert_eq!(config.stale_while_revalidate(), Duration::ZERO);
        assert_eq!(config.stale_if_error(), Duration::ZERO);
        config.cache_stale_if_error_secs = MAX_STALE_WINDOW_SECS;
        assert!(config.validate().is_ok());
        config.cache_stale_while_revalidate_secs = MAX_STALE_WINDOW_SECS + 1;
        assert_eq!(
            config.validate().expect_err("over the bound").to_string(),
            "CATALOG_CACHE_STALE_WHILE_REVALIDATE_SECS must be between 0 and 3600 (got 3601)"
        );
    }

    #[test]
    fn a_zero_revocation_poll_interval_is_refused() {
        let mut config = Config::for_database("sqlite::memory:");
        assert_eq!(config.revocation_poll_interval(), Duration::from_secs(1));
        config.revocation_poll_ms = 0;
        assert_eq!(
            config.validate().expect_err("zero").to_string(),
            "CATALOG_REVOCATION_POLL_MS must be greater than zero"
        );
    }
}
