//! GraphiQL in a real browser: headless Chromium, driven over chromedriver's WebDriver HTTP
//! API, loads the page the server serves at `/graphql`, fetches the schema (introspection),
//! lists `Query.products` in the docs explorer, offers `products` when `{ prod` is typed,
//! and shows the result of a query it runs. Skipped with a message when Chromium or
//! chromedriver is not installed (`apt-get install -y chromium chromium-driver`; .ci/run does).
//! The dashboard's test (`dashboard_browser`) drives the browser with the same `Browser`.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::helpers::TestApp;

pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";
pub(crate) const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long the browser gets for each step (start-up, schema load, a query's result).
const STEP_DEADLINE: Duration = Duration::from_secs(30);

/// The WebDriver element reference key (W3C WebDriver, "Elements").
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One WebDriver session, spoken to over HTTP.
pub(crate) struct Browser {
    client: reqwest::Client,
    session: String,
}

impl Browser {
    async fn command(
        client: &reqwest::Client,
        method: reqwest::Method,
        url: String,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut request = client.request(method, &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|error| format!("{url}: {error}"))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|error| format!("{url}: {error}"))?;
        if !status.is_success() {
            return Err(format!("{url}: {status} {}", body["value"]));
        }
        Ok(body["value"].clone())
    }

    pub(crate) async fn start(driver: &str, profile: &Path) -> Result<Browser, String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|error| error.to_string())?;
        let arguments = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--window-size=1400,1000".to_owned(),
            format!("--user-data-dir={}", profile.display()),
        ];
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": arguments },
        } } });
        let session = Self::command(
            &client,
            reqwest::Method::POST,
            format!("{driver}/session"),
            Some(capabilities),
        )
        .await?;
        let session = session["sessionId"]
            .as_str()
            .ok_or("no sessionId")?
            .to_owned();
        Ok(Browser {
            client,
            session: format!("{driver}/session/{session}"),
        })
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, String> {
        Self::command(
            &self.client,
            reqwest::Method::POST,
            format!("{}{path}", self.session),
            Some(body),
        )
        .await
    }

    pub(crate) async fn open(&self, url: &str) -> Result<(), String> {
        self.post("/url", json!({ "url": url })).await.map(drop)
    }

    /// Runs `script` (a function body; `arguments` as in WebDriver) in the page.
    pub(crate) async fn script(&self, script: &str, arguments: Value) -> Result<Value, String> {
        self.post(
            "/execute/sync",
            json!({ "script": script, "args": arguments }),
        )
        .await
    }

    /// Runs `script` until it returns something other than null/false, or the deadline.
    pub(crate) async fn wait_for(
        &self,
        what: &str,
        script: &str,
        arguments: Value,
    ) -> Result<Value, String> {
        let started = Instant::now();
        loop {
            let value = self.script(script, arguments.clone()).await?;
            if !value.is_null() && value != false {
                return Ok(value);
            }
            if started.elapsed() > STEP_DEADLINE {
                let page = self
                    .script("return document.body.innerText.slice(0, 2000);", json!([]))
                    .await
                    .unwrap_or_default();
                return Err(format!(
                    "gave up waiting for {what}; the page shows:\n{page}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends keystrokes to the element `selector` finds.
    async fn type_into(&self, selector: &str, text: &str) -> Result<(), String> {
        let element = self
            .post(
                "/element",
                json!({ "using": "css selector", "value": selector }),
            )
            .await?;
        let id = element[ELEMENT]
            .as_str()
            .ok_or_else(|| format!("no element id in {element}"))?;
        self.post(&format!("/element/{id}/value"), json!({ "text": text }))
            .await
            .map(drop)
    }

    /// A PNG of the window as it is drawn now.
    pub(crate) async fn screenshot(&self) -> Result<Vec<u8>, String> {
        use base64::Engine as _;
        let encoded = Self::command(
            &self.client,
            reqwest::Method::GET,
            format!("{}/screenshot", self.session),
            None,
        )
        .await?;
        let encoded = encoded.as_str().ok_or("the screenshot is not a string")?;
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|error| format!("the screenshot is not base64: {error}"))
    }

    pub(crate) async fn close(self) {
        let _ = Self::command(&self.client, reqwest::Method::DELETE, self.session, None).await;
    }
}

/// Starts chromedriver on a free port and waits until it is ready.
pub(crate) async fn start_chromedriver() -> Result<(tokio::process::Child, String), String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map_err(|error| error.to_string())?
        .port();
    let child = tokio::process::Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| format!("chromedriver: {error}"))?;
    let driver = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        let ready = client.get(format!("{driver}/status")).send().await;
        if let Ok(response) = ready
            && let Ok(status) = response.json::<Value>().await
            && status["value"]["ready"] == true
        {
            return Ok((child, driver));
        }
        if started.elapsed() > STEP_DEADLINE {
            return Err("chromedriver did not become ready".to_owned());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the browser saw, for the assertions.
struct Seen {
    docs_fields: Vec<String>,
    hints: Vec<String>,
    result: String,
}

/// The query the browser runs.
const RUN: &str = "{ products(first: 2) { totalCount edges { node { name } } } }";

/// The CodeMirror instance of the query editor, for the scripts below.
const QUERY_EDITOR: &str =
    "document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror";

async fn drive(browser: &Browser, url: &str) -> Result<Seen, String> {
    browser.open(url).await?;
    // The schema has loaded when the docs explorer can show the root types.
    browser
        .wait_for(
            "GraphiQL to render",
            "return document.querySelector('.graphiql-query-editor .CodeMirror') !== null;",
            json!([]),
        )
        .await?;
    browser
        .script(
            "const button = document.querySelector('button[aria-label*=\"Documentation Explorer\"]'); \
             if (button) button.click(); return button !== null;",
            json!([]),
        )
        .await?;
    browser
        .wait_for(
            "the schema in the docs explorer",
            "const link = [...document.querySelectorAll('.graphiql-doc-explorer a.graphiql-doc-explorer-type-name')] \
               .find(link => link.textContent === 'Query'); \
             if (!link) return null; link.click(); return true;",
            json!([]),
        )
        .await?;
    let docs_fields = browser
        .wait_for(
            "the fields of Query",
            "const names = [...document.querySelectorAll('.graphiql-doc-explorer .graphiql-doc-explorer-field-name')] \
               .map(element => element.textContent); \
             return names.length > 0 ? names : null;",
            json!([]),
        )
        .await?;

    // Autocomplete: type `{ prod` as a user would, and read the hint list.
    browser
        .script(
            &format!("{QUERY_EDITOR}.setValue(''); {QUERY_EDITOR}.focus(); return true;"),
            json!([]),
        )
        .await?;
    browser
        .type_into(".graphiql-query-editor .CodeMirror textarea", "{ prod")
        .await?;
    let hints = browser
        .wait_for(
            "the autocomplete hints",
            "const hints = [...document.querySelectorAll('.CodeMirror-hints .CodeMirror-hint')] \
               .map(element => element.textContent); \
             return hints.length > 0 ? hints : null;",
            json!([]),
        )
        .await?;

    // Run a query and read the result pane.
    browser
        .script(
            &format!("{QUERY_EDITOR}.setValue(arguments[0]); return true;"),
            json!([RUN]),
        )
        .await?;
    // GraphiQL learns the operation (and its name) from an edit after a debounce, and stores
    // the query when it has: clicking before that would run the previous operation's name.
    browser
        .wait_for(
            "GraphiQL to take in the edited query",
            "return localStorage.getItem('graphiql:query') === arguments[0];",
            json!([RUN]),
        )
        .await?;
    browser
        .script(
            "document.querySelector('.graphiql-execute-button').click(); return true;",
            json!([]),
        )
        .await?;
    let result = browser
        .wait_for(
            "the result",
            "const pane = document.querySelector('.graphiql-response .CodeMirror'); \
             const text = pane ? pane.CodeMirror.getValue() : ''; \
             return text.includes('totalCount') ? text : null;",
            json!([]),
        )
        .await?;
    Ok(Seen {
        docs_fields: serde_json::from_value(docs_fields).map_err(|error| error.to_string())?,
        hints: serde_json::from_value(hints).map_err(|error| error.to_string())?,
        result: result.as_str().unwrap_or_default().to_owned(),
    })
}

#[tokio::test]
async fn graphiql_loads_the_schema_documents_it_completes_and_runs_a_query_in_chromium() {
    if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
        eprintln!(
            "skipped: {CHROMIUM} or {CHROMEDRIVER} is missing \
             (apt-get install -y chromium chromium-driver)"
        );
        return;
    }
    let app = TestApp::spawn().await;
    let (mut driver_process, driver) = start_chromedriver().await.expect("chromedriver starts");
    let profile = tempfile::tempdir().expect("a browser profile directory");
    let browser = Browser::start(&driver, profile.path())
        .await
        .expect("a Chromium session starts");
    // The session is closed (and Chromium with it) whether or not the page behaved.
    let seen = drive(&browser, &app.url("/graphql")).await;
    browser.close().await;
    // Killed and waited for, so no zombie outlives the test.
    let _ = driver_process.kill().await;
    let seen = seen.unwrap_or_else(|error| panic!("GraphiQL: {error}"));

    assert!(
        seen.docs_fields.iter().any(|name| name == "products"),
        "the docs explorer lists Query.products: {:?}",
        seen.docs_fields
    );
    assert!(
        seen.hints.iter().any(|hint| hint == "products"),
        "typing `{{ prod` offers `products`: {:?}",
        seen.hints
    );
    let result: Value = serde_json::from_str(&seen.result)
        .unwrap_or_else(|error| panic!("the result pane holds JSON ({error}): {}", seen.result));
    assert_eq!(result["data"]["products"]["totalCount"], 1000, "{result}");
    assert_eq!(
        result["data"]["products"]["edges"][0]["node"]["name"], "Product 000001",
        "{result}"
    );
}
