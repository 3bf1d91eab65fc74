//! `Price`: a non-negative decimal with at most 10 digits, 2 of them after the point.
//!
//! It is held as integer cents, which is also how it is stored, so no float ever touches money.

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use crate::error::{ApiError, ApiResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Price {
    cents: i64,
}

impl Price {
    /// 99,999,999.99: ten digits, two of them decimals.
    pub const MAX_CENTS: i64 = 9_999_999_999;

    pub fn parse(value: Decimal) -> ApiResult<Self> {
        if value.is_sign_negative() && !value.is_zero() {
            return Err(ApiError::bad_input(format!(
                "price must not be negative (got {value})"
            )));
        }
        if value.normalize().scale() > 2 {
            return Err(ApiError::bad_input(format!(
                "price may have at most 2 decimal places (got {value})"
            )));
        }
        let cents = value
            .checked_mul(Decimal::ONE_HUNDRED)
            .and_then(|cents| cents.to_i64())
            .filter(|cents| *cents <= Self::MAX_CENTS);
        match cents {
            Some(cents) => Ok(Price {
                cents: cents.max(0),
            }),
            None => Err(ApiError::bad_input(format!(
                "price may have at most 10 digits, 8 before the decimal point (got {value})"
            ))),
        }
    }

    pub fn from_cents(cents: i64) -> Self {
        Price { cents }
    }

    pub fn cents(self) -> i64 {
        self.cents
    }

    pub fn to_decimal(self) -> Decimal {
        Decimal::new(self.cents, 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn parse(text: &str) -> ApiResult<Price> {
        Price::parse(Decimal::from_str(text).expect("test decimal"))
    }

    #[test]
    fn accepts_prices_within_the_rules() {
        assert_eq!(parse("12.34").expect("valid").cents(), 1234);
        assert_eq!(parse("0").expect("valid").cents(), 0);
        assert_eq!(
            parse("12.500")
                .expect("trailing zeros are not precision")
                .cents(),
            1250
        );
        assert_eq!(
            parse("99999999.99").expect("largest").cents(),
            Price::MAX_CENTS
        );
        assert_eq!(
            parse("12.34").expect("valid").to_decimal().to_string(),
            "12.34"
        );
    }

    proptest::proptest! {
        /// Any decimal a client can send is accepted or refused, never a panic, and an
        /// accepted one keeps its value exactly.
        #[test]
        fn any_decimal_is_parsed_or_refused(mantissa in proptest::prelude::any::<i64>(), scale in 0u32..28) {
            let value = Decimal::new(mantissa, scale);
            if let Ok(price) = Price::parse(value) {
                proptest::prop_assert_eq!(price.to_decimal(), value.normalize());
            }
        }

        #[test]
        fn every_valid_price_round_trips(cents in 0..=Price::MAX_CENTS) {
            let price = Price::from_cents(cents);
            proptest::prop_assert_eq!(Price::parse(price.to_decimal()).map(Price::cents).ok(), Some(cents));
        }
    }

    #[test]
    fn refuses_negative_over_precise_and_oversized_prices() {
        assert!(parse("-0.01").is_err());
        assert!(parse("1.234").is_err());
        assert!(parse("100000000.00").is_err());
        assert!(parse("79228162514264337593543950335").is_err());
    }
}
