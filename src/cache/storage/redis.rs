//! The Redis backend (deadpool-redis). A lookup is one round trip: a Lua script reads the
//! entry, compares its tags' versions with the sequence it was filled at, and returns it or
//! the current sequence. An invalidation is one round trip too: it advances the sequence,
//! stamps each tag and publishes the change for other instances' first tiers.
//! No request path uses KEYS or SCAN; only `clear` and `stats` (management commands) scan,
//! and only this server's prefix.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::{Pool, PoolConfig, Runtime, Timeouts};
use redis::{AsyncCommands, Script};

use super::{BackendStats, Lookup, ResponseStore, StorageError, ValueStore, Watermark};
use crate::cache::entry::Entry;
use crate::telemetry::Metrics;

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

// KEYS[4] = entry; ARGV[3] = tag key prefix. Returns {1, entry} when fresh, {0, seq, lsn} when
// absent or stale, {2, seq, lsn} when present but unprovable (filled before the epoch floor,
// or the floor is gone); lsn is '' when unknown. A hit costs two calls, as before epochs: the
// entry, then one MGET of the floor and the entry's tag stamps.
const LOOKUP: &str = r#"
local entry = redis.call('GET', KEYS[4])
local unprovable = false
if entry then
  local newline = string.find(entry, '\n', 1, true)
  if newline then
    local seq = nil
    local names = {KEYS[2]}
    for word in string.gmatch(string.sub(entry, 1, newline - 1), '%S+') do
      if seq == nil then seq = tonumber(word) else names[#names + 1] = ARGV[3] .. word end
    end
    local values = redis.call('MGET', unpack(names))
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
"#;

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

pub struct RedisStorage {
    compress_above: usize,
    pool: Pool,
    shared: Vec<parking_lot::Mutex<Option<deadpool_redis::Connection>>>,
    next: std::sync::atomic::AtomicUsize,
    prefix: String,
    tag_ttl: Duration,
    lookup: Script,
    sequence: Script,
    store: Script,
    invalidate: Script,
    establish_position: Script,
    handshake: Script,
    set_bounded: Script,
    new_epoch: Script,
    metrics: Arc<Metrics>,
    /// Key names every script call passes, built once (a hit allocates none of them).
    bookkeeping: BookkeepingKeys,
    warned_about_eviction: std::sync::atomic::AtomicBool,
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

fn unavailable(error: impl std::fmt::Display) -> StorageError {
    StorageError::Unavailable(error.to_string())
}

impl RedisStorage {
    pub fn new(
        url: &str,
        prefix: &str,
        pool_size: usize,
        connect_timeout: Duration,
        tag_ttl: Duration,
        compress_above: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StorageError> {
        let mut config = deadpool_redis::Config::from_url(url);
        config.pool = Some(PoolConfig {
            max_size: pool_size,
            timeouts: Timeouts {
                wait: Some(connect_timeout),
                create: Some(connect_timeout),
                recycle: Some(connect_timeout),
            },
            ..PoolConfig::default()
        });
        let pool = config
            .create_pool(Some(Runtime::Tokio1))
            .map_err(unavailable)?;
        Ok(RedisStorage {
            compress_above,
            shared: (0..SHARED_CONNECTIONS.min(pool_size.max(1)))
                .map(|_| parking_lot::Mutex::new(None))
                .collect(),
            next: std::sync::atomic::AtomicUsize::new(0),
            pool,
            prefix: prefix.to_owned(),
            tag_ttl,
            lookup: Script::new(&format!("{LOOKUP}{EPOCH}{LOOKUP_MISS}")),
            sequence: script(SEQUENCE),
            store: script(STORE),
            invalidate: script(INVALIDATE),
            establish_position: script(ESTABLISH_POSITION),
            handshake: script(HANDSHAKE),
            set_bounded: Script::new(SET_BOUNDED),
            new_epoch: script(NEW_EPOCH),
            bookkeeping: BookkeepingKeys {
                sequence: format!("{prefix}seq"),
                floor: format!("{prefix}floor"),
                position: format!("{prefix}lsn"),
                tag_prefix: format!("{prefix}tag:"),
                channel: format!("{prefix}invalidations"),
            },
            metrics,
            warned_about_eviction: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The pub/sub channel on which invalidations are announced.
    pub fn channel(&self) -> String {
        format!("{}invalidations", self.prefix)
    }

    /// The key holding the invalidation sequence (first tiers read it when they subscribe).
    pub fn sequence_key(&self) -> String {
        self.key("seq")
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    async fn connection(&self) -> Result<redis::aio::MultiplexedConnection, StorageError> {
        let slot = &self.shared
            [self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.shared.len()];
        if let Some(connection) = slot.lock().as_ref() {
            return Ok((**connection).clone());
        }
        let pooled = self.pool.get().await.map_err(unavailable)?;
        let mut connection = (*pooled).clone();
        self.check_identity(&mut connection).await?;
        *slot.lock() = Some(pooled);
        Ok(connection)
    }

    /// Starts a new epoch when this Redis is not the process that holds our bookkeeping
    /// (restarted, restored from a snapshot, or a promoted replica). Runs before a new
    /// connection serves anything, so no entry is read from such a Redis before the epoch moves.
    async fn check_identity(
        &self,
        connection: &mut redis::aio::MultiplexedConnection,
    ) -> Result<(), StorageError> {
        let info: String = redis::cmd("INFO")
            .arg("server")
            .arg("memory")
            .query_async(connection)
            .await
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
        let started: Option<String> = self
            .epoch_call(&self.handshake)
            .key(self.key("runid"))
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

    /// An invocation with the epoch prelude's keys and arguments filled in.
    fn epoch_call<'a>(&self, script: &'a Script) -> redis::ScriptInvocation<'a> {
        let names = &self.bookkeeping;
        let mut invocation = script.key(names.sequence.as_str());
        invocation
            .key(names.floor.as_str())
            .key(names.position.as_str())
            .arg(clock_micros())
            .arg(names.channel.as_str());
        invocation
    }

    /// Drops the shared connections after an error; the next request takes fresh ones from
    /// the pool, which checks them before handing them out.
    fn reset(&self) {
        for slot in &self.shared {
            slot.lock().take();
        }
    }

    /// Every key under this server's prefix, in SCAN batches (management commands only).
    async fn prefix_keys(
        &self,
        connection: &mut redis::aio::MultiplexedConnection,
    ) -> Result<Vec<Vec<String>>, StorageError> {
        let pattern = format!("{}*", escape_glob(&self.prefix));
        let mut cursor: u64 = 0;
        let mut batches = Vec::new();
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(connection)
                .await
                .map_err(|error| self.failed(error))?;
            if !keys.is_empty() {
                batches.push(keys);
            }
            if next == 0 {
                return Ok(batches);
            }
            cursor = next;
        }
    }

    fn failed(&self, error: impl std::fmt::Display) -> StorageError {
        self.reset();
        unavailable(error)
    }
}

#[async_trait]
impl ResponseStore for RedisStorage {
    fn name(&self) -> &'static str {
        "redis"
    }
    async fn lookup(&self, key: &str) -> Result<Lookup, StorageError> {
        let mut connection = self.connection().await?;
        let (found, value, lsn): (i64, Vec<u8>, Vec<u8>) = self
            .epoch_call(&self.lookup)
            .key(self.key(key))
            .arg(self.bookkeeping.tag_prefix.as_str())
            .invoke_async(&mut connection)
            .await
            .map_err(|error| self.failed(error))?;
        if found == 1 {
            let entry = Entry::decode(bytes::Bytes::from(value))
                .map_err(|error| StorageError::Unavailable(error.to_string()))?;
            return Ok(Lookup::Hit(Arc::new(entry)));
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
    async fn sequence(&self) -> Result<Watermark, StorageError> {
        let mut connection = self.connection().await?;
        let (seq, lsn): (Vec<u8>, Vec<u8>) = self
            .epoch_call(&self.sequence)
            .invoke_async(&mut connection)
            .await
            .map_err(|error| self.failed(error))?;
        Ok(Watermark {
            seq: parse_sequence(&seq)?,
            lsn: parse_position(&lsn)?,
        })
    }
    async fn establish_position(&self, lsn: u64) -> Result<(), StorageError> {
        let mut connection = self.connection().await?;
        self.epoch_call(&self.establish_position)
            .arg(lsn)
            .invoke_async::<i64>(&mut connection)
            .await
            .map_err(|error| self.failed(error))?;
        Ok(())
    }
    async fn store(&self, key: &str, entry: Arc<Entry>, ttl: Duration) -> Result<(), StorageError> {
        let mut connection = self.connection().await?;
        self.epoch_call(&self.store)
            .key(self.key(key))
            .arg(entry.seq)
            .arg(entry.encode(self.compress_above))
            .arg(ttl.as_secs().max(1))
            .invoke_async::<i64>(&mut connection)
            .await
            .map_err(|error| self.failed(error))?;
        Ok(())
    }
    async fn invalidate(&self, tags: &[String], lsn: Option<u64>) -> Result<u64, StorageError> {
        let mut connection = self.connection().await?;
        let mut invocation = self.epoch_call(&self.invalidate);
        invocation
            .arg(self.bookkeeping.tag_prefix.as_str())
            .arg(self.tag_ttl.as_secs().max(1));
        for tag in tags {
            invocation.arg(tag);
        }
        invocation.arg(lsn.map(|lsn| lsn.to_string()).unwrap_or_default());
        let seq: Vec<u8> = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(|error| self.failed(error))?;
        parse_sequence(&seq)
    }
    /// Starts a new epoch first, so every entry is unprovable at once, then deletes the
    /// entries. The bookkeeping (sequence, floor, tag stamps) stays: deleting a stamp written
    /// after the clear began could make a newer entry look fresh. Stamps expire by themselves.
    async fn clear(&self) -> Result<u64, StorageError> {
        let mut connection = self.connection().await?;
        self.epoch_call(&self.new_epoch)
            .invoke_async::<String>(&mut connection)
            .await
            .map_err(|error| self.failed(error))?;
        let bookkeeping = [
            self.key("seq"),
            self.key("floor"),
            self.key("lsn"),
            self.key("runid"),
        ];
        let stamps = self.key("tag:");
        let mut deleted = 0;
        for keys in self.prefix_keys(&mut connection).await? {
            let keys: Vec<String> = keys
                .into_iter()
                .filter(|key| !key.starts_with(&stamps) && !bookkeeping.contains(key))
                .collect();
            if keys.is_empty() {
                continue;
            }
            deleted += keys.len() as u64;
            redis::cmd("UNLINK")
                .arg(&keys)
                .query_async::<()>(&mut connection)
                .await
                .map_err(|error| self.failed(error))?;
        }
        Ok(deleted)
    }
    async fn stats(&self) -> Result<BackendStats, StorageError> {
        let mut connection = self.connection().await?;
        let info: String = redis::cmd("INFO")
            .query_async(&mut connection)
            .await
            .map_err(|error| self.failed(error))?;
        let field = |name: &str| {
            info.lines().find_map(|line| {
                line.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix(':'))
                    .map(str::trim)
            })
        };
        let number = |name: &str| field(name).and_then(|value| value.parse::<u64>().ok());
        let (mut keys_seen, mut bytes) = (0u64, 0u64);
        for keys in self.prefix_keys(&mut connection).await? {
            for key in &keys {
                let usage: Option<u64> = redis::cmd("MEMORY")
                    .arg("USAGE")
                    .arg(key)
                    .query_async(&mut connection)
                    .await
                    .map_err(|error| self.failed(error))?;
                bytes += usage.unwrap_or(0);
            }
            keys_seen += keys.len() as u64;
        }
        Ok(BackendStats {
            backend: "redis".into(),
            version: field("redis_version").map(str::to_owned),
            used_memory_bytes: number("used_memory"),
            connected_clients: number("connected_clients"),
            commands_processed: number("total_commands_processed"),
            prefix_keys: keys_seen,
            prefix_bytes: bytes,
        })
    }
}

#[async_trait]
impl ValueStore for RedisStorage {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let mut connection = self.connection().await?;
        connection
            .get(self.key(key))
            .await
            .map_err(|error| self.failed(error))
    }
    async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), StorageError> {
        let mut connection = self.connection().await?;
        connection
            .set_ex::<_, _, ()>(self.key(key), value, ttl.as_secs().max(1))
            .await
            .map_err(|error| self.failed(error))
    }
    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let mut connection = self.connection().await?;
        connection
            .del::<_, ()>(self.key(key))
            .await
            .map_err(|error| self.failed(error))
    }
    async fn add_counters(
        &self,
        counters: &[(String, i64)],
        ttl: Duration,
    ) -> Result<(), StorageError> {
        if counters.is_empty() {
            return Ok(());
        }
        let mut connection = self.connection().await?;
        let mut pipe = redis::pipe();
        for (key, delta) in counters {
            let key = self.key(key);
            pipe.incr(&key, *delta)
                .ignore()
                .expire(&key, ttl.as_secs() as i64)
                .ignore();
        }
        pipe.query_async::<()>(&mut connection)
            .await
            .map_err(|error| self.failed(error))
    }
    async fn counters(&self, keys: &[String]) -> Result<Vec<i64>, StorageError> {
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
    async fn push_samples(
        &self,
        samples: &[(String, Vec<f64>)],
        keep: usize,
    ) -> Result<(), StorageError> {
        if samples.is_empty() {
            return Ok(());
        }
        let mut connection = self.connection().await?;
        let mut pipe = redis::pipe();
        for (key, values) in samples {
            let key = self.key(key);
            pipe.lpush(&key, values)
                .ignore()
                .ltrim(&key, 0, keep as isize - 1)
                .ignore();
        }
        pipe.query_async::<()>(&mut connection)
            .await
            .map_err(|error| self.failed(error))
    }
    async fn samples(&self, key: &str) -> Result<Vec<f64>, StorageError> {
        let mut connection = self.connection().await?;
        connection
            .lrange(self.key(key), 0, -1)
            .await
            .map_err(|error| self.failed(error))
    }
    async fn rank_add(&self, key: &str, scores: &[(String, f64)]) -> Result<(), StorageError> {
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
    async fn rank_top(&self, key: &str, count: usize) -> Result<Vec<String>, StorageError> {
        let mut connection = self.connection().await?;
        connection
            .zrevrange(self.key(key), 0, count as isize - 1)
            .await
            .map_err(|error| self.failed(error))
    }

    async fn set_bounded(
        &self,
        collection: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
        capacity: usize,
    ) -> Result<(), StorageError> {
        let mut connection = self.connection().await?;
        self.set_bounded
            .key(self.key(collection))
            .key(self.key(key))
            .arg(value)
            .arg(ttl.as_secs().max(1))
            .arg(capacity.max(1))
            .arg(clock_micros() / 1000)
            .invoke_async::<i64>(&mut connection)
            .await
            .map_err(|error| self.failed(error))?;
        Ok(())
    }

    async fn rank_trim(&self, key: &str, keep: usize, ttl: Duration) -> Result<(), StorageError> {
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

fn parse_sequence(value: &[u8]) -> Result<u64, StorageError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| StorageError::Unavailable("the cache sequence is not a number".into()))
}

/// A WAL position as the scripts return it: '' when unknown.
fn parse_position(value: &[u8]) -> Result<Option<u64>, StorageError> {
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
