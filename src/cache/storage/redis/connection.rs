//! Connections to the cache's Redis and what they are to: the topology a `REDIS_URL` names (one
//! Redis or a cluster), the deadpool pool, and the few multiplexed connections every request
//! shares. A new connection proves, before it serves anything, that this Redis still holds
//! our bookkeeping (`check_identity`); an error drops the shared connections on one Redis.

use deadpool_redis::Pool;
use redis::aio::ConnectionLike;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};

use super::RedisStorage;
use super::scripts::{Layout, single_call};
use crate::cache::storage::cluster::Partitions;
use crate::cache::storage::{StorageError, StorageResult};

/// `REDIS_URL` naming a cluster: `redis+cluster://host:port,host:port,...` (any reachable
/// nodes; the client learns the rest and follows MOVED/ASK redirections).
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

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
    Recording(super::tests::Recorder),
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

/// Connections in use at once. Each is a multiplexed (pipelining) connection taken from the
/// deadpool pool once and shared by every request until it fails, so a request pays one
/// round trip, not a pool checkout (deadpool's recycle check costs a PING per checkout).
pub(super) const SHARED_CONNECTIONS: usize = 4;

/// A shared connection and the pool object it came from (kept, so the pool counts it in use).
pub(super) struct Shared {
    pub(super) connection: Connection,
    pub(super) _pooled: Pooled,
}

#[expect(
    dead_code,
    reason = "held, never read: the pool counts the connection in use"
)]
pub(super) enum Pooled {
    Single(deadpool_redis::Connection),
    Cluster(deadpool_redis::cluster::Connection),
    #[cfg(test)]
    Nothing,
}

/// Empties a connection slot when dropped (forgotten once the work it guards succeeded).
pub(super) struct ResetOnDrop<'a>(pub(super) &'a parking_lot::Mutex<Option<Shared>>);

impl Drop for ResetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.lock().take();
    }
}

pub(super) fn unavailable(error: impl std::fmt::Display) -> StorageError {
    StorageError::Unavailable(error.to_string())
}

impl RedisStorage {
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

    pub(super) async fn connection(&self) -> StorageResult<Connection> {
        let slot = &self.shared
            [self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.shared.len()];
        self.connection_in(slot).await
    }

    pub(super) async fn connection_in(
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
    /// On a cluster the scripts check the node themselves (see `lua/cluster/epoch.lua`): a failover
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
    pub(super) fn failed(&self, error: impl std::fmt::Display) -> StorageError {
        if let Layout::Single { .. } = self.layout {
            self.reset();
        }
        unavailable(error)
    }
}
