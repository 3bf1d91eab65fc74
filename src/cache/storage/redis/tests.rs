//! Every script and pipeline the cluster layout sends keeps its keys in one hash slot: the
//! real methods run against a connection that records each command (or pipeline) and
//! answers nil, and the keys of each are put through Redis Cluster's slot function.

use super::connection::Pooled;
use super::*;
use crate::cache::storage::{BoundedMember, ValueStore};

/// A command's arguments, its name first.
type Command = Vec<Vec<u8>>;

#[derive(Clone, Default)]
pub struct Recorder {
    /// One entry per command or pipeline: the commands in it.
    pub sent: Arc<parking_lot::Mutex<Vec<Vec<Command>>>>,
}

fn arguments(command: &redis::Cmd) -> Command {
    command
        .args_iter()
        .map(|argument| match argument {
            redis::Arg::Simple(bytes) => bytes.to_vec(),
            _ => b"0".to_vec(),
        })
        .collect()
}

impl Recorder {
    pub fn command<'a>(&self, command: &redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        self.sent.lock().push(vec![arguments(command)]);
        Box::pin(async { Ok(redis::Value::Nil) })
    }
    pub fn pipeline<'a>(
        &self,
        pipeline: &redis::Pipeline,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        self.sent
            .lock()
            .push(pipeline.cmd_iter().map(arguments).collect());
        Box::pin(async move { Ok(vec![redis::Value::Nil; count]) })
    }
}

/// The keys a command names: those declared to a script, else the ones its name says.
fn keys(command: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let name = String::from_utf8_lossy(&command[0]).to_uppercase();
    match name.as_str() {
        "EVAL" | "EVALSHA" => {
            let count: usize = String::from_utf8_lossy(&command[2]).parse().unwrap_or(0);
            command[3..3 + count].to_vec()
        }
        "MGET" | "DEL" | "UNLINK" => command[1..].to_vec(),
        "WAIT" | "INFO" | "PING" | "SCAN" | "CLUSTER" => Vec::new(),
        _ => command[1..2].to_vec(),
    }
}

#[tokio::test]
async fn every_script_and_pipeline_keeps_its_keys_in_one_slot() {
    let storage = RedisStorage::new(
        "redis+cluster://127.0.0.1:1",
        "catalog:",
        16,
        2,
        Duration::from_secs(1),
        Duration::from_secs(1),
        Duration::from_secs(3660),
        1024,
        Duration::from_millis(500),
        Arc::new(Metrics::new()),
    )
    .expect("a cluster storage needs no connection to be built");
    let recorder = Recorder::default();
    let install = || {
        for slot in storage.shared.iter().chain([&storage.invalidations]) {
            *slot.lock() = Some(Shared {
                connection: Connection::Recording(recorder.clone()),
                _pooled: Pooled::Nothing,
            });
        }
    };
    let entry = Arc::new(Entry {
        seq: 5,
        tags: vec!["Product:1".into(), "Products".into()],
        etag: "e".into(),
        max_age: 60,
        fresh_until: u64::MAX,
        body: bytes::Bytes::from_static(b"{}"),
        encoded: Default::default(),
    });
    let tags = vec!["Product:1".to_owned(), "Categories".to_owned()];
    // Results are nil answers parsed as errors: only what was sent matters here.
    for id in 0..40 {
        let key = format!("resp:{id:016x}/{id}");
        install();
        let _ = storage.lookup(&key).await;
        install();
        let _ = storage.sequence(&key).await;
        install();
        let _ = storage
            .store(&key, Arc::clone(&entry), Duration::from_secs(60))
            .await;
        install();
        let _ = storage.lookup(&format!("token:{id}")).await;
    }
    install();
    let _ = storage.invalidate(&tags, Some(42)).await;
    install();
    let _ = storage.establish_position(42).await;
    install();
    let _ = storage.get("apq:abc").await;
    install();
    let _ = storage
        .set_bounded(BoundedMember {
            collection: "apq:documents",
            key: "apq:abc",
            value: b"q".to_vec(),
            ttl: Duration::from_secs(60),
            capacity: 10,
        })
        .await;
    install();
    let _ = storage
        .add_counters(
            &[("stats:1:hit".into(), 1), ("stats:1:miss".into(), 2)],
            Duration::from_secs(60),
        )
        .await;
    install();
    let _ = storage
        .counters(&["stats:1:hit".into(), "stats:1:miss".into()])
        .await;
    install();
    let _ = storage
        .push_samples(
            &[("perf:a".into(), vec![1.0]), ("perf:b".into(), vec![2.0])],
            10,
        )
        .await;
    install();
    let _ = storage
        .rank_add("ops:rank", &[("a".into(), 1.0), ("b".into(), 2.0)])
        .await;
    install();
    let _ = storage
        .rank_trim("ops:rank", 10, Duration::from_secs(60))
        .await;
    install();
    let _ = storage.leases().leave(&storage, "member").await;
    install();
    let _ = storage.delete("token:abc").await;

    let sent = recorder.sent.lock().clone();
    let stamps = sent
        .iter()
        .flat_map(|group| group.iter().map(|command| keys(command)))
        .filter(|keys| keys.len() == 2 && keys[1].ends_with(b"stamped"))
        .count();
    assert_eq!(stamps, 16, "an invalidation stamps every partition");
    let mut slots_used = std::collections::BTreeSet::new();
    for group in &sent {
        let slots: std::collections::BTreeSet<u16> = group
            .iter()
            .flat_map(|command| keys(command))
            .map(|key| cluster::slot(&key))
            .collect();
        assert!(slots.len() <= 1, "keys in several slots: {group:?}");
        slots_used.extend(slots);
    }
    assert!(slots_used.len() > 16, "entries spread over the partitions");
}
