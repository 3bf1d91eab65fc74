//! Product mutations: validate, write in one transaction, then announce the changed tags so
//! the cache retires what the write made stale before the response is sent.

use async_graphql::{Context, ID, Object};

use super::{parse_bulk, write};
use crate::auth::RequireToken;
use crate::catalog::{EntityId, products};
use crate::graphql::types::Product;
use crate::graphql::types::inputs::{CreateProductInput, PriceUpdateInput, UpdateProductInput};

#[derive(Default)]
pub struct ProductMutation;

#[Object(guard = "RequireToken")]
impl ProductMutation {
    async fn create_product(
        &self,
        ctx: &Context<'_>,
        input: CreateProductInput,
    ) -> async_graphql::Result<Product> {
        let new = input.parse()?;
        let created = write(ctx, async move |transaction| {
            products::create(transaction, new).await
        })
        .await?;
        Ok(created.into())
    }

    /// Changes only the fields given in `input`.
    async fn update_product(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateProductInput,
    ) -> async_graphql::Result<Product> {
        let id = EntityId::parse(&id)?;
        let changes = input.parse()?;
        let updated = write(ctx, async move |transaction| {
            products::update(transaction, id.0, changes).await
        })
        .await?;
        Ok(updated.into())
    }

    /// Deletes a product and returns its id.
    async fn delete_product(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<ID> {
        let id = EntityId::parse(&id)?;
        write(ctx, async |transaction| {
            products::delete(transaction, id.0).await
        })
        .await?;
        Ok(id.to_graphql())
    }

    /// Creates up to 1,000 products in one transaction: all of them or none.
    async fn bulk_create_products(
        &self,
        ctx: &Context<'_>,
        inputs: Vec<CreateProductInput>,
    ) -> async_graphql::Result<Vec<Product>> {
        let new = parse_bulk(inputs, CreateProductInput::parse)?;
        let created = write(ctx, async move |transaction| {
            products::create_many(transaction, new).await
        })
        .await?;
        Ok(created.into_iter().map(Product::from).collect())
    }

    /// Sets up to 1,000 prices in one transaction: all of them or none. Answers in the order
    /// of `updates`; a product id given twice is refused with BAD_USER_INPUT.
    async fn bulk_update_prices(
        &self,
        ctx: &Context<'_>,
        updates: Vec<PriceUpdateInput>,
    ) -> async_graphql::Result<Vec<Product>> {
        let updates = parse_bulk(updates, PriceUpdateInput::parse)?;
        let updated = write(ctx, async |transaction| {
            products::update_prices(transaction, &updates).await
        })
        .await?;
        Ok(updated.into_iter().map(Product::from).collect())
    }
}
