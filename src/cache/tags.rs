//! Cache tags: what a cached result depends on, and what a committed mutation changed.
//!
//! While a query executes, resolvers record the entities it returns (`Product:42`,
//! `Category:7`) and the lists it read (all products, one category's products, the category
//! list). A mutation names the tags it changed; every entry holding one of them is stale.
//! `TagSet::normalized` drops entity tags that a list tag in the same set already covers
//! (any change to product 42 in category 7 also changes "the products of category 7"), so a
//! 100-product list carries one tag, not a hundred, and a lookup checks one version.

use std::collections::BTreeSet;

use parking_lot::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tag {
    /// One product by id (also recorded when the lookup found nothing: creation changes it).
    Product(i32),
    /// One category by id.
    Category(i32),
    /// Any product list not narrowed to one category, product totals and aggregates.
    AllProducts,
    /// Product lists and counts narrowed to one category.
    CategoryProducts(i32),
    /// The list of categories and per-category aggregates.
    Categories,
}

impl Tag {
    /// The tag's name in the cache backend (stable: it is part of stored entries).
    pub fn key(&self) -> String {
        match self {
            Tag::Product(id) => format!("Product:{id}"),
            Tag::Category(id) => format!("Category:{id}"),
            Tag::AllProducts => "Products".to_owned(),
            Tag::CategoryProducts(id) => format!("Products:category:{id}"),
            Tag::Categories => "Categories".to_owned(),
        }
    }
}

/// The tags one execution recorded; shared by all resolvers of a request.
#[derive(Debug, Default)]
pub struct TagRecorder {
    tags: Mutex<TagSet>,
}

impl TagRecorder {
    pub fn record(&self, tag: Tag) {
        self.tags.lock().tags.insert(tag);
    }

    /// A product result: its category is remembered so that list tags can cover it.
    pub fn record_product(&self, product_id: i32, category_id: Option<i32>) {
        let mut set = self.tags.lock();
        set.tags.insert(Tag::Product(product_id));
        if let Some(category_id) = category_id {
            set.product_categories.insert((product_id, category_id));
        }
    }

    pub fn take(&self) -> TagSet {
        std::mem::take(&mut *self.tags.lock())
    }
}

#[derive(Debug, Default, Clone)]
pub struct TagSet {
    tags: BTreeSet<Tag>,
    product_categories: BTreeSet<(i32, i32)>,
}

impl TagSet {
    /// The smallest set of tags that is invalidated by every mutation that invalidates this set.
    pub fn normalized(&self) -> Vec<Tag> {
        let all_products = self.tags.contains(&Tag::AllProducts);
        let categories = self.tags.contains(&Tag::Categories);
        let category_of = |product_id: i32| {
            self.product_categories
                .iter()
                .find(|(id, _)| *id == product_id)
                .map(|(_, category)| *category)
        };
        self.tags
            .iter()
            .copied()
            .filter(|tag| match tag {
                Tag::Product(id) => {
                    let covered_by_category = category_of(*id).is_some_and(|category| {
                        self.tags.contains(&Tag::CategoryProducts(category))
                    });
                    !(all_products || covered_by_category)
                }
                Tag::Category(id) => {
                    !(all_products || categories || self.tags.contains(&Tag::CategoryProducts(*id)))
                }
                _ => true,
            })
            .collect()
    }
}

/// What a committed mutation changed, as the tags it invalidates.
#[derive(Debug, Default, Clone)]
pub struct Changes {
    tags: BTreeSet<Tag>,
}

impl Changes {
    /// A product was created, updated or deleted; it was in `before` and is now in `after`.
    pub fn product(
        &mut self,
        product_id: i32,
        before: Option<i32>,
        after: Option<i32>,
    ) -> &mut Self {
        self.tags.insert(Tag::Product(product_id));
        self.tags.insert(Tag::AllProducts);
        for category in [before, after].into_iter().flatten() {
            self.tags.insert(Tag::CategoryProducts(category));
        }
        self
    }

    /// A category was created, renamed or deleted: its name appears in product lists and search.
    pub fn category(&mut self, category_id: i32) -> &mut Self {
        self.tags.extend([
            Tag::Category(category_id),
            Tag::Categories,
            Tag::AllProducts,
            Tag::CategoryProducts(category_id),
        ]);
        self
    }

    pub fn tags(&self) -> impl Iterator<Item = &Tag> {
        self.tags.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Coverage is only sound if every mutation that changes a dropped tag also changes the
    /// tag that covers it; this checks the rule against the mutations' own change sets.
    #[test]
    fn every_dropped_tag_is_invalidated_by_the_changes_that_invalidate_it() {
        let recorder = TagRecorder::default();
        recorder.record(Tag::CategoryProducts(7));
        recorder.record_product(42, Some(7));
        recorder.record(Tag::Category(7));
        let kept = recorder.take().normalized();
        assert_eq!(kept, vec![Tag::CategoryProducts(7)]);

        let mut moved = Changes::default();
        moved.product(42, Some(7), Some(8));
        assert!(moved.tags().any(|tag| kept.contains(tag)));
        let mut renamed = Changes::default();
        renamed.category(7);
        assert!(renamed.tags().any(|tag| kept.contains(tag)));
    }

    #[test]
    fn a_single_product_keeps_its_own_tags() {
        let recorder = TagRecorder::default();
        recorder.record_product(42, Some(7));
        recorder.record(Tag::Category(7));
        assert_eq!(
            recorder.take().normalized(),
            vec![Tag::Product(42), Tag::Category(7)]
        );
    }
}
