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

use super::redis::lookup_script;

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

// Every cluster script starts with this. KEYS[1] = the partition's hash; ARGV[1] = clock (µs),
// ARGV[2] = the partition's channel. As on a single Redis (see `redis::EPOCH`), but the floor
// also checks the node: the run id recorded beside the data must be this process's, else the
// node restarted or is a promoted replica whose copy may lack writes (replication is
// asynchronous) and a new epoch starts. A hit does not run this (it is defined after the hit
// path); every fill, sequence read and invalidation does.
pub const EPOCH: &str = r#"
local function text(number) return string.format('%.0f', number) end
local function position() return redis.call('HGET', KEYS[1], '#lsn') or '' end
local function new_epoch()
  local start = math.max(tonumber(redis.call('HGET', KEYS[1], '#seq') or '0'), tonumber(ARGV[1])) + 1
  redis.call('HSET', KEYS[1], '#seq', text(start), '#floor', text(start))
  redis.call('HDEL', KEYS[1], '#lsn')
  redis.call('SPUBLISH', ARGV[2], text(start) .. ' *')
  return start
end
local function floor()
  local recorded = redis.call('HMGET', KEYS[1], '#floor', '#runid')
  local node = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
  if recorded[1] and recorded[2] == node then return tonumber(recorded[1]) end
  local start = new_epoch()
  redis.call('HSET', KEYS[1], '#runid', node)
  return start
end
"#;

// KEYS[2] = entry. The hit path: the entry, then one HMGET of the floor and its tags' stamps
// (tags never start with '#', so they cannot collide with the bookkeeping fields). Returns as
// `redis::LOOKUP` does.
pub const LOOKUP: &str = lookup_script!(
    entry: "KEYS[2]",
    floor: "'#floor'",
    stamp: "word",
    read: "redis.call('HMGET', KEYS[1], unpack(names))"
);

pub const LOOKUP_MISS: &str = r#"
local lowest = floor()
return {unprovable and 2 or 0, redis.call('HGET', KEYS[1], '#seq') or text(lowest), position()}
"#;

pub const SEQUENCE: &str = r#"
local lowest = floor()
return {redis.call('HGET', KEYS[1], '#seq') or text(lowest), position()}
"#;

// KEYS[2] = entry; ARGV[3] = fill sequence, ARGV[4] = encoded entry, ARGV[5] = TTL (s).
pub const STORE: &str = r#"
if tonumber(ARGV[3]) < floor() then return 0 end
redis.call('SET', KEYS[2], ARGV[4], 'EX', tonumber(ARGV[5]))
return 1
"#;

// KEYS[2] = the stamped set; ARGV[3] = stamp TTL (s), ARGV[4..n-1] = tags, ARGV[n] = WAL
// position ('' for none). Returns {seq, replicas in sync} (a replica still loading its first
// copy cannot acknowledge anything yet). A stamp older than the stamp TTL
// can retire no entry (no entry outlives it, see `MAX_FILL_AGE`), so each call forgets up to
// 256 of those, more than the 68 tags one call may add: the hash holds the tags stamped
// within the stamp TTL plus a backlog that only shrinks.
pub const INVALIDATE: &str = r#"
floor()
local seq = redis.call('HINCRBY', KEYS[1], '#seq', 1)
local now = redis.call('TIME')
local millis = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local last = #ARGV - 1
for i = 4, last do
  redis.call('HSET', KEYS[1], ARGV[i], text(seq))
  redis.call('ZADD', KEYS[2], millis, ARGV[i])
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', millis - tonumber(ARGV[3]) * 1000, 'LIMIT', 0, 256)
if #expired > 0 then
  redis.call('HDEL', KEYS[1], unpack(expired))
  redis.call('ZREM', KEYS[2], unpack(expired))
end
local lsn = ARGV[#ARGV]
if lsn ~= '' then
  local current = position()
  if current == '' or #lsn > #current or (#lsn == #current and lsn > current) then
    redis.call('HSET', KEYS[1], '#lsn', lsn)
  end
end
redis.call('SPUBLISH', ARGV[2], text(seq) .. ' ' .. table.concat(ARGV, ' ', 4, last))
local replicas = 0
for _ in string.gmatch(redis.call('INFO', 'replication'), 'state=online') do replicas = replicas + 1 end
return {text(seq), replicas}
"#;

pub const ESTABLISH_POSITION: &str = r#"
floor()
if position() == '' then redis.call('HSET', KEYS[1], '#lsn', ARGV[3]) end
return 1
"#;

pub const NEW_EPOCH: &str = r#"
floor()
return text(new_epoch())
"#;

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
