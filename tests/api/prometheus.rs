//! The operators' files in `deploy/` against the real server: every metric the Grafana
//! dashboard and the Prometheus rules name is one a scrape of a running instance exports;
//! promtool accepts the rules and the example configuration and passes the rules' unit tests;
//! and a real Prometheus scrapes a running instance, evaluates the rules and answers every
//! dashboard query with figures that match the requests sent. The tests that need
//! `prometheus`/`promtool` skip (with a message) when they are missing; `.ci/run` installs them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use catalog_api::config::EdgePurgeBackend;
use serde_json::{Value, json};
use yaml_rust2::{Yaml, YamlLoader};

use crate::promql_names::{exported_names, label_values_names, metric_names};
use crate::support::helpers::{PRODUCT_BY_ID, TestApp, eventually};
use crate::support::ports::restartable_port;
use crate::support::prometheus_process::{self, JOB, PrometheusProcess};
use crate::support::redis_process::RedisProcess;

const DASHBOARD: &str = include_str!("../../deploy/grafana/catalog-api.json");
const RULES: &str = include_str!("../../deploy/prometheus/alerts.yml");
const RULE_TESTS: &str = include_str!("../../deploy/prometheus/alerts_test.yml");

/// Series Prometheus makes itself for every target.
const PROMETHEUS_SERIES: &[&str] = &["up"];

fn deploy_file(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(relative)
}

fn yaml(text: &str) -> Yaml {
    YamlLoader::load_from_str(text)
        .expect("valid YAML")
        .into_iter()
        .next()
        .expect("one document")
}

fn text<'a>(node: &'a Yaml, key: &str) -> Option<&'a str> {
    node[key].as_str()
}

fn list<'a>(node: &'a Yaml, key: &str) -> &'a [Yaml] {
    node[key].as_vec().map_or(&[], Vec::as_slice)
}

struct Rule {
    /// The alert's name, or the series a recording rule writes.
    name: String,
    alert: bool,
    expr: String,
    node: Yaml,
}

/// The rule groups of `alerts.yml`, by name, in file order.
fn rule_groups() -> Vec<(String, Vec<Rule>)> {
    let document = yaml(RULES);
    list(&document, "groups")
        .iter()
        .map(|group| {
            let rules = list(group, "rules")
                .iter()
                .map(|rule| {
                    let (name, alert) = match (text(rule, "alert"), text(rule, "record")) {
                        (Some(alert), None) => (alert, true),
                        (None, Some(record)) => (record, false),
                        _ => panic!("a rule is an alert or a recording rule: {rule:?}"),
                    };
                    Rule {
                        name: name.to_owned(),
                        alert,
                        expr: text(rule, "expr").expect("a rule has an expr").to_owned(),
                        node: rule.clone(),
                    }
                })
                .collect();
            (
                text(group, "name").expect("a group has a name").to_owned(),
                rules,
            )
        })
        .collect()
}

struct PanelQuery {
    panel: String,
    ref_id: String,
    expr: String,
}

/// Every panel of the dashboard, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut found = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        found.push(panel);
        if let Some(nested) = panel["panels"].as_array() {
            found.extend(nested);
        }
    }
    found
}

fn panel_queries(dashboard: &Value) -> Vec<PanelQuery> {
    panels(dashboard)
        .into_iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or_default().to_owned();
            panel["targets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |target| PanelQuery {
                    panel: title.clone(),
                    ref_id: target["refId"].as_str().unwrap_or_default().to_owned(),
                    expr: target["expr"]
                        .as_str()
                        .expect("every target has an expr")
                        .to_owned(),
                })
        })
        .collect()
}

fn dashboard() -> Value {
    serde_json::from_str(DASHBOARD).expect("the dashboard is JSON")
}

/// A dashboard query as Grafana sends it with every job and instance selected.
fn as_sent(expr: &str, rate_window: &str) -> String {
    expr.replace("$__rate_interval", rate_window)
        .replace("$job", JOB)
        .replace("$instance", ".*")
}

async fn scrape(app: &TestApp) -> String {
    let address = app.metrics_address.unwrap_or(app.address);
    let response = app
        .client
        .get(format!("http://{address}/metrics"))
        .send()
        .await
        .expect("metrics answer");
    assert_eq!(response.status(), 200);
    response.text().await.expect("metrics text")
}

/// A sample's value in a scrape (the first series of that name).
fn sample(scrape: &str, name: &str) -> Option<f64> {
    samples(scrape, name).next()
}

/// The sum of every series of that name in a scrape.
fn total(scrape: &str, name: &str) -> f64 {
    samples(scrape, name).sum()
}

fn samples<'a>(scrape: &'a str, name: &'a str) -> impl Iterator<Item = f64> + 'a {
    scrape
        .lines()
        .filter(move |line| line.split([' ', '{']).next() == Some(name))
        .filter_map(|line| line.rsplit(' ').next())
        .filter_map(|value| value.parse().ok())
}

const UPDATE_PRODUCT: &str = "mutation Update($id: ID!, $input: UpdateProductInput!) { updateProduct(id: $id, input: $input) { id price } }";

/// A server as production runs it, `/metrics` on an address of its own, that purges an edge
/// after each mutation; here an edge that refuses every connection, so purges fail and stay
/// in the outbox, and the purge metrics have samples.
async fn spawn_instance() -> TestApp {
    let refusing_edge = restartable_port();
    TestApp::spawn_with(|config| {
        config.metrics_bind = Some("127.0.0.1:0".parse().expect("address"));
        config.edge_purge = EdgePurgeBackend::Varnish;
        config.edge_varnish_urls = vec![format!("http://127.0.0.1:{refusing_edge}")];
        config.edge_purge_wait_ms = 100;
    })
    .await
}

/// What a series of requests was answered with, by `X-Cache`.
#[derive(Debug, Default)]
struct Traffic {
    outcomes: BTreeMap<String, u32>,
}

impl Traffic {
    fn count(&self, outcome: &str) -> u32 {
        self.outcomes.get(outcome).copied().unwrap_or(0)
    }

    /// HIT / (HIT + STALE + MISS), the dashboard's and the alerts' hit rate.
    fn hit_rate(&self) -> f64 {
        let cacheable = self.count("HIT") + self.count("STALE") + self.count("MISS");
        f64::from(self.count("HIT")) / f64::from(cacheable)
    }
}

/// A mutation (and its failed purge), then each product read four times: a miss, then hits.
async fn mutate_then_read(app: &TestApp, token: &str, updated: &str, read: &[&str]) -> Traffic {
    app.gql_as(
        token,
        UPDATE_PRODUCT,
        json!({ "id": updated, "input": { "price": "9.99" } }),
    )
    .await
    .assert_ok();
    let mut traffic = Traffic::default();
    for round in 0..4 {
        for id in read {
            let response = app.gql(PRODUCT_BY_ID, json!({ "id": id })).await;
            response.assert_ok();
            if round == 0 {
                assert_eq!(response.x_cache(), "MISS", "the first read of product {id}");
            }
            *traffic
                .outcomes
                .entry(response.x_cache().to_owned())
                .or_default() += 1;
        }
    }
    assert!(traffic.count("HIT") > 0, "{traffic:?}");
    traffic
}

/// Requests of every kind the traffic makes, so that every series it moves exists before it
/// (a labelled counter appears at its first increment, and `rate()` counts increases from a
/// series' first sample): misses, hits, a mutation, an error. Hits and misses in the traffic's
/// proportion: `rate()` extrapolates a series towards its window's start at most as far as its
/// count would stay above zero, a distance proportional to the series' first value over its
/// increase, which is then the same for both and leaves their ratio exact.
async fn warm_up(app: &TestApp, token: &str) {
    mutate_then_read(app, token, "99", &["1", "5", "6", "7"]).await;
    app.gql("{ productz { id } }", json!({}))
        .await
        .assert_error("GRAPHQL_VALIDATION_FAILED");
}

/// The traffic the figures are checked against: 3 misses, then hits.
async fn send_traffic(app: &TestApp, token: &str) -> Traffic {
    mutate_then_read(app, token, "98", &["2", "3", "4"]).await
}

/// Families a server exports only once they have a sample, with what makes one, when this
/// run's test server cannot: read replicas need PostgreSQL (CI's third run has them).
fn sampled_only_with(app: &TestApp) -> Vec<(&'static str, &'static str)> {
    if app.config.database_replica_urls.is_empty() {
        vec![("catalog_db_reads_total", "read replicas")]
    } else {
        Vec::new()
    }
}

#[tokio::test]
async fn every_metric_the_dashboard_and_the_rules_name_is_exported() {
    let app = spawn_instance().await;
    let token = app.create_token("operator").await;
    warm_up(&app, &token).await;
    send_traffic(&app, &token).await;
    let exported = exported_names(&scrape(&app).await);
    for family in [
        "catalog_graphql_requests_total",
        "catalog_graphql_request_seconds_bucket",
        "catalog_cache_invalidations_deferred",
        "catalog_edge_purge_requests_total",
    ] {
        assert!(exported.contains(family), "{family} in {exported:?}");
    }
    let unsampled = sampled_only_with(&app);
    for (family, needs) in &unsampled {
        println!("{family} is exported only with {needs}: not checked in this run");
    }
    let groups = rule_groups();
    let recorded: BTreeSet<String> = groups
        .iter()
        .flat_map(|(_, rules)| rules.iter().filter(|rule| !rule.alert))
        .map(|rule| rule.name.clone())
        .collect();
    let known: BTreeSet<String> = exported
        .iter()
        .cloned()
        .chain(PROMETHEUS_SERIES.iter().map(|name| (*name).to_owned()))
        .chain(recorded.iter().cloned())
        .chain(unsampled.iter().map(|(family, _)| (*family).to_owned()))
        .collect();

    let mut checked = Vec::new();
    let dashboard = dashboard();
    for query in panel_queries(&dashboard) {
        let place = format!("panel {:?} query {}", query.panel, query.ref_id);
        checked.push((place, metric_names(&query.expr)));
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        if variable["type"] == "query" {
            let query = variable["query"]["query"].as_str().expect("a query");
            let place = format!("variable {}", variable["name"]);
            checked.push((place, label_values_names(query)));
        }
    }
    for (group, rules) in &groups {
        for rule in rules {
            let place = format!("rule {} in {group}", rule.name);
            checked.push((place, metric_names(&rule.expr)));
        }
    }
    assert!(checked.len() > 40, "{} queries checked", checked.len());
    let problems: Vec<String> = checked
        .iter()
        .filter_map(|(place, names)| {
            let unknown: Vec<&String> = names.difference(&known).collect();
            if names.is_empty() {
                Some(format!("{place} selects no metric"))
            } else if !unknown.is_empty() {
                Some(format!(
                    "{place} names {unknown:?}, which no scrape exports"
                ))
            } else {
                None
            }
        })
        .collect();
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_dashboard_is_scoped_by_its_variables_and_has_the_promised_panels() {
    let dashboard = dashboard();
    assert_eq!(dashboard["schemaVersion"], 39);
    let variables: BTreeMap<&str, &Value> = dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
        .iter()
        .map(|variable| (variable["name"].as_str().expect("a name"), variable))
        .collect();
    assert_eq!(variables["datasource"]["type"], "datasource");
    assert_eq!(variables["datasource"]["query"], "prometheus");
    assert_eq!(variables["job"]["type"], "query");
    assert_eq!(variables["instance"]["includeAll"], true);
    assert_eq!(variables["instance"]["allValue"], ".*");

    let mut ids = BTreeSet::new();
    let mut titles = BTreeSet::new();
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().expect("a title");
        assert!(
            ids.insert(panel["id"].as_u64().expect("an id")),
            "{title}: ids are unique"
        );
        titles.insert(title);
        let grid = &panel["gridPos"];
        let right = grid["x"].as_u64().expect("x") + grid["w"].as_u64().expect("w");
        assert!(right <= 24, "{title} fits the 24 columns");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has queries");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
        }
    }
    for query in panel_queries(&dashboard) {
        // Every selector is scoped to the chosen job and instances.
        for matchers in query.expr.split('{').skip(1) {
            let matchers = matchers.split('}').next().unwrap_or_default();
            assert!(
                matchers.contains(r#"job="$job""#) && matchers.contains(r#"instance=~"$instance""#),
                "{} {}: {{{matchers}}}",
                query.panel,
                query.ref_id
            );
        }
    }
    for promised in [
        "Requests per second",
        "Cache hit rate",
        "Cache lookups by outcome",
        "Latency p50 / p99",
        "Invalidations",
        "Edge purges",
        "Edge purge backlog",
        "Backend state",
        "Errors by code",
        "Rate-limited requests",
    ] {
        assert!(
            titles.contains(promised),
            "a panel {promised:?} in {titles:?}"
        );
    }
}

#[test]
fn every_alert_is_labelled_annotated_and_unit_tested_firing_and_quiet() {
    let alerts: Vec<Rule> = rule_groups()
        .into_iter()
        .flat_map(|(_, rules)| rules)
        .filter(|rule| rule.alert)
        .collect();
    assert!(alerts.len() >= 10, "{} alerts", alerts.len());
    for alert in &alerts {
        let node = &alert.node;
        assert!(
            text(node, "for").is_some(),
            "{}: a for: duration",
            alert.name
        );
        assert!(
            matches!(
                node["labels"]["severity"].as_str(),
                Some("warning" | "critical")
            ),
            "{}: a severity",
            alert.name
        );
        for annotation in ["summary", "description"] {
            assert!(
                node["annotations"][annotation].as_str().is_some(),
                "{}: a {annotation}",
                alert.name
            );
        }
    }
    // alertname -> (a case where it fires, a case where it does not)
    let mut cases: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    let tests = yaml(RULE_TESTS);
    for test in list(&tests, "tests") {
        for case in list(test, "alert_rule_test") {
            let name = text(case, "alertname").expect("an alertname").to_owned();
            let fires = !list(case, "exp_alerts").is_empty();
            let entry = cases.entry(name).or_default();
            entry.0 |= fires;
            entry.1 |= !fires;
        }
    }
    for alert in &alerts {
        assert_eq!(
            cases.get(&alert.name),
            Some(&(true, true)),
            "{}: alerts_test.yml shows it firing and staying quiet",
            alert.name
        );
    }
    let names: BTreeSet<&String> = alerts.iter().map(|alert| &alert.name).collect();
    for tested in cases.keys() {
        assert!(names.contains(tested), "{tested} is tested but not defined");
    }
}

fn promtool(args: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .output()
        .expect("run promtool");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?}:\n{printed}");
    printed
}

#[test]
fn promtool_accepts_the_rules_and_the_configuration_and_the_rule_tests_pass() {
    if !prometheus_process::installed() {
        eprintln!("prometheus/promtool is not installed: skipping the promtool checks");
        return;
    }
    let rules = deploy_file("prometheus/alerts.yml");
    let count: usize = rule_groups().iter().map(|(_, rules)| rules.len()).sum();
    let checked = promtool(&["check", "rules", rules.to_str().expect("path")]);
    assert!(
        checked.contains(&format!("SUCCESS: {count} rules found")),
        "{checked}"
    );
    let config = deploy_file("prometheus/prometheus.yml");
    let checked = promtool(&["check", "config", config.to_str().expect("path")]);
    assert!(checked.contains("SUCCESS: 1 rule files found"), "{checked}");
    let tests = deploy_file("prometheus/alerts_test.yml");
    let tested = promtool(&["test", "rules", tests.to_str().expect("path")]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[tokio::test]
async fn a_real_prometheus_scrapes_an_instance_evaluates_the_rules_and_answers_the_dashboard() {
    if !prometheus_process::installed() {
        eprintln!("prometheus/promtool is not installed: skipping the Prometheus test");
        return;
    }
    // Every series the traffic moves exists before Prometheus first scrapes, so that its
    // first sample has the warm-up's count and rates over the run count exactly the
    // traffic's requests (a scrape in the middle of the warm-up would count part of it).
    let app = spawn_instance().await;
    let token = app.create_token("operator").await;
    warm_up(&app, &token).await;
    let target = app.metrics_address.expect("a metrics address");
    let prometheus = PrometheusProcess::start(target, &deploy_file("prometheus/alerts.yml")).await;
    let scraped_up_to_now = || async {
        let served = total(&scrape(&app).await, "catalog_graphql_requests_total");
        eventually(Duration::from_secs(20), || async {
            prometheus
                .value("sum(catalog_graphql_requests_total)")
                .await
                == Some(served)
        })
        .await
    };
    assert!(scraped_up_to_now().await, "prometheus scrapes {target}");
    assert_eq!(
        prometheus.value(&format!("up{{job=\"{JOB}\"}}")).await,
        Some(1.0)
    );
    let targets = prometheus.api("/api/v1/targets", &[]).await;
    let active = targets["activeTargets"].as_array().expect("targets");
    assert_eq!(active.len(), 1, "{targets}");
    assert_eq!(active[0]["health"], "up", "{targets}");
    assert_eq!(active[0]["labels"]["job"], JOB);
    assert_eq!(active[0]["scrapeUrl"], format!("http://{target}/metrics"));

    let traffic = send_traffic(&app, &token).await;
    assert!(scraped_up_to_now().await, "prometheus saw the traffic");

    // Every dashboard query is valid PromQL to a real Prometheus; those about what this
    // instance did answer with data.
    let dashboard = dashboard();
    let may_be_empty: BTreeSet<(&str, &str)> = [
        ("Server error ratio", "A"),       // no server errors were made
        ("SQL statements and reads", "B"), // reads by database: only with replicas
        ("Rate-limited requests", "A"),    // nothing was rate limited
    ]
    .into();
    for query in panel_queries(&dashboard) {
        let result = prometheus.query(&as_sent(&query.expr, "5m")).await;
        if !may_be_empty.contains(&(query.panel.as_str(), query.ref_id.as_str())) {
            assert!(
                !result.is_empty(),
                "panel {:?} query {} answered nothing: {}",
                query.panel,
                query.ref_id,
                query.expr
            );
        }
    }
    let hit_rate = panel_queries(&dashboard)
        .into_iter()
        .find(|query| query.panel == "Cache hit rate")
        .expect("a hit rate panel");
    let answered = prometheus
        .value(&as_sent(&hit_rate.expr, "5m"))
        .await
        .expect("one hit rate");
    assert!(
        (answered - traffic.hit_rate()).abs() < 1e-9,
        "the dashboard's hit rate {answered} is what the requests made: {}",
        traffic.hit_rate()
    );

    // The rules are loaded, evaluate without error, and record the same hit rate.
    let groups = rule_groups();
    let recorded = eventually(Duration::from_secs(20), || async {
        prometheus
            .value("instance:catalog_cache_hit_ratio:rate10m")
            .await
            .is_some_and(|ratio| (ratio - traffic.hit_rate()).abs() < 1e-9)
    })
    .await;
    assert!(recorded, "the recording rule's hit rate is the requests'");
    let evaluated = eventually(Duration::from_secs(20), || async {
        let loaded = prometheus.api("/api/v1/rules", &[]).await;
        let loaded = loaded["groups"].as_array().cloned().unwrap_or_default();
        loaded.len() == groups.len()
            && loaded.iter().all(|group| {
                group["rules"]
                    .as_array()
                    .is_some_and(|rules| rules.iter().all(|rule| rule["health"] == "ok"))
            })
    })
    .await;
    let loaded = prometheus.api("/api/v1/rules", &[]).await;
    assert!(evaluated, "every rule evaluated healthy: {loaded}");
    let loaded_names: BTreeMap<String, Vec<String>> = loaded["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|group| {
            let rules = group["rules"].as_array().expect("rules");
            (
                group["name"].as_str().expect("name").to_owned(),
                rules
                    .iter()
                    .map(|rule| rule["name"].as_str().expect("name").to_owned())
                    .collect(),
            )
        })
        .collect();
    let expected_names: BTreeMap<String, Vec<String>> = groups
        .iter()
        .map(|(group, rules)| {
            (
                group.clone(),
                rules.iter().map(|rule| rule.name.clone()).collect(),
            )
        })
        .collect();
    assert_eq!(loaded_names, expected_names);

    // The refusing edge is the one fault: its failing purges are found (pending: the alert
    // fires after 10 minutes), and nothing else alerts (the backlog alert only past a
    // minute's wait).
    let alerting = |alerts: Value| -> BTreeSet<(String, String)> {
        alerts["alerts"]
            .as_array()
            .expect("alerts")
            .iter()
            .map(|alert| {
                let name = alert["labels"]["alertname"].as_str().expect("a name");
                let state = alert["state"].as_str().expect("a state");
                (name.to_owned(), state.to_owned())
            })
            .collect()
    };
    let purge_failures = (
        "CatalogApiEdgePurgeFailing".to_owned(),
        "pending".to_owned(),
    );
    let found = eventually(Duration::from_secs(20), || async {
        alerting(prometheus.api("/api/v1/alerts", &[]).await).contains(&purge_failures)
    })
    .await;
    let alerts = alerting(prometheus.api("/api/v1/alerts", &[]).await);
    assert!(found, "the failing edge purges are found: {alerts:?}");
    for (name, state) in &alerts {
        assert!(
            name == "CatalogApiEdgePurgeFailing"
                || (name == "CatalogApiEdgePurgeBacklog" && state == "pending"),
            "only the edge alerts: {alerts:?}"
        );
    }

    // A stopped instance is found down.
    app.stop().await;
    let pending = eventually(Duration::from_secs(30), || async {
        let alerts = prometheus.api("/api/v1/alerts", &[]).await;
        alerts["alerts"].as_array().is_some_and(|alerts| {
            alerts.iter().any(|alert| {
                alert["labels"]["alertname"] == "CatalogApiInstanceDown"
                    && alert["labels"]["instance"] == target.to_string()
                    && alert["state"] == "pending"
            })
        })
    })
    .await;
    assert!(
        pending,
        "CatalogApiInstanceDown is pending for the stopped instance"
    );
}

#[tokio::test]
async fn the_cache_backend_gauges_follow_a_redis_stall() {
    let Some(redis) = RedisProcess::start().await else {
        return;
    };
    let (mut config, files) = crate::support::helpers::test_config().await;
    config.redis_url = Some(redis.url());
    config.redis_command_timeout_ms = 100;
    config.redis_connect_timeout_ms = 200;
    config.metrics_bind = Some("127.0.0.1:0".parse().expect("address"));
    let app = TestApp::start(
        config,
        files,
        Some(catalog_api::db::seed::SeedPlan {
            categories: 10,
            products: 100,
        }),
    )
    .await;
    let token = app.create_token("writer").await;
    // Both gauges at 0, after a read (a command that timed out on a busy machine opens the
    // breaker too, until a later one succeeds).
    let healthy = || async {
        app.gql(PRODUCT_BY_ID, json!({ "id": "42" }))
            .await
            .assert_ok();
        let metrics = scrape(&app).await;
        sample(&metrics, "catalog_cache_backend_unreachable") == Some(0.0)
            && sample(&metrics, "catalog_cache_invalidations_deferred") == Some(0.0)
    };
    assert!(
        eventually(Duration::from_secs(20), healthy).await,
        "healthy before the stall: {}",
        scrape(&app).await
    );

    redis.pause();
    app.gql_as(
        &token,
        UPDATE_PRODUCT,
        json!({ "id": "42", "input": { "price": "3.33" } }),
    )
    .await
    .assert_ok();
    let during = scrape(&app).await;
    assert_eq!(
        sample(&during, "catalog_cache_backend_unreachable"),
        Some(1.0),
        "the breaker is open while Redis does not answer"
    );
    let deferred = sample(&during, "catalog_cache_invalidations_deferred").expect("a gauge");
    assert!(
        deferred >= 1.0,
        "the mutation's tags wait for replay: {deferred}"
    );

    redis.resume();
    assert!(
        eventually(Duration::from_secs(20), healthy).await,
        "both gauges return to 0 once Redis answers: {}",
        scrape(&app).await
    );
}

#[tokio::test]
async fn the_database_gauge_follows_a_database_outage() {
    if std::env::var("CATALOG_TEST_DATABASE_URL").is_err() {
        println!(
            "skipped: the database gauge test needs PostgreSQL (set CATALOG_TEST_DATABASE_URL)"
        );
        return;
    }
    let (app, proxy) = TestApp::spawn_behind_database_proxy(|config| {
        config.db_acquire_timeout_ms = 1_000;
        config.metrics_bind = Some("127.0.0.1:0".parse().expect("address"));
    })
    .await;
    assert_eq!(
        sample(&scrape(&app).await, "catalog_database_unreachable"),
        Some(0.0)
    );

    proxy.cut();
    app.gql(PRODUCT_BY_ID, json!({ "id": "2" }))
        .await
        .assert_error("SERVICE_UNAVAILABLE");
    assert_eq!(
        sample(&scrape(&app).await, "catalog_database_unreachable"),
        Some(1.0),
        "the breaker opened on the failed read"
    );

    proxy.restore();
    let recovered = eventually(Duration::from_secs(30), || async {
        sample(&scrape(&app).await, "catalog_database_unreachable") == Some(0.0)
    })
    .await;
    assert!(
        recovered,
        "the gauge returns to 0 once the breaker's probe reaches the database"
    );
}
