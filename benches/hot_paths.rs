//! Criterion benchmarks of the in-process work a cached GraphQL request pays for: the
//! response cache key, the cache entry codec (lz4 and raw), serializing an async-graphql
//! response, and the executor's whole cache-hit path without HTTP. A regression in any of
//! them is added to every request, so they are measured apart from the network and the database.

use std::hint::black_box;

use async_graphql::{Request, Response, Variables};
use bytes::Bytes;
use catalog_api::AppState;
use catalog_api::auth::Credentials;
use catalog_api::cache::CacheLookup;
use catalog_api::cache::entry::Entry;
use catalog_api::cache::key::{ResponseKey, Scope, document_hash};
use catalog_api::compression::{ContentEncoding, Effort};
use catalog_api::config::Config;
use catalog_api::db::seed::{self, SeedPlan};
use catalog_api::graphql::SchemaLimits;
use catalog_api::graphql::executor::{CacheStatus, Caller, Operation, Transport};
use catalog_api::graphql::loaders::Loaders;
use catalog_api::graphql::response_order::ResponseOrder;
use catalog_api::http::RequestId;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use tokio::runtime::Runtime;

/// W1: one product with its category, by id.
const PRODUCT_BY_ID: &str = "query ProductById($id: ID!) { product(id: $id) { id name price createdAt category { id name } } }";
/// W3: a 100-product page of one category.
const PRODUCTS: &str = "query Products($filter: ProductFilter, $first: Int) { products(filter: $filter, first: $first) { edges { node { id name price category { id name } } } } }";

/// 10,000 products over 50 categories put 200 products in category 7, so W3 fills its page.
const SEED_PLAN: SeedPlan = SeedPlan {
    categories: 50,
    products: 10_000,
};
const PAGE_SIZE: usize = 100;

/// Cached values above this many bytes are lz4-compressed (the server's default).
const COMPRESS_ABOVE: usize = 1024;

/// One GraphQL operation as a client sends it.
struct Workload {
    label: &'static str,
    query: &'static str,
    operation_name: &'static str,
    variables: Value,
}

impl Workload {
    fn product_by_id() -> Workload {
        Workload {
            label: "W1",
            query: PRODUCT_BY_ID,
            operation_name: "ProductById",
            variables: json!({ "id": "42" }),
        }
    }

    fn products() -> Workload {
        Workload {
            label: "W3",
            query: PRODUCTS,
            operation_name: "Products",
            variables: json!({ "filter": { "categoryId": "7" }, "first": PAGE_SIZE }),
        }
    }

    fn operation(&self) -> Operation {
        Operation {
            query: Some(self.query.to_owned()),
            operation_name: Some(self.operation_name.to_owned()),
            variables: Some(self.variables.clone()),
            extensions: None,
        }
    }

    /// The response key the executor computes for this operation (public scope).
    fn key(&self) -> ResponseKey {
        ResponseKey::new(
            &document_hash(self.query),
            Some(self.operation_name),
            &self.variables,
            &Scope::Public,
        )
    }
}

/// Everything the benchmarks share, built once per process. Fields drop in order: the
/// application before its runtime, and both before the database file is removed.
struct Fixture {
    state: AppState,
    runtime: Runtime,
    _files: tempfile::TempDir,
}

impl Fixture {
    fn build() -> Fixture {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime for the benchmarks");
        let files = tempfile::tempdir().expect("a temporary directory for the database");
        let url = format!(
            "sqlite://{}?mode=rwc",
            files.path().join("catalog.db").display()
        );
        let mut config = Config::for_database(url);
        config.bind = "127.0.0.1:0".parse().expect("a literal socket address");
        config.demo_data = false;
        config.redis_url = None;
        config.cache_enabled = true;
        let state = runtime.block_on(async {
            let state = AppState::build(config)
                .await
                .expect("the application state builds");
            seed::seed(&state.db, SEED_PLAN)
                .await
                .expect("the benchmark data set seeds");
            state
        });
        Fixture {
            state,
            runtime,
            _files: files,
        }
    }

    fn anonymous() -> Caller {
        Caller {
            deadline: tokio::time::Instant::now() + std::time::Duration::from_secs(3600),
            credentials: Credentials::anonymous(),
            request_id: RequestId("bench".into()),
            transport: Transport::Post,
            bypass_cache: false,
        }
    }

    /// Runs `workload` through the executor until the cache answers it, returning the body
    /// of the first (executed) response.
    fn warm(&self, workload: &Workload) -> Bytes {
        self.runtime.block_on(async {
            let executor = &self.state.executor;
            let caller = Fixture::anonymous();
            let first = executor
                .execute(workload.operation(), &caller)
                .await
                .expect("the executor accepts a POSTed query");
            let second = executor
                .execute(workload.operation(), &caller)
                .await
                .expect("the executor accepts a POSTed query");
            assert_eq!(
                second.cache,
                CacheStatus::Hit,
                "{} must be a cache hit after a warm-up call",
                workload.label
            );
            assert_eq!(first.body, second.body, "a hit returns the executed body");
            first.body
        })
    }

    /// The entry the cache stored for `workload` (real tags and ETag).
    fn cached_entry(&self, workload: &Workload) -> Entry {
        let cache = self
            .state
            .cache
            .as_ref()
            .expect("the in-process response cache is enabled");
        match self.runtime.block_on(cache.lookup(&workload.key())) {
            CacheLookup::Hit(entry) => (*entry).clone(),
            CacheLookup::Stale(..) | CacheLookup::Miss { .. } | CacheLookup::Unavailable => {
                panic!("{} is not in the cache after warming", workload.label)
            }
        }
    }

    /// Executes `workload` on a bare schema, as the executor does on a miss.
    fn response(&self, workload: &Workload) -> Response {
        let db = &self.state.db;
        let schema = catalog_api::graphql::schema::builder(SchemaLimits::default())
            .data(db.clone())
            .finish();
        let request = Request::new(workload.query)
            .operation_name(workload.operation_name)
            .variables(Variables::from_json(workload.variables.clone()))
            .data(Loaders::new(db));
        let response = self.runtime.block_on(schema.execute(request));
        assert!(
            response.errors.is_empty(),
            "{} failed: {:?}",
            workload.label,
            response.errors
        );
        response
    }
}

fn edge_count(body: &[u8]) -> usize {
    let body: Value = serde_json::from_slice(body).expect("the response body is JSON");
    body["data"]["products"]["edges"]
        .as_array()
        .map_or(0, Vec::len)
}

fn cache_key(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("cache_key");
    for workload in [Workload::product_by_id(), Workload::products()] {
        let document = document_hash(workload.query);
        group.bench_function(
            BenchmarkId::new("response_key", workload.label),
            |bencher| {
                bencher.iter(|| {
                    ResponseKey::new(
                        black_box(&document),
                        black_box(Some(workload.operation_name)),
                        black_box(&workload.variables),
                        black_box(&Scope::Public),
                    )
                });
            },
        );
    }
    group.bench_function(BenchmarkId::new("document_hash", "W3"), |bencher| {
        bencher.iter(|| document_hash(black_box(PRODUCTS)));
    });
    group.finish();
}

fn entry_codec(criterion: &mut Criterion, entry: &Entry) {
    let raw = entry.body.len();
    let compressed = entry.encode(COMPRESS_ABOVE);
    let uncompressed = entry.encode(usize::MAX);
    eprintln!(
        "entry_codec: W3 body ({PAGE_SIZE} products) {raw} bytes; encoded with lz4 {} bytes \
         (ratio {:.2}); encoded uncompressed {} bytes",
        compressed.len(),
        raw as f64 / compressed.len() as f64,
        uncompressed.len(),
    );
    for encoded in [&compressed, &uncompressed] {
        let decoded =
            Entry::decode(Bytes::from(encoded.clone())).expect("an encoded entry decodes");
        assert_eq!(&decoded, entry, "the codec round-trips");
    }

    let mut group = criterion.benchmark_group("entry_codec");
    group.throughput(Throughput::Bytes(raw as u64));
    // As the Redis backend reads them: one buffer the decoded body may share.
    for (label, compress_above, encoded) in [
        ("lz4", COMPRESS_ABOVE, Bytes::from(compressed)),
        ("uncompressed", usize::MAX, Bytes::from(uncompressed)),
    ] {
        group.bench_function(BenchmarkId::new("encode", label), |bencher| {
            bencher.iter(|| black_box(entry).encode(black_box(compress_above)));
        });
        group.bench_function(BenchmarkId::new("decode", label), |bencher| {
            bencher.iter(|| Entry::decode(black_box(encoded.clone())));
        });
    }
    group.finish();
}

/// Each content coding of the W3 body at both efforts: what a fill pays once (`stored`) and
/// what a response compressed as it is sent pays (`on_the_fly`), with the sizes they reach.
fn compression(criterion: &mut Criterion, body: &Bytes) {
    let mut group = criterion.benchmark_group("compression");
    group.throughput(Throughput::Bytes(body.len() as u64));
    for encoding in ContentEncoding::ALL {
        for (label, effort) in [("stored", Effort::Stored), ("on_the_fly", Effort::OnTheFly)] {
            eprintln!(
                "compression: W3 body {} bytes, {} {label}: {} bytes",
                body.len(),
                encoding.as_str(),
                encoding.compress(body, effort).len()
            );
            group.bench_function(
                BenchmarkId::new(format!("{}_{label}", encoding.as_str()), "W3"),
                |bencher| bencher.iter(|| encoding.compress(black_box(body), effort)),
            );
        }
    }
    group.finish();
}

fn response_serialization(criterion: &mut Criterion, responses: &[(&str, Response)]) {
    let mut group = criterion.benchmark_group("response_serialization");
    for (label, response) in responses {
        group.bench_function(BenchmarkId::new("to_vec", *label), |bencher| {
            bencher.iter(|| serde_json::to_vec(black_box(response)));
        });
    }
    group.finish();
}

/// W3's fields in reverse order: reordering its response moves every key of every object.
const PRODUCTS_REVERSED: &str = "query Products($filter: ProductFilter, $first: Int) { products(filter: $filter, first: $first) { edges { node { category { name id } price name id } } } }";

/// The cost of putting a response in selection order (`response_order`): learning the order
/// from the document, and applying it to a W3 page that is already in order (the common
/// case: one check per object) and to one where every object must be sorted.
fn response_order(criterion: &mut Criterion, response: &Response) {
    let order_of = |query: &str| {
        let document = async_graphql::parser::parse_query(query).expect("the query parses");
        ResponseOrder::of(&document, Some("Products")).expect("the operation has an order")
    };
    let mut group = criterion.benchmark_group("response_order");
    let document = async_graphql::parser::parse_query(PRODUCTS).expect("W3 parses");
    group.bench_function(BenchmarkId::new("learn", "W3"), |bencher| {
        bencher.iter(|| ResponseOrder::of(black_box(&document), Some("Products")));
    });
    for (label, query) in [
        ("W3 in order", PRODUCTS),
        ("W3 reversed", PRODUCTS_REVERSED),
    ] {
        let order = order_of(query);
        group.bench_function(BenchmarkId::new("apply", label), |bencher| {
            bencher.iter_batched_ref(
                || response.data.clone(),
                |data| order.apply(black_box(data)),
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

fn cached_hit(criterion: &mut Criterion, fixture: &Fixture, workloads: &[Workload]) {
    let executor = &*fixture.state.executor;
    let caller = Fixture::anonymous();
    let caller = &caller;
    let mut group = criterion.benchmark_group("cached_hit");
    for workload in workloads {
        group.bench_function(BenchmarkId::new("execute", workload.label), |bencher| {
            bencher.to_async(&fixture.runtime).iter_batched(
                || workload.operation(),
                |operation| async move { executor.execute(operation, caller).await },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

/// What the cache insights add to each request: one `record` (a hit, or a miss with its
/// reason) among a full table of 100 tracked operations.
fn insights(criterion: &mut Criterion) {
    use catalog_api::cache::insights::{DocumentId, Insights, MAX_OPERATIONS, MissReason};
    use catalog_api::cache::read_through::CacheStatus;
    let insights = Insights::new();
    let documents: Vec<DocumentId> = (0..MAX_OPERATIONS)
        .map(|n| DocumentId::of_hash(&format!("{n:012x}")))
        .collect();
    for (n, document) in documents.iter().enumerate() {
        insights.record(
            &format!("Operation{n}"),
            *document,
            CacheStatus::Hit,
            None,
            1.0,
        );
    }
    let mut group = criterion.benchmark_group("insights");
    group.bench_function(BenchmarkId::new("record", "hit"), |bencher| {
        bencher.iter(|| {
            insights.record(
                black_box("Operation42"),
                black_box(documents[42]),
                CacheStatus::Hit,
                None,
                black_box(0.3),
            )
        });
    });
    group.bench_function(BenchmarkId::new("record", "miss"), |bencher| {
        bencher.iter(|| {
            insights.record(
                black_box("Operation42"),
                black_box(documents[42]),
                CacheStatus::Miss,
                Some(MissReason::Expired),
                black_box(3.0),
            )
        });
    });
    group.bench_function(BenchmarkId::new("miss_reason", "unknown key"), |bencher| {
        bencher.iter(|| {
            insights.miss_reason(
                black_box("r:v1:public:0123456789abcdef"),
                false,
                "Operation42",
                documents[42],
            )
        });
    });
    group.finish();
}

fn hot_paths(criterion: &mut Criterion) {
    let fixture = Fixture::build();
    let product_by_id = Workload::product_by_id();
    let products = Workload::products();

    fixture.warm(&product_by_id);
    let body = fixture.warm(&products);
    assert_eq!(edge_count(&body), PAGE_SIZE, "W3 returns a full page");
    let entry = fixture.cached_entry(&products);
    assert_eq!(entry.body, body, "the cache holds the executed body");

    let responses = [
        ("W3", fixture.response(&products)),
        ("W1", fixture.response(&product_by_id)),
    ];

    cache_key(criterion);
    insights(criterion);
    entry_codec(criterion, &entry);
    compression(criterion, &entry.body);
    response_serialization(criterion, &responses);
    response_order(criterion, &responses[0].1);
    cached_hit(criterion, &fixture, &[product_by_id, products]);
}

criterion_group!(benches, hot_paths);
criterion_main!(benches);
