//! OpenTelemetry traces, checked at a real OTLP/HTTP receiver started by the test.
//!
//! A binary of its own because the tracing subscriber is process-global: this process
//! installs it once, exporting to one receiver that every test here shares, and each test
//! finds its own spans by the request id its response carries (an attribute of the request
//! span) or by the trace id it sent. The `api` binary's servers run with no subscriber at
//! all, as the cost promise is about that case.

mod receiver;
/// The `api` binary's harness, the part these tests need, at the same paths.
#[path = "../api/support"]
mod support {
    pub mod helpers;
    #[expect(
        dead_code,
        reason = "the shared helpers name it; these tests cut no database"
    )]
    pub mod tcp_proxy;
}

use std::sync::OnceLock;
use std::time::Duration;

use catalog_api::config::Config;
use catalog_api::telemetry::Tracing;
use serde_json::json;

use self::receiver::{CollectedSpan, Receiver};
use self::support::helpers::{self, TestApp};

const PAGE: &str =
    "query Page { products(first: 100) { edges { node { id name category { name } } } } }";

/// The receiver, and the subscriber exporting to it, set up by the first test that asks.
fn receiver() -> &'static Receiver {
    static TRACING: OnceLock<(Receiver, Tracing)> = OnceLock::new();
    let (receiver, _) = TRACING.get_or_init(|| {
        let receiver = Receiver::start();
        let mut config = Config::for_database("sqlite::memory:");
        traced(&mut config, &receiver);
        let tracing = catalog_api::telemetry::init_tracing(&config).expect("the exporter starts");
        (receiver, tracing)
    });
    receiver
}

fn traced(config: &mut Config, receiver: &Receiver) {
    config.otel_exporter_otlp_endpoint = Some(receiver.endpoint());
    config.otel_service_name = "catalog-api-test".to_owned();
    // Batches leave every 20 ms, so a test waits that long for its spans, not 5 s.
    config.otel_bsp_schedule_delay_ms = 20;
}

async fn spawn_traced() -> TestApp {
    let receiver = receiver();
    TestApp::spawn_on_primary(|config| traced(config, receiver)).await
}

/// Posts `query` (named `Page` when it is the page) and returns the request id and the
/// cache outcome the response carries.
async fn request(app: &TestApp, query: &str, traceparent: Option<&str>) -> (String, String) {
    let operation_name = (query == PAGE).then_some("Page");
    let mut post = app
        .client
        .post(app.url("/graphql"))
        .json(&json!({ "query": query, "operationName": operation_name }));
    if let Some(traceparent) = traceparent {
        post = post.header("traceparent", traceparent);
    }
    let response = post.send().await.expect("an answer");
    assert_eq!(response.status(), 200);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let request_id = header("x-request-id").expect("a request id");
    let cache = header("x-cache").unwrap_or_default();
    let body: serde_json::Value = response.json().await.expect("JSON");
    assert!(body.get("errors").is_none(), "errors: {body}");
    (request_id, cache)
}

/// The spans of the trace whose request span carries `request_id`, once that span (which
/// ends after all of its children, so is exported with or after them) has arrived.
async fn trace_of(request_id: &str) -> (CollectedSpan, Vec<CollectedSpan>) {
    let receiver = receiver();
    let found = helpers::eventually(Duration::from_secs(10), || async {
        receiver.request_span(request_id).is_some()
    })
    .await;
    assert!(
        found,
        "no request span with request_id {request_id} reached the receiver"
    );
    let root = receiver.request_span(request_id).expect("found above");
    let trace = receiver.trace(&root.trace_id);
    (root, trace)
}

fn descends_from(span: &CollectedSpan, ancestor: &CollectedSpan, trace: &[CollectedSpan]) -> bool {
    let mut parent = span.parent_span_id.clone();
    while !parent.is_empty() {
        if parent == ancestor.span_id {
            return true;
        }
        parent = trace
            .iter()
            .find(|candidate| candidate.span_id == parent)
            .map(|candidate| candidate.parent_span_id.clone())
            .unwrap_or_default();
    }
    false
}

fn named<'a>(trace: &'a [CollectedSpan], prefix: &str) -> Vec<&'a CollectedSpan> {
    trace
        .iter()
        .filter(|span| span.name.starts_with(prefix))
        .collect()
}

#[tokio::test]
async fn an_uncached_page_is_one_request_span_over_parse_execution_and_its_two_statements() {
    let app = spawn_traced().await;

    let (request_id, cache) = request(&app, PAGE, None).await;
    assert_eq!(cache, "MISS");

    let (root, trace) = trace_of(&request_id).await;
    assert!(
        root.parent_span_id.is_empty(),
        "a root without a client trace"
    );
    assert_eq!(root.attribute("request_id"), Some(request_id.as_str()));
    assert_eq!(root.attribute("operation"), Some("Page"));
    assert_eq!(root.attribute("cache"), Some("MISS"));
    for span in trace.iter().filter(|span| span.span_id != root.span_id) {
        assert!(
            descends_from(span, &root, &trace),
            "{} is outside the request span",
            span.name
        );
    }
    let statements = named(&trace, "sea_orm.");
    assert_eq!(
        statements.len(),
        2,
        "the page and its categories: {:?}",
        trace.iter().map(|span| &span.name).collect::<Vec<_>>()
    );
    for statement in &statements {
        assert!(
            statement
                .attribute("db.statement")
                .is_some_and(|sql| sql.starts_with("SELECT"))
        );
    }
    let parse = named(&trace, "graphql.parse");
    assert_eq!(parse.len(), 1);
    let execute = named(&trace, "graphql.execute");
    assert_eq!(execute.len(), 1);
    let prefetch = named(&trace, "dataloader.prefetch");
    assert_eq!(prefetch.len(), 1, "the categories, fetched as one batch");
    assert!(
        statements
            .iter()
            .all(|statement| descends_from(statement, execute[0], &trace)),
        "the statements run inside the execution"
    );
    assert_eq!(
        statements
            .iter()
            .filter(|statement| descends_from(statement, prefetch[0], &trace))
            .count(),
        1,
        "one statement is the categories' batch"
    );
    let backend = app.state.cache.as_ref().map(|cache| cache.backend_name());
    let calls = named(&trace, "backend.");
    assert!(
        calls.iter().any(|call| call.name == "backend.store"),
        "the fill is a backend call: {calls:?}"
    );
    assert!(
        calls
            .iter()
            .all(|call| call.attribute("backend") == backend)
    );
}

#[tokio::test]
async fn a_cache_hit_is_a_lookup_with_its_tags_and_no_statement() {
    let app = spawn_traced().await;
    let (_, first) = request(&app, PAGE, None).await;
    assert_eq!(first, "MISS");

    let (request_id, cache) = request(&app, PAGE, None).await;
    assert_eq!(cache, "HIT");

    let (root, trace) = trace_of(&request_id).await;
    assert_eq!(root.attribute("cache"), Some("HIT"));
    assert!(named(&trace, "sea_orm.").is_empty(), "a hit runs no SQL");
    assert!(named(&trace, "graphql.").is_empty(), "a hit never parses");
    let lookups = named(&trace, "cache.lookup");
    assert_eq!(lookups.len(), 1);
    assert_eq!(lookups[0].attribute("outcome"), Some("hit"));
    assert!(
        lookups[0]
            .attribute("tags")
            .is_some_and(|tags| !tags.is_empty()),
        "the entry's tags: {:?}",
        lookups[0]
    );
    let call = named(&trace, "backend.lookup");
    assert_eq!(call.len(), 1, "one backend call answers a hit");
    assert!(descends_from(call[0], lookups[0], &trace));
}

#[tokio::test]
async fn a_client_traceparent_becomes_the_trace_and_parent_of_the_request_span() {
    let app = spawn_traced().await;
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let parent_id = &uuid::Uuid::new_v4().simple().to_string()[..16];
    let traceparent = format!("00-{trace_id}-{parent_id}-01");

    let (request_id, _) = request(&app, "{ categories { id name } }", Some(&traceparent)).await;

    let (root, trace) = trace_of(&request_id).await;
    assert_eq!(root.trace_id, trace_id);
    assert_eq!(root.parent_span_id, parent_id);
    assert!(
        !named(&trace, "sea_orm.").is_empty(),
        "the request's children share the client's trace: {trace:?}"
    );
}

#[tokio::test]
async fn a_client_that_did_not_sample_its_trace_gets_none_recorded() {
    let app = spawn_traced().await;
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-00");
    let (unsampled, _) = request(&app, "{ categories { id } }", Some(&traceparent)).await;
    // A later request in the same process is exported, so the exporter has flushed past the
    // first one by the time it arrives.
    let (sampled, _) = request(&app, "{ categories { name } }", None).await;
    trace_of(&sampled).await;

    assert!(receiver().request_span(&unsampled).is_none());
    assert!(receiver().trace(&trace_id).is_empty());
}
