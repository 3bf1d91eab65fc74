//! The one wrapper every cache call goes through: a command timeout, latency and error
//! metrics, a log line per outage (not per request), and a short circuit-breaker so that
//! while the backend is down requests skip it at once instead of each waiting a timeout.
//! After the pause one request probes (not every request at once), and background work
//! (monitor flushes) has a breaker of its own, so it can neither trip nor hold the one
//! requests use. Each call is a `backend.<call>` span in traces (disabled, and free, when no
//! trace layer is installed).

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tracing::Instrument;

use super::{
    BackendStats, BoundedMember, Lookup, ResponseStore, StorageError, StorageResult, ValueStore,
    Watermark,
};
use crate::cache::entry::Entry;
use crate::telemetry::Metrics;

/// How long a failed backend is skipped before one request probes it again.
const RETRY_AFTER: Duration = Duration::from_millis(500);

#[derive(Default)]
struct Health {
    retry_at: Option<Instant>,
    failures_in_outage: u64,
    /// A probe is under way: other calls keep skipping the backend until it reports.
    probing: bool,
}

struct ProbeReset<'a>(&'a Mutex<Health>);

impl Drop for ProbeReset<'_> {
    fn drop(&mut self) {
        self.0.lock().probing = false;
    }
}

/// Which breaker a call goes through.
#[derive(Clone, Copy)]
enum Lane {
    Requests,
    Background,
}

pub struct GuardedStorage {
    /// The backend's name in logs and stats: `memory`, `redis` or `redis+local`.
    backend_name: &'static str,
    responses: Arc<dyn ResponseStore>,
    values: Arc<dyn ValueStore>,
    timeout: Duration,
    metrics: Arc<Metrics>,
    health: Mutex<Health>,
    background_health: Mutex<Health>,
}

impl GuardedStorage {
    pub fn new(
        backend_name: &'static str,
        responses: Arc<dyn ResponseStore>,
        values: Arc<dyn ValueStore>,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        GuardedStorage {
            backend_name,
            responses,
            values,
            timeout,
            metrics,
            health: Mutex::new(Health::default()),
            background_health: Mutex::new(Health::default()),
        }
    }

    pub fn backend_name(&self) -> &'static str {
        self.backend_name
    }

    /// True while the backend is considered down.
    pub fn is_down(&self) -> bool {
        self.health.lock().retry_at.is_some()
    }

    fn health(&self, lane: Lane) -> &Mutex<Health> {
        match lane {
            Lane::Requests => &self.health,
            Lane::Background => &self.background_health,
        }
    }

    async fn guard<T>(
        &self,
        call: &'static str,
        operation: impl Future<Output = StorageResult<T>>,
    ) -> StorageResult<T> {
        self.guard_in(Lane::Requests, call, operation).await
    }

    async fn guard_in<T>(
        &self,
        lane: Lane,
        call: &'static str,
        operation: impl Future<Output = StorageResult<T>>,
    ) -> StorageResult<T> {
        let probe = {
            let mut health = self.health(lane).lock();
            match health.retry_at {
                Some(retry_at) if Instant::now() < retry_at || health.probing => {
                    return Err(StorageError::CircuitOpen);
                }
                Some(_) => {
                    health.probing = true;
                    true
                }
                None => false,
            }
        };
        // A probe whose caller goes away (a client disconnects) must not leave the breaker
        // waiting for its report forever.
        let _reset = probe.then(|| ProbeReset(self.health(lane)));
        self.attempt(lane, call, operation).await
    }

    /// Calls the backend even while the breaker is open (a mutation's invalidation is worth
    /// the wait; `guard_in` calls it once the breaker lets a call through), with the timeout,
    /// metrics and health bookkeeping every call gets.
    async fn attempt<T>(
        &self,
        lane: Lane,
        call: &'static str,
        operation: impl Future<Output = StorageResult<T>>,
    ) -> StorageResult<T> {
        let span = tracing::debug_span!(
            "backend",
            otel.name = call,
            backend = self.backend_name,
            error = tracing::field::Empty,
        );
        let started = Instant::now();
        let timed = tokio::time::timeout(self.timeout, operation);
        // Only wrapped when traced: see `ResponseCache::lookup`.
        let timed = if span.is_disabled() {
            timed.await
        } else {
            timed.instrument(span.clone()).await
        };
        let outcome = match timed {
            Ok(result) => result,
            Err(_) => Err(StorageError::Timeout(self.timeout)),
        };
        if let Err(error) = &outcome
            && !span.is_disabled()
        {
            span.record("error", tracing::field::display(error));
        }
        self.metrics
            .redis_seconds
            .observe(started.elapsed().as_secs_f64());
        let mut health = self.health(lane).lock();
        health.probing = false;
        match &outcome {
            Ok(_) => {
                if health.retry_at.take().is_some() && matches!(lane, Lane::Requests) {
                    tracing::warn!(
                        backend = self.backend_name,
                        failed_calls = health.failures_in_outage,
                        "cache backend is back; caching resumes"
                    );
                }
                health.failures_in_outage = 0;
            }
            Err(error) => {
                self.metrics.cache_errors.inc();
                if health.failures_in_outage == 0 && matches!(lane, Lane::Requests) {
                    tracing::error!(
                        backend = self.backend_name,
                        %error,
                        "cache backend failed; requests are answered from the database until it returns"
                    );
                }
                health.failures_in_outage += 1;
                health.retry_at = Some(Instant::now() + RETRY_AFTER);
            }
        }
        outcome
    }

    pub async fn lookup(&self, key: &str) -> StorageResult<Lookup> {
        self.guard("backend.lookup", self.responses.lookup(key))
            .await
    }

    pub async fn sequence(&self, key: &str) -> StorageResult<Watermark> {
        self.guard("backend.sequence", self.responses.sequence(key))
            .await
    }

    pub async fn store(&self, key: &str, entry: Arc<Entry>, ttl: Duration) -> StorageResult<()> {
        self.guard("backend.store", self.responses.store(key, entry, ttl))
            .await
    }

    pub async fn invalidate(&self, tags: &[String], lsn: Option<u64>) -> StorageResult<Vec<u64>> {
        self.guard("backend.invalidate", self.responses.invalidate(tags, lsn))
            .await
    }

    /// An invalidation that is attempted even while the breaker is open.
    pub async fn invalidate_now(
        &self,
        tags: &[String],
        lsn: Option<u64>,
    ) -> StorageResult<Vec<u64>> {
        self.attempt(
            Lane::Requests,
            "backend.invalidate",
            self.responses.invalidate(tags, lsn),
        )
        .await
    }

    /// Waits for other instances' first tiers (`ResponseStore::settle`), which bounds its own
    /// wait and each of its calls; recorded apart from backend calls.
    pub async fn settle(&self, sequences: &[u64]) -> StorageResult<u64> {
        let started = Instant::now();
        let settled = self.responses.settle(sequences).await;
        self.metrics
            .cache_first_tier_settle_seconds
            .observe(started.elapsed().as_secs_f64());
        if let Ok(evicted) = &settled {
            self.metrics
                .cache_first_tier_lease_evictions
                .inc_by(*evicted);
        }
        settled
    }

    pub async fn establish_position(&self, lsn: u64) -> StorageResult<()> {
        self.guard(
            "backend.establish_position",
            self.responses.establish_position(lsn),
        )
        .await
    }

    pub async fn get(&self, key: &str) -> StorageResult<Option<Vec<u8>>> {
        self.guard("backend.get", self.values.get(key)).await
    }

    pub async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration) -> StorageResult<()> {
        self.guard("backend.set", self.values.set(key, value, ttl))
            .await
    }

    pub async fn delete(&self, key: &str) -> StorageResult<()> {
        self.guard("backend.delete", self.values.delete(key)).await
    }

    pub async fn set_bounded(&self, member: BoundedMember<'_>) -> StorageResult<()> {
        self.guard("backend.set_bounded", self.values.set_bounded(member))
            .await
    }

    pub async fn add_counters(
        &self,
        counters: &[(String, i64)],
        ttl: Duration,
    ) -> StorageResult<()> {
        self.guard_in(
            Lane::Background,
            "backend.add_counters",
            self.values.add_counters(counters, ttl),
        )
        .await
    }

    pub async fn counters(&self, keys: &[String]) -> StorageResult<Vec<i64>> {
        self.guard("backend.counters", self.values.counters(keys))
            .await
    }

    pub async fn push_samples(
        &self,
        samples: &[(String, Vec<f64>)],
        keep: usize,
    ) -> StorageResult<()> {
        self.guard_in(
            Lane::Background,
            "backend.push_samples",
            self.values.push_samples(samples, keep),
        )
        .await
    }

    pub async fn samples(&self, key: &str) -> StorageResult<Vec<f64>> {
        self.guard("backend.samples", self.values.samples(key))
            .await
    }

    pub async fn rank_add(&self, key: &str, scores: &[(String, f64)]) -> StorageResult<()> {
        self.guard_in(
            Lane::Background,
            "backend.rank_add",
            self.values.rank_add(key, scores),
        )
        .await
    }

    pub async fn rank_top(&self, key: &str, count: usize) -> StorageResult<Vec<String>> {
        self.guard("backend.rank_top", self.values.rank_top(key, count))
            .await
    }

    pub async fn rank_trim(&self, key: &str, keep: usize, ttl: Duration) -> StorageResult<()> {
        self.guard("backend.rank_trim", self.values.rank_trim(key, keep, ttl))
            .await
    }

    /// Management commands run without the request timeout: they may scan a large prefix.
    pub async fn clear(&self) -> StorageResult<u64> {
        self.responses.clear().await
    }

    pub async fn stats(&self) -> StorageResult<BackendStats> {
        self.responses.stats().await
    }
}
