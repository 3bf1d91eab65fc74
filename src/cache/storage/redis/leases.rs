//! Leases that make first tiers exact across instances, not only fast. An instance serves
//! from its first tier only while it holds a lease in Redis, renewed every fifth of the lease
//! and carrying the invalidation sequences it has heard. A mutation answers only once every
//! other leased instance has heard its invalidation, or has provably stopped serving from its
//! tier: one that has not acknowledged within half a lease is evicted (it can no longer
//! renew) and the writer waits out the lease it held. So a read that starts after a
//! mutation's answer never returns older data from any instance's first tier, and a
//! partitioned or stalled instance costs a writer at most half a lease plus a lease, once.
//!
//! The registry is one sorted set (member → lease end, on Redis's clock) and one hash
//! (member → heard sequences) under one hash tag. An instance holds its lease until the
//! moment it sent the renewal plus the lease, less a margin for clock rates, which is never
//! later than the end Redis recorded. On a Redis with replicas a renewal counts only once a
//! replica has it (`WAIT 1`), so a failover cannot forget a member that is serving.

use std::time::Duration;

use redis::Script;

use super::{Connection, RedisStorage};
use crate::cache::storage::cluster;
use crate::cache::storage::{StorageError, StorageResult};

/// The registry's keys, on one hash slot: `{<prefix>first-tier}members` and `...heard`.
fn registry_tag(prefix: &str) -> String {
    format!("{{{prefix}first-tier}}")
}

// The scripts are files of their own (`leases/`): `prelude.lua` (Redis's clock and a list of
// sequences from text) starts `renew.lua` and `pending.lua`.
const PRELUDE: &str = include_str!("lua/leases/prelude.lua");
const RENEW: &str = include_str!("lua/leases/renew.lua");
const LEAVE: &str = include_str!("lua/leases/leave.lua");
const PENDING: &str = include_str!("lua/leases/pending.lua");

/// How a renewal went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// The lease runs this long from when the renewal was sent (less `Leases::margin`).
    Granted(Duration),
    /// The lease had ended or was taken away: drop the tier's entries and join again.
    Refused,
}

/// The registry of first-tier leases under one prefix, and its timings.
pub struct Leases {
    members: String,
    heard: String,
    renew: Script,
    leave: Script,
    pending: Script,
    lease: Duration,
    command_timeout: Duration,
}

impl Leases {
    pub fn new(prefix: &str, lease: Duration, command_timeout: Duration) -> Self {
        let tag = registry_tag(prefix);
        Leases {
            members: format!("{tag}members"),
            heard: format!("{tag}heard"),
            renew: Script::new(&format!("{PRELUDE}{RENEW}")),
            leave: Script::new(LEAVE),
            pending: Script::new(&format!("{PRELUDE}{PENDING}")),
            lease,
            command_timeout,
        }
    }

    /// How often a member renews (and at most how long an acknowledgement waits for one).
    pub fn heartbeat(&self) -> Duration {
        self.lease / 5
    }

    /// How long a writer waits for an acknowledgement before it evicts the member.
    pub fn patience(&self) -> Duration {
        self.lease / 2
    }

    /// Taken off every granted lease: clocks that run at slightly different rates.
    pub fn margin(&self) -> Duration {
        self.lease / 50 + Duration::from_millis(2)
    }

    /// The longest a writer waits for other instances (then it answers, and says why).
    pub fn writer_bound(&self) -> Duration {
        self.patience() + self.lease + self.lease / 2
    }

    /// The hash slot of the registry (a `WAIT` after a renewal goes to its primary).
    pub fn slot(&self) -> u16 {
        cluster::slot(self.members.as_bytes())
    }

    /// True for the registry's keys (kept by `cache clear`, like the rest of the bookkeeping).
    pub fn owns(&self, key: &str) -> bool {
        key == self.members || key == self.heard
    }

    /// Renews (or, with `joining`, takes) `member`'s lease, recording the sequences it heard.
    /// On a Redis with replicas the grant counts only once a replica acknowledged it.
    pub async fn renew(
        &self,
        storage: &RedisStorage,
        connection: &mut Connection,
        member: &str,
        joining: bool,
        heard: &[u64],
    ) -> StorageResult<Renewal> {
        let mut invocation = self.renew.prepare_invoke();
        invocation
            .key(&self.members)
            .key(&self.heard)
            .arg(member)
            .arg(self.lease.as_millis() as u64)
            .arg(join_sequences(heard))
            .arg(if joining { "join" } else { "renew" });
        let renewal = async {
            let (granted, replicas) = invocation
                .invoke_async::<(u64, i64)>(connection)
                .await
                .map_err(|error| StorageError::Unavailable(error.to_string()))?;
            if granted == 0 {
                return Ok(Renewal::Refused);
            }
            if replicas > 0 {
                let acknowledged = storage
                    .wait_for_replica_of(connection, self.slot())
                    .await
                    .map_err(|error| StorageError::Unavailable(error.to_string()))?;
                if acknowledged < 1 {
                    return Err(StorageError::Unavailable(
                        "no replica acknowledged the first-tier lease".into(),
                    ));
                }
            }
            Ok(Renewal::Granted(Duration::from_millis(granted)))
        };
        // Two calls: the script, then perhaps a `WAIT`.
        within(self.command_timeout * 2, renewal).await
    }

    /// The time a connection for renewals may take to open.
    pub fn connect_timeout(&self) -> Duration {
        self.command_timeout * 2
    }

    /// Gives `member`'s lease up (its subscription ended, or it shuts down): writers stop
    /// waiting for it at once instead of when the lease ends.
    pub async fn leave(&self, storage: &RedisStorage, member: &str) -> StorageResult<()> {
        let mut invocation = self.leave.prepare_invoke();
        invocation.key(&self.members).key(&self.heard).arg(member);
        within(self.command_timeout, storage.invoke::<i64>(&invocation)).await?;
        Ok(())
    }

    /// Returns once every leased member but `asking` has heard `sequences` (by partition), or
    /// has lost its lease: members still behind after `patience` are evicted and their leases
    /// waited out. Gives up with an error after `writer_bound` (Redis unreachable that long).
    /// Returns how many members were evicted.
    pub async fn settle(
        &self,
        storage: &RedisStorage,
        asking: Option<&str>,
        sequences: &[u64],
    ) -> StorageResult<u64> {
        let started = tokio::time::Instant::now();
        let required = join_sequences(sequences);
        let mut evicted = 0;
        let mut evicted_until = 0u64;
        let mut pause = Duration::from_millis(1);
        loop {
            let evict = started.elapsed() >= self.patience();
            let mut invocation = self.pending.prepare_invoke();
            invocation
                .key(&self.members)
                .key(&self.heard)
                .arg(asking.unwrap_or_default())
                .arg(&required)
                .arg(if evict { "evict" } else { "wait" });
            let answer = within(
                self.command_timeout,
                storage.invoke::<(u64, u64, u64, u64)>(&invocation),
            )
            .await;
            // What to report if the bound passes now: the last error, or the members' silence.
            let gave_up = match answer {
                Ok((now, behind, evicted_now, until)) => {
                    evicted += evicted_now;
                    evicted_until = evicted_until.max(until);
                    if behind == 0 && now > evicted_until {
                        return Ok(evicted);
                    }
                    if behind == 0 {
                        // The evicted leases end on Redis's clock; look again just after.
                        pause = Duration::from_millis(evicted_until - now + 1);
                    }
                    StorageError::Unavailable(format!(
                        "first tiers did not settle within {:?}",
                        self.writer_bound()
                    ))
                }
                Err(error) => error,
            };
            if started.elapsed() >= self.writer_bound() {
                return Err(gave_up);
            }
            tokio::time::sleep(pause).await;
            pause = Duration::from_millis(1);
        }
    }
}

/// `future`, or a timeout error once `bound` has passed.
async fn within<T>(
    bound: Duration,
    future: impl Future<Output = StorageResult<T>>,
) -> StorageResult<T> {
    tokio::time::timeout(bound, future)
        .await
        .map_err(|_| StorageError::Timeout(bound))?
}

fn join_sequences(sequences: &[u64]) -> String {
    let mut text = String::with_capacity(sequences.len() * 8);
    for (index, seq) in sequences.iter().enumerate() {
        if index > 0 {
            text.push(',');
        }
        text.push_str(&seq.to_string());
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_keys_share_one_hash_slot() {
        let leases = Leases::new(
            "catalog:",
            Duration::from_millis(500),
            Duration::from_secs(1),
        );
        assert_eq!(
            cluster::slot(leases.members.as_bytes()),
            cluster::slot(leases.heard.as_bytes())
        );
        assert!(leases.owns("{catalog:first-tier}members"));
        assert!(!leases.owns("catalog:seq"));
    }

    #[test]
    fn the_writer_bound_covers_patience_and_a_whole_lease() {
        let leases = Leases::new("p:", Duration::from_millis(500), Duration::from_secs(1));
        assert_eq!(leases.heartbeat(), Duration::from_millis(100));
        assert!(leases.writer_bound() > leases.patience() + Duration::from_millis(500));
        assert_eq!(join_sequences(&[3, 0, 12]), "3,0,12");
    }
}
