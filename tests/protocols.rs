//! Protocols through the real binary: HTTP/1.1, h2c and h2 over TLS, downstream and
//! upstream, with curl as the client and a hyper upstream.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Runs a blocking closure off the test's runtime threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// Starts the binary with `yaml` in `dir` (where the certificates live).
async fn start_in(dir: tempfile::TempDir, yaml: String, admin: SocketAddr) -> Proxy {
    blocking(move || Proxy::start_in(dir, &yaml, admin)).await
}

/// What one curl run produced, with stdout and stderr kept apart.
struct CurlRun {
    code: i32,
    stdout: String,
    stderr: String,
}

/// curl with the given arguments, bounded in time; never panics on a failed transfer.
fn curl_run(args: &[&str]) -> CurlRun {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60"])
        .args(args)
        .output()
        .expect("curl is installed");
    CurlRun {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn curl_async(args: Vec<String>) -> CurlRun {
    blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        curl_run(&args)
    })
    .await
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Splits curl output made with `-w '\n%{...}'` into (body, the -w line).
fn split_trailer(out: &str) -> (&str, &str) {
    out.rsplit_once('\n').unwrap_or(("", out))
}

/// The JSON the echo upstream answered with.
fn echo(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("upstream JSON ({e}): {body:?}"))
}

/// The proxy's peak resident set size, in KiB (VmHWM).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

/// One h2load run: the counters of its "requests:" and "status codes:" lines.
#[derive(Debug)]
struct H2load {
    requests: HashMap<String, u64>,
    status: HashMap<String, u64>,
    protocol: String,
    output: String,
}

/// `N word, N word, ...` after `prefix` on one of the output lines.
fn h2load_counters(output: &str, prefix: &str) -> HashMap<String, u64> {
    let line = output
        .lines()
        .find_map(|l| l.trim().strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in h2load output:\n{output}"));
    line.split(',')
        .filter_map(|part| {
            let mut it = part.split_whitespace();
            let n = it.next()?.parse().ok()?;
            Some((it.next()?.to_string(), n))
        })
        .collect()
}

fn h2load(args: &[&str]) -> H2load {
    // `timeout` bounds the run even if the proxy stalls a stream forever.
    let out = Command::new("timeout")
        .arg("180")
        .arg("h2load")
        .args(args)
        .output()
        .expect("h2load is installed (nghttp2-client)");
    let output =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "h2load failed: {output}");
    H2load {
        requests: h2load_counters(&output, "requests:"),
        status: h2load_counters(&output, "status codes:"),
        protocol: output
            .lines()
            .find_map(|l| l.strip_prefix("Application protocol:"))
            .map(|p| p.trim().to_string())
            .unwrap_or_default(),
        output,
    }
}

/// Asserts every one of `n` requests succeeded with a 2xx; on failure shows the end of
/// the proxy's log too.
fn assert_all_2xx(run: &H2load, n: u64, proxy: &Proxy) {
    let r = &run.requests;
    let ok = r.get("succeeded") == Some(&n)
        && r.get("done") == Some(&n)
        && r.get("failed") == Some(&0)
        && r.get("errored") == Some(&0)
        && r.get("timeout") == Some(&0)
        && run.status.get("2xx") == Some(&n);
    if !ok {
        let logs = proxy.logs();
        let tail: Vec<&str> = logs.lines().rev().take(30).collect();
        panic!(
            "expected {n} requests, all 2xx:\n{}\nproxy log (last lines first):\n{}",
            run.output,
            tail.join("\n")
        );
    }
}

/// A raw HTTP/1.1 response head read from a socket, up to the blank line.
async fn read_head(s: &mut tokio::net::TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte))
            .await
            .expect("response head within 10 s")
            .unwrap();
        assert_eq!(n, 1, "EOF inside the response head: {head:?}");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

// --- 1. Downstream h2c and HTTP/1.1 on the plain-text port ---------------------------

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_on_the_plain_text_port() {
    let upstream = Upstream::start().await;
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let cfg = inbound_config(admin, listen, upstream.addr, "");
    let _proxy = blocking(move || Proxy::start(&cfg, admin)).await;

    let url = format!("http://{listen}/h2c/path?q=1");
    let run = curl_async(strings(&[
        "--http2-prior-knowledge",
        "-w",
        "\n%{http_version} %{http_code}",
        &url,
    ]))
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let (body, trailer) = split_trailer(&run.stdout);
    assert_eq!(trailer, "2 200", "curl spoke h2c to the proxy");
    let seen = echo(body);
    assert_eq!(seen["path"], "/h2c/path");
    assert_eq!(seen["method"], "GET");
    // The h1 cluster gets HTTP/1.1 with a Host made from :authority.
    assert_eq!(seen["version"], "HTTP/1.1");
    assert_eq!(seen["headers"]["host"], listen.to_string());
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2load_h2c_and_http1_all_succeed() {
    const N: u64 = 20_000;
    let upstream = Upstream::start().await;
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    // 50 x 10 streams start at once on a cold pool, so the proxy opens ~500 upstream
    // connections together; the test upstream's accept backlog is 128 (tokio's default),
    // so some SYNs are dropped and retried by the kernel after 1 s. A 1 s connect
    // timeout (the default) would turn each of those into a 504; give them room.
    let cfg = format!(
        "admin:\n  address: {admin}\n\
listeners:\n  - {{name: inbound, direction: inbound, address: \"{listen}\", cluster: local}}\n\
clusters:\n  - {{name: local, endpoints: [\"{}\"], timeouts: {{connect: 5s}}}}\n",
        upstream.addr
    );
    let proxy = blocking(move || Proxy::start(&cfg, admin)).await;
    let url = format!("http://{listen}/load");

    // h2c with prior knowledge (h2load's default for http://), 10 streams per connection.
    let u = url.clone();
    let t = Instant::now();
    let h2 = blocking(move || h2load(&["-n", "20000", "-c", "50", "-m", "10", &u])).await;
    eprintln!("h2load h2c: {:?}", t.elapsed());
    assert_eq!(h2.protocol, "h2c", "{}", h2.output);
    assert_all_2xx(&h2, N, &proxy);
    assert_eq!(
        upstream.hits() as u64,
        N,
        "every request reached the upstream"
    );

    let u = url.clone();
    let t = Instant::now();
    let h1 = blocking(move || h2load(&["--h1", "-n", "20000", "-c", "50", &u])).await;
    eprintln!("h2load http/1.1: {:?}", t.elapsed());
    assert_eq!(h1.protocol, "http/1.1", "{}", h1.output);
    assert_all_2xx(&h1, N, &proxy);
    assert_eq!(upstream.hits() as u64, 2 * N);

    // The proxy counted them too (logging runs just after the response; allow a moment).
    let deadline = Instant::now() + Duration::from_secs(5);
    let labels = r#"listener="inbound",code_class="2xx""#;
    while proxy.metric("prescale_requests_total", labels) != Some((2 * N) as f64) {
        assert!(
            Instant::now() < deadline,
            "prescale_requests_total{{{labels}}} = {:?}",
            proxy.metric("prescale_requests_total", labels)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// --- 2. TLS listener: h2 and HTTP/1.1 by ALPN -----------------------------------------

fn tls_listener_config(
    admin: SocketAddr,
    listen: SocketAddr,
    upstream: SocketAddr,
    tls: &str,
) -> String {
    format!(
        "admin:\n  address: {admin}\nlisteners:\n  - name: inbound-tls\n    direction: inbound\n    address: {listen}\n    cluster: local\n    tls: {tls}\nclusters:\n  - name: local\n    endpoints: [\"{upstream}\"]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_serves_h2_and_http1_by_alpn() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cert = self_signed(dir.path(), "listener");
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let tls = format!(
        "{{cert: {}, key: {}}}",
        cert.cert.display(),
        cert.key.display()
    );
    let cfg = tls_listener_config(admin, listen, upstream.addr, &tls);
    let cert_path = cert.cert.display().to_string();
    let _proxy = start_in(dir, cfg, admin).await;
    let url = format!("https://{listen}/tls");

    // A client without a certificate cannot name itself: the identity header is dropped.
    let h2 = curl_async(strings(&[
        "-k",
        "--http2",
        "-H",
        "x-prescale-client-id: forged",
        "-w",
        "\n%{http_version}",
        &url,
    ]))
    .await;
    assert_eq!(h2.code, 0, "{}", h2.stderr);
    let (body, version) = split_trailer(&h2.stdout);
    assert_eq!(version, "2", "ALPN chose h2");
    let seen = echo(body);
    assert_eq!(seen["path"], "/tls");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https");
    assert!(
        seen["headers"].get("x-prescale-client-id").is_none(),
        "{seen}"
    );

    let h1 = curl_async(strings(&[
        "-k",
        "--http1.1",
        "-w",
        "\n%{http_version}",
        &url,
    ]))
    .await;
    assert_eq!(h1.code, 0, "{}", h1.stderr);
    let (body, version) = split_trailer(&h1.stdout);
    assert_eq!(version, "1.1", "ALPN chose http/1.1");
    assert_eq!(echo(body)["headers"]["x-forwarded-proto"], "https");

    // The configured certificate is the one presented: it verifies as the only root.
    let verified = curl_async(strings(&[
        "--cacert",
        &cert_path,
        "-w",
        "\n%{http_code} %{ssl_verify_result}",
        &url,
    ]))
    .await;
    assert_eq!(verified.code, 0, "{}", verified.stderr);
    assert_eq!(split_trailer(&verified.stdout).1, "200 0");

    // Plain text on the TLS port is not served.
    let plain = curl_async(strings(&[&format!("http://{listen}/tls")])).await;
    assert_ne!(plain.code, 0, "plain HTTP on a TLS port: {}", plain.stdout);
    assert_eq!(upstream.hits(), 3);
}

// --- 3. mTLS listener -------------------------------------------------------------------

/// A CA, written as `<name>-ca.crt`, that can sign client certificates.
struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
    path: std::path::PathBuf,
}

fn make_ca(dir: &Path, name: &str) -> TestCa {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} test CA"));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let path = dir.join(format!("{name}-ca.crt"));
    std::fs::write(&path, cert.pem()).unwrap();
    TestCa { cert, key, path }
}

/// A client certificate signed by `ca`; returns (cert path, key path).
fn client_cert(dir: &Path, ca: &TestCa, name: &str) -> (String, String) {
    let mut params = rcgen::CertificateParams::new(vec![format!("{name}.client.test")]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    let (c, k) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c.display().to_string(), k.display().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_listener_requires_a_client_certificate_from_its_ca() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = self_signed(dir.path(), "listener");
    let ca = make_ca(dir.path(), "mesh");
    let other_ca = make_ca(dir.path(), "other");
    let (good_cert, good_key) = client_cert(dir.path(), &ca, "good");
    let (bad_cert, bad_key) = client_cert(dir.path(), &other_ca, "stranger");
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let tls = format!(
        "{{cert: {}, key: {}, client_ca: {}}}",
        server.cert.display(),
        server.key.display(),
        ca.path.display()
    );
    let cfg = tls_listener_config(admin, listen, upstream.addr, &tls);
    let _proxy = start_in(dir, cfg, admin).await;
    let url = format!("https://{listen}/mtls");

    // No certificate: the handshake (or the first read after it, in TLS 1.3) fails.
    for version in ["--http1.1", "--http2"] {
        let none = curl_async(strings(&["-k", version, &url])).await;
        assert_ne!(none.code, 0, "no client cert ({version}): {}", none.stdout);
    }
    // A certificate from another CA is refused as well.
    let stranger = curl_async(strings(&[
        "-k", "--cert", &bad_cert, "--key", &bad_key, &url,
    ]))
    .await;
    assert_ne!(stranger.code, 0, "foreign client cert: {}", stranger.stdout);
    assert_eq!(
        upstream.hits(),
        0,
        "refused clients never reach the upstream"
    );

    // A certificate signed by client_ca is accepted, over both protocols.
    for version in ["--http1.1", "--http2"] {
        let ok = curl_async(strings(&[
            "-k",
            version,
            "--cert",
            &good_cert,
            "--key",
            &good_key,
            "-H",
            "x-prescale-client-id: admin",
            "-w",
            "\n%{http_code}",
            &url,
        ]))
        .await;
        assert_eq!(ok.code, 0, "{version}: {}", ok.stderr);
        let (body, status) = split_trailer(&ok.stdout);
        assert_eq!(status, "200");
        let seen = echo(body);
        assert_eq!(seen["path"], "/mtls");
        // The verified certificate names the client (its DNS SAN); the forged header
        // the client sent is replaced, not appended to.
        assert_eq!(
            seen["headers"]["x-prescale-client-id"], "good.client.test",
            "{seen}"
        );
    }
    assert_eq!(upstream.hits(), 2);
}

// --- 4. Upstream protocols -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_h2c_h2_and_h1_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let upstream_cert = self_signed(dir.path(), "upstream");
    let plain = Upstream::start().await;
    let tls = Upstream::start_tls(&upstream_cert).await;
    let admin = addr(free_port());
    let (l_h2c, l_h2, l_h1s) = (addr(free_port()), addr(free_port()), addr(free_port()));
    let ca = upstream_cert.cert.display();
    let cfg = format!(
        "admin:\n  address: {admin}\n\
listeners:\n\
  - {{name: to-h2c, direction: inbound, address: \"{l_h2c}\", cluster: h2c}}\n\
  - {{name: to-h2, direction: inbound, address: \"{l_h2}\", cluster: h2tls}}\n\
  - {{name: to-h1s, direction: inbound, address: \"{l_h1s}\", cluster: h1tls}}\n\
clusters:\n\
  - {{name: h2c, endpoints: [\"{}\"], protocol: h2c}}\n\
  - {{name: h2tls, endpoints: [\"{}\"], protocol: h2, tls: {{ca: \"{ca}\", sni: localhost}}}}\n\
  - {{name: h1tls, endpoints: [\"{}\"], protocol: h1, tls: {{ca: \"{ca}\", sni: localhost}}}}\n",
        plain.addr, tls.addr, tls.addr
    );
    let _proxy = start_in(dir, cfg, admin).await;

    for (listen, want) in [(l_h2c, "HTTP/2.0"), (l_h2, "HTTP/2.0"), (l_h1s, "HTTP/1.1")] {
        // Each twice: the second request may ride a pooled connection.
        for i in 0..2 {
            let url = format!("http://{listen}/proto/{i}");
            let run = curl_async(strings(&["-w", "\n%{http_code}", &url])).await;
            assert_eq!(run.code, 0, "{}", run.stderr);
            let (body, status) = split_trailer(&run.stdout);
            assert_eq!(status, "200", "{listen}: {body}");
            let seen = echo(body);
            assert_eq!(seen["version"], want, "via {listen}: {seen}");
            assert_eq!(seen["path"], format!("/proto/{i}"));
        }
    }
    assert_eq!(plain.hits(), 2);
    assert_eq!(tls.hits(), 4);
}

// --- 5. Streaming with bounded memory ------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_in_bounded_memory() {
    const SIZE: u64 = 200 * 1024 * 1024;
    const RSS_LIMIT_KIB: u64 = 100 * 1024;
    let upstream = Upstream::start().await;
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let cfg = inbound_config(admin, listen, upstream.addr, "");
    let proxy = blocking(move || Proxy::start(&cfg, admin)).await;
    let pid = proxy.child.id();

    // Download: curl counts what arrives.
    let url = format!("http://{listen}/bytes/{SIZE}");
    let down = curl_async(strings(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{size_download}",
        &url,
    ]))
    .await;
    assert_eq!(down.code, 0, "{}", down.stderr);
    assert_eq!(down.stdout, format!("200 {SIZE}"));

    // The same over h2c: h2 flow control must not turn into buffering either.
    let down = curl_async(strings(&[
        "--http2-prior-knowledge",
        "-o",
        "/dev/null",
        "-w",
        "%{http_version} %{http_code} %{size_download}",
        &url,
    ]))
    .await;
    assert_eq!(down.code, 0, "{}", down.stderr);
    assert_eq!(down.stdout, format!("2 200 {SIZE}"));

    // Upload: a sparse file streamed by curl (-T reads as it sends); the upstream
    // answers the byte count it received.
    let file = proxy.dir.path().join("upload.bin");
    std::fs::File::create(&file).unwrap().set_len(SIZE).unwrap();
    let url = format!("http://{listen}/sink");
    let up = curl_async(strings(&[
        "-T",
        &file.display().to_string(),
        "-H",
        "Expect:",
        "-w",
        "\n%{http_code} %{size_upload}",
        &url,
    ]))
    .await;
    assert_eq!(up.code, 0, "{}", up.stderr);
    let (body, trailer) = split_trailer(&up.stdout);
    assert_eq!(trailer, format!("200 {SIZE}"));
    assert_eq!(body, SIZE.to_string(), "upstream received every byte");

    let up = curl_async(strings(&[
        "--http2-prior-knowledge",
        "-T",
        &file.display().to_string(),
        "-w",
        "\n%{http_version} %{http_code} %{size_upload}",
        &url,
    ]))
    .await;
    assert_eq!(up.code, 0, "{}", up.stderr);
    let (body, trailer) = split_trailer(&up.stdout);
    assert_eq!(trailer, format!("2 200 {SIZE}"));
    assert_eq!(
        body,
        SIZE.to_string(),
        "upstream received every byte over h2c"
    );

    let peak = peak_rss_kib(pid);
    eprintln!("proxy peak RSS after 4 x 200 MiB: {peak} KiB");
    assert!(
        peak < RSS_LIMIT_KIB,
        "proxy peak RSS {peak} KiB after 4 x 200 MiB, limit {RSS_LIMIT_KIB} KiB"
    );
}

// --- 6. Upgrade / WebSocket passthrough -------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_passes_through_and_echoes() {
    let upstream = Upstream::start().await;
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let cfg = inbound_config(admin, listen, upstream.addr, "");
    let _proxy = blocking(move || Proxy::start(&cfg, admin)).await;

    let mut s = tokio::net::TcpStream::connect(listen).await.unwrap();
    s.write_all(
        b"GET /upgrade HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("upgrade: websocket"), "{head}");

    // After the 101 the proxy is a byte pipe, both ways, for several round trips.
    for msg in [
        &b"hello through the proxy"[..],
        &[0u8, 1, 2, 255, 254][..],
        &[b'z'; 5000][..],
    ] {
        s.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut got))
            .await
            .expect("echo within 10 s")
            .unwrap();
        assert_eq!(got, msg);
    }
    assert_eq!(upstream.hits(), 1);
}

// --- 7. Hop-by-hop headers (RFC 9110 section 7.6.1) -------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_not_forwarded() {
    let upstream = Upstream::start().await;
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let cfg = inbound_config(admin, listen, upstream.addr, "");
    let _proxy = blocking(move || Proxy::start(&cfg, admin)).await;

    let url = format!("http://{listen}/hop");
    let run = curl_async(strings(&[
        "--http1.1",
        "-H",
        "Connection: x-secret, x-other",
        "-H",
        "x-secret: 1",
        "-H",
        "x-other: 2",
        "-H",
        "Keep-Alive: timeout=5, max=100",
        "-H",
        "Proxy-Connection: keep-alive",
        "-H",
        "TE: trailers",
        "-H",
        "x-end-to-end: kept",
        &url,
    ]))
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let seen = echo(&run.stdout);
    let headers = seen["headers"].as_object().unwrap();
    for hop in ["x-secret", "x-other", "keep-alive", "proxy-connection"] {
        assert!(!headers.contains_key(hop), "{hop} was forwarded: {seen}");
    }
    if let Some(conn) = headers.get("connection") {
        let conn = conn.as_str().unwrap_or("").to_ascii_lowercase();
        assert!(!conn.contains("x-secret"), "connection forwarded: {conn}");
    }
    // Ordinary end-to-end headers still go through.
    assert_eq!(seen["headers"]["x-end-to-end"], "kept");
}
