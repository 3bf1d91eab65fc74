//! The key layout on a Redis Cluster. A script may touch keys of one hash slot only, and every
//! key it touches must be declared, so the cache's bookkeeping is split into partitions: each
//! has a hash tag of its own, and under it its sequence, floor, WAL position, run id and tag
//! stamps in ONE hash (`#seq`, `#floor`, `#lsn`, `#runid`, and one field per stamped tag), the
//! sorted set that ages those stamps out, its pub/sub channel, and the entries placed in it. A
//! hit reads the entry and one HMGET of that hash: the same two calls as on a single Redis.
//!
//! Why partitions and not "stamps in one slot, entries spread": a hit must compare an entry
//! with its tags' stamps in the same script (one round trip), so stamps must live beside the
//! entries they guard; one stamp slot would put every hit on one primary. With N partitions
//! (`CATALOG_CACHE_PARTITIONS`, by default 3: one per primary of the usual 3+3 cluster), hits
//! spread over every primary and an invalidation stamps each partition once (N scripts, sent
//! at once, one round trip per node). N costs every write N scripts: with 16 partitions on
//! 3 primaries W7 (5% writes) ran at 1,239-2,776 req/s, with 3 at 5,001 (one Redis: about
//! 12,000), so the default is one partition per primary. Every instance must use the same N
//! (the first one records it; see `RedisStorage::check_partition_count`).
//! Measured on this machine (README "Redis Cluster", `scripts/cluster-hit-cost.sh`): the lookup
//! script costs the same on a cluster primary as on one Redis (19 to 23 µs against 21 µs per
//! hit under wrk), and the hits spread over every primary; an invalidation costs N stamp
//! scripts instead of one, which mutations can afford and hits could not.
//!
//! A key's partition follows its *placement*: the text before its first `/`, or the whole key.
//! A response key's placement is the hash of the operation without its scope, so the public
//! and private entries of one operation, and the sequence read on its first sight, share a
//! partition (sequences of different partitions are never compared).
//!
//! The scripts that keep this layout are `redis/lua/cluster/*.lua`; this file only names the
//! keys they touch.

/// Hash slots in a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// CRC16-XMODEM, as Redis Cluster computes it (`CLUSTER KEYSLOT`).
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for byte in bytes {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The hash slot of a key: of its hash tag (the text between the first `{` and the next `}`,
/// if not empty), else of the whole key.
pub fn slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|byte| *byte == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        rest.iter()
            .position(|byte| *byte == b'}')
            .filter(|close| *close > 0)
            .map(|close| &rest[..close])
    });
    crc16(tagged.unwrap_or(key)) % SLOTS
}

/// The part of a key that decides its partition (see the module doc).
pub fn placement(key: &str) -> &str {
    key.split_once('/').map_or(key, |(placement, _)| placement)
}

/// The partitions' hash tags under one prefix. The tags are chosen so that partition `k`
/// hashes into the `k`-th of N equal ranges of slots: with the slots split evenly over the
/// primaries (as `redis-cli --cluster create` does), so are the partitions.
#[derive(Debug, Clone)]
pub struct Partitions {
    tags: Vec<String>,
    books: Vec<String>,
    stamped: Vec<String>,
    channels: Vec<String>,
}

impl Partitions {
    pub fn new(prefix: &str, count: usize) -> Self {
        let count = count.clamp(1, usize::from(SLOTS));
        let tags: Vec<String> = (0..count)
            .map(|partition| {
                let low = partition * usize::from(SLOTS) / count;
                let high = (partition + 1) * usize::from(SLOTS) / count;
                (0u64..)
                    .map(|attempt| format!("{{{prefix}p{partition}.{attempt}}}"))
                    .find(|tag| (low..high).contains(&usize::from(slot(tag.as_bytes()))))
                    .unwrap_or_default()
            })
            .collect();
        let named = |suffix: &str| tags.iter().map(|tag| format!("{tag}{suffix}")).collect();
        Partitions {
            books: named("book"),
            stamped: named("stamped"),
            channels: named("invalidations"),
            tags,
        }
    }

    pub fn count(&self) -> usize {
        self.tags.len()
    }

    /// The hash tag (braces included) every key of `partition` starts with.
    pub fn tag(&self, partition: usize) -> &str {
        &self.tags[partition]
    }

    /// The partition a key (without prefix) belongs to.
    pub fn of(&self, key: &str) -> usize {
        usize::from(crc16(placement(key).as_bytes())) % self.tags.len()
    }

    /// The hash holding a partition's bookkeeping and tag stamps.
    pub fn book(&self, partition: usize) -> &str {
        &self.books[partition]
    }

    /// The sorted set of a partition's stamped tags, scored by when each was last stamped.
    pub fn stamped(&self, partition: usize) -> &str {
        &self.stamped[partition]
    }

    /// The sharded pub/sub channel a partition announces its invalidations on.
    pub fn channel(&self, partition: usize) -> &str {
        &self.channels[partition]
    }

    /// Where an entry (response or token validation) of `partition` lives.
    pub fn entry(&self, partition: usize, key: &str) -> String {
        format!("{}{key}", self.tags[partition])
    }

    /// Whether a key (with prefix) is bookkeeping that `cache clear` keeps.
    pub fn is_bookkeeping(&self, key: &str) -> bool {
        self.books
            .iter()
            .chain(&self.stamped)
            .any(|name| name == key)
    }
}

/// The one hash tag every plain value (persisted queries, monitor counters, samples and
/// rankings) lives under, so the scripts and pipelines over them stay in one slot. These are
/// touched once per new document and per monitor flush, not per hit.
pub fn values_tag(prefix: &str) -> String {
    format!("{{{prefix}values}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_cluster_keyslot() {
        // Values from `redis-cli cluster keyslot <key>` (Redis 7.0).
        for (key, expected) in [
            ("foo", 12182),
            ("bar", 5061),
            ("hello", 866),
            ("somekey", 11058),
            ("{user1000}.following", 3443),
            ("{}x", 10595),
            ("a{b}c", 3300),
            ("{{x}}", 11068),
            ("x{}{y}", 14166),
        ] {
            assert_eq!(slot(key.as_bytes()), expected, "{key}");
        }
        assert_eq!(crc16(b"123456789"), 0x31C3);
    }

    #[test]
    fn partitions_spread_evenly_over_the_slots() {
        for count in [1, 3, 16, 64] {
            let partitions = Partitions::new("catalog:", count);
            for partition in 0..count {
                let slot = usize::from(slot(partitions.tag(partition).as_bytes()));
                assert!(
                    slot * count / usize::from(SLOTS) == partition,
                    "{count} {partition}"
                );
            }
        }
    }

    #[test]
    fn public_and_private_entries_of_one_operation_share_a_partition() {
        let partitions = Partitions::new("p:", 16);
        assert_eq!(
            partitions.of("resp:0123456789abcdef/aaaa"),
            partitions.of("resp:0123456789abcdef/bbbb")
        );
        let spread: std::collections::HashSet<usize> = (0..200)
            .map(|id| partitions.of(&format!("resp:{id:016x}/x")))
            .collect();
        assert_eq!(spread.len(), 16);
    }
}
