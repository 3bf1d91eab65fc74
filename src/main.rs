//! The `catalog-api` binary: parse the command line, set up logging, run the subcommand.

use catalog_api::cli::{self, Cli};
use clap::Parser;

/// mimalloc: request handling allocates many small, short-lived objects, and the system
/// allocator showed up at the top of the profile (see docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    catalog_api::telemetry::init_tracing(cli.config.log_format);
    if let Err(error) = cli::run(cli).await {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}
