//! sea-orm entities, one per table, and nothing else: queries live in `catalog`.

pub mod api_token;
pub mod category;
pub mod edge_purge;
pub mod product;
