//! Category mutations: the same write-then-invalidate shape as products; a rename also
//! retires product lists and searches, which show category names.

use async_graphql::{Context, ID, Object};

use super::write;
use crate::auth::RequireToken;
use crate::catalog::{EntityId, categories};
use crate::graphql::types::Category;
use crate::graphql::types::inputs::CategoryInput;

#[derive(Default)]
pub struct CategoryMutation;

#[Object(guard = "RequireToken")]
impl CategoryMutation {
    /// Creates a category; names are unique.
    async fn create_category(
        &self,
        ctx: &Context<'_>,
        input: CategoryInput,
    ) -> async_graphql::Result<Category> {
        let name = input.parse()?;
        let category = write(ctx, async move |transaction| {
            categories::create(transaction, name).await
        })
        .await?;
        Ok(Category(category))
    }

    async fn update_category(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: CategoryInput,
    ) -> async_graphql::Result<Category> {
        let id = EntityId::parse(&id)?;
        let name = input.parse()?;
        let category = write(ctx, async move |transaction| {
            categories::update(transaction, id.0, name).await
        })
        .await?;
        Ok(Category(category))
    }

    /// Deletes an empty category and returns its id; a category with products is refused.
    async fn delete_category(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<ID> {
        let id = EntityId::parse(&id)?;
        write(ctx, async |transaction| {
            categories::delete(transaction, id.0).await
        })
        .await?;
        Ok(id.to_graphql())
    }
}
