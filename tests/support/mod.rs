//! Test harness: a real upstream (hyper, h1 + h2c, optional TLS) and the real
//! `prescale` binary started from a config written to a temp dir.
//!
//! Upstream endpoints (any method):
//! - `/bytes/N` streams N bytes of `x` in 64 KiB chunks;
//! - `/sink` reads the whole body as it streams and answers its length;
//! - `/delay/MS` answers after MS milliseconds;
//! - `/drip/MS` sends the response head at once and the body after MS milliseconds;
//! - `/sse/N/MS` streams N server-sent events MS milliseconds apart;
//! - `/status/N` answers status N;
//! - `/upgrade` answers 101 and echoes bytes on the upgraded connection;
//! - anything else answers JSON `{method, path, version, headers}` describing the request.
#![allow(dead_code)]

pub mod cpu_upstream;
pub mod fake_kube;
pub mod peers;
pub mod raw;
pub mod replay_cli;
pub mod require;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, std::io::Error>;

/// A free loopback port for a process the test starts to bind later.
///
/// Not `bind(0)`: the kernel hands those out from the ephemeral range, where the
/// same port can come back on the next call (CI once gave a listener the admin
/// port) or be taken by a client's source port before the proxy binds it. So ports
/// come from below the ephemeral range, each at most once per process, starting at a
/// pid-derived offset so concurrent test processes rarely meet, and are checked free.
pub fn free_port() -> u16 {
    use std::sync::atomic::AtomicU32;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (low, high) = below_ephemeral();
    let span = u32::from(high - low);
    let offset = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = low + ((offset + n) % span) as u16;
        if StdListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {low}..{high}");
}

/// Ports `[low, high)` below the kernel's ephemeral range (10000..32768 by default).
fn below_ephemeral() -> (u16, u16) {
    let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if start > 12_000 {
        (10_000, start)
    } else {
        // An unusual range reaching low: use the ports above it instead.
        (61_000, 65_000)
    }
}

/// A self-signed CA-less certificate for `localhost` / 127.0.0.1, written as PEM files.
pub struct TestCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn self_signed(dir: &Path, name: &str) -> TestCert {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("rcgen");
    let cert_pem = ck.cert.pem();
    let key_pem = ck.key_pair.serialize_pem();
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, &key_pem).unwrap();
    TestCert {
        cert,
        key,
        cert_pem,
        key_pem,
    }
}

/// A running upstream test service.
pub struct Upstream {
    pub addr: SocketAddr,
    /// Requests it has started serving.
    pub hits: Arc<AtomicUsize>,
    /// Requests it has started serving whose path is not under `/probe/`: tests that
    /// run a background probe count the others exactly, with no race against the
    /// probe's own requests in flight.
    others: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    /// Plain text: HTTP/1.1 and h2c prior knowledge on one port.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// TLS with ALPN h2 and http/1.1.
    pub async fn start_tls(cert: &TestCert) -> Self {
        let certs = rustls_pemfile::certs(&mut cert.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pemfile::private_key(&mut cert.key_pem.as_bytes())
            .unwrap()
            .unwrap();
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut cfg = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self::start_with(Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let others = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let other_counter = others.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let counter = counter.clone();
                let other_counter = other_counter.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        if !req.uri().path().starts_with("/probe/") {
                            other_counter.fetch_add(1, Ordering::SeqCst);
                        }
                        handle(req)
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        Some(acceptor) => {
                            let Ok(s) = acceptor.accept(stream).await else {
                                return;
                            };
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(s), svc)
                                .await;
                        }
                        None => {
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                                .await;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            hits,
            others,
            task,
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Requests started whose path is not under `/probe/`.
    pub fn hits_except_probes(&self) -> usize {
        self.others.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(req: Request<Incoming>) -> Result<Response<Body>, std::io::Error> {
    let path = req.uri().path().to_string();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let head = parts.next().unwrap_or("");
    let arg = parts.next().unwrap_or("");
    match head {
        "bytes" => {
            let n: usize = arg.parse().unwrap_or(0);
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let stream = futures_util::stream::unfold(n, move |left| {
                let chunk = chunk.clone();
                async move {
                    if left == 0 {
                        return None;
                    }
                    let take = left.min(chunk.len());
                    Some((
                        Ok::<_, std::io::Error>(Frame::data(chunk.slice(..take))),
                        left - take,
                    ))
                }
            });
            let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            resp.headers_mut().insert("content-length", n.into());
            Ok(resp)
        }
        "sink" => {
            let mut body = req.into_body();
            let mut total = 0usize;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(std::io::Error::other)?;
                if let Some(d) = frame.data_ref() {
                    total += d.len();
                }
            }
            Ok(full(StatusCode::OK, total.to_string()))
        }
        "delay" => {
            let ms: u64 = arg.parse().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(full(StatusCode::OK, format!("slept {ms}ms")))
        }
        "drip" => {
            // The head at once, the body MS milliseconds later (a long-poll that
            // commits to answering, or a slow stream).
            let ms: u64 = arg.parse().unwrap_or(0);
            let stream = futures_util::stream::unfold(false, move |sent| async move {
                if sent {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let frame = Frame::data(Bytes::from(format!("dripped after {ms}ms")));
                Some((Ok::<_, std::io::Error>(frame), true))
            });
            Ok(Response::new(BodyExt::boxed(StreamBody::new(stream))))
        }
        "sse" => {
            // N server-sent events, `/sse/N/MS`: MS milliseconds apart (the first at once).
            let mut it = arg.splitn(2, '/');
            let n: usize = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            let ms: u64 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            let stream = futures_util::stream::unfold(0usize, move |i| async move {
                if i >= n {
                    return None;
                }
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                let frame = Frame::data(Bytes::from(format!("id: {i}\ndata: event {i}\n\n")));
                Some((Ok::<_, std::io::Error>(frame), i + 1))
            });
            let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            resp.headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            resp.headers_mut()
                .insert("cache-control", "no-cache".parse().unwrap());
            Ok(resp)
        }
        "status" => {
            let code = arg.parse().ok().and_then(|c| StatusCode::from_u16(c).ok());
            Ok(full(
                code.unwrap_or(StatusCode::BAD_REQUEST),
                "status".into(),
            ))
        }
        "upgrade" => {
            let upgrade = hyper::upgrade::on(req);
            tokio::spawn(async move {
                let Ok(upgraded) = upgrade.await else { return };
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            let mut resp = Response::new(empty());
            *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            resp.headers_mut()
                .insert("connection", "upgrade".parse().unwrap());
            resp.headers_mut()
                .insert("upgrade", "websocket".parse().unwrap());
            Ok(resp)
        }
        _ => {
            let headers: BTreeMap<String, String> = req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                .collect();
            let body = serde_json::json!({
                "method": req.method().as_str(),
                "path": path,
                "version": format!("{:?}", req.version()),
                "headers": headers,
            });
            Ok(full(StatusCode::OK, body.to_string()))
        }
    }
}

fn full(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *resp.status_mut() = status;
    resp
}

fn empty() -> Body {
    Full::new(Bytes::new()).map_err(|e| match e {}).boxed()
}

/// The real `prescale` binary, running with a config written to a temp dir.
pub struct Proxy {
    pub child: Child,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl Proxy {
    /// Writes `yaml` to `<tmp>/config.yaml`, starts the binary, waits for `/ready`.
    /// The yaml must set `admin.address` to `admin`.
    pub fn start(yaml: &str, admin: SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, yaml, admin)
    }

    /// Like `start`, in a dir the caller prepared (e.g. with certificates in it).
    pub fn start_in(dir: tempfile::TempDir, yaml: &str, admin: SocketAddr) -> Self {
        Self::start_with(dir, yaml, admin, &[])
    }

    /// Like `start_in`, with more options for `prescale run` (e.g. `--time-scale`).
    pub fn start_with(
        dir: tempfile::TempDir,
        yaml: &str,
        admin: SocketAddr,
        options: &[&str],
    ) -> Self {
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, yaml).unwrap();
        let log = dir.path().join("prescale.log");
        let child = Command::new(env!("CARGO_BIN_EXE_prescale"))
            .arg("run")
            .args(options)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn prescale");
        let mut proxy = Self {
            child,
            admin,
            dir,
            config,
            log,
        };
        proxy.wait_ready(Duration::from_secs(20));
        proxy
    }

    pub fn wait_ready(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("prescale exited early ({status}):\n{}", self.logs());
            }
            if admin_get(self.admin, "/ready").map(|(s, _)| s) == Some(200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prescale not ready:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{sig} failed");
    }

    /// Rewrites the config file in place (for reload tests).
    pub fn rewrite_config(&self, yaml: &str) {
        let mut f = std::fs::File::create(&self.config).unwrap();
        f.write_all(yaml.as_bytes()).unwrap();
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The value of one metric series in `/metrics`, matched by name and a label
    /// substring such as `listener="inbound",code_class="2xx"`.
    pub fn metric(&self, name: &str, labels: &str) -> Option<f64> {
        let (_, body) = admin_get(self.admin, "/metrics")?;
        body.lines()
            .filter(|l| l.starts_with(name) && l.contains(labels))
            .find_map(|l| l.rsplit(' ').next()?.parse().ok())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking GET/POST to the admin API over a raw socket; returns (status, body).
pub fn admin_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    admin_request(addr, "GET", path)
}

pub fn admin_request(addr: SocketAddr, method: &str, path: &str) -> Option<(u16, String)> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: admin\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split(' ').nth(1)?.parse().ok()?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// Runs curl with the given args; returns (exit code, stdout).
pub fn curl(args: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30"])
        .args(args)
        .output()
        .expect("curl is installed (apt-get install curl)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// A minimal inbound config: one listener in front of `upstream`.
pub fn inbound_config(
    admin: SocketAddr,
    listen: SocketAddr,
    upstream: SocketAddr,
    extra_cluster: &str,
) -> String {
    format!(
        "admin:\n  address: {admin}\ndrain:\n  grace_period: 10s\nlisteners:\n  - name: inbound\n    direction: inbound\n    address: {listen}\n    cluster: local\nclusters:\n  - name: local\n    endpoints: [\"{upstream}\"]\n{extra_cluster}"
    )
}

/// The real binary on [`inbound_config`] in front of `upstream`, on free loopback
/// ports; returns it and its listener's address.
pub async fn inbound_proxy(upstream: &Upstream) -> (Proxy, SocketAddr) {
    inbound_proxy_with(upstream, "").await
}

/// As [`inbound_proxy`], with `cluster_extra` (indented YAML lines) added to the
/// cluster, e.g. its timeouts or protocol.
pub async fn inbound_proxy_with(upstream: &Upstream, cluster_extra: &str) -> (Proxy, SocketAddr) {
    let port = |p| SocketAddr::from(([127, 0, 0, 1], p));
    let (admin, listen) = (port(free_port()), port(free_port()));
    let cfg = inbound_config(admin, listen, upstream.addr, cluster_extra);
    let proxy = tokio::task::spawn_blocking(move || Proxy::start(&cfg, admin))
        .await
        .expect("the proxy starts");
    (proxy, listen)
}

// === network namespaces (tests that need root) ===

/// Whether this process may create network namespaces and iptables rules. When it
/// may not, prints why and returns false so the test can return early; under
/// `CI=true` it panics instead, since CI runs as root with iproute2 and iptables.
pub fn netns_usable(test: &str, also_needs: &[&str]) -> bool {
    match netns_unusable_reason(also_needs) {
        None => true,
        Some(why) => require::unmet(
            test,
            &format!("{why} (needs root, `ip netns` and iptables)"),
        ),
    }
}

fn netns_unusable_reason(also_needs: &[&str]) -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    if euid != "0" {
        return Some(format!("not root (euid {euid})"));
    }
    for tool in ["ip", "iptables", "curl"].iter().chain(also_needs) {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    // Creating one is the only reliable test (containers may lack CAP_SYS_ADMIN).
    match Netns::create("probe") {
        Ok(_) => None,
        Err(e) => Some(format!("`ip netns add` failed: {e}")),
    }
}

/// A network namespace named uniquely for this process, deleted on drop.
pub struct Netns {
    pub name: String,
}

static NETNS_SEQ: AtomicUsize = AtomicUsize::new(0);

impl Netns {
    /// `ip netns add psc-<tag>-<pid>-<n>`, with `lo` up.
    pub fn create(tag: &str) -> Result<Self, String> {
        let n = NETNS_SEQ.fetch_add(1, Ordering::SeqCst);
        let name = format!("psc-{tag}-{}-{n}", std::process::id());
        run_checked("ip", &["netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run_checked("ip", &all)
    }

    /// Runs a command inside the namespace and waits for it.
    pub fn run(&self, cmd: &str, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["netns", "exec", &self.name, cmd];
        all.extend_from_slice(args);
        run_checked("ip", &all)
    }

    /// A command that will run inside the namespace (`ip netns exec` execs it, so the
    /// child's pid is the command's own).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// curl inside the namespace with a 5 s bound; returns (exit code, status, headers
    /// and body as one string).
    pub fn curl(&self, args: &[&str]) -> (i32, u16, String) {
        let out = self
            .command("curl")
            .args(["-sS", "-i", "--max-time", "5"])
            .args(args)
            .output()
            .expect("curl is installed");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let status = text
            .lines()
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (out.status.code().unwrap_or(-1), status, text)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run_checked("ip", &["netns", "del", &self.name]);
    }
}

fn run_checked(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{cmd} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A child process killed (and reaped) on drop.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The value of one series in a Prometheus text exposition, matched by metric name and
/// a label substring such as `listener="outbound",code_class="2xx"`.
pub fn metric_value(exposition: &str, name: &str, labels: &str) -> Option<f64> {
    exposition
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Pipes a `/metrics` body through `promtool check metrics` and asserts it is clean
/// (exit 0, no lint output).
pub fn promtool_check(body: &str) {
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (Debian package prometheus)");
    {
        use std::io::Write;
        let mut stdin = promtool.stdin.take().unwrap();
        stdin.write_all(body.as_bytes()).unwrap();
    }
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {:?}\n{}{}\n--- metrics ---\n{body}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

// === a webhook receiver (signals tests) ===

/// One request a [`Receiver`] got.
#[derive(Clone, Debug)]
pub struct Received {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: Bytes,
}

/// How a [`Receiver`] answers one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// This status, with a `Retry-After` header when given.
    Status(u16, Option<&'static str>),
    /// Read the request, then answer nothing for this long.
    Stall(Duration),
}

/// A real HTTP receiver on loopback (hyper, HTTP/1.1, plain or TLS) that records every
/// request and answers from a script: the n-th request gets `script[n]`, later ones
/// `then`.
pub struct Receiver {
    pub addr: SocketAddr,
    pub requests: Arc<std::sync::Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start(script: Vec<Reply>, then: Reply) -> Self {
        Self::start_with(script, then, None).await
    }

    pub async fn start_tls(script: Vec<Reply>, then: Reply, cert: &TestCert) -> Self {
        let certs = rustls_pemfile::certs(&mut cert.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pemfile::private_key(&mut cert.key_pem.as_bytes())
            .unwrap()
            .unwrap();
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let cfg = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        Self::start_with(script, then, Some(acceptor)).await
    }

    async fn start_with(
        script: Vec<Reply>,
        then: Reply,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = requests.clone();
        let script = Arc::new((script, then));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let seen = seen.clone();
                let script = script.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let seen = seen.clone();
                        let script = script.clone();
                        async move {
                            let at = Instant::now();
                            let method = req.method().to_string();
                            let path = req.uri().path().to_string();
                            let headers = req
                                .headers()
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
                                .collect();
                            let body = req.into_body().collect().await?.to_bytes();
                            let n = {
                                let mut g = seen.lock().unwrap();
                                g.push(Received {
                                    at,
                                    method,
                                    path,
                                    headers,
                                    body,
                                });
                                g.len() - 1
                            };
                            let reply = script.0.get(n).unwrap_or(&script.1).clone();
                            let (code, retry_after) = match reply {
                                Reply::Status(code, retry_after) => (code, retry_after),
                                Reply::Stall(d) => {
                                    tokio::time::sleep(d).await;
                                    (200, None)
                                }
                            };
                            let mut resp = full(StatusCode::from_u16(code).unwrap(), "{}".into());
                            if let Some(v) = retry_after {
                                resp.headers_mut().insert("retry-after", v.parse().unwrap());
                            }
                            Ok::<_, hyper::Error>(resp)
                        }
                    });
                    let conn = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(stream).await {
                                let _ = conn.serve_connection(TokioIo::new(s), svc).await;
                            }
                        }
                        None => {
                            let _ = conn.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            requests,
            task,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived; returns them all.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> Vec<Received> {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.received();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// === a real Prometheus (tests that need the Debian `prometheus` package) ===

/// Whether `prometheus` and `promtool` are installed. When not, prints why and returns
/// false so the test can return early; under `CI=true` it panics instead.
pub fn prometheus_usable(test: &str) -> bool {
    require::tools(test, &["prometheus", "promtool"])
}

/// A Prometheus server on a free loopback port with its own temp data dir, scraping
/// each target's `/metrics` every second; killed on drop.
pub struct Prometheus {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
    child: KillOnDrop,
}

impl Prometheus {
    /// Starts on `data` (e.g. filled by [`backfill_counter`]) or an empty dir, and
    /// waits until `/-/ready` answers 200.
    pub fn start(targets: &[SocketAddr], data: Option<&Path>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: prescale\n    metrics_path: /metrics\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ),
        )
        .unwrap();
        let data = data.map_or_else(|| dir.path().join("data"), Path::to_path_buf);
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = dir.path().join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn prometheus");
        let mut prom = Self {
            addr,
            dir,
            log,
            child: KillOnDrop(child),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = prom.child.0.try_wait() {
                panic!("prometheus exited early ({status}):\n{}", prom.logs());
            }
            if admin_get(prom.addr, "/-/ready").map(|(s, _)| s) == Some(200) {
                return prom;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready:\n{}",
                prom.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An instant PromQL query through `/api/v1/query`; the `data.result` array.
    pub fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let path = format!("/api/v1/query?query={}", url_encode(promql));
        let Some((status, body)) = admin_get(self.addr, &path) else {
            return Vec::new();
        };
        assert_eq!(status, 200, "{promql}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{promql}: {body}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

/// Writes a counter `name` growing by `per_second` from `before` ago until `after`
/// from now, one sample per `every`, as OpenMetrics, and turns it into TSDB blocks in
/// `data` with `promtool tsdb create-blocks-from openmetrics` (Prometheus' own
/// backfill). Samples past now keep every range window up to now fully covered, so
/// `rate()` is exact however the test's clock falls on minute boundaries; but a
/// Prometheus holding them refuses scraped samples older than its newest block.
pub fn backfill_counter(
    data: &Path,
    name: &str,
    per_second: f64,
    before: Duration,
    after: Duration,
    every: Duration,
) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (start, end, step) = (
        now - before.as_secs(),
        now + after.as_secs(),
        every.as_secs().max(1),
    );
    let mut text = format!("# HELP {name} Backfilled test counter.\n# TYPE {name} counter\n");
    let mut t = start;
    while t < end {
        let v = (t - start) as f64 * per_second;
        text.push_str(&format!("{name}_total {v} {t}\n"));
        t += step;
    }
    text.push_str("# EOF\n");
    let input = data.with_extension("om");
    std::fs::write(&input, text).unwrap();
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&input)
        .arg(data)
        .output()
        .expect("promtool is installed");
    assert!(
        out.status.success(),
        "promtool backfill: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Percent-encodes a query parameter value.
pub fn url_encode(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

// === a real Alertmanager (tests that need Debian's `prometheus-alertmanager`) ===

/// Whether `prometheus-alertmanager` is installed. When not, prints why and returns
/// false so the test can return early; under `CI=true` it panics instead.
pub fn alertmanager_usable(test: &str) -> bool {
    require::tools(test, &["prometheus-alertmanager"])
}

/// An Alertmanager on a free loopback port with a temp config (one receiver that
/// notifies nobody) and storage, clustering off; killed on drop.
pub struct Alertmanager {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
    child: KillOnDrop,
}

impl Alertmanager {
    /// Starts it and waits until `/-/ready` answers 200.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: blackhole\n  group_wait: 1s\nreceivers:\n  - name: blackhole\n",
        )
        .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = dir.path().join("alertmanager.log");
        let child = Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            // No gossip port: the test must not bind anything beyond loopback.
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn prometheus-alertmanager");
        let mut am = Self {
            addr,
            dir,
            log,
            child: KillOnDrop(child),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = am.child.0.try_wait() {
                panic!("alertmanager exited early ({status}):\n{}", am.logs());
            }
            if admin_get(am.addr, "/-/ready").map(|(s, _)| s) == Some(200) {
                return am;
            }
            assert!(
                Instant::now() < deadline,
                "alertmanager not ready:\n{}",
                am.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The alerts it holds now (`GET /api/v2/alerts`: active ones; resolved ones are
    /// not listed).
    pub fn alerts(&self) -> Vec<serde_json::Value> {
        let Some((status, body)) = admin_get(self.addr, "/api/v2/alerts") else {
            return Vec::new();
        };
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }
}
