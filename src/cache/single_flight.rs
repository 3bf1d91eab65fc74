//! Single-flight: concurrent requests for the same key run the work once and share its result.
//!
//! The work runs in its own task, so a leader whose client disconnects does not cancel the
//! result its followers are waiting for. Across instances there is no coordination: each
//! instance executes a cold key at most once at a time.

use std::collections::HashMap;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use parking_lot::Mutex;

type Flight<T> = Shared<BoxFuture<'static, Option<T>>>;

pub struct SingleFlight<T: Clone + Send + Sync + 'static> {
    flights: Arc<Mutex<HashMap<String, Flight<T>>>>,
}

impl<T: Clone + Send + Sync + 'static> Default for SingleFlight<T> {
    fn default() -> Self {
        SingleFlight {
            flights: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl<T: Clone + Send + Sync + 'static> SingleFlight<T> {
    /// Runs `work` unless a run for `key` is in flight, and returns that run's result.
    /// `None` only if the work panicked.
    pub async fn run(
        &self,
        key: String,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        let flight = {
            let mut flights = self.flights.lock();
            match flights.get(&key) {
                Some(flight) => flight.clone(),
                None => {
                    let registry = Arc::clone(&self.flights);
                    let own_key = key.clone();
                    let task = tokio::spawn(async move {
                        let result = work.await;
                        registry.lock().remove(&own_key);
                        result
                    });
                    let flight: Flight<T> = async move { task.await.ok() }.boxed().shared();
                    flights.insert(key, flight.clone());
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
