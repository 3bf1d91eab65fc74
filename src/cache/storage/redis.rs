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

use super::{BackendStats, CacheStorage, Lookup, StorageError};
use crate::cache::entry::Entry;

const LOOKUP: &str = r#"
local entry = redis.call('GET', KEYS[1])
if entry then
  local newline = string.find(entry, '\n', 1, true)
  if newline then
    local seq = nil
    local tags = {}
    for word in string.gmatch(string.sub(entry, 1, newline - 1), '%S+') do
      if seq == nil then seq = tonumber(word) else tags[#tags + 1] = ARGV[1] .. word end
    end
    local fresh = seq ~= nil
    if fresh and #tags > 0 then
      local versions = redis.call('MGET', unpack(tags))
      for i = 1, #versions do
        if versions[i] and tonumber(versions[i]) > seq then fresh = false break end
      end
    end
    if fresh then return {1, entry} end
  end
end
return {0, redis.call('GET', KEYS[2]) or '0'}
"#;

const INVALIDATE: &str = r#"
local seq = redis.call('INCR', KEYS[1])
for i = 3, #ARGV do
  redis.call('SET', ARGV[1] .. ARGV[i], seq, 'EX', tonumber(ARGV[2]))
end
redis.call('PUBLISH', KEYS[2], seq .. ' ' .. table.concat(ARGV, ' ', 3))
return seq
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
    invalidate: Script,
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
            lookup: Script::new(LOOKUP),
            invalidate: Script::new(INVALIDATE),
        })
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The pub/sub channel on which invalidations are announced.
    pub fn channel(&self) -> String {
        format!("{}invalidations", self.prefix)
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
        let connection = (*pooled).clone();
        *slot.lock() = Some(pooled);
        Ok(connection)
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
impl CacheStorage for RedisStorage {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn lookup(&self, key: &str) -> Result<Lookup, StorageError> {
        let mut connection = self.connection().await?;
        let (found, value): (i64, Vec<u8>) = self
            .lookup
            .key(self.key(key))
            .key(self.key("seq"))
            .arg(self.key("tag:"))
            .invoke_async(&mut connection)
            .await
            .map_err(|error| self.failed(error))?;
        if found == 1 {
            let entry = Entry::decode(&value)
                .map_err(|error| StorageError::Unavailable(error.to_string()))?;
            Ok(Lookup::Hit(Arc::new(entry)))
        } else {
            let seq = std::str::from_utf8(&value)
                .ok()
                .and_then(|text| text.parse().ok())
                .unwrap_or(0);
            Ok(Lookup::Miss { seq })
        }
    }

    async fn sequence(&self) -> Result<u64, StorageError> {
        let mut connection = self.connection().await?;
        let seq: Option<u64> = connection
            .get(self.key("seq"))
            .await
            .map_err(|error| self.failed(error))?;
        Ok(seq.unwrap_or(0))
    }

    async fn store(&self, key: &str, entry: Arc<Entry>, ttl: Duration) -> Result<(), StorageError> {
        self.set(key, entry.encode(self.compress_above), ttl).await
    }

    async fn invalidate(&self, tags: &[String]) -> Result<u64, StorageError> {
        let mut connection = self.connection().await?;
        let mut invocation = self.invalidate.key(self.key("seq"));
        invocation
            .key(self.channel())
            .arg(self.key("tag:"))
            .arg(self.tag_ttl.as_secs().max(1));
        for tag in tags {
            invocation.arg(tag);
        }
        invocation
            .invoke_async(&mut connection)
            .await
            .map_err(|error| self.failed(error))
    }

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

    async fn clear(&self) -> Result<u64, StorageError> {
        let mut connection = self.connection().await?;
        let mut deleted = 0;
        for keys in self.prefix_keys(&mut connection).await? {
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
