//! Which HTTP a connection speaks, read from its first bytes under a deadline. HTTP/2 with
//! prior knowledge opens with a fixed 24-byte preface; anything else is HTTP/1.1. hyper-util's
//! auto builder makes the same choice with no deadline, so a client that sends nothing would
//! hold its connection forever: here the choice is bounded by the header read timeout, and the
//! bytes read to make it are replayed to hyper by [`Replayed`].

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// What an HTTP/2 client with prior knowledge sends first (RFC 9113 §3.4).
pub const HTTP2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

/// Why a connection ended before its protocol was known. None of these is the server's fault.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("the client sent no complete opening within {timeout_ms} ms")]
    TimedOut { timeout_ms: u64 },
    #[error("the client closed the connection before its first request")]
    Closed,
    #[error("cannot read the connection: {0}")]
    Io(#[from] io::Error),
}

/// Reads from `stream` until its first bytes differ from the HTTP/2 preface (HTTP/1.1: for a
/// request line that is the first byte) or match all of it (HTTP/2), within `timeout`.
/// Returns the protocol and the stream with those bytes put back in front. hyper's own header
/// read timeout starts after this returns, so an HTTP/1.1 head has at most twice the timeout
/// from the connection's start (a client that waits almost the timeout before its first byte).
pub async fn detect<S>(
    mut stream: S,
    timeout: Duration,
) -> Result<(Protocol, Replayed<S>), DetectError>
where
    S: AsyncRead + Unpin,
{
    let mut opening = [0u8; HTTP2_PREFACE.len()];
    let read = tokio::time::timeout(timeout, async {
        let mut filled = 0;
        loop {
            let read = stream.read(&mut opening[filled..]).await?;
            if read == 0 {
                return Err(DetectError::Closed);
            }
            filled += read;
            if opening[..filled] != HTTP2_PREFACE[..filled] {
                return Ok((Protocol::Http1, filled));
            }
            if filled == HTTP2_PREFACE.len() {
                return Ok((Protocol::Http2, filled));
            }
        }
    })
    .await;
    let (protocol, filled) = read.map_err(|_| DetectError::TimedOut {
        timeout_ms: timeout.as_millis() as u64,
    })??;
    Ok((
        protocol,
        Replayed {
            opening,
            replayed: 0,
            filled,
            stream,
        },
    ))
}

/// A stream whose first reads return the bytes [`detect`] consumed, then the stream itself.
/// Writes go straight through.
#[derive(Debug)]
pub struct Replayed<S> {
    opening: [u8; HTTP2_PREFACE.len()],
    replayed: usize,
    filled: usize,
    stream: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Replayed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.replayed < this.filled {
            let count = buffer.remaining().min(this.filled - this.replayed);
            buffer.put_slice(&this.opening[this.replayed..this.replayed + count]);
            this.replayed += count;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(context, buffer)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replayed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(context, bytes)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(context)
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(context)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncWriteExt, duplex};

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(5);

    async fn read_all(mut stream: impl AsyncRead + Unpin) -> Vec<u8> {
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).await.expect("read");
        bytes
    }

    #[tokio::test]
    async fn a_request_line_is_http1_and_is_replayed_whole() {
        let (mut client, server) = duplex(1024);
        let request = b"GET /healthz HTTP/1.1\r\nHost: catalog\r\n\r\n";
        client.write_all(request).await.expect("write");
        drop(client);
        let (protocol, replayed) = detect(server, TIMEOUT).await.expect("detected");
        assert_eq!(protocol, Protocol::Http1);
        assert_eq!(read_all(replayed).await, request);
    }

    #[tokio::test]
    async fn the_preface_trickled_byte_by_byte_is_http2_and_is_replayed_with_what_follows() {
        let (mut client, server) = duplex(1024);
        let detected = tokio::spawn(detect(server, TIMEOUT));
        for byte in HTTP2_PREFACE {
            client.write_all(&[*byte]).await.expect("write");
            tokio::task::yield_now().await;
        }
        let (protocol, replayed) = detected.await.expect("task").expect("detected");
        assert_eq!(protocol, Protocol::Http2);
        client.write_all(b"frames").await.expect("write");
        drop(client);
        let mut expected = HTTP2_PREFACE.to_vec();
        expected.extend_from_slice(b"frames");
        assert_eq!(read_all(replayed).await, expected);
    }

    #[tokio::test]
    async fn a_client_that_diverges_from_the_preface_midway_is_http1() {
        let (mut client, server) = duplex(1024);
        client
            .write_all(b"PRI * HTTP/1.1\r\n")
            .await
            .expect("write");
        let (protocol, _) = detect(server, TIMEOUT).await.expect("detected");
        assert_eq!(protocol, Protocol::Http1);
    }

    #[tokio::test]
    async fn a_silent_client_and_one_stalled_inside_the_preface_time_out() {
        for opening in [&b""[..], &HTTP2_PREFACE[..10]] {
            let (mut client, server) = duplex(1024);
            client.write_all(opening).await.expect("write");
            let started = std::time::Instant::now();
            let timeout = Duration::from_millis(100);
            let result = detect(server, timeout).await;
            assert!(
                matches!(result, Err(DetectError::TimedOut { timeout_ms: 100 })),
                "{result:?}"
            );
            assert!(started.elapsed() >= timeout);
        }
    }

    #[tokio::test]
    async fn a_client_that_closes_inside_the_preface_is_closed() {
        let (mut client, server) = duplex(1024);
        client.write_all(b"PRI * ").await.expect("write");
        drop(client);
        let result = detect(server, TIMEOUT).await;
        assert!(matches!(result, Err(DetectError::Closed)), "{result:?}");
    }
}
