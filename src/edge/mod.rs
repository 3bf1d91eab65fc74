//! The cache reaching the edge: CDNs and caching proxies (Varnish, Fastly, Cloudflare) keep
//! public results until a committed mutation purges exactly what it changed.
//!
//! Two halves keep one promise. `surrogate_keys` names, on every public cacheable response,
//! the tags its origin entry depends on (coarsened within the edge's limits, never dropped
//! without their cover), so purging what an invalidation stamped reaches every edge copy.
//! `purger` sends those purges after the commit, waits for the edge's acknowledgement within
//! a bound, and keeps what failed in a durable outbox (a row written in the mutation's own
//! transaction) that every instance retries until the edge has acknowledged it.

pub mod backends;
pub mod outbox;
pub mod purger;
pub mod surrogate_keys;

pub use purger::{EdgePurger, PurgeState};
pub use surrogate_keys::{EdgeNames, SurrogateKeys};
