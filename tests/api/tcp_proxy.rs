//! A TCP proxy the test can cut and restore, between the server and its database: an outage
//! of the network path without touching the shared database server. Cut, it closes every
//! proxied connection and holds new ones without forwarding a byte (a dead path, not a
//! refusal), so a client learns of the outage only from its own timeouts.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct TcpProxy {
    pub address: SocketAddr,
    cut: watch::Sender<bool>,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(upstream: String) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let address = listener.local_addr().expect("proxy address");
        let (cut, watching) = watch::channel(false);
        let accept_loop = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, upstream.clone(), watching.clone()));
            }
        });
        TcpProxy {
            address,
            cut,
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
        self.cut.send_replace(true);
    }

    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

async fn relay(mut client: TcpStream, upstream: String, mut cut: watch::Receiver<bool>) {
    if *cut.borrow() {
        // A dead path: hold the connection silently until the path is back, then drop it.
        let _ = cut.wait_for(|cut| !*cut).await;
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = cut.wait_for(|cut| *cut) => {}
    }
}
