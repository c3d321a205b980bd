//! Streams that are not request/response-shaped, through the real binary with curl:
//! server-sent events arrive one by one as they are sent (not buffered, not cut at
//! the response-header timeout), and `Expect: 100-continue` gets its interim answer.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_stream_through_one_by_one() {
    let upstream = Upstream::start().await;
    // Events 1.5 s apart: past response_header (1 s), within stream_idle.
    let (proxy, listen) = inbound_proxy_with(
        &upstream,
        "    timeouts: { response_header: 1s, stream_idle: 10s }\n",
    )
    .await;
    let url = format!("http://{listen}/sse/3/1500");
    let seen = tokio::task::spawn_blocking(move || {
        let mut child = Command::new("curl")
            .args([
                "-sS",
                "-N",
                "--max-time",
                "20",
                "-H",
                "accept: text/event-stream",
                &url,
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("curl is installed");
        let t = Instant::now();
        let stdout = child.stdout.take().unwrap();
        let seen: Vec<(Duration, String)> = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter(|l| l.starts_with("data: "))
            .map(|l| (t.elapsed(), l))
            .collect();
        let _ = child.wait();
        seen
    })
    .await
    .unwrap();
    let data: Vec<&str> = seen.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(
        data,
        ["data: event 0", "data: event 1", "data: event 2"],
        "proxy log:\n{}",
        proxy.logs()
    );
    // Each event arrived when it was sent, not all at the end.
    assert!(seen[0].0 < Duration::from_millis(1000), "{seen:?}");
    assert!(
        seen[2].0 - seen[0].0 >= Duration::from_millis(2500),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_gets_its_interim_answer() {
    let upstream = Upstream::start().await;
    let (_proxy, listen) = inbound_proxy(&upstream).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body");
    std::fs::write(&file, vec![b'x'; 100_000]).unwrap();
    let url = format!("http://{listen}/sink");
    let data = format!("@{}", file.display());
    let (t, out) = tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        // curl waits up to 10 s for the 100 before sending the body anyway.
        let out = Command::new("curl")
            .args([
                "-sS",
                "-v",
                "--max-time",
                "30",
                "--expect100-timeout",
                "10",
                "-H",
                "Expect: 100-continue",
                "--data-binary",
                &data,
                &url,
            ])
            .output()
            .expect("curl is installed");
        (t.elapsed(), out)
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stdout, "100000", "{stderr}");
    assert!(stderr.contains("HTTP/1.1 100 Continue"), "{stderr}");
    assert!(t < Duration::from_secs(5), "waited for the 100: {t:?}");
}
