//! Trigram indexes so that `search` (a case-insensitive substring match) is not a sequential
//! scan on PostgreSQL. SQLite has no equivalent; there the search scans, which is fine at the
//! sizes an embedded database serves.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        db.execute_unprepared("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            .await?;
        db.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS idx_product_name_trgm ON product USING gin (lower(name) gin_trgm_ops)",
        )
        .await?;
        db.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS idx_category_name_trgm ON category USING gin (lower(name) gin_trgm_ops)",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        db.execute_unprepared("DROP INDEX IF EXISTS idx_product_name_trgm")
            .await?;
        db.execute_unprepared("DROP INDEX IF EXISTS idx_category_name_trgm")
            .await?;
        Ok(())
    }
}
