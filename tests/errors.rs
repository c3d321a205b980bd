//! Failures through the real binary: what a client sees when the upstream is gone,
//! slow or broken, and when the client itself sends something the proxy refuses.
//! The proxy's own answers carry `x-prescale-error: <reason>`.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A loopback address that refuses connections: bound but never listening, so no other
/// test can start listening on it while this one runs.
fn dead_endpoint() -> (SocketAddr, tokio::net::TcpSocket) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(addr(0)).unwrap();
    (socket.local_addr().unwrap(), socket)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

async fn start(yaml: String, admin: SocketAddr) -> Proxy {
    blocking(move || Proxy::start(&yaml, admin)).await
}

/// A config with one listener and the given `clusters:` entries (YAML flow maps).
fn config(admin: SocketAddr, limits: &str, listener: &str, clusters: &[String]) -> String {
    let mut out = format!("admin:\n  address: {admin}\n");
    if !limits.is_empty() {
        out += &format!("limits: {limits}\n");
    }
    out += &format!("listeners:\n  - {listener}\nclusters:\n");
    for c in clusters {
        out += &format!("  - {c}\n");
    }
    out
}

fn inbound(listen: SocketAddr, cluster: &str) -> String {
    format!("{{name: inbound, direction: inbound, address: \"{listen}\", cluster: {cluster}}}")
}

/// What curl saw: its exit code, the final response's status and headers, the body.
#[derive(Debug)]
struct Http {
    code: i32,
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    stderr: String,
}

impl Http {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Asserts a local answer from the proxy: this status and this reason.
    fn assert_local(&self, status: u16, reason: &str) {
        assert_eq!(self.status, status, "{self:?} (curl: {})", self.stderr);
        assert_eq!(self.header("x-prescale-error"), Some(reason), "{self:?}");
    }
}

/// Runs curl with `-i` and parses the last response head (skipping 1xx).
fn http(args: &[&str]) -> Http {
    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "30"])
        .args(args)
        .output()
        .expect("curl is installed");
    let mut rest = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut status = 0;
    let mut headers = Vec::new();
    while rest.starts_with("HTTP/") {
        let (head, body) = rest
            .split_once("\r\n\r\n")
            .map(|(h, b)| (h.to_string(), b.to_string()))
            .unwrap_or((rest.clone(), String::new()));
        let mut lines = head.lines();
        status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        rest = body;
        if !(100..200).contains(&status) {
            break;
        }
    }
    Http {
        code: out.status.code().unwrap_or(-1),
        status,
        headers,
        body: rest,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn http_async(args: &[&str]) -> Http {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        http(&args)
    })
    .await
}

/// Writes `raw` on a fresh connection and reads until the proxy closes it (bounded).
/// Returns what was read and whether the connection ended with EOF.
async fn raw_exchange(to: SocketAddr, raw: &[u8]) -> (String, bool) {
    let mut s = TcpStream::connect(to).await.unwrap();
    s.write_all(raw).await.unwrap();
    read_until_eof(&mut s, Duration::from_secs(5)).await
}

async fn read_until_eof(s: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    let eof = loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            // A reset after the answer is a close too.
            Ok(Err(_)) => break true,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), eof)
}

/// Reads one response with a content-length from a kept-alive connection.
async fn read_response(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .expect("content-length");
            if body.len() >= len {
                return text;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("response within 5 s")
            .unwrap();
        assert!(n > 0, "EOF before the end of the response: {text:?}");
        out.extend_from_slice(&buf[..n]);
    }
}

fn status_of(raw: &str) -> u16 {
    raw.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A counter's value, 0 when the series is not there yet.
fn counter(proxy: &Proxy, name: &str, labels: &str) -> f64 {
    proxy.metric(name, labels).unwrap_or(0.0)
}

/// Counters are bumped in the logging phase, just after the response; wait for it.
async fn wait_counter(proxy: &Proxy, name: &str, labels: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = counter(proxy, name, labels);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}{{{labels}}} = {got}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_alive(proxy: &mut Proxy) {
    assert!(
        proxy.child.try_wait().unwrap().is_none(),
        "proxy exited:\n{}",
        proxy.logs()
    );
}

// --- 1. Upstream refuses the connection -------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_upstream_is_502_upstream_connect() {
    let (dead, _reserved) = dead_endpoint();
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let cfg = config(
        admin,
        "",
        &inbound(listen, "dead"),
        &[format!("{{name: dead, endpoints: [\"{dead}\"]}}")],
    );
    let proxy = start(cfg, admin).await;
    let refused = r#"cluster="dead",kind="refused""#;
    let errors = "prescale_upstream_connect_errors_total";
    let before = counter(&proxy, errors, refused);

    let url = format!("http://{listen}/anything");
    let r = http_async(&[&url]).await;
    r.assert_local(502, "upstream_connect");
    assert!(r.body.contains("upstream_connect"), "{r:?}");
    // The proxy does not keep the connection after a failed request, and says so.
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    // One endpoint: nothing to retry on, so exactly one failed attempt.
    assert_eq!(counter(&proxy, errors, refused), before + 1.0);

    // Over h2c the same answer, with the same header.
    let r = http_async(&["--http2-prior-knowledge", &url]).await;
    r.assert_local(502, "upstream_connect");
    assert_eq!(counter(&proxy, errors, refused), before + 2.0);
    wait_counter(
        &proxy,
        "prescale_local_responses_total",
        r#"listener="inbound",reason="upstream_connect""#,
        2.0,
    )
    .await;
}

// --- 2. Connect retries move on to a live endpoint ----------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_retry_reaches_the_live_endpoint_for_every_method() {
    let upstream = Upstream::start().await;
    let (dead, _reserved) = dead_endpoint();
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let cfg = config(
        admin,
        "",
        &inbound(listen, "mixed"),
        &[format!(
            "{{name: mixed, endpoints: [\"{dead}\", \"{}\"], connect_retries: 2}}",
            upstream.addr
        )],
    );
    let proxy = start(cfg, admin).await;

    for i in 0..20 {
        if i % 2 == 0 {
            let r = http_async(&[&format!("http://{listen}/get/{i}")]).await;
            assert_eq!(r.status, 200, "request {i}: {r:?}");
            assert!(r.header("x-prescale-error").is_none());
            assert!(r.body.contains(&format!("/get/{i}")), "{r:?}");
        } else {
            // A POST with a body: nothing was sent to the dead endpoint, so the body
            // must arrive whole at the live one.
            let body = format!("payload-{i}-").repeat(100);
            let r = http_async(&["--data-binary", &body, &format!("http://{listen}/sink")]).await;
            assert_eq!(r.status, 200, "request {i}: {r:?}");
            assert_eq!(r.body, body.len().to_string(), "request {i}");
        }
    }
    assert_eq!(upstream.hits(), 20);
    let refused = counter(
        &proxy,
        "prescale_upstream_connect_errors_total",
        r#"cluster="mixed",kind="refused""#,
    );
    eprintln!("refused connection attempts over 20 requests: {refused}");
    // Sequential requests alternate their first pick; a retry walks on to the next
    // endpoint without moving the shared counter, so exactly half start on the dead one.
    assert_eq!(refused, 10.0, "refused attempts over 20 requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_connect_retries_the_dead_endpoint_fails_requests() {
    let upstream = Upstream::start().await;
    let (dead, _reserved) = dead_endpoint();
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let cfg = config(
        admin,
        "",
        &inbound(listen, "mixed"),
        &[format!(
            "{{name: mixed, endpoints: [\"{dead}\", \"{}\"], connect_retries: 0}}",
            upstream.addr
        )],
    );
    let _proxy = start(cfg, admin).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = http_async(&[&format!("http://{listen}/x")]).await;
        if r.status == 502 {
            r.assert_local(502, "upstream_connect");
        }
        statuses.push(r.status);
    }
    // Round robin alternates: two reach the dead endpoint and are not retried.
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 502, 502]);
    assert_eq!(upstream.hits(), 2);
}

// --- 3. A cluster scaled to zero --------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_cluster_is_503_no_endpoint_with_retry_after() {
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let cfg = config(
        admin,
        "",
        &inbound(listen, "zero"),
        &["{name: zero, endpoints: []}".to_string()],
    );
    let proxy = start(cfg, admin).await;
    let url = format!("http://{listen}/x");
    for args in [vec![url.as_str()], vec!["--http2-prior-knowledge", &url]] {
        let r = http_async(&args).await;
        r.assert_local(503, "no_endpoint");
        assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
    }
    // A body-bearing request gets the same answer.
    let r = http_async(&["--data-binary", "abc", &url]).await;
    r.assert_local(503, "no_endpoint");
    wait_counter(
        &proxy,
        "prescale_local_responses_total",
        r#"listener="inbound",reason="no_endpoint""#,
        3.0,
    )
    .await;
}

// --- 4. Slow upstream ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_is_504_after_the_read_timeout() {
    let upstream = Upstream::start().await;
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let cfg = config(
        admin,
        "",
        &inbound(listen, "slow"),
        &[format!(
            "{{name: slow, endpoints: [\"{}\"], timeouts: {{read: 300ms}}}}",
            upstream.addr
        )],
    );
    let _proxy = start(cfg, admin).await;

    let t = Instant::now();
    let r = http_async(&[&format!("http://{listen}/delay/2000")]).await;
    let elapsed = t.elapsed();
    r.assert_local(504, "upstream_timeout");
    assert!(
        elapsed < Duration::from_millis(1500),
        "504 took {elapsed:?} (read timeout 300ms, upstream delay 2s)"
    );
    assert!(
        elapsed >= Duration::from_millis(250),
        "too fast: {elapsed:?}"
    );

    // Fast enough answers still pass, including right after the timeout.
    for _ in 0..3 {
        let r = http_async(&[&format!("http://{listen}/delay/50")]).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body, "slept 50ms");
    }
}

// --- 5. Malformed requests -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_400_and_the_connection_closes() {
    let upstream = Upstream::start().await;
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let cfg = inbound_config(admin, listen, upstream.addr, "");
    let mut proxy = start(cfg, admin).await;

    let cases: [&[u8]; 5] = [
        // A header line without a colon.
        b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n",
        // A request line whose method is not a token.
        b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n",
        // A version that does not exist.
        b"GET / HTTP/9.9\r\nHost: a\r\n\r\n",
        // A space inside the header name.
        b"GET / HTTP/1.1\r\nHost: a\r\nx bad: 1\r\n\r\n",
        // Two different content-lengths: the body framing is ambiguous.
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    ];
    for raw in cases {
        let (resp, eof) = raw_exchange(listen, raw).await;
        let what = String::from_utf8_lossy(raw);
        assert_eq!(status_of(&resp), 400, "{what:?} -> {resp:?}");
        assert!(eof, "connection left open after 400 for {what:?}");
    }
    // A bad request after a good one on the same kept-alive connection: the good one is
    // answered and the connection stays open; the bad one gets 400 and closes it.
    let mut s = TcpStream::connect(listen).await.unwrap();
    s.write_all(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let first = read_response(&mut s).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first:?}");
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n")
        .await
        .unwrap();
    let (second, eof) = read_until_eof(&mut s, Duration::from_secs(5)).await;
    assert_eq!(status_of(&second), 400, "{second:?}");
    assert!(eof, "connection left open after the second request's 400");

    // Pipelined (both in one write): the good one is answered first, then the bad one
    // gets its 400 and the connection closes (tests/pipelining.rs: pipelining itself).
    let (resp, eof) = raw_exchange(
        listen,
        b"GET /p1 HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp:?}");
    assert!(resp.contains("\"/p1\""), "{resp:?}");
    assert_eq!(resp.matches("HTTP/1.1 ").count(), 2, "{resp:?}");
    let second = resp.rfind("HTTP/1.1 ").map_or("", |i| &resp[i..]);
    assert!(second.starts_with("HTTP/1.1 400"), "{resp:?}");
    assert!(eof);
    assert_eq!(
        upstream.hits(),
        2,
        "malformed requests never reach the upstream"
    );

    assert_alive(&mut proxy);
    let r = http_async(&[&format!("http://{listen}/after")]).await;
    assert_eq!(r.status, 200, "{r:?}");
}

// --- 6. Oversized request heads ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_are_431_and_the_proxy_keeps_serving() {
    let upstream = Upstream::start().await;
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let cfg = config(
        admin,
        "{max_request_header_bytes: 8192, max_request_headers: 20}",
        &inbound(listen, "local"),
        &[format!(
            "{{name: local, endpoints: [\"{}\"]}}",
            upstream.addr
        )],
    );
    let proxy = start(cfg, admin).await;
    let url = format!("http://{listen}/h");

    // One 10 KB header.
    let big = format!("x-big: {}", "a".repeat(10 * 1024));
    let r = http_async(&["-H", &big, &url]).await;
    r.assert_local(431, "header_too_large");

    // 30 small headers (curl adds Host, User-Agent and Accept).
    let many: Vec<String> = (0..30).map(|i| format!("x-h{i}: v")).collect();
    let mut args: Vec<&str> = many.iter().flat_map(|h| ["-H", h.as_str()]).collect();
    args.push(&url);
    let r = http_async(&args).await;
    r.assert_local(431, "header_too_large");

    // The same over h2c.
    let mut h2 = vec!["--http2-prior-knowledge"];
    h2.extend_from_slice(&args);
    let r = http_async(&h2).await;
    r.assert_local(431, "header_too_large");

    // Over a raw connection: the 431 closes it, since what follows cannot be trusted.
    let mut raw = String::from("GET /h HTTP/1.1\r\nHost: a\r\n");
    for i in 0..30 {
        raw += &format!("x-h{i}: v\r\n");
    }
    raw += "\r\n";
    let (resp, eof) = raw_exchange(listen, raw.as_bytes()).await;
    assert_eq!(status_of(&resp), 431, "{resp:?}");
    let lower = resp.to_ascii_lowercase();
    assert!(
        lower.contains("x-prescale-error: header_too_large"),
        "{resp:?}"
    );
    assert!(lower.contains("connection: close"), "{resp:?}");
    assert!(eof, "connection open after 431");
    assert_eq!(upstream.hits(), 0);

    // Under the limits, on new connections: served.
    let few: Vec<String> = (0..15).map(|i| format!("x-h{i}: v")).collect();
    let mut args: Vec<&str> = few.iter().flat_map(|h| ["-H", h.as_str()]).collect();
    let medium = format!("x-medium: {}", "m".repeat(6 * 1024));
    args.extend(["-H", &medium, &url]);
    let r = http_async(&args).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.header("x-prescale-error").is_none());
    assert_eq!(upstream.hits(), 1);
    wait_counter(
        &proxy,
        "prescale_local_responses_total",
        r#"listener="inbound",reason="header_too_large""#,
        4.0,
    )
    .await;
}

// --- 7. Request body limit -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_body_over_the_limit_is_413() {
    let upstream = Upstream::start().await;
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let cfg = config(
        admin,
        "{max_request_body_bytes: 1000}",
        &inbound(listen, "local"),
        &[format!(
            "{{name: local, endpoints: [\"{}\"]}}",
            upstream.addr
        )],
    );
    let _proxy = start(cfg, admin).await;
    let url = format!("http://{listen}/sink");

    let r = http_async(&["--data-binary", &"b".repeat(5000), &url]).await;
    r.assert_local(413, "body_too_large");
    let r = http_async(&[
        "--http2-prior-knowledge",
        "--data-binary",
        &"b".repeat(5000),
        &url,
    ])
    .await;
    r.assert_local(413, "body_too_large");
    assert_eq!(
        upstream.hits(),
        0,
        "refused bodies never reach the upstream"
    );

    // At and under the limit: forwarded whole.
    for n in [500, 1000] {
        let r = http_async(&["--data-binary", &"b".repeat(n), &url]).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body, n.to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_body_over_the_limit_is_413() {
    let upstream = Upstream::start().await;
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let cfg = config(
        admin,
        "{max_request_body_bytes: 1000}",
        &inbound(listen, "local"),
        &[format!(
            "{{name: local, endpoints: [\"{}\"]}}",
            upstream.addr
        )],
    );
    let _proxy = start(cfg, admin).await;
    let url = format!("http://{listen}/sink");

    // No content-length: chunked over HTTP/1.1, plain DATA frames over h2c.
    let body = "c".repeat(5000);
    for proto in ["--http1.1", "--http2-prior-knowledge"] {
        let r = http_async(&[
            proto,
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &body,
            &url,
        ])
        .await;
        assert_eq!(r.status, 413, "{proto}: {r:?}");
        assert_eq!(r.header("x-prescale-error"), Some("body_too_large"));
        assert!(!r.body.contains("5000"), "the upstream got the whole body");
    }
    // A small streamed body still passes.
    let r = http_async(&[
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &"c".repeat(700),
        &url,
    ])
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, "700");
}

// --- 8. Outbound routing --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_routes_by_authority_and_404s_the_rest() {
    let payments = Upstream::start().await;
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let listener = format!(
        "{{name: outbound, direction: outbound, address: \"{listen}\", routes: [{{authority: payments.internal, cluster: payments}}]}}"
    );
    let cfg = config(
        admin,
        "",
        &listener,
        &[format!(
            "{{name: payments, endpoints: [\"{}\"]}}",
            payments.addr
        )],
    );
    let proxy = start(cfg, admin).await;
    let url = format!("http://{listen}/pay");

    for host in ["unknown.internal", "payments.internal.evil", "internal"] {
        let r = http_async(&["-H", &format!("Host: {host}"), &url]).await;
        r.assert_local(404, "no_route");
    }
    assert_eq!(payments.hits(), 0);

    // The routed authority, with or without a port, in any case, and as h2c :authority.
    for host in [
        "payments.internal",
        "payments.internal:8080",
        "Payments.Internal",
    ] {
        let r = http_async(&["-H", &format!("Host: {host}"), &url]).await;
        assert_eq!(r.status, 200, "{host}: {r:?}");
        let seen: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(seen["path"], "/pay");
        assert_eq!(seen["headers"]["host"], host);
    }
    let r = http_async(&[
        "--http2-prior-knowledge",
        "-H",
        "Host: payments.internal",
        &url,
    ])
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(payments.hits(), 4);
    wait_counter(
        &proxy,
        "prescale_local_responses_total",
        r#"listener="outbound",reason="no_route""#,
        3.0,
    )
    .await;
}

// --- 9. Upstream dies mid-response ------------------------------------------------------------

/// A hand-written HTTP/1.1 upstream: `/partial-body` sends a head promising 1000 bytes,
/// 10 of them, and closes; `/partial-head` sends half a head and closes; `/reset` closes
/// without a word; anything else gets a proper small answer.
async fn broken_upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                let out: &[u8] = match path.as_str() {
                    "/partial-body" => b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789",
                    "/partial-head" => b"HTTP/1.1 200 OK\r\ncontent-len",
                    "/reset" => b"",
                    _ => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                };
                let _ = s.write_all(out).await;
                let _ = s.flush().await;
                // Give the bytes a moment to leave before the close.
                tokio::time::sleep(Duration::from_millis(20)).await;
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_closing_mid_response_fails_only_that_request() {
    let (up, task) = broken_upstream().await;
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let cfg = config(
        admin,
        "",
        &inbound(listen, "broken"),
        &[format!("{{name: broken, endpoints: [\"{up}\"]}}")],
    );
    let mut proxy = start(cfg, admin).await;
    let url = |p: &str| format!("http://{listen}{p}");

    for proto in ["--http1.1", "--http2-prior-knowledge"] {
        // Head sent, body cut short: too late for a 502, so the client must see the
        // truncation (curl fails), never a clean short response.
        let r = http_async(&[proto, &url("/partial-body")]).await;
        eprintln!(
            "{proto} /partial-body: status {} curl exit {} body {} bytes",
            r.status,
            r.code,
            r.body.len()
        );
        match r.status {
            502 => assert!(r.header("x-prescale-error").is_some(), "{r:?}"),
            200 => {
                assert_ne!(r.code, 0, "{proto}: truncated body looked complete: {r:?}");
                assert!(r.body.len() < 1000, "{r:?}");
            }
            _ => panic!("{proto}: unexpected {r:?}"),
        }

        // Nothing usable was sent: the proxy answers 502 itself.
        for path in ["/partial-head", "/reset"] {
            let r = http_async(&[proto, &url(path)]).await;
            assert_eq!(r.status, 502, "{proto} {path}: {r:?}");
            let reason = r.header("x-prescale-error").unwrap_or("");
            assert!(
                ["upstream_reset", "upstream_protocol"].contains(&reason),
                "{proto} {path}: {r:?}"
            );
        }

        assert_alive(&mut proxy);
        let r = http_async(&[proto, &url("/fine")]).await;
        assert_eq!(r.status, 200, "{proto}: {r:?}");
        assert_eq!(r.code, 0);
        assert_eq!(r.body, "ok");
    }
    task.abort();
}

// --- Beyond the list: TLS trust and slow clients ---------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_with_an_untrusted_certificate_is_502_and_counted_as_tls() {
    let dir = tempfile::tempdir().unwrap();
    let served = self_signed(dir.path(), "served");
    let other = self_signed(dir.path(), "other");
    let upstream = Upstream::start_tls(&served).await;
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let cfg = config(
        admin,
        "",
        &inbound(listen, "tls"),
        &[format!(
            "{{name: tls, endpoints: [\"{}\"], protocol: h2, tls: {{ca: \"{}\", sni: localhost}}}}",
            upstream.addr,
            other.cert.display()
        )],
    );
    let proxy = blocking(move || Proxy::start_in(dir, &cfg, admin)).await;

    let r = http_async(&[&format!("http://{listen}/x")]).await;
    r.assert_local(502, "upstream_connect");
    assert_eq!(upstream.hits(), 0);
    let tls = counter(
        &proxy,
        "prescale_upstream_connect_errors_total",
        r#"cluster="tls",kind="tls""#,
    );
    assert!(tls >= 1.0, "tls connect errors: {tls}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_stalling_mid_body_is_408_client_timeout() {
    let upstream = Upstream::start().await;
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let cfg = config(
        admin,
        "{body_read_timeout: 500ms}",
        &inbound(listen, "local"),
        &[format!(
            "{{name: local, endpoints: [\"{}\"]}}",
            upstream.addr
        )],
    );
    let mut proxy = start(cfg, admin).await;

    let mut s = TcpStream::connect(listen).await.unwrap();
    let t = Instant::now();
    s.write_all(b"POST /sink HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let (resp, eof) = read_until_eof(&mut s, Duration::from_secs(5)).await;
    let elapsed = t.elapsed();
    assert_eq!(status_of(&resp), 408, "{resp:?}");
    assert!(
        resp.to_ascii_lowercase()
            .contains("x-prescale-error: client_timeout"),
        "{resp:?}"
    );
    assert!(eof, "connection open after 408");
    assert!(elapsed < Duration::from_secs(3), "408 after {elapsed:?}");

    assert_alive(&mut proxy);
    let r = http_async(&[
        "--data-binary",
        "0123456789",
        &format!("http://{listen}/sink"),
    ])
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, "10");
}
