//! The state every request handler shares: database, replicas, cache, executor,
//! authenticator, metrics. It lives with the HTTP layer that hands it to handlers; `app`
//! builds it from the `Config` (`AppState::build`), above this layer, so imports run one way.

use std::sync::Arc;

use sea_orm::DatabaseConnection;

use crate::auth::Authenticator;
use crate::auth::revocations::RevocationWatcher;
use crate::cache::ResponseCache;
use crate::config::Config;
use crate::db::breaker::DatabaseBreaker;
use crate::db::replicas::Replicas;
use crate::edge::{EdgePurger, SurrogateKeys};
use crate::graphql::executor::Executor;
use crate::rate_limit::RateLimiter;
use crate::telemetry::Metrics;

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
