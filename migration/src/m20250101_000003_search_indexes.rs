//! Trigram indexes so that `search` (a case-insensitive substring match) is not a sequential
//! scan on PostgreSQL. SQLite has no equivalent; there the search scans, which is fine at the
//! sizes an embedded database serves.

use sea_orm_migration::prelude::*;

use crate::shapes::on_postgres_only;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        on_postgres_only(
            manager,
            &[
                "CREATE EXTENSION IF NOT EXISTS pg_trgm",
                "CREATE INDEX IF NOT EXISTS idx_product_name_trgm ON product USING gin (lower(name) gin_trgm_ops)",
                "CREATE INDEX IF NOT EXISTS idx_category_name_trgm ON category USING gin (lower(name) gin_trgm_ops)",
            ],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        on_postgres_only(
            manager,
            &[
                "DROP INDEX IF EXISTS idx_product_name_trgm",
                "DROP INDEX IF EXISTS idx_category_name_trgm",
            ],
        )
        .await
    }
}
