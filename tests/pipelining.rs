//! HTTP/1.1 pipelining through the real binary (RFC 9112 §9.3.2): requests sent on one
//! connection before their answers come are all answered, in order, none lost.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;
use support::raw::RawConn;
use support::*;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The path the echo upstream says it served.
fn echoed_path(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("upstream JSON ({e}): {}", String::from_utf8_lossy(body)));
    v["path"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_one_write_are_all_answered_in_order() {
    let upstream = Upstream::start().await;
    let (proxy, listen) = inbound_proxy(&upstream).await;

    let mut conn = RawConn::connect(listen).await;
    // Three requests in one write, the middle one with a body, so the proxy reads the
    // later ones together with the first.
    conn.send(
        b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n\
          POST /second HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
          GET /third HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    let mut paths = Vec::new();
    for want in ["/first", "/second", "/third"] {
        let resp = conn.response().await.unwrap_or_else(|| {
            panic!(
                "connection closed before the answer to {want} (got {paths:?}); proxy log:\n{}",
                proxy.logs()
            )
        });
        assert_eq!(resp.status, 200, "{want}: {resp:?}");
        paths.push(echoed_path(&resp.body));
    }
    assert_eq!(paths, ["/first", "/second", "/third"], "answered in order");
    assert_eq!(upstream.hits(), 3, "the upstream saw every request");

    // The connection stays usable after the pipelined burst.
    conn.send(b"GET /fourth HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let resp = conn
        .response()
        .await
        .expect("answer on the same connection");
    assert_eq!(echoed_path(&resp.body), "/fourth");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_answer_does_not_lose_the_next_pipelined_request() {
    // A 404 answered by the proxy itself (no route on an outbound listener) must not
    // swallow the request behind it.
    let upstream = Upstream::start().await;
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let cfg = format!(
        "admin:\n  address: {admin}\nlisteners:\n  - {{name: out, direction: outbound, address: \"{listen}\", routes: [{{authority: known, cluster: local}}]}}\nclusters:\n  - name: local\n    endpoints: [\"{}\"]\n",
        upstream.addr
    );
    let proxy = tokio::task::spawn_blocking(move || Proxy::start(&cfg, admin))
        .await
        .unwrap();
    let mut conn = RawConn::connect(listen).await;
    conn.send(b"GET /a HTTP/1.1\r\nHost: unknown\r\n\r\nGET /b HTTP/1.1\r\nHost: known\r\n\r\n")
        .await;
    let first = conn.response().await.expect("first answer");
    assert_eq!(first.status, 404, "{first:?}");
    let second = conn.response().await.unwrap_or_else(|| {
        panic!(
            "pipelined request after a local answer was lost; proxy log:\n{}",
            proxy.logs()
        )
    });
    assert_eq!(second.status, 200, "{second:?}");
    assert_eq!(echoed_path(&second.body), "/b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2load_h1_with_four_requests_in_flight_all_succeed() {
    let upstream = Upstream::start().await;
    let (proxy, listen) = inbound_proxy(&upstream).await;
    let url = format!("http://{listen}/pipelined");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .args([
                "60", "h2load", "--h1", "-n", "100", "-c", "1", "-m", "4", &url,
            ])
            .output()
            .expect("h2load is installed (nghttp2-client)")
    })
    .await
    .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "h2load failed: {text}");
    let status_line = text
        .lines()
        .find(|l| l.trim().starts_with("status codes:"))
        .unwrap_or_else(|| panic!("no status line: {text}"));
    assert!(
        status_line.contains("100 2xx"),
        "all 100 pipelined requests answered 2xx: {text}\nproxy log:\n{}",
        proxy.logs()
    );
    assert_eq!(upstream.hits(), 100);
    // Nothing left hanging.
    tokio::time::sleep(Duration::from_millis(50)).await;
}
