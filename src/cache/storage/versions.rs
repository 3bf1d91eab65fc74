//! Tag versions kept in process memory, by the in-process backend and by the first tier.
//!
//! Versions only ever rise (a late or replayed message cannot lower one), and the map is
//! bounded: a version evicted for capacity raises a floor below which every entry counts as
//! unprovable. Losing bookkeeping can therefore make entries stale, never fresh.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::notification::RemovalCause;
use moka::ops::compute::Op;

use crate::cache::entry::Entry;

pub struct TagVersions {
    versions: moka::sync::Cache<String, u64>,
    floor: Arc<AtomicU64>,
}

/// What the versions say about an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Fresh,
    Stale,
    /// Filled before the floor: the versions that could prove it fresh may be gone.
    Unprovable,
}

impl TagVersions {
    /// `ttl` must exceed the longest an entry is kept (its TTL plus the longest stale window)
    /// plus the longest fill (see `crate::cache::TAG_TTL`).
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        let floor = Arc::new(AtomicU64::new(0));
        let evicted = Arc::clone(&floor);
        let versions = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .time_to_live(ttl)
            .eviction_listener(move |_tag, version: u64, cause| {
                if cause == RemovalCause::Size {
                    evicted.fetch_max(version, Ordering::SeqCst);
                }
            })
            .build();
        TagVersions { versions, floor }
    }

    /// Records that `tag` changed at `version`, unless a newer change is already known.
    pub fn raise(&self, tag: &str, version: u64) {
        self.versions
            .entry_by_ref(tag)
            .and_compute_with(|known| match known {
                Some(known) if *known.value() >= version => Op::Nop,
                _ => Op::Put(version),
            });
    }

    /// Makes every entry filled before `version` unprovable.
    pub fn raise_floor(&self, version: u64) {
        self.floor.fetch_max(version, Ordering::SeqCst);
    }

    pub fn verdict(&self, entry: &Entry) -> Verdict {
        let fresh = entry.tags.iter().all(|tag| {
            self.versions
                .get(tag)
                .is_none_or(|version| version <= entry.seq)
        });
        // Read after the versions: an eviction that removed one of them raised the floor
        // before this read, or left the version in place.
        if entry.seq < self.floor.load(Ordering::SeqCst) {
            Verdict::Unprovable
        } else if fresh {
            Verdict::Fresh
        } else {
            Verdict::Stale
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, tags: &[&str]) -> Entry {
        Entry {
            seq,
            tags: tags.iter().map(|tag| (*tag).to_owned()).collect(),
            etag: String::new(),
            max_age: 60,
            fresh_until: u64::MAX,
            body: bytes::Bytes::new(),
            encoded: Default::default(),
        }
    }

    #[test]
    fn versions_never_go_backwards() {
        let versions = TagVersions::new(100, Duration::from_secs(60));
        versions.raise("Product:1", 9);
        versions.raise("Product:1", 4);
        assert_eq!(versions.verdict(&entry(5, &["Product:1"])), Verdict::Stale);
        assert_eq!(versions.verdict(&entry(9, &["Product:1"])), Verdict::Fresh);
    }

    #[test]
    fn an_evicted_version_makes_older_entries_unprovable_not_fresh() {
        let versions = TagVersions::new(10, Duration::from_secs(60));
        for id in 0..1_000u64 {
            versions.raise(&format!("Product:{id}"), id + 1);
        }
        versions.versions.run_pending_tasks();
        let lost = (0..1_000u64)
            .find(|id| versions.versions.get(&format!("Product:{id}")).is_none())
            .expect("capacity evicted some versions");
        assert_eq!(
            versions.verdict(&entry(lost, &[&format!("Product:{lost}")])),
            Verdict::Unprovable
        );
    }
}
