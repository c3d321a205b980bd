//! Protocols through the real binary: HTTP/1.1, h2c and h2 over TLS, downstream and
//! upstream, with curl as the client and a hyper upstream.

mod support;

use std::net::SocketAddr;
use support::*;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_request_reaches_upstream_with_forwarding_headers() {
    let upstream = Upstream::start().await;
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let cfg = inbound_config(admin, listen, upstream.addr, "");
    let _proxy = tokio::task::spawn_blocking(move || Proxy::start(&cfg, admin))
        .await
        .unwrap();

    // A client that already went through one proxy: the chain must be extended.
    let url = format!("http://{listen}/hello?x=1");
    let (code, out) =
        tokio::task::spawn_blocking(move || curl(&["-H", "x-forwarded-for: 198.51.100.7", &url]))
            .await
            .unwrap();
    assert_eq!(code, 0, "{out}");
    let seen: serde_json::Value = serde_json::from_str(&out).expect("upstream JSON");
    assert_eq!(seen["path"], "/hello");
    assert_eq!(seen["version"], "HTTP/1.1");
    assert_eq!(
        seen["headers"]["x-forwarded-for"],
        "198.51.100.7, 127.0.0.1"
    );
    assert_eq!(seen["headers"]["x-forwarded-proto"], "http");
    assert_eq!(upstream.hits(), 1);
}
