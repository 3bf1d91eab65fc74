//! A cached response as stored in a backend: a one-line text header that Redis' Lua can read
//! (the invalidation sequence at fill time and the entry's tags), a second header line
//! (ETag, compression flag, max-age, fresh-until, the lengths of the body's stored codings),
//! then the response body, lz4-compressed when large, followed by its br, zstd and gzip forms
//! (made once at fill, so a hit sends them as they are). An entry is kept past its freshness for the stale windows (`read_through`), so it
//! carries the time its freshness ends: whether it is fresh is a question of that time, whether
//! it may be served at all is a question of its tags.

use bytes::Bytes;

use crate::compression::{ContentEncoding, Encoded};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The backend's invalidation sequence when the fill started; stale if any tag moved past it.
    pub seq: u64,
    pub tags: Vec<String>,
    pub etag: String,
    pub max_age: u32,
    /// When the entry stops being fresh, in milliseconds since the Unix epoch (wall clock, so
    /// that every instance reads the same time). Entries written before this field existed
    /// decode as fresh until their backend expires them, which is what their TTL meant.
    pub fresh_until: u64,
    /// The serialized GraphQL response, exactly as sent to clients.
    pub body: Bytes,
    /// The body in each content coding, for clients that accept one (empty for small bodies).
    pub encoded: Encoded,
}

/// Now, in milliseconds since the Unix epoch: the clock `Entry::fresh_until` is read against.
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Debug, thiserror::Error)]
#[error("malformed cache entry: {0}")]
pub struct DecodeError(&'static str);

impl Entry {
    /// Whether the entry is still fresh at `now` (milliseconds, see `now_millis`).
    pub fn is_fresh_at(&self, now: u64) -> bool {
        now < self.fresh_until
    }

    /// Milliseconds since the entry stopped being fresh (0 while it is fresh).
    pub fn stale_for(&self, now: u64) -> u64 {
        now.saturating_sub(self.fresh_until)
    }

    /// Whole seconds of freshness left at `now`, negative once stale (RFC 9211's `ttl`,
    /// rounded down: an entry 0.5 s past its freshness has `ttl=-1`).
    pub fn ttl_at(&self, now: u64) -> i64 {
        let left = i128::from(self.fresh_until) - i128::from(now);
        left.div_euclid(1000)
            .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    }

    /// Approximate bytes held in memory, for caches bounded by size.
    pub fn weight(&self) -> usize {
        self.body.len()
            + self.encoded.len()
            + self.etag.len()
            + self.tags.iter().map(String::len).sum::<usize>()
            + 64
    }

    pub fn encode(&self, compress_above: usize) -> Vec<u8> {
        let compressed = self.body.len() > compress_above;
        let payload: std::borrow::Cow<'_, [u8]> = if compressed {
            lz4_flex::compress_prepend_size(&self.body).into()
        } else {
            (&self.body[..]).into()
        };
        let mut out =
            Vec::with_capacity(payload.len() + self.encoded.len() + 96 + self.tags.len() * 16);
        out.extend_from_slice(self.seq.to_string().as_bytes());
        for tag in &self.tags {
            out.push(b' ');
            out.extend_from_slice(tag.as_bytes());
        }
        out.push(b'\n');
        // Flags 2 and 3 are 0 and 1 followed by stored codings, whose lengths the fifth
        // field lists (`br:812,zstd:905,gzip:1010`).
        let flag = u8::from(compressed) + if self.encoded.is_empty() { 0 } else { 2 };
        out.extend_from_slice(
            format!(
                "{} {} {} {}",
                self.etag, flag, self.max_age, self.fresh_until
            )
            .as_bytes(),
        );
        for (index, (encoding, bytes)) in self.encoded.iter().enumerate() {
            out.push(if index == 0 { b' ' } else { b',' });
            out.extend_from_slice(format!("{}:{}", encoding.as_str(), bytes.len()).as_bytes());
        }
        out.push(b'\n');
        out.extend_from_slice(&payload);
        for (_, bytes) in self.encoded.iter() {
            out.extend_from_slice(bytes);
        }
        out
    }

    /// Decodes a stored entry; an uncompressed body is a slice of `bytes`, not a copy.
    pub fn decode(bytes: Bytes) -> Result<Entry, DecodeError> {
        let (seq, tags, rest) = split_header(&bytes)?;
        let newline = rest
            .iter()
            .position(|byte| *byte == b'\n')
            .ok_or(DecodeError("no second header"))?;
        let meta = std::str::from_utf8(&rest[..newline])
            .map_err(|_| DecodeError("header is not UTF-8"))?;
        let mut fields = meta.split(' ');
        let (Some(etag), Some(flag), Some(max_age)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(DecodeError("short second header"));
        };
        let fresh_until = match fields.next() {
            Some(field) => field.parse().map_err(|_| DecodeError("bad fresh-until"))?,
            None => u64::MAX,
        };
        let (lz4, has_codings) = match flag {
            "0" => (false, false),
            "1" => (true, false),
            "2" => (false, true),
            "3" => (true, true),
            _ => return Err(DecodeError("bad compression flag")),
        };
        let mut payload = &rest[newline + 1..];
        let mut encoded = Encoded::default();
        if has_codings {
            let lengths = fields.next().ok_or(DecodeError("no coding lengths"))?;
            let mut parsed = Vec::with_capacity(3);
            for member in lengths.split(',') {
                let (name, length) = member
                    .split_once(':')
                    .ok_or(DecodeError("bad coding length"))?;
                let encoding = ContentEncoding::ALL
                    .into_iter()
                    .find(|encoding| encoding.as_str() == name)
                    .ok_or(DecodeError("unknown coding"))?;
                let length: usize = length
                    .parse()
                    .map_err(|_| DecodeError("bad coding length"))?;
                parsed.push((encoding, length));
            }
            let total = parsed
                .iter()
                .try_fold(0usize, |total, (_, length)| total.checked_add(*length))
                .ok_or(DecodeError("bad coding length"))?;
            let body_length = payload
                .len()
                .checked_sub(total)
                .ok_or(DecodeError("codings longer than the entry"))?;
            let mut at = body_length;
            for (encoding, length) in parsed {
                encoded.set(encoding, bytes.slice_ref(&payload[at..at + length]));
                at += length;
            }
            payload = &payload[..body_length];
        }
        let body = if lz4 {
            Bytes::from(
                lz4_flex::decompress_size_prepended(payload).map_err(|_| DecodeError("bad lz4"))?,
            )
        } else {
            bytes.slice_ref(payload)
        };
        Ok(Entry {
            seq,
            tags,
            etag: etag.to_owned(),
            max_age: max_age.parse().map_err(|_| DecodeError("bad max-age"))?,
            fresh_until,
            body,
            encoded,
        })
    }
}

/// The fill sequence and tags of an encoded entry, without decoding its body.
pub fn split_header(bytes: &[u8]) -> Result<(u64, Vec<String>, &[u8]), DecodeError> {
    let newline = bytes
        .iter()
        .position(|byte| *byte == b'\n')
        .ok_or(DecodeError("no header"))?;
    let header =
        std::str::from_utf8(&bytes[..newline]).map_err(|_| DecodeError("header is not UTF-8"))?;
    let mut words = header.split(' ');
    let seq = words
        .next()
        .and_then(|word| word.parse().ok())
        .ok_or(DecodeError("bad sequence"))?;
    Ok((
        seq,
        words
            .filter(|word| !word.is_empty())
            .map(str::to_owned)
            .collect(),
        &bytes[newline + 1..],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_with_and_without_compression() {
        let entry = Entry {
            seq: 41,
            tags: vec!["Products:category:7".into(), "Category:7".into()],
            etag: "\"abc\"".into(),
            max_age: 600,
            fresh_until: 1_700_000_000_123,
            body: Bytes::from(format!("{{\"data\":{}}}", "[1,2,3],".repeat(500))),
            encoded: Encoded::default(),
        };
        let with_codings = Entry {
            encoded: Encoded::of(&entry.body, 1024),
            ..entry.clone()
        };
        assert!(!with_codings.encoded.is_empty());
        for entry in [&entry, &with_codings] {
            for threshold in [0, usize::MAX] {
                let encoded = entry.encode(threshold);
                assert_eq!(
                    &Entry::decode(Bytes::from(encoded)).expect("decodes"),
                    entry
                );
            }
        }
        assert!(
            entry.encode(0).len() < entry.body.len() / 4,
            "repetitive JSON compresses"
        );
    }

    #[test]
    fn entries_with_impossible_coding_lengths_are_refused_not_sliced() {
        for header in [
            "2 60 9 br:999999\n{}",
            "2 60 9 br:18446744073709551615,gzip:2\n{}",
            "2 60 9 deflate:1\n{}",
            "2 60 9\n{}",
        ] {
            let bytes = Bytes::from(format!("1 Product:1\n\"e\" {header}"));
            assert!(Entry::decode(bytes).is_err(), "{header}");
        }
    }

    #[test]
    fn an_entry_without_a_fresh_until_is_fresh_until_its_backend_expires_it() {
        let written_before = Bytes::from_static(b"7 Product:1\n\"e\" 0 600\n{\"data\":{}}");
        let entry = Entry::decode(written_before).expect("decodes");
        assert_eq!(entry.fresh_until, u64::MAX);
        assert!(entry.is_fresh_at(now_millis()));
    }

    #[test]
    fn ttl_counts_whole_seconds_left_and_goes_negative_once_stale() {
        let entry = Entry {
            seq: 1,
            tags: Vec::new(),
            etag: String::new(),
            max_age: 60,
            fresh_until: 10_000,
            body: Bytes::new(),
            encoded: Encoded::default(),
        };
        assert_eq!(entry.ttl_at(9_000), 1);
        assert_eq!(entry.ttl_at(9_999), 0);
        assert!(!entry.is_fresh_at(10_000));
        assert_eq!(entry.ttl_at(10_000), 0);
        assert_eq!(entry.ttl_at(10_500), -1);
        assert_eq!(entry.ttl_at(13_000), -3);
        assert_eq!(entry.stale_for(13_000), 3_000);
        assert_eq!(entry.stale_for(9_000), 0);
    }
}
