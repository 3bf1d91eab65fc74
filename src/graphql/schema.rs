//! The schema, built in one place. Building needs no database: `catalog-api schema` prints
//! the SDL from here, and the server attaches its state as schema data when it starts.

use async_graphql::{EmptySubscription, MergedObject, SDLExportOptions, Schema, SchemaBuilder};

use super::mutation::{CategoryMutation, ProductMutation};
use super::query::{CacheQuery, CategoryQuery, ProductQuery, StatsQuery};

#[derive(MergedObject, Default)]
#[graphql(name = "Query")]
pub struct QueryRoot(ProductQuery, CategoryQuery, StatsQuery, CacheQuery);

#[derive(MergedObject, Default)]
#[graphql(name = "Mutation")]
pub struct MutationRoot(ProductMutation, CategoryMutation);

pub type CatalogSchema = Schema<QueryRoot, MutationRoot, EmptySubscription>;

#[derive(Debug, Clone, Copy)]
pub struct SchemaLimits {
    pub max_depth: usize,
    pub max_complexity: usize,
    pub introspection: bool,
}

impl Default for SchemaLimits {
    fn default() -> Self {
        SchemaLimits {
            max_depth: 12,
            max_complexity: 5_000,
            introspection: true,
        }
    }
}

/// Depth allowed to introspection-only operations: graphql-js' standard introspection query
/// (what GraphiQL, graphql-codegen and GraphQL Inspector send) nests 15 levels deep. Their
/// cost is bounded by `document_cost::MAX_INTROSPECTION_COST` instead.
pub const INTROSPECTION_MAX_DEPTH: usize = 20;

/// The schema that runs operations, and the one that runs introspection-only operations
/// (the same types and data, a depth limit that fits the standard introspection query).
#[derive(Clone)]
pub struct Schemas {
    pub api: CatalogSchema,
    pub introspection: CatalogSchema,
    pub introspection_enabled: bool,
}

impl Schemas {
    /// Builds both schemas; `attach` adds the server's state (database, cache) to each.
    pub fn build(
        limits: SchemaLimits,
        attach: impl Fn(
            SchemaBuilder<QueryRoot, MutationRoot, EmptySubscription>,
        ) -> SchemaBuilder<QueryRoot, MutationRoot, EmptySubscription>,
    ) -> Self {
        let introspection_limits = SchemaLimits {
            max_depth: limits.max_depth.max(INTROSPECTION_MAX_DEPTH),
            ..limits
        };
        Schemas {
            api: attach(builder(limits)).finish(),
            introspection: attach(builder(introspection_limits)).finish(),
            introspection_enabled: limits.introspection,
        }
    }
}

pub fn builder(limits: SchemaLimits) -> SchemaBuilder<QueryRoot, MutationRoot, EmptySubscription> {
    let builder = Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        EmptySubscription,
    )
    .limit_depth(limits.max_depth)
    .limit_complexity(limits.max_complexity);
    if limits.introspection {
        builder
    } else {
        builder.disable_introspection()
    }
}

/// The SDL clients and code generators build on, in a stable (sorted) order.
pub fn sdl() -> String {
    builder(SchemaLimits::default()).finish().sdl_with_options(
        SDLExportOptions::new()
            .sorted_fields()
            .sorted_arguments()
            .sorted_enum_items()
            .include_specified_by(),
    )
}

/// A page costs its children once per row it may return, so nested pages multiply:
/// `products(first: 100) { ... category { products(first: 100) ... } }` is refused.
pub fn page_complexity(first: Option<i32>, child_complexity: usize) -> usize {
    let rows = first.unwrap_or(20).clamp(1, crate::catalog::PageSize::MAX) as usize;
    rows.saturating_mul(child_complexity).saturating_add(1)
}
