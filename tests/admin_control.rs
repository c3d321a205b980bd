//! The admin API's control endpoints (`/reload`, `/shutdown`) through the real
//! binary: loopback through a dual-stack `[::]` socket, the bearer scheme in any case,
//! a token read from a file (a mounted Secret), and the warning and gauge when the
//! endpoints have no token while the admin API listens beyond loopback.

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;
use support::*;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// One inbound listener on a free loopback port; `admin` is the whole admin section.
fn mesh(admin: &str) -> String {
    format!(
        "admin:\n{admin}listeners:\n  - name: inbound\n    direction: inbound\n    address: {}\n    cluster: local\nclusters:\n  - name: local\n    endpoints: [\"127.0.0.1:9\"]\n",
        addr(free_port())
    )
}

/// One request on its own connection; returns (status, body).
fn call(to: SocketAddr, method: &str, path: &str, auth: Option<&str>) -> (u16, String) {
    let mut s = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(1))
        .unwrap_or_else(|e| panic!("connect {to}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = auth.map_or(String::new(), |a| format!("authorization: {a}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: admin\r\n{auth}content-length: 0\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// `prescale_admin_control_exposed` from `/metrics`.
fn exposed(admin: SocketAddr) -> Option<f64> {
    let (_, body) = call(admin, "GET", "/metrics", None);
    body.lines()
        .find(|l| l.starts_with("prescale_admin_control_exposed "))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn ipv6_available() -> bool {
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "CI needs IPv6 loopback");
    eprintln!("skipped: no IPv6 loopback here");
    false
}

/// On `[::]`, a client on 127.0.0.1 arrives as `::ffff:127.0.0.1`: still loopback.
/// The bearer scheme is matched case-insensitively (RFC 9110 §11.1); the token is not.
#[test]
fn a_dual_stack_admin_takes_mapped_loopback_and_any_case_of_bearer() {
    if !ipv6_available() {
        return;
    }
    let port = free_port();
    let yaml = mesh(&format!("  address: \"[::]:{port}\"\n  token: s3cret\n"));
    let proxy = Proxy::start(&yaml, addr(port));
    let v4 = addr(port);
    let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    for to in [v4, v6] {
        for scheme in ["Bearer", "bearer", "BEARER"] {
            let (status, body) = call(to, "POST", "/reload", Some(&format!("{scheme} s3cret")));
            assert_eq!(status, 200, "{scheme} via {to}: {body}\n{}", proxy.logs());
        }
        let (status, _) = call(to, "POST", "/reload", Some("bearer S3CRET"));
        assert_eq!(status, 401, "the token itself is case-sensitive");
        let (status, _) = call(to, "POST", "/reload", Some("Basic s3cret"));
        assert_eq!(status, 401);
        let (status, _) = call(to, "POST", "/reload", None);
        assert_eq!(status, 401);
    }
    // Beyond loopback, but guarded by a token: not exposed, no warning.
    assert_eq!(exposed(v4), Some(0.0));
    assert!(!proxy.logs().contains("have no token"), "{}", proxy.logs());
}

/// Beyond loopback without a token: a startup warning and the gauge at 1; a reload
/// that adds a token (from a file, as a mounted Secret gives it) clears the gauge,
/// and the file's token is then required.
#[test]
fn an_exposed_admin_without_token_warns_and_a_token_file_guards_it() {
    let port = free_port();
    let admin = addr(port);
    let yaml = mesh(&format!("  address: 0.0.0.0:{port}\n"));
    let proxy = Proxy::start(&yaml, admin);
    assert_eq!(exposed(admin), Some(1.0), "{}", proxy.logs());
    let logs = proxy.logs();
    assert!(
        logs.contains("WARN")
            && logs.contains("control endpoints (/reload, /shutdown) have no token"),
        "{logs}"
    );

    let token_file = proxy.dir.path().join("admin-token");
    std::fs::write(&token_file, "fr0m-a-secret\n").unwrap();
    std::fs::write(
        &proxy.config,
        yaml.replace(
            &format!("  address: 0.0.0.0:{port}\n"),
            &format!("  address: 0.0.0.0:{port}\n  token_file: admin-token\n"),
        ),
    )
    .unwrap();
    let (status, body) = call(admin, "POST", "/reload", None);
    assert_eq!(status, 200, "{body}\n{}", proxy.logs());
    assert_eq!(exposed(admin), Some(0.0));
    let (status, _) = call(admin, "POST", "/reload", None);
    assert_eq!(status, 401);
    let (status, body) = call(admin, "POST", "/reload", Some("Bearer fr0m-a-secret"));
    assert_eq!(status, 200, "{body}");
    // The token is never shown.
    let (_, config) = call(admin, "GET", "/config", None);
    assert!(!config.contains("fr0m-a-secret"), "{config}");
    assert!(!proxy.logs().contains("fr0m-a-secret"));
}

/// An unreadable or empty token file is a config error at its line, without the
/// file's content in the message.
#[test]
fn a_bad_token_file_is_refused_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty"), "  \n").unwrap();
    for (file, why) in [("absent", "cannot read"), ("empty", "1 to 4096 visible")] {
        let yaml = mesh(&format!(
            "  address: {}\n  token_file: {file}\n",
            addr(free_port())
        ));
        let path = dir.path().join("mesh.yaml");
        std::fs::write(&path, &yaml).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_prescale"))
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{err}");
        assert!(
            err.contains(&format!("{}:3:", path.display())),
            "{file}: must cite line 3: {err}"
        );
        assert!(
            err.contains("admin.token_file") && err.contains(why),
            "{err}"
        );
    }
}
