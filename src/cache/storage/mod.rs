//! Where cache data lives, behind two traits (`ResponseStore` for responses and their tags,
//! `ValueStore` for plain values) with real backends: Redis, a Redis Cluster, an in-process
//! moka cache, and a first tier in front of Redis. `GuardedStorage` wraps them and is the only
//! place that applies command timeouts, records latency and errors, logs an outage once per
//! burst, and stops calling a backend that is down until a probe finds it back.

pub mod cluster;
pub mod guarded;
pub mod known_tags;
pub mod memory;
pub mod redis;
pub mod replica_acks;
pub mod tiered;
pub mod versions;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::entry::Entry;

pub use guarded::GuardedStorage;

/// What every backend call returns.
pub type StorageResult<T> = Result<T, StorageError>;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cache backend timed out after {0:?}")]
    Timeout(Duration),
    #[error("cache backend unavailable: {0}")]
    Unavailable(String),
    #[error("cache backend skipped while it recovers")]
    CircuitOpen,
}

/// What a fill must be at least as new as, read in the same round trip as a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermark {
    /// The invalidation sequence the fill records.
    pub seq: u64,
    /// The highest primary WAL position (a PostgreSQL LSN) recorded by the invalidations up
    /// to `seq` (0 when none recorded one): the fill must read a database that has replayed
    /// it. `None` when the backend lost it (eviction, restart): the fill must establish it
    /// from the primary.
    pub lsn: Option<u64>,
}

/// The result of looking up a response entry. Hit and Stale both mean that no tag of the entry
/// was invalidated after its fill; they differ only in whether its freshness time has passed.
#[derive(Debug)]
pub enum Lookup {
    /// A fresh entry, decoded (in-process tiers keep it decoded, so a hit copies nothing).
    Hit(Arc<Entry>),
    /// An entry that no invalidation retired but whose freshness time has passed (it is kept
    /// for the stale windows), and the watermark a refill records, read after the entry.
    Stale(Arc<Entry>, Watermark),
    /// No fresh entry; a fill records this watermark.
    Miss(Watermark),
    /// An entry filled before the current epoch: its freshness cannot be proven, so it is
    /// not served (counted apart from misses). A fill records the watermark as after a miss.
    Unprovable(Watermark),
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct BackendStats {
    pub backend: String,
    pub version: Option<String>,
    pub used_memory_bytes: Option<u64>,
    pub connected_clients: Option<u64>,
    pub commands_processed: Option<u64>,
    pub prefix_keys: u64,
    pub prefix_bytes: u64,
}

/// Response entries and the bookkeeping that proves them fresh: what the read-through needs,
/// and all a new backend (or a tier in front of one) must implement for responses.
/// Keys are given without the configured prefix; each backend adds it.
#[async_trait]
pub trait ResponseStore: Send + Sync + 'static {
    /// Returns the entry at `key` if none of its tags was invalidated after it was filled:
    /// `Hit` while it is fresh (`Entry::is_fresh_at`), `Stale` with a watermark after that.
    async fn lookup(&self, key: &str) -> StorageResult<Lookup>;
    /// The current invalidation sequence and WAL position (taken before a fill executes) of
    /// the partition `key` is placed in (see `cluster::placement`; one partition unless the
    /// backend is a Redis Cluster): a fill of any key with the same placement may record it.
    async fn sequence(&self, key: &str) -> StorageResult<Watermark>;
    /// Keeps `entry` for `ttl`, which covers its freshness and any stale window after it.
    async fn store(&self, key: &str, entry: Arc<Entry>, ttl: Duration) -> StorageResult<()>;
    /// Advances the invalidation sequence and stamps every tag with it, and raises the
    /// recorded WAL position to `lsn` (atomically with the sequence), in every partition;
    /// returns each partition's new sequence, by partition.
    async fn invalidate(&self, tags: &[String], lsn: Option<u64>) -> StorageResult<Vec<u64>>;
    /// Returns once every other instance's first tier has heard the invalidations up to
    /// `sequences` (as `invalidate` returned them) or has stopped serving (`leases.rs`);
    /// returns how many instances lost their lease meanwhile. Nothing to wait for without
    /// first tiers.
    async fn settle(&self, _sequences: &[u64]) -> StorageResult<u64> {
        Ok(0)
    }

    /// Sets the recorded WAL position when the backend lost it (`Watermark::lsn` is `None`);
    /// `lsn` must have been read from the primary after that watermark was.
    async fn establish_position(&self, _lsn: u64) -> StorageResult<()> {
        Ok(())
    }

    /// Deletes every key under this server's prefix (management only; never on a request path).
    async fn clear(&self) -> StorageResult<u64>;
    async fn stats(&self) -> StorageResult<BackendStats>;
}

/// One member of a bounded collection (persisted documents, recorded operations).
#[derive(Debug, Clone)]
pub struct BoundedMember<'a> {
    /// The collection's name.
    pub collection: &'a str,
    pub key: &'a str,
    pub value: Vec<u8>,
    /// How long the member lives.
    pub ttl: Duration,
    /// The most live members the collection keeps.
    pub capacity: usize,
}

/// Plain values beside the responses: persisted documents, counters, samples and rankings
/// (the monitor). A first tier does not cache these; it shares its backend's.
#[async_trait]
pub trait ValueStore: Send + Sync + 'static {
    async fn get(&self, key: &str) -> StorageResult<Option<Vec<u8>>>;
    async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration) -> StorageResult<()>;
    async fn delete(&self, key: &str) -> StorageResult<()>;
    /// Sets a member of a bounded collection: once the collection holds more than its
    /// capacity, the least recently set members are deleted, so it never holds more than
    /// `capacity` live keys.
    async fn set_bounded(&self, member: BoundedMember<'_>) -> StorageResult<()>;

    /// Adds to counters (creating them), each expiring after `ttl`.
    async fn add_counters(&self, counters: &[(String, i64)], ttl: Duration) -> StorageResult<()>;
    async fn counters(&self, keys: &[String]) -> StorageResult<Vec<i64>>;
    /// Appends samples to bounded lists that keep the newest `keep`.
    async fn push_samples(&self, samples: &[(String, Vec<f64>)], keep: usize) -> StorageResult<()>;
    async fn samples(&self, key: &str) -> StorageResult<Vec<f64>>;
    /// Adds scores to members of a ranking, and reads its top members.
    async fn rank_add(&self, key: &str, scores: &[(String, f64)]) -> StorageResult<()>;
    async fn rank_top(&self, key: &str, count: usize) -> StorageResult<Vec<String>>;
    /// Keeps only the `keep` highest members of a ranking, which expires after `ttl` unless
    /// trimmed again.
    async fn rank_trim(&self, key: &str, keep: usize, ttl: Duration) -> StorageResult<()>;
}
