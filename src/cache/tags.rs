//! Cache tags: what a cached result depends on, and what a committed mutation changed.
//!
//! While a query executes, resolvers record the entities it returns (`Product:42`,
//! `Category:7`) and the lists it read (all products, one category's products, the category
//! list). A mutation names the tags it changed; every entry holding one of them is stale.
//! `TagSet::normalized` drops entity tags that a list tag in the same set already covers
//! (any change to product 42 in category 7 also changes "the products of category 7"), so a
//! 100-product list carries one tag, not a hundred, and a lookup checks one version.
//!
//! Both sides are bounded whatever the query or mutation: an entry carries at most
//! [`MAX_TAGS_PER_ENTRY`] tags (many entity tags collapse into the list tags that cover them)
//! and an invalidation stamps at most [`MAX_TAGS_PER_INVALIDATION`] (many products collapse
//! into `Products:any`, which every entry holding a product tag also carries).
//!
//! What a mutation wrote says what it changed ([`Announce`]), so a resolver cannot write
//! without retiring the tags its write touched.

use std::collections::{BTreeMap, BTreeSet};

use parking_lot::Mutex;

use crate::catalog::products::ProductWrite;
use crate::entities::category;

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
    /// Carried by every entry that holds a `Product` tag; stamped instead of the individual
    /// product tags by invalidations that change more products than one may name.
    AnyProduct,
}

/// Most tags one entry's result carries (a hit checks this many versions at most, and one
/// more on a private entry: its owner's `Token:<hash>`).
pub const MAX_TAGS_PER_ENTRY: usize = 16;
/// Most product tags one invalidation names; past it, `AnyProduct` stands for them.
pub const MAX_PRODUCT_TAGS_PER_INVALIDATION: usize = 32;
/// Most tags one invalidation stamps: up to 32 product tags (or `AnyProduct`), up to 32
/// category lists (or all lists), and the four other kinds.
pub const MAX_TAGS_PER_INVALIDATION: usize = 2 * MAX_PRODUCT_TAGS_PER_INVALIDATION + 4;

impl Tag {
    /// The tag's name in the cache backend (stable: it is part of stored entries).
    pub fn key(&self) -> String {
        match self {
            Tag::Product(id) => format!("Product:{id}"),
            Tag::Category(id) => format!("Category:{id}"),
            Tag::AllProducts => "Products".to_owned(),
            Tag::CategoryProducts(id) => format!("Products:category:{id}"),
            Tag::Categories => "Categories".to_owned(),
            Tag::AnyProduct => "Products:any".to_owned(),
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
            set.product_categories.insert(product_id, category_id);
        }
    }

    pub fn take(&self) -> TagSet {
        std::mem::take(&mut *self.tags.lock())
    }
}

#[derive(Debug, Default, Clone)]
pub struct TagSet {
    tags: BTreeSet<Tag>,
    /// The category of each product recorded with one.
    product_categories: BTreeMap<i32, i32>,
}

impl TagSet {
    /// The tags an entry of this set carries: the smallest set invalidated by every mutation
    /// that invalidates this set, collapsed into coarser tags past [`MAX_TAGS_PER_ENTRY`], and
    /// `AnyProduct` beside any product tag.
    pub fn normalized(&self) -> Vec<Tag> {
        let mut tags = self.covered();
        if tags.len() + 1 > MAX_TAGS_PER_ENTRY {
            tags = self.collapsed(tags);
        }
        if tags.iter().any(|tag| matches!(tag, Tag::Product(_))) {
            tags.push(Tag::AnyProduct);
        }
        tags
    }

    /// Coarser tags for the same entry: a product becomes its category's list (or all
    /// lists), a category becomes all lists; if that is still too many, all lists alone.
    /// Sound because every change to a product or category also stamps these list tags.
    fn collapsed(&self, tags: Vec<Tag>) -> Vec<Tag> {
        let category_of = |product_id: i32| self.product_categories.get(&product_id).copied();
        let coarse: BTreeSet<Tag> = tags
            .into_iter()
            .map(|tag| match tag {
                Tag::Product(id) => category_of(id).map_or(Tag::AllProducts, Tag::CategoryProducts),
                Tag::Category(_) => Tag::AllProducts,
                other => other,
            })
            .collect();
        if coarse.len() <= MAX_TAGS_PER_ENTRY {
            return coarse.into_iter().collect();
        }
        coarse
            .into_iter()
            .map(|tag| match tag {
                Tag::CategoryProducts(_) => Tag::AllProducts,
                other => other,
            })
            .collect::<BTreeSet<Tag>>()
            .into_iter()
            .collect()
    }

    fn covered(&self) -> Vec<Tag> {
        let all_products = self.tags.contains(&Tag::AllProducts);
        let categories = self.tags.contains(&Tag::Categories);
        let category_of = |product_id: i32| self.product_categories.get(&product_id).copied();
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

    /// The tags to stamp, at most [`MAX_TAGS_PER_INVALIDATION`]: past
    /// [`MAX_PRODUCT_TAGS_PER_INVALIDATION`] products, `AnyProduct` stands for them, and past
    /// as many categories, all product lists stand for their lists.
    pub fn tags(&self) -> Vec<Tag> {
        let products = self
            .tags
            .iter()
            .filter(|tag| matches!(tag, Tag::Product(_)))
            .count();
        let categories = self
            .tags
            .iter()
            .filter(|tag| matches!(tag, Tag::CategoryProducts(_)))
            .count();
        let mut stamped = BTreeSet::new();
        for tag in &self.tags {
            let tag = match tag {
                Tag::Product(_) if products > MAX_PRODUCT_TAGS_PER_INVALIDATION => Tag::AnyProduct,
                Tag::CategoryProducts(_) if categories > MAX_PRODUCT_TAGS_PER_INVALIDATION => {
                    Tag::AllProducts
                }
                other => *other,
            };
            stamped.insert(tag);
        }
        stamped.into_iter().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }
}

/// A value a committed write returned, which knows what the write changed.
pub trait Announce {
    /// Adds the tags the write of `self` changed to `changes`.
    fn announce(&self, changes: &mut Changes);
}

/// A category created, renamed or deleted.
impl Announce for category::Model {
    fn announce(&self, changes: &mut Changes) {
        changes.category(self.id);
    }
}

/// A product created, updated or deleted, with the categories it left and is now in.
impl Announce for ProductWrite {
    fn announce(&self, changes: &mut Changes) {
        changes.product(
            self.product.id,
            self.before_category_id,
            self.after_category_id,
        );
    }
}

/// The items of a bulk write: each announces its own change.
impl<T: Announce> Announce for Vec<T> {
    fn announce(&self, changes: &mut Changes) {
        for written in self {
            written.announce(changes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::clock::now;
    use crate::entities::product;

    /// Whether the change `describe` announces stamps at least one of the `kept` tags, so that
    /// it retires an entry that kept only those.
    fn reaches(kept: &[Tag], describe: impl FnOnce(&mut Changes) -> &mut Changes) -> bool {
        let mut changes = Changes::default();
        describe(&mut changes);
        changes.tags().iter().any(|tag| kept.contains(tag))
    }

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

        assert!(reaches(&kept, |moved| moved.product(42, Some(7), Some(8))));
        assert!(reaches(&kept, |renamed| renamed.category(7)));
    }

    #[test]
    fn a_single_product_keeps_its_own_tags() {
        let recorder = TagRecorder::default();
        recorder.record_product(42, Some(7));
        recorder.record(Tag::Category(7));
        assert_eq!(
            recorder.take().normalized(),
            vec![Tag::Product(42), Tag::Category(7), Tag::AnyProduct]
        );
    }

    /// Whatever a query reads, its entry carries a bounded number of tags, and every change
    /// to anything it read still stamps one of them.
    #[test]
    fn thousands_of_aliased_products_collapse_into_a_bounded_sound_set() {
        let recorder = TagRecorder::default();
        for id in 0..2_400 {
            recorder.record_product(id, Some(id % 50));
            recorder.record(Tag::Category(id % 50));
        }
        recorder.record_product(9_999, None);
        let kept = recorder.take().normalized();
        assert!(kept.len() <= MAX_TAGS_PER_ENTRY, "{kept:?}");
        for id in [0, 1_234, 2_399, 9_999] {
            let (before, after) = (Some(id % 50), Some((id + 1) % 50));
            assert!(reaches(&kept, |moved| moved.product(id, before, after)));
        }
        assert!(reaches(&kept, |renamed| renamed.category(7)));
    }

    #[test]
    fn a_bulk_change_stamps_a_bounded_set_that_still_reaches_every_product_entry() {
        let mut bulk = Changes::default();
        for id in 0..1_000 {
            bulk.product(id, Some(id % 200), Some((id + 7) % 200));
        }
        let stamped = bulk.tags();
        assert!(
            stamped.len() <= MAX_TAGS_PER_INVALIDATION,
            "{}",
            stamped.len()
        );
        let single = TagRecorder::default();
        single.record_product(517, Some(17));
        single.record(Tag::Category(17));
        let kept = single.take().normalized();
        assert!(stamped.iter().any(|tag| kept.contains(tag)), "{kept:?}");
    }

    /// A product write stamps the lists of the category it left and of the one it entered:
    /// none left by a creation, none entered by a deletion.
    #[test]
    fn a_product_write_announces_the_categories_it_left_and_entered() {
        let in_category = |category_id| product::Model {
            id: 42,
            name: "Lamp".to_owned(),
            name_search: "lamp".to_owned(),
            price_cents: 1_999,
            category_id,
            created_at: now(),
            updated_at: now(),
        };
        let stamped = |written: ProductWrite| {
            let mut changes = Changes::default();
            written.announce(&mut changes);
            changes.tags()
        };
        let lists = |categories: &[i32]| {
            let mut tags = vec![Tag::Product(42), Tag::AllProducts];
            tags.extend(categories.iter().map(|id| Tag::CategoryProducts(*id)));
            tags
        };
        let created = ProductWrite::created(in_category(7));
        assert_eq!(stamped(created), lists(&[7]));
        let moved = ProductWrite::updated(Some(7), in_category(8));
        assert_eq!(stamped(moved), lists(&[7, 8]));
        let deleted = ProductWrite::deleted(in_category(8));
        assert_eq!(stamped(deleted), lists(&[8]));
    }
}
