//! The integration suite: one binary, one module per capability. Every test starts the real
//! server on port 0 with its own database (a SQLite file, or a fresh PostgreSQL database
//! when `CATALOG_TEST_DATABASE_URL` is set) and its own cache (in-process, or a Redis key
//! prefix of its own when `CATALOG_TEST_REDIS_URL` is set), and talks to it over HTTP.

mod support;

mod apollo_client;
mod apq;
mod auth;
mod bounded_work;
mod cache;
mod categories;
mod checker;
mod cluster;
mod compression;
mod consistency;
mod dashboard_browser;
mod database_outage;
mod dataloader;
mod docs;
mod edge;
mod errors;
mod field_errors;
mod first_tier;
mod graphiql_browser;
mod graphql_http_audit;
mod hostile_requests;
mod http;
mod http2;
mod insights;
mod introspection;
mod limits;
mod pg_replica;
mod products;
mod prometheus;
mod promql_names;
mod rate_limits;
mod recognized;
mod response_order;
mod schema_file_is_current;
mod schema_file_matches_client_tools;
mod schema_file_matches_introspection;
mod slow_connections;
mod stale;
mod transport_errors;
