//! The `catalog-api` binary: parse the command line, set up logging, run the subcommand.

use catalog_api::cli::{self, Cli};
use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    catalog_api::telemetry::init_tracing(cli.config.log_format);
    if let Err(error) = cli::run(cli).await {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}
