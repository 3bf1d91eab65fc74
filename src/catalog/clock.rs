//! The catalog's clock: one definition of "now" for every timestamp written to the database
//! (rows, tokens, revocations, the edge outbox), so that every backend stores and returns the
//! same instant and the modules that write timestamps need not import one another for it.

use chrono::{DateTime, Utc};

/// Now, truncated to microseconds so that every backend stores and returns the same instant.
pub fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}
