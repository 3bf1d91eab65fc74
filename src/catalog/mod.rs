//! The catalog's domain: validated values and the one place where each entity's SQL lives.
//!
//! GraphQL resolvers and DataLoaders call these functions; nothing above this layer builds
//! SQL. Every function takes a connection (or transaction), so mutations compose atomically.

pub mod categories;
pub mod clock;
pub mod ids;
pub mod names;
pub mod pagination;
pub mod price;
pub mod products;
pub mod rows;
pub mod search_key;
pub mod stats;

pub use ids::EntityId;
pub use names::{CategoryName, ProductName, SearchText};
pub use pagination::{Cursor, PageSize, ProductOrder};
pub use price::Price;
pub use rows::{Row, find_by_ids};
