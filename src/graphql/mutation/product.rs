//! Product mutations: validate, write in one transaction, then announce the changed tags so
//! the cache retires what the write made stale before the response is sent.

use async_graphql::{Context, ID, Object};

use super::{parse_bulk, write};
use crate::auth::RequireToken;
use crate::cache::tags::Changes;
use crate::catalog::products::ProductWrite;
use crate::catalog::{EntityId, products};
use crate::graphql::types::Product;
use crate::graphql::types::inputs::{CreateProductInput, PriceUpdateInput, UpdateProductInput};

#[derive(Default)]
pub struct ProductMutation;

/// What a product write touched: the product, and the categories it left and is now in.
fn announce(write: &ProductWrite, changes: &mut Changes) {
    changes.product(
        write.product.id,
        write.before_category_id,
        Some(write.product.category_id),
    );
}

#[Object(guard = "RequireToken")]
impl ProductMutation {
    async fn create_product(
        &self,
        ctx: &Context<'_>,
        input: CreateProductInput,
    ) -> async_graphql::Result<Product> {
        let new = input.parse()?;
        let product = write(
            ctx,
            async move |transaction| products::create(transaction, new).await,
            |product, changes| {
                changes.product(product.id, None, Some(product.category_id));
            },
        )
        .await?;
        Ok(Product(product))
    }

    /// Changes only the fields given in `input`.
    async fn update_product(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateProductInput,
    ) -> async_graphql::Result<Product> {
        let id = EntityId::parse(&id)?;
        let changes_requested = input.parse()?;
        let written = write(
            ctx,
            async move |transaction| products::update(transaction, id.0, changes_requested).await,
            |written, changes| {
                announce(written, changes);
            },
        )
        .await?;
        Ok(Product(written.product))
    }

    /// Deletes a product and returns its id.
    async fn delete_product(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<ID> {
        let id = EntityId::parse(&id)?;
        write(
            ctx,
            async |transaction| products::delete(transaction, id.0).await,
            |deleted, changes| {
                changes.product(deleted.id, Some(deleted.category_id), None);
            },
        )
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
        let created = write(
            ctx,
            async move |transaction| products::create_many(transaction, new).await,
            |created, changes| {
                for product in created {
                    changes.product(product.id, None, Some(product.category_id));
                }
            },
        )
        .await?;
        Ok(created.into_iter().map(Product).collect())
    }

    /// Sets up to 1,000 prices in one transaction: all of them or none. Answers in the order
    /// of `updates`; a product id given twice is refused with BAD_USER_INPUT.
    async fn bulk_update_prices(
        &self,
        ctx: &Context<'_>,
        updates: Vec<PriceUpdateInput>,
    ) -> async_graphql::Result<Vec<Product>> {
        let updates = parse_bulk(updates, PriceUpdateInput::parse)?;
        let written = write(
            ctx,
            async |transaction| products::update_prices(transaction, &updates).await,
            |written, changes| {
                for write in written {
                    announce(write, changes);
                }
            },
        )
        .await?;
        Ok(written
            .into_iter()
            .map(|write| Product(write.product))
            .collect())
    }
}
