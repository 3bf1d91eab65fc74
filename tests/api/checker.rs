//! The randomized consistency checker: concurrent clients on two instances that share one
//! database and one private Redis run a seeded mix of reads and mutations while Redis is
//! killed, restored from an older snapshot, stalled, cleared and cut off from its subscribers.
//! Every answer is judged against a model of the acknowledged writes and against the database,
//! so the cache's promises are proven by the workload itself instead of hand-picked cases.
//! Entries live a couple of seconds and both stale windows are on, so entries expire and answer
//! stale throughout; on PostgreSQL the database path is cut now and then as well, and a read
//! must still never return what an acknowledged mutation changed.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use catalog_api::entities::{category, product};
use futures::future::join_all;
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter};
use serde_json::{Value, json};

use crate::support::helpers::{GqlResponse, PRODUCT_BY_ID, TestApp, test_config};
use crate::support::redis_cluster::RedisCluster;
use crate::support::redis_process::RedisProcess;
use crate::support::tcp_proxy::TcpProxy;
use crate::support::varnish_process::{VarnishProcess, reserve_port};

/// Both instances give up on a Redis command after this long; a stall lasts longer.
const COMMAND_TIMEOUT_MS: u64 = 100;
const STALL: Duration = Duration::from_millis(400);
/// One way, well under the command timeout: the slowed instance keeps using Redis.
const SLOW_PATH: Duration = Duration::from_millis(15);
const SLOWED_FOR: Duration = Duration::from_millis(5_000);
const OUTAGE: Duration = Duration::from_millis(300);
const FAULT_INTERVAL: Duration = Duration::from_millis(1_200);
/// On a cluster a killed primary's slots move in about 3 s (1 s node timeout, the election, the
/// node's return as a replica): faults come farther apart, so that each one is a failover the
/// cluster finishes, not a cluster that never settles.
const CLUSTER_FAULT_INTERVAL: Duration = Duration::from_millis(4_000);
const DEFAULT_SECONDS: u64 = 15;
const CLIENTS: usize = 4;
const CATEGORIES: u32 = 5;
const PRODUCTS: u32 = 60;
const INSTANCES: usize = 2;
/// Each second, writes stop for the rest of the second after this long, so that lists and
/// counts (which any write may change) can be judged in the quiet part.
const WRITES_PER_SECOND: Duration = Duration::from_millis(650);
/// Entries are fresh this long (`CATALOG_CACHE_MAX_TTL_SECS`), then answer stale while one
/// refill replaces them, or, when the database is away, for the longer stale-if-error window.
const ENTRY_TTL_SECS: u64 = 2;
const STALE_WHILE_REVALIDATE_SECS: u64 = 2;
const STALE_IF_ERROR_SECS: u64 = 4;
/// The database path is cut for `CUT` about every `CUT_INTERVAL` (PostgreSQL only).
const CUT: Duration = Duration::from_millis(1_500);
const CUT_INTERVAL: Duration = Duration::from_millis(4_000);
/// A read that failed for want of the database is excused until this long after both
/// instances have it back.
const CUT_RECOVERY: Duration = Duration::from_millis(500);

const PRODUCT_PAGE: &str = "query ProductPage($filter: ProductFilter, $order: ProductOrder, $first: Int, $after: String) { products(filter: $filter, orderBy: $order, first: $first, after: $after) { totalCount pageInfo { hasNextPage endCursor } edges { node { id name price category { id } } } } }";
const CATEGORY_COUNT: &str =
    "query CategoryCount($id: ID!) { category(id: $id) { id name productCount } }";
const ALL_CATEGORIES: &str = "query Categories { categories { id name productCount } }";
const DASHBOARD: &str = "query Dashboard { dashboardStats { totalProducts categoriesCount avgPrice productsByCategory { categoryId productCount } } }";
const CREATE: &str = "mutation Create($input: CreateProductInput!) { createProduct(input: $input) { id name price category { id } } }";
const UPDATE: &str = "mutation Update($id: ID!, $input: UpdateProductInput!) { updateProduct(id: $id, input: $input) { id name price category { id } } }";
const DELETE: &str = "mutation Delete($id: ID!) { deleteProduct(id: $id) }";
const BULK_CREATE: &str = "mutation BulkCreate($inputs: [CreateProductInput!]!) { bulkCreateProducts(inputs: $inputs) { id name price category { id } } }";
const BULK_PRICES: &str = "mutation BulkPrices($updates: [PriceUpdateInput!]!) { bulkUpdatePrices(updates: $updates) { id name price category { id } } }";

/// The seed and length of a checker run: a random seed and `DEFAULT_SECONDS`, unless
/// `CATALOG_CHECK_SEED` and `CATALOG_CHECK_SECONDS` name them to replay a failure.
struct CheckSettings {
    seed: u64,
    seconds: u64,
}

impl CheckSettings {
    /// Reads the settings and prints the line that replays this run (`setup` says what it
    /// runs on, after the seed).
    fn from_env(setup: &str) -> Self {
        fn number(name: &str) -> Option<u64> {
            std::env::var(name).ok().and_then(|text| text.parse().ok())
        }
        let settings = CheckSettings {
            seed: number("CATALOG_CHECK_SEED").unwrap_or_else(rand::random::<u64>),
            seconds: number("CATALOG_CHECK_SECONDS").unwrap_or(DEFAULT_SECONDS),
        };
        let CheckSettings { seed, seconds } = settings;
        eprintln!(
            "checker seed: {seed}{setup} (replay: CATALOG_CHECK_SEED={seed} CATALOG_CHECK_SECONDS={seconds} cargo test --test api checker -- --nocapture)"
        );
        settings
    }

    fn duration(&self) -> Duration {
        Duration::from_secs(self.seconds)
    }

    /// Fails the test with the first violations and the seed that replays them.
    fn assert_none(&self, setup: &str, violations: &[String]) {
        let seed = self.seed;
        assert!(
            violations.is_empty(),
            "checker seed {seed}{setup}: {} violation(s) (replay: CATALOG_CHECK_SEED={seed}); first ones:\n{}",
            violations.len(),
            violations
                .iter()
                .take(12)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_random_workload_with_redis_faults_never_breaks_a_cache_promise() {
    let settings = CheckSettings::from_env("");
    let mut violations = Vec::new();
    for local_tier in [false, true] {
        let Some(report) = check(settings.seed, local_tier, settings.duration()).await else {
            return;
        };
        violations.extend(report);
    }
    settings.assert_none("", &violations);
}

/// The same workload on a Redis Cluster (3 primaries, 3 replicas), whose faults are a primary
/// killed with `kill -9` (its replica takes over, it comes back as a replica) and
/// `CLUSTER FAILOVER`, besides `cache clear` and closed subscriptions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_random_workload_on_a_redis_cluster_with_failovers_never_breaks_a_cache_promise() {
    let settings = CheckSettings::from_env(" on a Redis Cluster");
    let mut violations = Vec::new();
    for local_tier in [false, true] {
        let Some(mut cluster) = RedisCluster::start().await else {
            return;
        };
        let url = cluster.url();
        let run = Arc::new(Run::start_on(settings.seed, local_tier, &url, true, None).await);
        run.warm_up().await;
        let deadline = Instant::now() + settings.duration();
        let faults = inject_cluster_faults(&run, &mut cluster, deadline);
        violations.extend(drive(&run, deadline, faults).await);
    }
    settings.assert_none(" on a cluster", &violations);
}

/// The same workload with a Varnish (the shipped VCL) in front of the first instance: every
/// anonymous read sent there is a GET that Varnish answers or fetches, and every mutation
/// purges it before it answers, so an edge hit is judged like any answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_random_workload_through_varnish_never_breaks_a_cache_promise() {
    let settings = CheckSettings::from_env(" through Varnish");
    let Some(port) = reserve_port() else {
        return;
    };
    let Some(mut redis) = RedisProcess::start_persistent().await else {
        return;
    };
    let run = Arc::new(Run::start_on(settings.seed, false, &redis.url(), false, Some(port)).await);
    run.warm_up().await;
    if let Err(error) = redis.save().await {
        run.violation(format!("the first snapshot failed: {error}"));
    }
    let deadline = Instant::now() + settings.duration();
    let faults = inject_faults(&run, &mut redis, deadline);
    let violations = drive(&run, deadline, faults).await;
    let hits = run.tally.edge.lock().get("hit").copied().unwrap_or(0);
    assert!(
        hits > 0,
        "Varnish answered no read: the run proved nothing about the edge"
    );
    settings.assert_none(" through Varnish", &violations);
}

async fn check(seed: u64, local_tier: bool, duration: Duration) -> Option<Vec<String>> {
    let mut redis = RedisProcess::start_persistent().await?;
    let run = Arc::new(Run::start(seed, local_tier, &redis).await);
    run.warm_up().await;
    if let Err(error) = redis.save().await {
        run.violation(format!("the first snapshot failed: {error}"));
    }
    let deadline = Instant::now() + duration;
    let faults = inject_faults(&run, &mut redis, deadline);
    Some(drive(&run, deadline, faults).await)
}

/// Runs the clients until `deadline` while `faults` injects faults, then sweeps the final
/// state, prints the tally and returns its violations.
async fn drive(run: &Arc<Run>, deadline: Instant, faults: impl Future<Output = ()>) -> Vec<String> {
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| tokio::spawn(client_loop(Arc::clone(run), client, deadline)))
        .collect();
    futures::future::join(faults, cut_the_database(run, deadline)).await;
    for (client, finished) in join_all(clients).await.into_iter().enumerate() {
        if let Err(error) = finished {
            run.violation(format!("client {client} panicked: {error}"));
        }
    }
    run.final_sweep().await;
    run.tally.print(&run.label());
    // Anonymous reads repeat their bytes, so some are answered as recognized requests
    // (`http::recognized`): the run judged that path too.
    let recognized: Vec<u64> = run
        .apps
        .iter()
        .map(|app| app.state.recognized.len())
        .collect();
    eprintln!("  recognized fingerprints per instance {recognized:?}");
    if recognized.iter().all(|count| *count == 0) {
        run.violation("no read was answered as a recognized request".to_owned());
    }
    if run.local_tier {
        // Every read was judged from the mutation's answer on, on both instances: the run
        // proves the first tiers exact only if they answered some of them.
        let mut first_tier_hits = Vec::new();
        for app in &run.apps {
            let hits = app.metric("catalog_cache_first_tier_hits_total").await;
            let settled = app
                .metric("catalog_cache_first_tier_settle_seconds_count")
                .await;
            let waited = app
                .metric("catalog_cache_first_tier_settle_seconds_sum")
                .await;
            let evicted = app
                .metric("catalog_cache_first_tier_lease_evictions_total")
                .await;
            eprintln!(
                "  first tier: {hits} hits, {settled} writes waited {:.1} ms on average, {evicted} leases taken away",
                if settled > 0.0 {
                    waited * 1000.0 / settled
                } else {
                    0.0
                }
            );
            first_tier_hits.push(hits);
        }
        if first_tier_hits.iter().all(|hits| *hits == 0.0) {
            run.violation("no read was answered from a first tier".to_owned());
        }
    }
    run.tally.violations.lock().clone()
}

// ---------------------------------------------------------------------------------------
// The model: what the acknowledged mutations say, and which reads they constrain.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
struct ProductState {
    name: String,
    price_cents: i64,
    category_id: i32,
}

/// Which instance answered a write, which decides how soon reads elsewhere must see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Writer {
    Instance(usize),
    /// Identical requests went to both instances.
    Both,
    /// The write failed (or its outcome was learned from the database): nothing promises
    /// that reads reflect it, so reads of its products are not judged until the next write.
    Unacknowledged,
}

/// When and where a write's response arrived.
#[derive(Clone, Copy, Debug)]
struct Acknowledgement {
    at: Instant,
    writer: Writer,
}

/// One product as the model knows it. Only its owner mutates it, so between the owner's
/// writes the database holds exactly `state` (`None`: deleted).
#[derive(Clone, Debug)]
struct Record {
    state: Option<ProductState>,
    owner: usize,
    writes_in_flight: u32,
    /// Bumped when a write starts and when it ends: a read that saw the same generation
    /// before and after overlapped no write.
    generation: u64,
    acknowledged: Option<Acknowledgement>,
}

/// Mutations in flight anywhere, for reads (lists, counts) that any mutation may change.
#[derive(Default)]
struct Activity {
    in_flight: u32,
    generation: u64,
}

struct Model {
    products: Mutex<BTreeMap<i32, Record>>,
    activity: Mutex<Activity>,
}

/// A write in progress: the products it touches.
struct Ticket {
    ids: Vec<i32>,
}

impl Model {
    fn new(products: BTreeMap<i32, ProductState>) -> Model {
        let records = products
            .into_iter()
            .map(|(id, state)| {
                let record = Record {
                    state: Some(state),
                    owner: id as usize % CLIENTS,
                    writes_in_flight: 0,
                    generation: 0,
                    acknowledged: None,
                };
                (id, record)
            })
            .collect();
        Model {
            products: Mutex::new(records),
            activity: Mutex::new(Activity::default()),
        }
    }

    /// Must a read that started after `ack` reflect its mutation? On every
    /// instance, from the answer on, with or without first tiers (their leases make the
    /// writer wait until every other tier heard the invalidation or stopped serving).
    fn binds(&self, ack: Acknowledgement) -> bool {
        match ack.writer {
            Writer::Unacknowledged => false,
            Writer::Instance(_) | Writer::Both => true,
        }
    }

    fn begin(&self, ids: &[i32]) -> Ticket {
        let mut activity = self.activity.lock();
        activity.in_flight += 1;
        activity.generation += 1;
        let mut products = self.products.lock();
        for id in ids {
            if let Some(record) = products.get_mut(id) {
                record.writes_in_flight += 1;
                record.generation += 1;
            }
        }
        Ticket { ids: ids.to_vec() }
    }

    /// Ends a write; `states` is what the products now hold (new ones are added for `owner`).
    fn finish(
        &self,
        ticket: Ticket,
        owner: usize,
        states: Vec<(i32, Option<ProductState>)>,
        writer: Writer,
    ) {
        let now = Instant::now();
        let mut activity = self.activity.lock();
        let mut products = self.products.lock();
        for id in &ticket.ids {
            if let Some(record) = products.get_mut(id) {
                record.writes_in_flight -= 1;
                record.generation += 1;
            }
        }
        for (id, state) in states {
            let record = products.entry(id).or_insert(Record {
                state: None,
                owner,
                writes_in_flight: 0,
                generation: 0,
                acknowledged: None,
            });
            record.state = state;
            record.owner = owner;
            record.generation += 1;
            record.acknowledged = Some(Acknowledgement { at: now, writer });
        }
        activity.in_flight -= 1;
        activity.generation += 1;
    }

    fn record(&self, id: i32) -> Option<Record> {
        self.products.lock().get(&id).cloned()
    }

    /// A product id worth reading: half the time a seeded one (cached before the snapshot).
    fn any_id(&self, rng: &mut SmallRng) -> i32 {
        let products = self.products.lock();
        if rng.random_bool(0.5) {
            return rng.random_range(1..=PRODUCTS as i32);
        }
        let index = rng.random_range(0..products.len());
        products.keys().nth(index).copied().unwrap_or(1)
    }

    /// Up to `count` distinct existing products `client` owns and nobody is writing.
    fn owned(&self, client: usize, count: usize, rng: &mut SmallRng) -> Vec<i32> {
        let products = self.products.lock();
        let candidates: Vec<i32> = products
            .iter()
            .filter(|(_, record)| {
                record.owner == client && record.state.is_some() && record.writes_in_flight == 0
            })
            .map(|(id, _)| *id)
            .collect();
        candidates.choose_multiple(rng, count).copied().collect()
    }

    /// A generation to compare after a list read, when no mutation is in flight (every
    /// acknowledged one binds a read on any instance).
    fn quiet(&self) -> Option<u64> {
        let activity = self.activity.lock();
        (activity.in_flight == 0).then_some(activity.generation)
    }

    /// Waits, up to `limit`, until no write is in flight and none began for 100 ms (a client
    /// that chose a write just before writes paused begins it without awaiting anything).
    async fn writes_settled(&self, limit: Duration) -> bool {
        let give_up = Instant::now() + limit;
        while Instant::now() < give_up {
            let before = {
                let activity = self.activity.lock();
                (activity.in_flight, activity.generation)
            };
            tokio::time::sleep(Duration::from_millis(100)).await;
            let activity = self.activity.lock();
            if before.0 == 0 && (activity.in_flight, activity.generation) == before {
                return true;
            }
        }
        false
    }

    fn still_quiet(&self, generation: u64) -> bool {
        self.activity.lock().generation == generation
    }

    fn existing(&self) -> BTreeMap<i32, ProductState> {
        self.products
            .lock()
            .iter()
            .filter_map(|(id, record)| record.state.clone().map(|state| (*id, state)))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// The oracle: the database read directly, past the cache.
// ---------------------------------------------------------------------------------------

struct Snapshot {
    products: BTreeMap<i32, ProductState>,
    categories: Vec<(i32, String)>,
}

impl Snapshot {
    async fn load(db: &DatabaseConnection) -> Result<Snapshot, DbErr> {
        let products = product::Entity::find()
            .all(db)
            .await?
            .into_iter()
            .map(|row| (row.id, stored_state(&row)))
            .collect();
        let categories = category::Entity::find()
            .all(db)
            .await?
            .into_iter()
            .map(|row| (row.id, row.name))
            .collect();
        Ok(Snapshot {
            products,
            categories,
        })
    }

    fn count_in(&self, category_id: i32) -> usize {
        self.products
            .values()
            .filter(|product| product.category_id == category_id)
            .count()
    }
}

fn stored_state(row: &product::Model) -> ProductState {
    ProductState {
        name: row.name.clone(),
        price_cents: row.price_cents,
        category_id: row.category_id,
    }
}

async fn stored(db: &DatabaseConnection, id: i32) -> Result<Option<ProductState>, DbErr> {
    Ok(product::Entity::find_by_id(id)
        .one(db)
        .await?
        .map(|row| stored_state(&row)))
}

async fn stored_named(
    db: &DatabaseConnection,
    name: &str,
) -> Result<BTreeMap<i32, ProductState>, DbErr> {
    Ok(product::Entity::find()
        .filter(product::Column::Name.eq(name))
        .all(db)
        .await?
        .iter()
        .map(|row| (row.id, stored_state(row)))
        .collect())
}

// ---------------------------------------------------------------------------------------
// Verdicts: pure comparisons of an answer with what it must say.
// ---------------------------------------------------------------------------------------

fn price_text(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

fn cents(value: &Value) -> Option<i64> {
    let price = Decimal::from_str(value.as_str()?).ok()?;
    (price * Decimal::ONE_HUNDRED).to_i64()
}

fn id_of(value: &Value) -> Option<i32> {
    value.as_str()?.parse().ok()
}

/// A product as an answer shows it: `{ id name price category { id } }`.
fn answered_product(value: &Value) -> Option<(i32, ProductState)> {
    Some((
        id_of(&value["id"])?,
        ProductState {
            name: value["name"].as_str()?.to_owned(),
            price_cents: cents(&value["price"])?,
            category_id: id_of(&value["category"]["id"])?,
        },
    ))
}

fn describe(response: &GqlResponse) -> String {
    format!("X-Cache {:?}, body {}", response.x_cache(), response.body)
}

/// The answer carries data and no error: the cache never fails a request.
fn succeeded(response: &GqlResponse) -> Result<&Value, String> {
    if response.body.get("errors").is_some() || response.status != 200 {
        return Err(format!("failed ({})", describe(response)));
    }
    Ok(response.data())
}

fn product_verdict(expected: Option<&ProductState>, response: &GqlResponse) -> Result<(), String> {
    let product = &succeeded(response)?["product"];
    let answered = if product.is_null() {
        None
    } else {
        Some(
            answered_product(product)
                .ok_or_else(|| format!("malformed: {}", describe(response)))?,
        )
    };
    if answered.as_ref().map(|(_, state)| state) == expected {
        Ok(())
    } else {
        Err(format!("expected {expected:?}, got {}", describe(response)))
    }
}

/// Which products a page read asks for.
#[derive(Clone, Debug)]
struct PageRequest {
    category_id: Option<i32>,
    price_range: Option<(i64, i64)>,
    order: &'static str,
    first: usize,
    /// The sort key and id of the last product of the previous page.
    after: Option<(i64, i32)>,
}

impl PageRequest {
    fn random(rng: &mut SmallRng, categories: &[i32]) -> PageRequest {
        let low = rng.random_range(100..50_000);
        PageRequest {
            category_id: rng
                .random_bool(0.5)
                .then(|| *categories.choose(rng).unwrap_or(&1)),
            price_range: rng
                .random_bool(0.3)
                .then(|| (low, low + rng.random_range(0..50_000))),
            order: ["ID_ASC", "PRICE_ASC", "PRICE_DESC"][rng.random_range(0..3)],
            first: rng.random_range(1..=15),
            after: None,
        }
    }

    fn variables(&self, cursor: Option<&str>) -> Value {
        let mut filter = serde_json::Map::new();
        if let Some(category_id) = self.category_id {
            filter.insert("categoryId".into(), json!(category_id.to_string()));
        }
        if let Some((low, high)) = self.price_range {
            filter.insert("minPrice".into(), json!(price_text(low)));
            filter.insert("maxPrice".into(), json!(price_text(high)));
        }
        json!({ "filter": filter, "order": self.order, "first": self.first, "after": cursor })
    }

    fn sort_key(&self, id: i32, product: &ProductState) -> (i64, i32) {
        match self.order {
            "PRICE_ASC" => (product.price_cents, id),
            "PRICE_DESC" => (-product.price_cents, -id),
            _ => (0, id),
        }
    }

    /// The whole filtered list in order, the page's products and whether more follow.
    fn expected(&self, snapshot: &Snapshot) -> (usize, Vec<(i32, ProductState)>, bool) {
        let mut matching: Vec<(i32, ProductState)> = snapshot
            .products
            .iter()
            .filter(|(_, product)| self.category_id.is_none_or(|id| product.category_id == id))
            .filter(|(_, product)| {
                self.price_range
                    .is_none_or(|(low, high)| (low..=high).contains(&product.price_cents))
            })
            .map(|(id, product)| (*id, product.clone()))
            .collect();
        matching.sort_by_key(|(id, product)| self.sort_key(*id, product));
        let total = matching.len();
        let start = self.after.map_or(0, |(key, id)| {
            let cursor = self.sort_key(
                id,
                &ProductState {
                    name: String::new(),
                    price_cents: key,
                    category_id: 0,
                },
            );
            matching
                .iter()
                .take_while(|(id, product)| self.sort_key(*id, product) <= cursor)
                .count()
        });
        let rest = &matching[start..];
        let page = rest.iter().take(self.first).cloned().collect();
        (total, page, rest.len() > self.first)
    }
}

fn page_verdict(
    request: &PageRequest,
    snapshot: &Snapshot,
    response: &GqlResponse,
) -> Result<(), String> {
    let products = &succeeded(response)?["products"];
    let answered: Option<Vec<(i32, ProductState)>> = products["edges"]
        .as_array()
        .map(|edges| {
            edges
                .iter()
                .map(|edge| answered_product(&edge["node"]))
                .collect()
        })
        .and_then(|page: Option<Vec<_>>| page);
    let (total, page, more) = request.expected(snapshot);
    let matches = answered.as_ref() == Some(&page)
        && products["totalCount"].as_u64() == Some(total as u64)
        && products["pageInfo"]["hasNextPage"].as_bool() == Some(more);
    if matches {
        Ok(())
    } else {
        let ids: Vec<i32> = page.iter().map(|(id, _)| *id).collect();
        Err(format!(
            "page {request:?}: expected totalCount {total}, hasNextPage {more}, ids {ids:?}; got {}",
            describe(response)
        ))
    }
}

fn categories_verdict(snapshot: &Snapshot, response: &GqlResponse) -> Result<(), String> {
    let expected: Vec<Value> = snapshot
        .categories
        .iter()
        .map(|(id, name)| json!({ "id": id.to_string(), "name": name, "productCount": snapshot.count_in(*id) }))
        .collect();
    if succeeded(response)?["categories"] == Value::Array(expected.clone()) {
        Ok(())
    } else {
        Err(format!("expected {expected:?}, got {}", describe(response)))
    }
}

fn category_verdict(id: i32, snapshot: &Snapshot, response: &GqlResponse) -> Result<(), String> {
    let expected = snapshot
        .categories
        .iter()
        .find(|(category_id, _)| *category_id == id)
        .map(|(_, name)| json!({ "id": id.to_string(), "name": name, "productCount": snapshot.count_in(id) }))
        .unwrap_or(Value::Null);
    if succeeded(response)?["category"] == expected {
        Ok(())
    } else {
        Err(format!("expected {expected}, got {}", describe(response)))
    }
}

fn dashboard_verdict(snapshot: &Snapshot, response: &GqlResponse) -> Result<(), String> {
    let stats = &succeeded(response)?["dashboardStats"];
    let total = snapshot.products.len();
    let sum: i64 = snapshot
        .products
        .values()
        .map(|product| product.price_cents)
        .sum();
    let average = (total > 0).then(|| {
        (Decimal::from(sum) / Decimal::from(total) / Decimal::ONE_HUNDRED)
            .round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
    });
    let answered_average = stats["avgPrice"]
        .as_str()
        .and_then(|text| Decimal::from_str(text).ok());
    let by_category: Vec<Value> = snapshot
        .categories
        .iter()
        .map(|(id, _)| json!({ "categoryId": id.to_string(), "productCount": snapshot.count_in(*id) }))
        .collect();
    let matches = stats["totalProducts"].as_u64() == Some(total as u64)
        && stats["categoriesCount"].as_u64() == Some(snapshot.categories.len() as u64)
        && answered_average == average
        && stats["productsByCategory"] == Value::Array(by_category);
    if matches {
        Ok(())
    } else {
        Err(format!(
            "expected {total} products averaging {average:?}, got {}",
            describe(response)
        ))
    }
}

/// A private result without a valid token: refused, and no data at all.
fn refusal_verdict(response: &GqlResponse) -> Result<(), String> {
    let refused = response.error_codes().first().map(String::as_str) == Some("UNAUTHENTICATED");
    let no_data = response.data().is_null() || response.data()["dashboardStats"].is_null();
    if refused && no_data {
        Ok(())
    } else {
        Err(format!("a private result escaped: {}", describe(response)))
    }
}

// ---------------------------------------------------------------------------------------
// The run: two instances, tokens, the model, and the tally of what happened.
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Tally {
    /// Per operation: how many ran, and how many of them the checker could judge.
    operations: Mutex<BTreeMap<&'static str, (u64, u64)>>,
    faults: Mutex<BTreeMap<&'static str, u64>>,
    /// In the edge run: reads Varnish answered from its cache, fetched, and mutations whose
    /// purge was still pending when they answered.
    edge: Mutex<BTreeMap<&'static str, u64>>,
    /// Answers by `X-Cache`: how often entries answered fresh, stale, or not at all.
    answers: Mutex<BTreeMap<String, u64>>,
    violations: Mutex<Vec<String>>,
}

impl Tally {
    fn print(&self, label: &str) {
        eprintln!("checker {label}:");
        for (operation, (performed, judged)) in self.operations.lock().iter() {
            eprintln!("  {operation:<24} {performed:>6} performed {judged:>6} judged");
        }
        for (fault, count) in self.faults.lock().iter() {
            eprintln!("  fault {fault:<18} {count:>6}");
        }
        for (outcome, count) in self.edge.lock().iter() {
            eprintln!("  edge {outcome:<19} {count:>6}");
        }
        for (status, count) in self.answers.lock().iter() {
            eprintln!("  answered {status:<28} {count:>6}");
        }
        let violations = self.violations.lock();
        eprintln!("  violations {:>6}", violations.len());
        for violation in violations.iter().take(20) {
            eprintln!("    {violation}");
        }
    }
}

struct Run {
    seed: u64,
    local_tier: bool,
    started: Instant,
    apps: Vec<TestApp>,
    /// Between both instances and PostgreSQL, cut now and then; `None` on SQLite.
    database: Option<TcpProxy>,
    /// The oracle's connection, past the proxy.
    oracle: DatabaseConnection,
    /// When each database cut began, and when both instances had the database back.
    cuts: Mutex<Vec<(Instant, Option<Instant>)>>,
    /// Set while writes wait for a database cut and its recovery.
    writes_paused: std::sync::atomic::AtomicBool,
    /// Two tokens per client, so identical mutations also come from different callers.
    tokens: Vec<[String; 2]>,
    reader: String,
    revoked: String,
    categories: Vec<i32>,
    model: Model,
    tally: Tally,
    /// The Varnish in front of the first instance, in the edge run.
    edge: Option<VarnishProcess>,
    /// Between the second instance and the one Redis (not on a cluster): slowed now and then,
    /// so its pub/sub messages arrive late while the first instance's writes do not.
    second_redis_path: Option<TcpProxy>,
}

impl Run {
    async fn start(seed: u64, local_tier: bool, redis: &RedisProcess) -> Run {
        Self::start_on(seed, local_tier, &redis.url(), false, None).await
    }

    /// With `edge_port`, a Varnish running the shipped VCL listens there in front of the first
    /// instance, both instances purge it, and anonymous reads sent to the first instance go
    /// through it as GETs (what a CDN caches).
    async fn start_on(
        seed: u64,
        local_tier: bool,
        url: &str,
        cluster: bool,
        edge_port: Option<u16>,
    ) -> Run {
        let (mut config, files) = test_config().await;
        let oracle_url = config.database_url.clone();
        let database = if config.is_postgres() {
            // A cut path fails requests after half a second, not the default second. Only
            // there: on SQLite a connection waits for the file's write lock, and on a loaded
            // machine that wait alone can pass half a second without anything being down.
            config.db_acquire_timeout_ms = 500;
            Some(TcpProxy::in_front_of_database(&mut config).await)
        } else {
            None
        };
        config.cache_max_ttl_secs = ENTRY_TTL_SECS;
        config.cache_stale_while_revalidate_secs = STALE_WHILE_REVALIDATE_SECS;
        config.cache_stale_if_error_secs = STALE_IF_ERROR_SECS;
        config.redis_url = Some(url.to_owned());
        config.redis_command_timeout_ms = COMMAND_TIMEOUT_MS;
        config.redis_connect_timeout_ms = 200;
        if cluster {
            // A mutation made while a primary is down waits for the promoted replica; it waits
            // for every partition's primary and one replica round trip per node.
            config.invalidation_deadline_ms = 8_000;
            config.redis_connect_timeout_ms = 1_000;
            config.redis_command_timeout_ms = 250;
        }
        config.cache_local_tier = local_tier;
        if let Some(port) = edge_port {
            config.edge_purge = catalog_api::config::EdgePurgeBackend::Varnish;
            config.edge_varnish_urls = vec![format!("http://127.0.0.1:{port}")];
            config.edge_repurge_after_ms = 300;
        }
        let plan = catalog_api::db::seed::SeedPlan {
            categories: CATEGORIES,
            products: PRODUCTS,
        };
        let first = TestApp::start(config.clone(), files, Some(plan)).await;
        let second_redis_path = match url.strip_prefix("redis://") {
            Some(address) if !cluster => {
                let proxy = TcpProxy::start(address.to_owned()).await;
                config.redis_url = Some(format!("redis://{}", proxy.address));
                Some(proxy)
            }
            _ => None,
        };
        let second = TestApp::start(config, None, None).await;
        let mut tokens = Vec::new();
        for client in 0..CLIENTS {
            tokens.push([
                first.create_token(&format!("client {client} a")).await,
                first.create_token(&format!("client {client} b")).await,
            ]);
        }
        let reader = first.create_token("reader").await;
        let oracle = match database {
            Some(_) => sea_orm::Database::connect(oracle_url.as_str())
                .await
                .expect("the oracle connects past the proxy"),
            None => first.state.db.clone(),
        };
        let snapshot = Snapshot::load(&first.state.db)
            .await
            .expect("read the seed");
        let categories = snapshot.categories.iter().map(|(id, _)| *id).collect();
        let edge = match edge_port {
            Some(port) => Some(VarnishProcess::start(port, first.address).await),
            None => None,
        };
        let apps = vec![first, second];
        let revoked = revoked_token(&apps).await;
        Run {
            seed,
            local_tier,
            started: Instant::now(),
            apps,
            database,
            oracle,
            cuts: Mutex::new(Vec::new()),
            writes_paused: std::sync::atomic::AtomicBool::new(false),
            tokens,
            reader,
            revoked,
            categories,
            model: Model::new(snapshot.products),
            tally: Tally::default(),
            edge,
            second_redis_path,
        }
    }

    fn label(&self) -> String {
        if self.local_tier {
            "with the first tier".into()
        } else {
            "without the first tier".into()
        }
    }

    fn writes_allowed(&self) -> bool {
        let second = Duration::from_secs(1).as_millis();
        !self.writes_paused.load(std::sync::atomic::Ordering::SeqCst)
            && self.started.elapsed().as_millis() % second < WRITES_PER_SECOND.as_millis()
    }

    /// The oracle: the database read directly, past the proxy the cuts go through.
    fn db(&self) -> &DatabaseConnection {
        &self.oracle
    }

    /// Whether a read that started at `started` failed only for want of the database during
    /// a cut (or its recovery): then it is counted, not judged. Any other failure, and any
    /// answer with data, is judged as always.
    fn failed_by_cut(
        &self,
        operation: &'static str,
        started: Instant,
        response: &GqlResponse,
    ) -> bool {
        let codes = response.error_codes();
        let unavailable = !codes.is_empty()
            && codes
                .iter()
                .all(|code| code == "SERVICE_UNAVAILABLE" || code == "TIMEOUT");
        let now = Instant::now();
        let during_a_cut = self.cuts.lock().iter().any(|(cut, back)| {
            *cut <= now && back.is_none_or(|back| started <= back + CUT_RECOVERY)
        });
        if !(unavailable && during_a_cut) {
            return false;
        }
        self.counted(operation, false);
        *self
            .tally
            .faults
            .lock()
            .entry("reads failed by a cut")
            .or_default() += 1;
        true
    }

    fn violation(&self, what: String) {
        let message = format!("[seed {}, {}] {what}", self.seed, self.label());
        eprintln!(
            "VIOLATION {} {message}",
            chrono::Utc::now().format("%H:%M:%S%.3f")
        );
        self.tally.violations.lock().push(message);
    }

    fn counted(&self, operation: &'static str, judged: bool) {
        let mut operations = self.tally.operations.lock();
        let entry = operations.entry(operation).or_default();
        entry.0 += 1;
        entry.1 += u64::from(judged);
    }

    fn judge(&self, operation: &'static str, verdict: Result<(), String>) {
        self.counted(operation, true);
        if let Err(what) = verdict {
            self.violation(format!("{operation}: {what}"));
        }
    }

    /// Sends one request; a transport failure is a failed response, never a panic.
    async fn send(
        &self,
        instance: usize,
        token: Option<&str>,
        query: &str,
        variables: Value,
    ) -> GqlResponse {
        let app = &self.apps[instance];
        let mut request = match &self.edge {
            Some(varnish) if instance == 0 && token.is_none() && query.starts_with("query") => {
                let variables = variables.to_string();
                let parameters = [("query", query), ("variables", variables.as_str())];
                app.client.get(varnish.url("/graphql")).query(&parameters)
            }
            _ => app
                .client
                .post(app.url("/graphql"))
                .json(&json!({ "query": query, "variables": variables })),
        };
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        match request.send().await {
            Ok(response) => {
                let response = TestApp::read(response).await;
                let edge = match response.header("x-edge-cache") {
                    Some("HIT") => Some("hit"),
                    Some(_) => Some("fetch"),
                    None if response.body["extensions"]["edgePurge"] == "PENDING" => {
                        Some("purge pending")
                    }
                    None => None,
                };
                if let Some(edge) = edge {
                    *self.tally.edge.lock().entry(edge).or_default() += 1;
                }
                let status = match response.header("cache-status") {
                    Some(status) if status.contains("detail=") => {
                        let detail = status.rsplit("detail=").next().unwrap_or_default();
                        format!("{} {detail}", response.x_cache())
                    }
                    _ => response.x_cache().to_owned(),
                };
                *self.tally.answers.lock().entry(status).or_default() += 1;
                response
            }
            Err(error) => GqlResponse {
                status: reqwest::StatusCode::BAD_GATEWAY,
                headers: Default::default(),
                body: json!({ "errors": [{ "message": error.to_string() }] }),
            },
        }
    }

    /// An anonymous `product(id)` read on `instance`.
    async fn product_by_id(&self, instance: usize, id: impl ToString) -> GqlResponse {
        let variables = json!({ "id": id.to_string() });
        self.send(instance, None, PRODUCT_BY_ID, variables).await
    }

    async fn snapshot(&self) -> Option<Snapshot> {
        match Snapshot::load(self.db()).await {
            Ok(snapshot) => Some(snapshot),
            Err(error) => {
                self.violation(format!("the oracle cannot read the database: {error}"));
                None
            }
        }
    }

    /// Fills both instances' caches with every seeded product before the first snapshot, so
    /// a restore from it has entries to bring back.
    async fn warm_up(&self) {
        for instance in 0..INSTANCES {
            for id in 1..=PRODUCTS {
                self.product_by_id(instance, id).await;
            }
            self.send(instance, Some(&self.reader), DASHBOARD, json!({}))
                .await;
        }
    }

    /// After the last fault and write: every product reads as the database holds it, on both
    /// instances, and the database holds exactly what the acknowledged writes said.
    async fn final_sweep(&self) {
        let Some(snapshot) = self.snapshot().await else {
            return;
        };
        let expected = self.model.existing();
        if snapshot.products != expected {
            let missing: Vec<_> = expected
                .keys()
                .filter(|id| !snapshot.products.contains_key(id))
                .collect();
            let extra: Vec<_> = snapshot
                .products
                .keys()
                .filter(|id| !expected.contains_key(id))
                .collect();
            self.violation(format!(
                "the database is not what the acknowledged writes made: missing {missing:?}, unexpected {extra:?}"
            ));
        }
        let ids: Vec<i32> = self.model.products.lock().keys().copied().collect();
        for instance in 0..INSTANCES {
            for id in &ids {
                let response = self.product_by_id(instance, *id).await;
                let verdict = product_verdict(snapshot.products.get(id), &response)
                    .map_err(|what| format!("product {id} on instance {instance}: {what}"));
                self.judge("final read", verdict);
            }
        }
    }
}

/// A token that read its private result on both instances and was then revoked, as
/// `catalog-api token revoke` does: it must never read anything again.
async fn revoked_token(apps: &[TestApp]) -> String {
    let (token, record) = catalog_api::auth::create(&apps[0].state.db, "revoked")
        .await
        .expect("token");
    for app in apps {
        app.gql_as(&token, DASHBOARD, json!({})).await.assert_ok();
    }
    let hash = catalog_api::auth::revoke(&apps[0].state.db, record.id)
        .await
        .expect("revoke");
    for app in apps {
        if let Some(cache) = &app.state.cache {
            // Set-up, not a judged step: a cluster still settling after the previous
            // configuration's failover may time out a command for a few seconds.
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            while let Err(error) = cache.forget_token(&hash).await {
                assert!(
                    std::time::Instant::now() < deadline,
                    "forget the token: {error:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    token
}

// ---------------------------------------------------------------------------------------
// Clients: a seeded random mix of reads and mutations.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Operation {
    ReadProduct,
    ReadPage,
    ReadCategory,
    ReadCategories,
    ReadDashboard,
    ReadDashboardAnonymously,
    ReadDashboardRevoked,
    Create,
    Update,
    Delete,
    BulkCreate,
    BulkUpdatePrices,
    IdenticalCreates,
    IdenticalBulkCreates,
    IdenticalDeletes,
}

const MIX: &[(Operation, u32)] = &[
    (Operation::ReadProduct, 30),
    (Operation::ReadPage, 14),
    (Operation::ReadCategory, 5),
    (Operation::ReadCategories, 4),
    (Operation::ReadDashboard, 5),
    (Operation::ReadDashboardAnonymously, 2),
    (Operation::ReadDashboardRevoked, 2),
    (Operation::Create, 5),
    (Operation::Update, 14),
    (Operation::Delete, 3),
    (Operation::BulkCreate, 2),
    (Operation::BulkUpdatePrices, 3),
    (Operation::IdenticalCreates, 1),
    (Operation::IdenticalBulkCreates, 1),
    (Operation::IdenticalDeletes, 1),
];

impl Operation {
    fn pick(rng: &mut SmallRng, writes_allowed: bool) -> Operation {
        MIX.iter()
            .filter(|(operation, _)| writes_allowed || !operation.writes())
            .collect::<Vec<_>>()
            .choose_weighted(rng, |(_, weight)| *weight)
            .map(|(operation, _)| *operation)
            .unwrap_or(Operation::ReadProduct)
    }

    fn writes(self) -> bool {
        !matches!(
            self,
            Operation::ReadProduct
                | Operation::ReadPage
                | Operation::ReadCategory
                | Operation::ReadCategories
                | Operation::ReadDashboard
                | Operation::ReadDashboardAnonymously
                | Operation::ReadDashboardRevoked
        )
    }
}

async fn client_loop(run: Arc<Run>, client: usize, deadline: Instant) {
    let mut rng = SmallRng::seed_from_u64(run.seed ^ (client as u64 + 1).wrapping_mul(0x9E37_79B9));
    let mut client = Client {
        run: &run,
        number: client,
        created: 0,
    };
    while Instant::now() < deadline {
        let operation = Operation::pick(&mut rng, run.writes_allowed());
        client.perform(operation, &mut rng).await;
    }
}

struct Client<'run> {
    run: &'run Run,
    number: usize,
    /// Names this client made so far: every create gets a name of its own.
    created: u64,
}

impl Client<'_> {
    async fn perform(&mut self, operation: Operation, rng: &mut SmallRng) {
        let instance = rng.random_range(0..INSTANCES);
        match operation {
            Operation::ReadProduct => {
                let id = self.run.model.any_id(rng);
                self.read_product(instance, id).await;
            }
            Operation::ReadPage => self.read_pages(instance, rng).await,
            Operation::ReadCategory => {
                let id = *self.run.categories.choose(rng).unwrap_or(&1);
                self.read_aggregate(instance, "read category", AggregateRead::Category(id))
                    .await;
            }
            Operation::ReadCategories => {
                self.read_aggregate(instance, "read categories", AggregateRead::Categories)
                    .await;
            }
            Operation::ReadDashboard => {
                self.read_aggregate(instance, "read dashboard", AggregateRead::Dashboard)
                    .await;
            }
            Operation::ReadDashboardAnonymously => {
                self.read_refused("read dashboard anonymously", instance, None)
                    .await;
            }
            Operation::ReadDashboardRevoked => {
                let token = Some(self.run.revoked.as_str());
                self.read_refused("read dashboard revoked", instance, token)
                    .await;
            }
            Operation::Create => self.create(instance, rng, 1, 1).await,
            Operation::BulkCreate => {
                let size = rng.random_range(2..=5);
                self.create(instance, rng, size, 1).await;
            }
            Operation::IdenticalCreates => {
                let copies = rng.random_range(8..=24);
                self.create(instance, rng, 1, copies).await;
            }
            Operation::IdenticalBulkCreates => {
                let copies = rng.random_range(4..=8);
                self.create(instance, rng, 2, copies).await;
            }
            Operation::Update => self.update(instance, rng).await,
            Operation::BulkUpdatePrices => self.update_prices(instance, rng).await,
            Operation::Delete => self.delete(instance, rng, 1).await,
            Operation::IdenticalDeletes => {
                let copies = rng.random_range(4..=8);
                self.delete(instance, rng, copies).await;
            }
        }
    }

    fn token(&self, rng: &mut SmallRng) -> &str {
        &self.run.tokens[self.number][rng.random_range(0..2)]
    }

    /// A private result without a valid token: refused, whatever the cache holds (or, during
    /// a database cut, failed for want of the database to check the token against).
    async fn read_refused(&self, operation: &'static str, instance: usize, token: Option<&str>) {
        let started = Instant::now();
        let response = self.run.send(instance, token, DASHBOARD, json!({})).await;
        if !self.run.failed_by_cut(operation, started, &response) {
            self.run.judge(operation, refusal_verdict(&response));
        }
    }

    /// A product read that began after the owner's latest acknowledged write, and overlapped
    /// no write of it, must show that write.
    async fn read_product(&self, instance: usize, id: i32) {
        let model = &self.run.model;
        let before = model.record(id);
        let started = Instant::now();
        let response = self.run.product_by_id(instance, id).await;
        let after = model.record(id);
        if self.run.failed_by_cut("read product", started, &response) {
            return;
        }
        let Some(before) = before else {
            return self.run.counted("read product", false);
        };
        let overlapped = before.writes_in_flight > 0
            || after.is_none_or(|after| after.generation != before.generation);
        let bound = before.acknowledged.is_none_or(|ack| model.binds(ack));
        if overlapped || !bound {
            if let Err(what) = succeeded(&response) {
                self.run.violation(format!("read product {id}: {what}"));
            }
            return self.run.counted("read product", false);
        }
        let verdict = product_verdict(before.state.as_ref(), &response).map_err(|what| {
            format!(
                "product {id} on instance {instance}, {:?} after its write on instance {:?}: {what}",
                before.acknowledged.map(|ack| started - ack.at),
                before.acknowledged.map(|ack| ack.writer),
            )
        });
        self.run.judge("read product", verdict);
    }

    /// A page, then the next one by its cursor; each judged against the database when no
    /// mutation could have changed the answer.
    async fn read_pages(&self, instance: usize, rng: &mut SmallRng) {
        let mut request = PageRequest::random(rng, &self.run.categories);
        let mut cursor: Option<String> = None;
        for _ in 0..rng.random_range(1..=2) {
            let variables = request.variables(cursor.as_deref());
            let response = self
                .judged_read(
                    instance,
                    "read page",
                    PRODUCT_PAGE,
                    variables,
                    None,
                    |snapshot, response| page_verdict(&request, snapshot, response),
                )
                .await;
            let products = &response.data()["products"];
            let last = products["edges"]
                .as_array()
                .and_then(|edges| edges.last())
                .and_then(|edge| answered_product(&edge["node"]));
            match (products["pageInfo"]["endCursor"].as_str(), last) {
                (Some(end), Some((id, product))) if products["pageInfo"]["hasNextPage"] == true => {
                    cursor = Some(end.to_owned());
                    request.after = Some((product.price_cents, id));
                }
                _ => return,
            }
        }
    }

    async fn read_aggregate(&self, instance: usize, operation: &'static str, read: AggregateRead) {
        let (query, variables, token) = match read {
            AggregateRead::Category(id) => (CATEGORY_COUNT, json!({ "id": id.to_string() }), None),
            AggregateRead::Categories => (ALL_CATEGORIES, json!({}), None),
            AggregateRead::Dashboard => (DASHBOARD, json!({}), Some(self.run.reader.as_str())),
        };
        self.judged_read(
            instance,
            operation,
            query,
            variables,
            token,
            |snapshot, response| match read {
                AggregateRead::Category(id) => category_verdict(id, snapshot, response),
                AggregateRead::Categories => categories_verdict(snapshot, response),
                AggregateRead::Dashboard => dashboard_verdict(snapshot, response),
            },
        )
        .await;
    }

    /// Sends a read that any mutation may change, then reads the database; judges the answer
    /// only if no mutation was in flight or recent enough to be allowed to be missed.
    async fn judged_read(
        &self,
        instance: usize,
        operation: &'static str,
        query: &str,
        variables: Value,
        token: Option<&str>,
        verdict: impl FnOnce(&Snapshot, &GqlResponse) -> Result<(), String>,
    ) -> GqlResponse {
        let started = Instant::now();
        let quiet = self.run.model.quiet();
        let response = self.run.send(instance, token, query, variables).await;
        if self.run.failed_by_cut(operation, started, &response) {
            return response;
        }
        let snapshot = match quiet {
            Some(_) => self.run.snapshot().await,
            None => None,
        };
        match (quiet, snapshot) {
            (Some(generation), Some(snapshot)) if self.run.model.still_quiet(generation) => {
                let verdict = verdict(&snapshot, &response)
                    .map_err(|what| format!("on instance {instance}: {what}"));
                self.run.judge(operation, verdict);
            }
            _ => {
                if let Err(what) = succeeded(&response) {
                    self.run.violation(format!("{operation}: {what}"));
                }
                self.run.counted(operation, false);
            }
        }
        response
    }

    fn new_product(&mut self, rng: &mut SmallRng) -> ProductState {
        self.created += 1;
        ProductState {
            name: format!(
                "check {} client {} #{}",
                self.run.seed % 1_000_000,
                self.number,
                self.created
            ),
            price_cents: rng.random_range(100..100_000),
            category_id: *self.run.categories.choose(rng).unwrap_or(&1),
        }
    }

    /// `copies` identical requests creating `size` products each, sent at once: each
    /// request must create its own rows, exactly once, as its answer says.
    async fn create(&mut self, instance: usize, rng: &mut SmallRng, size: usize, copies: usize) {
        let products: Vec<ProductState> = (0..size).map(|_| self.new_product(rng)).collect();
        let inputs: Vec<Value> = products
            .iter()
            .map(|product| {
                json!({
                    "name": product.name,
                    "price": price_text(product.price_cents),
                    "categoryId": product.category_id.to_string(),
                })
            })
            .collect();
        let (query, variables, field) = if size == 1 {
            (CREATE, json!({ "input": inputs[0] }), "createProduct")
        } else {
            (
                BULK_CREATE,
                json!({ "inputs": inputs }),
                "bulkCreateProducts",
            )
        };
        let operation = match (size, copies) {
            (1, 1) => "create",
            (_, 1) => "bulk create",
            (1, _) => "identical creates",
            _ => "identical bulk creates",
        };
        let ticket = self.run.model.begin(&[]);
        let (answers, writer) = self
            .send_copies(instance, rng, copies, query, &variables)
            .await;
        let mut answered = BTreeMap::new();
        let mut failures = Vec::new();
        for response in &answers {
            let created = succeeded(response).ok().and_then(|data| {
                let value = &data[field];
                if size == 1 {
                    answered_product(value).map(|product| vec![product])
                } else {
                    value
                        .as_array()
                        .and_then(|list| list.iter().map(answered_product).collect())
                }
            });
            match created {
                Some(created) if created.len() == size => answered.extend(created),
                _ => failures.push(describe(response)),
            }
        }
        let mut stored = BTreeMap::new();
        for product in &products {
            match stored_named(self.run.db(), &product.name).await {
                Ok(rows) => stored.extend(rows),
                Err(error) => self.run.violation(format!("{operation}: oracle: {error}")),
            }
        }
        let writer = if failures.is_empty() {
            writer
        } else {
            Writer::Unacknowledged
        };
        let states = stored
            .iter()
            .map(|(id, state)| (*id, Some(state.clone())))
            .collect();
        self.run.model.finish(ticket, self.number, states, writer);

        let mut problems = Vec::new();
        if !failures.is_empty() {
            problems.push(format!(
                "{} of {copies} failed: {}",
                failures.len(),
                failures.join("; ")
            ));
        }
        let expected_rows = size * copies;
        let expected_products = expected_rows - failures.len() * size;
        if answered.len() != expected_products {
            problems.push(format!(
                "{copies} identical requests answered {} distinct products, expected {expected_products}",
                answered.len(),
            ));
        }
        if stored.len() != answered.len() {
            problems.push(format!(
                "{} rows exist for {} acknowledged products",
                stored.len(),
                answered.len()
            ));
        }
        for (id, product) in &answered {
            if stored.get(id) != Some(product) {
                problems.push(format!(
                    "product {id} answered {product:?}, stored {:?}",
                    stored.get(id)
                ));
            }
            if !products.contains(product) {
                problems.push(format!(
                    "product {id} answered {product:?}, not what was sent"
                ));
            }
        }
        self.run.judge(operation, verdict_of(problems));
    }

    async fn send_copies(
        &self,
        instance: usize,
        rng: &mut SmallRng,
        copies: usize,
        query: &str,
        variables: &Value,
    ) -> (Vec<GqlResponse>, Writer) {
        let spread = copies > 1 && rng.random_bool(0.5);
        let requests: Vec<_> = (0..copies)
            .map(|copy| {
                let token = self.run.tokens[self.number][copy % 2].as_str();
                let instance = if spread { copy % INSTANCES } else { instance };
                self.run
                    .send(instance, Some(token), query, variables.clone())
            })
            .collect();
        let writer = if spread {
            Writer::Both
        } else {
            Writer::Instance(instance)
        };
        (join_all(requests).await, writer)
    }

    /// Changes some fields of an owned product; the answer and the database must agree with
    /// the change.
    async fn update(&mut self, instance: usize, rng: &mut SmallRng) {
        let Some(&id) = self.run.model.owned(self.number, 1, rng).first() else {
            return self.create(instance, rng, 1, 1).await;
        };
        let Some(before) = self.run.model.record(id).and_then(|record| record.state) else {
            return;
        };
        let fresh = self.new_product(rng);
        let mut expected = before.clone();
        let mut input = serde_json::Map::new();
        if rng.random_bool(0.7) {
            expected.price_cents = fresh.price_cents;
            input.insert("price".into(), json!(price_text(fresh.price_cents)));
        }
        if rng.random_bool(0.3) {
            expected.name = fresh.name;
            input.insert("name".into(), json!(expected.name));
        }
        if input.is_empty() || rng.random_bool(0.2) {
            expected.category_id = fresh.category_id;
            input.insert("categoryId".into(), json!(fresh.category_id.to_string()));
        }
        // Half the updates are read back at once on the other instance, which has just read
        // the product (into its first tier, when it has one): the read its tier must not
        // answer from before the write.
        let other_instance = rng.random_bool(0.5).then_some((instance + 1) % INSTANCES);
        if let Some(other) = other_instance {
            self.read_product(other, id).await;
        }
        let token = self.token(rng).to_owned();
        let variables = json!({ "id": id.to_string(), "input": input });
        let ticket = self.run.model.begin(&[id]);
        let response = self
            .run
            .send(instance, Some(&token), UPDATE, variables)
            .await;
        let answered = succeeded(&response)
            .ok()
            .and_then(|data| answered_product(&data["updateProduct"]));
        self.settle(
            "update",
            ticket,
            instance,
            vec![(id, Some(expected))],
            answered.into_iter().collect(),
            &response,
        )
        .await;
        if let Some(other) = other_instance {
            self.read_product(other, id).await;
        } else if rng.random_bool(0.5) {
            // Read your write, on either instance, right after the answer.
            self.read_product(rng.random_range(0..INSTANCES), id).await;
        }
    }

    async fn update_prices(&mut self, instance: usize, rng: &mut SmallRng) {
        let ids = self
            .run
            .model
            .owned(self.number, rng.random_range(2..=5), rng);
        if ids.is_empty() {
            return;
        }
        let mut expected = Vec::new();
        let mut updates = Vec::new();
        for id in &ids {
            let Some(mut state) = self.run.model.record(*id).and_then(|record| record.state) else {
                continue;
            };
            state.price_cents = rng.random_range(100..100_000);
            updates.push(json!({ "id": id.to_string(), "price": price_text(state.price_cents) }));
            expected.push((*id, Some(state)));
        }
        let token = self.token(rng).to_owned();
        let ticket = self.run.model.begin(&ids);
        let response = self
            .run
            .send(
                instance,
                Some(&token),
                BULK_PRICES,
                json!({ "updates": updates }),
            )
            .await;
        let answered: Vec<(i32, ProductState)> = succeeded(&response)
            .ok()
            .and_then(|data| data["bulkUpdatePrices"].as_array().cloned())
            .map(|list| list.iter().filter_map(answered_product).collect())
            .unwrap_or_default();
        self.settle(
            "bulk update prices",
            ticket,
            instance,
            expected,
            answered,
            &response,
        )
        .await;
    }

    /// Ends a write of known products: the answer must be `expected`, and so must the database.
    /// The model takes what the database holds, so one failure cannot cascade into others.
    async fn settle(
        &self,
        operation: &'static str,
        ticket: Ticket,
        instance: usize,
        expected: Vec<(i32, Option<ProductState>)>,
        answered: Vec<(i32, ProductState)>,
        response: &GqlResponse,
    ) {
        let acknowledged = succeeded(response).is_ok();
        let mut problems = Vec::new();
        if !acknowledged {
            problems.push(format!("failed: {}", describe(response)));
        }
        let expected_answer: Vec<(i32, ProductState)> = expected
            .iter()
            .filter_map(|(id, state)| state.clone().map(|state| (*id, state)))
            .collect();
        let mut answered = answered;
        answered.sort_by_key(|(id, _)| *id);
        let mut expected_answer = expected_answer;
        expected_answer.sort_by_key(|(id, _)| *id);
        if acknowledged && answered != expected_answer {
            problems.push(format!(
                "answered {answered:?}, expected {expected_answer:?}"
            ));
        }
        // Acknowledged at once, so a read right after the answer is bound by it; the database
        // is compared afterwards.
        let states = if acknowledged {
            expected.clone()
        } else {
            Vec::new()
        };
        let writer = if acknowledged {
            Writer::Instance(instance)
        } else {
            Writer::Unacknowledged
        };
        self.run.model.finish(ticket, self.number, states, writer);
        for (id, state) in &expected {
            match stored(self.run.db(), *id).await {
                Ok(row) if acknowledged && &row != state => {
                    problems.push(format!(
                        "product {id}: acknowledged {state:?}, stored {row:?}"
                    ));
                    self.resync(*id, row);
                }
                Ok(row) if !acknowledged => {
                    if self.run.model.record(*id).and_then(|record| record.state) != row {
                        problems.push(format!("product {id}: a failed write was stored: {row:?}"));
                    }
                    self.resync(*id, row);
                }
                Ok(_) => {}
                Err(error) => problems.push(format!("oracle: {error}")),
            }
        }
        self.run.judge(operation, verdict_of(problems));
    }

    /// Makes the model hold what the database holds, bound on every instance after the delay.
    fn resync(&self, id: i32, state: Option<ProductState>) {
        let ticket = self.run.model.begin(&[id]);
        self.run.model.finish(
            ticket,
            self.number,
            vec![(id, state)],
            Writer::Unacknowledged,
        );
    }

    /// `copies` identical deletes of one owned product at once: exactly one deletes it, the
    /// others answer NOT_FOUND.
    async fn delete(&mut self, instance: usize, rng: &mut SmallRng, copies: usize) {
        let Some(&id) = self.run.model.owned(self.number, 1, rng).first() else {
            return;
        };
        let operation = if copies == 1 {
            "delete"
        } else {
            "identical deletes"
        };
        let ticket = self.run.model.begin(&[id]);
        let (answers, writer) = self
            .send_copies(
                instance,
                rng,
                copies,
                DELETE,
                &json!({ "id": id.to_string() }),
            )
            .await;
        let deleted = answers
            .iter()
            .filter(|response| {
                succeeded(response).is_ok_and(|data| id_of(&data["deleteProduct"]) == Some(id))
            })
            .count();
        let not_found = answers
            .iter()
            .filter(|response| {
                response.error_codes().first().map(String::as_str) == Some("NOT_FOUND")
            })
            .count();
        let row = stored(self.run.db(), id).await;
        let writer = if deleted >= 1 {
            writer
        } else {
            Writer::Unacknowledged
        };
        let state = match &row {
            Ok(row) => row.clone(),
            Err(_) => None,
        };
        self.run
            .model
            .finish(ticket, self.number, vec![(id, state)], writer);
        let mut problems = Vec::new();
        if deleted != 1 || not_found != copies - 1 {
            let answers: Vec<String> = answers.iter().map(describe).collect();
            problems.push(format!(
                "{copies} identical deletes of product {id}: {deleted} deleted it, {not_found} answered NOT_FOUND (expected 1 and {}): {}",
                copies - 1,
                answers.join("; ")
            ));
        }
        match row {
            Ok(None) => {}
            Ok(Some(row)) => problems.push(format!("product {id} is still stored: {row:?}")),
            Err(error) => problems.push(format!("oracle: {error}")),
        }
        self.run.judge(operation, verdict_of(problems));
    }
}

#[derive(Clone, Copy)]
enum AggregateRead {
    Category(i32),
    Categories,
    Dashboard,
}

fn verdict_of(problems: Vec<String>) -> Result<(), String> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

// ---------------------------------------------------------------------------------------
// Faults: injected on a seeded schedule until the deadline; Redis is whole again after.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Killed, down for a while, restarted empty.
    Restart,
    /// Killed and restarted from the last snapshot: old entries and counters come back.
    RestoreSnapshot,
    /// Frozen for longer than the command timeout, then resumed.
    Stall,
    /// `catalog-api cache clear`.
    Clear,
    /// Every pub/sub connection closed.
    KillSubscriptions,
    /// Not a fault: a snapshot for a later restore.
    Save,
    /// The second instance's path to Redis delivers everything `SLOW_PATH` late for a while:
    /// its pub/sub messages trail the first instance's answers.
    SlowPath,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Restart => "restart empty",
            Fault::RestoreSnapshot => "restore snapshot",
            Fault::Stall => "stall",
            Fault::Clear => "cache clear",
            Fault::KillSubscriptions => "kill subscriptions",
            Fault::Save => "save snapshot",
            Fault::SlowPath => "slow path to the second instance",
        }
    }
}

/// The seeded fault schedule both checks follow: every fault once a round, in shuffled order,
/// each after a pause jittered around `interval`, until the deadline. Injecting a fault may draw
/// from the same `rng`, so a seed replays the whole sequence.
struct FaultSchedule<F> {
    rng: SmallRng,
    faults: Vec<F>,
    round: Vec<F>,
    interval: Duration,
    deadline: Instant,
}

impl<F: Copy> FaultSchedule<F> {
    fn new(seed: u64, faults: &[F], interval: Duration, deadline: Instant) -> Self {
        FaultSchedule {
            rng: SmallRng::seed_from_u64(seed.rotate_left(17)),
            faults: faults.to_vec(),
            round: Vec::new(),
            interval,
            deadline,
        }
    }

    /// Waits for the next fault's turn; `None` once the deadline has come.
    async fn next(&mut self) -> Option<F> {
        if self.round.is_empty() {
            self.round = self.faults.clone();
            self.round.shuffle(&mut self.rng);
        }
        // The schedule's pace, not a synchronisation: faults come at jittered intervals.
        let pause = self.interval.mul_f64(self.rng.random_range(0.6..1.4));
        if Instant::now() + pause >= self.deadline {
            tokio::time::sleep_until(self.deadline.into()).await;
            return None;
        }
        tokio::time::sleep(pause).await;
        self.round.pop()
    }
}

/// Cuts the path between both instances and PostgreSQL now and then, until the deadline
/// (nothing on SQLite). Writes pause first and resume once both instances have the database
/// back: the model judges acknowledged writes, and a write the cut failed would be a failure
/// to explain, not a read to judge. While the path is cut, entries go on expiring: a read is
/// answered by a fresh entry, a stale one (either window), or fails with SERVICE_UNAVAILABLE
/// (excused, `Run::failed_by_cut`); whatever answers is judged as always.
async fn cut_the_database(run: &Run, deadline: Instant) {
    let Some(proxy) = &run.database else {
        return;
    };
    let mut rng = SmallRng::seed_from_u64(run.seed.rotate_left(29));
    loop {
        // The schedule's pace, not a synchronisation; a cut ends well before the deadline.
        let pause = CUT_INTERVAL.mul_f64(rng.random_range(0.6..1.4));
        if Instant::now() + pause + CUT + Duration::from_secs(2) >= deadline {
            return;
        }
        tokio::time::sleep(pause).await;
        run.writes_paused
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if !run.model.writes_settled(Duration::from_secs(15)).await {
            run.violation("writes did not settle within 15 s for a database cut".into());
        }
        eprintln!(
            "checker: {} fault database cut",
            chrono::Utc::now().format("%H:%M:%S%.3f")
        );
        proxy.cut();
        run.cuts.lock().push((Instant::now(), None));
        // The fault's length: entries expire while it lasts.
        tokio::time::sleep(CUT).await;
        proxy.restore();
        let back = crate::support::helpers::eventually(Duration::from_secs(10), || async {
            let mut ready = true;
            for app in &run.apps {
                let answer = app.client.get(app.url("/readyz")).send().await;
                ready &= answer.is_ok_and(|answer| answer.status() == 200);
            }
            ready
        })
        .await;
        if !back {
            run.violation("the instances did not get the database back within 10 s".into());
        }
        if let Some(cut) = run.cuts.lock().last_mut() {
            cut.1 = Some(Instant::now());
        }
        run.writes_paused
            .store(false, std::sync::atomic::Ordering::SeqCst);
        *run.tally.faults.lock().entry("database cut").or_default() += 1;
    }
}

/// The cluster's fault schedule: a primary killed, a failover, `cache clear`, closed
/// subscriptions, at the same jittered pace.
async fn inject_cluster_faults(run: &Run, cluster: &mut RedisCluster, deadline: Instant) {
    let faults = [
        "kill a primary",
        "cluster failover",
        "cache clear",
        "kill subscriptions",
    ];
    let mut schedule = FaultSchedule::new(run.seed, &faults, CLUSTER_FAULT_INTERVAL, deadline);
    while let Some(fault) = schedule.next().await {
        if fault != "cache clear" {
            eprintln!(
                "checker: {} fault {fault}",
                chrono::Utc::now().format("%H:%M:%S%.3f")
            );
        }
        let rng = &mut schedule.rng;
        match fault {
            "kill a primary" => {
                cluster.kill_primary(rng.random_range(0..3)).await;
            }
            "cluster failover" => {
                cluster.failover(rng.random_range(0..3)).await;
            }
            "cache clear" => inject(run, None, Fault::Clear, rng).await,
            _ => cluster.kill_subscriptions().await,
        }
        *run.tally.faults.lock().entry(fault).or_default() += 1;
    }
}

async fn inject_faults(run: &Run, redis: &mut RedisProcess, deadline: Instant) {
    let faults = [
        Fault::Restart,
        Fault::RestoreSnapshot,
        Fault::Stall,
        Fault::Clear,
        Fault::KillSubscriptions,
        Fault::Save,
        Fault::SlowPath,
    ];
    let mut schedule = FaultSchedule::new(run.seed, &faults, FAULT_INTERVAL, deadline);
    while let Some(fault) = schedule.next().await {
        inject(run, Some(&mut *redis), fault, &mut schedule.rng).await;
        *run.tally.faults.lock().entry(fault.name()).or_default() += 1;
    }
}

/// Injects a fault; `redis` is `None` on a cluster, where only `Clear` comes through here.
async fn inject(run: &Run, redis: Option<&mut RedisProcess>, fault: Fault, rng: &mut SmallRng) {
    eprintln!(
        "checker: {} fault {}",
        chrono::Utc::now().format("%H:%M:%S%.3f"),
        fault.name()
    );
    if let Fault::Clear = fault {
        let app = &run.apps[rng.random_range(0..INSTANCES)];
        if let Some(cache) = &app.state.cache
            && let Err(error) = cache.storage().clear().await
        {
            eprintln!("checker: cache clear failed: {error}");
        }
        return;
    }
    let Some(redis) = redis else { return };
    match fault {
        Fault::Restart => {
            redis.kill().await;
            tokio::time::sleep(OUTAGE).await;
            redis.restart().await;
        }
        Fault::RestoreSnapshot => redis.restart_from_snapshot().await,
        Fault::Stall => {
            redis.pause();
            tokio::time::sleep(STALL).await;
            redis.resume();
        }
        Fault::Clear => {}
        Fault::KillSubscriptions => {
            if let Err(error) = redis.kill_subscriptions().await {
                eprintln!("checker: CLIENT KILL failed: {error}");
            }
        }
        Fault::Save => {
            if let Err(error) = redis.save().await {
                eprintln!("checker: SAVE failed: {error}");
            }
        }
        Fault::SlowPath => {
            if let Some(path) = &run.second_redis_path {
                path.slow_down(SLOW_PATH);
                tokio::time::sleep(SLOWED_FOR).await;
                path.slow_down(Duration::ZERO);
            }
        }
    }
}
