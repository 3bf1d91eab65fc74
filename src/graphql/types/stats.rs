//! The dashboard's GraphQL types: totals and per-category counts, private to token holders
//! (their cache-control hint keys them to the caller's token).

use async_graphql::{ID, SimpleObject};
use rust_decimal::Decimal;

use crate::catalog::EntityId;
use crate::catalog::stats::DashboardTotals;

#[derive(SimpleObject)]
#[graphql(cache_control(max_age = 1800, private))]
pub struct CategoryProductCount {
    pub category_id: ID,
    pub name: String,
    pub product_count: i32,
}

/// Catalog totals for the dashboard. Private: answered only with a token, cached per token.
#[derive(SimpleObject)]
#[graphql(cache_control(max_age = 1800, private))]
pub struct DashboardStats {
    pub total_products: i32,
    pub categories_count: i32,
    /// Mean price over all products, rounded to 2 places; null when there are none.
    pub avg_price: Option<Decimal>,
    pub products_by_category: Vec<CategoryProductCount>,
}

impl From<DashboardTotals> for DashboardStats {
    fn from(totals: DashboardTotals) -> Self {
        DashboardStats {
            total_products: totals.total_products.min(i32::MAX as u64) as i32,
            categories_count: totals.by_category.len().min(i32::MAX as usize) as i32,
            avg_price: totals.average_price,
            products_by_category: totals
                .by_category
                .into_iter()
                .map(|row| CategoryProductCount {
                    category_id: EntityId(row.category_id).to_graphql(),
                    name: row.name,
                    product_count: row.product_count.min(i32::MAX as u64) as i32,
                })
                .collect(),
        }
    }
}
