//! Bearer tokens: mutations and `dashboardStats` need one, a bad or revoked token is a 401
//! whatever the operation, only a token's SHA-256 is stored, and the `token` CLI manages them.

use std::cell::Cell;
use std::process::Output;
use std::time::{Duration, Instant};

use catalog_api::auth::{self, generate_token, hash_token};
use catalog_api::entities::api_token;
use sea_orm::EntityTrait;
use serde_json::json;

use crate::support::helpers::{
    CATEGORIES, GqlResponse, PRODUCTS, TestApp, eventually, redis_configured,
};

const CREATE_CATEGORY: &str =
    "mutation Create($name: String!) { createCategory(input: { name: $name }) { id name } }";
const DASHBOARD: &str = "query Dashboard { dashboardStats { totalProducts categoriesCount } }";
const CATEGORY_NAMES: &str = "{ categories { name } }";

async fn category_names(app: &TestApp) -> Vec<String> {
    let response = app.gql(CATEGORY_NAMES, json!({})).await;
    let categories = response.assert_ok()["categories"]
        .as_array()
        .expect("a list of categories")
        .clone();
    categories
        .iter()
        .map(|category| category["name"].as_str().expect("a name").to_owned())
        .collect()
}

#[track_caller]
fn assert_unauthorized(response: &GqlResponse, what: &str) {
    assert_eq!(response.status, 401, "status for {what}: {}", response.body);
    response.assert_error("UNAUTHENTICATED");
    assert_eq!(
        response.header("www-authenticate"),
        Some("Bearer"),
        "www-authenticate for {what}"
    );
    assert_eq!(
        response.data(),
        &serde_json::Value::Null,
        "nothing is executed for {what}"
    );
}

#[tokio::test]
async fn a_mutation_without_a_token_is_unauthenticated_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let response = app.gql(CREATE_CATEGORY, json!({ "name": "Garden" })).await;
    response.assert_error("UNAUTHENTICATED");
    assert_eq!(response.header("cache-control"), Some("no-store"));

    let names = category_names(&app).await;
    assert_eq!(names.len(), CATEGORIES as usize);
    assert!(
        !names.iter().any(|name| name == "Garden"),
        "the refused mutation wrote: {names:?}"
    );
}

#[tokio::test]
async fn a_mutation_with_a_token_writes() {
    let app = TestApp::spawn().await;
    let token = app.create_token("writer").await;
    let response = app
        .gql_as(&token, CREATE_CATEGORY, json!({ "name": "Garden" }))
        .await;
    assert_eq!(response.assert_ok()["createCategory"]["name"], "Garden");
    assert!(
        category_names(&app)
            .await
            .iter()
            .any(|name| name == "Garden")
    );
}

#[tokio::test]
async fn dashboard_stats_need_a_token() {
    let app = TestApp::spawn().await;
    let response = app.gql(DASHBOARD, json!({})).await;
    response.assert_error("UNAUTHENTICATED");

    let token = app.create_token("dashboard").await;
    let response = app.gql_as(&token, DASHBOARD, json!({})).await;
    let stats = &response.assert_ok()["dashboardStats"];
    assert_eq!(stats["totalProducts"], PRODUCTS);
    assert_eq!(stats["categoriesCount"], CATEGORIES);
    assert_eq!(response.header("cache-control"), Some("private, no-store"));
}

#[tokio::test]
async fn a_malformed_or_unknown_token_is_a_401_even_for_a_public_query() {
    let app = TestApp::spawn().await;
    let long = format!("Bearer {}", "a".repeat(300));
    let unknown = format!("Bearer {}", generate_token().expect("random source"));
    let headers = [
        ("a scheme without a token", "Bearer"),
        ("a scheme with a blank token", "Bearer    "),
        ("another scheme", "Basic abc"),
        ("a 300-character token", long.as_str()),
        ("a token the server never issued", unknown.as_str()),
    ];
    for (what, header) in headers {
        let body = json!({ "query": CATEGORY_NAMES });
        let response = app
            .post_json(body, None, &[("authorization", header)])
            .await;
        assert_unauthorized(&response, what);
    }
}

#[tokio::test]
async fn a_revoked_token_is_refused_on_the_very_next_request() {
    let app = TestApp::spawn().await;
    let (token, record) = auth::create(&app.state.db, "soon revoked")
        .await
        .expect("token");
    // Used successfully twice, so its validation is cached when the cache remembers tokens.
    for _ in 0..2 {
        app.gql_as(&token, DASHBOARD, json!({})).await.assert_ok();
    }

    let cache = app
        .state
        .cache
        .as_ref()
        .expect("the cache is on by default");
    // Only the shared cache remembers validations; the CLI can reach it to forget one. (Checked
    // before the revocation: after it, the server's own database poll may forget it first.)
    let expected = redis_configured().then_some(record.id);
    assert_eq!(
        cache.cached_token(&hash_token(&token)).await,
        expected,
        "the validation cache this test exercises"
    );

    // What `catalog-api token revoke` does: mark it revoked, then forget the cached validation.
    let hash = auth::revoke(&app.state.db, record.id)
        .await
        .expect("revoke");
    assert_eq!(hash, hash_token(&token));
    cache
        .forget_token(&hash)
        .await
        .expect("forget the cached validation");

    assert_unauthorized(
        &app.gql_as(&token, DASHBOARD, json!({})).await,
        "a revoked token on a private query",
    );
    assert_unauthorized(
        &app.gql_as(&token, CATEGORY_NAMES, json!({})).await,
        "a revoked token on a public query",
    );
    let response = app
        .gql_as(&token, CREATE_CATEGORY, json!({ "name": "Too late" }))
        .await;
    assert_unauthorized(&response, "a revoked token on a mutation");
    assert!(
        !category_names(&app)
            .await
            .iter()
            .any(|name| name == "Too late")
    );
}

#[tokio::test]
async fn a_revocation_that_reaches_only_the_database_is_refused_by_every_server_within_the_poll_interval()
 {
    let first = TestApp::spawn().await;
    let mut config = first.config.clone();
    config.bind = "127.0.0.1:0".parse().expect("address");
    let second = TestApp::start(config, None, None).await;
    let servers = [("first", &first), ("second", &second)];
    let (token, record) = auth::create(&first.state.db, "revoked by a slip")
        .await
        .expect("token");
    let hash = hash_token(&token);
    for (name, server) in servers {
        server
            .gql_as(&token, DASHBOARD, json!({}))
            .await
            .assert_ok();
        let again = server.gql_as(&token, DASHBOARD, json!({})).await;
        again.assert_ok();
        assert_eq!(
            again.x_cache(),
            "HIT",
            "{name}: the private result is cached"
        );
        // The shared cache remembers the validation: without the database poll, both servers
        // would accept the token for CATALOG_TOKEN_CACHE_SECS.
        let expected = redis_configured().then_some(record.id);
        let cache = server.state.cache.as_ref().expect("the cache is on");
        assert_eq!(cache.cached_token(&hash).await, expected, "{name}");
    }

    // What `catalog-api token revoke` does when run without REDIS_URL: the database only.
    let revoked_at = Instant::now();
    auth::revoke(&first.state.db, record.id)
        .await
        .expect("revoke");
    // Each round asks both servers; once a server has refused the token, it must refuse it
    // on every later request (no cached validation or private result comes back).
    let first_refusals = [Cell::new(None), Cell::new(None)];
    let refused = eventually(Duration::from_secs(2), || {
        let (first_refusals, token) = (&first_refusals, &token);
        async move {
            for ((name, server), first_refusal) in servers.iter().zip(first_refusals) {
                let response = server.gql_as(token, DASHBOARD, json!({})).await;
                if first_refusal.get().is_some() || response.status == 401 {
                    assert_unauthorized(&response, &format!("{name}, the revoked token"));
                    assert_ne!(response.x_cache(), "HIT", "{name}");
                    if first_refusal.get().is_none() {
                        first_refusal.set(Some(revoked_at.elapsed()));
                    }
                } else {
                    // Until it learns of the revocation a server may still answer, but only
                    // with this token's own result.
                    let stats = &response.assert_ok()["dashboardStats"];
                    assert_eq!(stats["totalProducts"], PRODUCTS, "{name}");
                }
            }
            first_refusals.iter().all(|refusal| refusal.get().is_some())
        }
    })
    .await;
    for ((name, _), first_refusal) in servers.iter().zip(&first_refusals) {
        eprintln!(
            "{name}: first 401 {:?} after the revocation",
            first_refusal.get()
        );
    }
    assert!(
        refused,
        "a server accepts the token 2 s after its revocation"
    );
    for (name, server) in servers {
        for _ in 0..5 {
            let response = server.gql_as(&token, DASHBOARD, json!({})).await;
            assert_unauthorized(&response, &format!("{name}, after its first refusal"));
            assert_ne!(response.x_cache(), "HIT", "{name}");
        }
    }
    second.stop().await;
    first.stop().await;
}

#[tokio::test]
async fn the_in_process_cache_never_remembers_a_token_a_revocation_elsewhere_could_not_reach() {
    // The CLI revokes from another process, which cannot reach an in-process cache.
    let app = TestApp::spawn_with(|config| config.redis_url = None).await;
    let (token, record) = auth::create(&app.state.db, "revoked elsewhere")
        .await
        .expect("token");
    app.gql_as(&token, DASHBOARD, json!({})).await.assert_ok();

    auth::revoke(&app.state.db, record.id)
        .await
        .expect("revoke");
    assert_unauthorized(
        &app.gql_as(&token, DASHBOARD, json!({})).await,
        "a token revoked by another process",
    );
}

#[tokio::test]
async fn tokens_are_long_random_and_distinct() {
    let tokens: Vec<String> = (0..1_000)
        .map(|_| generate_token().expect("random source"))
        .collect();
    let mut distinct = tokens.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), tokens.len(), "a token repeated");
    for token in &tokens {
        let random = token
            .strip_prefix("cat_")
            .unwrap_or_else(|| panic!("{token} lacks the cat_ prefix"));
        // Unpadded URL-safe base64 carries 6 bits a character: 22 characters hold 132 bits.
        assert!(
            random.len() >= 22,
            "{token} is too short to hold 128 random bits"
        );
        assert!(
            random
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'),
            "{token}"
        );
    }
}

#[tokio::test]
async fn the_database_stores_only_the_sha256_of_a_token() {
    let app = TestApp::spawn().await;
    let token = app.create_token("stored").await;
    let rows = api_token::Entity::find()
        .all(&app.state.db)
        .await
        .expect("api_token rows");
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.name, "stored");
    assert_eq!(row.token_hash, hash_token(&token));
    assert_eq!(row.token_hash.len(), 64, "a hex SHA-256");
    assert!(row.revoked_at.is_none());
    // The whole row, every column, printed: the token is in none of them.
    let printed = format!("{row:?}");
    assert!(!printed.contains(&token), "the token is stored: {printed}");
    assert!(
        !printed.contains(token.trim_start_matches("cat_")),
        "the token is stored: {printed}"
    );
}

async fn catalog_api(args: &[&str], env: &[(&str, &str)]) -> Output {
    crate::support::helpers::run_binary(args, env).await
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8 output")
}

#[tokio::test]
async fn the_token_cli_creates_lists_and_revokes_tokens() {
    let files = tempfile::tempdir().expect("temporary directory");
    let url = format!(
        "sqlite://{}?mode=rwc",
        files.path().join("cli.db").display()
    );
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("CATALOG_DEMO_DATA", "false"),
    ];

    let created = catalog_api(&["token", "create", "ci"], &env).await;
    assert!(
        created.status.success(),
        "token create failed: {}",
        text(&created.stderr)
    );
    let stdout = text(&created.stdout);
    let token = stdout
        .strip_suffix('\n')
        .expect("stdout ends with a newline");
    assert!(
        !token.contains('\n'),
        "stdout holds more than the token: {stdout:?}"
    );
    assert!(
        token.starts_with("cat_"),
        "stdout is not a token: {stdout:?}"
    );
    let stderr = text(&created.stderr);
    assert!(stderr.contains("created token 1 (ci)"), "{stderr}");
    assert!(
        !stderr.contains(token),
        "the token is printed once, on stdout only"
    );

    let listed = catalog_api(&["token", "list"], &env).await;
    assert!(
        listed.status.success(),
        "token list failed: {}",
        text(&listed.stderr)
    );
    // The listing is the command's output, for scripts: on stdout, nothing of it on stderr.
    let listing = text(&listed.stdout);
    assert!(
        !text(&listed.stderr).contains("ci"),
        "the listing went to stderr: {}",
        text(&listed.stderr)
    );
    let line = listing
        .lines()
        .find(|line| line.contains("ci"))
        .unwrap_or_else(|| panic!("ci is not listed on stdout: {listing:?}"));
    assert!(
        line.trim_start().starts_with('1') && line.contains("active"),
        "{line}"
    );
    assert!(
        !listing.contains(token),
        "the listing shows the token itself"
    );

    let revoked = catalog_api(&["token", "revoke", "1"], &env).await;
    assert!(
        revoked.status.success(),
        "token revoke failed: {}",
        text(&revoked.stderr)
    );
    assert!(text(&revoked.stderr).contains("revoked token 1"));

    let listed = catalog_api(&["token", "list"], &env).await;
    let listing = text(&listed.stdout);
    let line = listing
        .lines()
        .find(|line| line.contains("ci"))
        .unwrap_or_else(|| panic!("ci is not listed: {listing}"));
    assert!(
        line.contains("revoked") && !line.contains("active"),
        "{line}"
    );

    let missing = catalog_api(&["token", "revoke", "99"], &env).await;
    assert!(
        !missing.status.success(),
        "revoking a token that does not exist succeeded"
    );
}

#[tokio::test]
async fn the_schema_command_prints_the_checked_in_sdl() {
    let output = catalog_api(&["schema"], &[]).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let checked_in =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"))
            .expect("schema.graphql");
    assert!(
        text(&output.stdout) == checked_in,
        "`catalog-api schema` differs from schema.graphql"
    );
}

#[tokio::test]
async fn a_bad_database_url_fails_with_one_clear_line() {
    let env = [
        ("DATABASE_URL", "mysql://x"),
        ("CATALOG_BIND", "127.0.0.1:0"),
    ];
    for args in [&[][..], &["token", "list"][..]] {
        let output = catalog_api(args, &env).await;
        assert!(
            !output.status.success(),
            "{args:?} started with a MySQL URL"
        );
        let stderr = text(&output.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: stderr is not one line: {stderr}");
        assert!(
            lines[0].starts_with("error:") && lines[0].contains("DATABASE_URL"),
            "{args:?}: {stderr}"
        );
        assert!(
            !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
            "{stderr}"
        );
        assert!(
            output.stdout.is_empty(),
            "{args:?}: {}",
            text(&output.stdout)
        );
    }
}
