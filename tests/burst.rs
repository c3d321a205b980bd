//! A closed-loop burst through the shipped example config (deploy/examples/sidecar.yaml)
//! in front of a plain Python `http.server`: with no latency objective configured,
//! requests over the adaptive limit wait for a slot instead of being refused, so a
//! burst the service keeps completing gets through (148 of 5 000 were answered 2xx
//! when every request over the limit was refused at once).

mod support;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;

#[test]
fn a_closed_loop_h2c_burst_through_the_example_config_is_served_not_shed() {
    let up_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "hello from http.server\n").unwrap();
    let server = Command::new("python3")
        .args(["-m", "http.server", "--bind", "127.0.0.1"])
        .arg(up_port.to_string())
        .arg("--directory")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 is installed");
    let _server = KillOnDrop(server);
    let upstream = SocketAddr::from(([127, 0, 0, 1], up_port));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(upstream).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "http.server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The example as shipped, on this test's ports.
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/sidecar.yaml"),
    )
    .unwrap();
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let inbound = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let outbound = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let payments = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let cfg = example
        .replace("127.0.0.1:9901", &admin.to_string())
        .replace("127.0.0.1:4143", &inbound.to_string())
        .replace("127.0.0.1:4140", &outbound.to_string())
        .replace("127.0.0.1:8080", &upstream.to_string())
        .replace("127.0.0.1:8081", &payments.to_string());
    assert!(
        !cfg.contains("\n    latency_objective:"),
        "the example sets no objective"
    );
    let _proxy = Proxy::start(&cfg, admin);

    let url = format!("http://{inbound}/index.html");
    let out = Command::new("timeout")
        .args(["240", "h2load", "-n", "5000", "-c", "50", "-m", "10", &url])
        .output()
        .expect("h2load is installed (nghttp2-client)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "h2load failed: {text}");
    assert!(text.contains("Application protocol: h2c"), "{text}");
    let ok: u64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("status codes:"))
        .and_then(|l| l.split(',').next())
        .and_then(|first| first.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no 2xx count: {text}"));
    let (_, exposition) = admin_get(admin, "/metrics").unwrap_or_default();
    // Summed over tiers and reasons: one series per (tier, reason).
    let shed: f64 = exposition
        .lines()
        .filter(|l| {
            l.starts_with("prescale_admission_decisions_total")
                && l.contains(r#"decision="rejected""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let why: Vec<&str> = exposition
        .lines()
        .filter(|l| {
            (l.starts_with("prescale_local_responses_total")
                || l.starts_with("prescale_upstream_connect_errors_total")
                || l.starts_with("prescale_admission_decisions_total"))
                && !l.ends_with(" 0")
        })
        .collect();
    eprintln!(
        "burst: {ok} of 5000 2xx, {shed} rejected by admission\n{text}\n{}",
        why.join("\n")
    );
    assert!(
        ok >= 4950,
        "at least 99 % 2xx, got {ok}; admission rejected {shed}:\n{text}\n{}",
        why.join("\n")
    );
}
