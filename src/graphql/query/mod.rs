//! Query fields, one module per entity, merged into the `Query` root.

mod cache;
mod category;
mod product;
mod stats;

pub use cache::CacheQuery;
pub use category::CategoryQuery;
pub use product::ProductQuery;
pub use stats::StatsQuery;
