//! Response compression: the three content codings browsers and proxies ask for (br, zstd,
//! gzip), the choice among them by a request's `Accept-Encoding` (RFC 9110 12.5.3), and the
//! compressed forms a cache entry keeps beside its body. A cached result is compressed once,
//! when its entry is filled, so a hit writes stored bytes whichever coding the client takes;
//! anything else is compressed when it is sent, above a size threshold.

use std::io::Write;

use bytes::Bytes;

/// A content coding catalog-api can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentEncoding {
    Brotli,
    Zstd,
    Gzip,
}

impl ContentEncoding {
    /// In order of preference when a client accepts several equally: smallest output first.
    pub const ALL: [ContentEncoding; 3] = [
        ContentEncoding::Brotli,
        ContentEncoding::Zstd,
        ContentEncoding::Gzip,
    ];

    /// The coding's name in `Content-Encoding` and `Accept-Encoding`.
    pub fn as_str(self) -> &'static str {
        match self {
            ContentEncoding::Brotli => "br",
            ContentEncoding::Zstd => "zstd",
            ContentEncoding::Gzip => "gzip",
        }
    }

    fn from_token(token: &str) -> Option<Self> {
        let token = token.trim();
        [
            ("br", ContentEncoding::Brotli),
            ("zstd", ContentEncoding::Zstd),
            ("gzip", ContentEncoding::Gzip),
            ("x-gzip", ContentEncoding::Gzip),
        ]
        .into_iter()
        .find_map(|(name, encoding)| token.eq_ignore_ascii_case(name).then_some(encoding))
    }

    /// `body` in this coding. `Effort::Stored` spends more time for smaller output (it runs
    /// once per cache fill); `Effort::OnTheFly` stays fast (it runs for every response).
    pub fn compress(self, body: &[u8], effort: Effort) -> Bytes {
        let mut out = Vec::with_capacity(body.len() / 4 + 64);
        // Writing into a Vec cannot fail; the codecs' own errors are for their readers.
        let written = match self {
            ContentEncoding::Brotli => {
                // Quality 4 either way: on a 10 KiB page, 6 and 9 took 1 to 1.5 ms instead of
                // 0.06 ms for 9 % smaller output (`cargo bench --bench hot_paths -- compression`).
                let params = brotli::enc::BrotliEncoderParams {
                    quality: 4,
                    // A window no larger than the body: a 4 MiB window for a 10 KiB page
                    // costs more to set up than to compress.
                    lgwin: window_bits(body.len()),
                    size_hint: body.len(),
                    ..Default::default()
                };
                brotli::BrotliCompress(&mut &body[..], &mut out, &params).map(drop)
            }
            ContentEncoding::Zstd => {
                let level = match effort {
                    Effort::Stored => 9,
                    Effort::OnTheFly => 3,
                };
                // One shot, with the size known, so zstd sizes its tables to the body.
                zstd::bulk::compress(body, level).map(|compressed| out = compressed)
            }
            ContentEncoding::Gzip => {
                let level = match effort {
                    Effort::Stored => flate2::Compression::new(6),
                    Effort::OnTheFly => flate2::Compression::new(5),
                };
                let mut encoder = flate2::write::GzEncoder::new(&mut out, level);
                encoder
                    .write_all(body)
                    .and_then(|()| encoder.finish().map(drop))
            }
        };
        debug_assert!(written.is_ok(), "compressing into memory cannot fail");
        Bytes::from(out)
    }
}

/// Brotli's window for a body of `length` bytes: the smallest that holds it, within the
/// format's 10 to 24 bits (22 is the encoder's default and the most a decoder must support
/// without asking for more memory).
fn window_bits(length: usize) -> i32 {
    let bits = usize::BITS - length.max(1).leading_zeros();
    bits.clamp(10, 22) as i32
}

/// How hard to compress: see `ContentEncoding::compress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effort {
    Stored,
    OnTheFly,
}

/// A body's compressed forms, made once when a cache entry is filled. Empty for bodies below
/// the threshold, where compression saves less than it costs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Encoded {
    pub brotli: Option<Bytes>,
    pub zstd: Option<Bytes>,
    pub gzip: Option<Bytes>,
}

impl Encoded {
    /// Every coding of `body` when it is at least `min_bytes` long; none otherwise.
    pub fn of(body: &[u8], min_bytes: usize) -> Self {
        if body.len() < min_bytes {
            return Encoded::default();
        }
        let stored = |encoding: ContentEncoding| Some(encoding.compress(body, Effort::Stored));
        Encoded {
            brotli: stored(ContentEncoding::Brotli),
            zstd: stored(ContentEncoding::Zstd),
            gzip: stored(ContentEncoding::Gzip),
        }
    }

    pub fn get(&self, encoding: ContentEncoding) -> Option<&Bytes> {
        match encoding {
            ContentEncoding::Brotli => self.brotli.as_ref(),
            ContentEncoding::Zstd => self.zstd.as_ref(),
            ContentEncoding::Gzip => self.gzip.as_ref(),
        }
    }

    pub fn set(&mut self, encoding: ContentEncoding, bytes: Bytes) {
        match encoding {
            ContentEncoding::Brotli => self.brotli = Some(bytes),
            ContentEncoding::Zstd => self.zstd = Some(bytes),
            ContentEncoding::Gzip => self.gzip = Some(bytes),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.brotli.is_none() && self.zstd.is_none() && self.gzip.is_none()
    }

    /// The stored forms with their codings, in preference order.
    pub fn iter(&self) -> impl Iterator<Item = (ContentEncoding, &Bytes)> {
        ContentEncoding::ALL
            .into_iter()
            .filter_map(|encoding| Some((encoding, self.get(encoding)?)))
    }

    /// Bytes held, for caches bounded by size.
    pub fn len(&self) -> usize {
        self.iter().map(|(_, bytes)| bytes.len()).sum()
    }
}

/// The coding to send a client whose `Accept-Encoding` values are `accept`: the one it
/// weighs highest (`q`), the smallest on a tie; `None` for identity (no header, nothing we
/// offer accepted, or every coding refused with `q=0`). A `*` stands for every coding the
/// header does not name.
pub fn negotiate<'a>(accept: impl Iterator<Item = &'a [u8]>) -> Option<ContentEncoding> {
    // Weights in thousandths, by `ContentEncoding::ALL`'s order; `None` until named.
    let mut named: [Option<u16>; 3] = [None; 3];
    let mut any: Option<u16> = None;
    for value in accept {
        let Ok(value) = std::str::from_utf8(value) else {
            continue;
        };
        for member in value.split(',') {
            let mut parts = member.split(';');
            let token = parts.next().unwrap_or("").trim();
            let weight = parts
                .find_map(|parameter| {
                    let (name, value) = parameter.split_once('=')?;
                    name.trim()
                        .eq_ignore_ascii_case("q")
                        .then(|| parse_weight(value.trim()))
                })
                .unwrap_or(Some(1000));
            let Some(weight) = weight else {
                continue;
            };
            if token == "*" {
                any = Some(weight);
            } else if let Some(encoding) = ContentEncoding::from_token(token) {
                let slot = &mut named[index_of(encoding)];
                *slot = Some(slot.map_or(weight, |known| known.max(weight)));
            }
        }
    }
    let mut best: Option<(ContentEncoding, u16)> = None;
    for encoding in ContentEncoding::ALL {
        let weight = named[index_of(encoding)].or(any).unwrap_or(0);
        if weight > 0 && best.is_none_or(|(_, known)| weight > known) {
            best = Some((encoding, weight));
        }
    }
    best.map(|(encoding, _)| encoding)
}

fn index_of(encoding: ContentEncoding) -> usize {
    match encoding {
        ContentEncoding::Brotli => 0,
        ContentEncoding::Zstd => 1,
        ContentEncoding::Gzip => 2,
    }
}

/// A `qvalue` (`0`, `0.5`, `1.000`) in thousandths; `None` when malformed.
fn parse_weight(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let thousandths = format!("{fraction:0<3}").parse::<u16>().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// The ETag of `etag`'s representation in `encoding`: a strong validator names one
/// representation (RFC 9110 8.8.3), so each coding gets its own (`"abc"` -> `"abc-br"`).
pub fn representation_etag(etag: &str, encoding: Option<ContentEncoding>) -> String {
    match (encoding, etag.strip_suffix('"')) {
        (Some(encoding), Some(open)) => format!("{open}-{}\"", encoding.as_str()),
        _ => etag.to_owned(),
    }
}

/// Whether an `If-None-Match` candidate was made from `etag`, whichever coding it named
/// (`"abc-br"` names `"abc"`; see `representation_etag`). Compares in place: a conditional
/// request allocates nothing per candidate.
pub fn names_etag(candidate: &str, etag: &str) -> bool {
    let coded = candidate.strip_suffix('"').and_then(|open| {
        ContentEncoding::ALL
            .iter()
            .find_map(|encoding| open.strip_suffix(encoding.as_str())?.strip_suffix('-'))
    });
    match coded {
        Some(open) => etag.strip_suffix('"') == Some(open),
        None => candidate == etag,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn choose(header: &str) -> Option<ContentEncoding> {
        negotiate(std::iter::once(header.as_bytes()))
    }

    #[test]
    fn the_client_weighs_codings_and_ties_go_to_the_smallest() {
        assert_eq!(
            choose("gzip, deflate, br, zstd"),
            Some(ContentEncoding::Brotli)
        );
        assert_eq!(choose("gzip, deflate"), Some(ContentEncoding::Gzip));
        assert_eq!(choose("x-gzip"), Some(ContentEncoding::Gzip));
        assert_eq!(choose("zstd;q=1, br;q=0.5"), Some(ContentEncoding::Zstd));
        assert_eq!(choose("br;q=0, gzip;q=0.1"), Some(ContentEncoding::Gzip));
        assert_eq!(choose("*"), Some(ContentEncoding::Brotli));
        assert_eq!(choose("br;q=0, *;q=0.3"), Some(ContentEncoding::Zstd));
        assert_eq!(choose("identity"), None);
        assert_eq!(choose("deflate, compress"), None);
        assert_eq!(choose("gzip;q=0"), None);
        assert_eq!(
            choose("gzip;q=2, br;q=0.x"),
            None,
            "malformed weights are ignored"
        );
        assert_eq!(negotiate(std::iter::empty()), None);
        assert_eq!(
            negotiate(["gzip".as_bytes(), "BR;Q=0.9".as_bytes()].into_iter()),
            Some(ContentEncoding::Gzip)
        );
    }

    #[test]
    fn every_coding_decodes_back_to_the_body() {
        let body = format!(
            "{{\"data\":[{}]}}",
            "{\"id\":\"1\",\"price\":\"9.99\"},".repeat(300)
        );
        for effort in [Effort::Stored, Effort::OnTheFly] {
            for encoding in ContentEncoding::ALL {
                let compressed = encoding.compress(body.as_bytes(), effort);
                assert!(
                    compressed.len() < body.len() / 10,
                    "{encoding:?} compresses"
                );
                let mut decoded = Vec::new();
                match encoding {
                    ContentEncoding::Brotli => {
                        brotli::Decompressor::new(&compressed[..], 4096)
                            .read_to_end(&mut decoded)
                            .expect("brotli");
                    }
                    ContentEncoding::Zstd => {
                        decoded = zstd::stream::decode_all(&compressed[..]).expect("zstd");
                    }
                    ContentEncoding::Gzip => {
                        flate2::read::GzDecoder::new(&compressed[..])
                            .read_to_end(&mut decoded)
                            .expect("gzip");
                    }
                }
                assert_eq!(decoded, body.as_bytes(), "{encoding:?} {effort:?}");
            }
        }
    }

    #[test]
    fn small_bodies_keep_no_compressed_forms() {
        assert!(Encoded::of(b"{\"data\":{}}", 1024).is_empty());
        let encoded = Encoded::of(&[b'a'; 2048], 1024);
        assert_eq!(encoded.iter().count(), 3);
    }

    #[test]
    fn each_coding_has_its_own_etag_and_every_one_names_the_same_result() {
        let etag = "\"abc\"";
        for encoding in ContentEncoding::ALL {
            let tagged = representation_etag(etag, Some(encoding));
            assert_ne!(tagged, etag);
            assert!(names_etag(&tagged, etag));
            assert!(!names_etag(&tagged, "\"abd\""));
        }
        assert_eq!(representation_etag(etag, None), etag);
        assert!(names_etag(etag, etag));
        assert!(!names_etag("\"abc-deflate\"", etag));
        assert!(!names_etag("abc-br", "abc"));
    }
}
