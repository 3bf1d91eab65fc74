//! catalog-api: a GraphQL API for a product catalog whose repeated queries are answered
//! from a response cache that committed mutations invalidate.
//!
//! The request path, one module per layer: `http` (axum: transport, limits, health) →
//! `graphql::executor` (persisted queries, cache lookup, single flight) → `cache` (keys,
//! tags, storage) → `graphql` resolvers → `graphql::loaders` (DataLoaders) → `catalog`
//! (validated values and all SQL) → `entities` (sea-orm) → the database. `app` builds it
//! all from one `config::Config`; the binary and the tests start the same `App`.

pub mod app;
pub mod auth;
pub mod cache;
pub mod catalog;
pub mod cli;
pub mod compression;
pub mod config;
pub mod db;
pub mod edge;
pub mod entities;
pub mod error;
pub mod graphql;
pub mod http;
pub mod rate_limit;
pub mod telemetry;

pub use app::{App, AppState};
pub use config::Config;
