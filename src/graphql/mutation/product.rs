//! Product mutations: validate, write in one transaction, then announce the changed tags so
//! the cache retires what the write made stale before the response is sent.

use async_graphql::ID;

use crate::catalog::products;
use crate::graphql::types::Product;
use crate::graphql::types::inputs::{CreateProductInput, PriceUpdateInput, UpdateProductInput};

mutation_fields! {
    ProductMutation {
        create_product(input: CreateProductInput) -> Product = products::create;
        /// Changes only the fields given in `input`.
        update_product(id: ID, input: UpdateProductInput) -> Product = products::update;
        /// Deletes a product and returns its id.
        delete_product(id: ID) -> ID = products::delete;
        /// Creates up to 1,000 products in one transaction: all of them or none.
        bulk_create_products(inputs: Vec<CreateProductInput>) -> Vec<Product> = products::create_many;
        /// Sets up to 1,000 prices in one transaction: all of them or none. Answers in the order
        /// of `updates`; a product id given twice is refused with BAD_USER_INPUT.
        bulk_update_prices(updates: Vec<PriceUpdateInput>) -> Vec<Product> = products::update_prices;
    }
}
