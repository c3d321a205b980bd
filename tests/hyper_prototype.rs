//! The hyper + tower data-path prototype (`examples/hyper_dataplane.rs`, issue 19) keeps
//! building and forwarding, so the measurement in docs/performance.md can be re-run:
//! the real example binary in front of the real test upstream, driven by curl over
//! HTTP/1.1 and h2c prior knowledge, with the project's tier admission in force.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// The example binary `cargo test` builds beside this test (target/<profile>/examples/).
/// Built here only when it is missing or older than its source (`cargo test --test
/// hyper_prototype` alone builds no examples): a nested `cargo build` resolves features
/// differently from `cargo test` and would rebuild the root crate's dependencies.
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/hyper_prototype-<hash>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test runs from target/<profile>/deps");
    let bin = profile_dir.join("examples").join("hyper_dataplane");
    let source =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hyper_dataplane.rs");
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if modified(&bin).is_none() || modified(&bin) < modified(&source) {
        let mut build = Command::new(env!("CARGO"));
        build
            .args(["build", "--quiet", "--example", "hyper_dataplane"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.ends_with("release") {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(
            status.success(),
            "cargo build --example hyper_dataplane failed"
        );
    }
    assert!(bin.is_file(), "{} was not built", bin.display());
    bin
}

/// One tier, a fixed concurrency limit of one and a latency objective: a second request
/// while one is in flight is refused at once (503), not queued.
fn config(listen: SocketAddr, upstream: SocketAddr) -> String {
    format!(
        "admin:\n  address: 127.0.0.1:{admin}\nlisteners:\n  - name: inbound\n    direction: inbound\n    address: {listen}\n    cluster: local\nclusters:\n  - name: local\n    endpoints: [\"{upstream}\"]\nprofiler:\n  enabled: true\npolicies:\n  tiers:\n    default: standard\n    list:\n      - {{ name: standard, priority: 0 }}\n  admission:\n    latency_objective: 500ms\n    limit: {{ initial: 1, floor: 1, ceiling: 1 }}\n    retry_after: 3s\n",
        admin = free_port()
    )
}

/// Waits until the prototype answers on `listen`.
fn wait_listening(listen: SocketAddr, child: &mut KillOnDrop) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("hyper_dataplane exited early: {status}");
        }
        if std::net::TcpStream::connect(listen).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("hyper_dataplane is not listening on {listen} after 10 s");
}

/// Established TCP connections to `port` on 127.0.0.1 seen from their client side (the
/// prototype's upstream connections), from /proc/net/tcp.
fn established_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let remote = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(2) == Some(&remote.as_str()) && f.get(3) == Some(&"01")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hyper_prototype_forwards_h1_and_h2c_and_sheds_over_its_tier_limit() {
    if !require::tools("hyper_prototype", &["curl"]) {
        return;
    }
    // The measured default (per-thread pool of hyper connections, current-thread
    // runtime), the first prototype's legacy client, and the other runtime models.
    for extra in [
        &[][..],
        &["--upstream", "legacy"][..],
        &["--runtime", "multi", "--threads", "2"][..],
        &["--threads", "2", "--reuseport"][..],
    ] {
        forwards_and_sheds(extra).await;
    }
}

async fn forwards_and_sheds(extra: &'static [&'static str]) {
    let upstream = Upstream::start().await;
    let up_port = upstream.addr.port();
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = dir.path().join("prescale.yaml");
    std::fs::write(&cfg, config(listen, upstream.addr)).expect("config written");
    let bin = tokio::task::spawn_blocking(example_binary)
        .await
        .expect("build");
    let mut child = KillOnDrop(
        Command::new(bin)
            .arg("--config")
            .arg(&cfg)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("hyper_dataplane starts"),
    );
    tokio::task::spawn_blocking(move || {
        wait_listening(listen, &mut child);
        let url = format!("http://{listen}/echo?q=1");

        // Sequential requests, each on a new client connection, share one upstream
        // connection: it goes back to the pool when its response has been read.
        for _ in 0..4 {
            let (code, out) = curl(&["-o", "/dev/null", "-w", "%{http_code}", &url]);
            assert_eq!((code, out.as_str()), (0, "200"), "{extra:?}");
        }
        let conns = established_to(up_port);
        // Two workers may each hold one.
        assert!(
            (1..=2).contains(&conns),
            "{extra:?}: {conns} upstream connections after 4 sequential requests"
        );

        // HTTP/1.1: the upstream's JSON description of the request comes back whole,
        // with the client's address appended to the forwarding chain.
        let (code, out) = curl(&["-H", "x-forwarded-for: 192.0.2.9", &url]);
        assert_eq!(code, 0, "{out}");
        let seen: serde_json::Value = serde_json::from_str(&out).expect("upstream JSON");
        assert_eq!(seen["path"], "/echo", "{seen}");
        assert_eq!(seen["version"], "HTTP/1.1", "{seen}");
        assert_eq!(
            seen["headers"]["x-forwarded-for"], "192.0.2.9, 127.0.0.1",
            "{seen}"
        );
        assert_eq!(seen["headers"]["x-forwarded-proto"], "http", "{seen}");

        // h2c prior knowledge on the same port, forwarded as HTTP/1.1 with a Host.
        let (code, out) = curl(&["--http2-prior-knowledge", "-i", &url]);
        assert_eq!(code, 0, "{out}");
        assert!(out.starts_with("HTTP/2 200"), "{out}");
        let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let seen: serde_json::Value = serde_json::from_str(body).expect("upstream JSON");
        assert_eq!(seen["headers"]["x-forwarded-for"], "127.0.0.1", "{seen}");
        assert_eq!(seen["headers"]["host"], listen.to_string(), "{seen}");

        // A body of 1 MiB streams through intact.
        let (code, out) = curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
            &format!("http://{listen}/bytes/1048576"),
        ]);
        assert_eq!((code, out.as_str()), (0, "200 1048576"));

        // The tier's one slot held by a slow request: the next is refused at once
        // with 503, Retry-After and the shed header; after it, requests pass again.
        let slow_url = format!("http://{listen}/delay/1500");
        let slow =
            std::thread::spawn(move || curl(&["-o", "/dev/null", "-w", "%{http_code}", &slow_url]));
        std::thread::sleep(Duration::from_millis(400));
        let began = Instant::now();
        let (code, out) = curl(&["-i", &url]);
        let took = began.elapsed();
        assert_eq!(code, 0, "{out}");
        assert!(out.starts_with("HTTP/1.1 503"), "{out}");
        assert!(out.contains("retry-after: 3\r\n"), "{out}");
        assert!(
            out.contains("x-prescale-shed: overload; tier=standard\r\n"),
            "{out}"
        );
        assert!(took < Duration::from_millis(1000), "refused after {took:?}");
        assert_eq!(slow.join().expect("slow request"), (0, "200".to_string()));
        let (code, out) = curl(&["-o", "/dev/null", "-w", "%{http_code}", &url]);
        assert_eq!(
            (code, out.as_str()),
            (0, "200"),
            "the slot was not released"
        );
    })
    .await
    .expect("the checks ran");
}
