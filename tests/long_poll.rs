//! Long-polls through the real binary: a response head that comes late is bounded by
//! `response_header` (default 120 s), a body that comes late by `stream_idle`
//! (default 1 h), never by the other.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::*;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn get(url: String) -> (i32, String) {
    tokio::task::spawn_blocking(move || curl(&["--max-time", "100", "-w", "\n%{http_code}", &url]))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_70_second_long_poll_succeeds_under_the_default_config() {
    let upstream = Upstream::start().await;
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let cfg = inbound_config(admin, listen, upstream.addr, "");
    let proxy = tokio::task::spawn_blocking(move || Proxy::start(&cfg, admin))
        .await
        .unwrap();
    let t = Instant::now();
    let (code, out) = get(format!("http://{listen}/delay/70000")).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.ends_with("\n200") && out.starts_with("slept 70000ms"),
        "70 s long-poll: {out}\nproxy log:\n{}",
        proxy.logs()
    );
    assert!(t.elapsed() >= Duration::from_secs(70));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_later_than_the_response_header_timeout_is_within_stream_idle() {
    let upstream = Upstream::start().await;
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let cfg = inbound_config(
        admin,
        listen,
        upstream.addr,
        "    timeouts: { response_header: 1s, stream_idle: 10s }\n",
    );
    let proxy = tokio::task::spawn_blocking(move || Proxy::start(&cfg, admin))
        .await
        .unwrap();

    // Head at once, body 3 s later: within stream_idle, past response_header.
    let (code, out) = get(format!("http://{listen}/drip/3000")).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out,
        "dripped after 3000ms\n200",
        "proxy log:\n{}",
        proxy.logs()
    );

    // A head later than response_header is still a 504.
    let t = Instant::now();
    let (_, out) = get(format!("http://{listen}/delay/3000")).await;
    assert!(out.ends_with("\n504"), "{out}");
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_later_than_stream_idle_is_cut() {
    let upstream = Upstream::start().await;
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let cfg = inbound_config(
        admin,
        listen,
        upstream.addr,
        "    timeouts: { response_header: 5s, stream_idle: 1s }\n",
    );
    let _proxy = tokio::task::spawn_blocking(move || Proxy::start(&cfg, admin))
        .await
        .unwrap();
    let t = Instant::now();
    let (code, out) = get(format!("http://{listen}/drip/4000")).await;
    // The head (200) was already sent: the body is cut, which curl reports as an error.
    assert_ne!(
        code, 0,
        "a body 4 s late with stream_idle 1s must not complete: {out}"
    );
    assert!(
        t.elapsed() < Duration::from_millis(3500),
        "{:?}",
        t.elapsed()
    );
}
