//! A cached response as stored in a backend: a one-line text header that Redis' Lua can read
//! (the invalidation sequence at fill time and the entry's tags), a second header line
//! (ETag, compression flag, max-age), then the response body, lz4-compressed when large.

use bytes::Bytes;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The backend's invalidation sequence when the fill started; stale if any tag moved past it.
    pub seq: u64,
    pub tags: Vec<String>,
    pub etag: String,
    pub max_age: u32,
    /// The serialized GraphQL response, exactly as sent to clients.
    pub body: Bytes,
}

#[derive(Debug, thiserror::Error)]
#[error("malformed cache entry: {0}")]
pub struct DecodeError(&'static str);

impl Entry {
    /// Approximate bytes held in memory, for caches bounded by size.
    pub fn weight(&self) -> usize {
        self.body.len() + self.etag.len() + self.tags.iter().map(String::len).sum::<usize>() + 64
    }

    pub fn encode(&self, compress_above: usize) -> Vec<u8> {
        let compressed = self.body.len() > compress_above;
        let payload: std::borrow::Cow<'_, [u8]> = if compressed {
            lz4_flex::compress_prepend_size(&self.body).into()
        } else {
            (&self.body[..]).into()
        };
        let mut out = Vec::with_capacity(payload.len() + 64 + self.tags.len() * 16);
        out.extend_from_slice(self.seq.to_string().as_bytes());
        for tag in &self.tags {
            out.push(b' ');
            out.extend_from_slice(tag.as_bytes());
        }
        out.push(b'\n');
        out.extend_from_slice(
            format!("{} {} {}\n", self.etag, u8::from(compressed), self.max_age).as_bytes(),
        );
        out.extend_from_slice(&payload);
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
        let payload = &rest[newline + 1..];
        let body = match flag {
            "1" => Bytes::from(
                lz4_flex::decompress_size_prepended(payload).map_err(|_| DecodeError("bad lz4"))?,
            ),
            "0" => bytes.slice_ref(payload),
            _ => return Err(DecodeError("bad compression flag")),
        };
        Ok(Entry {
            seq,
            tags,
            etag: etag.to_owned(),
            max_age: max_age.parse().map_err(|_| DecodeError("bad max-age"))?,
            body,
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
            body: Bytes::from(format!("{{\"data\":{}}}", "[1,2,3],".repeat(500))),
        };
        for threshold in [0, usize::MAX] {
            let encoded = entry.encode(threshold);
            assert_eq!(Entry::decode(Bytes::from(encoded)).expect("decodes"), entry);
        }
        assert!(
            entry.encode(0).len() < entry.body.len() / 4,
            "repetitive JSON compresses"
        );
    }
}
