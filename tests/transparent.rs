//! Transparent interception for real: iptables REDIRECT in a network namespace sends a
//! client's connection to the outbound listener, which forwards it to the connection's
//! SO_ORIGINAL_DST.
//!
//! Topology, all of it created by the test and removed on drop:
//!
//! ```text
//!  netns C (client)                     netns P (proxy + service)
//!  v0 198.51.100.1/24  <── veth ──>     v1 198.51.100.2/24
//!  192.0.2.0/24 via 198.51.100.2        192.0.2.10/32 (dummy d0, or lo without the module)
//!                                       upstream: nginx on 192.0.2.10:8080
//!                                       prescale: outbound 0.0.0.0:15001, original_dst
//!                                                 admin 127.0.0.1:15000
//!                                       nat PREROUTING tcp dport 8080 -> REDIRECT 15001
//! ```
//!
//! The dual-stack lab adds IPv6 beside it, with the rules set by the real
//! `prescale init-iptables --ipv6` (inbound chain on port 15001) instead of one
//! hand-written rule:
//!
//! ```text
//!  v0 fd00:100::1/64   <── veth ──>     v1 fd00:100::2/64
//!  fd00:200::/64 via fd00:100::2        fd00:200::10/128 (same dummy)
//!                                       upstream: nginx on both service addresses
//!                                       prescale: outbound 0.0.0.0:15001 and [::]:15001
//! ```
//!
//! Needs root, `ip netns`, iptables (ip6tables for the dual-stack lab), curl and nginx.
//! Without them the tests print why and pass, except under `CI=true`, where they fail.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::*;

const SERVICE: &str = "192.0.2.10";
const CLIENT_IP: &str = "198.51.100.1";
const PROXY_IP: &str = "198.51.100.2";
const LISTENER_PORT: u16 = 15001;
const ADMIN: &str = "127.0.0.1:15000";
/// In the upstream's every body, so the client can tell it from anything else.
const MARKER: &str = "upstream-192-0-2-10-says-hello";
const SERVICE6: &str = "fd00:200::10";
const CLIENT_IP6: &str = "fd00:100::1";
const PROXY_IP6: &str = "fd00:100::2";

/// The upstream: one nginx process (no master, so killing the child stops it all)
/// answering every request with JSON naming the peer and `x-forwarded-for` it saw, and
/// logging the same record (paths under `/__` are neither logged nor counted).
const UPSTREAM_NGINX: &str = r#"
daemon off;
master_process off;
worker_processes 1;
pid @DIR@/nginx.pid;
error_log @DIR@/nginx-error.log warn;
events { worker_connections 256; }
http {
    client_body_temp_path @DIR@/tmp;
    proxy_temp_path @DIR@/tmp;
    fastcgi_temp_path @DIR@/tmp;
    uwsgi_temp_path @DIR@/tmp;
    scgi_temp_path @DIR@/tmp;
    log_format hits escape=json
        '{"path":"$request_uri","peer":"$remote_addr","xff":"$http_x_forwarded_for"}';
    server {
        @LISTEN@
        location /__ {
            access_log off;
            return 200 "ready";
        }
        location / {
            access_log @LOG@ hits;
            default_type application/json;
            return 200 '{"path":"$request_uri","peer":"$remote_addr","xff":"$http_x_forwarded_for","marker":"@MARKER@"}';
        }
    }
}
"#;

/// A program from PATH or the sbin directories (nginx lives in /usr/sbin on Debian,
/// which is not always on PATH).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The namespaces, the upstream and the proxy. Processes are killed before the
/// namespaces are deleted (field order), on success and on panic alike.
struct Lab {
    procs: Vec<KillOnDrop>,
    /// IPv6 beside IPv4, intercepted by `prescale init-iptables --ipv6`.
    dual: bool,
    dir: tempfile::TempDir,
    proxy_log: PathBuf,
    upstream_log: PathBuf,
    client: Netns,
    pod: Netns,
}

impl Lab {
    /// `None` (after printing why) when this machine cannot run the test.
    fn start(test: &str) -> Option<Self> {
        Self::start_with(test, false)
    }

    /// The lab with IPv6 beside IPv4 (see the module doc).
    fn start_dual(test: &str) -> Option<Self> {
        Self::start_with(test, true)
    }

    fn start_with(test: &str, dual: bool) -> Option<Self> {
        let nginx = find_program("nginx");
        let nginx_name = nginx
            .as_ref()
            .map_or("nginx".into(), |p| p.display().to_string());
        let mut needs = vec![nginx_name.as_str()];
        if dual {
            needs.push("ip6tables");
        }
        if !netns_usable(test, &needs) {
            return None;
        }
        let client = Netns::create("c").expect("client netns");
        let pod = Netns::create("p").expect("proxy netns");
        let dir = tempfile::tempdir().unwrap();
        let mut lab = Self {
            procs: Vec::new(),
            dual,
            proxy_log: dir.path().join("prescale.log"),
            upstream_log: dir.path().join("upstream.log"),
            dir,
            client,
            pod,
        };
        lab.wire();
        if dual {
            lab.wire_ipv6();
        }
        lab.start_upstream(&nginx.unwrap_or_else(|| PathBuf::from("nginx")));
        lab.start_proxy();
        Some(lab)
    }

    fn wire(&self) {
        let (c, p) = (&self.client, &self.pod);
        // Created inside C with its peer inside P: no interface ever exists in the
        // host namespace.
        c.ip(&[
            "link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns", &p.name,
        ])
        .unwrap();
        c.ip(&["addr", "add", &format!("{CLIENT_IP}/24"), "dev", "v0"])
            .unwrap();
        p.ip(&["addr", "add", &format!("{PROXY_IP}/24"), "dev", "v1"])
            .unwrap();
        c.ip(&["link", "set", "v0", "up"]).unwrap();
        p.ip(&["link", "set", "v1", "up"]).unwrap();
        let service = format!("{SERVICE}/32");
        // Some kernels (containers) have no dummy module; lo holds the address as well.
        let dev = match p.ip(&["link", "add", "d0", "type", "dummy"]) {
            Ok(_) => {
                p.ip(&["link", "set", "d0", "up"]).unwrap();
                "d0"
            }
            Err(e) => {
                eprintln!("no dummy interface ({e}); putting {SERVICE} on lo");
                "lo"
            }
        };
        p.ip(&["addr", "add", &service, "dev", dev]).unwrap();
        c.ip(&["route", "add", "192.0.2.0/24", "via", PROXY_IP])
            .unwrap();
        if self.dual {
            // The dual-stack lab's rules come from `init-iptables` (`wire_ipv6`).
            return;
        }
        let port = LISTENER_PORT.to_string();
        p.run(
            "iptables",
            &[
                "-t",
                "nat",
                "-A",
                "PREROUTING",
                "-p",
                "tcp",
                "--dport",
                "8080",
                "-j",
                "REDIRECT",
                "--to-ports",
                &port,
            ],
        )
        .unwrap();
    }

    /// IPv6 addresses beside the IPv4 ones, and interception of both families by the
    /// real `prescale init-iptables --ipv6`: PREROUTING TCP (but the admin port) goes to
    /// the listener port.
    fn wire_ipv6(&self) {
        let (c, p) = (&self.client, &self.pod);
        // `nodad`: usable at once, not after duplicate address detection.
        c.ip(&[
            "addr",
            "add",
            &format!("{CLIENT_IP6}/64"),
            "dev",
            "v0",
            "nodad",
        ])
        .unwrap();
        p.ip(&[
            "addr",
            "add",
            &format!("{PROXY_IP6}/64"),
            "dev",
            "v1",
            "nodad",
        ])
        .unwrap();
        let dev = if p.ip(&["link", "show", "d0"]).is_ok() {
            "d0"
        } else {
            "lo"
        };
        p.ip(&[
            "addr",
            "add",
            &format!("{SERVICE6}/128"),
            "dev",
            dev,
            "nodad",
        ])
        .unwrap();
        c.ip(&["route", "add", "fd00:200::/64", "via", PROXY_IP6])
            .unwrap();
        let out = self
            .pod
            .command(env!("CARGO_BIN_EXE_prescale"))
            .args([
                "init-iptables",
                "--ipv6",
                "--no-outbound",
                "--inbound-port",
                &LISTENER_PORT.to_string(),
                "--admin-port",
                "15000",
            ])
            .output()
            .expect("run prescale init-iptables");
        assert!(
            out.status.success(),
            "init-iptables --ipv6 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for save in ["iptables-save", "ip6tables-save"] {
            let rules = p.run(save, &["-t", "nat"]).unwrap();
            assert!(
                rules.contains("-A PREROUTING -p tcp -j PRESCALE_INBOUND")
                    && rules.contains("--to-ports 15001"),
                "{save}:\n{rules}"
            );
        }
    }

    fn start_upstream(&mut self, nginx: &Path) {
        let dir = self.dir.path().join("upstream");
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let conf = dir.join("nginx.conf");
        let text = UPSTREAM_NGINX
            .replace("@DIR@", &dir.display().to_string())
            .replace("@LISTEN@", &{
                let mut l = format!("listen {SERVICE}:8080;");
                if self.dual {
                    l += &format!(" listen [{SERVICE6}]:8080;");
                }
                l
            })
            .replace("@LOG@", &self.upstream_log.display().to_string())
            .replace("@MARKER@", MARKER);
        std::fs::write(&conf, text).unwrap();
        std::fs::write(&self.upstream_log, "").unwrap();
        let child = self
            .pod
            .command(nginx)
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("nginx-error.log"))
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
            .spawn()
            .expect("spawn nginx upstream");
        self.procs.push(KillOnDrop(child));
        let url = format!("http://{SERVICE}:8080/__ready");
        self.wait_for("upstream", |lab| lab.pod.curl(&[&url]).1 == 200);
    }

    fn start_proxy(&mut self) {
        let config = self.dir.path().join("config.yaml");
        let mut yaml = format!(
            "admin:\n  address: {ADMIN}\nruntime:\n  worker_threads: 1\ndrain:\n  grace_period: 5s\n\
             listeners:\n  - name: outbound\n    direction: outbound\n    address: 0.0.0.0:{LISTENER_PORT}\n    original_dst: true\n"
        );
        if self.dual {
            // Beside the IPv4 listener on the same port: IPv6 only.
            yaml += &format!(
                "  - name: outbound6\n    direction: outbound\n    address: \"[::]:{LISTENER_PORT}\"\n    original_dst: true\n"
            );
        }
        std::fs::write(&config, yaml).unwrap();
        let child = self
            .pod
            .command(env!("CARGO_BIN_EXE_prescale"))
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&self.proxy_log).unwrap())
            .spawn()
            .expect("spawn prescale");
        self.procs.push(KillOnDrop(child));
        let url = format!("http://{ADMIN}/ready");
        self.wait_for("prescale", |lab| lab.pod.curl(&[&url]).1 == 200);
    }

    /// Polls `ok` for at most 20 s; panics with the logs if it never holds or a process
    /// died.
    fn wait_for(&mut self, what: &str, ok: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for p in &mut self.procs {
                if let Ok(Some(status)) = p.0.try_wait() {
                    panic!(
                        "a process exited ({status}) while waiting for {what}\n{}",
                        self.logs()
                    );
                }
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
        format!(
            "--- prescale log ---\n{}\n--- upstream access log ---\n{}\n--- upstream error log ---\n{}",
            std::fs::read_to_string(&self.proxy_log).unwrap_or_default(),
            std::fs::read_to_string(&self.upstream_log).unwrap_or_default(),
            std::fs::read_to_string(self.dir.path().join("upstream/nginx-error.log"))
                .unwrap_or_default()
        )
    }

    /// What the upstream logged, waiting up to 2 s for `want` records: nginx writes its
    /// access log just after the response.
    fn upstream_hits_settled(&self, want: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let hits = self.upstream_hits();
            if hits.len() == want || Instant::now() > deadline {
                return hits;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the upstream logged, one JSON record per request.
    fn upstream_hits(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.upstream_log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("upstream log line"))
            .collect()
    }

    /// One series of the proxy's `/metrics` (0 when absent).
    fn metric(&self, name: &str, labels: &str) -> f64 {
        let url = format!("http://{ADMIN}/metrics");
        let (code, status, text) = self.pod.curl(&[&url]);
        assert_eq!((code, status), (0, 200), "metrics: {text}");
        metric_value(&text, name, labels).unwrap_or(0.0)
    }

    /// Like `metric`, but waits up to 2 s for the value to become `want`: the proxy
    /// counts a request in its logging phase, just after the client got the response.
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

    fn requests_settled(&self, class: &str, want: f64) -> f64 {
        self.metric_settled(
            "prescale_requests_total",
            &format!("listener=\"outbound\",code_class=\"{class}\""),
            want,
        )
    }

    fn requests(&self, class: &str) -> f64 {
        self.metric(
            "prescale_requests_total",
            &format!("listener=\"outbound\",code_class=\"{class}\""),
        )
    }
}

fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

#[test]
fn redirected_connection_reaches_its_original_destination_through_the_proxy() {
    let Some(lab) = Lab::start("redirected_connection_reaches_its_original_destination") else {
        return;
    };

    // The client thinks it talks to the service; PREROUTING hands the connection to
    // the outbound listener instead.
    let url = format!("http://{SERVICE}:8080/orders?id=7");
    let (code, status, out) = lab.client.curl(&[&url]);
    assert_eq!((code, status), (0, 200), "{out}\n{}", lab.logs());
    let seen: serde_json::Value = serde_json::from_str(body(&out)).expect("upstream JSON");
    assert_eq!(seen["marker"], MARKER, "{out}");
    assert_eq!(seen["path"], "/orders?id=7");
    // The upstream saw the proxy's connection, carrying the client in x-forwarded-for.
    assert_eq!(seen["xff"], CLIENT_IP, "{out}");
    assert_ne!(
        seen["peer"], CLIENT_IP,
        "upstream saw the client directly: {out}"
    );

    // Exactly one request at the proxy and one at the upstream: the proxy's own
    // connection to 192.0.2.10:8080 leaves through OUTPUT, which has no REDIRECT, so
    // it is not handed back to the listener.
    assert_eq!(lab.requests_settled("2xx", 1.0), 1.0, "{}", lab.logs());
    for class in ["none", "1xx", "3xx", "4xx", "5xx"] {
        assert_eq!(lab.requests(class), 0.0, "class {class}\n{}", lab.logs());
    }
    assert_eq!(
        lab.metric_settled(
            "prescale_upstream_requests_total",
            "cluster=\"outbound-passthrough\",code_class=\"2xx\"",
            1.0
        ),
        1.0
    );
    let hits = lab.upstream_hits_settled(1);
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0]["xff"], CLIENT_IP);

    // Control: a connection made inside P (as the proxy's own is) goes straight to
    // the service and never reaches the proxy.
    let direct = format!("http://{SERVICE}:8080/direct");
    let (code, status, out) = lab.pod.curl(&[&direct]);
    assert_eq!((code, status), (0, 200), "{out}");
    let hits = lab.upstream_hits_settled(2);
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert_eq!(hits[1]["path"], "/direct");
    assert_eq!(hits[1]["xff"], "", "went through the proxy: {hits:?}");
    assert_eq!(lab.requests("2xx"), 1.0, "{}", lab.logs());
}

#[test]
fn connection_straight_to_the_listener_gets_404_not_a_loop() {
    let Some(lab) = Lab::start("connection_straight_to_the_listener_gets_404") else {
        return;
    };

    // Not redirected, so SO_ORIGINAL_DST is the listener itself: forwarding there
    // would loop, and with no route and no default cluster the answer is 404.
    let targets = [
        (&lab.client, format!("http://{PROXY_IP}:{LISTENER_PORT}/a")),
        (&lab.client, format!("http://{SERVICE}:{LISTENER_PORT}/b")),
        (&lab.pod, format!("http://127.0.0.1:{LISTENER_PORT}/c")),
    ];
    for (ns, url) in &targets {
        let (code, status, out) = ns.curl(&[url]);
        assert_eq!((code, status), (0, 404), "{url}: {out}\n{}", lab.logs());
        assert!(
            out.to_ascii_lowercase()
                .contains("x-prescale-error: no_route"),
            "{url}: {out}"
        );
    }
    let n = targets.len() as f64;
    assert_eq!(lab.requests_settled("4xx", n), n, "{}", lab.logs());
    assert_eq!(lab.requests("2xx"), 0.0, "{}", lab.logs());
    assert_eq!(
        lab.metric_settled(
            "prescale_local_responses_total",
            "listener=\"outbound\",reason=\"no_route\"",
            n
        ),
        n
    );
    assert!(lab.upstream_hits().is_empty(), "{:?}", lab.upstream_hits());
}

#[test]
fn ipv6_and_ipv4_connections_are_both_intercepted_by_init_iptables_ipv6() {
    let Some(lab) = Lab::start_dual("ipv6_and_ipv4_connections_are_both_intercepted") else {
        return;
    };
    for (host, client, listener) in [
        (format!("[{SERVICE6}]"), CLIENT_IP6, "outbound6"),
        (SERVICE.to_string(), CLIENT_IP, "outbound"),
    ] {
        let url = format!("http://{host}:8080/orders?from={listener}");
        let (code, status, out) = lab.client.curl(&[&url]);
        assert_eq!((code, status), (0, 200), "{url}: {out}\n{}", lab.logs());
        let seen: serde_json::Value = serde_json::from_str(body(&out)).expect("upstream JSON");
        assert_eq!(seen["marker"], MARKER, "{out}");
        // Through the proxy: the upstream names the client in x-forwarded-for only.
        assert_eq!(seen["xff"], client, "{url}: {out}");
        assert_ne!(
            seen["peer"], client,
            "{url} reached the upstream directly: {out}"
        );
        let counted = lab.metric_settled(
            "prescale_requests_total",
            &format!("listener=\"{listener}\",code_class=\"2xx\""),
            1.0,
        );
        assert_eq!(counted, 1.0, "{listener}\n{}", lab.logs());
    }
    // Each family reached its own listener, and the upstream at its original address.
    let hits = lab.upstream_hits_settled(2);
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert_eq!(hits[0]["xff"], CLIENT_IP6);
    assert_eq!(hits[1]["xff"], CLIENT_IP);
}
