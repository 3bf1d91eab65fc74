//! Search keys beside names (`name_search`): the name Unicode-normalized and case-folded, which
//! the server writes with every name and fills in for older rows at start-up, so that search
//! folds case in every language on SQLite too (its `lower()` folds ASCII only). On PostgreSQL the
//! trigram indexes move to the keys.

use sea_orm_migration::prelude::*;

use crate::shapes::on_postgres_only;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Product {
    Table,
    NameSearch,
}

#[derive(DeriveIden)]
enum Category {
    Table,
    NameSearch,
}

fn key_column(name: impl IntoIden) -> ColumnDef {
    ColumnDef::new(name)
        .text()
        .not_null()
        .default("")
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Product::Table)
                    .add_column(key_column(Product::NameSearch))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Category::Table)
                    .add_column(key_column(Category::NameSearch))
                    .to_owned(),
            )
            .await?;
        on_postgres_only(
            manager,
            &[
                "CREATE INDEX IF NOT EXISTS idx_product_name_search_trgm ON product USING gin (name_search gin_trgm_ops)",
                "CREATE INDEX IF NOT EXISTS idx_category_name_search_trgm ON category USING gin (name_search gin_trgm_ops)",
            ],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        on_postgres_only(
            manager,
            &[
                "DROP INDEX IF EXISTS idx_product_name_search_trgm",
                "DROP INDEX IF EXISTS idx_category_name_search_trgm",
            ],
        )
        .await?;
        for (table, column) in [
            (Product::Table.into_iden(), Product::NameSearch.into_iden()),
            (
                Category::Table.into_iden(),
                Category::NameSearch.into_iden(),
            ),
        ] {
            manager
                .alter_table(Table::alter().table(table).drop_column(column).to_owned())
                .await?;
        }
        Ok(())
    }
}
