//! Per-request values every resolver reaches through the GraphQL context. The database is
//! reached only through `db()` and `loaders()`, which fail at once while the database breaker
//! is open, and its errors are mapped by `database_error`, which opens the breaker. A query
//! routed to a replica has it as `db()`: its errors mark the read failed (the executor runs
//! the query again on the primary) and take an unreachable replica out of rotation instead.

use std::hash::Hash;

use async_graphql::Context;
use async_graphql::dataloader::{CacheFactory, DataLoader, Loader};
use sea_orm::{DatabaseConnection, DbErr};

use super::loaders::{LoadError, Loaders};
use crate::cache::tags::{Tag, TagRecorder};
use crate::db::breaker::DatabaseBreaker;
use crate::db::replicas::Replicas;
use crate::error::ApiError;

pub trait RequestContext {
    fn db(&self) -> Result<&DatabaseConnection, ApiError>;
    fn loaders(&self) -> Result<&Loaders, ApiError>;
    /// The client's view of a database error; an unreachable database opens the breaker.
    fn database_error(&self, error: &DbErr) -> ApiError;
    /// Opens the breaker when `error` says the database is unreachable; returns it unchanged.
    fn observe(&self, error: ApiError) -> ApiError;
    /// Records that the result depends on `tag` (no-op when the request is not cached).
    fn record_tag(&self, tag: Tag);
    fn record_product(&self, product_id: i32, category_id: Option<i32>);
}

impl RequestContext for Context<'_> {
    fn db(&self) -> Result<&DatabaseConnection, ApiError> {
        refuse_while_down(self)?;
        self.data::<DatabaseConnection>()
            .map_err(|_| ApiError::Internal("no database in the schema data".into()))
    }

    fn loaders(&self) -> Result<&Loaders, ApiError> {
        refuse_while_down(self)?;
        self.data::<Loaders>()
            .map_err(|_| ApiError::Internal("no DataLoaders in the request data".into()))
    }

    fn database_error(&self, error: &DbErr) -> ApiError {
        if let Some(read) = self.data_opt::<std::sync::Arc<ReplicaRead>>() {
            read.fail();
        }
        self.observe(ApiError::from_database(error))
    }

    fn observe(&self, error: ApiError) -> ApiError {
        if let ApiError::ServiceUnavailable = &error {
            if let Some(read) = self.data_opt::<std::sync::Arc<ReplicaRead>>() {
                read.fail();
                read.replicas
                    .mark_down(read.index, "a read found the replica unreachable");
            } else if let Some(breaker) = self.data_opt::<DatabaseBreaker>() {
                breaker.trip();
            }
        }
        error
    }

    fn record_tag(&self, tag: Tag) {
        if let Some(recorder) = self.data_opt::<std::sync::Arc<TagRecorder>>() {
            recorder.record(tag);
        }
    }

    fn record_product(&self, product_id: i32, category_id: Option<i32>) {
        if let Some(recorder) = self.data_opt::<std::sync::Arc<TagRecorder>>() {
            recorder.record_product(product_id, category_id);
        }
    }
}

/// One value through one of the request's DataLoaders (`loader` picks which), its database
/// error mapped by `database_error` like every other read's.
pub async fn load_one<K, T, C>(
    ctx: &Context<'_>,
    loader: impl FnOnce(&Loaders) -> &DataLoader<T, C>,
    key: K,
) -> Result<Option<T::Value>, ApiError>
where
    K: Send + Sync + Hash + Eq + Clone + 'static,
    T: Loader<K, Error = LoadError>,
    C: CacheFactory,
{
    loader(ctx.loaders()?)
        .load_one(key)
        .await
        .map_err(|error| ctx.database_error(&error))
}

/// Request data of a query routed to a replica: which one, and whether a read on it failed
/// (the executor then runs the query again on the primary).
pub struct ReplicaRead {
    pub replicas: Replicas,
    pub index: usize,
    failed: std::sync::atomic::AtomicBool,
}

impl ReplicaRead {
    pub fn new(replicas: Replicas, index: usize) -> Self {
        ReplicaRead {
            replicas,
            index,
            failed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn fail(&self) {
        self.failed.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn failed(&self) -> bool {
        self.failed.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn refuse_while_down(ctx: &Context<'_>) -> Result<(), ApiError> {
    match ctx.data_opt::<DatabaseBreaker>() {
        Some(breaker) if breaker.refuses() => Err(ApiError::ServiceUnavailable),
        _ => Ok(()),
    }
}
