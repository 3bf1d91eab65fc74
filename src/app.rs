//! The application: state built from a `Config` (connect, migrate, seed, cache, schema,
//! executor), and a server bound to a port. Building happens here, at the top, so start-up
//! never climbs down to the database and back up through HTTP. Tests build the very same
//! `App` on port 0 and read the port it reports.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::auth::Authenticator;
use crate::auth::revocations::RevocationWatcher;
use crate::config::{Config, ConfigError, EdgePurgeBackend};
use crate::db::breaker::DatabaseBreaker;
use crate::db::replicas::Replicas;
use crate::db::seed::{self, SeedPlan};
use crate::db::{self, DatabaseError};
use crate::edge::{EdgePurger, SurrogateKeys};
use crate::graphql;
use crate::graphql::SchemaLimits;
use crate::graphql::executor::Executor;
use crate::graphql::manifest::{ManifestError, load_manifest};
use crate::http;
pub use crate::http::state::AppState;
use crate::rate_limit::RateLimiter;
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
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
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
        // Reads the schema's field types now, so the first failed request does not pay for it.
        graphql::field_errors::prepare();
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

/// A server bound to its port (and its metrics port, when it has one), not yet serving.
pub struct App {
    state: AppState,
    listener: tokio::net::TcpListener,
    address: SocketAddr,
    metrics_listener: Option<(tokio::net::TcpListener, SocketAddr)>,
}

async fn bind(address: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), StartupError> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| StartupError::Bind { address, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| StartupError::Bind { address, source })?;
    Ok((listener, bound))
}

impl App {
    pub async fn build(config: Config) -> Result<App, StartupError> {
        let address = config.bind;
        let metrics_address = config.metrics_bind;
        let state = AppState::build(config).await?;
        let (listener, address) = bind(address).await?;
        let metrics_listener = match metrics_address {
            Some(address) => Some(bind(address).await?),
            None => None,
        };
        Ok(App {
            state,
            listener,
            address,
            metrics_listener,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Where `/metrics` is served when `CATALOG_METRICS_BIND` is set.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().map(|(_, address)| *address)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish for the shutdown
    /// grace period and closes the connections still open after it.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let config = &self.state.config;
        let limits = http::server::ConnectionLimits {
            header_read_timeout: config.header_read_timeout(),
            shutdown_grace: config.shutdown_grace(),
        };
        let connections = Arc::new(tokio::sync::Semaphore::new(config.max_connections()));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let signal = tokio::spawn(async move {
            shutdown.await;
            let _ = stop.send(true);
        });
        let metrics = self.metrics_listener.map(|(listener, _)| {
            http::server::serve(
                listener,
                http::metrics_router(self.state.clone()),
                limits,
                Arc::clone(&connections),
                stopped.clone(),
            )
        });
        let api = http::server::serve(
            self.listener,
            http::router(self.state),
            limits,
            connections,
            stopped,
        );
        match metrics {
            Some(metrics) => {
                tokio::join!(api, metrics);
            }
            None => api.await,
        }
        signal.abort();
        Ok(())
    }
}
