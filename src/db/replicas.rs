//! PostgreSQL read replicas: which database a query execution reads, and each replica's health.
//!
//! A replica serves a read only when it has replayed the WAL position the read must see (the
//! position after the last commit whose invalidation the read follows); otherwise the primary
//! does. A background task per replica compares its replay position with the primary's WAL
//! position, and takes it out of rotation while it is down or lags past the bound.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, Statement};

use super::{DatabaseError, connect_to};
use crate::config::{Config, redact};
use crate::telemetry::{DatabaseLabels, Metrics};

/// A `pg_lsn` ("X/Y", two hex numbers) as one number: `(X << 32) | Y`.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.trim().split_once('/')?;
    let high = u64::from_str_radix(high, 16).ok()?;
    let low = u64::from_str_radix(low, 16).ok()?;
    (high <= u64::from(u32::MAX) && low <= u64::from(u32::MAX)).then_some((high << 32) | low)
}

/// Prints a position the way PostgreSQL does.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & u64::from(u32::MAX))
}

/// Where a replica stands, as `/readyz` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaState {
    /// Not checked yet.
    Starting,
    /// Serves reads.
    InRotation,
    /// Answers, but lags past the bound (or its lag is not known yet).
    Lagging,
    /// Does not answer, or is not a standby.
    Down,
}

/// One replica's health, as `/readyz` reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplicaStatus {
    pub name: String,
    pub url: String,
    pub state: ReplicaState,
    pub replay_lsn: Option<String>,
    pub lag_ms: Option<u64>,
    pub last_check_ms_ago: Option<u64>,
    pub error: Option<String>,
}

struct Health {
    state: ReplicaState,
    /// The last replay position observed, and when.
    replay: Option<(u64, Instant)>,
    lag: Option<Duration>,
    checked_at: Option<Instant>,
    error: Option<String>,
    /// Checks that found it unfit since it last left rotation (for the line that logs its
    /// return: its state changes are logged, not each check).
    checks_out: u64,
}

struct Replica {
    name: String,
    url: String,
    /// Serves reads.
    db: DatabaseConnection,
    /// One connection for health checks, so they never queue behind reads.
    checks: DatabaseConnection,
    health: Mutex<Health>,
}

struct Inner {
    primary: DatabaseConnection,
    /// One connection to the primary for health checks.
    primary_checks: DatabaseConnection,
    replicas: Vec<Replica>,
    max_lag: Duration,
    check_timeout: Duration,
    /// The highest position this instance's own commits reached: every read honours it,
    /// through the cache or not, so a client reads its own writes on this instance.
    own_commits: AtomicU64,
    next: AtomicUsize,
    metrics: Arc<Metrics>,
}

/// The database one query execution reads.
pub struct ReadRoute {
    pub db: DatabaseConnection,
    /// The replica's index, `None` for the primary.
    pub replica: Option<usize>,
    /// A position read from the primary because the required one was unknown.
    pub established: Option<u64>,
}

/// The primary and its replicas; cloned cheaply into the schema and the executor.
#[derive(Clone)]
pub struct Replicas {
    inner: Arc<Inner>,
}

const CURRENT_POSITION: &str = "SELECT pg_current_wal_lsn()::text AS lsn";
const REPLAY_POSITION: &str = "SELECT pg_last_wal_replay_lsn()::text AS lsn";

async fn position(db: &DatabaseConnection, sql: &str) -> Result<Option<u64>, DbErr> {
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("no row".into()))?;
    let text: Option<String> = row.try_get("", "lsn")?;
    Ok(text.as_deref().and_then(parse_lsn))
}

impl Replicas {
    /// Connects to every configured replica and starts its health task; `None` without
    /// replicas. Replicas start out of rotation until their first check.
    pub async fn connect(
        config: &Config,
        primary: DatabaseConnection,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Replicas>, DatabaseError> {
        let urls = config.replica_urls();
        if urls.is_empty() {
            return Ok(None);
        }
        // A check gives up after a few intervals: a connection attempt to a stopped replica
        // is retried until the acquire timeout, which would delay taking it out of rotation.
        let check_timeout = (4 * config.replica_check_interval())
            .clamp(Duration::from_millis(250), config.db_acquire_timeout());
        let mut check_config = config.clone();
        check_config.db_acquire_timeout_ms = check_timeout.as_millis() as u64;
        let primary_checks =
            connect_to(&check_config, &config.database_url, 1, None, false).await?;
        let mut replicas = Vec::with_capacity(urls.len());
        for (index, url) in urls.iter().enumerate() {
            // A replica that is down at start is not fatal: it joins when it answers.
            let metered = Some(Arc::clone(&metrics));
            let db = connect_to(config, url, config.db_pool_size, metered, true).await?;
            let checks = connect_to(&check_config, url, 1, None, true).await?;
            replicas.push(Replica {
                name: format!("replica-{}", index + 1),
                url: redact(url),
                db,
                checks,
                health: Mutex::new(Health {
                    state: ReplicaState::Starting,
                    replay: None,
                    lag: None,
                    checked_at: None,
                    error: None,
                    checks_out: 0,
                }),
            });
        }
        let replicas = Replicas {
            inner: Arc::new(Inner {
                primary,
                primary_checks,
                replicas,
                max_lag: config.replica_max_lag(),
                check_timeout,
                own_commits: AtomicU64::new(0),
                next: AtomicUsize::new(0),
                metrics,
            }),
        };
        for index in 0..replicas.inner.replicas.len() {
            tokio::spawn(watch(
                Arc::downgrade(&replicas.inner),
                index,
                config.replica_check_interval(),
            ));
        }
        Ok(Some(replicas))
    }

    /// The primary's WAL position right after a commit (at or past the commit's record),
    /// remembered as a position every later read on this instance must see.
    pub async fn commit_position(&self) -> Result<u64, DbErr> {
        let lsn = position(&self.inner.primary, CURRENT_POSITION)
            .await?
            .ok_or_else(|| DbErr::Custom("the primary reports no WAL position".into()))?;
        self.inner.own_commits.fetch_max(lsn, Ordering::SeqCst);
        Ok(lsn)
    }

    /// The database a query execution reads: a replica in rotation that has replayed
    /// `required` and this instance's own commits, else the primary. `None` (unknown) is
    /// replaced by the primary's current position, returned in `established`.
    pub async fn route(&self, required: Option<u64>) -> ReadRoute {
        let mut established = None;
        let required = match required {
            Some(required) => required,
            None => match position(&self.inner.primary, CURRENT_POSITION).await {
                Ok(Some(lsn)) => {
                    established = Some(lsn);
                    lsn
                }
                _ => return self.primary_route(None),
            },
        };
        let required = required.max(self.inner.own_commits.load(Ordering::SeqCst));
        let replicas = &self.inner.replicas;
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let mut behind = None;
        for offset in 0..replicas.len() {
            let index = (start + offset) % replicas.len();
            let health = replicas[index].health.lock();
            if health.state != ReplicaState::InRotation {
                continue;
            }
            match health.replay {
                Some((replay, _)) if replay >= required => {
                    return self.replica_route(index, established);
                }
                _ => {
                    behind.get_or_insert(index);
                }
            }
        }
        // Observations are up to one check interval old: ask one replica directly.
        if let Some(index) = behind {
            let replica = &replicas[index];
            let asked = tokio::time::timeout(
                self.inner.check_timeout,
                position(&replica.db, REPLAY_POSITION),
            )
            .await;
            if let Ok(Ok(Some(replay))) = asked {
                let mut health = replica.health.lock();
                if health.replay.is_none_or(|(known, _)| known <= replay) {
                    health.replay = Some((replay, Instant::now()));
                }
                if replay >= required && health.state == ReplicaState::InRotation {
                    drop(health);
                    return self.replica_route(index, established);
                }
            }
        }
        self.primary_route(established)
    }

    fn primary_route(&self, established: Option<u64>) -> ReadRoute {
        self.count_read("primary");
        ReadRoute {
            db: self.inner.primary.clone(),
            replica: None,
            established,
        }
    }

    fn replica_route(&self, index: usize, established: Option<u64>) -> ReadRoute {
        let replica = &self.inner.replicas[index];
        self.count_read(&replica.name);
        ReadRoute {
            db: replica.db.clone(),
            replica: Some(index),
            established,
        }
    }

    fn count_read(&self, database: &str) {
        self.inner
            .metrics
            .db_reads
            .get_or_create(&DatabaseLabels {
                database: database.to_owned(),
            })
            .inc();
    }

    /// Takes a replica out of rotation after a read found it unreachable; its health task
    /// brings it back once it answers and has caught up.
    pub fn mark_down(&self, index: usize, error: &str) {
        let Some(replica) = self.inner.replicas.get(index) else {
            return;
        };
        let mut health = replica.health.lock();
        if health.state == ReplicaState::InRotation {
            tracing::warn!(replica = %replica.name, %error, "replica failed a read: out of rotation");
        }
        health.state = ReplicaState::Down;
        health.error = Some(error.to_owned());
    }

    pub fn statuses(&self) -> Vec<ReplicaStatus> {
        let now = Instant::now();
        self.inner
            .replicas
            .iter()
            .map(|replica| {
                let health = replica.health.lock();
                ReplicaStatus {
                    name: replica.name.clone(),
                    url: replica.url.clone(),
                    state: health.state,
                    replay_lsn: health.replay.map(|(lsn, _)| format_lsn(lsn)),
                    lag_ms: health.lag.map(|lag| lag.as_millis() as u64),
                    last_check_ms_ago: health
                        .checked_at
                        .map(|at| now.saturating_duration_since(at).as_millis() as u64),
                    error: health.error.clone(),
                }
            })
            .collect()
    }
}

/// How far back primary positions are remembered to date a replica's replay position.
fn history(max_lag: Duration) -> Duration {
    max_lag * 2 + Duration::from_secs(1)
}

/// Checks one replica every `interval` until the replicas are dropped.
async fn watch(inner: std::sync::Weak<Inner>, index: usize, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The primary's positions and when they were read: the newest one a replica has replayed
    // dates its view of the data, so lag is measured in time even when the primary is idle.
    let mut primary_positions: VecDeque<(Instant, u64)> = VecDeque::new();
    loop {
        ticker.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let checked = tokio::time::timeout(
            inner.check_timeout,
            check(&inner, index, &mut primary_positions),
        )
        .await
        .unwrap_or_else(|_| Err(Trouble::Replica("the health check timed out".into())));
        let replica = &inner.replicas[index];
        let mut health = replica.health.lock();
        let now = Instant::now();
        let before = health.state;
        match checked {
            Ok((replay, lag)) => {
                if health.replay.is_none_or(|(known, _)| known <= replay) {
                    health.replay = Some((replay, now));
                }
                health.lag = lag;
                health.error = None;
                health.state = match lag {
                    Some(lag) if lag <= inner.max_lag => ReplicaState::InRotation,
                    _ => ReplicaState::Lagging,
                };
            }
            // The primary did not answer: the replica's lag cannot be measured, but nothing
            // says it is unfit; the primary's own breaker handles the primary.
            Err(Trouble::Primary(error)) => {
                health.error = Some(format!("lag not measured: the primary failed: {error}"));
            }
            Err(Trouble::Replica(error)) => {
                health.state = ReplicaState::Down;
                health.lag = None;
                health.error = Some(error);
            }
        }
        health.checked_at = Some(now);
        // Logged when it enters or leaves rotation, not when an unfit replica goes from
        // lagging to down and back: one line out, one line in, with the checks in between.
        let in_rotation = health.state == ReplicaState::InRotation;
        if !in_rotation {
            health.checks_out += 1;
        }
        let was_in_rotation = before == ReplicaState::InRotation;
        if in_rotation && !was_in_rotation {
            let checks_out = std::mem::take(&mut health.checks_out);
            tracing::info!(
                replica = %replica.name,
                lag_ms = health.lag.map(|lag| lag.as_millis() as u64),
                checks_out,
                "replica in rotation (out of rotation: repeated {checks_out} checks before)"
            );
        } else if !in_rotation && (was_in_rotation || before == ReplicaState::Starting) {
            tracing::warn!(
                replica = %replica.name,
                state = ?health.state,
                lag_ms = health.lag.map(|lag| lag.as_millis() as u64),
                error = health.error.as_deref(),
                "replica out of rotation"
            );
        }
    }
}

enum Trouble {
    Primary(String),
    Replica(String),
}

/// Reads the primary's position, then the replica's replay position; returns the latter and
/// the replica's lag (`None` while no remembered primary position is replayed yet).
async fn check(
    inner: &Inner,
    index: usize,
    primary_positions: &mut VecDeque<(Instant, u64)>,
) -> Result<(u64, Option<Duration>), Trouble> {
    let primary = position(&inner.primary_checks, CURRENT_POSITION)
        .await
        .map_err(|error| Trouble::Primary(error.to_string()))?
        .ok_or_else(|| Trouble::Primary("the primary reports no WAL position".into()))?;
    let read_at = Instant::now();
    primary_positions.push_back((read_at, primary));
    let keep = history(inner.max_lag);
    while primary_positions.len() > 1
        && primary_positions
            .front()
            .is_some_and(|(at, _)| read_at.saturating_duration_since(*at) > keep)
    {
        primary_positions.pop_front();
    }
    let replay = position(&inner.replicas[index].checks, REPLAY_POSITION)
        .await
        .map_err(|error| Trouble::Replica(error.to_string()))?
        .ok_or_else(|| Trouble::Replica("not a standby: it reports no replay position".into()))?;
    let now = Instant::now();
    let lag = primary_positions
        .iter()
        .rev()
        .find(|(_, lsn)| *lsn <= replay)
        .map(|(at, _)| {
            if *at == read_at {
                Duration::ZERO
            } else {
                now.saturating_duration_since(*at)
            }
        });
    Ok((replay, lag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_parse_as_postgresql_prints_them() {
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("0/16B3748"), Some(0x16B_3748));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert_eq!(parse_lsn("FFFFFFFF/FFFFFFFF"), Some(u64::MAX));
        assert_eq!(format_lsn(0x3_0000_00A8), "3/A8");
        assert_eq!(parse_lsn(&format_lsn(0x3_0000_00A8)), Some(0x3_0000_00A8));
        assert_eq!(parse_lsn("16B3748"), None);
        assert_eq!(parse_lsn("1FFFFFFFF/0"), None);
        assert_eq!(parse_lsn("x/1"), None);
    }
}
