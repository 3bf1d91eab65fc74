//! Rate limits as a client meets them: a client over its query-cost budget is refused (429,
//! `Retry-After`, `RateLimit`, `RateLimit-Policy`, `RATE_LIMITED`) on every instance, one
//! under it never is, exempt addresses never are, health and metrics never are, a flood of
//! distinct addresses leaves the in-process map within its bound, and a Redis outage leaves
//! the limits to the process instead of failing requests.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::support::helpers::{GqlResponse, PRODUCT_BY_ID, TestApp, redis_configured};
use crate::support::redis_process::RedisProcess;

const WINDOW_SECS: u64 = 60;

/// A server whose loopback clients are limited (nothing exempt) to `quota` per address.
fn limited(quota: u64) -> impl FnOnce(&mut catalog_api::config::Config) {
    move |config| {
        config.rate_limit_exempt.clear();
        config.rate_limit_cost_per_address = quota;
        config.rate_limit_window_secs = WINDOW_SECS;
    }
}

async fn product(app: &TestApp, id: u32, extra: &[(&str, &str)]) -> GqlResponse {
    app.post_json(
        json!({ "query": PRODUCT_BY_ID, "variables": { "id": id.to_string() } }),
        None,
        extra,
    )
    .await
}

/// The `r` and `t` of a `RateLimit` header's first item.
fn remaining_and_reset(response: &GqlResponse) -> (u64, u64) {
    let header = response.header("ratelimit").expect("a RateLimit header");
    let field = |name: &str| {
        header
            .split(';')
            .find_map(|part| part.trim().strip_prefix(name))
            .and_then(|value| value.split(',').next())
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {header:?}"))
    };
    (field("r="), field("t="))
}

#[track_caller]
fn assert_limited(response: &GqlResponse, quota: u64) {
    assert_eq!(response.status, 429, "limited: {}", response.body);
    response.assert_error("RATE_LIMITED");
    assert!(response.body.get("data").is_none(), "{}", response.body);
    let retry_after: u64 = response
        .header("retry-after")
        .and_then(|value| value.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=WINDOW_SECS).contains(&retry_after), "{retry_after}");
    assert_eq!(
        response.header("ratelimit-policy"),
        Some(format!("\"address\";q={quota};w={WINDOW_SECS}").as_str())
    );
    let (remaining, reset) = remaining_and_reset(response);
    assert_eq!(remaining, 0);
    assert!((1..=WINDOW_SECS).contains(&reset), "{reset}");
}

#[tokio::test]
async fn a_client_over_its_budget_is_refused_by_both_instances_with_the_rate_limit_headers() {
    const QUOTA: u64 = 30;
    let first = TestApp::spawn_with(limited(QUOTA)).await;
    let second = TestApp::start(first.config.clone(), None, None).await;
    let instances = [&first, &second];
    let mut served = [0u64; 2];
    let mut refused = [false; 2];
    let mut remaining_seen = Vec::new();
    for request in 0..200u32 {
        let index = (request % 2) as usize;
        if refused.iter().all(|refused| *refused) {
            break;
        }
        let response = product(instances[index], 1 + request % 5, &[]).await;
        match response.status.as_u16() {
            200 => {
                response.assert_ok();
                served[index] += 1;
                remaining_seen.push(remaining_and_reset(&response).0);
            }
            429 => {
                assert_limited(&response, QUOTA);
                refused[index] = true;
            }
            status => panic!("unexpected status {status}: {}", response.body),
        }
    }
    assert_eq!(
        refused,
        [true, true],
        "both instances refuse: served {served:?}"
    );
    // Every answered request is charged at least 1, so the budget lasts at most QUOTA
    // requests; the one that spends the rest is answered, and each instance that has not yet
    // charged the client since then answers once more.
    let total: u64 = served.iter().sum();
    if redis_configured() {
        assert!(total <= QUOTA + 2, "shared budget: served {served:?}");
    } else {
        for count in served {
            assert!(count <= QUOTA + 1, "per-instance budget: served {served:?}");
        }
    }
    assert!(
        remaining_seen.windows(2).any(|pair| pair[1] < pair[0]),
        "answers count the budget down: {remaining_seen:?}"
    );
    // Health, readiness and metrics are never limited.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let status = first
            .client
            .get(first.url(path))
            .send()
            .await
            .expect("request")
            .status();
        assert_eq!(status, 200, "{path}");
    }
    // Refusals are counted like every error code.
    assert!(
        first
            .metric("catalog_graphql_errors_total{code=\"RATE_LIMITED\"}")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn a_client_under_its_budget_is_never_refused() {
    const QUOTA: u64 = 5_000;
    let app = TestApp::spawn_with(limited(QUOTA)).await;
    // In order, so the first 50 are the misses (a miss costs the document's fields, a hit 1).
    let mut remaining = Vec::new();
    for request in 0..300u32 {
        let response = product(&app, 1 + request % 50, &[]).await;
        response.assert_ok();
        assert_eq!(
            response.header("ratelimit-policy"),
            Some(format!("\"address\";q={QUOTA};w={WINDOW_SECS}").as_str())
        );
        remaining.push(remaining_and_reset(&response).0);
    }
    let miss_cost = QUOTA - remaining[0];
    assert!(miss_cost > 1, "a miss costs its fields: {miss_cost}");
    assert_eq!(
        remaining[299],
        QUOTA - 50 * miss_cost - 250,
        "{remaining:?}"
    );
}

#[tokio::test]
async fn exempt_addresses_are_never_limited_and_forwarded_ones_only_behind_a_trusted_proxy() {
    let app = TestApp::spawn_with(|config| {
        limited(3)(config);
        config.rate_limit_exempt = vec!["192.0.2.0/24".into()];
        config.rate_limit_trusted_proxies = vec!["127.0.0.1/32".into()];
    })
    .await;
    for request in 0..40 {
        let response = product(&app, 1 + request % 3, &[("x-forwarded-for", "192.0.2.9")]).await;
        response.assert_ok();
        assert!(
            response.header("ratelimit").is_none(),
            "exempt: not counted"
        );
    }
    let mut refused_after = None;
    for request in 0..10 {
        let response = product(&app, 1, &[("x-forwarded-for", "198.51.100.1")]).await;
        if response.status == 429 {
            assert_limited(&response, 3);
            refused_after = Some(request);
            break;
        }
        response.assert_ok();
    }
    assert!(
        refused_after.is_some_and(|answered| answered <= 3),
        "a forwarded client is limited: {refused_after:?}"
    );
    // Another forwarded client, and the proxy's own budget, are untouched.
    product(&app, 1, &[("x-forwarded-for", "198.51.100.2")])
        .await
        .assert_ok();
    product(&app, 1, &[]).await.assert_ok();
}

#[tokio::test]
async fn ten_thousand_distinct_addresses_leave_the_in_process_map_within_its_bound() {
    const BOUND: u64 = 500;
    let app = TestApp::spawn_with(|config| {
        limited(1_000)(config);
        config.redis_url = None;
        config.rate_limit_trusted_proxies = vec!["127.0.0.1/32".into()];
        config.rate_limit_max_clients = BOUND;
    })
    .await;
    let statuses: Vec<u16> = futures::stream::iter(0..10_000u32)
        .map(|client| {
            let address = format!(
                "10.{}.{}.{}",
                client >> 16,
                (client >> 8) & 255,
                client & 255
            );
            let app = &app;
            async move {
                app.post_json(
                    json!({ "query": "{ __typename }" }),
                    None,
                    &[("x-forwarded-for", address.as_str())],
                )
                .await
                .status
                .as_u16()
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(statuses.iter().all(|status| *status == 200));
    let tracked = app.metric("catalog_rate_limit_clients").await;
    assert!(
        (1.0..=BOUND as f64).contains(&tracked),
        "tracked clients: {tracked}"
    );
}

#[tokio::test]
async fn a_redis_outage_leaves_the_limits_to_the_process_and_every_request_is_answered() {
    const QUOTA: u64 = 20;
    let Some(mut redis) = RedisProcess::start().await else {
        return;
    };
    let app = TestApp::spawn_with(|config| {
        limited(QUOTA)(config);
        config.redis_url = Some(redis.url());
    })
    .await;
    let first = product(&app, 1, &[]).await;
    first.assert_ok();
    let charged_in_redis = QUOTA - remaining_and_reset(&first).0;
    assert!(charged_in_redis >= 1);
    let key_count: u64 = {
        let client = redis::Client::open(redis.url()).expect("a client");
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{{{}rate}}:*", app.config.cache_prefix))
            .query_async(&mut connection)
            .await
            .expect("keys");
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&keys[0])
            .query_async(&mut connection)
            .await
            .expect("ttl");
        assert!(
            ttl > 0 && ttl <= (WINDOW_SECS * 1000) as i64,
            "a counter lives one window: {ttl}"
        );
        keys.len() as u64
    };
    assert_eq!(key_count, 1, "one counter: the address's");

    redis.kill().await;
    let mut answered = 0;
    let mut refused = false;
    for request in 0..(QUOTA as u32 + 5) {
        let started = std::time::Instant::now();
        let response = product(&app, 1 + request % 3, &[]).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "answered promptly without Redis"
        );
        match response.status.as_u16() {
            200 => {
                let _: &Value = response.assert_ok();
                answered += 1;
            }
            429 => {
                assert_limited(&response, QUOTA);
                refused = true;
                break;
            }
            status => panic!("no outage: got {status}: {}", response.body),
        }
    }
    assert!(answered >= 1, "requests are still answered");
    assert!(refused, "and still limited, in-process");
}
