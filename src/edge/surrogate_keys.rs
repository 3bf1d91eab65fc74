//! Surrogate keys: the cache tags of a public response, in the headers CDNs read
//! (`Surrogate-Key` for Fastly and Varnish's xkey, `Cache-Tag` for Cloudflare).
//!
//! The edge names are the origin's tag names with `:` turned into `-` (Akamai refuses
//! colons) behind the configured prefix. When a response's tags exceed the edge's limits,
//! fine tags give way to the coarser tags that cover them: every product, category and
//! per-category list tag to `Products`, which every product and category change stamps
//! (`cache::tags::Changes`), and at last `Products` alone. Nothing is dropped without its
//! cover, so a purge of what a mutation stamped always reaches the edge copy.

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use crate::cache::tags::Tag;
use crate::config::Config;

/// The tag every coarsened tag falls back to: stamped by every product and category change.
const COVER: &str = "Products";
/// The deployment's tag, carried by every tagged response while it fits: purging it empties
/// the edge of this deployment (`cache clear`, or an outbox too large to name tag by tag).
pub const ALL: &str = "all";

/// Turns origin tag names into edge tag names.
#[derive(Debug, Clone, Default)]
pub struct EdgeNames {
    prefix: String,
}

impl EdgeNames {
    pub fn from_config(config: &Config) -> Self {
        EdgeNames {
            prefix: config.edge_tag_prefix.clone(),
        }
    }

    /// The edge's name for an origin tag name (`Product:42` -> `<prefix>Product-42`).
    pub fn name(&self, origin_key: &str) -> String {
        let mut name = String::with_capacity(self.prefix.len() + origin_key.len());
        name.push_str(&self.prefix);
        name.extend(origin_key.chars().map(|c| if c == ':' { '-' } else { c }));
        name
    }

    /// The edge names of the tags an invalidation stamped.
    pub fn of_tags(&self, tags: &[Tag]) -> Vec<String> {
        tags.iter().map(|tag| self.name(&tag.key())).collect()
    }

    /// The deployment's tag.
    pub fn all(&self) -> String {
        self.name(ALL)
    }
}

/// How one configured header separates its tags.
#[derive(Debug, Clone)]
struct TagHeader {
    name: HeaderName,
    separator: char,
}

/// Writes a response's tags into the configured headers, within the edge's limits.
#[derive(Debug, Clone)]
pub struct SurrogateKeys {
    headers: Vec<TagHeader>,
    names: EdgeNames,
    max_bytes: usize,
    max_count: usize,
}

impl SurrogateKeys {
    /// `None` when tags are off or no header is named.
    pub fn from_config(config: &Config) -> Option<Self> {
        let headers: Vec<TagHeader> = config
            .edge_tag_headers
            .iter()
            .map(|name| name.trim())
            .filter(|name| !name.is_empty())
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .map(|name| {
                // Cloudflare's `Cache-Tag` and Akamai's `Edge-Cache-Tag` are comma separated;
                // Fastly's and xkey's `Surrogate-Key` space separated.
                let separator = if name.as_str().ends_with("cache-tag") {
                    ','
                } else {
                    ' '
                };
                TagHeader { name, separator }
            })
            .collect();
        let on = config
            .edge_tags
            .unwrap_or(config.edge_purge != crate::config::EdgePurgeBackend::None);
        if !on || headers.is_empty() {
            return None;
        }
        Some(SurrogateKeys {
            headers,
            names: EdgeNames::from_config(config),
            max_bytes: config.edge_tag_max_bytes,
            max_count: config.edge_tag_max_count,
        })
    }

    /// The edge tags of an entry tagged `origin_keys`: as fine as the limits allow.
    pub fn tags(&self, origin_keys: &[String]) -> Vec<String> {
        let fine: Vec<String> = origin_keys.iter().map(|key| self.names.name(key)).collect();
        let mut tags = self.fitting(fine).unwrap_or_else(|| {
            let coarse = coarsened(origin_keys)
                .iter()
                .map(|key| self.names.name(key))
                .collect();
            self.fitting(coarse)
                .unwrap_or_else(|| vec![self.names.name(COVER)])
        });
        let mut with_all = tags.clone();
        with_all.push(self.names.all());
        if self.fits(&with_all) {
            tags = with_all;
        }
        tags
    }

    fn fitting(&self, mut tags: Vec<String>) -> Option<Vec<String>> {
        tags.sort();
        tags.dedup();
        self.fits(&tags).then_some(tags)
    }

    fn fits(&self, tags: &[String]) -> bool {
        let bytes = tags.iter().map(String::len).sum::<usize>() + tags.len().saturating_sub(1);
        tags.len() <= self.max_count && bytes <= self.max_bytes
    }

    /// Adds the tag headers for an entry tagged `origin_keys` (nothing for an untagged one).
    pub fn insert(&self, headers: &mut HeaderMap, origin_keys: &[String]) {
        if origin_keys.is_empty() {
            return;
        }
        let tags = self.tags(origin_keys);
        for header in &self.headers {
            let mut value = String::with_capacity(self.max_bytes.min(1024));
            for (index, tag) in tags.iter().enumerate() {
                if index > 0 {
                    value.push(header.separator);
                }
                value.push_str(tag);
            }
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(header.name.clone(), value);
            }
        }
    }
}

/// Per-entity and per-category tags replaced by `Products`, which covers them.
fn coarsened(origin_keys: &[String]) -> Vec<String> {
    origin_keys
        .iter()
        .map(|key| {
            let entity = key.starts_with("Product:")
                || key.starts_with("Category:")
                || key.starts_with("Products:category:");
            if entity {
                COVER.to_owned()
            } else {
                key.clone()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::tags::{Changes, TagRecorder};

    fn keys(max_bytes: usize, max_count: usize) -> SurrogateKeys {
        let mut config = Config::for_database("sqlite::memory:");
        config.edge_tag_prefix = "shop.".to_owned();
        config.edge_tag_max_bytes = max_bytes;
        config.edge_tag_max_count = max_count;
        config.edge_tags = Some(true);
        SurrogateKeys::from_config(&config).expect("tags are on")
    }

    fn origin(tags: &[Tag]) -> Vec<String> {
        tags.iter().map(Tag::key).collect()
    }

    /// Whether a purge of what `describe` stamps reaches an edge copy tagged `edge_tags`.
    fn purges(edge_tags: &[String], describe: impl FnOnce(&mut Changes) -> &mut Changes) -> bool {
        let mut changes = Changes::default();
        describe(&mut changes);
        let purged = EdgeNames {
            prefix: "shop.".to_owned(),
        }
        .of_tags(&changes.tags());
        purged.iter().any(|tag| edge_tags.contains(tag))
    }

    #[test]
    fn edge_names_carry_the_prefix_and_no_colon() {
        let entry = origin(&[Tag::Product(42), Tag::CategoryProducts(7)]);
        assert_eq!(
            keys(16 * 1024, 128).tags(&entry),
            vec!["shop.Product-42", "shop.Products-category-7", "shop.all"]
        );
    }

    /// Coarsening never loses coverage: with every limit, each change that invalidates the
    /// origin entry also purges the edge copy.
    #[test]
    fn coarsened_tags_are_purged_by_every_change_that_invalidates_the_entry() {
        let recorder = TagRecorder::default();
        for id in 0..100 {
            recorder.record_product(id, Some(id % 9));
            recorder.record(Tag::Category(id % 9));
        }
        recorder.record_product(5_000, None);
        recorder.record(Tag::Categories);
        let entry = origin(&recorder.take().normalized());
        for (max_bytes, max_count) in [(16 * 1024, 128), (64, 128), (16 * 1024, 2), (64, 1)] {
            let tags = keys(max_bytes, max_count).tags(&entry);
            assert!(tags.len() <= max_count.max(1), "{tags:?}");
            for id in [0, 57, 99, 5_000] {
                let (before, after) = (Some(id % 9), Some((id + 1) % 9));
                assert!(
                    purges(&tags, |moved| moved.product(id, before, after)),
                    "{tags:?}"
                );
                assert!(purges(&tags, |deleted| deleted.product(id, before, None)));
            }
            assert!(purges(&tags, |renamed| renamed.category(3)), "{tags:?}");
            let mut bulk = Changes::default();
            for id in 0..1_000 {
                bulk.product(id, Some(id % 200), Some((id + 1) % 200));
            }
            assert!(purges(&tags, |changes| {
                *changes = bulk.clone();
                changes
            }));
        }
    }

    #[test]
    fn a_tight_limit_falls_back_to_the_cover_tag() {
        let entry = origin(&[Tag::Product(1), Tag::Category(2), Tag::AnyProduct]);
        assert_eq!(keys(64, 1).tags(&entry), vec!["shop.Products"]);
        assert_eq!(
            keys(64, 2).tags(&entry),
            vec!["shop.Products", "shop.Products-any"]
        );
    }

    #[test]
    fn headers_use_each_cdns_separator() {
        let mut headers = HeaderMap::new();
        keys(16 * 1024, 128).insert(&mut headers, &origin(&[Tag::Product(1), Tag::Category(2)]));
        assert_eq!(
            headers["surrogate-key"],
            "shop.Category-2 shop.Product-1 shop.all"
        );
        assert_eq!(
            headers["cache-tag"],
            "shop.Category-2,shop.Product-1,shop.all"
        );
    }
}
