//! The integration suite: one binary, one module per capability. Every test starts the real
//! server on port 0 with its own database (a SQLite file, or a fresh PostgreSQL database
//! when `CATALOG_TEST_DATABASE_URL` is set) and its own cache (in-process, or a Redis key
//! prefix of its own when `CATALOG_TEST_REDIS_URL` is set), and talks to it over HTTP.

mod helpers;

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
mod edge;
mod errors;
mod field_errors;
mod first_tier;
mod graphiql_browser;
mod graphql_http_audit;
mod hostile;
mod hostile_input;
mod http;
mod http2;
mod insights;
mod introspection;
mod limits;
mod node_tools;
mod pg_replica;
mod ports;
mod products;
mod prometheus;
mod prometheus_process;
mod promql_names;
mod rate_limits;
mod recognized;
mod redis_cluster;
mod redis_process;
mod response_order;
mod schema_file;
mod schema_introspection;
mod schema_tooling;
mod stale;
mod tcp_proxy;
mod transport_errors;
mod varnish_process;
