//! Invalidation on a Redis Cluster: every partition is stamped at once, and the invalidation
//! is acknowledged only once a replica of each partition's primary has it (`WAIT 1`), so a
//! failover cannot lose it; concurrent invalidations share one `WAIT` per partition
//! (`ReplicaAcks`). The lease registry waits the same way (`wait_for_replica_of`).

use redis::Script;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};

use super::connection::Connection;
use super::scripts::cluster_call;
use super::{RedisStorage, parse_sequence};
use crate::cache::storage::cluster::{self, Partitions};
use crate::cache::storage::{StorageError, StorageResult};

/// How long an invalidation waits, at most, for a replica of each partition's primary to
/// acknowledge it (`WAIT 1`), as a share of the command timeout (the scripts take the rest). A primary with no replica in sync has nothing a
/// failover could promote with the invalidation, so it is not waited for.
pub(super) const REPLICA_WAIT_SHARE: u32 = 2;

impl RedisStorage {
    /// Every partition's invalidation on a cluster, in two waves sent at once: the stamp
    /// scripts (the cluster connection pipelines them per node), then, for each partition
    /// whose primary has a replica in sync, a `WAIT 1` on the same connection that covers its
    /// script: one sent after it, or shared with concurrent invalidations (`ReplicaAcks`).
    pub(super) async fn invalidate_cluster(
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
