//! The deterministic data set, identical on every machine and backend, so that runs compare.
//!
//! Category i (1..=C) is `Category NN`; product j (1..=N) is `Product NNNNNN`, priced
//! `((j * 7919) mod 99900 + 100) / 100`, in category `(j mod C) + 1`, created at
//! 2025-01-01T00:00:00Z plus j minutes. Rows carry their ids and conflicting rows are
//! skipped, so running the seed twice changes nothing.

use chrono::{DateTime, Duration, TimeZone, Utc};
use sea_orm::sea_query::{InsertStatement, OnConflict, Query};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, Iterable, TransactionTrait,
};

use crate::catalog::search_key::search_key;
use crate::entities::{category, product};

#[derive(Debug, Clone, Copy)]
pub struct SeedPlan {
    pub categories: u32,
    pub products: u32,
}

impl SeedPlan {
    pub const DEMO: SeedPlan = SeedPlan {
        categories: 50,
        products: 10_000,
    };
}

/// Rows per INSERT: at 7 parameters a row, 4,000 rows stay under SQLite's limit (32,766) and
/// PostgreSQL's (65,535).
const ROWS_PER_STATEMENT: u32 = 4_000;

/// An INSERT of whole rows of `E` (every column, in the entity's order) that skips rows whose
/// id is already there: what makes the seed idempotent.
fn insert_skipping_existing<E: EntityTrait + Default>() -> InsertStatement {
    Query::insert()
        .into_table(E::default())
        .columns(E::Column::iter())
        .on_conflict(OnConflict::new().do_nothing().to_owned())
        .to_owned()
}

fn epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

pub fn product_price_cents(j: u32) -> i64 {
    (i64::from(j) * 7919) % 99_900 + 100
}

pub fn product_category_id(j: u32, categories: u32) -> i32 {
    (j % categories) as i32 + 1
}

fn conflict_error(error: sea_orm::sea_query::error::Error) -> DbErr {
    DbErr::Custom(format!("building the seed statement: {error}"))
}

pub async fn seed(db: &DatabaseConnection, plan: SeedPlan) -> Result<(), DbErr> {
    if plan.categories == 0 {
        return Err(DbErr::Custom("the seed needs at least one category".into()));
    }
    let backend = db.get_database_backend();
    let txn = db.begin().await?;
    let epoch = epoch();

    let mut categories = insert_skipping_existing::<category::Entity>();
    for i in 1..=plan.categories {
        categories
            .values([
                (i as i32).into(),
                format!("Category {i:02}").into(),
                search_key(&format!("Category {i:02}")).into(),
                epoch.into(),
                epoch.into(),
            ])
            .map_err(conflict_error)?;
    }
    txn.execute(&categories).await?;

    let mut start = 1;
    while start <= plan.products {
        let end = (start + ROWS_PER_STATEMENT - 1).min(plan.products);
        let mut products = insert_skipping_existing::<product::Entity>();
        for j in start..=end {
            let created_at = epoch + Duration::minutes(i64::from(j));
            products
                .values([
                    (j as i32).into(),
                    format!("Product {j:06}").into(),
                    search_key(&format!("Product {j:06}")).into(),
                    product_price_cents(j).into(),
                    product_category_id(j, plan.categories).into(),
                    created_at.into(),
                    created_at.into(),
                ])
                .map_err(conflict_error)?;
        }
        txn.execute(&products).await?;
        start = end + 1;
    }

    if backend == DbBackend::Postgres {
        // Explicit ids do not advance PostgreSQL sequences; without this the next insert collides.
        for table in ["category", "product"] {
            txn.execute_unprepared(&format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), GREATEST((SELECT MAX(id) FROM {table}), 1))"
            ))
            .await?;
        }
    }
    txn.commit().await?;
    // Fresh statistics, so the planner picks the keyset indexes from the first query on.
    db.execute_unprepared(if backend == DbBackend::Postgres {
        "ANALYZE product, category"
    } else {
        "ANALYZE"
    })
    .await?;
    Ok(())
}

/// True when the catalog holds no category yet (the first start of a new database).
pub async fn is_empty(db: &DatabaseConnection) -> Result<bool, DbErr> {
    use sea_orm::{EntityTrait, PaginatorTrait};
    Ok(category::Entity::find().count(db).await? == 0)
}
