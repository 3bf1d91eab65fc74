//! API tokens: only the SHA-256 of a token is stored, so a database leak reveals no token.

use sea_orm_migration::prelude::*;

use crate::shapes::{create_table_with_id, timestamp_column, unique_string_column};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ApiToken {
    Table,
    Id,
    Name,
    TokenHash,
    CreatedAt,
    RevokedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let columns = [
            ColumnDef::new(ApiToken::Name)
                .string_len(100)
                .not_null()
                .to_owned(),
            unique_string_column(ApiToken::TokenHash, 64),
            timestamp_column(ApiToken::CreatedAt),
            ColumnDef::new(ApiToken::RevokedAt)
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
        ];
        create_table_with_id(manager, ApiToken::Table, ApiToken::Id, columns).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ApiToken::Table).to_owned())
            .await
    }
}
