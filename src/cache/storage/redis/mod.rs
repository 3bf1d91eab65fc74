//! The Redis backend (deadpool-redis), on one Redis or a Redis Cluster. A lookup is one round
//! trip: a Lua script reads the entry, compares its tags' versions with the sequence it was
//! filled at, and returns it or the current sequence; once this instance knows the entry's
//! tags, plain reads do the same without a script (`known_tags.rs`). An invalidation is one
//! round trip too (per node on a cluster): it advances the sequence, stamps each tag and
//! publishes the change for other instances' first tiers. On a cluster the bookkeeping is
//! partitioned so that every script stays in one hash slot (`cluster.rs` explains the
//! layout), and an invalidation is acknowledged only once a replica of each partition's
//! primary has it (`WAIT`), so a failover cannot lose it. No request path uses KEYS or SCAN; only `clear` and `stats`
//! (management commands) scan, on every primary, and only this server's prefix.
//!
//! The folder, one file a role: `connection.rs` (topology, pool, the shared connections and
//! the identity check on each new one), `scripts.rs` with `lua/` (the Lua scripts and where the
//! bookkeeping lives), `admin.rs` (keys, primaries, clear, stats), `values.rs` (the value
//! store), `invalidation.rs` (cluster invalidation and its `WAIT`s); this file is the response
//! store itself.

mod admin;
mod connection;
mod invalidation;
pub mod leases;
mod scripts;
#[cfg(test)]
mod tests;
mod values;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::{PoolConfig, Runtime, Timeouts};
use redis::Script;
use redis::aio::ConnectionLike;

pub use connection::{CLUSTER_SCHEME, Connection, RedisPool, Topology};
use connection::{ResetOnDrop, SHARED_CONNECTIONS, Shared, unavailable};
use invalidation::REPLICA_WAIT_SHARE;
use scripts::{
    BookkeepingKeys, ClusterScripts, Layout, SET_BOUNDED, SingleScripts, cluster_call, single_call,
};

use super::cluster::{self, Partitions};
use super::known_tags::{KnownTags, Verdict, judge};
use super::replica_acks::ReplicaAcks;
use super::{BackendStats, Lookup, ResponseStore, StorageError, StorageResult, Watermark};
use crate::cache::entry::{Entry, now_millis};
use crate::telemetry::Metrics;
use leases::Leases;

pub struct RedisStorage {
    compress_above: usize,
    pool: RedisPool,
    shared: Vec<parking_lot::Mutex<Option<Shared>>>,
    /// On a cluster, invalidations use a connection of their own: the `WAIT` after them blocks
    /// the connection it is sent on, and must not hold up lookups.
    invalidations: parking_lot::Mutex<Option<Shared>>,
    making: tokio::sync::Mutex<()>,
    next: std::sync::atomic::AtomicUsize,
    prefix: String,
    topology: Topology,
    tag_ttl: Duration,
    /// How long an invalidation waits for replicas (see `REPLICA_WAIT_SHARE`).
    replica_wait: Duration,
    /// On a cluster, one `WAIT` per partition stands for every invalidation it covers.
    replica_acks: ReplicaAcks,
    layout: Layout,
    set_bounded: Script,
    metrics: Arc<Metrics>,
    warned_about_eviction: std::sync::atomic::AtomicBool,
    /// The tags of entries this instance stored or served: a hit on them needs no script.
    known_tags: KnownTags,
    /// First tiers' leases: a writer waits for every leased instance (`leases.rs`).
    leases: Leases,
}

impl RedisStorage {
    /// `partitions` applies to a cluster only; one Redis keeps its single-partition layout.
    #[expect(
        clippy::too_many_arguments,
        reason = "the backend's settings, each used once"
    )]
    pub fn new(
        url: &str,
        prefix: &str,
        partitions: usize,
        pool_size: usize,
        connect_timeout: Duration,
        command_timeout: Duration,
        tag_ttl: Duration,
        compress_above: usize,
        first_tier_lease: Duration,
        metrics: Arc<Metrics>,
    ) -> StorageResult<Self> {
        let pool_config = PoolConfig {
            max_size: pool_size,
            timeouts: Timeouts {
                wait: Some(connect_timeout),
                create: Some(connect_timeout),
                recycle: Some(connect_timeout),
            },
            ..PoolConfig::default()
        };
        let topology = Topology::parse(url);
        let (pool, layout) = match &topology {
            Topology::Single(url) => {
                let mut config = deadpool_redis::Config::from_url(url);
                config.pool = Some(pool_config);
                let pool = config
                    .create_pool(Some(Runtime::Tokio1))
                    .map_err(unavailable)?;
                let layout = Layout::Single {
                    keys: BookkeepingKeys {
                        sequence: format!("{prefix}seq"),
                        floor: format!("{prefix}floor"),
                        position: format!("{prefix}lsn"),
                        tag_prefix: format!("{prefix}tag:"),
                        channel: format!("{prefix}invalidations"),
                    },
                    scripts: SingleScripts::new(),
                };
                (RedisPool::Single(pool), layout)
            }
            Topology::Cluster(nodes) => {
                let mut config = deadpool_redis::cluster::Config::from_urls(nodes.clone());
                config.pool = Some(pool_config);
                let pool = config
                    .create_pool(Some(Runtime::Tokio1))
                    .map_err(unavailable)?;
                let layout = Layout::Cluster {
                    partitions: Partitions::new(prefix, partitions),
                    scripts: ClusterScripts::new(),
                    values: cluster::values_tag(prefix),
                };
                (RedisPool::Cluster(pool), layout)
            }
        };
        Ok(RedisStorage {
            compress_above,
            shared: (0..SHARED_CONNECTIONS.min(pool_size.max(1)))
                .map(|_| parking_lot::Mutex::new(None))
                .collect(),
            invalidations: parking_lot::Mutex::new(None),
            making: tokio::sync::Mutex::new(()),
            next: std::sync::atomic::AtomicUsize::new(0),
            pool,
            prefix: prefix.to_owned(),
            topology,
            tag_ttl,
            replica_wait: command_timeout / REPLICA_WAIT_SHARE,
            replica_acks: ReplicaAcks::new(match &layout {
                Layout::Cluster { partitions, .. } => partitions.count(),
                Layout::Single { .. } => 0,
            }),
            layout,
            set_bounded: Script::new(SET_BOUNDED),
            metrics,
            warned_about_eviction: std::sync::atomic::AtomicBool::new(false),
            known_tags: KnownTags::default(),
            leases: Leases::new(prefix, first_tier_lease, command_timeout),
        })
    }

    /// The registry of first-tier leases.
    pub fn leases(&self) -> &Leases {
        &self.leases
    }

    pub fn pool(&self) -> &RedisPool {
        &self.pool
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// How many partitions (each with its own sequence and channel) the bookkeeping has.
    pub fn partitions(&self) -> usize {
        match &self.layout {
            Layout::Single { .. } => 1,
            Layout::Cluster { partitions, .. } => partitions.count(),
        }
    }

    /// The partition a response key's sequence and stamps live in.
    pub fn partition_of(&self, key: &str) -> usize {
        match &self.layout {
            Layout::Single { .. } => 0,
            Layout::Cluster { partitions, .. } => partitions.of(key),
        }
    }

    /// The pub/sub channel on which a partition's invalidations are announced (sharded pub/sub
    /// on a cluster).
    pub fn channel(&self, partition: usize) -> String {
        match &self.layout {
            Layout::Single { keys, .. } => keys.channel.clone(),
            Layout::Cluster { partitions, .. } => partitions.channel(partition).to_owned(),
        }
    }

    /// Reads a partition's invalidation sequence as it stands (first tiers read it when they
    /// subscribe): `None` when the bookkeeping is missing.
    pub async fn current_sequence(
        &self,
        connection: &mut impl ConnectionLike,
        partition: usize,
    ) -> redis::RedisResult<Option<u64>> {
        match &self.layout {
            Layout::Single { keys, .. } => {
                redis::cmd("GET")
                    .arg(&keys.sequence)
                    .query_async(connection)
                    .await
            }
            Layout::Cluster { partitions, .. } => {
                redis::cmd("HGET")
                    .arg(partitions.book(partition))
                    .arg("#seq")
                    .query_async(connection)
                    .await
            }
        }
    }

    /// The full key of a response entry or token validation (tests, management).
    pub fn entry_key(&self, key: &str) -> String {
        match &self.layout {
            Layout::Single { .. } => format!("{}{key}", self.prefix),
            Layout::Cluster { partitions, .. } => partitions.entry(partitions.of(key), key),
        }
    }

    /// A fresh entry proven by plain reads (see `known_tags`), or `None` when only the lookup
    /// script may decide: one `MGET` of the entry, the floor and the stamps of the entry's
    /// known tags on one Redis; a pipelined `GET` and `HMGET` of one slot on a cluster. Only a
    /// hit is decided here: a miss needs the watermark the script reads (and on a cluster
    /// its check of the node's identity), and every extra value read costs each hit.
    async fn hit_without_script(
        &self,
        connection: &mut Connection,
        key: &str,
    ) -> StorageResult<Option<Entry>> {
        let Some(known) = self.known_tags.get(key) else {
            return Ok(None);
        };
        let (entry, mut marks): (Option<Vec<u8>>, Vec<Option<Vec<u8>>>) = match &self.layout {
            Layout::Single { keys, .. } => {
                let mut read = redis::cmd("MGET");
                read.arg(format!("{}{key}", self.prefix))
                    .arg(keys.floor.as_str());
                for tag in known.iter() {
                    read.arg([keys.tag_prefix.as_bytes(), tag.as_bytes()].concat());
                }
                let mut values: Vec<Option<Vec<u8>>> = read
                    .query_async(connection)
                    .await
                    .map_err(|error| self.failed(error))?;
                if values.is_empty() {
                    return Ok(None);
                }
                let entry = values.remove(0);
                (entry, values)
            }
            Layout::Cluster { partitions, .. } => {
                let partition = partitions.of(key);
                // The entry first: stamps read after it can only be newer.
                let mut read = redis::pipe();
                read.cmd("GET").arg(partitions.entry(partition, key));
                read.cmd("HMGET")
                    .arg(partitions.book(partition))
                    .arg("#floor")
                    .arg(&*known);
                read.query_async(connection)
                    .await
                    .map_err(|error| self.failed(error))?
            }
        };
        if marks.len() != known.len() + 1 {
            return Ok(None);
        }
        let floor = marks.remove(0);
        Ok(match judge(entry, floor.as_deref(), &known, &marks) {
            Verdict::Fresh(entry) => Some(entry),
            _ => None,
        })
    }

    /// An entry the tags prove unretired: a hit while it is fresh, else stale with the
    /// watermark a refill needs (one more round trip, paid only by an expired entry; the
    /// scripts stay as they were, since time is judged here, not in Lua).
    async fn judged_by_time(&self, key: &str, entry: Entry) -> StorageResult<Lookup> {
        if entry.is_fresh_at(now_millis()) {
            return Ok(Lookup::Hit(Arc::new(entry)));
        }
        let mark = self.sequence(key).await?;
        Ok(Lookup::Stale(Arc::new(entry), mark))
    }
}

#[async_trait]
impl ResponseStore for RedisStorage {
    async fn lookup(&self, key: &str) -> StorageResult<Lookup> {
        let mut connection = self.connection().await?;
        if let Some(entry) = self.hit_without_script(&mut connection, key).await? {
            return self.judged_by_time(key, entry).await;
        }
        let mut lookup = self.layout.entry_call(
            &self.prefix,
            key,
            |single| &single.lookup,
            |cluster| &cluster.lookup,
        );
        if let Layout::Single { keys, .. } = &self.layout {
            lookup.arg(keys.tag_prefix.as_str());
        }
        let (found, value, lsn): (i64, Vec<u8>, Vec<u8>) = lookup
            .invoke_async(&mut connection)
            .await
            .map_err(|error| self.failed(error))?;
        if found == 1 {
            let entry = Entry::decode(bytes::Bytes::from(value))
                .map_err(|error| StorageError::Unavailable(error.to_string()))?;
            self.known_tags.remember(key, &entry.tags);
            return self.judged_by_time(key, entry).await;
        }
        let mark = Watermark {
            seq: parse_sequence(&value)?,
            lsn: parse_position(&lsn)?,
        };
        Ok(if found == 2 {
            Lookup::Unprovable(mark)
        } else {
            Lookup::Miss(mark)
        })
    }
    async fn sequence(&self, key: &str) -> StorageResult<Watermark> {
        let mut connection = self.connection().await?;
        let read: redis::RedisResult<(Vec<u8>, Vec<u8>)> = match &self.layout {
            Layout::Single { keys, scripts } => {
                single_call(keys, &scripts.sequence)
                    .invoke_async(&mut connection)
                    .await
            }
            Layout::Cluster {
                partitions,
                scripts,
                ..
            } => {
                cluster_call(partitions, &scripts.sequence, partitions.of(key))
                    .invoke_async(&mut connection)
                    .await
            }
        };
        let (seq, lsn) = read.map_err(|error| self.failed(error))?;
        Ok(Watermark {
            seq: parse_sequence(&seq)?,
            lsn: parse_position(&lsn)?,
        })
    }
    async fn establish_position(&self, lsn: u64) -> StorageResult<()> {
        let mut connection = self.connection().await?;
        // On a cluster in every partition, only where it is unknown: any commit recorded
        // before now is at or before it.
        let calls = self.layout.everywhere(
            |single| &single.establish_position,
            |cluster| &cluster.establish_position,
        );
        for mut call in calls {
            call.arg(lsn)
                .invoke_async::<i64>(&mut connection)
                .await
                .map_err(|error| self.failed(error))?;
        }
        Ok(())
    }
    async fn store(&self, key: &str, entry: Arc<Entry>, ttl: Duration) -> StorageResult<()> {
        let mut connection = self.connection().await?;
        self.layout
            .entry_call(
                &self.prefix,
                key,
                |single| &single.store,
                |cluster| &cluster.store,
            )
            .arg(entry.seq)
            .arg(entry.encode(self.compress_above))
            .arg(ttl.as_secs().max(1))
            .invoke_async::<i64>(&mut connection)
            .await
            .map_err(|error| self.failed(error))?;
        self.known_tags.remember(key, &entry.tags);
        Ok(())
    }
    async fn invalidate(&self, tags: &[String], lsn: Option<u64>) -> StorageResult<Vec<u64>> {
        let lsn = lsn.map(|lsn| lsn.to_string()).unwrap_or_default();
        match &self.layout {
            Layout::Single { keys, scripts } => {
                let mut connection = self.connection().await?;
                let mut invocation = single_call(keys, &scripts.invalidate);
                invocation
                    .arg(keys.tag_prefix.as_str())
                    .arg(self.tag_ttl.as_secs().max(1));
                for tag in tags {
                    invocation.arg(tag);
                }
                invocation.arg(lsn);
                let seq: Vec<u8> = invocation
                    .invoke_async(&mut connection)
                    .await
                    .map_err(|error| self.failed(error))?;
                Ok(vec![parse_sequence(&seq)?])
            }
            Layout::Cluster {
                partitions,
                scripts,
                ..
            } => {
                // An invalidation that fails or is cut off by its timeout leaves its connection
                // behind: the retry starts from a fresh slot map and fresh node connections
                // (the lookups' connections stay; they only ever need one partition).
                let unfinished = ResetOnDrop(&self.invalidations);
                let connection = self.connection_in(&self.invalidations).await?;
                let sequences = self
                    .invalidate_cluster(&connection, partitions, &scripts.invalidate, tags, &lsn)
                    .await?;
                std::mem::forget(unfinished);
                Ok(sequences)
            }
        }
    }
    async fn settle(&self, sequences: &[u64]) -> StorageResult<u64> {
        self.leases.settle(self, None, sequences).await
    }
    async fn clear(&self) -> StorageResult<u64> {
        self.clear_prefix().await
    }
    async fn stats(&self) -> StorageResult<BackendStats> {
        self.prefix_stats().await
    }
}

pub(super) fn parse_sequence(value: &[u8]) -> StorageResult<u64> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| StorageError::Unavailable("the cache sequence is not a number".into()))
}

/// A WAL position as the scripts return it: '' when unknown.
pub(super) fn parse_position(value: &[u8]) -> StorageResult<Option<u64>> {
    if value.is_empty() {
        return Ok(None);
    }
    parse_sequence(value)
        .map(Some)
        .map_err(|_| StorageError::Unavailable("the cache's WAL position is not a number".into()))
}
