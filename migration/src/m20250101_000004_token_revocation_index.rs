//! An index on `api_token.revoked_at`: every server polls for tokens revoked since its last
//! poll (once a second by default), and the index keeps that a range read however many
//! tokens were ever issued.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ApiToken {
    Table,
    RevokedAt,
}

const INDEX: &str = "idx_api_token_revoked_at";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(ApiToken::Table)
                    .col(ApiToken::RevokedAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name(INDEX).table(ApiToken::Table).to_owned())
            .await
    }
}
