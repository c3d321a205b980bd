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

/// Inbound on `127.0.0.1:P` and outbound on `0.0.0.0:P` cannot both be bound: the
/// wildcard takes the port on every IPv4 address. `check` and `run` refuse the file,
/// citing both lines, and nothing is bound.
#[test]
fn colliding_listener_addresses_are_refused_naming_both_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (admin, port) = (addr(free_port()), free_port());
    let text = format!(
        "admin:\n  address: {admin}\nlisteners:\n  - name: inbound\n    direction: inbound\n    address: 127.0.0.1:{port}\n    cluster: local\n  - name: outbound\n    direction: outbound\n    address: 0.0.0.0:{port}\n    cluster: local\nclusters:\n  - name: local\n    endpoints: [\"127.0.0.1:9\"]\n"
    );
    let path = write(dir.path(), &text);
    let path_s = path.to_str().unwrap();
    let line_of = |needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let (specific, wildcard) = (
        line_of(&format!("127.0.0.1:{port}")),
        line_of(&format!("0.0.0.0:{port}")),
    );
    for sub in ["check", "run"] {
        let (out, elapsed) = run(&[sub, "--config", path_s], Duration::from_secs(10));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(64), "{sub}: {err}");
        assert!(elapsed < Duration::from_secs(5), "{sub} took {elapsed:?}");
        for line in [wildcard, specific] {
            let at = format!("{}:{line}:", path.display());
            assert!(err.contains(&at), "{sub} must cite {at}:\n{err}");
        }
        assert!(err.contains("collides with listeners[0].address"), "{err}");
    }
    for a in [admin, addr(port)] {
        TcpListener::bind(a).unwrap_or_else(|e| panic!("{a} must still be free: {e}"));
    }

    // The admin API on `[::]` takes IPv4 too, so a listener on `0.0.0.0:P` collides.
    let text = format!(
        "admin:\n  address: \"[::]:{port}\"\nlisteners:\n  - name: inbound\n    direction: inbound\n    address: 0.0.0.0:{port}\n    cluster: local\nclusters:\n  - name: local\n    endpoints: [\"127.0.0.1:9\"]\n"
    );
    let path = write(dir.path(), &text);
    let (out, _) = run(
        &["check", "--config", path.to_str().unwrap()],
        Duration::from_secs(10),
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("collides with admin.address"), "{err}");
}

/// Listeners bind IPv6 with IPV6_V6ONLY, so `[::]:P` beside `0.0.0.0:P` is accepted,
/// both are bound, and each address reaches its own listener.
#[test]
fn an_ipv6_wildcard_listener_runs_beside_an_ipv4_wildcard_on_the_same_port() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        assert!(std::env::var_os("CI").is_none(), "CI needs IPv6 loopback");
        eprintln!("skipped: no IPv6 loopback here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (admin, port) = (addr(free_port()), free_port());
    let text = format!(
        "admin:\n  address: {admin}\nlisteners:\n  - name: v6\n    direction: inbound\n    address: \"[::]:{port}\"\n    cluster: local\n  - name: v4\n    direction: outbound\n    address: 0.0.0.0:{port}\n    routes: [{{authority: only.example, cluster: local}}]\nclusters:\n  - name: local\n    endpoints: [\"127.0.0.1:9\"]\n"
    );
    let path = write(dir.path(), &text);
    let mut child = Command::new(BIN)
        .args(["run", "--config", path.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn prescale");
    let ready = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        http_get(admin, "/ready").is_some_and(|r| r.starts_with("HTTP/1.1 200"))
    });
    let v6 = http_get(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)), "/");
    let v4 = http_get(addr(port), "/");
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(ready, "not ready:\n{}", stderr(&out));
    // The inbound listener forwards to the (closed) local port: a 5xx of its own.
    let v6 = v6.expect("[::1] answered");
    assert!(v6.starts_with("HTTP/1.1 5"), "{v6}");
    // The outbound listener has no route for this authority.
    let v4 = v4.expect("127.0.0.1 answered");
    assert!(v4.starts_with("HTTP/1.1 404"), "{v4}");
    assert!(v4.contains("no_route"), "{v4}");
}

/// One HTTP/1.1 GET on a new connection; the whole answer, or None.
fn http_get(to: SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// The subcommands `prescale --help` lists (without `help` itself).
fn subcommands() -> Vec<String> {
    let (out, _) = run(&["--help"], Duration::from_secs(10));
    let text = stdout(&out);
    text.lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// Each argument of a `prescale help <sub>` page: its spec line (`--name <NAME>`,
/// `<INPUT>`) and everything written under it until the next one.
fn help_entries(page: &str) -> Vec<(String, String)> {
    let mut entries: Vec<(String, String)> = Vec::new();
    let mut in_args = false;
    for line in page.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            in_args = matches!(line, "Arguments:" | "Options:");
            continue;
        }
        if !in_args {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let t = line.trim_start();
        if (2..=6).contains(&indent)
            && (t.starts_with('-') || t.starts_with('<') || t.starts_with('['))
        {
            // Short layout: the description follows the spec after two spaces.
            let (spec, rest) = t.split_once("  ").unwrap_or((t, ""));
            entries.push((spec.to_string(), rest.trim().to_string()));
        } else if let Some(e) = entries.last_mut() {
            e.1.push('\n');
            e.1.push_str(t);
        }
    }
    entries
}

/// Every option and argument of every subcommand says what it is, and names its
/// default at most once (clap's `[default: ...]` and the text's own never both, and
/// never an empty `[default: ""]`).
#[test]
fn every_option_of_every_subcommand_is_described_with_at_most_one_default() {
    let subs = subcommands();
    assert!(subs.len() >= 7, "{subs:?}");
    let mut problems = Vec::new();
    let mut seen = 0;
    for sub in &subs {
        let (out, _) = run(&["help", sub], Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(0), "help {sub}: {}", stderr(&out));
        let page = stdout(&out);
        let entries = help_entries(&page);
        assert!(
            !entries.is_empty(),
            "no options parsed from help {sub}:\n{page}"
        );
        for (spec, text) in entries {
            seen += 1;
            // What is left once defaults and the list of possible values are gone.
            let mut described = String::new();
            let mut in_values = false;
            for l in text.lines() {
                let l = l.trim();
                in_values = (in_values && l.starts_with("- ")) || l == "Possible values:";
                if in_values || l.is_empty() {
                    continue;
                }
                let cut = l.find("[default:").unwrap_or(l.len());
                described.push_str(l.get(..cut).unwrap_or(""));
            }
            if described.trim().is_empty() {
                problems.push(format!("{sub} {spec}: no description"));
            }
            let defaults = text.to_lowercase().matches("default:").count();
            if defaults > 1 {
                problems.push(format!("{sub} {spec}: {defaults} defaults: {text:?}"));
            }
            if text.contains("[default: ]") || text.contains("[default: \"\"]") {
                problems.push(format!("{sub} {spec}: an empty default is shown"));
            }
        }
    }
    assert!(seen > 60, "only {seen} options parsed");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
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
