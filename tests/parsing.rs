//! Strict HTTP/1.1 request parsing (RFC 9112) through the real binary, over raw
//! sockets: what a server must reject gets 400 with `x-prescale-error: bad_request`,
//! the connection closes, and the upstream never sees it.

mod support;

use std::net::SocketAddr;
use std::time::Duration;
use support::raw::RawConn;
use support::*;

/// Sends `raw` on a fresh connection; asserts 400 `bad_request` and a close.
async fn assert_rejected(listen: SocketAddr, what: &str, raw: &[u8]) {
    let mut conn = RawConn::connect(listen).await;
    conn.send(raw).await;
    assert_refused(&mut conn, what).await;
}

/// The next answer on `conn` is 400 `bad_request`, and the connection then closes.
async fn assert_refused(conn: &mut RawConn, what: &str) {
    let resp = conn
        .response()
        .await
        .unwrap_or_else(|| panic!("{what}: closed without an answer"));
    assert_eq!(resp.status, 400, "{what}: {resp:?}");
    assert_eq!(
        resp.header("x-prescale-error"),
        Some("bad_request"),
        "{what}: {resp:?}"
    );
    assert!(
        conn.closed_within(Duration::from_secs(5)).await,
        "{what}: connection left open after 400"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_rfc_9112_forbids_get_400_and_never_reach_the_upstream() {
    let upstream = Upstream::start().await;
    let (proxy, listen) = inbound_proxy(&upstream).await;
    let long_method = format!("{} / HTTP/1.1\r\nHost: a\r\n\r\n", "A".repeat(10_000));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("HTTP/1.1 without Host", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        (
            "absolute-form without Host",
            b"GET http://a/ HTTP/1.1\r\n\r\n".to_vec(),
        ),
        (
            "space in the target",
            b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
        ),
        (
            "NUL in the target",
            b"GET /a\0b HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
        ),
        (
            "tab in the target",
            b"GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
        ),
        (
            "DEL in the target",
            b"GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
        ),
        (
            "method that is not a token",
            b"GE(T / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
        ),
        ("10 000-character method", long_method.into_bytes()),
        (
            "list-valued Content-Length",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello".to_vec(),
        ),
        (
            "repeated Content-Length",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"
                .to_vec(),
        ),
    ];
    for (what, raw) in &cases {
        assert_rejected(listen, what, raw).await;
    }
    assert_eq!(
        upstream.hits(),
        0,
        "no malformed request reached the upstream"
    );

    // What is allowed still passes: HTTP/1.0 without Host, a percent-encoded space,
    // an empty line before the request line, a long registered method.
    let mut conn = RawConn::connect(listen).await;
    conn.send(b"GET /ten HTTP/1.0\r\n\r\n").await;
    let resp = conn.response().await.expect("HTTP/1.0 answer");
    assert_eq!(resp.status, 200, "{resp:?}");
    let mut conn = RawConn::connect(listen).await;
    conn.send(
        b"\r\nGET /a%20b HTTP/1.1\r\nHost: a\r\n\r\nUPDATEREDIRECTREF / HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    for _ in 0..2 {
        let resp = conn
            .response()
            .await
            .unwrap_or_else(|| panic!("valid request refused; proxy log:\n{}", proxy.logs()));
        assert_eq!(resp.status, 200, "{resp:?}");
    }
    assert_eq!(upstream.hits(), 3);
}

/// The target rule holds for every request of a connection, not only its first: after
/// a good request on a kept-alive connection, one with a space, a NUL or a tab in its
/// target gets 400 `bad_request` and a close, and never reaches the upstream (pingora
/// would percent-encode and forward it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_target_later_on_a_kept_alive_connection_gets_400() {
    let upstream = Upstream::start().await;
    let (_proxy, listen) = inbound_proxy(&upstream).await;
    let bad: [(&str, &[u8]); 3] = [
        ("space", b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("NUL", b"GET /a\0b HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("tab", b"GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n"),
    ];
    for (i, (what, raw)) in bad.iter().enumerate() {
        let mut conn = RawConn::connect(listen).await;
        // A good first request, answered, so the connection is kept alive.
        conn.send(b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n").await;
        let first = conn.response().await.expect("first request answered");
        assert_eq!(first.status, 200, "{first:?}");
        // Then the bad one, in its own write.
        conn.send(raw).await;
        assert_refused(&mut conn, what).await;
        assert_eq!(upstream.hits(), i + 1, "{what} reached the upstream");
    }
}
