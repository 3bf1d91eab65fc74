//! Product mutations: validate, write in one transaction, then announce the changed tags so
//! the cache retires what the write made stale before the response is sent.

use async_graphql::{Context, ID, Object};

use super::{begin, check_bulk_size, commit};
use crate::auth::RequireToken;
use crate::cache::tags::Changes;
use crate::catalog::{EntityId, products};
use crate::error::ApiResult;
use crate::graphql::types::Product;
use crate::graphql::types::inputs::{CreateProductInput, PriceUpdateInput, UpdateProductInput};

#[derive(Default)]
pub struct ProductMutation;

#[Object]
impl ProductMutation {
    #[graphql(guard = "RequireToken")]
    async fn create_product(
        &self,
        ctx: &Context<'_>,
        input: CreateProductInput,
    ) -> async_graphql::Result<Product> {
        let new = input.parse()?;
        let transaction = begin(ctx).await?;
        let product = products::create(&transaction, new).await?;
        let mut changes = Changes::default();
        changes.product(product.id, None, Some(product.category_id));
        commit(ctx, transaction, changes).await?;
        Ok(Product(product))
    }

    /// Changes only the fields given in `input`.
    #[graphql(guard = "RequireToken")]
    async fn update_product(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateProductInput,
    ) -> async_graphql::Result<Product> {
        let id = EntityId::parse(&id)?;
        let changes_requested = input.parse()?;
        let transaction = begin(ctx).await?;
        let write = products::update(&transaction, id.0, changes_requested).await?;
        let mut changes = Changes::default();
        changes.product(
            write.product.id,
            write.before_category_id,
            Some(write.product.category_id),
        );
        commit(ctx, transaction, changes).await?;
        Ok(Product(write.product))
    }

    /// Deletes a product and returns its id.
    #[graphql(guard = "RequireToken")]
    async fn delete_product(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<ID> {
        let id = EntityId::parse(&id)?;
        let transaction = begin(ctx).await?;
        let deleted = products::delete(&transaction, id.0).await?;
        let mut changes = Changes::default();
        changes.product(deleted.id, Some(deleted.category_id), None);
        commit(ctx, transaction, changes).await?;
        Ok(id.to_graphql())
    }

    /// Creates up to 1,000 products in one transaction: all of them or none.
    #[graphql(guard = "RequireToken")]
    async fn bulk_create_products(
        &self,
        ctx: &Context<'_>,
        inputs: Vec<CreateProductInput>,
    ) -> async_graphql::Result<Vec<Product>> {
        check_bulk_size(inputs.len())?;
        let new = inputs
            .into_iter()
            .map(CreateProductInput::parse)
            .collect::<ApiResult<Vec<_>>>()?;
        let transaction = begin(ctx).await?;
        let created = products::create_many(&transaction, new).await?;
        let mut changes = Changes::default();
        for product in &created {
            changes.product(product.id, None, Some(product.category_id));
        }
        commit(ctx, transaction, changes).await?;
        Ok(created.into_iter().map(Product).collect())
    }

    /// Sets up to 1,000 prices in one transaction: all of them or none. Answers in the order
    /// of `updates`; a product id given twice is refused with BAD_USER_INPUT.
    #[graphql(guard = "RequireToken")]
    async fn bulk_update_prices(
        &self,
        ctx: &Context<'_>,
        updates: Vec<PriceUpdateInput>,
    ) -> async_graphql::Result<Vec<Product>> {
        check_bulk_size(updates.len())?;
        let updates = updates
            .into_iter()
            .map(PriceUpdateInput::parse)
            .collect::<ApiResult<Vec<_>>>()?;
        let transaction = begin(ctx).await?;
        let written = products::update_prices(&transaction, &updates).await?;
        let mut changes = Changes::default();
        for write in &written {
            changes.product(
                write.product.id,
                write.before_category_id,
                Some(write.product.category_id),
            );
        }
        commit(ctx, transaction, changes).await?;
        Ok(written
            .into_iter()
            .map(|write| Product(write.product))
            .collect())
    }
}
