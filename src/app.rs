//! The application: state built from a `Config`, and a server bound to a port. Tests build
//! the very same `App` on port 0 and read the port it reports.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::Config;
use crate::http;
pub use crate::http::state::{AppState, StartupError, load_manifest};

/// A server bound to its port (and its metrics port, when it has one), not yet serving.
pub struct App {
    state: AppState,
    listener: tokio::net::TcpListener,
    address: SocketAddr,
    metrics_listener: Option<(tokio::net::TcpListener, SocketAddr)>,
}

async fn bind(address: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), StartupError> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| StartupError::Bind { address, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| StartupError::Bind { address, source })?;
    Ok((listener, bound))
}

impl App {
    pub async fn build(config: Config) -> Result<App, StartupError> {
        let address = config.bind;
        let metrics_address = config.metrics_bind;
        let state = AppState::build(config).await?;
        let (listener, address) = bind(address).await?;
        let metrics_listener = match metrics_address {
            Some(address) => Some(bind(address).await?),
            None => None,
        };
        Ok(App {
            state,
            listener,
            address,
            metrics_listener,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Where `/metrics` is served when `CATALOG_METRICS_BIND` is set.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().map(|(_, address)| *address)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish for the shutdown
    /// grace period and closes the connections still open after it.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let config = &self.state.config;
        let limits = http::server::ConnectionLimits {
            header_read_timeout: config.header_read_timeout(),
            shutdown_grace: config.shutdown_grace(),
        };
        let connections = Arc::new(tokio::sync::Semaphore::new(config.max_connections()));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let signal = tokio::spawn(async move {
            shutdown.await;
            let _ = stop.send(true);
        });
        let metrics = self.metrics_listener.map(|(listener, _)| {
            http::server::serve(
                listener,
                http::metrics_router(self.state.clone()),
                limits,
                Arc::clone(&connections),
                stopped.clone(),
            )
        });
        let api = http::server::serve(
            self.listener,
            http::router(self.state),
            limits,
            connections,
            stopped,
        );
        match metrics {
            Some(metrics) => {
                tokio::join!(api, metrics);
            }
            None => api.await,
        }
        signal.abort();
        Ok(())
    }
}
