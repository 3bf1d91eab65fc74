//! `cacheStats` and `performanceStats`: what the cache monitor recorded across the fleet,
//! for token holders; `cacheInsights`: this instance's per-operation hit rates, miss reasons
//! and top invalidators (`cache::insights`).

use async_graphql::{Context, Object, Scalar, ScalarType, SimpleObject};
use chrono::{NaiveDate, Utc};

use crate::auth::RequireToken;
use crate::cache::ResponseCache;
use crate::cache::insights::{InsightsSnapshot, MAX_OPERATIONS};
use crate::cache::monitor::{Summary, summarize};
use crate::error::ApiError;

/// A calendar date, `YYYY-MM-DD` (UTC).
pub struct Date(pub NaiveDate);

#[Scalar(name = "Date")]
impl ScalarType for Date {
    fn parse(value: async_graphql::Value) -> async_graphql::InputValueResult<Self> {
        match &value {
            async_graphql::Value::String(text) => {
                Ok(Date(NaiveDate::parse_from_str(text, "%Y-%m-%d")?))
            }
            _ => Err(async_graphql::InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> async_graphql::Value {
        async_graphql::Value::String(self.0.format("%Y-%m-%d").to_string())
    }
}

/// Response-cache outcomes of one day, across every instance sharing the cache backend.
#[derive(SimpleObject)]
pub struct CacheStats {
    pub date: Date,
    pub hits: i32,
    pub misses: i32,
    /// Lookups that failed because the backend was unavailable (answered from the database).
    pub errors: i32,
    pub total: i32,
    /// hits / (hits + misses), 0 when there were none.
    pub hit_rate: f64,
}

/// Execution times (milliseconds) of the last 100 executions of an operation.
#[derive(SimpleObject)]
pub struct PerformanceStats {
    pub operation: String,
    #[graphql(flatten)]
    pub times: Summary,
}

#[derive(Default)]
pub struct CacheQuery;

fn cache<'a>(ctx: &'a Context<'_>) -> Result<&'a ResponseCache, ApiError> {
    ctx.data::<ResponseCache>()
        .map_err(|_| ApiError::Internal("no response cache in the schema data".into()))
}

fn clamp(value: i64) -> i32 {
    value.clamp(0, i64::from(i32::MAX)) as i32
}

#[Object]
impl CacheQuery {
    /// Hits, misses and hit rate of the response cache on `date` (default: today, UTC).
    #[graphql(guard = "RequireToken", cache_control(no_cache))]
    async fn cache_stats(
        &self,
        ctx: &Context<'_>,
        date: Option<Date>,
    ) -> async_graphql::Result<CacheStats> {
        let cache = cache(ctx)?;
        let date = date
            .map(|date| date.0)
            .unwrap_or_else(|| Utc::now().date_naive());
        let unavailable = |_| ApiError::Internal("the cache backend is unavailable".into());
        cache.flush_monitor().await.map_err(unavailable)?;
        let (hits, misses, errors) = cache
            .monitor()
            .day(cache.storage(), date)
            .await
            .map_err(unavailable)?;
        let total = hits + misses;
        Ok(CacheStats {
            date: Date(date),
            hits: clamp(hits),
            misses: clamp(misses),
            errors: clamp(errors),
            total: clamp(total),
            hit_rate: if total > 0 {
                hits as f64 / total as f64
            } else {
                0.0
            },
        })
    }

    /// This instance's cache insights: its `first` most requested operations (1 to 100) with
    /// hit rates, miss reasons and latency, and the mutations whose invalidations caused
    /// misses. Per instance and in process: every instance answers for itself.
    #[graphql(guard = "RequireToken", cache_control(no_cache))]
    async fn cache_insights(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
    ) -> async_graphql::Result<InsightsSnapshot> {
        let first = usize::try_from(first)
            .ok()
            .filter(|first| (1..=MAX_OPERATIONS).contains(first))
            .ok_or_else(|| {
                ApiError::bad_input(format!(
                    "`first` must be between 1 and {MAX_OPERATIONS}, got {first}"
                ))
            })?;
        Ok(cache(ctx)?.insights().snapshot(first))
    }

    /// Latency statistics of an operation (by operation name; `anonymous` for unnamed ones).
    #[graphql(guard = "RequireToken", cache_control(no_cache))]
    async fn performance_stats(
        &self,
        ctx: &Context<'_>,
        operation: String,
    ) -> async_graphql::Result<PerformanceStats> {
        let cache = cache(ctx)?;
        let unavailable = |_| ApiError::Internal("the cache backend is unavailable".into());
        cache.flush_monitor().await.map_err(unavailable)?;
        let samples = cache
            .monitor()
            .samples(cache.storage(), &operation)
            .await
            .map_err(unavailable)?;
        let summary = summarize(samples).ok_or_else(|| {
            ApiError::NotFound(format!(
                "no executions recorded for operation {operation:?}"
            ))
        })?;
        Ok(PerformanceStats {
            operation,
            times: summary,
        })
    }
}
