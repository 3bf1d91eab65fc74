//! graphql-http's server audits (the GraphQL-over-HTTP spec's MUST/SHOULD/MAY checks, the
//! suite the spec's authors maintain) against a live server. Needs `node` and
//! `npm ci --prefix scripts/graphql-http` (.ci/run does both); skipped with a message otherwise.

use serde_json::Value;

use crate::support::helpers::TestApp;
use crate::support::node_tools::NodeTools;

#[tokio::test]
async fn the_graphql_over_http_audit_passes_without_warnings_or_errors() {
    let Some(audit) = NodeTools::installed("graphql-http", &["graphql-http"]) else {
        return;
    };
    let app = TestApp::spawn().await;
    let results = audit
        .run_json("audit.mjs", &[&app.url("/graphql"), "--json"])
        .await;
    let results: &Vec<Value> = results.as_array().expect("a JSON array of results");
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
