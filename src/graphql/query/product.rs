//! `product(id)` and `products(filter, orderBy, first, after)`: thin resolvers over the
//! catalog's queries, with the tags each result depends on.

use async_graphql::{Context, ID, Object};

use crate::cache::tags::Tag;
use crate::catalog::{Cursor, EntityId, PageSize, ProductOrder, products};
use crate::graphql::context::{RequestContext, load_one};
use crate::graphql::loaders::prefetch_categories;
use crate::graphql::types::connection::TotalCount;
use crate::graphql::types::inputs::ProductFilterInput;
use crate::graphql::types::{Product, ProductConnection};

#[derive(Default)]
pub struct ProductQuery;

#[Object]
impl ProductQuery {
    /// One product by id, or null when there is none.
    async fn product(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Product>> {
        let id = EntityId::parse(&id)?;
        let product = load_one(ctx, |loaders| &loaders.products, id.0).await?;
        ctx.record_product(id.0, product.as_ref().map(|product| product.category_id));
        Ok(product.map(Product))
    }

    /// A filtered, ordered page of products. `first` is 1 to 100; `after` is an `endCursor`.
    #[graphql(complexity = "crate::graphql::schema::page_complexity(first, child_complexity)")]
    async fn products(
        &self,
        ctx: &Context<'_>,
        filter: Option<ProductFilterInput>,
        #[graphql(default_with = "Some(ProductOrder::IdAsc)")] order_by: Option<ProductOrder>,
        #[graphql(default_with = "Some(20)")] first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<ProductConnection> {
        let filter = filter.unwrap_or_default().parse()?;
        let order_by = order_by.unwrap_or_default();
        let size = PageSize::parse(first.unwrap_or(20))?;
        let after = after
            .map(|text| Cursor::decode(&text, order_by))
            .transpose()?;
        ctx.record_tag(match filter.category_id {
            Some(category_id) => Tag::CategoryProducts(category_id),
            None => Tag::AllProducts,
        });
        let rows = products::list_page(ctx.db()?, &filter, order_by, size, after)
            .await
            .map_err(|error| ctx.observe(error))?;
        if ctx
            .look_ahead()
            .field("edges")
            .field("node")
            .field("category")
            .exists()
        {
            prefetch_categories(ctx.loaders()?, ctx.db()?, &rows)
                .await
                .map_err(|error| ctx.database_error(&error))?;
        }
        Ok(ProductConnection::from_rows(
            rows,
            order_by,
            size,
            after.is_some(),
            TotalCount::Filter(filter),
        ))
    }
}
