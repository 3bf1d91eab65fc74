//! The accept loop. Every connection is bounded: in number (a semaphore; past it, clients wait
//! in the listen backlog), in how long its request headers may take, in how long it may sit
//! idle, and in how long a graceful shutdown waits for it; axum::serve has none of these knobs.
//! HTTP/2 with prior knowledge (RFC 9113 §3.3) shares the port with HTTP/1.1 and keeps its
//! bounds, plus [`MAX_CONCURRENT_STREAMS`]. `Upgrade: h2c` is deprecated by RFC 9113 §3.1
//! ("never widely deployed") and not implemented: such a request is answered over HTTP/1.1.

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::server::conn::{http1, http2};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tower::ServiceExt;

use super::protocol::{self, Protocol};

/// How long the loop waits before accepting again after an accept error (out of descriptors).
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub shutdown_grace: Duration,
}

/// Largest request head (request line and headers) read from a client; a longer URL or
/// larger headers are answered 431. Over HTTP/2 it is the header list size (RFC 9113 §6.5.2:
/// names and values plus 32 bytes a field), also answered 431; past four times it, h2 closes
/// the connection.
pub const MAX_REQUEST_HEAD_BYTES: usize = 32 * 1024;

/// Requests one HTTP/2 connection may have open at once; further streams are refused
/// (REFUSED_STREAM) until one ends. An HTTP/1.1 connection carries one at a time. RFC 9113
/// §6.5.2 recommends no fewer than 100, so as not to limit parallelism needlessly.
pub const MAX_CONCURRENT_STREAMS: u32 = 100;

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
    let builders = Arc::new(Builders::new(limits));
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
        tasks.spawn(serve_connection(
            stream,
            peer,
            router.clone(),
            Arc::clone(&builders),
            stop.clone(),
            permit,
        ));
    }
    drop(listener);
    let finished = tokio::time::timeout(limits.shutdown_grace, async {
        while tasks.join_next().await.is_some() {}
    });
    if finished.await.is_err() {
        tracing::warn!(
            connections = tasks.len(),
            grace_ms = limits.shutdown_grace.as_millis() as u64,
            "closing the connections still open after the shutdown grace period"
        );
        tasks.abort_all();
    }
    while tasks.join_next().await.is_some() {}
}

/// Both protocols' settings, made once per listener.
struct Builders {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    /// How long a connection may wait for its first request, and stay idle after one.
    header_read_timeout: Duration,
}

impl Builders {
    fn new(limits: ConnectionLimits) -> Builders {
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_header_size(MAX_REQUEST_HEAD_BYTES);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        // h2's defaults stay for what is not set here: 20 streams reset by the client before
        // they are served and 1,024 reset by the server (then GOAWAY: rapid-reset floods),
        // 1 MiB flow-control windows, 16 KiB frames, 400 KiB of response buffered per stream.
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(MAX_REQUEST_HEAD_BYTES as u32)
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            // A peer that stops answering pings is gone: closed after two timeouts at most.
            .keep_alive_interval(limits.header_read_timeout)
            .keep_alive_timeout(limits.header_read_timeout);
        Builders {
            http1,
            http2,
            header_read_timeout: limits.header_read_timeout,
        }
    }
}

/// Reads the connection's first bytes under the header read timeout, then serves it with
/// the protocol they name until it ends, is idle too long, or the server stops.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    builders: Arc<Builders>,
    mut stop: watch::Receiver<bool>,
    permit: OwnedSemaphorePermit,
) {
    let detected = tokio::select! {
        detected = protocol::detect(stream, builders.header_read_timeout) => detected,
        // No request has started: there is nothing to let finish.
        () = stopped(&mut stop) => return,
    };
    // Errors here are the client's (silent, closed, reset): nothing to report.
    let Ok((protocol, stream)) = detected else {
        return;
    };
    // The peer address, for rate limits (as axum's `ConnectInfo`).
    let service = TowerToHyperService::new(router.map_request(
        move |mut request: axum::http::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request
        },
    ));
    let io = TokioIo::new(stream);
    match protocol {
        // hyper's header read timeout closes an idle HTTP/1.1 connection itself.
        Protocol::Http1 => {
            let connection = builders.http1.serve_connection(io, service);
            finish_on_stop(connection, &mut stop).await;
        }
        Protocol::Http2 => {
            let activity = Arc::new(StreamActivity::default());
            let counted = {
                let activity = Arc::clone(&activity);
                hyper::service::service_fn(move |request| {
                    let in_flight = activity.start();
                    let response = service.call(request);
                    async move {
                        let response = response.await;
                        drop(in_flight);
                        response
                    }
                })
            };
            let connection = builders.http2.serve_connection(io, counted);
            serve_http2(
                connection,
                &activity,
                builders.header_read_timeout,
                &mut stop,
            )
            .await;
        }
    }
    drop(permit);
}

/// Drives `connection` to its end; once `stop` turns true, asks it to finish gracefully (an
/// HTTP/1.1 connection closes after its current response).
async fn finish_on_stop<C: GracefulConnection>(connection: C, stop: &mut watch::Receiver<bool>) {
    let mut connection = pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        () = stopped(stop) => connection.as_mut().graceful_shutdown(),
    }
    let _ = connection.await;
}

/// Drives an HTTP/2 connection to its end. It gets a GOAWAY (streams already open still
/// finish) when the server stops, or when it has had no request open and started none for a
/// whole `idle_timeout`; if it is still idle one `idle_timeout` after the GOAWAY, it is closed.
async fn serve_http2<C: GracefulConnection>(
    connection: C,
    activity: &StreamActivity,
    idle_timeout: Duration,
    stop: &mut watch::Receiver<bool>,
) {
    let mut connection = pin!(connection);
    let mut idle_check =
        tokio::time::interval_at(tokio::time::Instant::now() + idle_timeout, idle_timeout);
    let mut started_at_last_check = 0;
    let mut going_away = false;
    loop {
        tokio::select! {
            _ = connection.as_mut() => return,
            () = stopped(stop), if !going_away => {
                connection.as_mut().graceful_shutdown();
                going_away = true;
            }
            _ = idle_check.tick() => {
                let started = activity.started.load(Ordering::Relaxed);
                let idle = started == started_at_last_check
                    && activity.in_flight.load(Ordering::Relaxed) == 0;
                started_at_last_check = started;
                if idle && going_away {
                    return;
                }
                if idle {
                    connection.as_mut().graceful_shutdown();
                    going_away = true;
                }
            }
        }
    }
}

/// Requests an HTTP/2 connection has started and still has in flight, for its idle check.
#[derive(Debug, Default)]
struct StreamActivity {
    started: AtomicU64,
    in_flight: AtomicUsize,
}

impl StreamActivity {
    fn start(self: &Arc<Self>) -> InFlight {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }
}

/// One request in flight; ends when its response is ready or the client resets the stream.
struct InFlight(Arc<StreamActivity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Resolves once `stop` is true (at once if it already is, or if its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}
