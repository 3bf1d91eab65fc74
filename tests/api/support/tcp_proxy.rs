//! A TCP proxy the test can cut, freeze and restore, between the server and its database or
//! Redis: an outage of the network path without touching the shared server. Cut, it closes
//! every proxied connection and holds new ones without forwarding a byte (a dead path, not a
//! refusal), so a client learns of the outage only from its own timeouts. Frozen, it also
//! keeps the open connections open but silent (half-open, as after a network partition),
//! until the path changes again, when they are closed. Slowed, it delivers every byte late
//! by a set delay in each direction (a delay line: throughput is unchanged).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The state of the network path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Open,
    Cut,
    Frozen,
}

pub struct TcpProxy {
    pub address: SocketAddr,
    cut: watch::Sender<Path>,
    /// One-way delay, in microseconds.
    delay: Arc<AtomicU64>,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(upstream: String) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let address = listener.local_addr().expect("proxy address");
        let (cut, watching) = watch::channel(Path::Open);
        let delay = Arc::new(AtomicU64::new(0));
        let delays = Arc::clone(&delay);
        let accept_loop = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let _ = client.set_nodelay(true);
                tokio::spawn(relay(
                    client,
                    upstream.clone(),
                    watching.clone(),
                    Arc::clone(&delays),
                ));
            }
        });
        TcpProxy {
            address,
            cut,
            delay,
            accept_loop,
        }
    }

    /// A proxy in front of `config`'s PostgreSQL database, which `config` is pointed through
    /// (`postgres://user@host:port/database`: host:port goes through the proxy).
    pub async fn in_front_of_database(config: &mut catalog_api::config::Config) -> TcpProxy {
        let (scheme_and_user, rest) = config
            .database_url
            .split_once('@')
            .expect("a database URL with a host");
        let (upstream, database) = rest.split_once('/').expect("a database name");
        let proxy = TcpProxy::start(upstream.to_owned()).await;
        config.database_url = format!("{scheme_and_user}@{}/{database}", proxy.address);
        proxy
    }

    pub fn cut(&self) {
        self.cut.send_replace(Path::Cut);
    }

    /// Stops forwarding without closing anything: the client's connections go silent.
    pub fn freeze(&self) {
        self.cut.send_replace(Path::Frozen);
    }

    pub fn restore(&self) {
        self.cut.send_replace(Path::Open);
    }

    /// Delivers every byte sent from now on `delay` late, in each direction.
    pub fn slow_down(&self, delay: Duration) {
        let micros = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.delay.store(micros, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

async fn relay(
    client: TcpStream,
    upstream: String,
    mut path: watch::Receiver<Path>,
    delay: Arc<AtomicU64>,
) {
    if *path.borrow() != Path::Open {
        // A dead path: hold the connection silently until the path is back, then drop it.
        let _ = path.wait_for(|path| *path == Path::Open).await;
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = server.set_nodelay(true);
    let (client_reads, client_writes) = client.into_split();
    let (server_reads, server_writes) = server.into_split();
    let both_ways = futures::future::join(
        delay_line(client_reads, server_writes, Arc::clone(&delay)),
        delay_line(server_reads, client_writes, delay),
    );
    tokio::select! {
        // Dropping the halves at the end closes the connections.
        _ = both_ways => return,
        _ = path.wait_for(|path| *path != Path::Open) => {}
    }
    if *path.borrow() == Path::Frozen {
        // Half-open: both sockets stay open and silent until the path changes.
        let _ = path.wait_for(|path| *path != Path::Frozen).await;
    }
}

/// Copies one direction, each chunk written `delay` after it was read (none: at once); at the
/// end of the input, shuts the output down.
async fn delay_line(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Arc<AtomicU64>,
) {
    let (sender, mut chunks) =
        tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let reading = async move {
        let mut buffer = vec![0u8; 16 * 1024];
        while let Ok(read) = from.read(&mut buffer).await
            && read > 0
        {
            let due =
                tokio::time::Instant::now() + Duration::from_micros(delay.load(Ordering::SeqCst));
            if sender.send((due, buffer[..read].to_vec())).is_err() {
                return;
            }
        }
    };
    let writing = async move {
        while let Some((due, chunk)) = chunks.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    futures::future::join(reading, writing).await;
}
