//! Names with length rules, validated once at the input layer.

use crate::error::{ApiError, ApiResult};

fn validated(kind: &str, value: &str, max_chars: usize) -> ApiResult<String> {
    let trimmed = value.trim();
    let length = trimmed.chars().count();
    if length == 0 {
        return Err(ApiError::bad_input(format!("{kind} must not be empty")));
    }
    if length > max_chars {
        return Err(ApiError::bad_input(format!(
            "{kind} may have at most {max_chars} characters (got {length})"
        )));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(ApiError::bad_input(format!(
            "{kind} must not contain control characters"
        )));
    }
    Ok(trimmed.to_owned())
}

/// A product name: 1 to 200 characters after trimming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductName(String);

impl ProductName {
    pub const MAX_CHARS: usize = 200;

    pub fn parse(value: &str) -> ApiResult<Self> {
        validated("product name", value, Self::MAX_CHARS).map(ProductName)
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// A category name: 1 to 100 characters after trimming, unique in the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CategoryName(String);

impl CategoryName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(value: &str) -> ApiResult<Self> {
        validated("category name", value, Self::MAX_CHARS).map(CategoryName)
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(
            ProductName::parse("  Lamp ").expect("valid").into_inner(),
            "Lamp"
        );
        assert!(ProductName::parse("   ").is_err());
        assert!(ProductName::parse(&"x".repeat(201)).is_err());
        assert!(ProductName::parse(&"é".repeat(200)).is_ok());
        assert!(CategoryName::parse(&"x".repeat(101)).is_err());
    }
}
