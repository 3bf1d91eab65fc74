//! Revocations learned from the database, so a token revoked by any means (`token revoke`
//! without `REDIS_URL` included) is refused by every server within one poll interval plus
//! one request. Each server polls `api_token.revoked_at` and forgets the cached validation of
//! every token revoked since its last poll; the task holds only a `Weak` reference to its
//! watcher, which the app state owns, so it stops when the app is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;
use tokio::time::MissedTickBehavior;

use crate::cache::{MAX_TTL, ResponseCache, TAG_TTL};
use crate::catalog::clock::now;
use crate::config::MAX_TOKEN_CACHE_SECS;

// A cached validation must expire before the stamp its revocation leaves on its tag.
const _: () =
    assert!(MAX_TOKEN_CACHE_SECS <= MAX_TTL.as_secs() && MAX_TTL.as_secs() < TAG_TTL.as_secs());

/// How far before its last successful poll a server looks again: a revocation committed
/// late, or stamped by a host whose clock is behind, is still seen if within this margin.
pub const CLOCK_ALLOWANCE: Duration = Duration::from_secs(60);

/// Owned by the app state; its background task polls while it lives.
pub struct RevocationWatcher {
    db: DatabaseConnection,
    cache: ResponseCache,
}

/// What the polling task remembers between polls.
struct Progress {
    /// Start of the last successful poll (at first, as far back as a validation may be cached).
    polled_at: DateTime<Utc>,
    /// Tokens already forgotten, with their revocation time, until they leave the window.
    forgotten: HashMap<i32, DateTime<Utc>>,
    /// Whether the last poll failed, so an outage is logged once.
    failing: bool,
}

impl RevocationWatcher {
    /// Starts polling every `interval`; the task ends at the first tick after the returned
    /// watcher is dropped. `db` should be a connection of its own (so polls never
    /// wait behind requests for the pool, nor count as request statements); `token_ttl` is how
    /// long validations are cached, so the first poll also forgets revocations made while
    /// this server was not running.
    pub fn spawn(
        db: DatabaseConnection,
        cache: ResponseCache,
        interval: Duration,
        token_ttl: Duration,
    ) -> (Arc<RevocationWatcher>, tokio::task::JoinHandle<()>) {
        let watcher = Arc::new(RevocationWatcher { db, cache });
        let weak = Arc::downgrade(&watcher);
        let lookback = chrono::Duration::from_std(token_ttl.min(MAX_TTL)).unwrap_or_default();
        let progress = Progress {
            polled_at: now() - lookback,
            forgotten: HashMap::new(),
            failing: false,
        };
        let task = tokio::spawn(poll_until_dropped(weak, interval, progress));
        (watcher, task)
    }

    /// One poll: forgets every token revoked since the last successful poll (less the clock
    /// allowance) that is not forgotten yet. A failure leaves `progress` as it was, so the
    /// next poll covers the same window again.
    async fn poll(&self, progress: &mut Progress) {
        let started = now();
        let allowance = chrono::Duration::from_std(CLOCK_ALLOWANCE).unwrap_or_default();
        let since = progress.polled_at - allowance;
        let revoked = match crate::auth::revoked_since(&self.db, since).await {
            Ok(revoked) => revoked,
            Err(error) => {
                if !progress.failing {
                    tracing::warn!(%error, "cannot poll the database for revoked tokens");
                }
                progress.failing = true;
                return;
            }
        };
        let mut complete = true;
        for token in revoked {
            let Some(revoked_at) = token.revoked_at else {
                continue;
            };
            if progress.forgotten.contains_key(&token.id) {
                continue;
            }
            match self.cache.forget_token(&token.token_hash).await {
                Ok(()) => {
                    tracing::info!(token_id = token.id, "learned a token revocation");
                    progress.forgotten.insert(token.id, revoked_at);
                }
                Err(error) => {
                    if !progress.failing {
                        tracing::warn!(%error, token_id = token.id, "cannot forget a revoked token yet");
                    }
                    complete = false;
                }
            }
        }
        if !complete {
            progress.failing = true;
            return;
        }
        if progress.failing {
            tracing::info!("polling for revoked tokens again");
        }
        progress.failing = false;
        progress.polled_at = started;
        progress
            .forgotten
            .retain(|_, revoked_at| *revoked_at >= started - allowance);
    }
}

async fn poll_until_dropped(
    watcher: Weak<RevocationWatcher>,
    interval: Duration,
    mut progress: Progress,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(watcher) = watcher.upgrade() else {
            return;
        };
        watcher.poll(&mut progress).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::telemetry::Metrics;

    #[tokio::test]
    async fn the_task_stops_when_its_watcher_is_dropped() {
        let mut config = Config::for_database("sqlite::memory:");
        config.db_pool_size = 1;
        config.redis_url = None;
        let db = crate::db::connect(&config, None).await.expect("connect");
        crate::db::migrate(&db).await.expect("migrate");
        let (cache, _) = crate::cache::from_config(&config, Arc::new(Metrics::new()))
            .expect("cache")
            .expect("the cache is on by default");
        let (watcher, task) = RevocationWatcher::spawn(
            db,
            cache,
            Duration::from_millis(10),
            Duration::from_secs(300),
        );
        drop(watcher);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the task ends once its watcher is dropped")
            .expect("the task does not panic");
    }
}
