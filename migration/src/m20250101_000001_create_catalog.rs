//! Categories and products. Prices are stored as integer cents: exact on every backend
//! (SQLite has no decimal type), cheap to compare in keyset pagination, and bounded by the
//! domain rule of 10 digits with 2 decimal places. Every index ends in `id` so that keyset
//! pagination (`(key, id) > (?, ?)`) is an index range scan for each ordering.

use sea_orm_migration::prelude::*;

use crate::shapes::{
    create_index, create_table_with_id, table_with_id, timestamp_column, unique_string_column,
};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Category {
    Table,
    Id,
    Name,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Product {
    Table,
    Id,
    Name,
    PriceCents,
    CategoryId,
    CreatedAt,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Categories first: a product's foreign key names its category.
        create_category_table(manager).await?;
        create_product_table(manager).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Product::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Category::Table).to_owned())
            .await
    }
}

/// Categories: a unique name and the times of creation and last change.
async fn create_category_table(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    let columns = [
        unique_string_column(Category::Name, 100),
        timestamp_column(Category::CreatedAt),
        timestamp_column(Category::UpdatedAt),
    ];
    create_table_with_id(manager, Category::Table, Category::Id, columns).await
}

/// Products, each in one category (which cannot be deleted while it has products), with an
/// index for each keyset ordering.
async fn create_product_table(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    manager
        .create_table(
            table_with_id(Product::Table, Product::Id)
                .col(ColumnDef::new(Product::Name).string_len(200).not_null())
                .col(
                    ColumnDef::new(Product::PriceCents)
                        .big_integer()
                        .not_null()
                        .check(Expr::col(Product::PriceCents).between(0, 9_999_999_999_i64)),
                )
                .col(ColumnDef::new(Product::CategoryId).integer().not_null())
                .col(timestamp_column(Product::CreatedAt))
                .col(timestamp_column(Product::UpdatedAt))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_product_category")
                        .from(Product::Table, Product::CategoryId)
                        .to(Category::Table, Category::Id)
                        .on_delete(ForeignKeyAction::Restrict),
                )
                .to_owned(),
        )
        .await?;
    let indexes = [
        (
            "idx_product_category_price",
            vec![Product::CategoryId, Product::PriceCents, Product::Id],
        ),
        (
            "idx_product_category_id",
            vec![Product::CategoryId, Product::Id],
        ),
        (
            "idx_product_created_at",
            vec![Product::CreatedAt, Product::Id],
        ),
        (
            "idx_product_price_id",
            vec![Product::PriceCents, Product::Id],
        ),
    ];
    for (name, columns) in indexes {
        create_index(manager, name, Product::Table, columns).await?;
    }
    Ok(())
}
