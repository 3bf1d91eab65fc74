//! The optional in-process first tier in front of Redis (`CATALOG_CACHE_LOCAL_TIER=true`).
//!
//! Hits from the first tier cost no network round trip. Coherence across instances uses the
//! same versioned tags as Redis: every invalidation is published on a Redis channel, each
//! instance records the new tag versions it hears, and a local entry older than any of its
//! tags' versions is stale. The invalidation delay between instances is the pub/sub delivery
//! time. While the subscription is down the first tier is bypassed and emptied, so a missed
//! message can never leave a stale local entry; entries also expire after a short TTL.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;

use super::redis::RedisStorage;
use super::{BackendStats, CacheStorage, Lookup, StorageError, is_fresh};
use crate::cache::entry::Entry;
use crate::telemetry::Metrics;

pub struct TieredStorage {
    remote: Arc<RedisStorage>,
    local: moka::future::Cache<String, Arc<Entry>>,
    versions: Arc<moka::sync::Cache<String, u64>>,
    subscribed: Arc<AtomicBool>,
}

impl TieredStorage {
    pub fn new(
        remote: RedisStorage,
        redis_url: &str,
        capacity_bytes: u64,
        ttl: Duration,
        tag_ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StorageError> {
        let local = moka::future::Cache::builder()
            .max_capacity(capacity_bytes)
            .weigher(|key: &String, value: &Arc<Entry>| {
                (key.len() + value.weight()).min(u32::MAX as usize) as u32
            })
            .eviction_listener(move |_key, _value, cause| {
                if cause == moka::notification::RemovalCause::Size {
                    metrics.cache_evictions.inc();
                }
            })
            .time_to_live(ttl)
            .build();
        let versions = Arc::new(
            moka::sync::Cache::builder()
                .time_to_live(tag_ttl)
                .max_capacity(1_000_000)
                .build(),
        );
        let subscribed = Arc::new(AtomicBool::new(false));
        let client = redis::Client::open(redis_url)
            .map_err(|error| StorageError::Unavailable(error.to_string()))?;
        tokio::spawn(listen(
            client,
            remote.channel(),
            local.clone(),
            Arc::clone(&versions),
            Arc::clone(&subscribed),
        ));
        Ok(TieredStorage {
            remote: Arc::new(remote),
            local,
            versions,
            subscribed,
        })
    }

    fn record_versions(
        versions: &moka::sync::Cache<String, u64>,
        seq: u64,
        tags: impl IntoIterator<Item = String>,
    ) {
        for tag in tags {
            if versions.get(&tag).is_none_or(|known| known < seq) {
                versions.insert(tag, seq);
            }
        }
    }
}

/// Keeps a subscription to the invalidation channel, reconnecting with backoff.
async fn listen(
    client: redis::Client,
    channel: String,
    local: moka::future::Cache<String, Arc<Entry>>,
    versions: Arc<moka::sync::Cache<String, u64>>,
    subscribed: Arc<AtomicBool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if let Ok(mut pubsub) = client.get_async_pubsub().await
            && pubsub.subscribe(&channel).await.is_ok()
        {
            // Anything cached before this moment may have missed a message.
            local.invalidate_all();
            subscribed.store(true, Ordering::SeqCst);
            backoff = Duration::from_millis(100);
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                let Ok(payload) = message.get_payload::<String>() else {
                    continue;
                };
                let mut words = payload.split(' ');
                let Some(seq) = words.next().and_then(|word| word.parse::<u64>().ok()) else {
                    continue;
                };
                TieredStorage::record_versions(
                    &versions,
                    seq,
                    words.filter(|word| !word.is_empty()).map(str::to_owned),
                );
            }
            subscribed.store(false, Ordering::SeqCst);
            local.invalidate_all();
            tracing::warn!(
                "lost the cache invalidation subscription; the first tier is off until it returns"
            );
        }
        if Arc::strong_count(&versions) == 1 {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[async_trait]
impl CacheStorage for TieredStorage {
    fn name(&self) -> &'static str {
        "redis+local"
    }

    async fn lookup(&self, key: &str) -> Result<Lookup, StorageError> {
        let local_tier = self.subscribed.load(Ordering::SeqCst);
        if local_tier && let Some(entry) = self.local.get(key).await {
            if is_fresh(
                entry.seq,
                entry.tags.iter().map(|tag| self.versions.get(tag)),
            ) {
                return Ok(Lookup::Hit(entry));
            }
            self.local.invalidate(key).await;
        }
        let found = self.remote.lookup(key).await?;
        if local_tier && let Lookup::Hit(entry) = &found {
            self.local.insert(key.to_owned(), Arc::clone(entry)).await;
        }
        Ok(found)
    }

    async fn sequence(&self) -> Result<u64, StorageError> {
        self.remote.sequence().await
    }

    async fn store(&self, key: &str, entry: Arc<Entry>, ttl: Duration) -> Result<(), StorageError> {
        self.remote.store(key, Arc::clone(&entry), ttl).await?;
        if self.subscribed.load(Ordering::SeqCst) {
            self.local.insert(key.to_owned(), entry).await;
        }
        Ok(())
    }

    async fn invalidate(&self, tags: &[String]) -> Result<u64, StorageError> {
        let seq = self.remote.invalidate(tags).await?;
        // Our own first tier learns at once, without waiting for the message to come back.
        Self::record_versions(&self.versions, seq, tags.iter().cloned());
        Ok(seq)
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.remote.get(key).await
    }

    async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), StorageError> {
        self.remote.set(key, value, ttl).await
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.remote.delete(key).await
    }

    async fn add_counters(
        &self,
        counters: &[(String, i64)],
        ttl: Duration,
    ) -> Result<(), StorageError> {
        self.remote.add_counters(counters, ttl).await
    }

    async fn counters(&self, keys: &[String]) -> Result<Vec<i64>, StorageError> {
        self.remote.counters(keys).await
    }

    async fn push_samples(
        &self,
        samples: &[(String, Vec<f64>)],
        keep: usize,
    ) -> Result<(), StorageError> {
        self.remote.push_samples(samples, keep).await
    }

    async fn samples(&self, key: &str) -> Result<Vec<f64>, StorageError> {
        self.remote.samples(key).await
    }

    async fn rank_add(&self, key: &str, scores: &[(String, f64)]) -> Result<(), StorageError> {
        self.remote.rank_add(key, scores).await
    }

    async fn rank_top(&self, key: &str, count: usize) -> Result<Vec<String>, StorageError> {
        self.remote.rank_top(key, count).await
    }

    async fn clear(&self) -> Result<u64, StorageError> {
        self.local.invalidate_all();
        self.remote.clear().await
    }

    async fn stats(&self) -> Result<BackendStats, StorageError> {
        let mut stats = self.remote.stats().await?;
        stats.backend = "redis+local".into();
        Ok(stats)
    }
}
