//! Purge on commit. A mutation records its tags in the outbox inside its transaction
//! (`record`), and after the commit and the origin's invalidation hands them here (`purge`)
//! and waits for the edge's acknowledgement, at most `CATALOG_EDGE_PURGE_WAIT_MS`: past it the
//! mutation answers with its purge pending, and the outbox keeps it.
//!
//! - Coalescing: purges that arrive within `CATALOG_EDGE_PURGE_COALESCE_MS` of each other go
//!   out together, one request per batch of tags (a bulk update of 1,000 prices stamps at
//!   most `cache::tags::MAX_TAGS_PER_INVALIDATION` tags: one request). Past
//!   `MAX_TAGS_PER_PURGE` distinct tags, the deployment's `all` tag stands for them.
//! - The second purge: an edge fetch in flight while the mutation committed may store a
//!   result computed before it (a purge cannot remove what is not stored yet), so the same
//!   tags are purged again after `CATALOG_EDGE_REPURGE_AFTER_MS`; only then is the outbox row
//!   deleted. The shipped VCL also refuses to store a fetch that a purge overtook.
//! - Retry: every instance looks for rows older than its own purges could be, and purges them
//!   with backoff (1 s doubling to `MAX_RETRY_PAUSE`) until the edge acknowledges them.
//!
//! In traces, a mutation's wait is an `edge.purge_wait` span under its request, and each
//! request to the edge an `edge.purge` span of the worker's own (it may carry several
//! mutations' tags).

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use sea_orm::{DatabaseConnection, DatabaseTransaction, DbErr};
use tokio::sync::{mpsc, oneshot};

use super::backends::PurgeBackend;
use super::outbox;
use super::surrogate_keys::EdgeNames;
use crate::cache::tags::Tag;
use crate::config::Config;
use crate::telemetry::Metrics;

/// Most distinct tags one coalesced purge names; past it the deployment's `all` tag is
/// purged instead (complete, and one request whatever the backlog).
pub const MAX_TAGS_PER_PURGE: usize = 1_024;
/// Most purges waiting for the worker; a mutation that finds the queue full answers with its
/// purge pending (the outbox has it).
const QUEUE: usize = 4_096;
/// Most outbox rows one retry takes.
const RETRY_ROWS: u64 = 500;
const RETRY_TICK: Duration = Duration::from_secs(1);
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(10);

/// Whether the edge acknowledged a mutation's purge before it answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeState {
    Acknowledged,
    /// Kept in the outbox and retried until the edge acknowledges it.
    Pending,
}

impl PurgeState {
    pub fn as_str(self) -> &'static str {
        match self {
            PurgeState::Acknowledged => "ACKNOWLEDGED",
            PurgeState::Pending => "PENDING",
        }
    }
}

/// A purge written to the outbox, to send once the transaction has committed.
#[derive(Debug)]
pub struct Recorded {
    row: i32,
    tags: Vec<String>,
}

/// Purges sent together.
struct Job {
    rows: Vec<i32>,
    tags: Vec<String>,
    acknowledged: Option<oneshot::Sender<bool>>,
    /// The second purge: the rows are deleted once it is acknowledged.
    last: bool,
}

struct Inner {
    jobs: mpsc::Sender<Job>,
    names: EdgeNames,
    wait: Duration,
    metrics: Arc<Metrics>,
}

/// Sends committed mutations' purges to the configured edge. Cloned into the schema's data.
#[derive(Clone)]
pub struct EdgePurger {
    inner: Arc<Inner>,
}

/// What the background tasks share; they end when the last `EdgePurger` is dropped.
struct Worker {
    backend: PurgeBackend,
    outbox: DatabaseConnection,
    metrics: Arc<Metrics>,
    coalesce: Duration,
    repurge_after: Duration,
    names: EdgeNames,
}

impl EdgePurger {
    /// The purger the configuration asks for, its worker and retry loop started; `None`
    /// without an edge to purge. `outbox` is a connection of its own (its statements are not
    /// a request's).
    pub fn start(
        config: &Config,
        outbox: DatabaseConnection,
        metrics: Arc<Metrics>,
    ) -> Option<EdgePurger> {
        let backend = PurgeBackend::from_config(config)?;
        let (jobs, queue) = mpsc::channel(QUEUE);
        let names = EdgeNames::from_config(config);
        let inner = Arc::new(Inner {
            jobs,
            names: names.clone(),
            wait: config.edge_purge_wait(),
            metrics: Arc::clone(&metrics),
        });
        let worker = Arc::new(Worker {
            backend,
            outbox,
            metrics,
            coalesce: config.edge_purge_coalesce(),
            repurge_after: config.edge_repurge_after(),
            names,
        });
        let orphaned_after =
            config.edge_purge_wait().max(config.edge_repurge_after()) + Duration::from_secs(2);
        tracing::info!(edge = worker.backend.name(), "edge purges on");
        tokio::spawn(Arc::clone(&worker).send_queued(queue, inner.jobs.downgrade()));
        tokio::spawn(worker.retry_overdue(Arc::downgrade(&inner), orphaned_after));
        Some(EdgePurger { inner })
    }

    /// Writes the purge of `tags` into the outbox, inside the mutation's `transaction`.
    pub async fn record(
        &self,
        transaction: &DatabaseTransaction,
        tags: &[Tag],
    ) -> Result<Recorded, DbErr> {
        let tags = self.inner.names.of_tags(tags);
        let row = outbox::record(transaction, &tags).await?;
        Ok(Recorded { row, tags })
    }

    /// Purges what a committed mutation recorded, waiting for the edge at most the configured
    /// bound. `invalidated` is false when the origin cache deferred the mutation's
    /// invalidation: an edge fetch may then still find the old entry at the origin, so the
    /// purge is sent now but stays in the outbox (purged again once overdue) and the answer
    /// says it is pending.
    pub async fn purge(&self, recorded: Recorded, invalidated: bool) -> PurgeState {
        let rows = if invalidated {
            vec![recorded.row]
        } else {
            Vec::new()
        };
        let mut state = self.send(rows, recorded.tags).await;
        if !invalidated {
            state = PurgeState::Pending;
        }
        if state == PurgeState::Pending {
            self.inner.metrics.edge.answered_pending.inc();
        }
        state
    }

    /// Purges everything this deployment's responses carry (its `all` tag): `cache clear`.
    pub async fn purge_all(&self) -> PurgeState {
        self.send(Vec::new(), vec![self.inner.names.all()]).await
    }

    #[tracing::instrument(level = "debug", name = "edge.purge_wait", skip_all, fields(tags = tags.len()))]
    async fn send(&self, rows: Vec<i32>, tags: Vec<String>) -> PurgeState {
        let (acknowledged, answer) = oneshot::channel();
        let job = Job {
            rows,
            tags,
            acknowledged: Some(acknowledged),
            last: false,
        };
        let deadline = tokio::time::Instant::now() + self.inner.wait;
        let sent = tokio::time::timeout_at(deadline, self.inner.jobs.send(job)).await;
        if !matches!(sent, Ok(Ok(()))) {
            return PurgeState::Pending;
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(true)) => PurgeState::Acknowledged,
            _ => PurgeState::Pending,
        }
    }
}

impl Worker {
    /// Sends queued purges, coalescing those that arrive within the window.
    async fn send_queued(
        self: Arc<Self>,
        mut queue: mpsc::Receiver<Job>,
        requeue: mpsc::WeakSender<Job>,
    ) {
        while let Some(first) = queue.recv().await {
            let mut jobs = vec![first];
            let window = tokio::time::Instant::now() + self.coalesce;
            while jobs.len() < QUEUE {
                match tokio::time::timeout_at(window, queue.recv()).await {
                    Ok(Some(job)) => jobs.push(job),
                    _ => break,
                }
            }
            let (first_pass, second_pass): (Vec<Job>, Vec<Job>) =
                jobs.into_iter().partition(|job| !job.last);
            for (jobs, last) in [(first_pass, false), (second_pass, true)] {
                if !jobs.is_empty() {
                    self.send_together(jobs, last, &requeue).await;
                }
            }
        }
    }

    async fn send_together(&self, jobs: Vec<Job>, last: bool, requeue: &mpsc::WeakSender<Job>) {
        let mut rows = Vec::new();
        let mut tags = BTreeSet::new();
        let mut waiting = Vec::new();
        for job in jobs {
            rows.extend(job.rows);
            tags.extend(job.tags);
            waiting.extend(job.acknowledged);
        }
        let acknowledged = self.purge(tags.iter().cloned().collect()).await;
        for waiter in waiting {
            let _ = waiter.send(acknowledged);
        }
        if !acknowledged || rows.is_empty() {
            // Left in the outbox: the retry loop takes them up.
            return;
        }
        if last || self.repurge_after.is_zero() {
            if let Err(error) = outbox::remove(&self.outbox, &rows).await {
                tracing::warn!(%error, "could not clear acknowledged purges from the outbox; they will be sent again");
            }
            return;
        }
        let Some(requeue) = requeue.upgrade() else {
            return;
        };
        let after = self.repurge_after;
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let job = Job {
                rows,
                tags: tags.into_iter().collect(),
                acknowledged: None,
                last: true,
            };
            // A full queue or a purger shut down: the outbox row stays for the retry loop.
            let _ = requeue.try_send(job);
        });
    }

    /// Purges `tags` (the deployment's `all` tag past `MAX_TAGS_PER_PURGE`), counting requests.
    #[tracing::instrument(
        level = "debug",
        name = "edge.purge",
        skip_all,
        fields(edge = self.backend.name(), tags = tags.len())
    )]
    async fn purge(&self, mut tags: Vec<String>) -> bool {
        if tags.len() > MAX_TAGS_PER_PURGE {
            tags = vec![self.names.all()];
        }
        match self.backend.purge(&tags).await {
            Ok(requests) => {
                for _ in 0..requests {
                    self.metrics.edge.record_request(true);
                }
                true
            }
            Err(error) => {
                self.metrics.edge.record_request(false);
                tracing::warn!(edge = self.backend.name(), %error, tags = tags.len(), "edge purge failed; kept in the outbox");
                false
            }
        }
    }

    /// Retries outbox rows their writers did not see through, until the purger is dropped.
    async fn retry_overdue(self: Arc<Self>, alive: Weak<Inner>, orphaned_after: Duration) {
        let mut pause = RETRY_TICK;
        loop {
            tokio::time::sleep(pause).await;
            if alive.upgrade().is_none() {
                return;
            }
            self.report_backlog().await;
            let cutoff = crate::catalog::clock::now()
                - chrono::Duration::from_std(orphaned_after).unwrap_or_default();
            let rows = match outbox::overdue(&self.outbox, cutoff, RETRY_ROWS).await {
                Ok(rows) if !rows.is_empty() => rows,
                Ok(_) => {
                    pause = RETRY_TICK;
                    continue;
                }
                Err(_) => {
                    pause = (pause * 2).min(MAX_RETRY_PAUSE);
                    continue;
                }
            };
            let tags: BTreeSet<String> = rows
                .iter()
                .flat_map(outbox::tags_of)
                .map(str::to_owned)
                .collect();
            if self.purge(tags.into_iter().collect()).await {
                let ids: Vec<i32> = rows.iter().map(|row| row.id).collect();
                self.metrics.edge.retried.inc_by(ids.len() as u64);
                if outbox::remove(&self.outbox, &ids).await.is_ok() {
                    tracing::info!(purges = ids.len(), "delivered purges from the outbox");
                }
                pause = RETRY_TICK;
            } else {
                pause = (pause * 2).min(MAX_RETRY_PAUSE);
            }
        }
    }

    async fn report_backlog(&self) {
        if let Ok((count, oldest)) = outbox::backlog(&self.outbox).await {
            self.metrics
                .edge
                .outbox
                .set(i64::try_from(count).unwrap_or(i64::MAX));
            let age = oldest.map_or(0.0, |oldest| {
                (crate::catalog::clock::now() - oldest)
                    .num_milliseconds()
                    .max(0) as f64
                    / 1000.0
            });
            self.metrics.edge.oldest_seconds.set(age);
        }
    }
}
