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
    let tracing = match catalog_api::telemetry::init_tracing(&cli.config) {
        Ok(tracing) => tracing,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::exit(1);
        }
    };
    let result = cli::run(cli).await;
    tokio::task::block_in_place(|| tracing.shutdown());
    if let Err(error) = result {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}
