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

/// The SDL clients and code generators build on, in a stable (sorted) order. It states what
/// introspection tells a client (tests/api/schema_introspection.rs checks): async-graphql's
/// export leaves out the descriptions of directive arguments, so directive definitions are
/// printed again from introspection with them.
pub fn sdl() -> String {
    let schema = builder(SchemaLimits::default()).finish();
    let sdl = schema.sdl_with_options(
        SDLExportOptions::new()
            .sorted_fields()
            .sorted_arguments()
            .sorted_enum_items()
            .include_specified_by(),
    );
    let introspection = futures::executor::block_on(schema.execute(DIRECTIVE_ARGUMENTS));
    let Ok(introspection) = introspection.data.into_json() else {
        return sdl;
    };
    let directives = introspection["__schema"]["directives"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut printed = String::with_capacity(sdl.len() + 512);
    for line in sdl.split_inclusive('\n') {
        let replacement = line.strip_prefix("directive @").and_then(|rest| {
            let name = rest.split(['(', ' ']).next()?;
            let directive = directives
                .iter()
                .find(|directive| directive["name"] == name)?;
            directive_with_argument_descriptions(line, name, directive)
        });
        printed.push_str(replacement.as_deref().unwrap_or(line));
    }
    printed
}

/// What `sdl()` reads back from introspection: every directive's arguments.
const DIRECTIVE_ARGUMENTS: &str = "{ __schema { directives { name args { name description \
    defaultValue type { ...TypeReference } } } } } fragment TypeReference on __Type { kind name \
    ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } }";

/// `directive @skip(if: Boolean!) on ...` with its arguments one per line, each under its
/// description; `None` when no argument has a description (the line is already complete).
fn directive_with_argument_descriptions(
    line: &str,
    name: &str,
    directive: &serde_json::Value,
) -> Option<String> {
    let arguments = directive["args"].as_array()?;
    if arguments
        .iter()
        .all(|argument| argument["description"].is_null())
    {
        return None;
    }
    let rest = &line[line.find(')')? + 1..];
    let mut printed = format!("directive @{name}(\n");
    for argument in arguments {
        if let Some(description) = argument["description"].as_str() {
            printed.push_str("\t\"\"\"\n");
            for description_line in description.lines() {
                printed.push('\t');
                printed.push_str(description_line);
                printed.push('\n');
            }
            printed.push_str("\t\"\"\"\n");
        }
        printed.push('\t');
        printed.push_str(argument["name"].as_str()?);
        printed.push_str(": ");
        printed.push_str(&type_reference(&argument["type"]));
        if let Some(default) = argument["defaultValue"].as_str() {
            printed.push_str(" = ");
            printed.push_str(default);
        }
        printed.push('\n');
    }
    printed.push(')');
    printed.push_str(rest);
    Some(printed)
}

/// `[String!]!` from an introspection type reference.
fn type_reference(reference: &serde_json::Value) -> String {
    match reference["kind"].as_str() {
        Some("NON_NULL") => format!("{}!", type_reference(&reference["ofType"])),
        Some("LIST") => format!("[{}]", type_reference(&reference["ofType"])),
        _ => reference["name"].as_str().unwrap_or_default().to_owned(),
    }
}

/// A page costs its children once per row it may return, so nested pages multiply:
/// `products(first: 100) { ... category { products(first: 100) ... } }` is refused.
pub fn page_complexity(first: Option<i32>, child_complexity: usize) -> usize {
    let rows = first.unwrap_or(20).clamp(1, crate::catalog::PageSize::MAX) as usize;
    rows.saturating_mul(child_complexity).saturating_add(1)
}
