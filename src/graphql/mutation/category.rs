//! Category mutations: the same write-then-invalidate shape as products; a rename also
//! retires product lists and searches, which show category names.

use async_graphql::{Context, ID, Object};

use super::{begin, commit};
use crate::auth::RequireToken;
use crate::cache::tags::Changes;
use crate::catalog::{EntityId, categories};
use crate::graphql::types::Category;
use crate::graphql::types::inputs::CategoryInput;

#[derive(Default)]
pub struct CategoryMutation;

#[Object]
impl CategoryMutation {
    /// Creates a category; names are unique.
    #[graphql(guard = "RequireToken")]
    async fn create_category(
        &self,
        ctx: &Context<'_>,
        input: CategoryInput,
    ) -> async_graphql::Result<Category> {
        let name = input.parse()?;
        let transaction = begin(ctx).await?;
        let category = categories::create(&transaction, name).await?;
        let mut changes = Changes::default();
        changes.category(category.id);
        commit(ctx, transaction, changes).await?;
        Ok(Category(category))
    }

    #[graphql(guard = "RequireToken")]
    async fn update_category(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: CategoryInput,
    ) -> async_graphql::Result<Category> {
        let id = EntityId::parse(&id)?;
        let name = input.parse()?;
        let transaction = begin(ctx).await?;
        let category = categories::update(&transaction, id.0, name).await?;
        let mut changes = Changes::default();
        changes.category(category.id);
        commit(ctx, transaction, changes).await?;
        Ok(Category(category))
    }

    /// Deletes an empty category and returns its id; a category with products is refused.
    #[graphql(guard = "RequireToken")]
    async fn delete_category(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<ID> {
        let id = EntityId::parse(&id)?;
        let transaction = begin(ctx).await?;
        categories::delete(&transaction, id.0).await?;
        let mut changes = Changes::default();
        changes.category(id.0);
        commit(ctx, transaction, changes).await?;
        Ok(id.to_graphql())
    }
}
