//! Rows by primary key, for any entity with an integer id: one statement for any number of
//! ids (none for no ids). The DataLoaders and the bulk mutations share it.

use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, Iterable, PrimaryKeyToColumn, QueryFilter,
};

use crate::entities::{category, product};

/// A row with an integer id, which the DataLoaders key it by.
pub trait Row: Clone + Send + Sync + 'static {
    fn id(&self) -> i32;
}

impl Row for category::Model {
    fn id(&self) -> i32 {
        self.id
    }
}

impl Row for product::Model {
    fn id(&self) -> i32 {
        self.id
    }
}

/// The rows of `E` whose id is in `ids`, in no particular order; unknown ids are left out.
pub async fn find_by_ids<E: EntityTrait>(
    db: &impl ConnectionTrait,
    ids: &[i32],
) -> Result<Vec<E::Model>, DbErr> {
    let Some(id) = E::PrimaryKey::iter().next() else {
        return Err(DbErr::Custom(format!(
            "{} has no primary key",
            E::default().table_name()
        )));
    };
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    E::find()
        .filter(id.into_column().is_in(ids.iter().copied()))
        .all(db)
        .await
}
