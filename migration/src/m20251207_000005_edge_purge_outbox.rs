//! The edge purge outbox: the tags a committed mutation must purge at the CDN, written in the
//! mutation's own transaction, so a crash or an edge outage between the commit and the purge
//! leaves a row that some instance retries until the edge has acknowledged it.

use sea_orm_migration::prelude::*;

use crate::shapes::{create_index, create_table_with_id, timestamp_column};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum EdgePurge {
    Table,
    Id,
    Tags,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let columns = [
            ColumnDef::new(EdgePurge::Tags).text().not_null().to_owned(),
            timestamp_column(EdgePurge::CreatedAt),
        ];
        create_table_with_id(manager, EdgePurge::Table, EdgePurge::Id, columns).await?;
        create_index(
            manager,
            "idx_edge_purge_created_at",
            EdgePurge::Table,
            [EdgePurge::CreatedAt],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(EdgePurge::Table).to_owned())
            .await
    }
}
