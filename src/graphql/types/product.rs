//! The `Product` GraphQL type: fields over the row, its category through the DataLoader, and
//! the cache tags each resolved product records.

use async_graphql::{Context, ID, Object};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::Category;
use crate::catalog::products::ProductWrite;
use crate::catalog::{EntityId, Price};
use crate::entities::product;

pub struct Product(pub product::Model);

/// The product as a write left it (as it was, for a deletion).
impl From<ProductWrite> for Product {
    fn from(written: ProductWrite) -> Self {
        Product(written.product)
    }
}

#[Object(cache_control(max_age = 600))]
impl Product {
    async fn id(&self) -> ID {
        EntityId(self.0.id).to_graphql()
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    /// Price with two decimal places, as a string-encoded decimal (exact; no float rounding).
    async fn price(&self) -> Decimal {
        Price::from_cents(self.0.price_cents).to_decimal()
    }

    /// The product's category, loaded for all products of a request in one statement.
    async fn category(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Category>> {
        Category::load(ctx, self.0.category_id).await
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}
