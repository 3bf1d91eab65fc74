//! Every class of hostile input the review tried, in one table: each is sent several times
//! at once while `/healthz` is sampled, and must get its status and stable code, no
//! internals in the message, and leave the server answering health checks quickly.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::helpers::{GqlResponse, TestApp};

/// What a hostile request must get back.
struct Expected {
    status: u16,
    /// `None` when the answer is a success (`data`, no errors).
    code: Option<&'static str>,
}

enum Attack {
    Body(&'static str, String),
    Json(Value),
    Authorized(Value),
    Header(String),
    Get(String),
    BadToken(Value),
}

/// The slowest health check allowed while an attack runs: an attack may cost CPU, never a
/// stall. Debug builds (what `cargo test` runs) are about ten times slower than release.
const HEALTHZ_BOUND: Duration = if cfg!(debug_assertions) {
    Duration::from_millis(1_000)
} else {
    Duration::from_millis(100)
};

const WORDS_THAT_BETRAY_INTERNALS: &[&str] = &[
    "sqlx",
    "sea_orm",
    "SELECT",
    "panicked",
    "src/",
    "thread '",
    "DbErr",
    "redis::",
    "backtrace",
];

fn attacks() -> Vec<(&'static str, Attack, Expected)> {
    let product = "{ product(id: \"1\") { id } }";
    let mut fragment_bomb = String::from("{ products { edges { node { ...F0 } } } }\n");
    for level in 0..30 {
        fragment_bomb.push_str(&format!(
            "fragment F{level} on Product {{ ...F{next} ...F{next} }}\n",
            next = level + 1
        ));
    }
    fragment_bomb.push_str("fragment F30 on Product { id }\n");
    let aliases: Vec<String> = (0..2_400)
        .map(|i| format!("a{i}: product(id: \"{}\") {{ id }}", i % 1_000 + 1))
        .collect();
    let mut deep = String::from("id");
    for _ in 0..14 {
        deep = format!("category {{ products(first: 1) {{ edges {{ node {{ {deep} }} }} }} }}");
    }
    let forged = "djE6aWQ6OTk5OTk5OTk5OTk5OTk5OTk5OTk5Ojk5OQ";
    vec![
        (
            "malformed JSON",
            Attack::Body("application/json", "{\"query\": ".into()),
            Expected {
                status: 400,
                code: Some("BAD_REQUEST"),
            },
        ),
        (
            "query of the wrong type",
            Attack::Json(json!({ "query": 5 })),
            Expected {
                status: 400,
                code: Some("BAD_REQUEST"),
            },
        ),
        (
            "150,000 nested arrays",
            Attack::Body("application/json", "[".repeat(150_000)),
            Expected {
                status: 400,
                code: Some("BAD_REQUEST"),
            },
        ),
        (
            "batch over the limit",
            Attack::Json(Value::Array(vec![json!({ "query": product }); 11])),
            Expected {
                status: 400,
                code: Some("BAD_REQUEST"),
            },
        ),
        (
            "body over the limit",
            Attack::Body(
                "application/json",
                format!("{{\"query\": \"{}\"}}", "a".repeat(1_100_000)),
            ),
            Expected {
                status: 413,
                code: Some("PAYLOAD_TOO_LARGE"),
            },
        ),
        (
            "900 KB search string",
            Attack::Json(
                json!({ "query": "query S($s: String!) { products(filter: { search: $s }) { totalCount } }", "variables": { "s": "x".repeat(900_000) } }),
            ),
            Expected {
                status: 200,
                code: Some("BAD_USER_INPUT"),
            },
        ),
        (
            "forged cursor",
            Attack::Json(
                json!({ "query": format!("{{ products(after: \"{forged}\") {{ totalCount }} }}") }),
            ),
            Expected {
                status: 200,
                code: Some("BAD_USER_INPUT"),
            },
        ),
        (
            "SQL in search",
            Attack::Json(
                json!({ "query": "{ products(filter: { search: \"' OR 1=1; DROP TABLE product; --\" }) { totalCount } }" }),
            ),
            Expected {
                status: 200,
                code: None,
            },
        ),
        (
            "NUL byte in search",
            Attack::Json(
                json!({ "query": "{ products(filter: { search: \"a\\u0000b\" }) { totalCount } }" }),
            ),
            Expected {
                status: 200,
                code: Some("BAD_USER_INPUT"),
            },
        ),
        (
            "fragment bomb",
            Attack::Json(json!({ "query": fragment_bomb })),
            Expected {
                status: 200,
                code: Some("GRAPHQL_VALIDATION_FAILED"),
            },
        ),
        (
            "2,400 aliases",
            Attack::Json(json!({ "query": format!("{{ {} }}", aliases.join(" ")) })),
            Expected {
                status: 200,
                code: Some("GRAPHQL_VALIDATION_FAILED"),
            },
        ),
        (
            "deep nesting",
            Attack::Json(json!({ "query": format!("{{ product(id: \"1\") {{ {deep} }} }}") })),
            Expected {
                status: 200,
                code: Some("GRAPHQL_VALIDATION_FAILED"),
            },
        ),
        (
            "negative price",
            Attack::Authorized(
                json!({ "query": "mutation { updateProduct(id: \"1\", input: { price: \"-1\" }) { id } }" }),
            ),
            Expected {
                status: 200,
                code: Some("BAD_USER_INPUT"),
            },
        ),
        (
            "over-precise price",
            Attack::Authorized(
                json!({ "query": "mutation { updateProduct(id: \"1\", input: { price: \"1.001\" }) { id } }" }),
            ),
            Expected {
                status: 200,
                code: Some("BAD_USER_INPUT"),
            },
        ),
        (
            "unknown id",
            Attack::Authorized(
                json!({ "query": "mutation { updateProduct(id: \"99999999\", input: { price: \"1\" }) { id } }" }),
            ),
            Expected {
                status: 200,
                code: Some("NOT_FOUND"),
            },
        ),
        (
            "bad token",
            Attack::BadToken(json!({ "query": product })),
            Expected {
                status: 401,
                code: Some("UNAUTHENTICATED"),
            },
        ),
        (
            "100 KB header",
            Attack::Header("x".repeat(100_000)),
            Expected {
                status: 431,
                code: None,
            },
        ),
        (
            "60 KB URL",
            Attack::Get(format!("/graphql?query={}", "a".repeat(60_000))),
            Expected {
                status: 431,
                code: None,
            },
        ),
    ]
}

async fn send(app: &TestApp, token: &str, attack: &Attack) -> GqlResponse {
    let request = match attack {
        Attack::Body(content_type, body) => app
            .client
            .post(app.url("/graphql"))
            .header("content-type", *content_type)
            .body(body.clone()),
        Attack::Json(body) => app.client.post(app.url("/graphql")).json(body),
        Attack::Authorized(body) => app
            .client
            .post(app.url("/graphql"))
            .bearer_auth(token)
            .json(body),
        Attack::BadToken(body) => app
            .client
            .post(app.url("/graphql"))
            .bearer_auth("cat_not-a-real-token")
            .json(body),
        Attack::Header(value) => app
            .client
            .post(app.url("/graphql"))
            .header("x-padding", value.as_str())
            .json(&json!({ "query": "{ __typename }" })),
        Attack::Get(path) => app.client.get(app.url(path)),
    };
    TestApp::read(request.send().await.expect("the server answers")).await
}

#[tokio::test]
async fn every_hostile_request_gets_a_clean_coded_answer_while_healthz_stays_fast() {
    let app = TestApp::spawn().await;
    let token = app.create_token("attacker-with-a-token").await;
    for (name, attack, expected) in attacks() {
        let attackers = futures::future::join_all((0..4).map(|_| send(&app, &token, &attack)));
        let health = async {
            let mut slowest = Duration::ZERO;
            for _ in 0..5 {
                let started = Instant::now();
                let status = app
                    .client
                    .get(app.url("/healthz"))
                    .send()
                    .await
                    .expect("healthz")
                    .status();
                assert_eq!(status, 200, "{name}: healthz");
                slowest = slowest.max(started.elapsed());
            }
            slowest
        };
        let (responses, slowest) = tokio::join!(attackers, health);
        assert!(
            slowest < HEALTHZ_BOUND,
            "{name}: healthz took {slowest:?} during the attack"
        );
        for response in responses {
            assert_eq!(
                response.status.as_u16(),
                expected.status,
                "{name}: {}",
                response.body
            );
            match expected.code {
                Some(code) => assert_eq!(
                    response.error_codes().first().map(String::as_str),
                    Some(code),
                    "{name}: {}",
                    response.body
                ),
                None if expected.status == 200 => assert!(
                    response.body.get("errors").is_none(),
                    "{name}: {}",
                    response.body
                ),
                None => {}
            }
            let text = response.body.to_string();
            for word in WORDS_THAT_BETRAY_INTERNALS {
                assert!(!text.contains(word), "{name}: {word:?} in {text}");
            }
        }
    }
}
