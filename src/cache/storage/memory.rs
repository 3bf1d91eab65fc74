//! The in-process backend (moka): the embedded default when no Redis is configured, and the
//! model the Redis backend follows: the same versioned-tag freshness rule, in memory.
//!
//! Entries are bounded in bytes and expire per entry; tag versions expire after the longest an
//! entry is kept (`TAG_TTL`), so bookkeeping never outgrows the entries it guards.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::Expiry;
use moka::notification::RemovalCause;
use parking_lot::Mutex;

use super::versions::{TagVersions, Verdict};
use super::{
    BackendStats, BoundedMember, Lookup, ResponseStore, StorageResult, ValueStore, Watermark,
};
use crate::cache::entry::{Entry, now_millis};
use crate::telemetry::Metrics;

/// A value with its own time to live: raw bytes (persisted queries, tokens, operation
/// documents) or a decoded response entry, kept decoded so a hit copies nothing.
#[derive(Clone)]
enum Stored {
    Bytes(Arc<Vec<u8>>, Duration),
    Entry(Arc<Entry>, Duration),
}

impl Stored {
    fn ttl(&self) -> Duration {
        match self {
            Stored::Bytes(_, ttl) | Stored::Entry(_, ttl) => *ttl,
        }
    }

    fn weight(&self) -> usize {
        match self {
            Stored::Bytes(bytes, _) => bytes.len(),
            Stored::Entry(entry, _) => entry.weight(),
        }
    }
}

struct PerEntryTtl;

impl Expiry<String, Stored> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Stored,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl())
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &Stored,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl())
    }
}

pub struct MemoryStorage {
    values: moka::future::Cache<String, Stored>,
    tag_versions: TagVersions,
    sequence: AtomicU64,
    /// The highest WAL position invalidations recorded (never lost in process: never `None`).
    lsn: AtomicU64,
    counters: Mutex<HashMap<String, i64>>,
    samples: Mutex<HashMap<String, VecDeque<f64>>>,
    rankings: Mutex<HashMap<String, HashMap<String, f64>>>,
    /// The members of each bounded collection, least recently set first.
    collections: Mutex<HashMap<String, VecDeque<String>>>,
}

impl MemoryStorage {
    /// `capacity_bytes` bounds entries; `tag_ttl` must exceed the longest an entry is kept
    /// (its TTL plus the longest stale window, see `crate::cache::TAG_TTL`).
    pub fn new(capacity_bytes: u64, tag_ttl: Duration, metrics: Option<Arc<Metrics>>) -> Self {
        let values = moka::future::Cache::builder()
            .max_capacity(capacity_bytes)
            .weigher(|key: &String, value: &Stored| {
                (key.len() + value.weight()).min(u32::MAX as usize) as u32
            })
            .expire_after(PerEntryTtl)
            .eviction_listener(move |_key, _value, cause| {
                if cause == RemovalCause::Size
                    && let Some(metrics) = &metrics
                {
                    metrics.cache_evictions.inc();
                }
            })
            .build();
        MemoryStorage {
            values,
            tag_versions: TagVersions::new(1_000_000, tag_ttl),
            sequence: AtomicU64::new(0),
            lsn: AtomicU64::new(0),
            counters: Mutex::new(HashMap::new()),
            samples: Mutex::new(HashMap::new()),
            rankings: Mutex::new(HashMap::new()),
            collections: Mutex::new(HashMap::new()),
        }
    }
}

impl MemoryStorage {
    /// The sequence is read before the position: a position raised for a later sequence only
    /// makes the fill more demanding, never less.
    fn watermark(&self) -> Watermark {
        let seq = self.sequence.load(Ordering::SeqCst);
        Watermark {
            seq,
            lsn: Some(self.lsn.load(Ordering::SeqCst)),
        }
    }
}

#[async_trait]
impl ResponseStore for MemoryStorage {
    async fn lookup(&self, key: &str) -> StorageResult<Lookup> {
        let mark = self.watermark();
        let Some(Stored::Entry(entry, _)) = self.values.get(key).await else {
            return Ok(Lookup::Miss(mark));
        };
        match self.tag_versions.verdict(&entry) {
            Verdict::Fresh if entry.is_fresh_at(now_millis()) => Ok(Lookup::Hit(entry)),
            Verdict::Fresh => Ok(Lookup::Stale(entry, mark)),
            Verdict::Stale => {
                self.values.invalidate(key).await;
                Ok(Lookup::Miss(mark))
            }
            Verdict::Unprovable => {
                self.values.invalidate(key).await;
                Ok(Lookup::Unprovable(mark))
            }
        }
    }
    async fn sequence(&self, _key: &str) -> StorageResult<Watermark> {
        Ok(self.watermark())
    }
    async fn store(&self, key: &str, entry: Arc<Entry>, ttl: Duration) -> StorageResult<()> {
        self.values
            .insert(key.to_owned(), Stored::Entry(entry, ttl))
            .await;
        Ok(())
    }
    async fn invalidate(&self, tags: &[String], lsn: Option<u64>) -> StorageResult<Vec<u64>> {
        // Raised before the sequence: whoever reads the new sequence also reads this position.
        if let Some(lsn) = lsn {
            self.lsn.fetch_max(lsn, Ordering::SeqCst);
        }
        let seq = self.sequence.fetch_add(1, Ordering::SeqCst) + 1;
        for tag in tags {
            self.tag_versions.raise(tag, seq);
        }
        Ok(vec![seq])
    }
    async fn clear(&self) -> StorageResult<u64> {
        let count = self.values.entry_count();
        self.values.invalidate_all();
        self.counters.lock().clear();
        self.samples.lock().clear();
        self.rankings.lock().clear();
        self.collections.lock().clear();
        Ok(count)
    }
    async fn stats(&self) -> StorageResult<BackendStats> {
        self.values.run_pending_tasks().await;
        Ok(BackendStats {
            backend: "memory".into(),
            prefix_keys: self.values.entry_count(),
            prefix_bytes: self.values.weighted_size(),
            ..BackendStats::default()
        })
    }
}

#[async_trait]
impl ValueStore for MemoryStorage {
    async fn get(&self, key: &str) -> StorageResult<Option<Vec<u8>>> {
        Ok(match self.values.get(key).await {
            Some(Stored::Bytes(bytes, _)) => Some(bytes.as_ref().clone()),
            _ => None,
        })
    }
    async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration) -> StorageResult<()> {
        self.values
            .insert(key.to_owned(), Stored::Bytes(Arc::new(value), ttl))
            .await;
        Ok(())
    }
    async fn delete(&self, key: &str) -> StorageResult<()> {
        self.values.invalidate(key).await;
        Ok(())
    }
    async fn add_counters(&self, counters: &[(String, i64)], _ttl: Duration) -> StorageResult<()> {
        let mut stored = self.counters.lock();
        for (key, delta) in counters {
            *stored.entry(key.clone()).or_default() += delta;
        }
        Ok(())
    }
    async fn counters(&self, keys: &[String]) -> StorageResult<Vec<i64>> {
        let stored = self.counters.lock();
        Ok(keys
            .iter()
            .map(|key| stored.get(key).copied().unwrap_or(0))
            .collect())
    }
    async fn push_samples(&self, samples: &[(String, Vec<f64>)], keep: usize) -> StorageResult<()> {
        let mut stored = self.samples.lock();
        for (key, values) in samples {
            let list = stored.entry(key.clone()).or_default();
            for value in values {
                list.push_front(*value);
            }
            list.truncate(keep);
        }
        Ok(())
    }
    async fn samples(&self, key: &str) -> StorageResult<Vec<f64>> {
        Ok(self
            .samples
            .lock()
            .get(key)
            .map(|list| list.iter().copied().collect())
            .unwrap_or_default())
    }
    async fn rank_add(&self, key: &str, scores: &[(String, f64)]) -> StorageResult<()> {
        let mut rankings = self.rankings.lock();
        let ranking = rankings.entry(key.to_owned()).or_default();
        for (member, score) in scores {
            *ranking.entry(member.clone()).or_default() += score;
        }
        Ok(())
    }
    async fn rank_top(&self, key: &str, count: usize) -> StorageResult<Vec<String>> {
        let rankings = self.rankings.lock();
        let mut members: Vec<(&String, &f64)> = rankings
            .get(key)
            .map(|ranking| ranking.iter().collect())
            .unwrap_or_default();
        members.sort_by(|a, b| b.1.total_cmp(a.1).then_with(|| a.0.cmp(b.0)));
        Ok(members
            .into_iter()
            .take(count)
            .map(|(member, _)| member.clone())
            .collect())
    }

    async fn set_bounded(&self, member: BoundedMember<'_>) -> StorageResult<()> {
        let BoundedMember {
            collection,
            key,
            value,
            ttl,
            capacity,
        } = member;
        let evicted: Vec<String> = {
            let mut collections = self.collections.lock();
            let members = collections.entry(collection.to_owned()).or_default();
            members.retain(|member| member != key);
            members.push_back(key.to_owned());
            let excess = members.len().saturating_sub(capacity.max(1));
            members.drain(..excess).collect()
        };
        self.set(key, value, ttl).await?;
        for member in evicted {
            self.values.invalidate(&member).await;
        }
        Ok(())
    }

    async fn rank_trim(&self, key: &str, keep: usize, _ttl: Duration) -> StorageResult<()> {
        let mut rankings = self.rankings.lock();
        let Some(ranking) = rankings.get_mut(key) else {
            return Ok(());
        };
        if ranking.len() <= keep {
            return Ok(());
        }
        let mut members: Vec<(String, f64)> = ranking.drain().collect();
        members.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        members.truncate(keep);
        ranking.extend(members);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, fresh_until: u64) -> Arc<Entry> {
        Arc::new(Entry {
            seq,
            tags: vec!["Product:1".into()],
            etag: "\"e\"".into(),
            max_age: 60,
            fresh_until,
            body: bytes::Bytes::from_static(b"{}"),
            encoded: Default::default(),
        })
    }

    #[tokio::test]
    async fn an_expired_entry_is_stale_until_a_tag_retires_it_then_a_miss() {
        let storage = MemoryStorage::new(1 << 20, Duration::from_secs(60), None);
        let now = now_millis();
        storage
            .store("fresh", entry(0, now + 60_000), Duration::from_secs(60))
            .await
            .expect("store");
        storage
            .store("expired", entry(0, now - 1_000), Duration::from_secs(60))
            .await
            .expect("store");
        assert!(matches!(storage.lookup("fresh").await, Ok(Lookup::Hit(_))));
        assert!(matches!(
            storage.lookup("expired").await,
            Ok(Lookup::Stale(_, Watermark { seq: 0, .. }))
        ));
        storage
            .invalidate(&["Product:1".into()], None)
            .await
            .expect("invalidate");
        for key in ["fresh", "expired"] {
            assert!(
                matches!(
                    storage.lookup(key).await,
                    Ok(Lookup::Miss(Watermark { seq: 1, .. }))
                ),
                "{key} is retired"
            );
        }
    }
}
