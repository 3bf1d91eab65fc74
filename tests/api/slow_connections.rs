//! Hostile clients: connections that send half their headers, half their body, or nothing.
//! The server closes each one after its deadline, keeps answering others meanwhile, bounds
//! how many it holds, and a graceful shutdown does not wait for them past its grace period.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::helpers::TestApp;

const HALF_HEADERS: &[u8] = b"POST /graphql HTTP/1.1\r\nHost: catalog\r\nContent-";

/// Opens a connection and sends `bytes`, then nothing more.
async fn stalled(app: &TestApp, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(app.address).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    stream
}

/// Reads until the server closes the connection (or resets it); `None` if it is still open
/// at `deadline`. Returns what the server sent before closing.
pub(crate) async fn read_until_closed(
    stream: &mut TcpStream,
    deadline: Duration,
) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(deadline, async {
        let mut buffer = [0u8; 1024];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => received.extend_from_slice(&buffer[..read]),
            }
        }
    })
    .await;
    read.ok().map(|()| received)
}

/// The slowest of `count` sequential `/healthz` requests.
async fn slowest_healthz(app: &TestApp, count: usize) -> Duration {
    let mut slowest = Duration::ZERO;
    for _ in 0..count {
        let started = Instant::now();
        let response = app
            .client
            .get(app.url("/healthz"))
            .send()
            .await
            .expect("healthz answers");
        assert_eq!(response.status(), 200);
        slowest = slowest.max(started.elapsed());
    }
    slowest
}

#[tokio::test]
async fn connections_that_stall_in_their_headers_are_closed_while_healthz_stays_fast() {
    let timeout = Duration::from_millis(400);
    let app = TestApp::spawn_with(|config| {
        config.header_read_timeout_ms = timeout.as_millis() as u64;
    })
    .await;
    let started = Instant::now();
    let mut attackers = Vec::new();
    for index in 0..200 {
        // Half of them send half a request head, the other half nothing at all.
        let bytes: &[u8] = if index % 2 == 0 { HALF_HEADERS } else { b"" };
        attackers.push(stalled(&app, bytes).await);
    }
    let slowest = slowest_healthz(&app, 20).await;
    println!("slowest /healthz among 20 during a 200-connection slow-header attack: {slowest:?}");
    assert!(
        slowest < Duration::from_millis(500),
        "healthz took {slowest:?} under the attack"
    );
    for stream in &mut attackers {
        let closed = read_until_closed(stream, Duration::from_secs(10)).await;
        assert!(
            closed.is_some(),
            "a stalled connection is still open after {:?}",
            started.elapsed()
        );
    }
    let elapsed = started.elapsed();
    println!("200 stalled connections closed {elapsed:?} after they opened");
    assert!(
        elapsed >= timeout,
        "connections were closed before the timeout"
    );
}

#[tokio::test]
async fn a_body_that_stops_midway_is_answered_408_and_the_connection_closed() {
    let timeout = Duration::from_millis(400);
    let app = TestApp::spawn_with(|config| {
        config.body_read_timeout_ms = timeout.as_millis() as u64;
    })
    .await;
    let started = Instant::now();
    let mut stream = stalled(
        &app,
        b"POST /graphql HTTP/1.1\r\nHost: catalog\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"query\": \"{ products",
    )
    .await;
    let received = read_until_closed(&mut stream, Duration::from_secs(10))
        .await
        .expect("the server closes the connection");
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let body: Value = text
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or_else(|| panic!("a JSON body in {text}"));
    assert_eq!(body["errors"][0]["extensions"]["code"], "REQUEST_TIMEOUT");
    assert!(
        elapsed >= timeout && elapsed < timeout + Duration::from_secs(3),
        "answered after {elapsed:?}"
    );
    assert!(slowest_healthz(&app, 1).await < Duration::from_secs(1));
}

#[tokio::test]
async fn past_the_connection_bound_new_clients_wait_for_a_free_slot() {
    let timeout = Duration::from_millis(500);
    let app = TestApp::spawn_with(|config| {
        config.header_read_timeout_ms = timeout.as_millis() as u64;
        config.max_connections = 2;
    })
    .await;
    let mut first = stalled(&app, HALF_HEADERS).await;
    let mut second = stalled(&app, HALF_HEADERS).await;
    let started = Instant::now();
    // Both slots are taken: this client is accepted only once the stalled ones are closed.
    let response = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("healthz answers once a slot is free");
    let waited = started.elapsed();
    assert_eq!(response.status(), 200);
    assert!(
        waited >= timeout / 2,
        "healthz was served at once ({waited:?}) although both slots were taken"
    );
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");
    for stream in [&mut first, &mut second] {
        assert!(
            read_until_closed(stream, Duration::from_secs(5))
                .await
                .is_some()
        );
    }
}

#[tokio::test]
async fn graceful_shutdown_closes_a_stalled_connection_after_its_grace_period() {
    let grace = Duration::from_millis(300);
    let app = TestApp::spawn_with(|config| {
        config.header_read_timeout_ms = 60_000;
        config.shutdown_grace_ms = grace.as_millis() as u64;
    })
    .await;
    let mut stream = stalled(&app, HALF_HEADERS).await;
    // The stalled connection is accepted and being served before the signal.
    assert!(slowest_healthz(&app, 1).await < Duration::from_secs(1));
    let started = Instant::now();
    app.stop().await;
    let stopped = started.elapsed();
    println!("shutdown with a stalled connection open took {stopped:?} (grace {grace:?})");
    assert!(
        stopped >= grace && stopped < grace + Duration::from_secs(3),
        "shutdown took {stopped:?}"
    );
    assert!(
        read_until_closed(&mut stream, Duration::from_secs(1))
            .await
            .is_some(),
        "the stalled connection was closed by the shutdown"
    );
}
