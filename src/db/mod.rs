//! The database: connecting (SQLite or PostgreSQL), counting statements, migrating, seeding.
//!
//! Every statement sea-orm runs passes the metric callback installed here, which feeds
//! `catalog_db_statements_total`; tests read that counter to prove DataLoader batching.

pub mod breaker;
pub mod replicas;
pub mod seed;

use std::sync::Arc;
use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};

use crate::config::{Config, redact};
use crate::telemetry::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("cannot connect to the database at {url}: {source}")]
    Connect { url: String, source: DbErr },
    #[error("cannot migrate the database: {0}")]
    Migrate(DbErr),
}

pub async fn connect(
    config: &Config,
    metrics: Option<Arc<Metrics>>,
) -> Result<DatabaseConnection, DatabaseError> {
    connect_to(
        config,
        &config.database_url,
        config.db_pool_size,
        metrics,
        false,
    )
    .await
}

/// A pool to `url` (the primary or a replica) with the configured timeouts. A `lazy` pool
/// connects on first use (a replica that is down at start delays nothing).
pub async fn connect_to(
    config: &Config,
    url: &str,
    pool_size: u32,
    metrics: Option<Arc<Metrics>>,
    lazy: bool,
) -> Result<DatabaseConnection, DatabaseError> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .connect_lazy(lazy)
        .max_connections(pool_size)
        .min_connections(1)
        // Also bounds opening a connection (sqlx counts it in the acquire): a database that
        // does not answer within it counts as unreachable, and the breaker takes over.
        .acquire_timeout(config.db_acquire_timeout())
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(|options| {
            options
                .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
        });
    let mut db = Database::connect(options)
        .await
        .map_err(|source| DatabaseError::Connect {
            url: redact(url),
            source,
        })?;
    if let Some(metrics) = metrics {
        db.set_metric_callback(move |_info| {
            metrics.db_statements.inc();
        });
    }
    Ok(db)
}

pub async fn migrate(db: &DatabaseConnection) -> Result<(), DatabaseError> {
    Migrator::up(db, None).await.map_err(DatabaseError::Migrate)
}
