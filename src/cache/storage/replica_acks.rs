//! Replica acknowledgements on a cluster, with group commit. An invalidation counts only once
//! a replica of its partition's primary holds it (`WAIT 1`), so a failover cannot lose it.
//! `WAIT` answers for every write its connection sent before it, and it blocks that
//! connection; invalidations share one connection (`RedisStorage::invalidations`), so one
//! `WAIT` stands for every invalidation whose script had answered before it was sent.
//! Concurrent invalidations of a partition queue for the next `WAIT` instead of sending one
//! each: one round trip to the replica per batch, not per write.

use std::sync::atomic::{AtomicU64, Ordering};

/// Per partition: invalidation scripts that answered, and how many of them a replica
/// acknowledged.
pub struct ReplicaAcks {
    partitions: Vec<Partition>,
}

#[derive(Default)]
struct Partition {
    /// Invalidation scripts of this partition that have answered, counted as they answer.
    answered: AtomicU64,
    /// How many of them a `WAIT` was acknowledged for (held while a `WAIT` is out).
    acknowledged: tokio::sync::Mutex<u64>,
}

/// An invalidation script's place in its partition's order of answers.
#[derive(Debug, Clone, Copy)]
pub struct Answered(u64);

impl ReplicaAcks {
    pub fn new(partitions: usize) -> Self {
        ReplicaAcks {
            partitions: (0..partitions).map(|_| Partition::default()).collect(),
        }
    }

    /// Records that an invalidation script of `partition` answered (call after its reply).
    pub fn answered(&self, partition: usize) -> Answered {
        Answered(
            self.partitions[partition]
                .answered
                .fetch_add(1, Ordering::AcqRel)
                + 1,
        )
    }

    /// True once a replica acknowledged a `WAIT` sent after `answered`'s script had answered:
    /// the one a concurrent invalidation sent, or `send_wait` (which returns how many replicas
    /// acknowledged). False when the `WAIT` this call sent was acknowledged by none.
    pub async fn acknowledged<E>(
        &self,
        partition: usize,
        answered: Answered,
        send_wait: impl AsyncFnOnce() -> Result<i64, E>,
    ) -> Result<bool, E> {
        let partition = &self.partitions[partition];
        let mut acknowledged = partition.acknowledged.lock().await;
        if *acknowledged >= answered.0 {
            return Ok(true);
        }
        // Every script counted so far answered before this `WAIT` is sent, so it covers them.
        let covered = partition.answered.load(Ordering::Acquire);
        let replicas = send_wait().await?;
        if replicas < 1 {
            return Ok(false);
        }
        *acknowledged = (*acknowledged).max(covered);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[tokio::test]
    async fn one_wait_stands_for_every_invalidation_that_answered_before_it() {
        let acks = Arc::new(ReplicaAcks::new(1));
        let waits = Arc::new(AtomicUsize::new(0));
        let (release, held) = tokio::sync::oneshot::channel::<()>();
        let first = acks.answered(0);
        let leader = {
            let (acks, waits) = (Arc::clone(&acks), Arc::clone(&waits));
            tokio::spawn(async move {
                acks.acknowledged(0, first, async || {
                    waits.fetch_add(1, Ordering::SeqCst);
                    let _ = held.await;
                    Ok::<_, ()>(1)
                })
                .await
            })
        };
        while waits.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // Two scripts answer while the first WAIT is out: it does not cover them, the next does.
        let followers: Vec<_> = (0..2)
            .map(|_| {
                let answered = acks.answered(0);
                let (acks, waits) = (Arc::clone(&acks), Arc::clone(&waits));
                tokio::spawn(async move {
                    acks.acknowledged(0, answered, async || {
                        waits.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, ()>(1)
                    })
                    .await
                })
            })
            .collect();
        let _ = release.send(());
        assert_eq!(leader.await.expect("leader"), Ok(true));
        for follower in followers {
            assert_eq!(follower.await.expect("follower"), Ok(true));
        }
        assert_eq!(
            waits.load(Ordering::SeqCst),
            2,
            "the first WAIT, then one for both followers"
        );
    }

    #[tokio::test]
    async fn a_wait_no_replica_acknowledged_covers_nothing() {
        let acks = ReplicaAcks::new(2);
        let answered = acks.answered(1);
        assert_eq!(
            acks.acknowledged(1, answered, async || Ok::<_, ()>(0))
                .await,
            Ok(false)
        );
        assert_eq!(
            acks.acknowledged(1, answered, async || Ok::<_, ()>(1))
                .await,
            Ok(true),
            "the next invalidation's WAIT is sent, not skipped"
        );
        assert_eq!(
            acks.acknowledged(1, answered, async || Err("not sent"))
                .await,
            Ok(true),
            "covered by the acknowledged WAIT: none is sent"
        );
    }
}
