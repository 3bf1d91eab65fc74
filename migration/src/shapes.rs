//! Column and index shapes the migrations repeat, written once. A migration is frozen once
//! shipped, so these are too: each must keep producing the statements it produces today (a new
//! shape gets a new function), or a fresh database would differ from a migrated one.

use sea_orm_migration::prelude::*;

/// `CREATE TABLE IF NOT EXISTS table (id ...)`: every table starts with its integer key; the
/// caller adds the other columns.
pub fn table_with_id(table: impl IntoTableRef, id: impl IntoIden) -> TableCreateStatement {
    Table::create()
        .table(table)
        .if_not_exists()
        .col(id_column(id))
        .to_owned()
}

/// Creates a table of an integer key and `columns`, unless it exists.
pub async fn create_table_with_id(
    manager: &SchemaManager<'_>,
    table: impl IntoTableRef,
    id: impl IntoIden,
    columns: impl IntoIterator<Item = ColumnDef>,
) -> Result<(), DbErr> {
    let mut statement = table_with_id(table, id);
    for mut column in columns {
        statement.col(&mut column);
    }
    manager.create_table(statement).await
}

/// `id INTEGER NOT NULL AUTO_INCREMENT PRIMARY KEY`.
pub fn id_column(name: impl IntoIden) -> ColumnDef {
    ColumnDef::new(name)
        .integer()
        .not_null()
        .auto_increment()
        .primary_key()
        .to_owned()
}

/// A time with its zone, required.
pub fn timestamp_column(name: impl IntoIden) -> ColumnDef {
    ColumnDef::new(name)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

/// A required string of at most `length` characters, unique in its table.
pub fn unique_string_column(name: impl IntoIden, length: u32) -> ColumnDef {
    ColumnDef::new(name)
        .string_len(length)
        .not_null()
        .unique_key()
        .to_owned()
}

/// Creates the index `name` on `table` over `columns`, in that order.
pub async fn create_index<C>(
    manager: &SchemaManager<'_>,
    name: &str,
    table: impl IntoIden,
    columns: impl IntoIterator<Item = C>,
) -> Result<(), DbErr>
where
    C: IntoIndexColumn,
{
    let mut index = Index::create();
    index.name(name).table(table);
    for column in columns {
        index.col(column);
    }
    manager.create_index(index.to_owned()).await
}

/// Runs `statements` in order on PostgreSQL; other backends have no use for them.
pub async fn on_postgres_only(
    manager: &SchemaManager<'_>,
    statements: &[&str],
) -> Result<(), DbErr> {
    use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

    if manager.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    let db = manager.get_connection();
    for statement in statements {
        db.execute_unprepared(statement).await?;
    }
    Ok(())
}
