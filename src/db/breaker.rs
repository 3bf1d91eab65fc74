//! The database circuit breaker. Once a request finds the database unreachable, requests that
//! need it fail at once with `SERVICE_UNAVAILABLE` instead of each waiting the acquire timeout;
//! cached answers keep flowing. One background probe pings until the database answers, then
//! closes the breaker: recovery needs no request to pay for a failed attempt.
//!
//! The outage is logged twice, whatever its length: once at ERROR when the breaker opens, once
//! at INFO when the probe closes it, with how long it lasted and how many answers it refused
//! meanwhile (instead of a line per refused request or readiness check).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sea_orm::DatabaseConnection;

/// How often the probe tries the database while it is down.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Clone)]
pub struct DatabaseBreaker {
    inner: Arc<Inner>,
}

struct Inner {
    open: AtomicBool,
    /// Answers refused (and failures reported) since the breaker opened.
    refused: AtomicU64,
    db: DatabaseConnection,
    /// Bounds one probe; the pool's acquire timeout normally ends it sooner.
    probe_timeout: Duration,
}

impl DatabaseBreaker {
    pub fn new(db: DatabaseConnection, probe_timeout: Duration) -> Self {
        DatabaseBreaker {
            inner: Arc::new(Inner {
                open: AtomicBool::new(false),
                refused: AtomicU64::new(0),
                db,
                probe_timeout,
            }),
        }
    }

    /// True while the database is known to be unreachable.
    pub fn is_open(&self) -> bool {
        self.inner.open.load(Ordering::Acquire)
    }

    /// `is_open`, for a caller that refuses its work when it is: the refusal is counted for
    /// the recovery's log line.
    pub fn refuses(&self) -> bool {
        let open = self.is_open();
        if open {
            self.inner.refused.fetch_add(1, Ordering::Relaxed);
        }
        open
    }

    /// Records that the database is unreachable: opens the breaker (logging once per outage)
    /// and starts the probe that closes it. Calls during an outage are only counted.
    pub fn trip(&self) {
        if self.inner.open.swap(true, Ordering::AcqRel) {
            self.inner.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.inner.refused.store(0, Ordering::Relaxed);
        tracing::error!(
            "database unreachable: requests that need it fail at once until it answers again"
        );
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            let started = Instant::now();
            loop {
                tokio::time::sleep(PROBE_INTERVAL).await;
                let answered = tokio::time::timeout(inner.probe_timeout, inner.db.ping()).await;
                if let Ok(Ok(())) = answered {
                    inner.open.store(false, Ordering::Release);
                    let outage_ms = started.elapsed().as_millis() as u64;
                    let refused = inner.refused.swap(0, Ordering::Relaxed);
                    tracing::info!(
                        outage_ms,
                        refused,
                        "database reachable again after {outage_ms} ms; requests reach it again (database unreachable: repeated {refused} times meanwhile)"
                    );
                    return;
                }
            }
        });
    }
}
