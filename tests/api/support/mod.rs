//! The harness the tests stand on, apart from the tests themselves: `helpers` (`TestApp`, the
//! real server on port 0 with its own database and cache prefix, and the GraphQL client
//! calls), the external processes some tests start on free ports (`redis_process`,
//! `redis_cluster`, `varnish_process`, `prometheus_process`, `node_tools`), and the fault
//! injectors between the server and its backends (`tcp_proxy`).

pub mod helpers;
pub mod node_tools;
pub mod ports;
pub mod prometheus_process;
pub mod redis_cluster;
pub mod redis_process;
pub mod tcp_proxy;
pub mod varnish_process;
