//! Single-flight: concurrent requests for the same key run the work once and share its result.
//!
//! A request may join a flight only if that flight started at or after the invalidation
//! sequence the request observed: an older flight may have read the database before a commit
//! the request already knows about, so joining it could return pre-commit data. The work runs
//! in its own task (a leader whose client disconnects does not cancel its followers), and a
//! drop guard removes the flight even when the work panics, so a key is never poisoned.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use parking_lot::Mutex;
use tracing::Instrument;

type Flight<T> = Shared<BoxFuture<'static, Option<T>>>;

struct Registered<T> {
    id: u64,
    /// The invalidation sequence the flight's leader observed before it started.
    started_at: u64,
    flight: Flight<T>,
}

type Registry<T> = Arc<Mutex<HashMap<String, Registered<T>>>>;

pub struct SingleFlight<T: Clone + Send + Sync + 'static> {
    flights: Registry<T>,
    next_id: AtomicU64,
}

impl<T: Clone + Send + Sync + 'static> Default for SingleFlight<T> {
    fn default() -> Self {
        SingleFlight {
            flights: Arc::new(Mutex::new(HashMap::new())),
            next_id: AtomicU64::new(0),
        }
    }
}

/// Removes a flight from the registry when its task ends, however it ends.
struct Unregister<T: Clone + Send + Sync + 'static> {
    registry: Registry<T>,
    key: String,
    id: u64,
}

impl<T: Clone + Send + Sync + 'static> Drop for Unregister<T> {
    fn drop(&mut self) {
        let mut flights = self.registry.lock();
        if flights
            .get(&self.key)
            .is_some_and(|flight| flight.id == self.id)
        {
            flights.remove(&self.key);
        }
    }
}

impl<T: Clone + Send + Sync + 'static> SingleFlight<T> {
    /// Runs `work` unless a run for `key` that started at or after `observed` is in flight,
    /// and returns that run's result. `None` only if the work panicked.
    pub async fn run(
        &self,
        key: String,
        observed: u64,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        let flight = {
            let mut flights = self.flights.lock();
            match flights.get(&key) {
                Some(registered) if registered.started_at >= observed => registered.flight.clone(),
                _ => {
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    let unregister = Unregister {
                        registry: Arc::clone(&self.flights),
                        key: key.clone(),
                        id,
                    };
                    // In the span of the request that started it: traces show the
                    // execution and its fill under that request.
                    let task = tokio::spawn(
                        async move {
                            let _unregister = unregister;
                            work.await
                        }
                        .instrument(tracing::Span::current()),
                    );
                    let flight: Flight<T> = async move { task.await.ok() }.boxed().shared();
                    // A newer flight replaces an older one for later joiners; the older one
                    // still finishes for the requests that joined it.
                    flights.insert(
                        key,
                        Registered {
                            id,
                            started_at: observed,
                            flight: flight.clone(),
                        },
                    );
                    flight
                }
            }
        };
        flight.await
    }

    pub fn in_flight(&self) -> usize {
        self.flights.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_never_joins_a_flight_older_than_what_it_observed() {
        let flights = Arc::new(SingleFlight::<u32>::default());
        let (release, held) = tokio::sync::oneshot::channel::<()>();
        let leader = Arc::clone(&flights);
        let old = tokio::spawn(async move {
            leader
                .run("key".into(), 5, async move {
                    let _ = held.await;
                    1
                })
                .await
        });
        while flights.in_flight() == 0 {
            tokio::task::yield_now().await;
        }
        let newer = flights.run("key".into(), 6, async { 2 }).await;
        assert_eq!(
            newer,
            Some(2),
            "a request that saw sequence 6 runs its own flight"
        );
        let _ = release.send(());
        assert_eq!(old.await.ok().flatten(), Some(1));
    }

    #[tokio::test]
    async fn a_panicking_flight_does_not_poison_its_key() {
        let flights = SingleFlight::<u32>::default();
        let failed = flights
            .run("key".into(), 1, async { panic!("the work failed") })
            .await;
        assert_eq!(failed, None);
        assert_eq!(flights.in_flight(), 0);
        assert_eq!(flights.run("key".into(), 1, async { 7 }).await, Some(7));
    }
}
