//! graphql-http's server audits (the GraphQL-over-HTTP spec's MUST/SHOULD/MAY checks, the
//! suite the spec's authors maintain) against a live server. Needs `node` and
//! `npm ci --prefix scripts/graphql-http` (.ci/run does both); skipped with a message otherwise.

use std::path::PathBuf;

use serde_json::Value;

use crate::helpers::TestApp;

fn audit_directory() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/graphql-http"))
}

/// Whether `node` runs and the audit's packages are installed; says why not when not.
fn audit_available() -> bool {
    let node = std::process::Command::new("node").arg("--version").output();
    if !node.is_ok_and(|output| output.status.success()) {
        eprintln!(
            "skipped: `node` is not installed (the GraphQL-over-HTTP audit needs Node.js 18+)"
        );
        return false;
    }
    if !audit_directory()
        .join("node_modules/graphql-http/package.json")
        .exists()
    {
        eprintln!("skipped: run `npm ci --prefix scripts/graphql-http` to install the audit");
        return false;
    }
    true
}

#[tokio::test]
async fn the_graphql_over_http_audit_passes_without_warnings_or_errors() {
    if !audit_available() {
        return;
    }
    let app = TestApp::spawn().await;
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        tokio::process::Command::new("node")
            .arg(audit_directory().join("audit.mjs"))
            .arg(app.url("/graphql"))
            .arg("--json")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the audit finishes within two minutes")
    .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let results: Vec<Value> = serde_json::from_str(stdout.trim()).unwrap_or_else(|error| {
        panic!(
            "the audit prints JSON ({error}): {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert!(
        results.len() >= 50,
        "the audit ran {} checks",
        results.len()
    );
    let failures: Vec<String> = results
        .iter()
        .filter(|result| result["status"] == "warn" || result["status"] == "error")
        .map(|result| {
            format!(
                "{} {} {}: {} (HTTP {})",
                result["status"],
                result["id"],
                result["name"],
                result["reason"],
                result["responseStatus"]
            )
        })
        .collect();
    assert!(
        failures.is_empty(),
        "audit failures:\n{}",
        failures.join("\n")
    );
}
