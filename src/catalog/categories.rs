//! Every SQL statement about categories.

use std::collections::BTreeSet;

use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Set, SqlErr,
};

use super::CategoryName;
use super::clock::now;
use super::search_key::search_key;
use crate::entities::{category, product};
use crate::error::{ApiError, ApiResult};

pub async fn existing_ids<C: ConnectionTrait>(db: &C, ids: &[i32]) -> Result<BTreeSet<i32>, DbErr> {
    if ids.is_empty() {
        return Ok(BTreeSet::new());
    }
    let found: Vec<i32> = category::Entity::find()
        .select_only()
        .column(category::Column::Id)
        .filter(category::Column::Id.is_in(ids.iter().copied()))
        .into_tuple()
        .all(db)
        .await?;
    Ok(found.into_iter().collect())
}

pub async fn all<C: ConnectionTrait>(db: &C) -> Result<Vec<category::Model>, DbErr> {
    category::Entity::find()
        .order_by_asc(category::Column::Id)
        .all(db)
        .await
}

fn name_conflict(name: &str, error: DbErr) -> ApiError {
    match error.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => {
            ApiError::Conflict(format!("a category named {name:?} already exists"))
        }
        _ => error.into(),
    }
}

pub async fn create<C: ConnectionTrait>(db: &C, name: CategoryName) -> ApiResult<category::Model> {
    let name = name.into_inner();
    let now = now();
    let row = category::ActiveModel {
        name_search: Set(search_key(&name)),
        name: Set(name.clone()),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    };
    category::Entity::insert(row)
        .exec_with_returning(db)
        .await
        .map_err(|error| name_conflict(&name, error))
}

pub async fn update<C: ConnectionTrait>(
    db: &C,
    id: i32,
    name: CategoryName,
) -> ApiResult<category::Model> {
    let existing = category::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("category {id} does not exist")))?;
    let name = name.into_inner();
    let mut active = existing.into_active_model();
    active.name_search = Set(search_key(&name));
    active.name = Set(name.clone());
    active.updated_at = Set(now());
    category::Entity::update(active)
        .exec(db)
        .await
        .map_err(|error| name_conflict(&name, error))
}

/// Deletes an empty category; one that still has products is refused, not cascaded.
pub async fn delete<C: ConnectionTrait>(db: &C, id: i32) -> ApiResult<category::Model> {
    let existing = category::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("category {id} does not exist")))?;
    let products = product::Entity::find()
        .filter(product::Column::CategoryId.eq(id))
        .count(db)
        .await?;
    if products > 0 {
        return Err(ApiError::Conflict(format!(
            "category {id} still has {products} product(s); move or delete them first"
        )));
    }
    // Only the statement that removed the row reports success (concurrent deletes).
    if category::Entity::delete_by_id(id)
        .exec(db)
        .await?
        .rows_affected
        == 0
    {
        return Err(ApiError::NotFound(format!("category {id} does not exist")));
    }
    Ok(existing)
}
