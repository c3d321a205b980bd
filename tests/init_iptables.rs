//! `prescale init-iptables` for real, in network namespaces the test creates: a pod
//! (app + sidecar, as Kubernetes lays them out) and another service it calls.
//!
//! ```text
//!  netns P (the pod)                              netns R (another service)
//!  v1 198.51.100.2/24        <── veth ──>         v0 198.51.100.1/24
//!  192.0.2.0/24 via 198.51.100.1                  192.0.2.20/32 (dummy d0, or lo)
//!  app:      nginx on 0.0.0.0:8080 (root)         remote: nginx on 192.0.2.20:8080
//!  prescale: uid 2102; inbound 0.0.0.0:4143 -> 127.0.0.1:8080,
//!            outbound 127.0.0.1:4140 (original_dst), admin 0.0.0.0:9901
//!  `prescale init-iptables --inbound-ports 8080` (nothing else touches iptables)
//! ```
//!
//! The other service lives in its own namespace because traffic to the pod's own
//! addresses leaves through `lo`, which interception deliberately leaves alone (as
//! linkerd's does). Every address is one the test created; nothing leaves the
//! namespaces. Needs root, `ip netns`, iptables, curl, nginx and setpriv: without them
//! the tests print why and pass, except under `CI=true`, where they fail.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

const POD_IP: &str = "198.51.100.2";
const REMOTE_PEER: &str = "198.51.100.1";
const REMOTE: &str = "192.0.2.20";
const APP_PORT: u16 = 8080;
const INBOUND: u16 = 4143;
const OUTBOUND: u16 = 4140;
const ADMIN_PORT: u16 = 9901;
const PROXY_UID: u32 = 2102;
/// Not the proxy: the app's own user.
const APP_UID: u32 = 1000;

/// One nginx (no master process, so killing the child stops it) answering every
/// request with JSON naming what it saw, and logging the same record.
const NGINX: &str = r#"
daemon off;
master_process off;
worker_processes 1;
pid @DIR@/nginx.pid;
error_log @DIR@/error.log warn;
events { worker_connections 64; }
http {
    client_body_temp_path @DIR@/tmp;
    proxy_temp_path @DIR@/tmp;
    fastcgi_temp_path @DIR@/tmp;
    uwsgi_temp_path @DIR@/tmp;
    scgi_temp_path @DIR@/tmp;
    log_format hits escape=json
        '{"path":"$request_uri","peer":"$remote_addr","xff":"$http_x_forwarded_for"}';
    server {
        listen @ADDR@;
        location /__ {
            access_log off;
            return 200 "ready";
        }
        location / {
            access_log @DIR@/access.log hits;
            default_type application/json;
            return 200 '{"who":"@WHO@","path":"$request_uri","peer":"$remote_addr","xff":"$http_x_forwarded_for"}';
        }
    }
}
"#;

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The namespaces and processes; processes die before the namespaces (field order).
struct Pod {
    procs: Vec<(&'static str, KillOnDrop)>,
    dir: tempfile::TempDir,
    remote: Netns,
    pod: Netns,
}

/// What a curl inside a namespace got.
struct Got {
    exit: i32,
    status: u16,
    text: String,
}

impl Got {
    fn json(&self) -> serde_json::Value {
        let body = self.text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
    }
}

impl Pod {
    /// `None` (after printing why) when this machine cannot run the test.
    fn start(test: &str) -> Option<Self> {
        let nginx = find_program("nginx");
        let nginx_name = nginx
            .as_ref()
            .map_or("nginx".into(), |p| p.display().to_string());
        if !netns_usable(test, &[&nginx_name, "setpriv"]) {
            return None;
        }
        let nginx = nginx.unwrap_or_else(|| PathBuf::from("nginx"));
        let pod = Netns::create("ipt-pod").expect("pod netns");
        let remote = Netns::create("ipt-remote").expect("remote netns");
        let dir = tempfile::tempdir().unwrap();
        // The proxy runs as its own UID and must read its config from here.
        set_mode(dir.path(), 0o755);
        let mut me = Self {
            procs: Vec::new(),
            dir,
            remote,
            pod,
        };
        me.wire();
        me.start_nginx(&nginx, "app", &format!("0.0.0.0:{APP_PORT}"), true);
        me.start_nginx(&nginx, "remote", &format!("{REMOTE}:{APP_PORT}"), false);
        me.start_proxy();
        Some(me)
    }

    fn wire(&self) {
        let (p, r) = (&self.pod, &self.remote);
        p.ip(&[
            "link", "add", "v1", "type", "veth", "peer", "name", "v0", "netns", &r.name,
        ])
        .unwrap();
        p.ip(&["addr", "add", &format!("{POD_IP}/24"), "dev", "v1"])
            .unwrap();
        r.ip(&["addr", "add", &format!("{REMOTE_PEER}/24"), "dev", "v0"])
            .unwrap();
        p.ip(&["link", "set", "v1", "up"]).unwrap();
        r.ip(&["link", "set", "v0", "up"]).unwrap();
        let dev = match r.ip(&["link", "add", "d0", "type", "dummy"]) {
            Ok(_) => {
                r.ip(&["link", "set", "d0", "up"]).unwrap();
                "d0"
            }
            Err(e) => {
                eprintln!("no dummy interface ({e}); putting {REMOTE} on lo");
                "lo"
            }
        };
        r.ip(&["addr", "add", &format!("{REMOTE}/32"), "dev", dev])
            .unwrap();
        p.ip(&["route", "add", "192.0.2.0/24", "via", REMOTE_PEER])
            .unwrap();
    }

    fn start_nginx(&mut self, nginx: &Path, who: &'static str, addr: &str, in_pod: bool) {
        let dir = self.dir.path().join(who);
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let conf = dir.join("nginx.conf");
        let text = NGINX
            .replace("@DIR@", &dir.display().to_string())
            .replace("@ADDR@", addr)
            .replace("@WHO@", who);
        std::fs::write(&conf, text).unwrap();
        std::fs::write(dir.join("access.log"), "").unwrap();
        let ns = if in_pod { &self.pod } else { &self.remote };
        let child = ns
            .command(nginx)
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
            .spawn()
            .expect("spawn nginx");
        self.procs.push((who, KillOnDrop(child)));
        let url = format!("http://{}/__ready", addr.replace("0.0.0.0", "127.0.0.1"));
        self.wait_for(who, |me| {
            let ns = if in_pod { &me.pod } else { &me.remote };
            me.curl(ns, None, &url).status == 200
        });
    }

    fn start_proxy(&mut self) {
        let config = self.dir.path().join("config.yaml");
        let yaml = format!(
            "admin:\n  address: 0.0.0.0:{ADMIN_PORT}\nruntime:\n  worker_threads: 1\ndrain:\n  grace_period: 2s\n\
             listeners:\n  - name: inbound\n    direction: inbound\n    address: 0.0.0.0:{INBOUND}\n    cluster: local\n\
             \x20 - name: outbound\n    direction: outbound\n    address: 127.0.0.1:{OUTBOUND}\n    original_dst: true\n\
             clusters:\n  - name: local\n    endpoints: [\"127.0.0.1:{APP_PORT}\"]\n"
        );
        std::fs::write(&config, yaml).unwrap();
        set_mode(&config, 0o644);
        let uid = PROXY_UID.to_string();
        let child = self
            .pod
            .command("setpriv")
            .args(["--reuid", &uid, "--regid", &uid, "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_prescale"))
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("prescale.log")).unwrap())
            .spawn()
            .expect("spawn prescale");
        self.procs.push(("prescale", KillOnDrop(child)));
        let url = format!("http://127.0.0.1:{ADMIN_PORT}/ready");
        self.wait_for("prescale", |me| me.curl(&me.pod, None, &url).status == 200);
    }

    /// Runs `prescale init-iptables` inside the pod namespace, as its init container does.
    fn init_iptables(&self, extra: &[&str]) -> std::process::Output {
        self.pod
            .command(env!("CARGO_BIN_EXE_prescale"))
            .args([
                "init-iptables",
                "--inbound-port",
                &INBOUND.to_string(),
                "--outbound-port",
                &OUTBOUND.to_string(),
                "--proxy-uid",
                &PROXY_UID.to_string(),
                "--admin-port",
                &ADMIN_PORT.to_string(),
                "--inbound-ports",
                &APP_PORT.to_string(),
            ])
            .args(extra)
            .output()
            .expect("run prescale init-iptables")
    }

    fn init_ok(&self, extra: &[&str]) {
        let out = self.init_iptables(extra);
        assert!(
            out.status.success(),
            "init-iptables failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `iptables-save -t nat` of one back end in the pod, without the timestamp comments.
    fn nat_rules(&self, save: &str) -> String {
        self.pod
            .run(save, &["-t", "nat"])
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// curl inside `ns`, as `uid` (root when `None`), 5 s bound.
    fn curl(&self, ns: &Netns, uid: Option<u32>, url: &str) -> Got {
        let mut cmd = match uid {
            Some(uid) => {
                let uid = uid.to_string();
                let mut c = ns.command("setpriv");
                c.args([
                    "--reuid",
                    &uid,
                    "--regid",
                    &uid,
                    "--clear-groups",
                    "--",
                    "curl",
                ]);
                c
            }
            None => ns.command("curl"),
        };
        let out = cmd
            .args(["-sS", "-i", "--max-time", "5", url])
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
        Got {
            exit: out.status.code().unwrap_or(-1),
            status,
            text,
        }
    }

    /// One series of the sidecar's `/metrics` (0 when absent).
    fn metric(&self, name: &str, labels: &str) -> f64 {
        let got = self.curl(
            &self.pod,
            None,
            &format!("http://127.0.0.1:{ADMIN_PORT}/metrics"),
        );
        assert_eq!((got.exit, got.status), (0, 200), "{}", got.text);
        metric_value(&got.text, name, labels).unwrap_or(0.0)
    }

    /// Waits up to 2 s for a counter to reach `want` (requests are counted just after
    /// the response).
    fn metric_settled(&self, name: &str, labels: &str, want: f64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let v = self.metric(name, labels);
            if v == want || Instant::now() > deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn requests(&self, listener: &str, want: f64) -> f64 {
        self.metric_settled(
            "prescale_requests_total",
            &format!("listener=\"{listener}\",code_class=\"2xx\""),
            want,
        )
    }

    /// What one nginx logged, waiting up to 2 s for `want` records.
    fn hits(&self, who: &str, want: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let hits: Vec<serde_json::Value> =
                std::fs::read_to_string(self.dir.path().join(who).join("access.log"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect();
            if hits.len() >= want || Instant::now() > deadline {
                return hits;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_for(&mut self, what: &str, ok: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let exited = self
                .procs
                .iter_mut()
                .find_map(|(name, p)| Some((*name, p.0.try_wait().ok()??)));
            if let Some((name, status)) = exited {
                panic!(
                    "{name} exited ({status}) while waiting for {what}\n{}",
                    self.logs()
                );
            }
            if ok(self) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what} not ready in 20 s\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn logs(&self) -> String {
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        let d = self.dir.path();
        format!(
            "--- prescale ---\n{}\n--- app ---\n{}{}\n--- remote ---\n{}{}",
            read(d.join("prescale.log")),
            read(d.join("app/access.log")),
            read(d.join("app/error.log")),
            read(d.join("remote/access.log")),
            read(d.join("remote/error.log")),
        )
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The full check on one back end: `save` is its iptables-save program.
fn intercepts_and_never_loops(pod: &Pod, save: &str, mode: &str) {
    pod.init_ok(&["--iptables-mode", mode]);
    let rules = pod.nat_rules(save);
    assert!(
        rules.contains("-A OUTPUT -p tcp -j PRESCALE_OUTBOUND"),
        "{rules}"
    );
    assert!(
        rules.contains("-A PREROUTING -p tcp -j PRESCALE_INBOUND"),
        "{rules}"
    );

    // (a) The app's plain call to another service goes through the outbound listener
    // and on to its original destination.
    let url = format!("http://{REMOTE}:{APP_PORT}/orders?id=7");
    let got = pod.curl(&pod.pod, Some(APP_UID), &url);
    assert_eq!(
        (got.exit, got.status),
        (0, 200),
        "{}\n{}",
        got.text,
        pod.logs()
    );
    let seen = got.json();
    assert_eq!(seen["who"], "remote", "{}", got.text);
    assert_eq!(seen["path"], "/orders?id=7");
    // The proxy forwarded it: it appended the app's address to x-forwarded-for.
    assert_eq!(seen["xff"], POD_IP, "not proxied: {}", got.text);
    assert_eq!(pod.requests("outbound", 1.0), 1.0, "{}", pod.logs());
    assert_eq!(
        pod.metric_settled(
            "prescale_upstream_requests_total",
            "cluster=\"outbound-passthrough\",code_class=\"2xx\"",
            1.0
        ),
        1.0
    );
    // (b) ...and the proxy's own connection to 192.0.2.20 was not redirected back to
    // itself: one request at the proxy, one at the service.
    assert_eq!(pod.hits("remote", 1).len(), 1, "{}", pod.logs());

    // (b) A connection made by the proxy's UID is never redirected.
    let direct = format!("http://{REMOTE}:{APP_PORT}/as-proxy-uid");
    let got = pod.curl(&pod.pod, Some(PROXY_UID), &direct);
    assert_eq!((got.exit, got.status), (0, 200), "{}", got.text);
    assert_eq!(
        got.json()["xff"],
        "",
        "proxy UID was redirected: {}",
        got.text
    );
    let hits = pod.hits("remote", 2);
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert_eq!(hits[1]["path"], "/as-proxy-uid");
    assert_eq!(pod.requests("outbound", 1.0), 1.0, "{}", pod.logs());

    // Pod-local traffic is left alone: the app reaching itself over loopback.
    let local = format!("http://127.0.0.1:{APP_PORT}/local");
    let got = pod.curl(&pod.pod, Some(APP_UID), &local);
    assert_eq!(got.json()["xff"], "", "{}", got.text);

    // Inbound: a client in the other namespace calls the pod's app port and lands on
    // the inbound listener, which hands it to the app.
    let inbound = format!("http://{POD_IP}:{APP_PORT}/inbound");
    let got = pod.curl(&pod.remote, None, &inbound);
    assert_eq!(
        (got.exit, got.status),
        (0, 200),
        "{}\n{}",
        got.text,
        pod.logs()
    );
    let seen = got.json();
    assert_eq!(seen["who"], "app", "{}", got.text);
    assert_eq!(seen["xff"], REMOTE_PEER, "not proxied: {}", got.text);
    assert_eq!(seen["peer"], "127.0.0.1", "{}", got.text);
    assert_eq!(pod.requests("inbound", 1.0), 1.0, "{}", pod.logs());
    // The admin port is excluded: the admin API itself answers, not the app.
    let got = pod.curl(
        &pod.remote,
        None,
        &format!("http://{POD_IP}:{ADMIN_PORT}/ready"),
    );
    assert_eq!(got.status, 200, "{}", got.text);
    assert!(got.text.ends_with("ready\n"), "{}", got.text);

    // (c) A second run leaves exactly the same rules, and everything still works.
    pod.init_ok(&["--iptables-mode", mode]);
    assert_eq!(pod.nat_rules(save), rules, "second run changed the rules");
    let got = pod.curl(&pod.pod, Some(APP_UID), &url);
    assert_eq!((got.exit, got.status), (0, 200), "{}", got.text);
    assert_eq!(pod.requests("outbound", 2.0), 2.0, "{}", pod.logs());
    assert_eq!(pod.hits("remote", 3).len(), 3);

    // --dry-run prints exactly the rules a run applies.
    let out = pod.init_iptables(&["--dry-run"]);
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    for line in printed.lines().filter(|l| l.starts_with("-A ")) {
        assert!(
            rules.lines().any(|r| r == line),
            "dry-run line not applied as printed: {line}\n--- applied ---\n{rules}"
        );
    }
    let applied = rules.lines().filter(|l| l.contains("PRESCALE_")).count();
    let declared = printed.lines().filter(|l| l.contains("PRESCALE_")).count();
    assert_eq!(applied, declared, "{rules}\n---\n{printed}");
}

#[test]
fn nft_backend_intercepts_the_app_and_never_the_proxy() {
    let Some(pod) = Pod::start("nft_backend_intercepts_the_app_and_never_the_proxy") else {
        return;
    };
    if find_program("iptables-nft-save").is_none() {
        require::unmet(
            "nft_backend_intercepts_the_app_and_never_the_proxy",
            "iptables-nft is not installed",
        );
        return;
    }
    intercepts_and_never_loops(&pod, "iptables-nft-save", "nft");
}

#[test]
fn legacy_backend_intercepts_the_app_and_never_the_proxy() {
    let Some(pod) = Pod::start("legacy_backend_intercepts_the_app_and_never_the_proxy") else {
        return;
    };
    if find_program("iptables-legacy-save").is_none() {
        require::unmet(
            "legacy_backend_intercepts_the_app_and_never_the_proxy",
            "iptables-legacy is not installed",
        );
        return;
    }
    intercepts_and_never_loops(&pod, "iptables-legacy-save", "legacy");
}

#[test]
fn auto_mode_follows_the_back_end_that_holds_rules() {
    let Some(pod) = Pod::start("auto_mode_follows_the_back_end_that_holds_rules") else {
        return;
    };
    if find_program("iptables-legacy").is_none() || find_program("iptables-nft").is_none() {
        require::unmet(
            "auto_mode_follows_the_back_end_that_holds_rules",
            "needs both iptables-legacy and iptables-nft",
        );
        return;
    }
    // Something (say, the CNI) already put rules into the legacy tables.
    pod.pod
        .run(
            "iptables-legacy",
            &[
                "-w", "-t", "filter", "-A", "INPUT", "-p", "udp", "--dport", "9", "-j", "DROP",
            ],
        )
        .unwrap();
    let out = pod.init_iptables(&[]);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    assert!(log.contains("Legacy"), "{log}");
    assert!(pod
        .nat_rules("iptables-legacy-save")
        .contains("PRESCALE_OUTBOUND"));
    assert!(!pod
        .nat_rules("iptables-nft-save")
        .contains("PRESCALE_OUTBOUND"));
}

#[test]
fn clear_errors_without_privileges_or_with_bad_arguments() {
    let bin = env!("CARGO_BIN_EXE_prescale");
    // Bad arguments exit 64 before touching anything (no root needed).
    let out = Command::new(bin)
        .args([
            "init-iptables",
            "--exclude-outbound-cidrs",
            "fd00::/129",
            "--dry-run",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "clap rejects the value");
    assert!(String::from_utf8_lossy(&out.stderr).contains("0-128"));
    // IPv6 networks are fine, and with --ipv6 go to the ip6tables rules only.
    let out = Command::new(bin)
        .args([
            "init-iptables",
            "--ipv6",
            "--exclude-outbound-cidrs",
            "fd00::/8,10.0.0.0/8",
            "--dry-run",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let (v4, v6) = text
        .split_once("(ip6tables-restore)")
        .expect("a second, ip6tables, rule set");
    assert!(
        v4.contains("-d 10.0.0.0/8 ") && !v4.contains("fd00::/8"),
        "{text}"
    );
    assert!(
        v6.contains("-d fd00::/8 ") && !v6.contains("10.0.0.0/8"),
        "{text}"
    );
    assert!(
        v6.contains("-d ::1/128 ") && v6.contains("COMMIT"),
        "{text}"
    );
    let out = Command::new(bin)
        .args(["init-iptables", "--proxy-uid", "0", "--dry-run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--proxy-uid 0"));

    // Not root: refused with a reason, nothing run. (Skipped when setpriv is missing
    // or we are not root to begin with.)
    let euid_root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        .unwrap_or(false);
    if !euid_root || find_program("setpriv").is_none() {
        require::unmet(
            "clear_errors_without_privileges_or_with_bad_arguments (the not-root half)",
            "needs root and setpriv to drop privileges",
        );
        return;
    }
    let out = Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
            bin,
        ])
        .arg("init-iptables")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("must run as root"), "{err}");
    assert!(err.contains("euid is 65534"), "{err}");
}
