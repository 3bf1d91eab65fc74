//! The database circuit breaker. Once a request finds the database unreachable, requests that
//! need it fail at once with `SERVICE_UNAVAILABLE` instead of each waiting the acquire timeout;
//! cached answers keep flowing. One background probe pings until the database answers, then
//! closes the breaker: recovery needs no request to pay for a failed attempt.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
    db: DatabaseConnection,
    /// Bounds one probe; the pool's acquire timeout normally ends it sooner.
    probe_timeout: Duration,
}

impl DatabaseBreaker {
    pub fn new(db: DatabaseConnection, probe_timeout: Duration) -> Self {
        DatabaseBreaker {
            inner: Arc::new(Inner {
                open: AtomicBool::new(false),
                db,
                probe_timeout,
            }),
        }
    }

    /// True while the database is known to be unreachable.
    pub fn is_open(&self) -> bool {
        self.inner.open.load(Ordering::Acquire)
    }

    /// Records that the database is unreachable: opens the breaker (logging once per outage)
    /// and starts the probe that closes it. Calls during an outage do nothing more.
    pub fn trip(&self) {
        if self.inner.open.swap(true, Ordering::AcqRel) {
            return;
        }
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
                    tracing::warn!(
                        outage_ms = started.elapsed().as_millis() as u64,
                        "database is back; requests reach it again"
                    );
                    return;
                }
            }
        });
    }
}
