//! The accept loop. Every connection is bounded: in number (a semaphore; past it, new clients
//! wait in the kernel's listen backlog rather than take descriptors the server needs), in how
//! long its request headers may take (hyper's header read timeout), and in how long a graceful
//! shutdown waits for it. axum::serve has none of these knobs, so hyper serves directly.
//! HTTP/1.1 only: HTTP/2 version sniffing has no deadline, so a silent client would stay.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tower::ServiceExt;

/// How long the loop waits before accepting again after an accept error (out of descriptors).
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub shutdown_grace: Duration,
}

/// Largest request head (request line and headers) read from a client; a longer URL or
/// larger headers are answered 431.
pub const MAX_REQUEST_HEAD_BYTES: usize = 32 * 1024;

/// Serves `router` on `listener` until `stop` turns true, then lets open connections finish
/// for the grace period and closes whatever is left. `connections` is shared by every
/// listener of the process, so it bounds the whole server.
///
/// Request heads are bounded by [`MAX_REQUEST_HEAD_BYTES`]; a longer URL or larger headers
/// get 431 before anything else is read.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    connections: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(MAX_REQUEST_HEAD_BYTES);
    let graceful = GracefulShutdown::new();
    let mut tasks = JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        let permit = tokio::select! {
            permit = Arc::clone(&connections).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = stopped(&mut stop) => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => (stream, peer),
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let _ = stream.set_nodelay(true);
        // The peer address, for rate limits (as axum's `ConnectInfo`).
        let service = router.clone().map_request(
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            },
        );
        let connection =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tasks.spawn(async move {
            // Errors here are the client's (a reset, a header timeout): nothing to report.
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = tasks.len(),
            grace_ms = limits.shutdown_grace.as_millis() as u64,
            "closing the connections still open after the shutdown grace period"
        );
        tasks.abort_all();
    }
    while tasks.join_next().await.is_some() {}
}

/// Resolves once `stop` is true (at once if it already is, or if its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}
