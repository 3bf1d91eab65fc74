//! GraphQL object and input types. Objects wrap entity models; inputs validate into domain
//! values (`Price`, `ProductName`) before any resolver logic runs.

pub mod category;
pub mod connection;
pub mod inputs;
pub mod product;
pub mod record;
pub mod stats;

pub use category::Category;
pub use connection::ProductConnection;
pub use product::Product;
pub use stats::DashboardStats;
