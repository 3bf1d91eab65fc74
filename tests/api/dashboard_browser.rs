//! The cache insights dashboard in a real browser: after some traffic (hits, misses, a
//! mutation that invalidates, a bypass), headless Chromium opens `/dashboard`, the token is
//! typed in, the four uPlot charts draw their series (pixels of each series' colour on each
//! canvas), a screenshot is taken, and every figure the page shows for the test's operations
//! and invalidators equals what `/metrics` exports at that moment. Skipped like the GraphiQL
//! test when Chromium is missing. `CATALOG_DASHBOARD_SCREENSHOT=path.png` keeps the picture.

use std::path::Path;

use serde_json::{Value, json};

use crate::graphiql_browser::{Browser, CHROMEDRIVER, CHROMIUM, start_chromedriver};
use crate::insights::{metrics_text, sample};
use crate::support::helpers::TestApp;

const PRODUCT: &str = "query OneProduct($id: ID!) { product(id: $id) { id name } }";
const PAGE: &str = "query FirstPage { products(first: 5) { edges { node { id name } } } }";
const UPDATE: &str = "mutation Rename($id: ID!, $name: String!) {
    updateProduct(id: $id, input: { name: $name }) { id } }";

/// Each chart and the colour of a series it must draw (`assets/dashboard/dashboard.js`).
const CHARTS: [(&str, [u8; 3]); 4] = [
    ("chart-hit-rate", [0x1f, 0x77, 0xb4]),
    ("chart-requests", [0x94, 0x67, 0xbd]),
    ("chart-latency", [0xd6, 0x27, 0x28]),
    ("chart-invalidators", [0x8c, 0x56, 0x4b]),
];

/// Pixels of its series colour a chart must show.
const DRAWN_PIXELS: u64 = 20;

/// Resolves, once at least three polls have drawn, to each chart's count of pixels in its
/// series colour (null until every chart has at least `arguments[1]`).
const CHARTS_DRAWN: &str = "
    const raw = document.body.dataset.figures;
    if (!raw || JSON.parse(raw).polls < 3) return null;
    const counts = {};
    for (const [id, rgb] of arguments[0]) {
      const canvas = document.querySelector('#' + id + ' canvas');
      if (!canvas || canvas.width === 0 || canvas.height === 0) return null;
      const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
      let count = 0;
      for (let i = 0; i < data.length; i += 4) {
        if (data[i + 3] > 200 && Math.abs(data[i] - rgb[0]) < 24
            && Math.abs(data[i + 1] - rgb[1]) < 24 && Math.abs(data[i + 2] - rgb[2]) < 24) {
          count += 1;
        }
      }
      if (count < arguments[1]) return null;
      counts[id] = count;
    }
    return counts;";

/// The settled page: its figures and what its operations table shows, row by row.
const READ_PAGE: &str = "
    if (window.catalogDashboard.polling()) return null;
    const rows = [...document.querySelectorAll('#operations tbody tr')].map(row => ({
      name: row.dataset.operation,
      document: row.dataset.document,
      requests: Number(row.querySelector('.requests').textContent),
      hits: Number(row.querySelector('.hits').textContent),
      misses: Number(row.querySelector('.misses').textContent),
    }));
    const invalidators = [...document.querySelectorAll('#invalidators tbody tr')].map(row => ({
      mutation: row.dataset.mutation,
      missesCaused: Number(row.querySelector('.misses-caused').textContent),
    }));
    return { figures: JSON.parse(document.body.dataset.figures), rows, invalidators };";

struct Seen {
    charts: Value,
    page: Value,
    screenshot: Vec<u8>,
}

async fn drive(browser: &Browser, url: &str, token: &str) -> Result<Seen, String> {
    browser.open(url).await?;
    browser
        .wait_for(
            "the dashboard page",
            "return document.getElementById('connect') !== null && typeof uPlot === 'function';",
            json!([]),
        )
        .await?;
    browser
        .script(
            "document.getElementById('token').value = arguments[0]; \
             document.getElementById('connect').requestSubmit(); return true;",
            json!([token]),
        )
        .await?;
    let charts = match browser
        .wait_for(
            "the four charts to draw",
            CHARTS_DRAWN,
            json!([CHARTS, DRAWN_PIXELS]),
        )
        .await
    {
        Ok(charts) => charts,
        Err(error) => {
            let counts = browser.script(CHARTS_DRAWN, json!([CHARTS, 0])).await;
            return Err(format!(
                "{error}\npixels in each series' colour: {counts:?}"
            ));
        }
    };
    browser
        .script("window.catalogDashboard.stop(); return true;", json!([]))
        .await?;
    let page = browser
        .wait_for("the last poll to settle", READ_PAGE, json!([]))
        .await?;
    let screenshot = browser.screenshot().await?;
    Ok(Seen {
        charts,
        page,
        screenshot,
    })
}

/// Width and height from a PNG's IHDR chunk, after checking the signature.
fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];
    if bytes.len() < 24 || bytes[..8] != SIGNATURE || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let number =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    Some((number(16), number(20)))
}

#[tokio::test]
async fn the_dashboard_draws_its_charts_in_chromium_and_shows_what_metrics_export() {
    if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
        eprintln!(
            "skipped: {CHROMIUM} or {CHROMEDRIVER} is missing \
             (apt-get install -y chromium chromium-driver)"
        );
        return;
    }
    let app = TestApp::spawn_on_primary(|config| config.allow_cache_bypass = true).await;
    let token = app.create_token("dashboard").await;
    // Traffic: misses, hits, an invalidation and the miss it causes, a bypass.
    for id in ["1", "1", "1", "2", "2"] {
        app.gql(PRODUCT, json!({ "id": id })).await.assert_ok();
    }
    for _ in 0..4 {
        app.gql(PAGE, json!({})).await.assert_ok();
    }
    app.gql_as(&token, UPDATE, json!({ "id": "1", "name": "Renamed" }))
        .await
        .assert_ok();
    app.gql(PRODUCT, json!({ "id": "1" })).await.assert_ok();
    app.gql(PAGE, json!({})).await.assert_ok();
    app.post_json(json!({ "query": PAGE }), None, &[("x-bypass-cache", "1")])
        .await
        .assert_ok();

    let (mut driver_process, driver) = start_chromedriver().await.expect("chromedriver starts");
    let profile = tempfile::tempdir().expect("a browser profile directory");
    let browser = Browser::start(&driver, profile.path())
        .await
        .expect("a Chromium session starts");
    let seen = drive(&browser, &app.url("/dashboard?every=400"), &token).await;
    browser.close().await;
    let _ = driver_process.kill().await;
    let seen = seen.unwrap_or_else(|error| panic!("the dashboard: {error}"));

    // The screenshot is a real picture of the window.
    let pictures = tempfile::tempdir().expect("a directory for the screenshot");
    let picture = pictures.path().join("dashboard.png");
    std::fs::write(&picture, &seen.screenshot).expect("the screenshot is written");
    if let Ok(keep) = std::env::var("CATALOG_DASHBOARD_SCREENSHOT") {
        std::fs::copy(&picture, keep).expect("the screenshot is kept");
    }
    let (width, height) = png_size(&seen.screenshot).expect("the screenshot is a PNG");
    assert!(width >= 1000 && height >= 700, "{width}x{height}");
    assert!(
        seen.screenshot.len() > 20_000,
        "a drawn page is not a blank picture: {} bytes",
        seen.screenshot.len()
    );
    for (chart, _) in CHARTS {
        assert!(
            seen.charts[chart].as_u64() >= Some(DRAWN_PIXELS),
            "{}",
            seen.charts
        );
    }

    // Every figure the page shows for the test's operations equals `/metrics` now (the page
    // has stopped polling; its own query is the one operation still moving, so it is skipped).
    let metrics = metrics_text(&app).await;
    let figures = &seen.page["figures"];
    let operations = figures["operations"].as_array().expect("operations");
    let mut compared = 0;
    for operation in operations {
        let name = operation["name"].as_str().expect("a name");
        if name == "CacheInsightsDashboard" {
            continue;
        }
        compared += 1;
        let document = operation["documentHash"].as_str().expect("a hash");
        let labels = [("operation", name), ("document", document)];
        let exported = |metric: &str| sample(&metrics, metric, &labels);
        let shown = |field: &str| operation[field].as_f64();
        assert_eq!(
            exported("catalog_cache_operation_requests_total"),
            shown("requests"),
            "{name}"
        );
        assert_eq!(
            exported("catalog_cache_operation_hits_total"),
            shown("hits"),
            "{name}"
        );
        // Ratios: equal within a unit in the last place (serde_json's float reading).
        let exported_ratio = exported("catalog_cache_operation_max_achievable_hit_ratio");
        let shown_ratio = shown("maxAchievableHitRate");
        assert!(
            matches!((exported_ratio, shown_ratio), (Some(a), Some(b)) if (a - b).abs() <= 1e-12),
            "{name}: {exported_ratio:?} exported, {shown_ratio:?} shown"
        );
        for (quantile, field) in [("0.5", "p50Ms"), ("0.99", "p99Ms")] {
            let labels = [labels[0], labels[1], ("quantile", quantile)];
            let seconds = sample(&metrics, "catalog_cache_operation_latency_seconds", &labels)
                .expect("a latency sample");
            let shown = shown(field).expect("a latency") / 1000.0;
            assert!(
                (seconds - shown).abs() <= 1e-12 * shown.max(1.0),
                "{name} {field}"
            );
        }
        for missed in operation["missesByReason"].as_array().expect("reasons") {
            let reason = missed["reason"].as_str().expect("a reason").to_lowercase();
            let labels = [labels[0], labels[1], ("reason", reason.as_str())];
            assert_eq!(
                sample(&metrics, "catalog_cache_operation_misses_total", &labels),
                missed["count"].as_f64(),
                "{name} {reason}"
            );
        }
        // The table shows the figures the charts were drawn from.
        let row = seen.page["rows"]
            .as_array()
            .and_then(|rows| {
                rows.iter()
                    .find(|row| row["name"] == name && row["document"] == document)
            })
            .unwrap_or_else(|| panic!("no row for {name}"));
        assert_eq!(row["requests"].as_f64(), shown("requests"), "{name}");
        assert_eq!(row["hits"].as_f64(), shown("hits"), "{name}");
        assert_eq!(row["misses"].as_f64(), shown("misses"), "{name}");
    }
    assert_eq!(compared, 2, "OneProduct and FirstPage: {operations:?}");
    let product = operations
        .iter()
        .find(|operation| operation["name"] == "OneProduct")
        .expect("OneProduct");
    assert_eq!(product["requests"], 6, "{product}");
    assert_eq!(product["hits"], 3, "{product}");
    let invalidators = figures["topInvalidators"].as_array().expect("invalidators");
    assert_eq!(invalidators.len(), 1, "{invalidators:?}");
    let mutation = invalidators[0]["mutation"].as_str().expect("a mutation");
    assert_eq!(mutation, "updateProduct");
    let labels = [("mutation", mutation)];
    assert_eq!(
        sample(
            &metrics,
            "catalog_cache_invalidator_misses_caused_total",
            &labels
        ),
        invalidators[0]["missesCaused"].as_f64()
    );
    assert_eq!(
        sample(
            &metrics,
            "catalog_cache_invalidator_invalidations_total",
            &labels
        ),
        invalidators[0]["invalidations"].as_f64()
    );
    // The product and the first page (which lists product 1) both missed for the mutation.
    assert_eq!(invalidators[0]["missesCaused"], 2, "{invalidators:?}");
    assert_eq!(seen.page["invalidators"][0]["missesCaused"], 2);
}
