//! Names and search text with length rules, validated once at the input layer. None may
//! hold a control character: PostgreSQL refuses a NUL in text outright, and the other
//! backends would store or match what no client can type.

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

/// A name type: trimmed, 1 to `$max` characters, no control characters.
macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name(String);

        impl $name {
            pub const MAX_CHARS: usize = $max;

            pub fn parse(value: &str) -> ApiResult<Self> {
                validated($kind, value, Self::MAX_CHARS).map($name)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_inner(self) -> String {
                self.0
            }
        }
    };
}

name_type!(
    /// A product name: 1 to 200 characters after trimming.
    ProductName,
    "product name",
    200
);

name_type!(
    /// A category name: 1 to 100 characters after trimming, unique in the catalog.
    CategoryName,
    "category name",
    100
);

/// The text of a product search: at most 200 characters after trimming; blank means none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchText(String);

impl SearchText {
    pub const MAX_CHARS: usize = 200;

    /// `None` for blank text (no search), an error for text that breaks the rules.
    pub fn parse(value: &str) -> ApiResult<Option<Self>> {
        if value.trim().is_empty() {
            return Ok(None);
        }
        validated("`search`", value, Self::MAX_CHARS).map(|text| Some(SearchText(text)))
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
        assert!(ProductName::parse("Desk\u{0}Lamp").is_err());
    }

    #[test]
    fn search_text_is_trimmed_bounded_and_free_of_control_characters() {
        assert_eq!(SearchText::parse("  ").expect("blank is no search"), None);
        assert_eq!(
            SearchText::parse(" lamp ")
                .expect("valid")
                .map(SearchText::into_inner),
            Some("lamp".to_owned())
        );
        assert!(SearchText::parse("a\u{0}b").is_err());
        assert!(SearchText::parse(&"x".repeat(201)).is_err());
    }
}
