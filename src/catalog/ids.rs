//! Entity ids as clients send them: a GraphQL `ID` holding a positive integer.

use async_graphql::ID;

use crate::error::{ApiError, ApiResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityId(pub i32);

impl EntityId {
    pub fn parse(id: &ID) -> ApiResult<Self> {
        match id.as_str().trim().parse::<i32>() {
            Ok(value) if value > 0 => Ok(EntityId(value)),
            _ => Err(ApiError::bad_input(format!(
                "malformed ID {:?}: expected a positive integer",
                id.as_str()
            ))),
        }
    }

    /// An optional id of an input (a filter's or a partial update's): absent stays absent.
    pub fn parse_optional(id: Option<&ID>) -> ApiResult<Option<i32>> {
        id.map(|id| Self::parse(id).map(|id| id.0)).transpose()
    }

    /// The id as clients see it, which `parse` reads back: every id in a response is written
    /// here.
    pub fn to_graphql(self) -> ID {
        ID(self.0.to_string())
    }
}
