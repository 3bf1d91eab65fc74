//! The optional in-process first tier in front of Redis (`CATALOG_CACHE_LOCAL_TIER=true`).
//!
//! Hits from the first tier cost no network round trip. Coherence across instances uses the
//! same versioned tags as Redis: every invalidation is published on a Redis channel with its
//! sequence number, and each instance records the versions it hears. Anything that could
//! hide a message (a reconnect, a gap in sequence numbers, a new epoch, a ping that goes
//! unanswered on a half-open connection) starts a new generation: nothing filled before it
//! is served locally again. Local entries live at most the configured TTL (60 s at most).
//! On a Redis Cluster each partition has its own sequence and sharded channel (SSUBSCRIBE on
//! the partition's primary): versions and gaps are tracked per partition, and a lost node,
//! a resubscription or a moved slot starts a new generation for all.
//!
//! Exact across instances: the tier serves only while this instance holds its lease
//! (`leases.rs`), renewed with the sequences it has heard, and a writer answers once every
//! leased instance has heard its invalidation or lost its lease.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};

use super::redis::leases::Renewal;
use super::redis::{Connection, RedisStorage, Topology};
use super::versions::{TagVersions, Verdict};
use super::{BackendStats, Lookup, ResponseStore, StorageResult, Watermark};
use crate::cache::entry::{Entry, now_millis};
use crate::telemetry::Metrics;

/// How often the subscription is pinged; an unanswered ping ends it (a half-open connection).
const KEEPALIVE: Duration = Duration::from_secs(1);

/// Ticks every `KEEPALIVE`, first one `KEEPALIVE` after it is made (a plain interval ticks at
/// once): a subscription that has just gone live needs no ping yet.
fn keepalive_timer() -> tokio::time::Interval {
    tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE)
}

/// A local entry and the generation it was fetched in.
#[derive(Clone)]
struct LocalEntry {
    entry: Arc<Entry>,
    generation: u64,
}

/// What the listener and the lookups share.
struct Coherence {
    /// By partition: sequences of different partitions are not comparable.
    versions: Vec<TagVersions>,
    /// True while the subscription is known to be live.
    subscribed: AtomicBool,
    /// Advanced whenever a message may have been missed.
    generation: AtomicU64,
    /// By partition: the highest sequence heard (applied, or covered by a new generation).
    heard: Vec<AtomicU64>,
    /// Told when `heard` rises, so the lease acknowledges it at once.
    news: Arc<tokio::sync::Notify>,
    /// When this instance's lease ends, in nanoseconds after `clock_base` (0: none held).
    lease_until: AtomicU64,
    clock_base: Instant,
    metrics: Arc<Metrics>,
}

impl Coherence {
    /// The generation lookups may use now, or `None` while the first tier is off (no live
    /// subscription, or no lease).
    fn current(&self) -> Option<u64> {
        let generation = self.generation.load(Ordering::SeqCst);
        (self.subscribed.load(Ordering::SeqCst) && self.leased()).then_some(generation)
    }

    fn leased(&self) -> bool {
        self.nanos_since_base(Instant::now()) < self.lease_until.load(Ordering::SeqCst)
    }

    fn nanos_since_base(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.clock_base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Holds the lease until `granted` after `sent` (when its renewal was sent), less the margin.
    fn hold_lease(&self, sent: Instant, granted: Duration, margin: Duration) {
        let until = self.nanos_since_base(sent + granted.saturating_sub(margin));
        self.lease_until.store(until, Ordering::SeqCst);
    }

    fn drop_lease(&self) {
        self.lease_until.store(0, Ordering::SeqCst);
    }

    /// Records the highest sequence a partition's subscription has heard (at first, the one read
    /// right after subscribing).
    fn record_heard(&self, partition: usize, seq: u64) {
        if let Some(heard) = self.heard.get(partition) {
            heard.store(seq, Ordering::SeqCst);
        }
    }

    fn heard(&self) -> Vec<u64> {
        self.heard
            .iter()
            .map(|seq| seq.load(Ordering::SeqCst))
            .collect()
    }

    fn gap(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.metrics.cache_first_tier_gaps.inc();
    }

    /// One announcement `<seq> <tags...>` (`<seq> *` for a new epoch) of a partition whose
    /// last heard sequence is `last`.
    fn hear(&self, partition: usize, payload: &str, last: &mut u64) {
        let mut words = payload.split(' ');
        let Some(seq) = words.next().and_then(|word| word.parse::<u64>().ok()) else {
            return;
        };
        let Some(versions) = self.versions.get(partition) else {
            return;
        };
        let tags: Vec<&str> = words.filter(|word| !word.is_empty()).collect();
        for tag in &tags {
            versions.raise(tag, seq);
        }
        let new_epoch = tags.first() == Some(&"*");
        if new_epoch || seq > last.saturating_add(1) {
            // A missed message or lost bookkeeping: nothing older may be served.
            versions.raise_floor(seq);
            self.gap();
        }
        *last = (*last).max(seq);
        self.record_heard(partition, *last);
        self.news.notify_one();
    }
}

pub struct TieredStorage {
    remote: Arc<RedisStorage>,
    local: moka::future::Cache<String, LocalEntry>,
    coherence: Arc<Coherence>,
    /// This instance's name in the lease registry.
    member: String,
}

impl TieredStorage {
    pub fn new(
        remote: Arc<RedisStorage>,
        capacity_bytes: u64,
        ttl: Duration,
        tag_ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> StorageResult<Self> {
        let evictions = Arc::clone(&metrics);
        let local = moka::future::Cache::builder()
            .max_capacity(capacity_bytes)
            .weigher(|key: &String, value: &LocalEntry| {
                (key.len() + value.entry.weight()).min(u32::MAX as usize) as u32
            })
            .eviction_listener(move |_key, _value, cause| {
                if cause == moka::notification::RemovalCause::Size {
                    evictions.cache_evictions.inc();
                }
            })
            .time_to_live(ttl)
            .build();
        let partitions = remote.partitions();
        let coherence = Arc::new(Coherence {
            versions: (0..partitions)
                .map(|_| TagVersions::new(1_000_000 / partitions as u64, tag_ttl))
                .collect(),
            subscribed: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            heard: (0..partitions).map(|_| AtomicU64::new(0)).collect(),
            news: Arc::new(tokio::sync::Notify::new()),
            lease_until: AtomicU64::new(0),
            clock_base: Instant::now(),
            metrics,
        });
        let member = uuid::Uuid::new_v4().simple().to_string();
        tokio::spawn(listen(Arc::clone(&remote), Arc::downgrade(&coherence)));
        tokio::spawn(keep_lease(
            Arc::clone(&remote),
            Arc::downgrade(&coherence),
            Arc::clone(&coherence.news),
            member.clone(),
        ));
        Ok(TieredStorage {
            remote,
            local,
            coherence,
            member,
        })
    }
}

/// Keeps a subscription to the invalidation channels, reconnecting with backoff, until the
/// storage is dropped.
async fn listen(remote: Arc<RedisStorage>, coherence: std::sync::Weak<Coherence>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let was_live = match remote.topology() {
            Topology::Single(url) => follow(&remote, url, &coherence).await,
            Topology::Cluster(nodes) => follow_cluster(&remote, nodes, &coherence).await,
        };
        let Some(strong) = coherence.upgrade() else {
            return;
        };
        strong.subscribed.store(false, Ordering::SeqCst);
        strong.gap();
        drop(strong);
        if was_live {
            backoff = Duration::from_millis(100);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Marks the subscription live once every partition's sequence is known: whatever was cached
/// before this moment may have missed a message.
fn go_live(coherence: &std::sync::Weak<Coherence>) -> bool {
    let Some(coherence) = coherence.upgrade() else {
        return false;
    };
    coherence.gap();
    coherence.subscribed.store(true, Ordering::SeqCst);
    // The lease follows at once, not at the next heartbeat.
    coherence.news.notify_one();
    true
}

/// Follows the channel of a single Redis until the subscription ends or the storage is
/// dropped; true if the subscription was live.
async fn follow(remote: &RedisStorage, url: &str, coherence: &std::sync::Weak<Coherence>) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let Ok(mut pubsub) = client.get_async_pubsub().await else {
        return false;
    };
    if pubsub.subscribe(remote.channel(0)).await.is_err() {
        return false;
    }
    // The sequence after subscribing: every later invalidation arrives as a message, so a
    // message numbered past `last + 1` means one was missed.
    let Ok(mut connection) = client.get_multiplexed_async_connection().await else {
        return false;
    };
    let Ok(current) = remote.current_sequence(&mut connection, 0).await else {
        return false;
    };
    drop(connection);
    let mut last = current.unwrap_or(0);
    if let Some(coherence) = coherence.upgrade() {
        coherence.record_heard(0, last);
    }
    if !go_live(coherence) {
        return false;
    }
    let (mut sink, mut messages) = pubsub.split();
    let mut keepalive = keepalive_timer();
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else { break };
                let Ok(payload) = message.get_payload::<String>() else { continue };
                let Some(coherence) = coherence.upgrade() else { return true };
                coherence.hear(0, &payload, &mut last);
            }
            _ = keepalive.tick() => {
                if coherence.strong_count() == 0 {
                    return true;
                }
                let answered = tokio::time::timeout(KEEPALIVE, sink.ping::<redis::Value>()).await;
                if !matches!(answered, Ok(Ok(_))) {
                    break;
                }
            }
        }
    }
    tracing::warn!(
        "lost the cache invalidation subscription; the first tier is off until it returns"
    );
    true
}

/// Holds this instance's lease while its subscription is live: renews it every heartbeat and
/// whenever a heard sequence rises (one renewal in flight at a time, so a burst of
/// invalidations costs one), gives it up when the subscription ends, and joins again with a
/// new generation when a writer took it away. Ends when the storage is dropped.
async fn keep_lease(
    remote: Arc<RedisStorage>,
    coherence: std::sync::Weak<Coherence>,
    news: Arc<tokio::sync::Notify>,
    member: String,
) {
    let leases = remote.leases();
    let mut connection: Option<Connection> = None;
    let mut joined = false;
    let mut heartbeat = tokio::time::interval(leases.heartbeat());
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = news.notified() => {}
            _ = heartbeat.tick() => {}
        }
        let Some(strong) = coherence.upgrade() else {
            if joined {
                let _ = leases.leave(&remote, &member).await;
            }
            return;
        };
        if !strong.subscribed.load(Ordering::SeqCst) {
            strong.drop_lease();
            drop(strong);
            if joined && leases.leave(&remote, &member).await.is_ok() {
                joined = false;
            }
            continue;
        }
        if !joined {
            // Whatever the tier holds may predate invalidations that no longer wait for us.
            strong.drop_lease();
            strong.gap();
        }
        let heard = strong.heard();
        drop(strong);
        if connection.is_none() {
            let opened =
                tokio::time::timeout(leases.connect_timeout(), remote.dedicated_connection()).await;
            connection = opened.ok().and_then(Result::ok);
        }
        let Some(open) = connection.as_mut() else {
            continue;
        };
        let sent = Instant::now();
        let renewal = leases.renew(&remote, open, &member, !joined, &heard).await;
        let Some(strong) = coherence.upgrade() else {
            continue;
        };
        match renewal {
            Ok(Renewal::Granted(granted)) => {
                strong.hold_lease(sent, granted, leases.margin());
                joined = true;
            }
            Ok(Renewal::Refused) => {
                strong.drop_lease();
                joined = false;
                tracing::warn!(
                    "this instance's first-tier lease was taken away (an invalidation went unacknowledged); rejoining with an empty tier"
                );
                news.notify_one();
            }
            // The lease lapses by itself; a new connection next time.
            Err(_) => connection = None,
        }
    }
}

/// Follows every partition's sharded channel on a cluster (RESP3: messages arrive as pushes
/// on the cluster connection, which subscribes on each channel's primary). The client would
/// resubscribe by itself after a disconnection or a moved slot, silently skipping what was
/// published meanwhile, so any such event ends the subscription (a new generation) instead.
async fn follow_cluster(
    remote: &RedisStorage,
    nodes: &[String],
    coherence: &std::sync::Weak<Coherence>,
) -> bool {
    let (sender, mut pushes) = tokio::sync::mpsc::unbounded_channel();
    let Ok(client) = redis::cluster::ClusterClientBuilder::new(nodes.to_vec())
        .use_protocol(redis::ProtocolVersion::RESP3)
        .push_sender(sender)
        .build()
    else {
        return false;
    };
    let Ok(mut connection) = client.get_async_connection().await else {
        return false;
    };
    let channels: Vec<String> = (0..remote.partitions())
        .map(|partition| remote.channel(partition))
        .collect();
    for channel in &channels {
        if connection.ssubscribe(channel).await.is_err() {
            return false;
        }
    }
    let mut last = Vec::with_capacity(channels.len());
    for partition in 0..channels.len() {
        let Ok(current) = remote.current_sequence(&mut connection, partition).await else {
            return false;
        };
        last.push(current.unwrap_or(0));
    }
    if let Some(coherence) = coherence.upgrade() {
        for (partition, seq) in last.iter().enumerate() {
            coherence.record_heard(partition, *seq);
        }
    }
    if !go_live(coherence) {
        return false;
    }
    let mut confirmed = vec![false; channels.len()];
    let partition_of = |value: Option<&redis::Value>| {
        let channel: String = redis::from_redis_value_ref(value?).ok()?;
        channels.iter().position(|known| *known == channel)
    };
    let mut keepalive = keepalive_timer();
    loop {
        tokio::select! {
            push = pushes.recv() => {
                let Some(push) = push else { break };
                match push.kind {
                    redis::PushKind::SMessage => {
                        let Some(partition) = partition_of(push.data.first()) else { continue };
                        let Some(payload) = push.data.get(1)
                            .and_then(|value| redis::from_redis_value_ref::<String>(value).ok())
                        else {
                            continue;
                        };
                        let Some(coherence) = coherence.upgrade() else { return true };
                        coherence.hear(partition, &payload, &mut last[partition]);
                    }
                    // The first confirmation of each channel answers our SSUBSCRIBE; another
                    // one is the client resubscribing after something we may have missed.
                    redis::PushKind::SSubscribe => match partition_of(push.data.first()) {
                        Some(partition) if !confirmed[partition] => confirmed[partition] = true,
                        _ => break,
                    },
                    _ => break,
                }
            }
            _ = keepalive.tick() => {
                if coherence.strong_count() == 0 {
                    return true;
                }
                let ping = connection.route_command(
                    redis::cmd("PING"),
                    RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None)),
                );
                if !matches!(tokio::time::timeout(KEEPALIVE, ping).await, Ok(Ok(_))) {
                    break;
                }
            }
        }
    }
    tracing::warn!(
        "lost a cache invalidation subscription on the cluster; the first tier is off until it returns"
    );
    true
}

#[async_trait]
impl ResponseStore for TieredStorage {
    async fn lookup(&self, key: &str) -> StorageResult<Lookup> {
        let generation = self.coherence.current();
        if let Some(generation) = generation
            && let Some(local) = self.local.get(key).await
        {
            // A local copy past its freshness goes to Redis, which may hold a refill by now;
            // only Redis answers stale (with the watermark a refill needs).
            if local.generation == generation
                && local.entry.is_fresh_at(now_millis())
                && self.coherence.versions[self.remote.partition_of(key)].verdict(&local.entry)
                    == Verdict::Fresh
            {
                self.coherence.metrics.cache_first_tier_hits.inc();
                return Ok(Lookup::Hit(local.entry));
            }
            self.local.invalidate(key).await;
        }
        let found = self.remote.lookup(key).await?;
        if let (Some(generation), Lookup::Hit(entry)) = (generation, &found) {
            let local = LocalEntry {
                entry: Arc::clone(entry),
                generation,
            };
            self.local.insert(key.to_owned(), local).await;
        }
        Ok(found)
    }
    async fn sequence(&self, key: &str) -> StorageResult<Watermark> {
        self.remote.sequence(key).await
    }
    async fn store(&self, key: &str, entry: Arc<Entry>, ttl: Duration) -> StorageResult<()> {
        // The generation before the store: a gap during it leaves the local copy unusable.
        let generation = self.coherence.current();
        self.remote.store(key, Arc::clone(&entry), ttl).await?;
        if let Some(generation) = generation {
            self.local
                .insert(key.to_owned(), LocalEntry { entry, generation })
                .await;
        }
        Ok(())
    }
    async fn settle(&self, sequences: &[u64]) -> StorageResult<u64> {
        self.remote
            .leases()
            .settle(&self.remote, Some(&self.member), sequences)
            .await
    }
    async fn invalidate(&self, tags: &[String], lsn: Option<u64>) -> StorageResult<Vec<u64>> {
        let sequences = self.remote.invalidate(tags, lsn).await?;
        // Our own first tier learns at once, without waiting for the messages to come back.
        for (versions, seq) in self.coherence.versions.iter().zip(&sequences) {
            for tag in tags {
                versions.raise(tag, *seq);
            }
        }
        Ok(sequences)
    }
    async fn establish_position(&self, lsn: u64) -> StorageResult<()> {
        self.remote.establish_position(lsn).await
    }
    async fn clear(&self) -> StorageResult<u64> {
        self.coherence.gap();
        self.local.invalidate_all();
        self.remote.clear().await
    }
    async fn stats(&self) -> StorageResult<BackendStats> {
        let mut stats = self.remote.stats().await?;
        stats.backend = "redis+local".into();
        Ok(stats)
    }
}
