//! Mutation fields, one module per entity, merged into the `Mutation` root.
//!
//! Each mutation validates all input first, writes in one transaction, and only after the
//! commit announces its `Changes` to the response cache, before the response is sent: a
//! client that sees the mutation's answer can no longer read what it made stale. With read
//! replicas the announcement carries the primary's WAL position after the commit, so no read
//! that follows it is served by a replica that has not replayed the commit. Every mutation
//! needs a bearer token: `RequireToken` guards each mutation object as a whole, so a new field
//! cannot be added without it.

mod category;
mod product;

use async_graphql::Context;
use sea_orm::{DatabaseTransaction, SqliteTransactionMode, TransactionOptions, TransactionTrait};

pub use category::CategoryMutation;
pub use product::ProductMutation;

use crate::cache::ResponseCache;
use crate::cache::tags::{Announce, Changes};
use crate::db::replicas::Replicas;
use crate::error::ApiError;
use crate::graphql::context::RequestContext;

/// Most items one bulk mutation may carry.
pub const MAX_BULK_ITEMS: usize = 1_000;

/// Starts a write transaction. On SQLite it takes the write lock at `BEGIN` (IMMEDIATE):
/// a deferred transaction that reads and then writes cannot wait for a concurrent writer
/// and fails at once with "database is locked"; an immediate one waits its turn (busy
/// timeout). PostgreSQL ignores the mode.
pub(crate) async fn begin(ctx: &Context<'_>) -> Result<DatabaseTransaction, ApiError> {
    let options = TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..TransactionOptions::default()
    };
    ctx.db()?
        .begin_with_options(options)
        .await
        .map_err(|error| ctx.database_error(&error))
}

/// Every mutation's shape: `statements` run in one write transaction, and after the commit the
/// cache retires what the written result announces it changed.
pub(crate) async fn write<T: Announce>(
    ctx: &Context<'_>,
    statements: impl AsyncFnOnce(&DatabaseTransaction) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let transaction = begin(ctx).await?;
    let written = statements(&transaction).await?;
    let mut changes = Changes::default();
    written.announce(&mut changes);
    commit(ctx, transaction, changes).await?;
    Ok(written)
}

/// Commits, then invalidates what the mutation changed. With replicas, one more statement
/// reads the primary's WAL position (at or past the commit) for the invalidation to carry;
/// without replicas there is none.
pub(crate) async fn commit(
    ctx: &Context<'_>,
    transaction: DatabaseTransaction,
    changes: Changes,
) -> Result<(), ApiError> {
    transaction
        .commit()
        .await
        .map_err(|error| ctx.database_error(&error))?;
    let replicas = ctx.data_opt::<Replicas>().filter(|_| !changes.is_empty());
    let position = match replicas {
        Some(replicas) => replicas.commit_position().await.map(Some),
        None => Ok(None),
    };
    if let Some(cache) = ctx.data_opt::<ResponseCache>() {
        cache
            .invalidate(&changes, position.as_ref().ok().copied().flatten())
            .await;
    }
    // Committed, but without its position a replica might hide it from a later read: the
    // primary just stopped answering, so the client is told it is unavailable.
    position.map_err(|error| ctx.database_error(&error))?;
    Ok(())
}

/// The items of a bulk mutation, each validated by `parse`: 1 to `MAX_BULK_ITEMS` of them, and
/// all valid, before anything is written.
pub(crate) fn parse_bulk<I, T>(
    items: Vec<I>,
    parse: impl Fn(I) -> Result<T, ApiError>,
) -> Result<Vec<T>, ApiError> {
    check_bulk_size(items.len())?;
    items.into_iter().map(parse).collect()
}

fn check_bulk_size(len: usize) -> Result<(), ApiError> {
    if len == 0 {
        return Err(ApiError::bad_input(
            "a bulk mutation needs at least one item",
        ));
    }
    if len > MAX_BULK_ITEMS {
        return Err(ApiError::bad_input(format!(
            "a bulk mutation takes at most {MAX_BULK_ITEMS} items (got {len})"
        )));
    }
    Ok(())
}
