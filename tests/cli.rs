//! The command line of the real binary: version and help, `check`, and `run` refusing
//! bad configs and taken ports with a clear message and the right exit code.

mod support;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_prescale");

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/sidecar.yaml")
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Runs the binary to completion, killing it if it outlives `limit`.
fn run(args: &[&str], limit: Duration) -> (Output, Duration) {
    let start = Instant::now();
    let mut child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn prescale");
    while child.try_wait().expect("try_wait").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "prescale {args:?} still running after {limit:?}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed = start.elapsed();
    (child.wait_with_output().unwrap(), elapsed)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A valid config on free ports, with `cluster:` typo'd as `clustr:` when `typo` is set.
/// Returns the text and the 1-based line of the (possibly typo'd) key.
fn config(admin: SocketAddr, listen: SocketAddr, typo: bool) -> (String, usize) {
    let key = if typo { "clustr" } else { "cluster" };
    let text = format!(
        "admin:\n  address: {admin}\ndrain:\n  grace_period: 10s\nlisteners:\n  - name: inbound\n    direction: inbound\n    address: {listen}\n    {key}: local\nclusters:\n  - name: local\n    endpoints: [\"127.0.0.1:9\"]\n"
    );
    (text, 9)
}

fn write(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("mesh.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn version_prints_name_and_version() {
    let (out, _) = run(&["--version"], Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        format!("prescale {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_lists_the_subcommands() {
    let (out, _) = run(&["--help"], Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("Usage: prescale"), "{text}");
    for word in ["run", "check", "--version", "--help"] {
        assert!(text.contains(word), "help must mention {word}:\n{text}");
    }
    let (out, _) = run(&["run", "--help"], Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("--config"), "{}", stdout(&out));
}

#[test]
fn no_subcommand_is_a_usage_error() {
    let (out, _) = run(&[], Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(2), "clap's usage error code");
    assert!(stderr(&out).contains("Usage"), "{}", stderr(&out));
}

#[test]
fn check_accepts_the_shipped_example() {
    let path = example();
    let (out, _) = run(
        &["check", "--config", path.to_str().unwrap()],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("sidecar.yaml: ok"), "{text}");
    assert!(text.contains("2 listeners, 2 clusters"), "{text}");
}

#[test]
fn check_rejects_a_typo_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let (text, line) = config(addr(free_port()), addr(free_port()), true);
    let path = write(dir.path(), &text);
    let (out, _) = run(
        &["check", "--config", path.to_str().unwrap()],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    let err = stderr(&out);
    let expected = format!("error: {}:{line}:", path.display());
    assert!(err.contains(&expected), "want {expected:?} in:\n{err}");
    assert!(err.contains("unknown field `clustr`"), "{err}");
    assert!(
        stdout(&out).is_empty(),
        "nothing on stdout: {}",
        stdout(&out)
    );
}

#[test]
fn check_rejects_a_semantic_error_with_path_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let (text, line) = config(addr(free_port()), addr(free_port()), false);
    let text = text.replace("    cluster: local", "    cluster: remote");
    let path = write(dir.path(), &text);
    let (out, _) = run(
        &["check", "--config", path.to_str().unwrap()],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{}:{line}:", path.display())),
        "{err}"
    );
    assert!(err.contains("listeners[0].cluster"), "{err}");
    assert!(err.contains("unknown cluster \"remote\""), "{err}");
}

#[test]
fn check_on_a_missing_file_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.yaml");
    let (out, _) = run(
        &["check", "--config", path.to_str().unwrap()],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{}: cannot read", path.display())),
        "{err}"
    );
}

#[test]
fn run_with_a_bad_config_exits_64_without_binding() {
    let dir = tempfile::tempdir().unwrap();
    let (admin, listen) = (addr(free_port()), addr(free_port()));
    let (text, line) = config(admin, listen, true);
    let path = write(dir.path(), &text);
    let path_s = path.to_str().unwrap();

    let (check, _) = run(&["check", "--config", path_s], Duration::from_secs(10));
    let (out, elapsed) = run(&["run", "--config", path_s], Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("error: {}:{line}:", path.display())),
        "{err}"
    );
    // The same message `check` gives.
    let first = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("error: "))
            .map(str::to_string)
    };
    assert_eq!(first(&err), first(&stderr(&check)));
    assert!(first(&err).is_some());
    // It stopped at the config: nothing was started or listened on.
    assert!(!err.contains("admin API listening"), "{err}");
    assert!(!err.contains("ready"), "{err}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    for a in [admin, listen] {
        assert!(
            TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_err(),
            "{a} is listening"
        );
        TcpListener::bind(a).unwrap_or_else(|e| panic!("{a} must still be free: {e}"));
    }
}

#[test]
fn run_with_a_taken_listener_port_exits_quickly_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap();
    let admin = addr(free_port());
    let (text, _) = config(admin, listen, false);
    let path = write(dir.path(), &text);
    let (out, elapsed) = run(
        &["run", "--config", path.to_str().unwrap()],
        Duration::from_secs(10),
    );
    let err = stderr(&out);
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}:\n{err}");
    let code = out.status.code();
    assert!(code.is_some() && code != Some(0), "exit {code:?}:\n{err}");
    assert_ne!(code, Some(64), "the config was fine:\n{err}");
    assert!(
        err.contains(&listen.to_string()),
        "must name {listen}:\n{err}"
    );
    assert!(err.contains("listener inbound"), "{err}");
    assert!(
        err.to_lowercase().contains("address already in use"),
        "{err}"
    );
    // Nothing else was left behind: the admin port was released with the process.
    TcpListener::bind(admin).expect("admin port free after exit");
}

#[test]
fn run_with_a_taken_admin_port_exits_quickly_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = taken.local_addr().unwrap();
    let (text, _) = config(admin, addr(free_port()), false);
    let path = write(dir.path(), &text);
    let (out, elapsed) = run(
        &["run", "--config", path.to_str().unwrap()],
        Duration::from_secs(10),
    );
    let err = stderr(&out);
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}:\n{err}");
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&admin.to_string()),
        "must name {admin}:\n{err}"
    );
    assert!(err.contains("admin"), "{err}");
}

/// `prescale run` with no `--config`, from a directory holding no config at all: the
/// built-in default (the example, compiled in) is used, the first log line says so,
/// the example's own addresses serve, a reload re-applies it, and `/shutdown` ends it.
/// Binds the example's fixed ports (admin 9901, listeners 4143 and 4140).
#[test]
fn run_without_config_uses_the_built_in_example_and_says_so_first() {
    use support::{admin_get, admin_request};
    let dir = tempfile::tempdir().unwrap();
    let example: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(example()).unwrap()).unwrap();
    let admin: SocketAddr = example["admin"]["address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let listeners: Vec<SocketAddr> = example["listeners"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|l| l["address"].as_str().unwrap().parse().unwrap())
        .collect();
    for a in std::iter::once(admin).chain(listeners.iter().copied()) {
        TcpListener::bind(a).unwrap_or_else(|e| {
            panic!("{a}: the example's address must be free on this machine: {e}")
        });
    }
    let log = dir.path().join("stderr.log");
    let mut child = Command::new(BIN)
        .arg("run")
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn prescale run");
    let deadline = Instant::now() + Duration::from_secs(20);
    while admin_get(admin, "/ready").map(|(s, _)| s) != Some(200) {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "prescale run exited {status}:\n{}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        assert!(Instant::now() < deadline, "not ready in 20 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let first = text.lines().next().unwrap_or_default();
    assert!(
        first.contains("built-in default config") && first.contains("deploy/examples/sidecar.yaml"),
        "first log line: {first}\n{text}"
    );

    // The effective config is the example's: its listeners, on its addresses, serving.
    let (status, body) = admin_get(admin, "/config").unwrap();
    assert_eq!(status, 200, "{body}");
    let cfg: serde_json::Value = serde_json::from_str(&body).unwrap();
    let served: Vec<SocketAddr> = cfg["config"]["listeners"]
        .as_array()
        .unwrap_or_else(|| panic!("no listeners in /config: {body}"))
        .iter()
        .map(|l| l["address"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(served, listeners);
    for a in &listeners {
        TcpStream::connect_timeout(a, Duration::from_secs(1))
            .unwrap_or_else(|e| panic!("{a} must accept: {e}"));
    }

    // A reload has no file to read: it parses the built-in text again.
    let (status, body) = admin_request(admin, "POST", "/reload").unwrap();
    assert_eq!(status, 200, "{body}");
    let outcome: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(outcome["generation"], 2, "{body}");
    assert_eq!(outcome["restart_required"], serde_json::json!([]), "{body}");

    let (status, body) = admin_request(admin, "POST", "/shutdown").unwrap();
    assert!((200..300).contains(&status), "{status} {body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running 30 s after /shutdown");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit {status}");
}
