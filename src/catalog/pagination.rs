//! Keyset pagination: page sizes, orderings and opaque cursors.
//!
//! A cursor names the ordering and the last row's sort key and id, so the next page is an
//! index range scan `(key, id) > (cursor.key, cursor.id)`: page 1,000 costs what page 1 costs.
//! A cursor from one ordering is refused by another instead of silently skipping rows.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::{ApiError, ApiResult};

#[derive(async_graphql::Enum, Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ProductOrder {
    #[default]
    IdAsc,
    PriceAsc,
    PriceDesc,
    NewestFirst,
}

impl ProductOrder {
    fn tag(self) -> &'static str {
        match self {
            ProductOrder::IdAsc => "id",
            ProductOrder::PriceAsc => "pa",
            ProductOrder::PriceDesc => "pd",
            ProductOrder::NewestFirst => "nf",
        }
    }
}

/// `first`: between 1 and 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageSize(u64);

impl PageSize {
    pub const MAX: i32 = 100;

    pub fn parse(first: i32) -> ApiResult<Self> {
        if (1..=Self::MAX).contains(&first) {
            Ok(PageSize(first as u64))
        } else {
            Err(ApiError::bad_input(format!(
                "`first` must be between 1 and {} (got {first})",
                Self::MAX
            )))
        }
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

/// Position after a row: the ordering's sort key (price cents or creation time in
/// microseconds; unused for id order) and the row id as tie-breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cursor {
    pub order: ProductOrder,
    pub key: i64,
    pub id: i32,
}

impl Cursor {
    pub fn encode(self) -> String {
        URL_SAFE_NO_PAD.encode(format!("v1:{}:{}:{}", self.order.tag(), self.key, self.id))
    }

    pub fn decode(text: &str, expected: ProductOrder) -> ApiResult<Self> {
        let malformed = || ApiError::bad_input(format!("malformed cursor {text:?}"));
        let bytes = URL_SAFE_NO_PAD
            .decode(text.trim())
            .map_err(|_| malformed())?;
        let raw = String::from_utf8(bytes).map_err(|_| malformed())?;
        let mut parts = raw.split(':');
        let (Some("v1"), Some(tag), Some(key), Some(id), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(malformed());
        };
        if tag != expected.tag() {
            return Err(ApiError::bad_input(
                "the cursor belongs to a different `orderBy`",
            ));
        }
        Ok(Cursor {
            order: expected,
            key: key.parse().map_err(|_| malformed())?,
            id: id.parse().map_err(|_| malformed())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let cursor = Cursor {
            order: ProductOrder::PriceDesc,
            key: 1234,
            id: 42,
        };
        assert_eq!(
            Cursor::decode(&cursor.encode(), ProductOrder::PriceDesc).expect("round trip"),
            cursor
        );
        assert!(Cursor::decode(&cursor.encode(), ProductOrder::IdAsc).is_err());
        assert!(Cursor::decode("not a cursor", ProductOrder::IdAsc).is_err());
        assert!(Cursor::decode(&URL_SAFE_NO_PAD.encode("v1:id:x:1"), ProductOrder::IdAsc).is_err());
    }

    proptest::proptest! {
        /// Whatever a client sends as `after`, decoding answers (an error at worst).
        #[test]
        fn decoding_any_text_never_panics(text in ".{0,200}") {
            let _ = Cursor::decode(&text, ProductOrder::IdAsc);
        }

        #[test]
        fn decoding_any_encoded_bytes_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100)) {
            let _ = Cursor::decode(&URL_SAFE_NO_PAD.encode(bytes), ProductOrder::PriceAsc);
        }

        #[test]
        fn every_cursor_round_trips(key in proptest::prelude::any::<i64>(), id in proptest::prelude::any::<i32>(), order in 0..4usize) {
            let order = [ProductOrder::IdAsc, ProductOrder::PriceAsc, ProductOrder::PriceDesc, ProductOrder::NewestFirst][order];
            let cursor = Cursor { order, key, id };
            proptest::prop_assert_eq!(Cursor::decode(&cursor.encode(), order).ok(), Some(cursor));
        }
    }

    #[test]
    fn page_size_is_bounded() {
        assert!(PageSize::parse(0).is_err());
        assert!(PageSize::parse(101).is_err());
        assert_eq!(PageSize::parse(100).expect("max").get(), 100);
    }
}
