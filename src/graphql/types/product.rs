//! The `Product` GraphQL type: fields over the row, its category through the DataLoader, and
//! the cache tags each resolved product records.

use async_graphql::{Context, Object};
use rust_decimal::Decimal;

use super::Category;
use super::record::{Identity, Timestamps};
use crate::catalog::Price;
use crate::entities::product;

pub struct Product(pub product::Model);

#[Object(cache_control(max_age = 600))]
impl Product {
    #[graphql(flatten)]
    async fn identity(&self) -> Identity<'_> {
        Identity::new(self.0.id, &self.0.name)
    }

    /// Price with two decimal places, as a string-encoded decimal (exact; no float rounding).
    async fn price(&self) -> Decimal {
        Price::from_cents(self.0.price_cents).to_decimal()
    }

    /// The product's category, loaded for all products of a request in one statement.
    async fn category(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Category>> {
        Category::load(ctx, self.0.category_id).await
    }

    #[graphql(flatten)]
    async fn timestamps(&self) -> Timestamps {
        Timestamps::new(self.0.created_at, self.0.updated_at)
    }
}
