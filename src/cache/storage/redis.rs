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

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::{Pool, PoolConfig, Runtime, Timeouts};
use redis::aio::ConnectionLike;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{AsyncCommands, Script};

use super::cluster::{self, Partitions};
use super::known_tags::{KnownTags, Verdict, judge};
use super::leases::Leases;
use super::replica_acks::ReplicaAcks;
use super::{
    BackendStats, BoundedMember, Lookup, ResponseStore, StorageError, StorageResult, ValueStore,
    Watermark,
};
use crate::cache::entry::{Entry, now_millis};
use crate::telemetry::Metrics;

/// `REDIS_URL` naming a cluster: `redis+cluster://host:port,host:port,...` (any reachable
/// nodes; the client learns the rest and follows MOVED/ASK redirections).
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

/// How long an invalidation waits, at most, for a replica of each partition's primary to
/// acknowledge it (`WAIT 1`), as a share of the command timeout (the scripts take the rest). A primary with no replica in sync has nothing a
/// failover could promote with the invalidation, so it is not waited for.
const REPLICA_WAIT_SHARE: u32 = 2;

/// Where the cache's Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    Single(String),
    /// The nodes' `redis://` URLs.
    Cluster(Vec<String>),
}

impl Topology {
    pub fn parse(url: &str) -> Topology {
        match url.strip_prefix(CLUSTER_SCHEME) {
            Some(nodes) => Topology::Cluster(
                nodes
                    .split(',')
                    .map(str::trim)
                    .filter(|node| !node.is_empty())
                    .map(|node| format!("redis://{node}"))
                    .collect(),
            ),
            None => Topology::Single(url.to_owned()),
        }
    }
}

/// The connection pool, for `/metrics`.
#[derive(Clone)]
pub enum RedisPool {
    Single(Pool),
    Cluster(deadpool_redis::cluster::Pool),
}

impl RedisPool {
    pub fn status(&self) -> deadpool_redis::Status {
        match self {
            RedisPool::Single(pool) => pool.status(),
            RedisPool::Cluster(pool) => pool.status(),
        }
    }
}

/// One multiplexed connection: to the one Redis, or to every node of the cluster.
#[derive(Clone)]
pub enum Connection {
    Single(redis::aio::MultiplexedConnection),
    Cluster(ClusterConnection),
    /// Records what would be sent, answering nil (the slot test below).
    #[cfg(test)]
    Recording(tests::Recorder),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Connection::Single(connection) => connection.req_packed_command(cmd),
            Connection::Cluster(connection) => connection.req_packed_command(cmd),
            #[cfg(test)]
            Connection::Recording(recorder) => recorder.command(cmd),
        }
    }
    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Connection::Single(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            Connection::Cluster(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            #[cfg(test)]
            Connection::Recording(recorder) => recorder.pipeline(pipeline, count),
        }
    }
    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(connection) => connection.get_db(),
            Connection::Cluster(connection) => connection.get_db(),
            #[cfg(test)]
            Connection::Recording(_) => 0,
        }
    }
}

// KEYS[1] = the collection (a sorted set of its members' keys, scored by when each was set),
// KEYS[2] = the key; ARGV[1] = value, ARGV[2] = TTL (s), ARGV[3] = capacity, ARGV[4] = clock
// (ms). Forgets members that expired, sets the key, then deletes the least recently set
// members beyond the capacity.
const SET_BOUNDED: &str = r#"
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[4]) - ttl * 1000)
redis.call('SET', KEYS[2], ARGV[1], 'EX', ttl)
redis.call('ZADD', KEYS[1], ARGV[4], KEYS[2])
local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[3])
if excess > 0 then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, excess - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, excess - 1)
  redis.call('DEL', unpack(oldest))
end
redis.call('EXPIRE', KEYS[1], ttl)
return 1
"#;

// Every script starts with this: the epoch floor. Entries filled below it are unprovable (the
// bookkeeping that could prove them fresh may be gone). When the floor key is missing (Redis
// restarted empty, `cache clear`, eviction) a new epoch starts above every sequence handed out
// (the client passes its clock in microseconds, so the sequence never goes backwards even when
// its own key was lost) and first tiers are told to drop everything (`<seq> *`).
// The WAL position (KEYS[3]) is the highest primary LSN an invalidation recorded, kept as
// decimal text and compared as text (exact beyond 2^53). A new epoch deletes it: a restored
// snapshot may hold an older one, and a missing one makes fills establish it from the primary.
// KEYS[1] = sequence, KEYS[2] = floor, KEYS[3] = WAL position; ARGV[1] = clock (µs),
// ARGV[2] = channel.
const EPOCH: &str = r#"
local function text(number) return string.format('%.0f', number) end
local function position() return redis.call('GET', KEYS[3]) or '' end
local function new_epoch()
  local start = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), tonumber(ARGV[1])) + 1
  redis.call('SET', KEYS[1], text(start))
  redis.call('SET', KEYS[2], text(start))
  redis.call('DEL', KEYS[3])
  redis.call('PUBLISH', ARGV[2], text(start) .. ' *')
  return start
end
local function floor()
  local current = redis.call('GET', KEYS[2])
  if current then return tonumber(current) end
  return new_epoch()
end
"#;

// Both layouts' lookup scripts, which differ only in where the entry and the stamps are:
// read the entry, take its fill sequence and tags from its first line, read the epoch floor
// (`values[1]`) and the tags' stamps in one call, and return a fresh entry; anything else
// falls through to the miss path (`LOOKUP_MISS`, after the epoch helpers: a hit never
// defines them).
macro_rules! lookup_script {
    (entry: $entry:literal, floor: $floor:literal, stamp: $stamp:literal, read: $read:literal) => {
        concat!(
            "\nlocal entry = redis.call('GET', ",
            $entry,
            r#")
local unprovable = false
if entry then
  local newline = string.find(entry, '\n', 1, true)
  if newline then
    local seq = nil
    local names = {"#,
            $floor,
            r#"}
    for word in string.gmatch(string.sub(entry, 1, newline - 1), '%S+') do
      if seq == nil then seq = tonumber(word) else names[#names + 1] = "#,
            $stamp,
            r#" end
    end
    local values = "#,
            $read,
            r#"
    local lowest = values[1] and tonumber(values[1])
    if seq == nil or lowest == nil or seq < lowest then
      unprovable = true
    else
      local fresh = true
      for i = 2, #values do
        if values[i] and tonumber(values[i]) > seq then fresh = false break end
      end
      if fresh then return {1, entry, ''} end
    end
  end
end
"#
        )
    };
}
pub(super) use lookup_script;

// KEYS[4] = entry; ARGV[3] = tag key prefix. Returns {1, entry} when fresh, {0, seq, lsn} when
// absent or stale, {2, seq, lsn} when present but unprovable (filled before the epoch floor,
// or the floor is gone); lsn is '' when unknown. A hit costs two calls, as before epochs: the
// entry, then one MGET of the floor and the entry's tag stamps.
const LOOKUP: &str = lookup_script!(
    entry: "KEYS[4]",
    floor: "KEYS[2]",
    stamp: "ARGV[3] .. word",
    read: "redis.call('MGET', unpack(names))"
);

// The miss path of LOOKUP, after the epoch helpers: a hit never defines them.
const LOOKUP_MISS: &str = r#"
local lowest = floor()
return {unprovable and 2 or 0, redis.call('GET', KEYS[1]) or text(lowest), position()}
"#;

// Returns {seq, lsn}: the current sequence and WAL position (a fill records them before it
// executes).
const SEQUENCE: &str = r#"
local lowest = floor()
return {redis.call('GET', KEYS[1]) or text(lowest), position()}
"#;

// KEYS[4] = entry; ARGV[3] = the entry's fill sequence, ARGV[4] = encoded entry, ARGV[5] = TTL.
// A fill from before the floor is dropped: it may have missed invalidations that were lost.
const STORE: &str = r#"
local current = redis.call('GET', KEYS[2])
if not current or tonumber(ARGV[3]) < tonumber(current) then return 0 end
redis.call('SET', KEYS[4], ARGV[4], 'EX', tonumber(ARGV[5]))
return 1
"#;

// ARGV[3] = tag key prefix, ARGV[4] = stamp TTL, ARGV[5..n-1] = tags, ARGV[n] = the commit's
// WAL position ('' for none). Advances the sequence, stamps every tag, raises the position
// (a max, compared as text) and announces `<seq> <tags...>` to first tiers.
const INVALIDATE: &str = r#"
floor()
local seq = redis.call('INCR', KEYS[1])
local last = #ARGV - 1
for i = 5, last do
  redis.call('SET', ARGV[3] .. ARGV[i], text(seq), 'EX', tonumber(ARGV[4]))
end
local lsn = ARGV[#ARGV]
if lsn ~= '' then
  local current = position()
  if current == '' or #lsn > #current or (#lsn == #current and lsn > current) then
    redis.call('SET', KEYS[3], lsn)
  end
end
redis.call('PUBLISH', ARGV[2], text(seq) .. ' ' .. table.concat(ARGV, ' ', 5, last))
return text(seq)
"#;

// ARGV[3] = a WAL position the primary has reached. Sets the position only when it is
// unknown (lost with a new epoch or an eviction): any commit whose invalidation was recorded
// before this script runs is at or before a position read from the primary afterwards.
const ESTABLISH_POSITION: &str = r#"
floor()
if position() == '' then redis.call('SET', KEYS[3], ARGV[3]) end
return 1
"#;

// Starts a new epoch now (`cache clear`).
const NEW_EPOCH: &str = r#"
return text(new_epoch())
"#;

// KEYS[4] = the run id key; ARGV[3] = this Redis process's run id (INFO server). Run on every
// new connection: a different run id means this Redis restarted (perhaps from an old snapshot)
// or is a promoted replica, so its invalidation history cannot be trusted: new epoch.
const HANDSHAKE: &str = r#"
if redis.call('GET', KEYS[4]) == ARGV[3] then return 0 end
local start = new_epoch()
redis.call('SET', KEYS[4], ARGV[3])
return text(start)
"#;

/// Connections in use at once. Each is a multiplexed (pipelining) connection taken from the
/// deadpool pool once and shared by every request until it fails, so a request pays one
/// round trip, not a pool checkout (deadpool's recycle check costs a PING per checkout).
const SHARED_CONNECTIONS: usize = 4;

/// A shared connection and the pool object it came from (kept, so the pool counts it in use).
struct Shared {
    connection: Connection,
    _pooled: Pooled,
}

#[expect(
    dead_code,
    reason = "held, never read: the pool counts the connection in use"
)]
enum Pooled {
    Single(deadpool_redis::Connection),
    Cluster(deadpool_redis::cluster::Connection),
    #[cfg(test)]
    Nothing,
}

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

/// Where the bookkeeping lives, and the scripts that keep it.
enum Layout {
    /// One Redis: one sequence, stamps in keys of their own (the scripts above).
    Single {
        /// Key names every script call passes, built once (a hit allocates none of them).
        keys: BookkeepingKeys,
        scripts: SingleScripts,
    },
    /// A cluster: partitions, each in one hash slot (`cluster.rs`).
    Cluster {
        partitions: Partitions,
        scripts: ClusterScripts,
        /// The hash tag plain values live under.
        values: String,
    },
}

impl Layout {
    /// A call of the chosen script for every place that keeps bookkeeping: the one Redis, or
    /// each partition of a cluster.
    fn everywhere<'a>(
        &'a self,
        single: impl Fn(&'a SingleScripts) -> &'a Script,
        cluster: impl Fn(&'a ClusterScripts) -> &'a Script,
    ) -> Vec<redis::ScriptInvocation<'a>> {
        match self {
            Layout::Single { keys, scripts } => vec![single_call(keys, single(scripts))],
            Layout::Cluster {
                partitions,
                scripts,
                ..
            } => (0..partitions.count())
                .map(|partition| cluster_call(partitions, cluster(scripts), partition))
                .collect(),
        }
    }

    /// A call of the chosen script about one entry: the prelude of the place that keeps the
    /// entry's bookkeeping (the one Redis, or the entry's partition), then the entry's key.
    fn entry_call<'a>(
        &'a self,
        prefix: &str,
        key: &str,
        single: impl Fn(&'a SingleScripts) -> &'a Script,
        cluster: impl Fn(&'a ClusterScripts) -> &'a Script,
    ) -> redis::ScriptInvocation<'a> {
        match self {
            Layout::Single { keys, scripts } => {
                let mut call = single_call(keys, single(scripts));
                call.key(format!("{prefix}{key}"));
                call
            }
            Layout::Cluster {
                partitions,
                scripts,
                ..
            } => {
                let partition = partitions.of(key);
                let mut call = cluster_call(partitions, cluster(scripts), partition);
                call.key(partitions.entry(partition, key));
                call
            }
        }
    }
}

struct SingleScripts {
    lookup: Script,
    sequence: Script,
    store: Script,
    invalidate: Script,
    establish_position: Script,
    handshake: Script,
    new_epoch: Script,
}

struct ClusterScripts {
    lookup: Script,
    sequence: Script,
    store: Script,
    establish_position: Script,
    new_epoch: Script,
    invalidate: Script,
}

/// The names of the keys that hold the cache's bookkeeping, under this server's prefix.
struct BookkeepingKeys {
    sequence: String,
    floor: String,
    position: String,
    tag_prefix: String,
    channel: String,
}

/// The clock a new epoch starts from, in microseconds (see `EPOCH`).
fn clock_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros() as u64)
        .unwrap_or(0)
}

fn script(body: &str) -> Script {
    Script::new(&format!("{EPOCH}{body}"))
}

fn cluster_script(body: &str) -> Script {
    Script::new(&format!("{}{body}", cluster::EPOCH))
}

fn unavailable(error: impl std::fmt::Display) -> StorageError {
    StorageError::Unavailable(error.to_string())
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
                    scripts: SingleScripts {
                        lookup: Script::new(&format!("{LOOKUP}{EPOCH}{LOOKUP_MISS}")),
                        sequence: script(SEQUENCE),
                        store: script(STORE),
                        invalidate: script(INVALIDATE),
                        establish_position: script(ESTABLISH_POSITION),
                        handshake: script(HANDSHAKE),
                        new_epoch: script(NEW_EPOCH),
                    },
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
                    scripts: ClusterScripts {
                        lookup: Script::new(&format!(
                            "{}{}{}",
                            cluster::LOOKUP,
                            cluster::EPOCH,
                            cluster::LOOKUP_MISS
                        )),
                        sequence: cluster_script(cluster::SEQUENCE),
                        store: cluster_script(cluster::STORE),
                        establish_position: cluster_script(cluster::ESTABLISH_POSITION),
                        new_epoch: cluster_script(cluster::NEW_EPOCH),
                        invalidate: cluster_script(cluster::INVALIDATE),
                    },
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

    /// A connection of its own, outside the shared ones (a first tier's lease: the `WAIT`
    /// after a renewal blocks the connection it is sent on).
    pub async fn dedicated_connection(&self) -> StorageResult<Connection> {
        match &self.topology {
            Topology::Single(url) => redis::Client::open(url.as_str())
                .map_err(unavailable)?
                .get_multiplexed_async_connection()
                .await
                .map(Connection::Single)
                .map_err(unavailable),
            Topology::Cluster(nodes) => redis::cluster::ClusterClientBuilder::new(nodes.clone())
                .build()
                .map_err(unavailable)?
                .get_async_connection()
                .await
                .map(Connection::Cluster)
                .map_err(unavailable),
        }
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

    /// Every key under this server's prefix, on every primary (management and tests only).
    pub async fn keys(&self) -> StorageResult<Vec<String>> {
        let mut connection = self.connection().await?;
        let mut keys = Vec::new();
        for node in self.primaries(&mut connection).await? {
            for batch in self.prefix_keys(&mut connection, &node).await? {
                keys.extend(batch);
            }
        }
        Ok(keys)
    }

    /// A key's name as the cache knows it: without the prefix, or on a cluster without the
    /// partition's or the values' hash tag (`book` and `stamped` name a partition's
    /// bookkeeping).
    pub fn name_of<'a>(&self, key: &'a str) -> &'a str {
        match &self.layout {
            Layout::Single { .. } => key.strip_prefix(self.prefix.as_str()).unwrap_or(key),
            Layout::Cluster { .. } => key.split_once('}').map_or(key, |(_, name)| name),
        }
    }

    /// A connection for commands of one's own (tests, management).
    pub async fn command_connection(&self) -> StorageResult<Connection> {
        self.connection().await
    }

    /// Runs another module's script (the rate limiter's) on a shared connection, in one round
    /// trip; on a cluster its keys must share a hash tag. No timeout: the caller applies its own.
    pub async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> StorageResult<T> {
        let mut connection = self.connection().await?;
        invocation
            .invoke_async(&mut connection)
            .await
            .map_err(|error| self.failed(error))
    }

    /// The full key of a plain value (tests, management).
    pub fn value_key(&self, key: &str) -> String {
        self.key(key)
    }

    /// The full key of a response entry or token validation (tests, management).
    pub fn entry_key(&self, key: &str) -> String {
        match &self.layout {
            Layout::Single { .. } => format!("{}{key}", self.prefix),
            Layout::Cluster { partitions, .. } => partitions.entry(partitions.of(key), key),
        }
    }

    /// A plain value's key.
    fn key(&self, key: &str) -> String {
        match &self.layout {
            Layout::Single { .. } => format!("{}{key}", self.prefix),
            Layout::Cluster { values, .. } => format!("{values}{key}"),
        }
    }

    async fn connection(&self) -> StorageResult<Connection> {
        let slot = &self.shared
            [self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.shared.len()];
        self.connection_in(slot).await
    }

    async fn connection_in(
        &self,
        slot: &parking_lot::Mutex<Option<Shared>>,
    ) -> StorageResult<Connection> {
        if let Some(shared) = slot.lock().as_ref() {
            return Ok(shared.connection.clone());
        }
        // One connection is made at a time: a burst of requests on a cold (or reset) slot
        // waits for it instead of each dialling every node of a cluster.
        let _making = self.making.lock().await;
        if let Some(shared) = slot.lock().as_ref() {
            return Ok(shared.connection.clone());
        }
        let (mut connection, pooled) = match &self.pool {
            RedisPool::Single(pool) => {
                let pooled = pool.get().await.map_err(unavailable)?;
                (
                    Connection::Single((*pooled).clone()),
                    Pooled::Single(pooled),
                )
            }
            RedisPool::Cluster(pool) => {
                let pooled = pool.get().await.map_err(unavailable)?;
                (
                    Connection::Cluster((*pooled).clone()),
                    Pooled::Cluster(pooled),
                )
            }
        };
        self.check_identity(&mut connection).await?;
        *slot.lock() = Some(Shared {
            connection: connection.clone(),
            _pooled: pooled,
        });
        Ok(connection)
    }

    /// Starts a new epoch when this Redis is not the process that holds our bookkeeping
    /// (restarted, restored from a snapshot, or a promoted replica). Runs before a new
    /// connection serves anything, so no entry is read from such a Redis before the epoch moves.
    /// On a cluster the scripts check the node themselves (see `cluster::EPOCH`): a failover
    /// moves a partition to another node without a new connection.
    async fn check_identity(&self, connection: &mut Connection) -> StorageResult<()> {
        let mut info = redis::cmd("INFO");
        info.arg("server").arg("memory");
        let info: String = match &mut *connection {
            Connection::Cluster(cluster) => cluster
                .route_command(
                    info,
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
                )
                .await
                .and_then(|value| redis::from_redis_value(value).map_err(redis::RedisError::from)),
            other => info.query_async(other).await,
        }
        .map_err(|error| self.failed(error))?;
        let run_id = info
            .lines()
            .find_map(|line| line.strip_prefix("run_id:"))
            .map(str::trim)
            .unwrap_or_default()
            .to_owned();
        let policy = info
            .lines()
            .find_map(|line| line.strip_prefix("maxmemory_policy:"))
            .map(str::trim);
        if let Some(policy) = policy
            && policy != "noeviction"
            && !self
                .warned_about_eviction
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                policy,
                "Redis may evict keys (maxmemory-policy is not noeviction): an evicted tag stamp would let a stale entry look fresh. Set `maxmemory-policy noeviction` (entries still expire by TTL; fills fail when memory is full, which costs hits, not correctness)"
            );
        }
        let (keys, scripts) = match &self.layout {
            Layout::Single { keys, scripts } => (keys, scripts),
            Layout::Cluster {
                partitions, values, ..
            } => {
                return self
                    .check_partition_count(connection, partitions, values)
                    .await;
            }
        };
        let started: Option<String> = single_call(keys, &scripts.handshake)
            .key(format!("{}runid", self.prefix))
            .arg(run_id)
            .invoke_async(connection)
            .await
            .map_err(|error| self.failed(error))?;
        if started.is_some_and(|start| start != "0") {
            self.metrics.cache_epochs.inc();
            tracing::warn!(
                "the cache's Redis is not the process that held its bookkeeping (restart, snapshot or failover): new epoch, older entries are not served"
            );
        }
        Ok(())
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

    /// Every instance on a cluster must split the bookkeeping the same way: an instance with
    /// fewer partitions would stamp only its own, and one with more would serve entries whose
    /// partitions the others never stamp. The first instance records its count; one that
    /// finds another count refuses the cache (it serves from the database) until the fleet
    /// agrees again (`cache clear` forgets the recorded count).
    async fn check_partition_count(
        &self,
        connection: &mut Connection,
        partitions: &Partitions,
        values: &str,
    ) -> StorageResult<()> {
        let recorded: Option<usize> = redis::cmd("SET")
            .arg(format!("{values}partitions"))
            .arg(partitions.count())
            .arg("NX")
            .arg("GET")
            .query_async(connection)
            .await
            .map_err(|error| self.failed(error))?;
        match recorded {
            Some(recorded) if recorded != partitions.count() => {
                tracing::error!(
                    here = partitions.count(),
                    recorded,
                    "CATALOG_CACHE_PARTITIONS differs from what other instances use on this cluster: the cache is not used until they agree (stop them all, run `cache clear`, start them with one value)"
                );
                Err(StorageError::Unavailable(format!(
                    "CATALOG_CACHE_PARTITIONS is {} here but {recorded} on the cluster",
                    partitions.count()
                )))
            }
            _ => Ok(()),
        }
    }

    /// One pipeline of the commands `add` writes for each item's key (nothing when there are
    /// no items): the monitor's counters and samples.
    async fn pipeline_per_key<T>(
        &self,
        items: &[(String, T)],
        add: impl Fn(&mut redis::Pipeline, &str, &T),
    ) -> StorageResult<()> {
        if items.is_empty() {
            return Ok(());
        }
        let mut connection = self.connection().await?;
        let mut pipe = redis::pipe();
        for (key, item) in items {
            add(&mut pipe, &self.key(key), item);
        }
        pipe.query_async::<()>(&mut connection)
            .await
            .map_err(|error| self.failed(error))
    }

    /// Drops the shared connections after an error; the next request takes fresh ones from
    /// the pool, which checks them before handing them out.
    fn reset(&self) {
        for slot in &self.shared {
            slot.lock().take();
        }
        self.invalidations.lock().take();
    }

    /// An error: on one Redis the shared connections are dropped (a multiplexed connection
    /// does not come back by itself). A cluster connection reconnects to each node and follows
    /// slot moves by itself, so it is kept: making a new one dials every node, which under
    /// load can take longer than a command may, and would then never finish.
    fn failed(&self, error: impl std::fmt::Display) -> StorageError {
        if let Layout::Single { .. } = self.layout {
            self.reset();
        }
        unavailable(error)
    }

    /// The glob every key under this server's prefix matches.
    fn pattern(&self) -> String {
        match &self.layout {
            Layout::Single { .. } => format!("{}*", escape_glob(&self.prefix)),
            Layout::Cluster { .. } => format!("{{{}*", escape_glob(&self.prefix)),
        }
    }

    /// The nodes that hold data: the one Redis, or every primary of the cluster.
    async fn primaries(&self, connection: &mut Connection) -> StorageResult<Vec<Node>> {
        let Connection::Cluster(cluster) = connection else {
            return Ok(vec![Node::Only]);
        };
        let slots: Vec<Vec<redis::Value>> = cluster
            .route_command(
                redis::cmd("CLUSTER").arg("SLOTS").to_owned(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await
            .and_then(|value| redis::from_redis_value(value).map_err(redis::RedisError::from))
            .map_err(|error| self.failed(error))?;
        Ok(slot_owners(slots))
    }

    /// Sends a command to one node.
    async fn on_node<T: redis::FromRedisValue>(
        &self,
        connection: &mut Connection,
        node: &Node,
        command: redis::Cmd,
    ) -> StorageResult<T> {
        match (connection, node) {
            (Connection::Cluster(cluster), Node::Address { host, port }) => cluster
                .route_command(
                    command,
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                        host: host.clone(),
                        port: *port,
                    }),
                )
                .await
                .and_then(|value| redis::from_redis_value(value).map_err(redis::RedisError::from)),
            (connection, _) => command.query_async(connection).await,
        }
        .map_err(|error| self.failed(error))
    }

    /// Every key under this server's prefix on one node, in SCAN batches (management only).
    async fn prefix_keys(
        &self,
        connection: &mut Connection,
        node: &Node,
    ) -> StorageResult<Vec<Vec<String>>> {
        let pattern = self.pattern();
        let mut cursor: u64 = 0;
        let mut batches = Vec::new();
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000);
            let (next, keys): (u64, Vec<String>) = self.on_node(connection, node, scan).await?;
            if !keys.is_empty() {
                batches.push(keys);
            }
            if next == 0 {
                return Ok(batches);
            }
            cursor = next;
        }
    }

    /// Whether a key is bookkeeping that `clear` keeps: deleting a stamp written after the
    /// clear began could make a newer entry look fresh.
    fn is_bookkeeping(&self, key: &str) -> bool {
        (match &self.layout {
            Layout::Single { .. } => {
                let rest = key.strip_prefix(&self.prefix).unwrap_or_default();
                rest.starts_with("tag:") || ["seq", "floor", "lsn", "runid"].contains(&rest)
            }
            Layout::Cluster { partitions, .. } => partitions.is_bookkeeping(key),
        }) || self.leases.owns(key)
    }

    /// Every partition's invalidation on a cluster, in two waves sent at once: the stamp
    /// scripts (the cluster connection pipelines them per node), then, for each partition
    /// whose primary has a replica in sync, a `WAIT 1` on the same connection that covers its
    /// script: one sent after it, or shared with concurrent invalidations (`ReplicaAcks`).
    async fn invalidate_cluster(
        &self,
        connection: &Connection,
        partitions: &Partitions,
        script: &Script,
        tags: &[String],
        lsn: &str,
    ) -> StorageResult<Vec<u64>> {
        let stamped = futures::future::join_all((0..partitions.count()).map(|partition| {
            let mut connection = connection.clone();
            let mut invocation = cluster_call(partitions, script, partition);
            invocation
                .key(partitions.stamped(partition))
                .arg(self.tag_ttl.as_secs().max(1));
            for tag in tags {
                invocation.arg(tag);
            }
            invocation.arg(lsn);
            async move {
                invocation
                    .invoke_async::<(Vec<u8>, i64)>(&mut connection)
                    .await
            }
        }))
        .await;
        let stamped: Vec<(Vec<u8>, i64)> = stamped
            .into_iter()
            .collect::<Result<_, _>>()
            .map_err(|error| self.failed(error))?;
        // A primary with no replica in sync has nothing a failover could promote: no WAIT
        // (it would only block for its whole timeout).
        let acknowledged = futures::future::join_all(stamped.iter().enumerate().map(
            |(partition, (_, replicas))| {
                let answered = self.replica_acks.answered(partition);
                let in_sync = *replicas > 0;
                async move {
                    if !in_sync {
                        return Ok(true);
                    }
                    self.replica_acks
                        .acknowledged(partition, answered, async || {
                            self.wait_for_replica(connection, partitions, partition)
                                .await
                        })
                        .await
                }
            },
        ))
        .await;
        let mut sequences = Vec::with_capacity(stamped.len());
        for (partition, ((seq, _), acknowledged)) in
            stamped.into_iter().zip(acknowledged).enumerate()
        {
            let acknowledged = acknowledged.map_err(|error| self.failed(error))?;
            if !acknowledged {
                return Err(StorageError::Unavailable(format!(
                    "no replica acknowledged the invalidation of partition {partition} within {:?}",
                    self.replica_wait
                )));
            }
            sequences.push(parse_sequence(&seq)?);
        }
        Ok(sequences)
    }

    /// `WAIT 1` on the primary of `partition`: how many replicas acknowledged every write this
    /// connection sent it before.
    async fn wait_for_replica(
        &self,
        connection: &Connection,
        partitions: &Partitions,
        partition: usize,
    ) -> redis::RedisResult<i64> {
        let slot = cluster::slot(partitions.tag(partition).as_bytes());
        self.wait_for_replica_of(&mut connection.clone(), slot)
            .await
    }

    /// `WAIT 1` on the primary of `slot` (the one Redis when not a cluster).
    pub async fn wait_for_replica_of(
        &self,
        connection: &mut Connection,
        slot: u16,
    ) -> redis::RedisResult<i64> {
        let mut wait = redis::cmd("WAIT");
        wait.arg(1).arg(self.replica_wait.as_millis().max(1) as u64);
        match connection {
            Connection::Cluster(cluster) => cluster
                .route_command(
                    wait,
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                        redis::cluster_routing::Route::new(
                            slot,
                            redis::cluster_routing::SlotAddr::Master,
                        ),
                    )),
                )
                .await
                .and_then(|value| {
                    redis::from_redis_value::<i64>(value).map_err(redis::RedisError::from)
                }),
            other => wait.query_async::<i64>(other).await,
        }
    }
}

/// Empties a connection slot when dropped (forgotten once the work it guards succeeded).
struct ResetOnDrop<'a>(&'a parking_lot::Mutex<Option<Shared>>);

impl Drop for ResetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.lock().take();
    }
}

/// A node to send a management command to.
enum Node {
    /// The one Redis.
    Only,
    Address {
        host: String,
        port: u16,
    },
}

/// The primaries that serve slots, from `CLUSTER SLOTS` (`[start, end, [host, port, id],
/// replicas...]` per range), each once.
fn slot_owners(ranges: Vec<Vec<redis::Value>>) -> Vec<Node> {
    let mut owners: Vec<(String, u16)> = ranges
        .into_iter()
        .filter_map(|range| {
            let primary: Vec<redis::Value> = redis::from_redis_value(range.get(2)?.clone()).ok()?;
            let host: String = redis::from_redis_value(primary.first()?.clone()).ok()?;
            let port: u16 = redis::from_redis_value(primary.get(1)?.clone()).ok()?;
            Some((host, port))
        })
        .collect();
    owners.sort();
    owners.dedup();
    owners
        .into_iter()
        .map(|(host, port)| Node::Address { host, port })
        .collect()
}

/// An invocation with the single-Redis epoch prelude's keys and arguments filled in.
fn single_call<'a>(keys: &BookkeepingKeys, script: &'a Script) -> redis::ScriptInvocation<'a> {
    let mut invocation = script.key(keys.sequence.as_str());
    invocation
        .key(keys.floor.as_str())
        .key(keys.position.as_str())
        .arg(clock_micros())
        .arg(keys.channel.as_str());
    invocation
}

/// An invocation with a partition's epoch prelude keys and arguments filled in.
fn cluster_call<'a>(
    partitions: &Partitions,
    script: &'a Script,
    partition: usize,
) -> redis::ScriptInvocation<'a> {
    let mut invocation = script.key(partitions.book(partition));
    invocation
        .arg(clock_micros())
        .arg(partitions.channel(partition));
    invocation
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
    /// Starts a new epoch first, so every entry is unprovable at once, then deletes the
    /// entries. The bookkeeping (sequence, floor, tag stamps) stays: deleting a stamp written
    /// after the clear began could make a newer entry look fresh. Stamps expire by themselves.
    async fn clear(&self) -> StorageResult<u64> {
        let mut connection = self.connection().await?;
        let calls = self
            .layout
            .everywhere(|single| &single.new_epoch, |cluster| &cluster.new_epoch);
        for call in calls {
            call.invoke_async::<String>(&mut connection)
                .await
                .map_err(|error| self.failed(error))?;
        }
        let mut deleted = 0;
        for node in self.primaries(&mut connection).await? {
            for keys in self.prefix_keys(&mut connection, &node).await? {
                let keys: Vec<String> = keys
                    .into_iter()
                    .filter(|key| !self.is_bookkeeping(key))
                    .collect();
                // One UNLINK per hash slot: a command's keys must share one on a cluster.
                let mut by_slot: std::collections::BTreeMap<u16, Vec<String>> =
                    std::collections::BTreeMap::new();
                for key in keys {
                    by_slot
                        .entry(cluster::slot(key.as_bytes()))
                        .or_default()
                        .push(key);
                }
                for keys in by_slot.values() {
                    deleted += keys.len() as u64;
                    redis::cmd("UNLINK")
                        .arg(keys)
                        .query_async::<()>(&mut connection)
                        .await
                        .map_err(|error| self.failed(error))?;
                }
            }
        }
        Ok(deleted)
    }
    /// Sums over every primary on a cluster; the version is the first node's.
    async fn stats(&self) -> StorageResult<BackendStats> {
        let mut connection = self.connection().await?;
        let mut stats = BackendStats {
            backend: "redis".into(),
            ..BackendStats::default()
        };
        for node in self.primaries(&mut connection).await? {
            let info: String = self
                .on_node(&mut connection, &node, redis::cmd("INFO"))
                .await?;
            let field = |name: &str| {
                info.lines().find_map(|line| {
                    line.strip_prefix(name)
                        .and_then(|rest| rest.strip_prefix(':'))
                        .map(str::trim)
                })
            };
            let number = |name: &str| field(name).and_then(|value| value.parse::<u64>().ok());
            let add = |total: Option<u64>, name: &str| match (total, number(name)) {
                (Some(total), Some(more)) => Some(total + more),
                (total, more) => total.or(more),
            };
            stats.version = stats
                .version
                .or_else(|| field("redis_version").map(str::to_owned));
            stats.used_memory_bytes = add(stats.used_memory_bytes, "used_memory");
            stats.connected_clients = add(stats.connected_clients, "connected_clients");
            stats.commands_processed = add(stats.commands_processed, "total_commands_processed");
            for keys in self.prefix_keys(&mut connection, &node).await? {
                for key in &keys {
                    let usage: Option<u64> = redis::cmd("MEMORY")
                        .arg("USAGE")
                        .arg(key)
                        .query_async(&mut connection)
                        .await
                        .map_err(|error| self.failed(error))?;
                    stats.prefix_bytes += usage.unwrap_or(0);
                }
                stats.prefix_keys += keys.len() as u64;
            }
        }
        Ok(stats)
    }
}

#[async_trait]
impl ValueStore for RedisStorage {
    async fn get(&self, key: &str) -> StorageResult<Option<Vec<u8>>> {
        let mut connection = self.connection().await?;
        connection
            .get(self.key(key))
            .await
            .map_err(|error| self.failed(error))
    }
    async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration) -> StorageResult<()> {
        let mut connection = self.connection().await?;
        connection
            .set_ex::<_, _, ()>(self.key(key), value, ttl.as_secs().max(1))
            .await
            .map_err(|error| self.failed(error))
    }
    async fn delete(&self, key: &str) -> StorageResult<()> {
        let mut connection = self.connection().await?;
        // A cached token validation is deleted through here too; on a cluster it lives in
        // its partition, not under the values' tag.
        if let Layout::Cluster { partitions, .. } = &self.layout {
            connection
                .del::<_, ()>(partitions.entry(partitions.of(key), key))
                .await
                .map_err(|error| self.failed(error))?;
        }
        connection
            .del::<_, ()>(self.key(key))
            .await
            .map_err(|error| self.failed(error))
    }
    async fn add_counters(&self, counters: &[(String, i64)], ttl: Duration) -> StorageResult<()> {
        self.pipeline_per_key(counters, |pipe, key, delta| {
            pipe.incr(key, *delta)
                .ignore()
                .expire(key, ttl.as_secs() as i64)
                .ignore();
        })
        .await
    }
    async fn counters(&self, keys: &[String]) -> StorageResult<Vec<i64>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut connection = self.connection().await?;
        let keys: Vec<String> = keys.iter().map(|key| self.key(key)).collect();
        let values: Vec<Option<i64>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut connection)
            .await
            .map_err(|error| self.failed(error))?;
        Ok(values.into_iter().map(Option::unwrap_or_default).collect())
    }
    async fn push_samples(&self, samples: &[(String, Vec<f64>)], keep: usize) -> StorageResult<()> {
        self.pipeline_per_key(samples, |pipe, key, values| {
            pipe.lpush(key, values)
                .ignore()
                .ltrim(key, 0, keep as isize - 1)
                .ignore();
        })
        .await
    }
    async fn samples(&self, key: &str) -> StorageResult<Vec<f64>> {
        let mut connection = self.connection().await?;
        connection
            .lrange(self.key(key), 0, -1)
            .await
            .map_err(|error| self.failed(error))
    }
    async fn rank_add(&self, key: &str, scores: &[(String, f64)]) -> StorageResult<()> {
        if scores.is_empty() {
            return Ok(());
        }
        let mut connection = self.connection().await?;
        let key = self.key(key);
        let mut pipe = redis::pipe();
        for (member, score) in scores {
            pipe.zincr(&key, member, *score).ignore();
        }
        pipe.query_async::<()>(&mut connection)
            .await
            .map_err(|error| self.failed(error))
    }
    async fn rank_top(&self, key: &str, count: usize) -> StorageResult<Vec<String>> {
        let mut connection = self.connection().await?;
        connection
            .zrevrange(self.key(key), 0, count as isize - 1)
            .await
            .map_err(|error| self.failed(error))
    }

    async fn set_bounded(&self, member: BoundedMember<'_>) -> StorageResult<()> {
        let mut connection = self.connection().await?;
        self.set_bounded
            .key(self.key(member.collection))
            .key(self.key(member.key))
            .arg(member.value)
            .arg(member.ttl.as_secs().max(1))
            .arg(member.capacity.max(1))
            .arg(clock_micros() / 1000)
            .invoke_async::<i64>(&mut connection)
            .await
            .map_err(|error| self.failed(error))?;
        Ok(())
    }

    async fn rank_trim(&self, key: &str, keep: usize, ttl: Duration) -> StorageResult<()> {
        let mut connection = self.connection().await?;
        let key = self.key(key);
        redis::pipe()
            .zremrangebyrank(&key, 0, -(keep as isize) - 1)
            .ignore()
            .expire(&key, ttl.as_secs().max(1) as i64)
            .ignore()
            .query_async::<()>(&mut connection)
            .await
            .map_err(|error| self.failed(error))
    }
}

fn parse_sequence(value: &[u8]) -> StorageResult<u64> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| StorageError::Unavailable("the cache sequence is not a number".into()))
}

/// A WAL position as the scripts return it: '' when unknown.
fn parse_position(value: &[u8]) -> StorageResult<Option<u64>> {
    if value.is_empty() {
        return Ok(None);
    }
    parse_sequence(value)
        .map(Some)
        .map_err(|_| StorageError::Unavailable("the cache's WAL position is not a number".into()))
}

/// Escapes glob characters so a prefix matches only itself in SCAN MATCH.
fn escape_glob(prefix: &str) -> String {
    let mut escaped = String::with_capacity(prefix.len());
    for character in prefix.chars() {
        if matches!(character, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    escaped
}

#[cfg(test)]
mod tests {
    //! Every script and pipeline the cluster layout sends keeps its keys in one hash slot: the
    //! real methods run against a connection that records each command (or pipeline) and
    //! answers nil, and the keys of each are put through Redis Cluster's slot function.

    use super::*;

    /// A command's arguments, its name first.
    type Command = Vec<Vec<u8>>;

    #[derive(Clone, Default)]
    pub struct Recorder {
        /// One entry per command or pipeline: the commands in it.
        pub sent: Arc<parking_lot::Mutex<Vec<Vec<Command>>>>,
    }

    fn arguments(command: &redis::Cmd) -> Command {
        command
            .args_iter()
            .map(|argument| match argument {
                redis::Arg::Simple(bytes) => bytes.to_vec(),
                _ => b"0".to_vec(),
            })
            .collect()
    }

    impl Recorder {
        pub fn command<'a>(&self, command: &redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
            self.sent.lock().push(vec![arguments(command)]);
            Box::pin(async { Ok(redis::Value::Nil) })
        }
        pub fn pipeline<'a>(
            &self,
            pipeline: &redis::Pipeline,
            count: usize,
        ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
            self.sent
                .lock()
                .push(pipeline.cmd_iter().map(arguments).collect());
            Box::pin(async move { Ok(vec![redis::Value::Nil; count]) })
        }
    }

    /// The keys a command names: those declared to a script, else the ones its name says.
    fn keys(command: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let name = String::from_utf8_lossy(&command[0]).to_uppercase();
        match name.as_str() {
            "EVAL" | "EVALSHA" => {
                let count: usize = String::from_utf8_lossy(&command[2]).parse().unwrap_or(0);
                command[3..3 + count].to_vec()
            }
            "MGET" | "DEL" | "UNLINK" => command[1..].to_vec(),
            "WAIT" | "INFO" | "PING" | "SCAN" | "CLUSTER" => Vec::new(),
            _ => command[1..2].to_vec(),
        }
    }

    #[tokio::test]
    async fn every_script_and_pipeline_keeps_its_keys_in_one_slot() {
        let storage = RedisStorage::new(
            "redis+cluster://127.0.0.1:1",
            "catalog:",
            16,
            2,
            Duration::from_secs(1),
            Duration::from_secs(1),
            Duration::from_secs(3660),
            1024,
            Duration::from_millis(500),
            Arc::new(Metrics::new()),
        )
        .expect("a cluster storage needs no connection to be built");
        let recorder = Recorder::default();
        let install = || {
            for slot in storage.shared.iter().chain([&storage.invalidations]) {
                *slot.lock() = Some(Shared {
                    connection: Connection::Recording(recorder.clone()),
                    _pooled: Pooled::Nothing,
                });
            }
        };
        let entry = Arc::new(Entry {
            seq: 5,
            tags: vec!["Product:1".into(), "Products".into()],
            etag: "e".into(),
            max_age: 60,
            fresh_until: u64::MAX,
            body: bytes::Bytes::from_static(b"{}"),
            encoded: Default::default(),
        });
        let tags = vec!["Product:1".to_owned(), "Categories".to_owned()];
        // Results are nil answers parsed as errors: only what was sent matters here.
        for id in 0..40 {
            let key = format!("resp:{id:016x}/{id}");
            install();
            let _ = storage.lookup(&key).await;
            install();
            let _ = storage.sequence(&key).await;
            install();
            let _ = storage
                .store(&key, Arc::clone(&entry), Duration::from_secs(60))
                .await;
            install();
            let _ = storage.lookup(&format!("token:{id}")).await;
        }
        install();
        let _ = storage.invalidate(&tags, Some(42)).await;
        install();
        let _ = storage.establish_position(42).await;
        install();
        let _ = storage.get("apq:abc").await;
        install();
        let _ = storage
            .set_bounded(BoundedMember {
                collection: "apq:documents",
                key: "apq:abc",
                value: b"q".to_vec(),
                ttl: Duration::from_secs(60),
                capacity: 10,
            })
            .await;
        install();
        let _ = storage
            .add_counters(
                &[("stats:1:hit".into(), 1), ("stats:1:miss".into(), 2)],
                Duration::from_secs(60),
            )
            .await;
        install();
        let _ = storage
            .counters(&["stats:1:hit".into(), "stats:1:miss".into()])
            .await;
        install();
        let _ = storage
            .push_samples(
                &[("perf:a".into(), vec![1.0]), ("perf:b".into(), vec![2.0])],
                10,
            )
            .await;
        install();
        let _ = storage
            .rank_add("ops:rank", &[("a".into(), 1.0), ("b".into(), 2.0)])
            .await;
        install();
        let _ = storage
            .rank_trim("ops:rank", 10, Duration::from_secs(60))
            .await;
        install();
        let _ = storage.leases().leave(&storage, "member").await;
        install();
        let _ = storage.delete("token:abc").await;

        let sent = recorder.sent.lock().clone();
        let stamps = sent
            .iter()
            .flat_map(|group| group.iter().map(|command| keys(command)))
            .filter(|keys| keys.len() == 2 && keys[1].ends_with(b"stamped"))
            .count();
        assert_eq!(stamps, 16, "an invalidation stamps every partition");
        let mut slots_used = std::collections::BTreeSet::new();
        for group in &sent {
            let slots: std::collections::BTreeSet<u16> = group
                .iter()
                .flat_map(|command| keys(command))
                .map(|key| cluster::slot(&key))
                .collect();
            assert!(slots.len() <= 1, "keys in several slots: {group:?}");
            slots_used.extend(slots);
        }
        assert!(slots_used.len() > 16, "entries spread over the partitions");
    }
}
