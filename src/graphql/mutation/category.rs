//! Category mutations: the same write-then-invalidate shape as products; a rename also
//! retires product lists and searches, which show category names.

use async_graphql::ID;

use crate::catalog::categories;
use crate::graphql::types::Category;
use crate::graphql::types::inputs::CategoryInput;

mutation_fields! {
    CategoryMutation {
        /// Creates a category; names are unique.
        create_category(input: CategoryInput) -> Category = categories::create;
        update_category(id: ID, input: CategoryInput) -> Category = categories::update;
        /// Deletes an empty category and returns its id; a category with products is refused.
        delete_category(id: ID) -> ID = categories::delete;
    }
}
