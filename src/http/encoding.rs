//! Which bytes a GraphQL response goes out as: the client's preferred content coding
//! (`Accept-Encoding`), taken from the cache entry's stored forms when it has them, so a hit
//! never compresses, and compressed as it is sent otherwise, above the size threshold. Each
//! coding is its own representation with its own ETag; `Vary: Accept-Encoding` says so.

use axum::http::{HeaderMap, HeaderValue, header};
use bytes::Bytes;

use crate::compression::{ContentEncoding, Effort, Encoded, negotiate};

/// Larger bodies are compressed on a blocking thread: it takes milliseconds.
const INLINE_MAX_BYTES: usize = 64 * 1024;

/// How this request's response is encoded: the coding it gets, from which size.
#[derive(Debug, Clone, Copy)]
pub(super) struct ResponseEncoding {
    /// `None` when compression is off or the client accepts no coding we offer.
    choice: Option<ContentEncoding>,
    min_bytes: usize,
}

impl ResponseEncoding {
    /// The coding for a client that sent `headers`; `min_bytes` is `None` when compression
    /// is off.
    pub(super) fn for_request(headers: &HeaderMap, min_bytes: Option<usize>) -> Self {
        let choice = min_bytes.and_then(|_| {
            negotiate(
                headers
                    .get_all(header::ACCEPT_ENCODING)
                    .iter()
                    .map(HeaderValue::as_bytes),
            )
        });
        ResponseEncoding {
            choice,
            min_bytes: min_bytes.unwrap_or(usize::MAX),
        }
    }

    /// The coding a body of `length` bytes goes out in (`None`: as it is).
    pub(super) fn for_length(self, length: usize) -> Option<ContentEncoding> {
        self.choice.filter(|_| length >= self.min_bytes)
    }

    /// `body` in the coding it goes out in: a `stored` form when there is one, else
    /// compressed now. Returns the bytes and the coding they are in.
    pub(super) async fn encode(
        self,
        body: Bytes,
        stored: &Encoded,
    ) -> (Bytes, Option<ContentEncoding>) {
        let Some(encoding) = self.for_length(body.len()) else {
            return (body, None);
        };
        if let Some(stored) = stored.get(encoding) {
            return (stored.clone(), Some(encoding));
        }
        if body.len() <= INLINE_MAX_BYTES {
            return (encoding.compress(&body, Effort::OnTheFly), Some(encoding));
        }
        let uncompressed = body.clone();
        let compressing =
            tokio::task::spawn_blocking(move || encoding.compress(&body, Effort::OnTheFly));
        match compressing.await {
            Ok(compressed) => (compressed, Some(encoding)),
            // The blocking pool is shutting down: send the body as it is.
            Err(_) => (uncompressed, None),
        }
    }
}

/// Marks a response whose body is in `encoding`.
pub(super) fn insert_content_encoding(headers: &mut HeaderMap, encoding: Option<ContentEncoding>) {
    if let Some(encoding) = encoding {
        headers.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(encoding.as_str()),
        );
    }
}
