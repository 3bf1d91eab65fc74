//! The purge outbox, in the catalog's own database: a mutation writes the tags it must purge
//! in its transaction, so they are durable exactly when its data is; the row is deleted once
//! the edge acknowledged the purge (and its second purge, see `purger`). Rows that stay are
//! retried by every instance, so neither a crash nor an edge outage leaves the edge stale
//! without end; purging twice is harmless.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Set,
};

use crate::catalog::clock::now;
use crate::entities::edge_purge;

/// Records `tags` (edge names) to purge; run inside the mutation's transaction.
pub async fn record<C: ConnectionTrait>(db: &C, tags: &[String]) -> Result<i32, DbErr> {
    let row = edge_purge::ActiveModel {
        tags: Set(tags.join(" ")),
        created_at: Set(now()),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok(row.id)
}

/// The oldest rows written before `before`, at most `limit`: purges whose writer did not
/// see them through (it failed, timed out or crashed).
pub async fn overdue<C: ConnectionTrait>(
    db: &C,
    before: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<edge_purge::Model>, DbErr> {
    edge_purge::Entity::find()
        .filter(edge_purge::Column::CreatedAt.lt(before))
        .order_by_asc(edge_purge::Column::Id)
        .limit(limit)
        .all(db)
        .await
}

/// Deletes the rows whose purges the edge acknowledged.
pub async fn remove<C: ConnectionTrait>(db: &C, ids: &[i32]) -> Result<(), DbErr> {
    for chunk in ids.chunks(500) {
        edge_purge::Entity::delete_many()
            .filter(edge_purge::Column::Id.is_in(chunk.iter().copied()))
            .exec(db)
            .await?;
    }
    Ok(())
}

/// How many purges wait in the outbox, and when the oldest was written.
pub async fn backlog<C: ConnectionTrait>(db: &C) -> Result<(u64, Option<DateTime<Utc>>), DbErr> {
    let count = edge_purge::Entity::find().count(db).await?;
    if count == 0 {
        return Ok((0, None));
    }
    let oldest = edge_purge::Entity::find()
        .order_by_asc(edge_purge::Column::CreatedAt)
        .one(db)
        .await?
        .map(|row| row.created_at);
    Ok((count, oldest))
}

/// The edge names a row holds.
pub fn tags_of(row: &edge_purge::Model) -> impl Iterator<Item = &str> {
    row.tags.split(' ').filter(|tag| !tag.is_empty())
}
