//! API tokens: only the SHA-256 of a token is stored, so a database leak reveals no token.

use sea_orm_migration::prelude::*;

use crate::shapes::{table_with_id, timestamp_column, unique_string_column};

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
        manager
            .create_table(
                table_with_id(ApiToken::Table, ApiToken::Id)
                    .col(ColumnDef::new(ApiToken::Name).string_len(100).not_null())
                    .col(unique_string_column(ApiToken::TokenHash, 64))
                    .col(timestamp_column(ApiToken::CreatedAt))
                    .col(
                        ColumnDef::new(ApiToken::RevokedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ApiToken::Table).to_owned())
            .await
    }
}
