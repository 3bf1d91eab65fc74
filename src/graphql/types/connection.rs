//! Relay-style connections over keyset pages. `totalCount` is a separate statement, run
//! only when a query selects it.

use async_graphql::{Context, Object, SimpleObject};

use super::Product;
use crate::catalog::pagination::{Cursor, PageSize, ProductOrder};
use crate::catalog::products::{self, ProductFilter, sort_key};
use crate::entities::product;
use crate::graphql::context::{RequestContext, load_one};

/// Where `totalCount` comes from when it is asked for.
pub enum TotalCount {
    Filter(ProductFilter),
    Category(i32),
}

#[derive(SimpleObject)]
#[graphql(cache_control(max_age = 600))]
pub struct PageInfo {
    pub has_next_page: bool,
    pub has_previous_page: bool,
    pub start_cursor: Option<String>,
    pub end_cursor: Option<String>,
}

/// An edge computes its cursor only when the query selects it.
pub struct ProductEdge {
    order: ProductOrder,
    node: Product,
}

#[Object(cache_control(max_age = 600))]
impl ProductEdge {
    async fn cursor(&self) -> String {
        cursor_of(self.order, &self.node.0)
    }

    async fn node(&self) -> &Product {
        &self.node
    }
}

fn cursor_of(order: ProductOrder, row: &product::Model) -> String {
    Cursor {
        order,
        key: sort_key(order, row),
        id: row.id,
    }
    .encode()
}

pub struct ProductConnection {
    edges: Vec<ProductEdge>,
    page_info: PageInfo,
    total: TotalCount,
}

impl ProductConnection {
    /// Builds a page from `size + 1` fetched rows: the extra row only says a next page exists.
    pub fn from_rows(
        mut rows: Vec<product::Model>,
        order: ProductOrder,
        size: PageSize,
        has_previous_page: bool,
        total: TotalCount,
    ) -> Self {
        let has_next_page = rows.len() as u64 > size.get();
        rows.truncate(size.get() as usize);
        let edges: Vec<ProductEdge> = rows
            .into_iter()
            .map(|row| ProductEdge {
                order,
                node: Product(row),
            })
            .collect();
        let page_info = PageInfo {
            has_next_page,
            has_previous_page,
            start_cursor: edges.first().map(|edge| cursor_of(order, &edge.node.0)),
            end_cursor: edges.last().map(|edge| cursor_of(order, &edge.node.0)),
        };
        ProductConnection {
            edges,
            page_info,
            total,
        }
    }
}

#[Object(cache_control(max_age = 600))]
impl ProductConnection {
    async fn edges(&self) -> &[ProductEdge] {
        &self.edges
    }

    async fn page_info(&self) -> &PageInfo {
        &self.page_info
    }

    /// Number of products in the whole list (all pages); costs one COUNT statement.
    async fn total_count(&self, ctx: &Context<'_>) -> async_graphql::Result<i32> {
        let count = match &self.total {
            TotalCount::Filter(filter) => products::count(ctx.db()?, filter)
                .await
                .map_err(|error| ctx.database_error(&error))?,
            TotalCount::Category(category_id) => {
                load_one(ctx, |loaders| &loaders.product_counts, *category_id)
                    .await?
                    .unwrap_or(0)
            }
        };
        Ok(count.min(i32::MAX as u64) as i32)
    }
}
