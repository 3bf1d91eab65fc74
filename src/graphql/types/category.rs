//! The `Category` GraphQL type: its product count and product pages come from DataLoaders, so
//! a list of categories costs a constant number of statements.

use async_graphql::{Context, Object};

use super::ProductConnection;
use super::connection::TotalCount;
use super::record::{Identity, Timestamps};
use crate::cache::tags::Tag;
use crate::catalog::{Cursor, PageSize, ProductOrder};
use crate::entities::category;
use crate::graphql::context::{RequestContext, load_one};
use crate::graphql::loaders::CategoryPageKey;

pub struct Category(pub category::Model);

impl Category {
    /// The category `id` (None when there is none), through the request's DataLoader, so the
    /// categories a request names are read in one statement; the answer depends on its tag.
    pub(crate) async fn load(ctx: &Context<'_>, id: i32) -> async_graphql::Result<Option<Self>> {
        ctx.record_tag(Tag::Category(id));
        let category = load_one(ctx, |loaders| &loaders.categories, id).await?;
        Ok(category.map(Category))
    }
}

#[Object(cache_control(max_age = 600))]
impl Category {
    #[graphql(flatten)]
    async fn identity(&self) -> Identity<'_> {
        Identity::new(self.0.id, &self.0.name)
    }

    /// Number of products in the category, counted for all categories of a request at once.
    async fn product_count(&self, ctx: &Context<'_>) -> async_graphql::Result<i32> {
        ctx.record_tag(Tag::CategoryProducts(self.0.id));
        let count = load_one(ctx, |loaders| &loaders.product_counts, self.0.id).await?;
        Ok(count.unwrap_or(0).min(i32::MAX as u64) as i32)
    }

    /// The category's products by id; pages of all categories of a request share one statement.
    #[graphql(complexity = "crate::graphql::schema::page_complexity(first, child_complexity)")]
    async fn products(
        &self,
        ctx: &Context<'_>,
        #[graphql(default_with = "Some(20)")] first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<ProductConnection> {
        ctx.record_tag(Tag::CategoryProducts(self.0.id));
        let size = PageSize::parse(first.unwrap_or(20))?;
        let after = after
            .map(|text| Cursor::decode(&text, ProductOrder::IdAsc))
            .transpose()?;
        let key = CategoryPageKey {
            category_id: self.0.id,
            size,
            after_id: after.map(|cursor| cursor.id),
        };
        let rows = load_one(ctx, |loaders| &loaders.category_pages, key)
            .await?
            .unwrap_or_default();
        // Every product of this page belongs to this category: answer `node.category` from here.
        ctx.loaders()?
            .categories
            .feed_one(self.0.id, self.0.clone())
            .await;
        Ok(ProductConnection::from_rows(
            rows,
            ProductOrder::IdAsc,
            size,
            after.is_some(),
            TotalCount::Category(self.0.id),
        ))
    }

    #[graphql(flatten)]
    async fn timestamps(&self) -> Timestamps {
        Timestamps::new(self.0.created_at, self.0.updated_at)
    }
}
