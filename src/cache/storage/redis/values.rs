//! The value store on Redis: plain values (persisted queries, cached token checks), the
//! monitor's counters, samples and rankings, and bounded collections. On a cluster they all
//! live under one hash tag, so every pipeline and script over them stays in one slot; none is
//! on a hit's path.

use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;

use super::RedisStorage;
use super::scripts::{Layout, clock_micros};
use crate::cache::storage::{BoundedMember, StorageResult, ValueStore};

impl RedisStorage {
    /// The full key of a plain value (tests, management).
    pub fn value_key(&self, key: &str) -> String {
        self.key(key)
    }

    /// A plain value's key.
    pub(super) fn key(&self, key: &str) -> String {
        match &self.layout {
            Layout::Single { .. } => format!("{}{key}", self.prefix),
            Layout::Cluster { values, .. } => format!("{values}{key}"),
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
