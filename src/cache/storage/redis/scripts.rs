//! The Lua scripts that keep the cache's bookkeeping, and where that bookkeeping lives
//! (`Layout`). The scripts are files of their own under `lua/` (`lua/cluster/` for the
//! partitioned layout, `cluster.rs` explains it), loaded with `include_str!` so editors and
//! readers see them whole; every script starts with its layout's epoch prelude, and both
//! lookups start with the same hit path (`lua/lookup_hit.lua`), filled in per layout here.

use redis::Script;

use crate::cache::storage::cluster::Partitions;

// One Redis: the bookkeeping in keys of their own under the prefix.
const EPOCH: &str = include_str!("lua/epoch.lua");
const LOOKUP_HIT: &str = include_str!("lua/lookup_hit.lua");
const LOOKUP_MISS: &str = include_str!("lua/lookup_miss.lua");
const SEQUENCE: &str = include_str!("lua/sequence.lua");
const STORE: &str = include_str!("lua/store.lua");
const INVALIDATE: &str = include_str!("lua/invalidate.lua");
const ESTABLISH_POSITION: &str = include_str!("lua/establish_position.lua");
const NEW_EPOCH: &str = include_str!("lua/new_epoch.lua");
const HANDSHAKE: &str = include_str!("lua/handshake.lua");
/// The bounded collections of plain values (`ValueStore::set_bounded`), on either layout.
pub(super) const SET_BOUNDED: &str = include_str!("lua/set_bounded.lua");

// A cluster: each partition's bookkeeping in one hash (`cluster.rs`).
const CLUSTER_EPOCH: &str = include_str!("lua/cluster/epoch.lua");
const CLUSTER_LOOKUP_MISS: &str = include_str!("lua/cluster/lookup_miss.lua");
const CLUSTER_SEQUENCE: &str = include_str!("lua/cluster/sequence.lua");
const CLUSTER_STORE: &str = include_str!("lua/cluster/store.lua");
const CLUSTER_INVALIDATE: &str = include_str!("lua/cluster/invalidate.lua");
const CLUSTER_ESTABLISH_POSITION: &str = include_str!("lua/cluster/establish_position.lua");
const CLUSTER_NEW_EPOCH: &str = include_str!("lua/cluster/new_epoch.lua");

/// The hit path of a lookup with its layout's places filled in: where the entry is
/// (`ENTRY_KEY`), the floor's name (`FLOOR_NAME`), a tag's stamp (`STAMP_NAME`, from its
/// `word`) and the call that reads the floor and the stamps at once (`READ_STAMPS`).
fn lookup_hit(entry: &str, floor: &str, stamp: &str, read: &str) -> String {
    LOOKUP_HIT
        .replace("ENTRY_KEY", entry)
        .replace("FLOOR_NAME", floor)
        .replace("STAMP_NAME", stamp)
        .replace("READ_STAMPS", read)
}

/// Where the bookkeeping lives, and the scripts that keep it.
pub(super) enum Layout {
    /// One Redis: one sequence, stamps in keys of their own (the scripts above).
    Single {
        /// Key names every script call passes, built once (a hit allocates none of them).
        keys: BookkeepingKeys,
        scripts: SingleScripts,
    },
    /// A cluster: partitions, each in one hash slot (`cluster.rs`).
    Cluster {
        partitions: Partitions,
        scripts: ClusterScripts,
        /// The hash tag plain values live under.
        values: String,
    },
}

impl Layout {
    /// A call of the chosen script for every place that keeps bookkeeping: the one Redis, or
    /// each partition of a cluster.
    pub(super) fn everywhere<'a>(
        &'a self,
        single: impl Fn(&'a SingleScripts) -> &'a Script,
        cluster: impl Fn(&'a ClusterScripts) -> &'a Script,
    ) -> Vec<redis::ScriptInvocation<'a>> {
        match self {
            Layout::Single { keys, scripts } => vec![single_call(keys, single(scripts))],
            Layout::Cluster {
                partitions,
                scripts,
                ..
            } => (0..partitions.count())
                .map(|partition| cluster_call(partitions, cluster(scripts), partition))
                .collect(),
        }
    }

    /// A call of the chosen script about one entry: the prelude of the place that keeps the
    /// entry's bookkeeping (the one Redis, or the entry's partition), then the entry's key.
    pub(super) fn entry_call<'a>(
        &'a self,
        prefix: &str,
        key: &str,
        single: impl Fn(&'a SingleScripts) -> &'a Script,
        cluster: impl Fn(&'a ClusterScripts) -> &'a Script,
    ) -> redis::ScriptInvocation<'a> {
        match self {
            Layout::Single { keys, scripts } => {
                let mut call = single_call(keys, single(scripts));
                call.key(format!("{prefix}{key}"));
                call
            }
            Layout::Cluster {
                partitions,
                scripts,
                ..
            } => {
                let partition = partitions.of(key);
                let mut call = cluster_call(partitions, cluster(scripts), partition);
                call.key(partitions.entry(partition, key));
                call
            }
        }
    }
}

pub(super) struct SingleScripts {
    pub(super) lookup: Script,
    pub(super) sequence: Script,
    pub(super) store: Script,
    pub(super) invalidate: Script,
    pub(super) establish_position: Script,
    pub(super) handshake: Script,
    pub(super) new_epoch: Script,
}

pub(super) struct ClusterScripts {
    pub(super) lookup: Script,
    pub(super) sequence: Script,
    pub(super) store: Script,
    pub(super) establish_position: Script,
    pub(super) new_epoch: Script,
    pub(super) invalidate: Script,
}

/// The names of the keys that hold the cache's bookkeeping, under this server's prefix.
pub(super) struct BookkeepingKeys {
    pub(super) sequence: String,
    pub(super) floor: String,
    pub(super) position: String,
    pub(super) tag_prefix: String,
    pub(super) channel: String,
}

impl SingleScripts {
    pub(super) fn new() -> Self {
        SingleScripts {
            // KEYS[4] = entry; ARGV[3] = tag key prefix. Returns {1, entry} when fresh,
            // {0, seq, lsn} when absent or stale, {2, seq, lsn} when present but unprovable
            // (filled before the epoch floor, or the floor is gone); lsn is '' when unknown. A
            // hit costs two calls, as before epochs: the entry, then one MGET of the floor and
            // the entry's tag stamps.
            lookup: Script::new(&format!(
                "{}{EPOCH}{LOOKUP_MISS}",
                lookup_hit(
                    "KEYS[4]",
                    "KEYS[2]",
                    "ARGV[3] .. word",
                    "redis.call('MGET', unpack(names))"
                )
            )),
            sequence: script(SEQUENCE),
            store: script(STORE),
            invalidate: script(INVALIDATE),
            establish_position: script(ESTABLISH_POSITION),
            handshake: script(HANDSHAKE),
            new_epoch: script(NEW_EPOCH),
        }
    }
}

impl ClusterScripts {
    pub(super) fn new() -> Self {
        ClusterScripts {
            // KEYS[2] = entry. The hit path: the entry, then one HMGET of the floor and its
            // tags' stamps (tags never start with '#', so they cannot collide with the
            // bookkeeping fields). Returns as the single-Redis lookup does.
            lookup: Script::new(&format!(
                "{}{CLUSTER_EPOCH}{CLUSTER_LOOKUP_MISS}",
                lookup_hit(
                    "KEYS[2]",
                    "'#floor'",
                    "word",
                    "redis.call('HMGET', KEYS[1], unpack(names))"
                )
            )),
            sequence: cluster_script(CLUSTER_SEQUENCE),
            store: cluster_script(CLUSTER_STORE),
            establish_position: cluster_script(CLUSTER_ESTABLISH_POSITION),
            new_epoch: cluster_script(CLUSTER_NEW_EPOCH),
            invalidate: cluster_script(CLUSTER_INVALIDATE),
        }
    }
}

/// The clock a new epoch starts from, in microseconds (see `lua/epoch.lua`).
pub(super) fn clock_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros() as u64)
        .unwrap_or(0)
}

fn script(body: &str) -> Script {
    Script::new(&format!("{EPOCH}{body}"))
}

fn cluster_script(body: &str) -> Script {
    Script::new(&format!("{CLUSTER_EPOCH}{body}"))
}

/// An invocation with the single-Redis epoch prelude's keys and arguments filled in.
pub(super) fn single_call<'a>(
    keys: &BookkeepingKeys,
    script: &'a Script,
) -> redis::ScriptInvocation<'a> {
    let mut invocation = script.key(keys.sequence.as_str());
    invocation
        .key(keys.floor.as_str())
        .key(keys.position.as_str())
        .arg(clock_micros())
        .arg(keys.channel.as_str());
    invocation
}

/// An invocation with a partition's epoch prelude keys and arguments filled in.
pub(super) fn cluster_call<'a>(
    partitions: &Partitions,
    script: &'a Script,
    partition: usize,
) -> redis::ScriptInvocation<'a> {
    let mut invocation = script.key(partitions.book(partition));
    invocation
        .arg(clock_micros())
        .arg(partitions.channel(partition));
    invocation
}
