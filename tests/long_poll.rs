//! Long-polls through the real binary: a response head that comes late is bounded by
//! `response_header` (default 120 s), a body that comes late by `stream_idle`
//! (default 1 h), never by the other.

mod support;

use std::time::{Duration, Instant};
use support::*;

async fn get(url: String) -> (i32, String) {
    tokio::task::spawn_blocking(move || curl(&["--max-time", "100", "-w", "\n%{http_code}", &url]))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_70_second_long_poll_succeeds_under_the_default_config() {
    let upstream = Upstream::start().await;
    let (proxy, listen) = inbound_proxy(&upstream).await;
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
    let (proxy, listen) = inbound_proxy_with(
        &upstream,
        "    timeouts: { response_header: 1s, stream_idle: 10s }\n",
    )
    .await;

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
    let (_proxy, listen) = inbound_proxy_with(
        &upstream,
        "    timeouts: { response_header: 5s, stream_idle: 1s }\n",
    )
    .await;
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

/// curl over h2c with gRPC's headers (the test upstream answers any content type).
async fn grpc_like(url: String, deadline: Option<&str>) -> (String, Duration) {
    let mut args = vec![
        "--http2-prior-knowledge".to_string(),
        "-X".into(),
        "POST".into(),
        "-H".into(),
        "content-type: application/grpc".into(),
        "-H".into(),
        "te: trailers".into(),
        "-w".into(),
        "\n%{http_code}".into(),
    ];
    if let Some(d) = deadline {
        args.extend(["-H".to_string(), format!("grpc-timeout: {d}")]);
    }
    args.push(url);
    tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (_, out) = curl(&args);
        (out, t.elapsed())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_timeout_bounds_the_wait_for_the_response_head() {
    let upstream = Upstream::start().await;
    let (_proxy, listen) = inbound_proxy_with(
        &upstream,
        "    protocol: h2c\n    timeouts: { response_header: 1s, stream_idle: 30s }\n",
    )
    .await;
    let slow = format!("http://{listen}/delay/2500");

    // A deadline shorter than the answer: 504 at the deadline, not at response_header.
    let (out, took) = grpc_like(slow.clone(), Some("300m")).await;
    assert!(out.ends_with("\n504"), "{out}");
    assert!(took < Duration::from_millis(900), "{took:?}");
    // A deadline longer than response_header: the late answer passes.
    let (out, _) = grpc_like(slow.clone(), Some("10S")).await;
    assert!(out.ends_with("\n200"), "{out}");
    // A gRPC call without a deadline waits up to stream_idle for its head.
    let (out, _) = grpc_like(slow, None).await;
    assert!(out.ends_with("\n200"), "{out}");
}
