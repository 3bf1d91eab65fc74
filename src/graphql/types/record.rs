//! The fields every catalog row shows, resolved in one place for `Product` and `Category`:
//! `Identity` (`id`, `name`) flattened in ahead of a type's own fields and `Timestamps`
//! (`createdAt`, `updatedAt`) after them, so introspection lists them in that order.

use async_graphql::{ID, Object};
use chrono::{DateTime, Utc};

use crate::catalog::EntityId;

pub struct Identity<'row> {
    id: i32,
    name: &'row str,
}

impl<'row> Identity<'row> {
    pub fn new(id: i32, name: &'row str) -> Self {
        Self { id, name }
    }
}

#[Object]
impl Identity<'_> {
    async fn id(&self) -> ID {
        EntityId(self.id).to_graphql()
    }

    async fn name(&self) -> &str {
        self.name
    }
}

pub struct Timestamps {
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl Timestamps {
    pub fn new(created_at: DateTime<Utc>, updated_at: DateTime<Utc>) -> Self {
        Self {
            created_at,
            updated_at,
        }
    }
}

#[Object]
impl Timestamps {
    async fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }

    async fn updated_at(&self) -> DateTime<Utc> {
        self.updated_at
    }
}
