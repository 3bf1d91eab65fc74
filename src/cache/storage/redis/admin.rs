//! Administration: what `cache clear`, `cache stats` and the tests need, and no request path
//! does. These are the only places that scan (SCAN on every primary, only this server's
//! prefix), and they keep the bookkeeping a concurrent invalidation may have just written.

use super::RedisStorage;
use super::connection::Connection;
use super::scripts::Layout;
use crate::cache::storage::cluster;
use crate::cache::storage::{BackendStats, StorageResult};
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};

impl RedisStorage {
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
    pub(super) fn is_bookkeeping(&self, key: &str) -> bool {
        (match &self.layout {
            Layout::Single { .. } => {
                let rest = key.strip_prefix(&self.prefix).unwrap_or_default();
                rest.starts_with("tag:") || ["seq", "floor", "lsn", "runid"].contains(&rest)
            }
            Layout::Cluster { partitions, .. } => partitions.is_bookkeeping(key),
        }) || self.leases.owns(key)
    }

    /// Starts a new epoch first, so every entry is unprovable at once, then deletes the
    /// entries. The bookkeeping (sequence, floor, tag stamps) stays: deleting a stamp written
    /// after the clear began could make a newer entry look fresh. Stamps expire by themselves.
    pub(super) async fn clear_prefix(&self) -> StorageResult<u64> {
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
    pub(super) async fn prefix_stats(&self) -> StorageResult<BackendStats> {
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
