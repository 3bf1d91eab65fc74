//! `category(id)` and `categories`: thin resolvers over the catalog, counts prefetched in one
//! statement for the whole list.

use async_graphql::{Context, ID, Object};

use crate::cache::tags::Tag;
use crate::catalog::{EntityId, categories};
use crate::graphql::context::RequestContext;
use crate::graphql::loaders::prefetch_product_counts;
use crate::graphql::types::Category;

#[derive(Default)]
pub struct CategoryQuery;

#[Object]
impl CategoryQuery {
    /// One category by id, or null when there is none.
    async fn category(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Category>> {
        Category::load(ctx, EntityId::parse(&id)?.0).await
    }

    /// All categories, by id.
    #[graphql(cache_control(max_age = 600))]
    async fn categories(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Category>> {
        ctx.record_tag(Tag::Categories);
        let rows = categories::all(ctx.db()?)
            .await
            .map_err(|error| ctx.database_error(&error))?;
        if ctx.look_ahead().field("productCount").exists() {
            let ids: Vec<i32> = rows.iter().map(|row| row.id).collect();
            prefetch_product_counts(ctx.loaders()?, ctx.db()?, &ids)
                .await
                .map_err(|error| ctx.database_error(&error))?;
        }
        Ok(rows.into_iter().map(Category).collect())
    }
}
