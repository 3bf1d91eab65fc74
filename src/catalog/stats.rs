//! Dashboard aggregates: two statements, however many products and categories there are.

use rust_decimal::Decimal;
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Func, Query};
use sea_orm::{ConnectionTrait, DbErr, FromQueryResult};

use crate::entities::{category, product};

#[derive(Debug, Clone)]
pub struct CategoryTotal {
    pub category_id: i32,
    pub name: String,
    pub product_count: u64,
}

#[derive(Debug, Clone)]
pub struct DashboardTotals {
    pub total_products: u64,
    pub average_price: Option<Decimal>,
    pub by_category: Vec<CategoryTotal>,
}

#[derive(FromQueryResult)]
struct ProductTotals {
    product_count: i64,
    price_sum: i64,
}

#[derive(FromQueryResult)]
struct CategoryRow {
    id: i32,
    name: String,
    product_count: i64,
}

pub async fn dashboard<C: ConnectionTrait>(db: &C) -> Result<DashboardTotals, DbErr> {
    let backend = db.get_database_backend();
    // SUM over BIGINT is NUMERIC on PostgreSQL; the cast keeps one integer type on every backend.
    let totals = Query::select()
        .expr_as(
            Func::count(Expr::col(product::Column::Id)),
            Alias::new("product_count"),
        )
        .expr_as(
            Expr::cust("CAST(COALESCE(SUM(price_cents), 0) AS BIGINT)"),
            Alias::new("price_sum"),
        )
        .from(product::Entity)
        .to_owned();
    let totals = ProductTotals::find_by_statement(backend.build(&totals))
        .one(db)
        .await?
        .unwrap_or(ProductTotals {
            product_count: 0,
            price_sum: 0,
        });

    let per_category = Query::select()
        .column((category::Entity, category::Column::Id))
        .column((category::Entity, category::Column::Name))
        .expr_as(
            Func::count(Expr::col((product::Entity, product::Column::Id))),
            Alias::new("product_count"),
        )
        .from(category::Entity)
        .left_join(
            product::Entity,
            Expr::col((product::Entity, product::Column::CategoryId))
                .equals((category::Entity, category::Column::Id)),
        )
        .group_by_col((category::Entity, category::Column::Id))
        .group_by_col((category::Entity, category::Column::Name))
        .order_by(
            (category::Entity, category::Column::Id),
            sea_orm::Order::Asc,
        )
        .to_owned();
    let rows = CategoryRow::find_by_statement(backend.build(&per_category))
        .all(db)
        .await?;

    let total_products = totals.product_count.clamp(0, i64::MAX) as u64;
    let average_price = (total_products > 0).then(|| {
        (Decimal::from(totals.price_sum) / Decimal::from(total_products) / Decimal::ONE_HUNDRED)
            .round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
    });
    Ok(DashboardTotals {
        total_products,
        average_price,
        by_category: rows
            .into_iter()
            .map(|row| CategoryTotal {
                category_id: row.id,
                name: row.name,
                product_count: row.product_count.clamp(0, i64::MAX) as u64,
            })
            .collect(),
    })
}
