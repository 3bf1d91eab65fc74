//! Mutation fields, one module per entity, merged into the `Mutation` root.
//!
//! Each mutation validates all input first, writes in one transaction, and only after the
//! commit announces its `Changes` to the response cache, before the response is sent: a
//! client that sees the mutation's answer can no longer read what it made stale. With read
//! replicas the announcement carries the primary's WAL position after the commit, so no read
//! that follows it is served by a replica that has not replayed the commit. Every field is
//! declared with `mutation_fields!`, which writes these steps once for all of them and puts
//! the `RequireToken` guard on the object as a whole: a new field cannot skip a step.

use async_graphql::{Context, ID};
use sea_orm::{DatabaseTransaction, SqliteTransactionMode, TransactionOptions, TransactionTrait};

use crate::cache::ResponseCache;
use crate::cache::tags::{Announce, Changes};
use crate::catalog::EntityId;
use crate::catalog::products::ProductWrite;
use crate::db::replicas::Replicas;
use crate::edge::{EdgePurger, PurgeState};
use crate::entities::category::Model as CategoryRow;
use crate::error::ApiError;
use crate::graphql::context::RequestContext;
use crate::graphql::types::inputs::Argument;
use crate::graphql::types::{Category, Product};

/// Declares a mutation object from a table of its fields: each names its arguments, its
/// answer and the catalog write behind it. Every field has the same body: parse each argument
/// (`Argument`), run the write in one transaction (`write`: commit, then invalidation), and
/// make the answer from what was written (`Answer`).
macro_rules! mutation_fields {
    (
        $object:ident {
            $(
                $(#[$field_attribute:meta])*
                $field:ident($($argument:ident: $argument_type:ty),+) -> $answer:ty = $catalog_write:path;
            )+
        }
    ) => {
        #[derive(Default)]
        pub struct $object;

        #[async_graphql::Object(guard = "crate::auth::RequireToken")]
        impl $object {
            $(
                $(#[$field_attribute])*
                async fn $field(
                    &self,
                    ctx: &async_graphql::Context<'_>,
                    $($argument: $argument_type),+
                ) -> async_graphql::Result<$answer> {
                    $(let $argument = $crate::graphql::types::inputs::Argument::parse($argument)?;)+
                    let written = $crate::graphql::mutation::write(ctx, async move |transaction| {
                        $catalog_write(transaction, $($argument),+).await
                    })
                    .await?;
                    Ok($crate::graphql::mutation::Answer::answer(written))
                }
            )+
        }
    };
}

mod category;
mod product;

pub use category::CategoryMutation;
pub use product::ProductMutation;

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
    // The edge's purge is written in the same transaction: durable exactly when the data is.
    let purge = match ctx.data_opt::<EdgePurger>().filter(|_| !changes.is_empty()) {
        Some(purger) => {
            let recorded = purger
                .record(&transaction, &changes.tags())
                .await
                .map_err(|error| ctx.database_error(&error))?;
            Some((purger, recorded))
        }
        None => None,
    };
    let invalidated = commit(ctx, transaction, changes).await?;
    if let Some((purger, recorded)) = purge {
        report_purge(ctx, purger.purge(recorded, invalidated).await);
    }
    Ok(written)
}

/// The response header the executor turns into `extensions.edgePurge`.
pub const EDGE_PURGE_HEADER: &str = "x-catalog-edge-purge";

/// Tells the client whether the edge acknowledged the purges of its mutations: `PENDING` if
/// any is still pending (several mutation fields in one operation), else `ACKNOWLEDGED`.
fn report_purge(ctx: &Context<'_>, state: PurgeState) {
    if state == PurgeState::Pending || !ctx.http_header_contains(EDGE_PURGE_HEADER) {
        ctx.insert_http_header(EDGE_PURGE_HEADER, state.as_str());
    }
}

/// Commits, then invalidates what the mutation changed. With replicas, one more statement
/// reads the primary's WAL position (at or past the commit) for the invalidation to carry;
/// without replicas there is none. Returns false when the cache deferred the invalidation.
pub(crate) async fn commit(
    ctx: &Context<'_>,
    transaction: DatabaseTransaction,
    changes: Changes,
) -> Result<bool, ApiError> {
    transaction
        .commit()
        .await
        .map_err(|error| ctx.database_error(&error))?;
    let replicas = ctx.data_opt::<Replicas>().filter(|_| !changes.is_empty());
    let position = match replicas {
        Some(replicas) => replicas.commit_position().await.map(Some),
        None => Ok(None),
    };
    let invalidated = match ctx.data_opt::<ResponseCache>() {
        Some(cache) => {
            cache
                .invalidate(
                    &changes,
                    position.as_ref().ok().copied().flatten(),
                    ctx.item.node.name.node.as_str(),
                )
                .await
        }
        None => true,
    };
    // Committed, but without its position a replica might hide it from a later read: the
    // primary just stopped answering, so the client is told it is unavailable.
    position.map_err(|error| ctx.database_error(&error))?;
    Ok(invalidated)
}

/// A list argument is a bulk: 1 to `MAX_BULK_ITEMS` items, each parsed, all valid before
/// anything is written.
impl<T: Argument> Argument for Vec<T> {
    type Parsed = Vec<T::Parsed>;
    fn parse(self) -> Result<Self::Parsed, ApiError> {
        check_bulk_size(self.len())?;
        self.into_iter().map(T::parse).collect()
    }
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

/// What a mutation field answers, made from what its write returned.
pub(crate) trait Answer<Written> {
    fn answer(written: Written) -> Self;
}

impl Answer<CategoryRow> for Category {
    fn answer(written: CategoryRow) -> Self {
        Category(written)
    }
}

/// A deletion answers with the id of the row it removed.
impl Answer<CategoryRow> for ID {
    fn answer(written: CategoryRow) -> Self {
        EntityId(written.id).to_graphql()
    }
}

/// The product as the write left it (as it was, for a deletion).
impl Answer<ProductWrite> for Product {
    fn answer(written: ProductWrite) -> Self {
        Product(written.product)
    }
}

impl Answer<ProductWrite> for ID {
    fn answer(written: ProductWrite) -> Self {
        EntityId(written.product.id).to_graphql()
    }
}

/// A bulk write answers item by item, in the order of its input.
impl<Written, T: Answer<Written>> Answer<Vec<Written>> for Vec<T> {
    fn answer(written: Vec<Written>) -> Self {
        written.into_iter().map(T::answer).collect()
    }
}
