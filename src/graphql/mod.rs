//! The GraphQL layer: the schema and its resolvers, the DataLoaders they share, and the
//! executor that runs one operation through the response cache.

pub mod context;
pub mod document_cost;
pub mod executor;
pub mod field_errors;
pub mod loaders;
pub mod manifest;
pub mod mutation;
pub mod query;
pub mod response_body;
pub mod response_order;
pub mod schema;
pub mod types;

pub use schema::{CatalogSchema, SchemaLimits};
