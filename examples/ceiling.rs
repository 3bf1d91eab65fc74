//! The ceiling for the load benchmark: a bare axum server (`axum::serve`, no layers, no
//! limits) that answers GET and POST on `/graphql` and `/healthz` with one fixed JSON body.
//! No Rust HTTP server does less per request on this machine, so `scripts/bench.py` reports
//! each workload's req/s as a share of this server's req/s for W1's response body.
//! It runs on catalog-api's runtime and allocator (tokio's default multi-threaded runtime,
//! mimalloc) with TCP_NODELAY as catalog-api sets it, so the share measures catalog-api's
//! own work. Build: `cargo build --release --example ceiling`.

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::Router;
use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use axum::serve::ListenerExt;
use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(about = "Answers GET and POST on /graphql and /healthz with a fixed JSON body")]
struct Arguments {
    /// Address to listen on.
    #[arg(long, env = "CEILING_BIND", default_value = "127.0.0.1:8100")]
    bind: SocketAddr,
    /// File whose bytes are every response's body.
    body: PathBuf,
}

#[tokio::main]
async fn main() {
    let arguments = Arguments::parse();
    let body = match std::fs::read(&arguments.body) {
        Ok(body) => Bytes::from(body),
        Err(error) => exit(&format!(
            "cannot read {}: {error}",
            arguments.body.display()
        )),
    };
    // The request body is read whole, as catalog-api reads a POST's, then ignored.
    let answer = move |_request_body: Bytes| {
        let body = body.clone();
        async move { ([(CONTENT_TYPE, "application/json")], body) }
    };
    let router = Router::new()
        .route("/graphql", get(answer.clone()).post(answer.clone()))
        .route("/healthz", get(answer.clone()).post(answer));
    let listener = match tokio::net::TcpListener::bind(arguments.bind).await {
        Ok(listener) => listener,
        Err(error) => exit(&format!("cannot listen on {}: {error}", arguments.bind)),
    };
    let listener = listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    });
    if let Err(error) = axum::serve(listener, router).await {
        exit(&format!("serving failed: {error}"));
    }
}

fn exit(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}
