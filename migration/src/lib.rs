//! The catalog's schema history, applied in order on SQLite and PostgreSQL alike.
//!
//! This crate imports nothing from the server: a migration is frozen once shipped, so it
//! describes tables with sea-query's schema builder rather than the current entities.

pub use sea_orm_migration::prelude::*;

mod m20250101_000001_create_catalog;
mod m20250101_000002_create_api_token;
mod m20250101_000003_search_indexes;
mod m20250101_000004_token_revocation_index;
mod m20251207_000005_edge_purge_outbox;
mod m20251207_000006_name_search_keys;
mod shapes;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20250101_000001_create_catalog::Migration),
            Box::new(m20250101_000002_create_api_token::Migration),
            Box::new(m20250101_000003_search_indexes::Migration),
            Box::new(m20250101_000004_token_revocation_index::Migration),
            Box::new(m20251207_000005_edge_purge_outbox::Migration),
            Box::new(m20251207_000006_name_search_keys::Migration),
        ]
    }
}
