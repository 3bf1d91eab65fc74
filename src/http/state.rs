//! The state every request handler shares, built once from the `Config`: database,
//! replicas, cache, executor, authenticator, metrics. It lives with the HTTP layer that
//! hands it to handlers, below `app` (which binds and serves), so imports run one way.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use sea_orm::DatabaseConnection;

use crate::auth::Authenticator;
use crate::cache::ResponseCache;
use crate::cache::key::document_hash;
use crate::config::{Config, ConfigError, EdgePurgeBackend};
use crate::db::breaker::DatabaseBreaker;
use crate::db::replicas::Replicas;
use crate::db::seed::{self, SeedPlan};
use crate::db::{self, DatabaseError};
use crate::edge::{EdgePurger, SurrogateKeys};
use crate::graphql;
use crate::graphql::SchemaLimits;
use crate::graphql::executor::Executor;
use crate::rate_limit::RateLimiter;
use crate::revocations::RevocationWatcher;
use crate::telemetry::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error("cannot seed the demo data: {0}")]
    Seed(sea_orm::DbErr),
    #[error("cannot write the search keys of existing rows: {0}")]
    SearchKeys(sea_orm::DbErr),
    #[error("cannot set up the cache: {0}")]
    Cache(#[from] crate::cache::storage::StorageError),
    #[error("cannot read the persisted query manifest {path}: {reason}")]
    Manifest { path: String, reason: String },
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// Everything a request handler needs, cloned cheaply into each request.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: DatabaseConnection,
    /// The read replicas, when `DATABASE_REPLICA_URLS` names any.
    pub replicas: Option<Replicas>,
    /// Open while the database is unreachable: requests that need it fail at once.
    pub db_breaker: DatabaseBreaker,
    pub executor: Arc<Executor>,
    pub authenticator: Authenticator,
    pub metrics: Arc<Metrics>,
    pub cache: Option<ResponseCache>,
    pub redis_pool: Option<crate::cache::storage::redis::RedisPool>,
    /// Polls the database for revoked tokens while this state lives (only when token
    /// validations are cached, that is in Redis).
    pub revocation_watcher: Option<Arc<RevocationWatcher>>,
    /// Writes public responses' cache tags for CDNs, when they are on.
    pub surrogate_keys: Option<Arc<SurrogateKeys>>,
    /// Purges the edge after each mutation, when an edge is configured.
    pub edge_purger: Option<EdgePurger>,
    /// The stale windows, as `Cache-Control` announces them.
    pub freshness: crate::cache::Freshness,
    /// Charges each client's query cost; `None` when rate limits are off.
    pub rate_limiter: Option<RateLimiter>,
    /// Public queries recognized by their request bytes (see `http::recognized`).
    pub recognized: Arc<super::recognized::RecognizedRequests>,
}

impl AppState {
    /// Connects, migrates, loads the demo data into an empty database when asked, and builds
    /// the cache and the schema.
    pub async fn build(config: Config) -> Result<AppState, StartupError> {
        config.validate()?;
        let metrics = Arc::new(Metrics::new());
        let db = db::connect(&config, Some(Arc::clone(&metrics))).await?;
        db::migrate(&db).await?;
        let keyed = crate::catalog::search_key::backfill(&db)
            .await
            .map_err(StartupError::SearchKeys)?;
        if keyed > 0 {
            tracing::info!(rows = keyed, "wrote the search keys of rows that had none");
        }
        if config.demo_data && seed::is_empty(&db).await.map_err(StartupError::Seed)? {
            let plan = SeedPlan::DEMO;
            tracing::info!(
                categories = plan.categories,
                products = plan.products,
                "empty database: loading the demo data"
            );
            seed::seed(&db, plan).await.map_err(StartupError::Seed)?;
        }
        let replicas = Replicas::connect(&config, db.clone(), Arc::clone(&metrics)).await?;
        let (cache, redis) = match crate::cache::from_config(&config, Arc::clone(&metrics))? {
            Some((cache, redis)) => (Some(cache), redis),
            None => (None, None),
        };
        let redis_pool = redis.as_ref().map(|redis| redis.pool().clone());
        let rate_limiter = RateLimiter::from_config(&config, redis);
        // Validations are cached only in the shared cache; there a revocation that reached
        // only the database (the CLI without REDIS_URL) must still reach this server.
        let revocation_watcher = match (&cache, &config.redis_url) {
            (Some(cache), Some(_)) => {
                // A connection of its own: polls never wait behind requests for the pool,
                // and never count as the statements of a request.
                let mut watcher_config = config.clone();
                watcher_config.db_pool_size = 1;
                let watcher_db = db::connect(&watcher_config, None).await?;
                let (watcher, _task) = RevocationWatcher::spawn(
                    watcher_db,
                    cache.clone(),
                    config.revocation_poll_interval(),
                    config.token_cache_ttl(),
                );
                Some(watcher)
            }
            _ => None,
        };
        let manifest = match &config.persisted_only {
            Some(path) => Some(load_manifest(path)?),
            None => None,
        };
        let limits = SchemaLimits {
            max_depth: config.max_depth,
            max_complexity: config.max_complexity,
            introspection: config.introspection,
        };
        let edge_purger = match config.edge_purge {
            EdgePurgeBackend::None => None,
            _ => {
                // The outbox's retries and clean-ups on a connection of their own (an
                // in-memory SQLite database exists only on the shared one).
                let outbox = if config.database_url.contains(":memory:") {
                    db.clone()
                } else {
                    let mut outbox_config = config.clone();
                    outbox_config.db_pool_size = 2;
                    db::connect(&outbox_config, None).await?
                };
                EdgePurger::start(&config, outbox, Arc::clone(&metrics))
            }
        };
        let surrogate_keys = SurrogateKeys::from_config(&config).map(Arc::new);
        let db_breaker = DatabaseBreaker::new(db.clone(), 2 * config.db_acquire_timeout());
        let schemas = graphql::schema::Schemas::build(limits, |builder| {
            let mut builder = builder.data(db.clone()).data(db_breaker.clone());
            if let Some(replicas) = &replicas {
                builder = builder.data(replicas.clone());
            }
            if let Some(purger) = &edge_purger {
                builder = builder.data(purger.clone());
            }
            match &cache {
                Some(cache) => builder.data(cache.clone()),
                None => builder,
            }
        });
        let authenticator = Authenticator::new(db.clone(), cache.clone(), db_breaker.clone());
        let executor = Executor {
            schemas,
            db: db.clone(),
            replicas: replicas.clone(),
            cache: cache.clone(),
            authenticator: authenticator.clone(),
            metrics: Arc::clone(&metrics),
            manifest,
            allow_cache_bypass: config.allow_cache_bypass,
        };
        let freshness = crate::cache::Freshness::from_config(&config);
        Ok(AppState {
            config: Arc::new(config),
            authenticator,
            db,
            replicas,
            db_breaker,
            executor: Arc::new(executor),
            metrics,
            cache,
            redis_pool,
            revocation_watcher,
            surrogate_keys,
            edge_purger,
            freshness,
            rate_limiter,
            recognized: Arc::default(),
        })
    }
}

/// Reads an Apollo persisted query manifest into a map from document SHA-256 to document.
pub fn load_manifest(path: &std::path::Path) -> Result<HashMap<String, String>, StartupError> {
    let fail = |reason: String| StartupError::Manifest {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|error| fail(error.to_string()))?;
    let manifest: serde_json::Value =
        serde_json::from_str(&text).map_err(|error| fail(error.to_string()))?;
    let operations = manifest
        .get("operations")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| {
            fail("no `operations` array (expected Apollo's persisted query list format)".into())
        })?;
    let mut documents = HashMap::new();
    for operation in operations {
        let body = operation
            .get("body")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| fail("an operation has no `body`".into()))?;
        let hash = document_hash(body);
        if let Some(id) = operation.get("id").and_then(serde_json::Value::as_str)
            && id != hash
        {
            return Err(fail(format!(
                "operation id {id} is not the SHA-256 of its body"
            )));
        }
        documents.insert(hash, body.to_owned());
    }
    Ok(documents)
}
