//! Lifecycle through the real binary: the admin API, config reload (good, bad, and
//! restart-only changes), drain on SIGTERM and `POST /shutdown`, and SIGINT.
//!
//! Clients are curl, hyper, and a raw keep-alive socket; the upstream is the hyper
//! test service from `support`.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "s3cret";

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// One inbound listener in front of `upstream`, 10 s drain grace, optional admin token.
fn mesh(
    admin: SocketAddr,
    listen: SocketAddr,
    upstream: SocketAddr,
    token: Option<&str>,
) -> String {
    let token = token.map_or(String::new(), |t| format!("  token: {t}\n"));
    format!(
        "admin:\n  address: {admin}\n{token}drain:\n  grace_period: 10s\nlisteners:\n  - name: inbound\n    direction: inbound\n    address: {listen}\n    cluster: local\nclusters:\n  - name: local\n    endpoints: [\"{upstream}\"]\n"
    )
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

async fn start(yaml: String, admin: SocketAddr) -> Proxy {
    blocking(move || Proxy::start(&yaml, admin)).await
}

/// One request on its own connection (`connection: close`); returns (status, body).
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
) -> Option<(u16, String)> {
    let mut s = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let auth = auth.map_or(String::new(), |a| format!("authorization: {a}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: admin\r\n{auth}content-length: 0\r\nconnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .ok()?
        .ok()?;
    let out = String::from_utf8_lossy(&out).into_owned();
    let status = out.split(' ').nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

async fn admin(proxy: &Proxy, method: &str, path: &str, auth: Option<&str>) -> (u16, String) {
    call(proxy.admin, method, path, auth)
        .await
        .unwrap_or_else(|| panic!("admin {method} {path} failed:\n{}", proxy.logs()))
}

fn bearer() -> Option<&'static str> {
    Some("Bearer s3cret")
}

/// The value of the series `name{labels...}` in `/metrics` (labels as a substring).
async fn metric(proxy: &Proxy, name: &str, labels: &str) -> Option<f64> {
    let (_, body) = admin(proxy, "GET", "/metrics", None).await;
    body.lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name) && l.contains(labels))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

async fn config_json(proxy: &Proxy) -> serde_json::Value {
    let (status, body) = admin(proxy, "GET", "/config", None).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("GET /config is JSON")
}

/// curl through the proxy; asserts a 200 and returns the body.
async fn curl_ok(listen: SocketAddr, path: &str) -> String {
    let url = format!("http://{listen}{path}");
    let (code, out) = blocking(move || curl(&["-f", &url])).await;
    assert_eq!(code, 0, "curl {path}: {out}");
    out
}

/// Polls until `f` holds or `limit` passes; returns whether it held.
async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for the process to exit; returns its exit code (None if killed by a signal)
/// and when it was seen to exit. Panics if it is still running after `limit`.
async fn wait_exit(proxy: &mut Proxy, limit: Duration) -> (Option<i32>, Instant) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = proxy.child.try_wait().expect("try_wait") {
            return (status.code(), Instant::now());
        }
        assert!(
            Instant::now() < deadline,
            "prescale still running after {limit:?}:\n{}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A raw HTTP/1.1 keep-alive connection: one socket, any number of sequential requests.
struct KeepAlive {
    stream: TcpStream,
    buf: Vec<u8>,
}

struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl KeepAlive {
    async fn connect(addr: SocketAddr) -> Self {
        Self {
            stream: TcpStream::connect(addr).await.expect("connect"),
            buf: Vec::new(),
        }
    }

    async fn get(&mut self, path: &str) -> std::io::Result<RawResponse> {
        let req = format!("GET {path} HTTP/1.1\r\nhost: inbound\r\n\r\n");
        self.stream.write_all(req.as_bytes()).await?;
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end);
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad head {head:?}")))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let header = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let body = if let Some(len) = header("content-length") {
            let len: usize = len.parse().map_err(std::io::Error::other)?;
            while self.buf.len() < len {
                self.fill().await?;
            }
            self.buf.drain(..len).collect()
        } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            let mut body = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    self.fill().await?;
                };
                let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
                    .map_err(std::io::Error::other)?;
                while self.buf.len() < line_end + 2 + size + 2 {
                    self.fill().await?;
                }
                body.extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
                self.buf.drain(..line_end + 2 + size + 2);
                if size == 0 {
                    break body;
                }
            }
        } else {
            Vec::new()
        };
        Ok(RawResponse {
            status,
            headers,
            body,
        })
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk))
            .await
            .map_err(|_| std::io::Error::other("read timed out"))??;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

// === 1. admin basics ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_health_metrics_config_and_guarded_control() {
    let upstream = Upstream::start().await;
    let (admin_addr, listen) = (addr(free_port()), addr(free_port()));
    let mut proxy = start(
        mesh(admin_addr, listen, upstream.addr, Some(TOKEN)),
        admin_addr,
    )
    .await;

    assert_eq!(
        admin(&proxy, "GET", "/live", None).await,
        (200, "live\n".into())
    );
    assert_eq!(
        admin(&proxy, "GET", "/ready", None).await,
        (200, "ready\n".into())
    );

    // Traffic first, so per-request series (counters, the histogram) exist.
    curl_ok(listen, "/hello").await;
    let url = format!("http://{listen}/status/503");
    let (_, _) = blocking(move || curl(&[&url])).await;

    let (status, body) = admin(&proxy, "GET", "/metrics", None).await;
    assert_eq!(status, 200);
    promtool_check(&body);
    let mut names = std::collections::BTreeSet::new();
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let name = if let Some(rest) = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
        {
            rest.split(' ').next().unwrap()
        } else {
            assert!(!line.starts_with('#'), "unexpected comment {line:?}");
            line.split(['{', ' ']).next().unwrap()
        };
        assert!(
            name.starts_with("prescale_"),
            "metric {name:?} lacks the prescale_ prefix"
        );
        names.insert(name.to_string());
    }
    for expected in [
        "prescale_requests_total",
        "prescale_request_duration_seconds_bucket",
        "prescale_ready",
        "prescale_draining",
        "prescale_build_info",
    ] {
        assert!(names.contains(expected), "{expected} missing from:\n{body}");
    }
    assert_eq!(metric(&proxy, "prescale_ready", "").await, Some(1.0));
    assert_eq!(metric(&proxy, "prescale_draining", "").await, Some(0.0));
    let version = format!("version=\"{}\"", env!("CARGO_PKG_VERSION"));
    assert_eq!(
        metric(&proxy, "prescale_build_info", &version).await,
        Some(1.0)
    );

    // The effective config, with the token redacted.
    let (status, raw) = admin(&proxy, "GET", "/config", None).await;
    assert_eq!(status, 200);
    assert!(!raw.contains(TOKEN), "GET /config leaks the token:\n{raw}");
    let cfg: serde_json::Value = serde_json::from_str(&raw).expect("JSON");
    assert_eq!(cfg["generation"], 1);
    assert_eq!(cfg["restart_required"], serde_json::json!([]));
    assert_eq!(cfg["config"]["admin"]["token"], "<redacted>");
    assert_eq!(cfg["config"]["admin"]["address"], admin_addr.to_string());
    assert_eq!(cfg["config"]["listeners"][0]["address"], listen.to_string());
    assert_eq!(
        cfg["config"]["clusters"][0]["endpoints"][0],
        upstream.addr.to_string()
    );
    assert!(!proxy.logs().contains(TOKEN), "the log leaks the token");

    // Control endpoints demand the token; the wrong method is 405.
    for path in ["/shutdown", "/reload"] {
        for auth in [
            None,
            Some("Bearer nope"),
            Some("Bearer s3cre"),
            Some("Basic s3cret"),
            Some("s3cret"),
        ] {
            let (status, _) = admin(&proxy, "POST", path, auth).await;
            assert_eq!(status, 401, "POST {path} with {auth:?}");
        }
        assert_eq!(
            admin(&proxy, "GET", path, bearer()).await.0,
            405,
            "GET {path}"
        );
    }
    assert_eq!(admin(&proxy, "POST", "/config", None).await.0, 405);
    assert_eq!(admin(&proxy, "DELETE", "/ready", None).await.0, 405);
    assert_eq!(admin(&proxy, "GET", "/nope", None).await.0, 404);
    // Refused calls changed nothing: still serving, no reload was attempted.
    assert_eq!(admin(&proxy, "GET", "/ready", None).await.0, 200);
    assert_eq!(
        metric(&proxy, "prescale_config_reloads_total", "").await,
        None
    );
    curl_ok(listen, "/still").await;

    // With the token, control works.
    let (status, body) = admin(&proxy, "POST", "/reload", bearer()).await;
    assert_eq!(status, 200, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["generation"], 2);
    let (status, _) = admin(&proxy, "POST", "/shutdown", bearer()).await;
    assert_eq!(status, 202);
    let (code, _) = wait_exit(&mut proxy, Duration::from_secs(5)).await;
    assert_eq!(code, Some(0), "{}", proxy.logs());
}

// === 2. reload: good ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_switches_upstreams_and_keeps_open_connections() {
    let (a, b) = (Upstream::start().await, Upstream::start().await);
    let (admin_addr, listen) = (addr(free_port()), addr(free_port()));
    let proxy = start(mesh(admin_addr, listen, a.addr, None), admin_addr).await;

    // A keep-alive connection opened before the reload.
    let mut conn = KeepAlive::connect(listen).await;
    let r = conn.get("/before").await.expect("first request");
    assert_eq!(r.status, 200);
    assert_ne!(r.header("connection"), Some("close"));
    assert_eq!((a.hits(), b.hits()), (1, 0));

    proxy.rewrite_config(&mesh(admin_addr, listen, b.addr, None));
    let (status, body) = admin(&proxy, "POST", "/reload", None).await;
    assert_eq!(status, 200, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).expect("reload reply is JSON");
    assert_eq!(reply["generation"], 2, "{body}");
    assert_eq!(reply["restart_required"], serde_json::json!([]), "{body}");

    // New requests reach B.
    curl_ok(listen, "/after").await;
    assert_eq!((a.hits(), b.hits()), (1, 1));
    // The connection opened before the reload still works, and follows the new config.
    let r = conn
        .get("/same-connection")
        .await
        .expect("request after reload");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let seen: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(seen["path"], "/same-connection");
    assert_eq!((a.hits(), b.hits()), (1, 2));

    assert_eq!(
        metric(
            &proxy,
            "prescale_config_reloads_total",
            "result=\"success\""
        )
        .await,
        Some(1.0)
    );
    assert_eq!(
        metric(
            &proxy,
            "prescale_config_reloads_total",
            "result=\"failure\""
        )
        .await,
        None
    );
    assert_eq!(
        metric(&proxy, "prescale_config_restart_required", "").await,
        Some(0.0)
    );
    let cfg = config_json(&proxy).await;
    assert_eq!(cfg["generation"], 2);
    assert_eq!(
        cfg["config"]["clusters"][0]["endpoints"][0],
        b.addr.to_string()
    );

    // SIGHUP reloads too: back to A.
    proxy.rewrite_config(&mesh(admin_addr, listen, a.addr, None));
    proxy.signal("HUP");
    let reloaded = eventually(Duration::from_secs(5), || async {
        config_json(&proxy).await["generation"] == 3
    })
    .await;
    assert!(reloaded, "SIGHUP did not reload:\n{}", proxy.logs());
    assert_eq!(
        metric(
            &proxy,
            "prescale_config_reloads_total",
            "result=\"success\""
        )
        .await,
        Some(2.0)
    );
    curl_ok(listen, "/after-hup").await;
    assert_eq!((a.hits(), b.hits()), (2, 2));
    let r = conn
        .get("/same-connection-again")
        .await
        .expect("third request");
    assert_eq!(r.status, 200);
    assert_eq!((a.hits(), b.hits()), (3, 2));
    // SIGHUP did not stop anything.
    assert_eq!(admin(&proxy, "GET", "/ready", None).await.0, 200);
}

// === 3. reload: refused, and restart-only changes ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reloads_are_refused_and_restart_only_changes_are_reported() {
    let (a, b) = (Upstream::start().await, Upstream::start().await);
    let (admin_addr, listen) = (addr(free_port()), addr(free_port()));
    let proxy = start(mesh(admin_addr, listen, a.addr, None), admin_addr).await;
    let file = proxy.config.display().to_string();
    let failures = |n: f64| {
        let proxy = &proxy;
        async move {
            assert_eq!(
                metric(proxy, "prescale_config_reloads_total", "result=\"failure\"").await,
                Some(n)
            );
        }
    };

    // An unknown key (and a new upstream that must not be used).
    let typo = mesh(admin_addr, listen, b.addr, None) + "    timeoutz: { read: 1s }\n";
    let line = typo.lines().position(|l| l.contains("timeoutz")).unwrap() + 1;
    proxy.rewrite_config(&typo);
    let (status, body) = admin(&proxy, "POST", "/reload", None).await;
    assert_eq!(status, 400, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).expect("JSON error");
    let error = reply["error"].as_str().unwrap();
    assert!(error.starts_with(&format!("{file}:{line}:")), "{error}");
    assert!(error.contains("unknown field `timeoutz`"), "{error}");
    assert_eq!(reply["kept_generation"], 1);
    curl_ok(listen, "/after-typo").await;
    assert_eq!((a.hits(), b.hits()), (1, 0));
    failures(1.0).await;

    // A YAML syntax error.
    let broken =
        mesh(admin_addr, listen, b.addr, None).replace("    cluster: local", "    cluster: [local");
    proxy.rewrite_config(&broken);
    let (status, body) = admin(&proxy, "POST", "/reload", None).await;
    assert_eq!(status, 400, "{body}");
    let error = serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"]
        .as_str()
        .unwrap()
        .to_string();
    let cited: usize = error
        .strip_prefix(&format!("{file}:"))
        .and_then(|r| r.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no file:line in {error}"));
    assert!(cited > 0, "{error}");
    curl_ok(listen, "/after-syntax-error").await;
    assert_eq!((a.hits(), b.hits()), (2, 0));
    failures(2.0).await;

    // A semantic error.
    let unknown =
        mesh(admin_addr, listen, b.addr, None).replace("    cluster: local", "    cluster: remote");
    proxy.rewrite_config(&unknown);
    let (status, body) = admin(&proxy, "POST", "/reload", None).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("listeners[0].cluster"), "{body}");
    assert!(body.contains(&format!("{file}:9:")), "{body}");
    failures(3.0).await;

    // No file at all: by POST and by SIGHUP.
    std::fs::remove_file(&proxy.config).unwrap();
    let (status, body) = admin(&proxy, "POST", "/reload", None).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains(&format!("{file}: cannot read")), "{body}");
    failures(4.0).await;
    proxy.signal("HUP");
    let counted = eventually(Duration::from_secs(5), || async {
        metric(
            &proxy,
            "prescale_config_reloads_total",
            "result=\"failure\"",
        )
        .await
            == Some(5.0)
    })
    .await;
    assert!(
        counted,
        "SIGHUP reload failure not counted:\n{}",
        proxy.logs()
    );
    curl_ok(listen, "/after-delete").await;
    assert_eq!((a.hits(), b.hits()), (3, 0));
    assert_eq!(admin(&proxy, "GET", "/ready", None).await.0, 200);
    let cfg = config_json(&proxy).await;
    assert_eq!(cfg["generation"], 1);
    assert_eq!(
        cfg["config"]["clusters"][0]["endpoints"][0],
        a.addr.to_string()
    );
    assert_eq!(
        metric(
            &proxy,
            "prescale_config_reloads_total",
            "result=\"success\""
        )
        .await,
        None
    );

    // A new listener address applies only on restart; the cluster change applies now.
    let moved = addr(free_port());
    proxy.rewrite_config(&mesh(admin_addr, moved, b.addr, None));
    let (status, body) = admin(&proxy, "POST", "/reload", None).await;
    assert_eq!(status, 200, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["generation"], 2);
    let restart = reply["restart_required"].as_array().unwrap();
    assert_eq!(restart.len(), 1, "{body}");
    assert!(
        restart[0]
            .as_str()
            .unwrap()
            .starts_with("listeners.inbound:"),
        "{body}"
    );
    assert_eq!(
        metric(&proxy, "prescale_config_restart_required", "").await,
        Some(1.0)
    );
    assert_eq!(
        config_json(&proxy).await["restart_required"],
        reply["restart_required"]
    );
    curl_ok(listen, "/old-address").await;
    assert_eq!((a.hits(), b.hits()), (3, 1));
    assert!(
        TcpStream::connect(moved).await.is_err(),
        "the new address must not be bound before a restart"
    );

    // Putting the address back clears the flag.
    proxy.rewrite_config(&mesh(admin_addr, listen, b.addr, None));
    let (status, body) = admin(&proxy, "POST", "/reload", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"restart_required\": []"), "{body}");
    assert_eq!(
        metric(&proxy, "prescale_config_restart_required", "").await,
        Some(0.0)
    );
    assert_eq!(
        metric(
            &proxy,
            "prescale_config_reloads_total",
            "result=\"success\""
        )
        .await,
        Some(2.0)
    );
}

// === 4. drain ===

/// How one client request ended.
#[derive(Debug)]
enum Outcome {
    /// A complete response: status, whether it said `connection: close`.
    Done(u16, bool),
    /// The TCP connection was refused (the listener is closed).
    Refused,
    /// hyper knows the request was never written.
    NotSent,
    /// Written (perhaps partly); the connection failed before a response head.
    NoResponse(String),
    /// The response head arrived, then the body failed.
    BodyFailed(u16, String),
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(listen: SocketAddr) -> Option<Sender> {
    let stream = TcpStream::connect(listen).await.ok()?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(sender)
}

/// Sends one GET on `sender`; the caller must not reuse the sender after `false`.
async fn send(sender: &mut Sender, listen: SocketAddr, path: &str) -> (Outcome, bool) {
    if sender.ready().await.is_err() {
        return (Outcome::NotSent, false);
    }
    let req = http::Request::get(path)
        .header("host", listen.to_string())
        .body(Empty::<Bytes>::new())
        .unwrap();
    match sender.send_request(req).await {
        Err(e) if e.is_canceled() => (Outcome::NotSent, false),
        Err(e) => (Outcome::NoResponse(e.to_string()), false),
        Ok(resp) => {
            let status = resp.status().as_u16();
            let close = resp
                .headers()
                .get("connection")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
            match resp.into_body().collect().await {
                Ok(_) => (Outcome::Done(status, close), !close),
                Err(e) => (Outcome::BodyFailed(status, e.to_string()), false),
            }
        }
    }
}

/// Polls `/ready` until it answers 503; returns how long that took.
async fn ready_turns_503(proxy: &Proxy, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        match call(proxy.admin, "GET", "/ready", None).await {
            Some((503, body)) => {
                assert_eq!(body, "draining\n");
                return start.elapsed();
            }
            Some((200, _)) => {}
            other => panic!(
                "/ready answered {other:?} while draining:\n{}",
                proxy.logs()
            ),
        }
        assert!(start.elapsed() < limit, "/ready still 200 after {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The strict shape: N requests in flight, then SIGTERM. Every one completes with 200,
/// `/ready` turns 503 at once, new connections are refused, and the process exits 0 as
/// soon as the last response is out, long before the 10 s grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    const N: usize = 20;
    let upstream = Upstream::start().await;
    let (admin_addr, listen) = (addr(free_port()), addr(free_port()));
    let mut proxy = start(mesh(admin_addr, listen, upstream.addr, None), admin_addr).await;

    let started = Instant::now();
    let clients: Vec<_> = (0..N)
        .map(|_| {
            tokio::spawn(async move {
                let mut sender = connect(listen).await.expect("connect before SIGTERM");
                let (outcome, _) = send(&mut sender, listen, "/delay/1500").await;
                (outcome, Instant::now())
            })
        })
        .collect();
    let all_in = eventually(Duration::from_secs(5), || async { upstream.hits() == N }).await;
    assert!(
        all_in,
        "only {} of {N} reached the upstream",
        upstream.hits()
    );
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "setup too slow to test drain"
    );

    proxy.signal("TERM");
    let sigterm = Instant::now();
    let took = ready_turns_503(&proxy, Duration::from_millis(1000)).await;
    assert!(
        took < Duration::from_millis(500),
        "/ready took {took:?} to turn 503"
    );
    assert_eq!(metric(&proxy, "prescale_draining", "").await, Some(1.0));
    assert_eq!(metric(&proxy, "prescale_ready", "").await, Some(0.0));
    // The listener stops accepting while the requests are still in flight.
    let closed = eventually(Duration::from_millis(800), || async {
        TcpStream::connect(listen).await.is_err()
    })
    .await;
    assert!(closed, "listener still accepting after SIGTERM");
    assert!(
        proxy.child.try_wait().unwrap().is_none(),
        "exited with requests in flight"
    );

    let mut last = sigterm;
    for c in clients {
        let (outcome, at) = c.await.unwrap();
        match outcome {
            Outcome::Done(200, close) => {
                assert!(close, "a response during drain must say connection: close");
            }
            other => panic!(
                "in-flight request failed during drain: {other:?}\n{}",
                proxy.logs()
            ),
        }
        last = last.max(at);
    }
    let (code, exited) = wait_exit(&mut proxy, Duration::from_secs(9)).await;
    assert_eq!(code, Some(0), "{}", proxy.logs());
    let to_exit = exited - sigterm;
    assert!(
        to_exit < Duration::from_millis(2500),
        "exit took {to_exit:?} after SIGTERM (grace is 10 s)"
    );
    // It did wait for the requests: they finished ~1.5 s after they started.
    assert!(exited >= last, "exited before the last response");
    assert_eq!(upstream.hits(), N);
    eprintln!("strict drain: {N} in flight, all 200; exit 0 {to_exit:?} after SIGTERM");
}

/// The load shape: 40 keep-alive clients sending sequential slow requests; SIGTERM
/// mid-run. No request that reached the proxy fails; requests that could not connect
/// after the listener closed are counted apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_fails_no_accepted_request() {
    const CLIENTS: usize = 40;
    let upstream = Upstream::start().await;
    let (admin_addr, listen) = (addr(free_port()), addr(free_port()));
    let mut proxy = start(mesh(admin_addr, listen, upstream.addr, None), admin_addr).await;

    let stop = Instant::now() + Duration::from_secs(3);
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let outcomes = outcomes.clone();
            tokio::spawn(async move {
                // Spread the clients over one request time, as independent callers
                // would be; in lockstep, all 40 would send their next request in the
                // same instant, and SIGTERM could land exactly there.
                tokio::time::sleep(Duration::from_micros(7_500 * i as u64)).await;
                let mut sender: Option<Sender> = None;
                while Instant::now() < stop {
                    let s = match sender.as_mut() {
                        Some(s) => s,
                        None => match connect(listen).await {
                            Some(s) => sender.insert(s),
                            None => {
                                outcomes.lock().unwrap().push(Outcome::Refused);
                                return;
                            }
                        },
                    };
                    let (outcome, reuse) = send(s, listen, "/delay/300").await;
                    if !reuse {
                        sender = None;
                    }
                    outcomes.lock().unwrap().push(outcome);
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let done_before = outcomes.lock().unwrap().len();
    let hits_before = upstream.hits();
    proxy.signal("TERM");
    let sigterm = Instant::now();
    let took = ready_turns_503(&proxy, Duration::from_millis(1000)).await;
    assert!(
        took < Duration::from_millis(500),
        "/ready took {took:?} to turn 503"
    );
    for c in clients {
        c.await.unwrap();
    }
    let (code, exited) = wait_exit(&mut proxy, Duration::from_secs(9)).await;
    let to_exit = exited - sigterm;

    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    let (mut ok, mut refused, mut not_sent, mut close) = (0, 0, 0, 0);
    let mut no_response = Vec::new();
    for o in &outcomes {
        match o {
            Outcome::Done(200, c) => {
                ok += 1;
                close += usize::from(*c);
            }
            Outcome::Refused => refused += 1,
            Outcome::NotSent => not_sent += 1,
            Outcome::NoResponse(e) => no_response.push(e.clone()),
            Outcome::BodyFailed(status, e) => {
                panic!("a {status} response was cut during drain: {e}")
            }
            Outcome::Done(status, _) => panic!("a request got {status} during drain"),
        }
    }
    let hits = upstream.hits();
    eprintln!(
        "drain under load: {ok} ok ({done_before} before SIGTERM, {} in flight at SIGTERM, \
         {close} with connection: close), {refused} refused, {not_sent} not sent, \
         {} closed before a response {:?}; exit {code:?} {to_exit:?} after SIGTERM",
        hits_before - done_before.min(hits_before),
        no_response.len(),
        no_response.first(),
    );
    assert_eq!(code, Some(0), "{}", proxy.logs());
    assert!(
        to_exit < Duration::from_secs(3),
        "exit took {to_exit:?} after SIGTERM (grace is 10 s)"
    );
    assert!(
        ok >= 120,
        "only {ok} requests completed; load too light to mean anything"
    );
    assert!(
        hits_before > done_before,
        "nothing was in flight at SIGTERM"
    );
    // Every request the proxy forwarded came back to its client as a 200.
    assert_eq!(
        ok, hits,
        "upstream saw {hits} requests, clients got {ok} responses"
    );
    // Drain responses say `connection: close`, so clients stop reusing connections the
    // proxy is about to close. Without it every client with a request in flight at
    // SIGTERM went on to send its next one into the close (40 of 40 in a run before the
    // fix: 28 saw the close before writing, 12 after). A request sent in the instant
    // between a keep-alive response and SIGTERM can still meet the close; the proxy never
    // read it, so it is not an in-flight failure, but it must stay rare.
    assert!(close > 0, "no drain response said connection: close");
    assert!(
        not_sent + no_response.len() <= 3,
        "{not_sent} requests found their connection closed, {} were sent into the close: \
         {no_response:?}",
        no_response.len()
    );
}

// === 5. POST /shutdown ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_shutdown_drains_and_exits_zero() {
    let upstream = Upstream::start().await;
    let (admin_addr, listen) = (addr(free_port()), addr(free_port()));
    let mut proxy = start(mesh(admin_addr, listen, upstream.addr, None), admin_addr).await;

    // A request in flight keeps the process up while we look at it draining.
    let client = tokio::spawn(async move {
        let mut sender = connect(listen).await.expect("connect");
        send(&mut sender, listen, "/delay/1000").await.0
    });
    assert!(eventually(Duration::from_secs(5), || async { upstream.hits() == 1 }).await);

    let (status, body) = admin(&proxy, "POST", "/shutdown", None).await;
    assert_eq!((status, body.as_str()), (202, "draining\n"));
    let asked = Instant::now();
    assert_eq!(
        admin(&proxy, "GET", "/ready", None).await,
        (503, "draining\n".into())
    );
    assert_eq!(
        admin(&proxy, "POST", "/shutdown", None).await,
        (202, "already draining\n".into())
    );
    assert_eq!(metric(&proxy, "prescale_draining", "").await, Some(1.0));
    assert_eq!(
        admin(&proxy, "GET", "/live", None).await.0,
        200,
        "live while draining"
    );

    match client.await.unwrap() {
        Outcome::Done(200, true) => {}
        other => panic!("in-flight request during shutdown: {other:?}"),
    }
    let (code, exited) = wait_exit(&mut proxy, Duration::from_secs(5)).await;
    assert_eq!(code, Some(0), "{}", proxy.logs());
    assert!(
        exited - asked < Duration::from_secs(2),
        "took {:?}",
        exited - asked
    );
    assert!(proxy.logs().contains("draining"), "{}", proxy.logs());
}

// === 6. SIGINT ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_at_once_without_draining() {
    let upstream = Upstream::start().await;
    let (admin_addr, listen) = (addr(free_port()), addr(free_port()));
    let mut proxy = start(mesh(admin_addr, listen, upstream.addr, None), admin_addr).await;

    let client = tokio::spawn(async move {
        let mut sender = connect(listen).await.expect("connect");
        send(&mut sender, listen, "/delay/5000").await.0
    });
    assert!(eventually(Duration::from_secs(5), || async { upstream.hits() == 1 }).await);

    proxy.signal("INT");
    let sent = Instant::now();
    let (code, exited) = wait_exit(&mut proxy, Duration::from_secs(5)).await;
    let took = exited - sent;
    assert!(took < Duration::from_secs(1), "SIGINT took {took:?}");
    assert_eq!(code, Some(0), "{}", proxy.logs());
    // It did not wait for the 5 s request.
    let outcome = client.await.unwrap();
    assert!(
        !matches!(outcome, Outcome::Done(200, _)),
        "the slow request completed: {outcome:?}"
    );
}
