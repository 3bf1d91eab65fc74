//! Input types, each with the one function that turns it into validated domain values: the
//! `Argument` trait, which mutation fields apply to every argument before anything is written.

use async_graphql::{ID, InputObject};
use rust_decimal::Decimal;

use crate::catalog::products::{NewProduct, ProductChanges, ProductFilter};
use crate::catalog::{CategoryName, EntityId, Price, ProductName, SearchText};
use crate::error::{ApiError, ApiResult};

/// An argument as the client sent it, and the validated value the catalog takes instead.
pub trait Argument {
    type Parsed;
    fn parse(self) -> ApiResult<Self::Parsed>;
}

/// An id argument is a row id; anything else is refused with BAD_USER_INPUT.
impl Argument for ID {
    type Parsed = i32;
    fn parse(self) -> ApiResult<i32> {
        Ok(EntityId::parse(&self)?.0)
    }
}

#[derive(InputObject, Default)]
#[graphql(name = "ProductFilter")]
pub struct ProductFilterInput {
    pub category_id: Option<ID>,
    pub min_price: Option<Decimal>,
    pub max_price: Option<Decimal>,
    /// Case-insensitive substring of the product name or its category's name.
    pub search: Option<String>,
}

impl ProductFilterInput {
    pub fn parse(self) -> ApiResult<ProductFilter> {
        let min_price = self.min_price.map(Price::parse).transpose()?;
        let max_price = self.max_price.map(Price::parse).transpose()?;
        if let (Some(min), Some(max)) = (min_price, max_price)
            && min > max
        {
            return Err(ApiError::bad_input(
                "`minPrice` must not be greater than `maxPrice`",
            ));
        }
        let search = self
            .search
            .as_deref()
            .map(SearchText::parse)
            .transpose()?
            .flatten()
            .map(SearchText::into_inner);
        Ok(ProductFilter {
            category_id: EntityId::parse_optional(self.category_id.as_ref())?,
            min_price,
            max_price,
            search,
        })
    }
}

#[derive(InputObject)]
pub struct CreateProductInput {
    pub name: String,
    pub price: Decimal,
    pub category_id: ID,
}

impl Argument for CreateProductInput {
    type Parsed = NewProduct;
    fn parse(self) -> ApiResult<NewProduct> {
        Ok(NewProduct {
            name: ProductName::parse(&self.name)?,
            price: Price::parse(self.price)?,
            category_id: EntityId::parse(&self.category_id)?.0,
        })
    }
}

/// Only the fields given are changed.
#[derive(InputObject)]
pub struct UpdateProductInput {
    pub name: Option<String>,
    pub price: Option<Decimal>,
    pub category_id: Option<ID>,
}

impl Argument for UpdateProductInput {
    type Parsed = ProductChanges;
    fn parse(self) -> ApiResult<ProductChanges> {
        Ok(ProductChanges {
            name: self.name.as_deref().map(ProductName::parse).transpose()?,
            price: self.price.map(Price::parse).transpose()?,
            category_id: EntityId::parse_optional(self.category_id.as_ref())?,
        })
    }
}

#[derive(InputObject)]
pub struct CategoryInput {
    pub name: String,
}

impl Argument for CategoryInput {
    type Parsed = CategoryName;
    fn parse(self) -> ApiResult<CategoryName> {
        CategoryName::parse(&self.name)
    }
}

#[derive(InputObject)]
pub struct PriceUpdateInput {
    pub id: ID,
    pub price: Decimal,
}

impl Argument for PriceUpdateInput {
    type Parsed = (i32, Price);
    fn parse(self) -> ApiResult<(i32, Price)> {
        Ok((EntityId::parse(&self.id)?.0, Price::parse(self.price)?))
    }
}
