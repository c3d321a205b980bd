//! HTTP/1.1 response trailers through the real binary: a real HTTP/1.1 upstream
//! (Python's http.server, tests/peers/trailers_server.py) ends its chunked body with
//! `x-checksum: abc123`; an HTTP/1.1 client (raw socket and curl) must see it after the
//! last chunk and an HTTP/2 client (nghttp, h2c) in a trailing HEADERS frame.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use support::peers::{python_usable, start_server};
use support::raw::RawConn;
use support::*;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The trailer server and prescale in front of it; `None` when python3 is missing
/// outside CI (python_usable printed why).
fn proxy_in_front_of_trailer_server(test: &str) -> Option<(KillOnDrop, Proxy, SocketAddr)> {
    if !python_usable(test, &["http.server"]) {
        return None;
    }
    let up_port = free_port();
    let server = start_server("trailers_server.py", &[&up_port.to_string()]);
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let proxy = Proxy::start(&inbound_config(admin, listen, addr(up_port), ""), admin);
    Some((server, proxy, listen))
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new("timeout")
        .arg("30")
        .arg(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} is installed (scripts/install-deps): {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{program} {args:?} failed: {text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_trailers_reach_an_h1_client_after_the_last_chunk() {
    let test = "h1_trailers_reach_an_h1_client_after_the_last_chunk";
    let Some((_server, proxy, listen)) =
        tokio::task::spawn_blocking(move || proxy_in_front_of_trailer_server(test))
            .await
            .unwrap()
    else {
        return;
    };

    let mut conn = RawConn::connect(listen).await;
    conn.send(b"GET /sum HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n")
        .await;
    let resp = conn
        .response()
        .await
        .unwrap_or_else(|| panic!("no whole response; proxy log:\n{}", proxy.logs()));
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body, b"hello world", "{resp:?}");
    assert_eq!(
        resp.trailers,
        "x-checksum: abc123",
        "the trailer section after the last chunk: {resp:?}\nproxy log:\n{}",
        proxy.logs()
    );
    // The message ended where the trailers say: the connection carries the next request.
    conn.send(b"GET /again HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let again = conn.response().await.expect("a second response");
    assert_eq!(again.trailers, "x-checksum: abc123", "{again:?}");

    // curl --raw prints the chunked framing as received, trailer included.
    let url = format!("http://{listen}/sum");
    let raw = tokio::task::spawn_blocking(move || run("curl", &["-sS", "--raw", &url]))
        .await
        .unwrap();
    assert!(
        raw.contains("0\r\nx-checksum: abc123\r\n\r\n"),
        "curl --raw shows the trailer after the last chunk: {raw:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_trailers_reach_an_h2_client_in_a_trailing_headers_frame() {
    let test = "h1_trailers_reach_an_h2_client_in_a_trailing_headers_frame";
    let Some((_server, proxy, listen)) =
        tokio::task::spawn_blocking(move || proxy_in_front_of_trailer_server(test))
            .await
            .unwrap()
    else {
        return;
    };
    // nghttp speaks h2c with prior knowledge to an http:// URL; -v prints every frame
    // and the fields of each HEADERS frame before the frame itself.
    let url = format!("http://{listen}/sum");
    let out = tokio::task::spawn_blocking(move || run("nghttp", &["-v", &url]))
        .await
        .unwrap();
    let lines: Vec<&str> = out.lines().collect();
    let last_data = lines
        .iter()
        .rposition(|l| l.contains("recv DATA frame"))
        .unwrap_or_else(|| panic!("no DATA frame: {out}"));
    let trailer = lines
        .iter()
        .rposition(|l| l.contains("recv (stream_id=") && l.ends_with(") x-checksum: abc123"))
        .unwrap_or_else(|| panic!("no x-checksum field: {out}\nproxy log:\n{}", proxy.logs()));
    assert!(
        trailer > last_data,
        "x-checksum comes in a HEADERS frame after the body: {out}"
    );
    let frame = lines[trailer..]
        .iter()
        .position(|l| l.contains("recv HEADERS frame"))
        .map(|i| lines[trailer + i..].join("\n"))
        .unwrap_or_else(|| panic!("no HEADERS frame after the trailer field: {out}"));
    assert!(
        frame.lines().take(2).any(|l| l.contains("END_STREAM")),
        "the trailing HEADERS frame ends the stream: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_or_hop_by_hop_trailers_are_dropped_and_the_response_still_arrives() {
    let test = "bad_or_hop_by_hop_trailers_are_dropped_and_the_response_still_arrives";
    let Some((_server, proxy, listen)) =
        tokio::task::spawn_blocking(move || proxy_in_front_of_trailer_server(test))
            .await
            .unwrap()
    else {
        return;
    };
    let mut conn = RawConn::connect(listen).await;
    // A trailer line that is not a field: the body was framed correctly, so the
    // response is delivered whole and the trailer discarded (RFC 9110 §6.5.1).
    conn.send(b"GET /malformed HTTP/1.1\r\nHost: a\r\n\r\n")
        .await;
    let resp = conn
        .response()
        .await
        .unwrap_or_else(|| panic!("no whole response; proxy log:\n{}", proxy.logs()));
    assert_eq!((resp.status, &resp.body[..]), (200, &b"hello world"[..]));
    assert_eq!(resp.trailers, "", "{resp:?}");

    // A framing field is not forwarded as a trailer; the others are.
    conn.send(b"GET /framing HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let resp = conn
        .response()
        .await
        .expect("a response on the same connection");
    assert_eq!(resp.trailers, "x-checksum: abc123", "{resp:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_upstream_trailers_reach_an_h1_client_that_sent_te_trailers() {
    // A real h2c upstream (Python grpcio, tests/peers/grpc_server.py) ends each unary
    // call with trailers (grpc-status, x-trailer); an HTTP/1.1 client that sent
    // `TE: trailers` gets them after the last chunk.
    let test = "h2_upstream_trailers_reach_an_h1_client_that_sent_te_trailers";
    if !python_usable(test, &["grpc"]) {
        return;
    }
    let up_port = free_port();
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let cfg = format!(
        "admin:\n  address: {admin}\nlisteners:\n  - {{name: inbound, direction: inbound, address: \"{listen}\", cluster: grpc}}\nclusters:\n  - {{name: grpc, endpoints: [\"{}\"], protocol: h2c}}\n",
        addr(up_port)
    );
    let (_server, proxy) = tokio::task::spawn_blocking(move || {
        let server = start_server("grpc_server.py", &[&up_port.to_string(), "0"]);
        (server, Proxy::start(&cfg, admin))
    })
    .await
    .unwrap();

    let mut conn = RawConn::connect(listen).await;
    // One gRPC message: uncompressed flag, 4-byte length, the raw bytes the server echoes.
    conn.send(
        b"POST /conformance.Echo/Unary HTTP/1.1\r\nHost: a\r\nContent-Type: application/grpc\r\n\
          TE: trailers\r\nContent-Length: 10\r\n\r\n\x00\x00\x00\x00\x05hello",
    )
    .await;
    let resp = conn
        .response()
        .await
        .unwrap_or_else(|| panic!("no whole response; proxy log:\n{}", proxy.logs()));
    assert_eq!(resp.status, 200, "{resp:?}\nproxy log:\n{}", proxy.logs());
    assert_eq!(resp.body, b"\x00\x00\x00\x00\x05hello", "{resp:?}");
    let trailers: Vec<&str> = resp.trailers.lines().collect();
    assert!(
        trailers.contains(&"grpc-status: 0") && trailers.contains(&"x-trailer: t-value"),
        "gRPC trailers after the last chunk: {resp:?}\nproxy log:\n{}",
        proxy.logs()
    );
}
