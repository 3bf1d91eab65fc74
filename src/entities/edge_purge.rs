//! The `edge_purge` outbox: tags a committed mutation must purge at the edge (space
//! separated, as the cache names them), until the edge has acknowledged them.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "edge_purge")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub tags: String,
    pub created_at: ChronoDateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
