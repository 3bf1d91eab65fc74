//! HTTP/2 with prior knowledge on the API port, beside HTTP/1.1: the same answers and cache,
//! many streams on one connection up to the advertised bound and no further, the header read
//! timeout and idle close, the header list bound, and `Upgrade: h2c` answered over HTTP/1.1
//! (RFC 9113 §3.1 deprecates that upgrade). Tests that need one connection for certain drive
//! the h2 crate directly; reqwest stands for an ordinary client.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::future::join_all;
use reqwest::Version;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::slow_connections::read_until_closed;
use crate::support::helpers::{GqlResponse, PRODUCT_BY_ID, TestApp};

/// The bound the server advertises in its SETTINGS (`server::MAX_CONCURRENT_STREAMS`).
const MAX_CONCURRENT_STREAMS: usize = 100;

/// What an HTTP/2 client with prior knowledge sends first (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn product_query(id: u32) -> Value {
    json!({ "query": PRODUCT_BY_ID, "variables": { "id": id.to_string() } })
}

fn http2_client() -> reqwest::Client {
    reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// POSTs `body` to `/graphql` with `client`; also returns the HTTP version it was answered in.
async fn post(client: &reqwest::Client, app: &TestApp, body: &Value) -> (Version, GqlResponse) {
    let response = client
        .post(app.url("/graphql"))
        .json(body)
        .send()
        .await
        .expect("request");
    (response.version(), TestApp::read(response).await)
}

/// One HTTP/2 connection with prior knowledge through the h2 crate: every request sent on it
/// shares the one TCP connection, which reqwest's pool does not promise.
struct Http2Connection {
    sender: h2::client::SendRequest<Bytes>,
    /// Resolves when the connection ends (the server closed it, or it failed).
    driver: tokio::task::JoinHandle<Result<(), h2::Error>>,
    authority: String,
}

/// A response as the h2 crate delivers it, body read whole.
struct Http2Response {
    status: http::StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Http2Response {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!("a JSON body, got {:?}", String::from_utf8_lossy(&self.body))
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

impl Http2Connection {
    async fn open(app: &TestApp) -> Http2Connection {
        let stream = TcpStream::connect(app.address).await.expect("connect");
        let (sender, connection) = h2::client::handshake(stream)
            .await
            .expect("HTTP/2 handshake");
        Http2Connection {
            sender,
            driver: tokio::spawn(connection),
            authority: app.address.to_string(),
        }
    }

    async fn post_graphql(&self, body: &Value, extra: &[(&str, &str)]) -> Http2Response {
        self.try_post_graphql(body, extra)
            .await
            .expect("an HTTP/2 response")
    }

    async fn try_post_graphql(
        &self,
        body: &Value,
        extra: &[(&str, &str)],
    ) -> Result<Http2Response, h2::Error> {
        let mut request = http::Request::post(format!("http://{}/graphql", self.authority))
            .header("content-type", "application/json");
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        let request = request.body(()).expect("a valid request");
        let mut sender = self.sender.clone().ready().await?;
        let (response, mut stream) = sender.send_request(request, false)?;
        stream.send_data(Bytes::from(body.to_string()), true)?;
        let (parts, mut body) = response.await?.into_parts();
        let mut bytes = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            let _ = body.flow_control().release_capacity(chunk.len());
            bytes.extend_from_slice(&chunk);
        }
        Ok(Http2Response {
            status: parts.status,
            headers: parts.headers,
            body: bytes.freeze(),
        })
    }
}

#[tokio::test]
async fn a_query_over_http2_gets_the_body_and_cache_headers_it_gets_over_http1() {
    let app = TestApp::spawn().await;
    let query = product_query(42);
    let (version, over_http2) = post(&http2_client(), &app, &query).await;
    assert_eq!(version, Version::HTTP_2);
    assert_eq!(over_http2.assert_ok()["product"]["name"], "Product 000042");
    assert_eq!(over_http2.x_cache(), "MISS");

    let (version, over_http1) = post(&app.client, &app, &query).await;
    assert_eq!(version, Version::HTTP_11);
    assert_eq!(over_http1.body, over_http2.body);
    // One cache serves both protocols.
    assert_eq!(over_http1.x_cache(), "HIT");
    for name in [
        "content-type",
        "cache-control",
        "etag",
        "vary",
        "content-length",
    ] {
        let values = |response: &GqlResponse| -> Vec<String> {
            let values = response.headers.get_all(name).iter();
            values
                .map(|value| value.to_str().unwrap_or("").to_owned())
                .collect()
        };
        assert_eq!(
            values(&over_http2),
            values(&over_http1),
            "{name} differs between HTTP/2 and HTTP/1.1"
        );
    }
    assert!(over_http2.header("cache-control").is_some());
}

#[tokio::test]
async fn a_repeated_query_on_the_same_http2_connection_is_a_cache_hit() {
    let app = TestApp::spawn().await;
    let connection = Http2Connection::open(&app).await;
    let first = connection.post_graphql(&product_query(7), &[]).await;
    let second = connection.post_graphql(&product_query(7), &[]).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-cache"), Some("MISS"));
    assert_eq!(second.status, 200);
    assert_eq!(second.header("x-cache"), Some("HIT"));
    assert_eq!(second.body, first.body);
    assert_eq!(first.json()["data"]["product"]["name"], "Product 000007");
    assert!(
        !connection.driver.is_finished(),
        "the connection stays open"
    );
}

#[tokio::test]
async fn many_concurrent_streams_on_one_connection_all_answer() {
    let app = TestApp::spawn().await;
    let connection = Http2Connection::open(&app).await;
    // A first answer means the server's SETTINGS have arrived: until then the client knows no
    // bound, and streams it opens past it are refused (for the client to retry; RFC 9113 §8.7).
    let first = connection.post_graphql(&product_query(1), &[]).await;
    assert_eq!(first.status, 200);
    assert_eq!(
        connection.sender.current_max_send_streams(),
        MAX_CONCURRENT_STREAMS,
        "the stream bound the server advertised"
    );
    // Three times the stream bound: the client queues what the server's SETTINGS do not
    // allow at once, and every request is answered on this one connection.
    let ids: Vec<u32> = (1..=3 * MAX_CONCURRENT_STREAMS as u32).collect();
    let queries: Vec<Value> = ids.iter().map(|id| product_query(*id)).collect();
    let responses = join_all(
        queries
            .iter()
            .map(|query| connection.post_graphql(query, &[])),
    )
    .await;
    for (id, response) in ids.iter().zip(&responses) {
        assert_eq!(response.status, 200, "product {id}");
        assert_eq!(
            response.json()["data"]["product"]["name"],
            format!("Product {id:06}"),
        );
    }
    assert!(!connection.driver.is_finished());
}

/// HTTP/2 frames written by hand, for a client that ignores the server's stream bound (the h2
/// crate never exceeds it). Header blocks use only HPACK's static table and literals without
/// indexing (RFC 7541 §6.2.2), so no compression state is kept.
mod frames {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const END_STREAM: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const ACK: u8 = 0x1;
    pub const REFUSED_STREAM: u32 = 0x7;
    /// `:status: 200`, static table entry 8.
    pub const STATUS_200: u8 = 0x88;

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let length = u32::try_from(payload.len()).expect("a short payload");
        let mut frame = length.to_be_bytes()[1..].to_vec();
        frame.extend_from_slice(&[kind, flags]);
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    }

    /// `POST /graphql` with a JSON content type.
    pub fn post_graphql(authority: &str) -> Vec<u8> {
        // :method POST and :scheme http are static entries 3 and 6.
        let mut block = vec![0x83, 0x86];
        literal(&mut block, 4, b"/graphql");
        literal(&mut block, 1, authority.as_bytes());
        literal(&mut block, 31, b"application/json");
        block
    }

    /// A field whose name is static entry `name`, its value a short literal.
    fn literal(block: &mut Vec<u8>, name: u8, value: &[u8]) {
        // The index as an integer with a 4-bit prefix (RFC 7541 §5.1).
        if name < 15 {
            block.push(name);
        } else {
            block.extend_from_slice(&[0x0f, name - 15]);
        }
        block.push(u8::try_from(value.len()).expect("a short value"));
        block.extend_from_slice(value);
    }
}

/// Reads one frame: (type, flags, stream, payload).
async fn read_frame(stream: &mut TcpStream) -> (u8, u8, u32, Vec<u8>) {
    let mut head = [0u8; 9];
    stream.read_exact(&mut head).await.expect("a frame header");
    let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream_id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; length];
    stream
        .read_exact(&mut payload)
        .await
        .expect("a frame payload");
    (head[3], head[4], stream_id, payload)
}

#[tokio::test]
async fn a_stream_past_the_bound_is_refused_and_the_open_ones_still_answer() {
    let app = TestApp::spawn().await;
    let mut stream = TcpStream::connect(app.address).await.expect("connect");
    let authority = app.address.to_string();
    let mut opening = PREFACE.to_vec();
    opening.extend(frames::frame(frames::SETTINGS, 0, 0, &[]));
    // One more request than the bound, each with its body still to come, so none can end.
    for index in 0..=MAX_CONCURRENT_STREAMS as u32 {
        opening.extend(frames::frame(
            frames::HEADERS,
            frames::END_HEADERS,
            2 * index + 1,
            &frames::post_graphql(&authority),
        ));
    }
    stream.write_all(&opening).await.expect("write");
    let past_the_bound = 2 * MAX_CONCURRENT_STREAMS as u32 + 1;

    let mut refused = Vec::new();
    let deadline = Duration::from_secs(10);
    let read = tokio::time::timeout(deadline, async {
        while !refused.contains(&past_the_bound) {
            let (kind, flags, stream_id, payload) = read_frame(&mut stream).await;
            if kind == frames::SETTINGS && flags & frames::ACK == 0 {
                let ack = frames::frame(frames::SETTINGS, frames::ACK, 0, &[]);
                stream.write_all(&ack).await.expect("write");
            }
            if kind == frames::RST_STREAM {
                let code = u32::from_be_bytes(payload[..4].try_into().expect("4 bytes"));
                assert_eq!(code, frames::REFUSED_STREAM, "stream {stream_id} reset");
                refused.push(stream_id);
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no stream was refused within {deadline:?}");
    assert_eq!(refused, [past_the_bound], "only the stream past the bound");

    // The first stream gets its body and is answered: the open streams were kept.
    let body = json!({ "query": "{ __typename }" }).to_string();
    let data = frames::frame(frames::DATA, frames::END_STREAM, 1, body.as_bytes());
    stream.write_all(&data).await.expect("write");
    let answered = tokio::time::timeout(deadline, async {
        loop {
            let (kind, _, stream_id, payload) = read_frame(&mut stream).await;
            if kind == frames::HEADERS && stream_id == 1 {
                return payload.first().copied();
            }
        }
    })
    .await;
    assert_eq!(answered, Ok(Some(frames::STATUS_200)));
}

#[tokio::test]
async fn a_connection_that_sends_nothing_or_part_of_the_preface_is_closed_after_the_header_timeout()
{
    let timeout = Duration::from_millis(400);
    let app = TestApp::spawn_with(|config| {
        config.header_read_timeout_ms = timeout.as_millis() as u64;
    })
    .await;
    let started = Instant::now();
    let mut silent = TcpStream::connect(app.address).await.expect("connect");
    let mut half_preface = TcpStream::connect(app.address).await.expect("connect");
    half_preface.write_all(&PREFACE[..12]).await.expect("write");
    for (name, stream) in [("silent", &mut silent), ("half preface", &mut half_preface)] {
        let received = read_until_closed(stream, Duration::from_secs(5)).await;
        let elapsed = started.elapsed();
        assert_eq!(
            received.as_deref(),
            Some(&b""[..]),
            "{name}: closed, without an answer"
        );
        assert!(
            elapsed >= timeout && elapsed < timeout + Duration::from_secs(3),
            "{name}: closed after {elapsed:?}"
        );
    }
    let (version, response) = post(&http2_client(), &app, &product_query(1)).await;
    assert_eq!(version, Version::HTTP_2);
    response.assert_ok();
}

#[tokio::test]
async fn an_http2_connection_that_sends_the_preface_and_then_nothing_is_closed() {
    let timeout = Duration::from_millis(300);
    let app = TestApp::spawn_with(|config| {
        config.header_read_timeout_ms = timeout.as_millis() as u64;
    })
    .await;
    let started = Instant::now();
    let mut stream = TcpStream::connect(app.address).await.expect("connect");
    stream.write_all(PREFACE).await.expect("write");
    // No SETTINGS, no request: a GOAWAY after one idle timeout, closed after a second.
    let received = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    let elapsed = started.elapsed();
    assert!(received.is_some(), "still open after {elapsed:?}");
    assert!(
        elapsed >= 2 * timeout && elapsed < 2 * timeout + Duration::from_secs(3),
        "closed after {elapsed:?}"
    );
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_header_read_timeout() {
    let timeout = Duration::from_millis(400);
    let app = TestApp::spawn_with(|config| {
        config.header_read_timeout_ms = timeout.as_millis() as u64;
    })
    .await;
    let mut connection = Http2Connection::open(&app).await;
    let response = connection.post_graphql(&product_query(3), &[]).await;
    assert_eq!(response.status, 200);
    let answered = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(5), &mut connection.driver).await;
    let idle = answered.elapsed();
    let ended = closed.unwrap_or_else(|_| panic!("the connection is still open after {idle:?}"));
    assert!(
        matches!(ended, Ok(Ok(()))),
        "a GOAWAY ends the connection cleanly: {ended:?}"
    );
    assert!(
        idle >= timeout && idle < 2 * timeout + Duration::from_secs(2),
        "closed after {idle:?} idle"
    );
}

#[tokio::test]
async fn headers_past_32_kib_are_refused_and_the_server_goes_on() {
    let app = TestApp::spawn().await;
    let connection = Http2Connection::open(&app).await;
    let padding = "x".repeat(40 * 1024);
    let refused = connection
        .post_graphql(&product_query(5), &[("x-padding", padding.as_str())])
        .await;
    assert_eq!(refused.status, 431);
    // Refused by the h2 layer before the request reached the application.
    assert!(refused.body.is_empty(), "{:?}", refused.body);
    let next = connection.post_graphql(&product_query(5), &[]).await;
    assert_eq!(next.status, 200, "the same connection goes on");
    assert_eq!(next.json()["data"]["product"]["name"], "Product 000005");

    // Past four times the bound h2 stops decoding and closes the connection.
    let flood = "x".repeat(200 * 1024);
    let closing = Http2Connection::open(&app).await;
    let failed = closing
        .try_post_graphql(&product_query(5), &[("x-flood", flood.as_str())])
        .await;
    assert!(failed.is_err(), "a 200 KiB header list was answered");
    let after = Http2Connection::open(&app).await;
    let response = after.post_graphql(&product_query(6), &[]).await;
    assert_eq!(response.status, 200);
}

#[tokio::test]
async fn the_peer_address_reaches_the_rate_limits_over_http2() {
    // Only the address a request without `ConnectInfo` would be charged to is exempt: a
    // charged request (a `RateLimit` header) had its real peer address.
    let app = TestApp::spawn_with(|config| {
        config.rate_limit_exempt = vec!["0.0.0.0/32".to_owned()];
    })
    .await;
    let connection = Http2Connection::open(&app).await;
    let response = connection.post_graphql(&product_query(9), &[]).await;
    assert_eq!(response.status, 200);
    assert!(
        response.header("ratelimit").is_some(),
        "charged to the peer: {:?}",
        response.headers
    );
}

/// Reads one HTTP/1.1 response with a `Content-Length` body: (head, body).
async fn read_http1_response(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = received.windows(4).position(|window| window == b"\r\n\r\n") {
            break end + 4;
        }
        let read = stream.read(&mut buffer).await.expect("read");
        assert!(read > 0, "closed mid-response: {received:?}");
        received.extend_from_slice(&buffer[..read]);
    };
    let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("a Content-Length in {head}"));
    let mut body = received[head_end..].to_vec();
    while body.len() < length {
        let read = stream.read(&mut buffer).await.expect("read");
        assert!(read > 0, "closed mid-body");
        body.extend_from_slice(&buffer[..read]);
    }
    (head, body)
}

#[tokio::test]
async fn upgrade_h2c_over_http1_is_answered_over_http1() {
    let app = TestApp::spawn().await;
    let mut stream = TcpStream::connect(app.address).await.expect("connect");
    let upgrade = format!(
        "GET /graphql?query=%7B__typename%7D HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\n\
         Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        app.address
    );
    stream.write_all(upgrade.as_bytes()).await.expect("write");
    let (head, body) = read_http1_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!head.to_lowercase().contains("upgrade"), "{head}");
    let body: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(body["data"]["__typename"], "Query");

    // The connection still speaks HTTP/1.1.
    let plain = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", app.address);
    stream.write_all(plain.as_bytes()).await.expect("write");
    let (head, _) = read_http1_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}
