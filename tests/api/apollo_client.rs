//! Apollo Client 4, the client most front ends use, against a live server: a page lands in
//! its normalized cache, a failed field comes back `null` beside the data that resolved
//! (errorPolicy "all", and no cache-write complaint), a mutation's answer updates the cached
//! product, and automatic persisted queries send the hash alone over GET once registered.
//! Needs `node` and `npm ci --prefix scripts/apollo-client` (.ci/run does both); skipped with
//! a message otherwise.

use serde_json::Value;

use crate::support::helpers::TestApp;
use crate::support::node_tools::NodeTools;

#[tokio::test]
async fn apollo_client_caches_reads_partial_errors_mutations_and_persisted_queries() {
    let Some(apollo_client) = NodeTools::installed("apollo-client", &["@apollo/client"]) else {
        return;
    };
    let app = TestApp::spawn().await;
    let token = app.create_token("apollo-client").await;
    let results = apollo_client
        .run_json("check.mjs", &[&app.url("/graphql"), &token])
        .await;
    let results: &Vec<Value> = results.as_array().expect("a JSON array of results");
    assert_eq!(results.len(), 4, "every check ran: {results:?}");
    let failures: Vec<String> = results
        .iter()
        .filter(|result| result["ok"] != true)
        .map(|result| format!("{}: {}", result["name"], result["detail"]))
        .collect();
    assert!(
        failures.is_empty(),
        "Apollo Client checks failed:\n{}",
        failures.join("\n")
    );
}
