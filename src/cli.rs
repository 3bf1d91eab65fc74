//! The command line: `serve` (the default), `seed`, `token`, `schema` and `cache`.
//! Output meant for scripts goes to stdout (a new token, the token list, the SDL); everything
//! else to stderr.

use std::time::Instant;

use clap::{Parser, Subcommand};

use crate::app::{App, AppState, StartupError};
use crate::auth::{Credentials, Principal};
use crate::config::Config;
use crate::db::seed::{self, SeedPlan};
use crate::graphql::executor::{Caller, Operation, Transport};
use crate::telemetry::RequestId;

#[derive(Debug, Parser)]
#[command(
    name = "catalog-api",
    version,
    about = "A cached GraphQL API for a product catalog"
)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API (the default).
    Serve,
    /// Load the deterministic data set (idempotent).
    Seed {
        #[arg(long, default_value_t = 50)]
        categories: u32,
        #[arg(long, default_value_t = 10_000)]
        products: u32,
    },
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Print the GraphQL schema (SDL), as checked in at `schema.graphql`.
    Schema,
    /// Manage the response cache.
    #[command(subcommand)]
    Cache(CacheCommand),
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; prints the token alone on stdout (it is shown only once).
    Create { name: String },
    /// List tokens (never the tokens themselves).
    List,
    /// Revoke a token by id: every server refuses it within its revocation poll interval
    /// plus one request (CATALOG_REVOCATION_POLL_MS, 1 s by default), however it is revoked;
    /// with REDIS_URL set, this command also forgets the cached validation at once.
    Revoke { id: i32 },
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Fill the cache with the most requested operations (and the manifest's, and the dashboard).
    WarmUp {
        /// How many of the most executed operations to replay.
        #[arg(long, default_value_t = 50)]
        top: usize,
        /// A token, to warm the private dashboard statistics of that token.
        #[arg(long, env = "CATALOG_WARM_UP_TOKEN")]
        token: Option<String>,
    },
    /// Delete every key under this server's prefix (never FLUSHDB), and purge the edge's copies
    /// (the deployment's `all` tag) when an edge purger is configured.
    Clear,
    /// Backend and prefix statistics, and today's hit rate.
    Stats,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error("{0}")]
    Failed(String),
}

fn failed(error: impl std::fmt::Display) -> CliError {
    CliError::Failed(error.to_string())
}

pub async fn run(cli: Cli) -> Result<(), CliError> {
    let mut config = cli.config;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::Schema => {
            print!("{}", crate::graphql::schema::sdl());
            Ok(())
        }
        Command::Seed {
            categories,
            products,
        } => {
            config.validate().map_err(StartupError::from)?;
            let db = crate::db::connect(&config, None)
                .await
                .map_err(StartupError::from)?;
            crate::db::migrate(&db).await.map_err(StartupError::from)?;
            let started = Instant::now();
            seed::seed(
                &db,
                SeedPlan {
                    categories,
                    products,
                },
            )
            .await
            .map_err(failed)?;
            eprintln!(
                "seeded {categories} categories and {products} products in {:.2?}",
                started.elapsed()
            );
            Ok(())
        }
        Command::Token(command) => {
            config.demo_data = false;
            token(config, command).await
        }
        Command::Cache(command) => {
            config.demo_data = false;
            cache(config, command).await
        }
    }
}

async fn serve(config: Config) -> Result<(), CliError> {
    let app = App::build(config).await?;
    let address = app.address();
    let tokens = crate::auth::list(&app.state().db).await.map_err(failed)?;
    tracing::info!(
        %address,
        cache = app.state().cache.as_ref().map(|cache| cache.backend_name()).unwrap_or("off"),
        "GraphiQL at http://{address}/graphql"
    );
    if tokens.is_empty() {
        eprintln!(
            "No API token yet. Mutations and dashboardStats need one:\n  TOKEN=$({} token create me)\n\
             then send the header  Authorization: Bearer $TOKEN  (GraphiQL: Headers tab).",
            Invocation::current().command()
        );
    }
    app.serve(crate::http::shutdown_signal())
        .await
        .map_err(failed)
}

/// How the user started this program, so that a hint names a command that works from the
/// same place: on a fresh clone nothing is installed, and `catalog-api` is not on the PATH.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Invocation {
    /// The executable as the user named it (`argv[0]`).
    invoked_as: String,
    /// The executable's resolved path.
    executable: Option<std::path::PathBuf>,
    /// True when `cargo run` started it (cargo sets `CARGO` for the programs it runs).
    under_cargo: bool,
}

impl Invocation {
    fn current() -> Self {
        Invocation {
            invoked_as: std::env::args().next().unwrap_or_default(),
            executable: std::env::current_exe().ok(),
            under_cargo: std::env::var_os("CARGO").is_some(),
        }
    }

    /// The command that runs this program again: `cargo run` with the same profile under
    /// cargo, the bare name when the PATH found it, else the path the user typed.
    fn command(&self) -> String {
        let profile = self
            .executable
            .as_deref()
            .and_then(std::path::Path::parent)
            .filter(|directory| {
                directory
                    .ancestors()
                    .any(|ancestor| ancestor.file_name().is_some_and(|name| name == "target"))
            })
            .and_then(|directory| directory.file_name())
            .and_then(|name| name.to_str());
        match profile {
            Some(profile) if self.under_cargo => match profile {
                "debug" => "cargo run -q --".to_owned(),
                "release" => "cargo run --release -q --".to_owned(),
                other => format!("cargo run --profile {other} -q --"),
            },
            _ if self.invoked_as.is_empty() => "catalog-api".to_owned(),
            _ => self.invoked_as.clone(),
        }
    }
}

async fn token(config: Config, command: TokenCommand) -> Result<(), CliError> {
    config.validate().map_err(StartupError::from)?;
    let db = crate::db::connect(&config, None)
        .await
        .map_err(StartupError::from)?;
    crate::db::migrate(&db).await.map_err(StartupError::from)?;
    match command {
        TokenCommand::Create { name } => {
            let (token, record) = crate::auth::create(&db, &name).await.map_err(failed)?;
            eprintln!(
                "created token {} ({}); it is shown once:",
                record.id, record.name
            );
            println!("{token}");
        }
        TokenCommand::List => {
            for record in crate::auth::list(&db).await.map_err(failed)? {
                let state = match record.revoked_at {
                    Some(at) => format!("revoked {at}"),
                    None => "active".to_owned(),
                };
                println!(
                    "{:>5}  {:<30}  created {}  {state}",
                    record.id, record.name, record.created_at
                );
            }
        }
        TokenCommand::Revoke { id } => {
            let token_hash = crate::auth::revoke(&db, id).await.map_err(failed)?;
            let metrics = std::sync::Arc::new(crate::telemetry::Metrics::new());
            // Servers learn the revocation from the database within their poll interval; with
            // the shared cache at hand, forgetting the validation here makes it immediate.
            if config.redis_url.is_some()
                && let Some((cache, _)) =
                    crate::cache::from_config(&config, metrics).map_err(failed)?
                && let Err(error) = cache.forget_token(&token_hash).await
            {
                eprintln!(
                    "warning: the cached validation could not be removed now ({error}); servers refuse the token within their revocation poll interval ({} ms)",
                    config.revocation_poll_ms
                );
            }
            eprintln!("revoked token {id}");
        }
    }
    Ok(())
}

async fn cache(config: Config, command: CacheCommand) -> Result<(), CliError> {
    if config.redis_url.is_none() {
        return Err(CliError::Failed(
            "cache commands need the shared cache (REDIS_URL); the in-process cache lives inside the server process".into(),
        ));
    }
    let state = AppState::build(config).await?;
    let Some(cache) = state.cache.clone() else {
        return Err(CliError::Failed(
            "the cache is disabled (CATALOG_CACHE_ENABLED=false)".into(),
        ));
    };
    match command {
        CacheCommand::Clear => {
            let deleted = cache.storage().clear().await.map_err(failed)?;
            eprintln!(
                "deleted {deleted} keys under prefix {:?}",
                state.config.cache_prefix
            );
            // The edge keeps what the origin just dropped: purge this deployment's `all` tag.
            if let Some(purger) = &state.edge_purger {
                let purged = purger.purge_all().await;
                eprintln!("edge purge of every tagged response: {}", purged.as_str());
            }
        }
        CacheCommand::Stats => {
            let stats = cache.storage().stats().await.map_err(failed)?;
            let (hits, misses, errors) = cache
                .monitor()
                .day(cache.storage(), chrono::Utc::now().date_naive())
                .await
                .map_err(failed)?;
            let total = hits + misses;
            let hit_rate = if total > 0 {
                hits as f64 / total as f64 * 100.0
            } else {
                0.0
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "backend": stats.backend,
                    "redisVersion": stats.version,
                    "usedMemoryBytes": stats.used_memory_bytes,
                    "connectedClients": stats.connected_clients,
                    "commandsProcessed": stats.commands_processed,
                    "prefix": state.config.cache_prefix,
                    "prefixKeys": stats.prefix_keys,
                    "prefixBytes": stats.prefix_bytes,
                    "today": { "hits": hits, "misses": misses, "errors": errors, "hitRatePercent": hit_rate },
                }))
                .map_err(failed)?
            );
        }
        CacheCommand::WarmUp { top, token } => warm_up(&state, top, token).await?,
    }
    Ok(())
}

async fn warm_up(state: &AppState, top: usize, token: Option<String>) -> Result<(), CliError> {
    let Some(cache) = &state.cache else {
        return Ok(());
    };
    let mut operations: Vec<(Operation, Principal)> = Vec::new();
    if let Some(path) = &state.config.persisted_only {
        for query in crate::graphql::manifest::load_manifest(path)
            .map_err(StartupError::from)?
            .into_values()
        {
            operations.push((
                Operation {
                    query: Some(query),
                    ..Operation::default()
                },
                Principal::Anonymous,
            ));
        }
    }
    for recorded in cache
        .monitor()
        .top_operations(cache.storage(), top)
        .await
        .map_err(failed)?
    {
        let operation = Operation {
            query: Some(recorded.query),
            operation_name: recorded.operation_name,
            variables: Some(recorded.variables),
            extensions: None,
        };
        operations.push((operation, Principal::Anonymous));
    }
    if let Some(token) = token {
        let header =
            axum::http::HeaderValue::from_str(&format!("Bearer {token}")).map_err(failed)?;
        let principal = state
            .authenticator
            .authenticate(Some(&header))
            .await
            .map_err(failed)?;
        let dashboard = "query DashboardStats { dashboardStats { totalProducts categoriesCount avgPrice productsByCategory { categoryId name productCount } } }";
        operations.push((
            Operation {
                query: Some(dashboard.into()),
                ..Operation::default()
            },
            principal,
        ));
    }
    let started = Instant::now();
    let (mut filled, mut already) = (0, 0);
    for (operation, principal) in operations {
        let caller = Caller {
            deadline: tokio::time::Instant::now() + 2 * state.config.request_timeout(),
            credentials: Credentials::checked(principal),
            request_id: RequestId("warm-up".into()),
            transport: Transport::Post,
            bypass_cache: false,
        };
        // The first run teaches the executor the document's policy; the second fills or hits.
        for _ in 0..2 {
            if let Ok(outcome) = state.executor.execute(operation.clone(), &caller).await {
                match outcome.cache {
                    crate::graphql::executor::CacheStatus::Miss => filled += 1,
                    crate::graphql::executor::CacheStatus::Hit
                    | crate::graphql::executor::CacheStatus::Stale => already += 1,
                    crate::graphql::executor::CacheStatus::Bypass => {}
                }
            }
        }
    }
    eprintln!(
        "warm-up: {filled} entries filled, {already} already cached, in {:.2?}",
        started.elapsed()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Invocation;

    fn invocation(invoked_as: &str, executable: &str, under_cargo: bool) -> Invocation {
        Invocation {
            invoked_as: invoked_as.to_owned(),
            executable: Some(executable.into()),
            under_cargo,
        }
    }

    #[test]
    fn the_token_hint_names_a_command_that_works_from_where_the_user_is() {
        for (invoked_as, executable, under_cargo, expected) in [
            (
                "target/release/catalog-api",
                "/src/catalog/target/release/catalog-api",
                true,
                "cargo run --release -q --",
            ),
            (
                "target/debug/catalog-api",
                "/src/catalog/target/debug/catalog-api",
                true,
                "cargo run -q --",
            ),
            (
                "target/profiling/catalog-api",
                "/src/catalog/target/profiling/catalog-api",
                true,
                "cargo run --profile profiling -q --",
            ),
            (
                "./target/release/catalog-api",
                "/src/catalog/target/release/catalog-api",
                false,
                "./target/release/catalog-api",
            ),
            (
                "catalog-api",
                "/home/me/.cargo/bin/catalog-api",
                false,
                "catalog-api",
            ),
            (
                "catalog-api",
                "/home/me/.cargo/bin/catalog-api",
                true,
                "catalog-api",
            ),
        ] {
            assert_eq!(
                invocation(invoked_as, executable, under_cargo).command(),
                expected,
                "{invoked_as} at {executable}"
            );
        }
    }
}
