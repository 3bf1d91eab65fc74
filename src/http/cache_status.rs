//! What the response cache did, in the headers HTTP caches and people read: RFC 9211's
//! `Cache-Status` on every GraphQL response (the same words as `X-Cache`, with the entry's
//! remaining freshness and why a stale entry answered), and RFC 5861's stale directives in
//! `Cache-Control`, sent only where this origin would serve the same stale answer.

use axum::http::HeaderValue;
use axum::response::Response;

use crate::cache::{Policy, StaleWindows};
use crate::graphql::executor::{CacheStatus, Outcome};

/// This cache's name in `Cache-Status` (RFC 9211 2: an identifier for the cache).
pub const CACHE_NAME: &str = "catalog-api";

pub const HEADER: &str = "cache-status";

/// The `Cache-Status` member for one outcome: `hit; ttl=N` (seconds of freshness left),
/// `fwd=stale; ttl=-N; detail=stale-while-revalidate|stale-if-error` (ttl negative: past its
/// freshness), `fwd=uri-miss` (`; stored` when the result was stored), `fwd=bypass`.
pub fn cache_status(outcome: &Outcome) -> String {
    let detail = outcome.detail;
    let ttl = detail
        .ttl
        .map(|ttl| format!("; ttl={ttl}"))
        .unwrap_or_default();
    match outcome.cache {
        CacheStatus::Hit => format!("{CACHE_NAME}; hit{ttl}"),
        CacheStatus::Stale => {
            let why = detail
                .stale
                .map(|reason| format!("; detail={}", reason.as_str()))
                .unwrap_or_default();
            format!("{CACHE_NAME}; fwd=stale{ttl}{why}")
        }
        CacheStatus::Miss if detail.stored => format!("{CACHE_NAME}; fwd=uri-miss; stored"),
        CacheStatus::Miss => format!("{CACHE_NAME}; fwd=uri-miss"),
        CacheStatus::Bypass => format!("{CACHE_NAME}; fwd=bypass"),
    }
}

/// The `Cache-Status` of a batch: one status for the whole body (each operation's own is in
/// its `extensions.cache` when asked for).
pub fn batch_cache_status(status: CacheStatus) -> String {
    match status {
        CacheStatus::Hit => format!("{CACHE_NAME}; hit"),
        CacheStatus::Stale => format!("{CACHE_NAME}; fwd=stale"),
        CacheStatus::Miss => format!("{CACHE_NAME}; fwd=uri-miss"),
        CacheStatus::Bypass => format!("{CACHE_NAME}; fwd=bypass"),
    }
}

/// Sets `Cache-Status` unless the handler did: a response the cache never saw (a transport
/// error, a refused token) is a bypass.
pub fn ensure_cache_status(response: &mut Response) {
    if !response.headers().contains_key(HEADER) {
        let bypass = format!("{CACHE_NAME}; fwd=bypass");
        if let Ok(value) = HeaderValue::from_str(&bypass) {
            response.headers_mut().insert(HEADER, value);
        }
    }
}

/// `stale-while-revalidate=N, stale-if-error=M` to append to a public cacheable result's
/// `Cache-Control`, with this origin's own windows (each only when on): an HTTP cache may then
/// do what the origin does. Nothing for private or uncacheable results, which the origin never
/// serves stale.
pub fn stale_directives(policy: Option<Policy>, windows: StaleWindows) -> Option<String> {
    policy.filter(|policy| !policy.private)?;
    let directives: Vec<String> = [
        ("stale-while-revalidate", windows.while_revalidate),
        ("stale-if-error", windows.if_error),
    ]
    .into_iter()
    .filter(|(_, window)| !window.is_zero())
    .map(|(name, window)| format!("{name}={}", window.as_secs()))
    .collect();
    (!directives.is_empty()).then(|| directives.join(", "))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::graphql::executor::{CacheDetail, StaleReason};

    fn outcome(cache: CacheStatus, detail: CacheDetail) -> Outcome {
        Outcome {
            cache,
            detail,
            ..Outcome::request_error("unused", "UNUSED")
        }
    }

    #[test]
    fn every_status_has_its_rfc_9211_form() {
        let hit = CacheDetail {
            ttl: Some(42),
            ..CacheDetail::default()
        };
        assert_eq!(
            cache_status(&outcome(CacheStatus::Hit, hit)),
            "catalog-api; hit; ttl=42"
        );
        let stored = CacheDetail {
            stored: true,
            ..CacheDetail::default()
        };
        assert_eq!(
            cache_status(&outcome(CacheStatus::Miss, stored)),
            "catalog-api; fwd=uri-miss; stored"
        );
        assert_eq!(
            cache_status(&outcome(CacheStatus::Miss, CacheDetail::default())),
            "catalog-api; fwd=uri-miss"
        );
        for (reason, detail) in [
            (StaleReason::WhileRevalidate, "stale-while-revalidate"),
            (StaleReason::IfError, "stale-if-error"),
        ] {
            let stale = CacheDetail {
                ttl: Some(-3),
                stored: false,
                stale: Some(reason),
            };
            assert_eq!(
                cache_status(&outcome(CacheStatus::Stale, stale)),
                format!("catalog-api; fwd=stale; ttl=-3; detail={detail}")
            );
        }
        assert_eq!(
            cache_status(&outcome(CacheStatus::Bypass, CacheDetail::default())),
            "catalog-api; fwd=bypass"
        );
    }

    #[test]
    fn stale_directives_only_for_public_results_and_windows_that_are_on() {
        let public = Some(Policy {
            max_age: 600,
            private: false,
        });
        let private = Some(Policy {
            max_age: 600,
            private: true,
        });
        let windows = |swr: u64, sie: u64| StaleWindows {
            while_revalidate: Duration::from_secs(swr),
            if_error: Duration::from_secs(sie),
        };
        assert_eq!(stale_directives(public, windows(0, 0)), None);
        assert_eq!(
            stale_directives(public, windows(30, 0)).as_deref(),
            Some("stale-while-revalidate=30")
        );
        assert_eq!(
            stale_directives(public, windows(30, 600)).as_deref(),
            Some("stale-while-revalidate=30, stale-if-error=600")
        );
        assert_eq!(stale_directives(private, windows(30, 600)), None);
        assert_eq!(stale_directives(None, windows(30, 600)), None);
    }
}
