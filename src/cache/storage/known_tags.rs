//! A Redis hit without a script. A script call moves the entry through Lua: Redis copies it
//! into a Lua string and back (measured with redis-benchmark on this machine: `EVAL` of a bare
//! `GET` of a 1.9 KB entry 4.8 µs per call, `EVAL "return 1"` 1.0 µs, an `MGET` of the same
//! entry, floor and stamp 0.5 µs), and on two cores Redis shares the CPU with the server. So
//! once this instance knows which tags an entry carries (it filled it, or the script served
//! it), a lookup reads the entry, the epoch floor and those tags' stamps together (one `MGET`
//! on one Redis; one `GET` and one `HMGET` of the same slot, pipelined, on a cluster) and
//! judges them here by the script's own rule. Only a fresh entry is answered this way;
//! anything else (no entry, stale, unprovable, no floor, a tag that was not read) goes to the
//! script, which decides as before, reads the watermark a miss needs and starts new epochs.
//! So this path never answers what the script would not have.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use bytes::Bytes;
use foldhash::fast::RandomState;
use parking_lot::RwLock;

use crate::cache::entry::Entry;

/// Most response keys whose tags an instance remembers (each costs its key and at most
/// `MAX_TAGS_PER_ENTRY` tag names: about 1 KB at worst, 64 MB for all). A forgotten key only
/// costs its next hit the script.
pub const KNOWN_TAGS_CAPACITY: usize = 65_536;

const SHARDS: usize = 16;

/// Keys are response keys, themselves SHA-256 digests of what a client sent, so a fast seeded
/// hash is safe here.
type Shard = RwLock<HashMap<Box<str>, Arc<[String]>, RandomState>>;

/// The tags of entries this instance has stored or served, by response key (without prefix).
/// A plain sharded map, read on every hit: past its capacity a shard forgets an arbitrary
/// key, which is all the bound needs (a cache with recency tracking cost each hit more than
/// the map itself).
pub struct KnownTags {
    shards: [Shard; SHARDS],
    hasher: RandomState,
}

impl Default for KnownTags {
    fn default() -> Self {
        KnownTags {
            shards: std::array::from_fn(|_| RwLock::new(HashMap::default())),
            hasher: RandomState::default(),
        }
    }
}

impl KnownTags {
    fn shard(&self, key: &str) -> &Shard {
        &self.shards[self.hasher.hash_one(key) as usize % SHARDS]
    }

    pub fn get(&self, key: &str) -> Option<Arc<[String]>> {
        self.shard(key).read().get(key).cloned()
    }

    pub fn remember(&self, key: &str, tags: &[String]) {
        let shard = self.shard(key);
        if shard.read().get(key).is_some_and(|known| **known == *tags) {
            return;
        }
        let mut shard = shard.write();
        if shard.len() >= KNOWN_TAGS_CAPACITY / SHARDS && !shard.contains_key(key) {
            let forgotten = shard.keys().next().cloned();
            if let Some(forgotten) = forgotten {
                shard.remove(&forgotten);
            }
        }
        shard.insert(key.into(), tags.into());
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.read().len()).sum()
    }
}

/// What values read together say about an entry, by the lookup script's rule.
#[derive(Debug)]
pub enum Verdict {
    /// Filled at or after the epoch floor, and none of its tags stamped after it was filled.
    Fresh(Entry),
    Absent,
    /// A tag was stamped after the fill.
    Stale,
    /// Filled before the epoch floor.
    Unprovable,
    /// The values cannot decide it (no floor, a tag that was not read, an unreadable value):
    /// only the script may.
    AskTheScript,
}

/// Judges an entry from values read in one go: the entry, the epoch floor, and `stamps[i]`,
/// the stamp of `known[i]`. The entry's tags must all be among `known`.
pub fn judge(
    entry: Option<Vec<u8>>,
    floor: Option<&[u8]>,
    known: &[String],
    stamps: &[Option<Vec<u8>>],
) -> Verdict {
    let Some(floor) = floor.and_then(number) else {
        return Verdict::AskTheScript;
    };
    let Some(entry) = entry else {
        return Verdict::Absent;
    };
    let Some((seq, tags)) = header(&entry) else {
        return Verdict::AskTheScript;
    };
    if seq < floor {
        return Verdict::Unprovable;
    }
    let mut stale = false;
    for tag in tags.split(' ').filter(|tag| !tag.is_empty()) {
        let Some(stamp) = known
            .iter()
            .position(|known| known == tag)
            .and_then(|index| stamps.get(index))
        else {
            return Verdict::AskTheScript;
        };
        match stamp.as_deref().map(number) {
            None => {}
            Some(None) => return Verdict::AskTheScript,
            Some(Some(stamp)) => stale |= stamp > seq,
        }
    }
    if stale {
        return Verdict::Stale;
    }
    match Entry::decode(Bytes::from(entry)) {
        Ok(entry) => Verdict::Fresh(entry),
        Err(_) => Verdict::AskTheScript,
    }
}

/// The fill sequence and the space-separated tags of an encoded entry's first line, read in
/// place (a hit decodes the entry once, after it is judged fresh).
fn header(entry: &[u8]) -> Option<(u64, &str)> {
    let newline = entry.iter().position(|byte| *byte == b'\n')?;
    let line = std::str::from_utf8(&entry[..newline]).ok()?;
    let (seq, tags) = line.split_once(' ').unwrap_or((line, ""));
    Some((seq.parse().ok()?, tags))
}

fn number(text: &[u8]) -> Option<u64> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(seq: u64, tags: &[&str]) -> Vec<u8> {
        Entry {
            seq,
            tags: tags.iter().map(|tag| (*tag).to_owned()).collect(),
            etag: "\"e\"".into(),
            max_age: 60,
            fresh_until: u64::MAX,
            body: Bytes::from_static(b"{\"data\":{}}"),
            encoded: Default::default(),
        }
        .encode(usize::MAX)
    }

    fn known(tags: &[&str]) -> Vec<String> {
        tags.iter().map(|tag| (*tag).to_owned()).collect()
    }

    fn stamp(seq: u64) -> Option<Vec<u8>> {
        Some(seq.to_string().into_bytes())
    }

    #[test]
    fn only_a_provably_fresh_entry_is_answered() {
        let tags = known(&["Product:1", "Products"]);
        let judged =
            |entry: Option<Vec<u8>>, floor: Option<&[u8]>, stamps: &[Option<Vec<u8>>]| match judge(
                entry, floor, &tags, stamps,
            ) {
                Verdict::Fresh(_) => "fresh",
                Verdict::Absent => "absent",
                Verdict::Stale => "stale",
                Verdict::Unprovable => "unprovable",
                Verdict::AskTheScript => "script",
            };
        let entry = || Some(encoded(10, &["Product:1", "Products"]));
        assert_eq!(judged(entry(), Some(b"5"), &[stamp(10), None]), "fresh");
        assert_eq!(judged(entry(), Some(b"10"), &[stamp(3), stamp(9)]), "fresh");
        assert_eq!(judged(entry(), Some(b"5"), &[stamp(11), None]), "stale");
        assert_eq!(judged(entry(), Some(b"11"), &[None, None]), "unprovable");
        assert_eq!(judged(None, Some(b"5"), &[None, None]), "absent");
        // No floor (the script starts a new epoch) and unreadable values go to the script.
        assert_eq!(judged(entry(), None, &[None, None]), "script");
        assert_eq!(judged(None, None, &[None, None]), "script");
        assert_eq!(judged(entry(), Some(b"x"), &[None, None]), "script");
        assert_eq!(
            judged(entry(), Some(b"5"), &[Some(b"x".to_vec()), None]),
            "script"
        );
        assert_eq!(
            judged(Some(b"garbage".to_vec()), Some(b"5"), &[None, None]),
            "script"
        );
    }

    #[test]
    fn the_map_stays_within_its_capacity_and_keeps_what_it_was_told_last() {
        let known = KnownTags::default();
        for index in 0..KNOWN_TAGS_CAPACITY + 5_000 {
            known.remember(&format!("key:{index}"), &tags_of(index));
        }
        assert!(known.len() <= KNOWN_TAGS_CAPACITY, "{} keys", known.len());
        assert!(known.len() > KNOWN_TAGS_CAPACITY - SHARDS);
        let last = KNOWN_TAGS_CAPACITY + 4_999;
        assert_eq!(
            known.get(&format!("key:{last}")).as_deref(),
            Some(&tags_of(last)[..])
        );
        known.remember("key:1", &tags_of(7));
        assert_eq!(known.get("key:1").as_deref(), Some(&tags_of(7)[..]));
    }

    fn tags_of(index: usize) -> Vec<String> {
        vec![format!("Product:{index}"), "Products:any".to_owned()]
    }

    #[test]
    fn an_entry_with_a_tag_that_was_not_read_goes_to_the_script() {
        let entry = encoded(10, &["Product:1", "Category:2"]);
        let tags = known(&["Product:1"]);
        assert!(matches!(
            judge(Some(entry), Some(b"1"), &tags, &[None]),
            Verdict::AskTheScript
        ));
        // A known tag the entry no longer carries does not count against it.
        let entry = encoded(10, &["Product:1"]);
        let tags = known(&["Product:1", "Category:2"]);
        assert!(matches!(
            judge(Some(entry), Some(b"1"), &tags, &[None, stamp(99)]),
            Verdict::Fresh(_)
        ));
    }
}
