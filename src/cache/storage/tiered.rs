//! The optional in-process first tier in front of Redis (`CATALOG_CACHE_LOCAL_TIER=true`).
//!
//! Hits from the first tier cost no network round trip. Coherence across instances uses the
//! same versioned tags as Redis: every invalidation is published on a Redis channel with its
//! sequence number, and each instance records the versions it hears. Anything that could
//! hide a message (a reconnect, a gap in sequence numbers, a new epoch, a ping that goes
//! unanswered on a half-open connection) starts a new generation: nothing filled before it
//! is served locally again. Local entries live at most the configured TTL (60 s at most).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;

use super::redis::RedisStorage;
use super::versions::{TagVersions, Verdict};
use super::{BackendStats, Lookup, ResponseStore, StorageError, Watermark};
use crate::cache::entry::Entry;
use crate::telemetry::Metrics;

/// How often the subscription is pinged; an unanswered ping ends it (a half-open connection).
const KEEPALIVE: Duration = Duration::from_secs(1);

/// A local entry and the generation it was fetched in.
#[derive(Clone)]
struct LocalEntry {
    entry: Arc<Entry>,
    generation: u64,
}

/// What the listener and the lookups share.
struct Coherence {
    versions: TagVersions,
    /// True while the subscription is known to be live.
    subscribed: AtomicBool,
    /// Advanced whenever a message may have been missed.
    generation: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Coherence {
    /// The generation lookups may use now, or `None` while the first tier is off.
    fn current(&self) -> Option<u64> {
        let generation = self.generation.load(Ordering::SeqCst);
        self.subscribed.load(Ordering::SeqCst).then_some(generation)
    }

    fn gap(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.metrics.cache_first_tier_gaps.inc();
    }
}

pub struct TieredStorage {
    remote: Arc<RedisStorage>,
    local: moka::future::Cache<String, LocalEntry>,
    coherence: Arc<Coherence>,
}

impl TieredStorage {
    pub fn new(
        remote: Arc<RedisStorage>,
        redis_url: &str,
        capacity_bytes: u64,
        ttl: Duration,
        tag_ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StorageError> {
        let evictions = Arc::clone(&metrics);
        let local = moka::future::Cache::builder()
            .max_capacity(capacity_bytes)
            .weigher(|key: &String, value: &LocalEntry| {
                (key.len() + value.entry.weight()).min(u32::MAX as usize) as u32
            })
            .eviction_listener(move |_key, _value, cause| {
                if cause == moka::notification::RemovalCause::Size {
                    evictions.cache_evictions.inc();
                }
            })
            .time_to_live(ttl)
            .build();
        let coherence = Arc::new(Coherence {
            versions: TagVersions::new(1_000_000, tag_ttl),
            subscribed: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            metrics,
        });
        let client = redis::Client::open(redis_url)
            .map_err(|error| StorageError::Unavailable(error.to_string()))?;
        tokio::spawn(listen(
            client,
            remote.channel(),
            remote.sequence_key(),
            Arc::downgrade(&coherence),
        ));
        Ok(TieredStorage {
            remote,
            local,
            coherence,
        })
    }
}

/// Keeps a subscription to the invalidation channel, reconnecting with backoff, until the
/// storage is dropped.
async fn listen(
    client: redis::Client,
    channel: String,
    sequence_key: String,
    coherence: std::sync::Weak<Coherence>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let was_live = follow(&client, &channel, &sequence_key, &coherence).await;
        let Some(strong) = coherence.upgrade() else {
            return;
        };
        strong.subscribed.store(false, Ordering::SeqCst);
        strong.gap();
        drop(strong);
        if was_live {
            backoff = Duration::from_millis(100);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Follows the channel until the subscription ends or the storage is dropped; true if the
/// subscription was live.
async fn follow(
    client: &redis::Client,
    channel: &str,
    sequence_key: &str,
    coherence: &std::sync::Weak<Coherence>,
) -> bool {
    let Ok(mut pubsub) = client.get_async_pubsub().await else {
        return false;
    };
    if pubsub.subscribe(channel).await.is_err() {
        return false;
    }
    // The sequence after subscribing: every later invalidation arrives as a message, so a
    // message numbered past `last + 1` means one was missed.
    let Ok(mut connection) = client.get_multiplexed_async_connection().await else {
        return false;
    };
    let Ok(current) = redis::cmd("GET")
        .arg(sequence_key)
        .query_async::<Option<u64>>(&mut connection)
        .await
    else {
        return false;
    };
    drop(connection);
    let mut last = current.unwrap_or(0);
    {
        let Some(coherence) = coherence.upgrade() else {
            return false;
        };
        // Whatever was cached before this moment may have missed a message.
        coherence.gap();
        coherence.subscribed.store(true, Ordering::SeqCst);
    }
    let (mut sink, mut messages) = pubsub.split();
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.tick().await;
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else { break };
                let Ok(payload) = message.get_payload::<String>() else { continue };
                let mut words = payload.split(' ');
                let Some(seq) = words.next().and_then(|word| word.parse::<u64>().ok()) else {
                    continue;
                };
                let tags: Vec<&str> = words.filter(|word| !word.is_empty()).collect();
                let Some(coherence) = coherence.upgrade() else { return true };
                for tag in &tags {
                    coherence.versions.raise(tag, seq);
                }
                let new_epoch = tags.first() == Some(&"*");
                if new_epoch || seq > last.saturating_add(1) {
                    // A missed message or lost bookkeeping: nothing older may be served.
                    coherence.versions.raise_floor(seq);
                    coherence.gap();
                }
                last = last.max(seq);
            }
            _ = keepalive.tick() => {
                if coherence.strong_count() == 0 {
                    return true;
                }
                let answered = tokio::time::timeout(KEEPALIVE, sink.ping::<redis::Value>()).await;
                if !matches!(answered, Ok(Ok(_))) {
                    break;
                }
            }
        }
    }
    tracing::warn!(
        "lost the cache invalidation subscription; the first tier is off until it returns"
    );
    true
}

#[async_trait]
impl ResponseStore for TieredStorage {
    fn name(&self) -> &'static str {
        "redis+local"
    }
    async fn lookup(&self, key: &str) -> Result<Lookup, StorageError> {
        let generation = self.coherence.current();
        if let Some(generation) = generation
            && let Some(local) = self.local.get(key).await
        {
            if local.generation == generation
                && self.coherence.versions.verdict(&local.entry) == Verdict::Fresh
            {
                return Ok(Lookup::Hit(local.entry));
            }
            self.local.invalidate(key).await;
        }
        let found = self.remote.lookup(key).await?;
        if let (Some(generation), Lookup::Hit(entry)) = (generation, &found) {
            let local = LocalEntry {
                entry: Arc::clone(entry),
                generation,
            };
            self.local.insert(key.to_owned(), local).await;
        }
        Ok(found)
    }
    async fn sequence(&self) -> Result<Watermark, StorageError> {
        self.remote.sequence().await
    }
    async fn store(&self, key: &str, entry: Arc<Entry>, ttl: Duration) -> Result<(), StorageError> {
        // The generation before the store: a gap during it leaves the local copy unusable.
        let generation = self.coherence.current();
        self.remote.store(key, Arc::clone(&entry), ttl).await?;
        if let Some(generation) = generation {
            self.local
                .insert(key.to_owned(), LocalEntry { entry, generation })
                .await;
        }
        Ok(())
    }
    async fn invalidate(&self, tags: &[String], lsn: Option<u64>) -> Result<u64, StorageError> {
        let seq = self.remote.invalidate(tags, lsn).await?;
        // Our own first tier learns at once, without waiting for the message to come back.
        for tag in tags {
            self.coherence.versions.raise(tag, seq);
        }
        Ok(seq)
    }
    async fn establish_position(&self, lsn: u64) -> Result<(), StorageError> {
        self.remote.establish_position(lsn).await
    }
    async fn clear(&self) -> Result<u64, StorageError> {
        self.coherence.gap();
        self.local.invalidate_all();
        self.remote.clear().await
    }
    async fn stats(&self) -> Result<BackendStats, StorageError> {
        let mut stats = self.remote.stats().await?;
        stats.backend = "redis+local".into();
        Ok(stats)
    }
}
