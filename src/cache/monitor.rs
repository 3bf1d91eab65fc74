//! Cache monitoring kept in the cache backend, so every instance reports the same numbers:
//! hits, misses and errors per day; the last 100 execution times of each operation; and a
//! ranking of executed operations (with their variables) that `cache warm-up` replays.
//!
//! Requests only touch in-process buffers; a background task flushes them once a second in a
//! few pipelined commands, so monitoring adds nothing to a request's round trips.
//! Everything is bounded, however many distinct operations clients send: the buffers by
//! constants, the ranking by its top `ranked` members and their documents by as many keys.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::storage::{BoundedMember, GuardedStorage, StorageResult};

pub const SAMPLES_KEPT: usize = 100;
const DAY_COUNTER_TTL: Duration = Duration::from_secs(40 * 24 * 3600);
/// The ranking and its recorded documents expire this long after the last flush that
/// touched them.
const OPERATION_DOC_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
pub const RANKING_KEY: &str = "ops:rank";
/// The bounded collection (see `ValueStore::set_bounded`) of recorded operations.
const OPERATION_DOCUMENTS: &str = "ops:docs";
/// A recorded operation (document and variables, as JSON) longer than this is not recorded.
pub const OPERATION_MAX_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    Miss,
    Error,
}

/// An operation as executed, enough to replay it during warm-up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordedOperation {
    pub query: String,
    #[serde(rename = "operationName")]
    pub operation_name: Option<String>,
    pub variables: serde_json::Value,
}

/// What requests recorded since the last flush. Samples are keyed by operation label (a
/// bounded set, see `Metrics::operation_label`) and keep the newest `SAMPLES_KEPT` each; the
/// ranking and documents hold at most `ranked` operations.
#[derive(Default)]
struct Buffer {
    outcomes: HashMap<(NaiveDate, &'static str), i64>,
    samples: HashMap<String, VecDeque<f64>>,
    ranking: HashMap<String, f64>,
    /// Recorded operations, serialized (at most `OPERATION_MAX_BYTES` each).
    documents: HashMap<String, Vec<u8>>,
}

/// How many entries the in-process buffers hold right now (exposed as `/metrics` gauges).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BufferSizes {
    pub ranked: usize,
    pub documents: usize,
    pub document_bytes: usize,
    pub samples: usize,
}

pub struct Monitor {
    buffer: Mutex<Buffer>,
    /// How many operations the ranking keeps (`Limits::ranked_operations`).
    ranked: usize,
}

fn outcome_key(date: NaiveDate, outcome: &str) -> String {
    format!("stats:{date}:{outcome}")
}

impl Monitor {
    pub fn new(ranked: usize) -> Self {
        Monitor {
            buffer: Mutex::new(Buffer::default()),
            ranked: ranked.max(1),
        }
    }

    pub fn buffer_sizes(&self) -> BufferSizes {
        let buffer = self.buffer.lock();
        BufferSizes {
            ranked: buffer.ranking.len(),
            documents: buffer.documents.len(),
            document_bytes: buffer.documents.values().map(Vec::len).sum(),
            samples: buffer.samples.values().map(VecDeque::len).sum(),
        }
    }

    pub fn record_outcome(&self, outcome: Outcome) {
        let name = match outcome {
            Outcome::Hit => "hits",
            Outcome::Miss => "misses",
            Outcome::Error => "errors",
        };
        *self
            .buffer
            .lock()
            .outcomes
            .entry((Utc::now().date_naive(), name))
            .or_default() += 1;
    }

    /// `operation` is a label from `Metrics::operation_label`, so there are few of them.
    pub fn record_execution(&self, operation: &str, milliseconds: f64) {
        let mut buffer = self.buffer.lock();
        let samples = buffer
            .samples
            .entry(format!("perf:{operation}"))
            .or_default();
        if samples.len() == SAMPLES_KEPT {
            samples.pop_front();
        }
        samples.push_back(milliseconds);
    }

    /// Counts an execution of a public operation. Once `ranked` distinct operations wait for
    /// the next flush, new ones are not counted until then (the ones already counted are
    /// those a flood has not displaced).
    pub fn record_operation(&self, id: String, operation: &RecordedOperation) {
        let mut buffer = self.buffer.lock();
        if let Some(score) = buffer.ranking.get_mut(&id) {
            *score += 1.0;
            return;
        }
        if buffer.ranking.len() >= self.ranked {
            return;
        }
        buffer.ranking.insert(id.clone(), 1.0);
        if let Ok(json) = serde_json::to_vec(operation)
            && json.len() <= OPERATION_MAX_BYTES
        {
            buffer.documents.insert(id, json);
        }
    }

    /// Writes buffered numbers to the backend; on failure they are kept for the next flush.
    pub async fn flush(&self, storage: &GuardedStorage) -> StorageResult<()> {
        let buffer = std::mem::take(&mut *self.buffer.lock());
        let counters: Vec<(String, i64)> = buffer
            .outcomes
            .iter()
            .map(|((date, name), count)| (outcome_key(*date, name), *count))
            .collect();
        let samples: Vec<(String, Vec<f64>)> = buffer
            .samples
            .iter()
            .map(|(key, values)| (key.clone(), values.iter().copied().collect()))
            .collect();
        let ranking: Vec<(String, f64)> = buffer
            .ranking
            .iter()
            .map(|(key, score)| (key.clone(), *score))
            .collect();
        let result = async {
            storage.add_counters(&counters, DAY_COUNTER_TTL).await?;
            storage.push_samples(&samples, SAMPLES_KEPT).await?;
            if ranking.is_empty() {
                return Ok(());
            }
            storage.rank_add(RANKING_KEY, &ranking).await?;
            storage
                .rank_trim(RANKING_KEY, self.ranked, OPERATION_DOC_TTL)
                .await?;
            // Only operations that made the ranking keep a document (a flood of one-off
            // operations is trimmed away at once, and so is never written).
            let kept: HashSet<String> = storage
                .rank_top(RANKING_KEY, self.ranked)
                .await?
                .into_iter()
                .collect();
            for (id, json) in &buffer.documents {
                if kept.contains(id) {
                    storage
                        .set_bounded(BoundedMember {
                            collection: OPERATION_DOCUMENTS,
                            key: &format!("ops:doc:{id}"),
                            value: json.clone(),
                            ttl: OPERATION_DOC_TTL,
                            capacity: self.ranked,
                        })
                        .await?;
                }
            }
            Ok(())
        }
        .await;
        if result.is_err() {
            let mut current = self.buffer.lock();
            for (key, count) in buffer.outcomes {
                *current.outcomes.entry(key).or_default() += count;
            }
        }
        result
    }

    pub async fn day(
        &self,
        storage: &GuardedStorage,
        date: NaiveDate,
    ) -> StorageResult<(i64, i64, i64)> {
        let keys: Vec<String> = ["hits", "misses", "errors"]
            .iter()
            .map(|name| outcome_key(date, name))
            .collect();
        let values = storage.counters(&keys).await?;
        Ok((
            values.first().copied().unwrap_or(0),
            values.get(1).copied().unwrap_or(0),
            values.get(2).copied().unwrap_or(0),
        ))
    }

    pub async fn samples(
        &self,
        storage: &GuardedStorage,
        operation: &str,
    ) -> StorageResult<Vec<f64>> {
        storage.samples(&format!("perf:{operation}")).await
    }

    pub async fn top_operations(
        &self,
        storage: &GuardedStorage,
        count: usize,
    ) -> StorageResult<Vec<RecordedOperation>> {
        let ids = storage.rank_top(RANKING_KEY, count).await?;
        let mut operations = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(bytes) = storage.get(&format!("ops:doc:{id}")).await?
                && let Ok(operation) = serde_json::from_slice(&bytes)
            {
                operations.push(operation);
            }
        }
        Ok(operations)
    }
}

/// Summary statistics of execution times in milliseconds (nearest-rank percentiles), as the
/// `performanceStats` query answers them.
#[derive(Debug, Clone, PartialEq, async_graphql::SimpleObject)]
pub struct Summary {
    pub count: usize,
    pub avg: f64,
    pub min: f64,
    pub max: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

pub fn summarize(mut samples: Vec<f64>) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
        samples[rank.clamp(1, samples.len()) - 1]
    };
    Some(Summary {
        count: samples.len(),
        avg: samples.iter().sum::<f64>() / samples.len() as f64,
        min: samples[0],
        max: samples[samples.len() - 1],
        p50: percentile(50.0),
        p95: percentile(95.0),
        p99: percentile(99.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let summary = summarize((1..=100).map(f64::from).collect()).expect("samples");
        assert_eq!(
            (
                summary.min,
                summary.max,
                summary.p50,
                summary.p95,
                summary.p99
            ),
            (1.0, 100.0, 50.0, 95.0, 99.0)
        );
        assert_eq!(summary.avg, 50.5);
        assert!(summarize(Vec::new()).is_none());
    }
}
