//! `dashboardStats`: catalog totals for token holders, one aggregate query, cached per token.

use async_graphql::{Context, Object};

use crate::auth::RequireToken;
use crate::cache::tags::Tag;
use crate::catalog::stats;
use crate::graphql::context::RequestContext;
use crate::graphql::types::DashboardStats;

#[derive(Default)]
pub struct StatsQuery;

#[Object]
impl StatsQuery {
    /// Catalog totals. Requires a token; the result is private to that token.
    #[graphql(guard = "RequireToken", cache_control(max_age = 1800, private))]
    async fn dashboard_stats(&self, ctx: &Context<'_>) -> async_graphql::Result<DashboardStats> {
        ctx.record_tag(Tag::AllProducts);
        ctx.record_tag(Tag::Categories);
        let totals = stats::dashboard(ctx.db()?)
            .await
            .map_err(|error| ctx.database_error(&error))?;
        Ok(totals.into())
    }
}
