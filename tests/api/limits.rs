//! The bounds of the README's "Limits" section, under a flood of distinct anonymous
//! operations: persisted queries, recorded operations and the ranking stay within them in
//! the backend (counted under the test's own prefix) and in the process.

use std::collections::BTreeMap;

use catalog_api::cache::monitor::{OPERATION_MAX_BYTES, RANKING_KEY, SAMPLES_KEPT};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::support::helpers::{PRODUCT_BY_ID, TestApp, redis_configured, redis_view};

const MAX_DOCUMENTS: usize = 40;
const MAX_DOCUMENT_BYTES: usize = 2048;
const RANKED: usize = 25;
/// Redis's own bookkeeping per key and per sorted-set member, generously; an index's member
/// is itself a key name (about 100 bytes with a test prefix and, on a cluster, a hash tag).
const KEY_OVERHEAD: u64 = 320;

fn sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Keys and bytes (`MEMORY USAGE`) under this test's prefix, by kind (the key up to its
/// first `:` after the prefix, `apq:documents` and `ops:*` apart), on every primary of a
/// cluster.
async fn redis_usage(app: &TestApp) -> BTreeMap<String, (u64, u64)> {
    let mut usage = BTreeMap::new();
    let Some(redis) = redis_view(app) else {
        return usage;
    };
    let mut connection = redis.command_connection().await.expect("connect");
    for key in redis.keys().await.expect("keys") {
        let bytes: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .expect("memory usage");
        let name = redis.name_of(&key);
        let kind = match name {
            "apq:documents" | "ops:docs" | "ops:rank" => name.to_owned(),
            _ if name.starts_with("ops:doc:") => "ops:doc".to_owned(),
            _ => name.split(':').next().unwrap_or(name).to_owned(),
        };
        let slot = usage.entry(kind).or_insert((0, 0));
        slot.0 += 1;
        slot.1 += bytes.unwrap_or(0);
    }
    usage
}

fn total(usage: &BTreeMap<String, (u64, u64)>, kinds: &[&str]) -> (u64, u64) {
    kinds
        .iter()
        .filter_map(|kind| usage.get(*kind))
        .fold((0, 0), |sum, (keys, bytes)| (sum.0 + keys, sum.1 + bytes))
}

#[tokio::test]
async fn a_flood_of_distinct_anonymous_operations_stays_within_the_stated_bounds() {
    let app = TestApp::spawn_with(|config| {
        config.apq_max_documents = MAX_DOCUMENTS;
        config.apq_max_document_bytes = MAX_DOCUMENT_BYTES;
        config.ranked_operations = RANKED;
    })
    .await;
    let cache = app.state.cache.as_ref().expect("cache");
    let before = redis_usage(&app).await;

    let mut hashes = Vec::new();
    let mut largest_buffer = 0;
    for i in 0..500_u32 {
        let product = i % 1000 + 1;
        let request = match i % 5 {
            // Distinct variables: a distinct public operation each time.
            0 => json!({ "query": PRODUCT_BY_ID, "variables": { "id": product.to_string() } }),
            kind => {
                let document = match kind {
                    1 => {
                        format!("query {{ product(id: \"{product}\") {{ id name }} }} # flood {i}")
                    }
                    2 => format!("query {{ product(id: \"{product}\") {{ name # unclosed {i}"),
                    3 => format!(
                        "query {{ product(id: \"{product}\") {{ name }} }} # {i} {}",
                        "x".repeat(MAX_DOCUMENT_BYTES)
                    ),
                    _ => format!("query {{ flood{i} }}"),
                };
                let hash = sha256(&document);
                hashes.push(hash.clone());
                json!({
                    "query": document,
                    "extensions": { "persistedQuery": { "version": 1, "sha256Hash": hash } }
                })
            }
        };
        let response = app.post_json(request, None, &[]).await;
        assert_eq!(response.status, 200, "{}", response.body);
        largest_buffer = largest_buffer.max(cache.monitor().buffer_sizes().ranked);
    }
    let buffered = cache.monitor().buffer_sizes();
    cache.flush_monitor().await.expect("flush the monitor");
    let after = redis_usage(&app).await;

    // In the process: between flushes the ranking buffer never holds more than the ranking.
    assert!(
        largest_buffer <= RANKED,
        "{largest_buffer} operations buffered"
    );
    assert!(buffered.documents <= RANKED, "{buffered:?}");
    assert!(
        buffered.document_bytes <= RANKED * OPERATION_MAX_BYTES,
        "{buffered:?}"
    );
    // Samples are kept per operation label: "anonymous" and "ProductById" here.
    assert!(buffered.samples <= 2 * SAMPLES_KEPT, "{buffered:?}");

    // In the backend, through the storage API (both backends).
    let ranking = cache
        .storage()
        .rank_top(RANKING_KEY, 10_000)
        .await
        .expect("ranking");
    assert!(
        !ranking.is_empty() && ranking.len() <= RANKED,
        "{} ranked",
        ranking.len()
    );
    let mut registered = 0;
    for hash in &hashes {
        if cache
            .storage()
            .get(&format!("apq:{hash}"))
            .await
            .expect("get")
            .is_some()
        {
            registered += 1;
        }
    }
    assert!(
        registered > 0 && registered <= MAX_DOCUMENTS,
        "{registered} persisted documents kept"
    );

    eprintln!("before the flood: {before:?}");
    eprintln!("after the flood:  {after:?}");
    eprintln!(
        "process buffers just before the flush: {buffered:?}; ranking {}, documents {registered}",
        ranking.len()
    );
    if !redis_configured() {
        return;
    }
    // In Redis, counted and measured under the prefix.
    let (apq_keys, apq_bytes) = total(&after, &["apq"]);
    assert!(apq_keys <= MAX_DOCUMENTS as u64, "{after:?}");
    assert!(
        apq_bytes <= MAX_DOCUMENTS as u64 * (MAX_DOCUMENT_BYTES as u64 + KEY_OVERHEAD),
        "{after:?}"
    );
    let (document_keys, document_bytes) = total(&after, &["ops:doc"]);
    assert!(document_keys <= RANKED as u64, "{after:?}");
    assert!(
        document_bytes <= RANKED as u64 * (OPERATION_MAX_BYTES as u64 + KEY_OVERHEAD),
        "{after:?}"
    );
    let (_, index_bytes) = total(&after, &["apq:documents", "ops:docs", "ops:rank"]);
    assert!(
        index_bytes <= (MAX_DOCUMENTS + 2 * RANKED) as u64 * KEY_OVERHEAD,
        "{after:?}"
    );
    let redis = redis_view(&app).expect("redis");
    let mut connection = redis.command_connection().await.expect("connect");
    let ttl: i64 = redis::cmd("TTL")
        .arg(redis.value_key(RANKING_KEY))
        .query_async(&mut connection)
        .await
        .expect("ttl");
    assert!(ttl > 0, "the ranking expires (TTL {ttl})");
    // Everything but response entries and tag stamps (bounded by their TTLs) is constant.
    let (bookkeeping_keys, _) = total(&after, &["seq", "floor", "runid", "stats", "perf"]);
    assert!(bookkeeping_keys <= 3 + 3 + 2, "{after:?}");
    // On a cluster, each partition's bookkeeping is one hash and one sorted set.
    let (partition_keys, _) = total(&after, &["book", "stamped"]);
    assert!(
        partition_keys <= 2 * app.config.cache_partitions as u64,
        "{after:?}"
    );
}
