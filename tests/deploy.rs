//! The files in `deploy/` against the real things they configure:
//!
//! - every Kubernetes manifest deserialises into its k8s-openapi type (CRDs: required
//!   fields), the ConfigMap's mesh config passes `prescale check`, and every HPA
//!   External metric is one the prometheus-adapter rules define;
//! - `promtool check rules`, `promtool test rules` and `promtool check config` pass;
//! - every `prescale_…` metric named in the adapter rules, KEDA queries, alerts and
//!   dashboard is exported by the real binary, run with the shipped ConfigMap's mesh
//!   config; and a real Prometheus, configured by the shipped `prometheus.yml`
//!   (relabelling included, with Kubernetes discovery replaced by one target carrying
//!   the same meta labels), scrapes it and evaluates every one of those queries, the
//!   adapter's and KEDA's returning the sidecar's own forecast.
//!
//! Prometheus/promtool parts skip with a message when not installed, except under
//! `CI=true`.

mod k8s;
mod support;

use serde_yaml_ng::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(deploy().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml(rel: &str) -> Value {
    serde_yaml_ng::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Files under a directory, recursively, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The mesh config text inside the shipped ConfigMap.
fn shipped_mesh_config() -> String {
    let cm = yaml("kubernetes/configmap.yaml");
    cm["data"]["config.yaml"]
        .as_str()
        .expect("configmap.yaml has data.config.yaml")
        .to_string()
}

/// `text` (a mesh config) with `admin.token_file` moved to `file`, holding a token.
fn with_token_file(text: &str, file: &Path) -> String {
    std::fs::write(file, "test-admin-token\n").unwrap();
    let mut cfg: Value = serde_yaml_ng::from_str(text).unwrap();
    cfg["admin"]["token_file"] = file.display().to_string().into();
    serde_yaml_ng::to_string(&cfg).unwrap()
}

/// The shipped ConfigMap exposes the admin API on the pod IP (kubelet probes,
/// Prometheus), so its control endpoints take a token read from a file, and the
/// shipped injected app mounts the Secret holding it exactly there, read-only.
#[test]
fn the_exposed_admin_api_takes_its_token_from_a_mounted_secret() {
    let cfg: Value = serde_yaml_ng::from_str(&shipped_mesh_config()).unwrap();
    let address: SocketAddr = cfg["admin"]["address"].as_str().unwrap().parse().unwrap();
    assert!(!address.ip().is_loopback(), "{address}");
    assert!(
        cfg["admin"].get("token").is_none(),
        "no literal token in a ConfigMap"
    );
    let file = Path::new(
        cfg["admin"]["token_file"]
            .as_str()
            .expect("admin.token_file"),
    );
    assert!(file.is_absolute(), "{}", file.display());
    let (dir, key) = (
        file.parent().unwrap().to_str().unwrap(),
        file.file_name().unwrap().to_str().unwrap(),
    );

    let docs = k8s::documents(&read("kubernetes/example-app.yaml"));
    let pod = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .map(|d| &d["spec"]["template"]["spec"])
        .expect("a Deployment");
    let sidecar = pod["initContainers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "prescale")
        .expect("the sidecar");
    let mount = sidecar["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == dir)
        .unwrap_or_else(|| panic!("nothing mounted at {dir}: {sidecar:?}"));
    assert_eq!(mount["readOnly"], true);
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    let secret = &volume["secret"];
    assert!(secret["secretName"].as_str().is_some(), "{volume:?}");
    let items = secret["items"].as_sequence().unwrap();
    assert!(
        items.iter().any(|i| i["key"] == key && i["path"] == key),
        "the Secret's {key} must land at {}: {volume:?}",
        file.display()
    );
    // The comment heading the ConfigMap says how to create that Secret.
    let name = secret["secretName"].as_str().unwrap();
    assert!(read("kubernetes/configmap.yaml")
        .contains(&format!("kubectl create secret generic {name}")));
}

/// `name.as` of every prometheus-adapter external rule: names the adapter serves, not
/// names the binary exports.
fn adapter_names() -> BTreeSet<String> {
    yaml("kubernetes/prometheus-adapter-rules.yaml")["externalRules"]
        .as_sequence()
        .expect("externalRules")
        .iter()
        .map(|r| r["name"]["as"].as_str().expect("name.as").to_string())
        .collect()
}

/// Every `prescale_…` name in the files holding queries (kubernetes/, prometheus/,
/// grafana/). `deploy/examples/` holds mesh configs, not queries.
fn metric_names_in_deploy() -> BTreeMap<String, BTreeSet<String>> {
    let mut names: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for sub in ["kubernetes", "prometheus", "grafana"] {
        for f in files(&deploy().join(sub)) {
            let text = std::fs::read_to_string(&f).unwrap();
            let rel = f.strip_prefix(deploy()).unwrap().display().to_string();
            for name in prescale_words(&text) {
                names.entry(name).or_default().insert(rel.clone());
            }
        }
    }
    names
}

fn prescale_words(text: &str) -> BTreeSet<String> {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("prescale_") {
        let before = rest[..i].chars().next_back();
        let word: String = rest[i..].chars().take_while(|c| is_word(*c)).collect();
        if !before.is_some_and(is_word) {
            out.insert(word.clone());
        }
        rest = &rest[i + word.len()..];
    }
    out
}

/// Metric names a `/metrics` exposition offers, histogram and summary series included.
fn exported_names(exposition: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            if let (Some(name), Some(ty)) = (it.next(), it.next()) {
                out.insert(name.to_string());
                let suffixes: &[&str] = match ty {
                    "histogram" => &["_bucket", "_sum", "_count"],
                    "summary" => &["_sum", "_count"],
                    _ => &[],
                };
                for s in suffixes {
                    out.insert(format!("{name}{s}"));
                }
            }
        } else if !line.starts_with('#') {
            if let Some(name) = line.split(['{', ' ']).next().filter(|n| !n.is_empty()) {
                out.insert(name.to_string());
            }
        }
    }
    out
}

// === the PromQL in deploy/ ===

/// (where, PromQL) of every query the deploy files run, with Grafana's variables and
/// the adapter's templates filled in for app `web` in namespace `shop`.
fn queries() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for g in yaml("prometheus/alerts.yaml")["groups"]
        .as_sequence()
        .unwrap()
    {
        for r in g["rules"].as_sequence().unwrap() {
            let name = r["alert"].as_str().or(r["record"].as_str()).unwrap();
            out.push((
                format!("alerts.yaml {name}"),
                r["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    let dash: serde_json::Value = serde_json::from_str(&read("grafana/prescale.json")).unwrap();
    let mut panels: Vec<&serde_json::Value> = dash["panels"].as_array().unwrap().iter().collect();
    while let Some(p) = panels.pop() {
        if let Some(inner) = p["panels"].as_array() {
            panels.extend(inner);
        }
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$namespace", ".*")
                .replace("$app", ".*")
                .replace("$__rate_interval", "1m")
                .replace("$per_replica", "7");
            out.push((format!("dashboard {:?}", p["title"]), expr));
        }
    }
    for f in ["kubernetes/keda-scaledobject.yaml"] {
        for doc in k8s::documents(&read(f)) {
            for t in doc["spec"]["triggers"].as_sequence().unwrap() {
                if let Some(q) = t["metadata"]["query"].as_str() {
                    out.push((
                        format!("{f} {}", t["name"].as_str().unwrap_or("")),
                        q.into(),
                    ));
                }
            }
        }
    }
    for r in yaml("kubernetes/prometheus-adapter-rules.yaml")["externalRules"]
        .as_sequence()
        .unwrap()
    {
        out.push((
            format!("adapter rule {}", r["name"]["as"].as_str().unwrap()),
            render_adapter_query(r),
        ));
    }
    out
}

/// prometheus-adapter's metricsQuery template as the adapter fills it in when the HPA
/// asks for the metric with selector `app=web` in namespace `shop`.
fn render_adapter_query(rule: &Value) -> String {
    let series = rule["seriesQuery"].as_str().unwrap();
    let name = series
        .split('{')
        .next()
        .unwrap()
        .trim_matches(['\'', '"', ' ']);
    rule["metricsQuery"]
        .as_str()
        .unwrap()
        .replace("<<.Series>>", name)
        .replace("<<.LabelMatchers>>", "namespace=\"shop\",app=\"web\"")
        .replace("<<.GroupBy>>", "namespace,app")
}

// === Kubernetes manifests ===

#[test]
fn every_kubernetes_manifest_deserialises_into_its_typed_object() {
    let mut kinds = BTreeSet::new();
    for f in files(&deploy().join("kubernetes")) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        if name == "prometheus-adapter-rules.yaml" {
            continue; // the adapter's own config format, checked below
        }
        assert!(name.ends_with(".yaml"), "unexpected file {name}");
        let text = std::fs::read_to_string(&f).unwrap();
        let docs = k8s::documents(&text);
        assert!(!docs.is_empty(), "{name}: no documents");
        for d in &docs {
            k8s::validate(d).unwrap_or_else(|e| panic!("{name}: {e}"));
            kinds.insert(k8s::kind_of(d));
        }
    }
    for want in [
        "apps/v1/Deployment",
        "v1/Service",
        "v1/ConfigMap",
        "autoscaling/v2/HorizontalPodAutoscaler",
        "keda.sh/v1alpha1/ScaledObject",
        "monitoring.coreos.com/v1/PodMonitor",
    ] {
        assert!(
            kinds.contains(want),
            "no {want} in deploy/kubernetes: {kinds:?}"
        );
    }

    // The adapter rules are well-formed, and the HPA asks only for metrics they define.
    let served = adapter_names();
    for r in yaml("kubernetes/prometheus-adapter-rules.yaml")["externalRules"]
        .as_sequence()
        .unwrap()
    {
        assert!(r["seriesQuery"]
            .as_str()
            .is_some_and(|s| s.starts_with("prescale_")));
        assert!(r["metricsQuery"].as_str().unwrap().contains("<<.Series>>"));
        assert_eq!(
            r["resources"]["overrides"]["namespace"]["resource"],
            "namespace"
        );
    }
    let hpa = k8s::documents(&read("kubernetes/hpa-forecast.yaml"));
    let externals: Vec<&str> = hpa[0]["spec"]["metrics"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter(|m| m["type"] == "External")
        .map(|m| m["external"]["metric"]["name"].as_str().unwrap())
        .collect();
    assert!(!externals.is_empty());
    for m in externals {
        assert!(
            served.contains(m),
            "HPA metric {m} is not an adapter rule: {served:?}"
        );
    }
    for doc in hpa {
        for m in doc["spec"]["metrics"].as_sequence().unwrap() {
            if m["type"] == "External" {
                assert_eq!(m["external"]["target"]["type"], "AverageValue");
            }
        }
    }

    // The ConfigMap's mesh config is one the real binary accepts, with its token file
    // where the Secret would be mounted.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        with_token_file(&shipped_mesh_config(), &dir.path().join("admin-token")),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_prescale"))
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "configmap.yaml's config.yaml: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// === promtool ===

/// `prometheus.yml` with Kubernetes pod discovery replaced by one static target that
/// carries the meta labels discovery would give an injected pod whose admin API is
/// at `admin` (Debian's Prometheus is built without Kubernetes discovery, and a test
/// has no cluster anyway). The file's relabelling runs unchanged.
fn static_prometheus_config(admin: SocketAddr, scrape_every: Option<&str>) -> String {
    static_prometheus_config_for(&[("web-0", admin, "prescale-admin")], scrape_every)
}

/// Like `static_prometheus_config`, with one target per `(pod, address, container
/// port name)`: what discovery yields for each declared container port.
fn static_prometheus_config_for(
    pods: &[(&str, SocketAddr, &str)],
    scrape_every: Option<&str>,
) -> String {
    let mut cfg = yaml("prometheus/prometheus.yml");
    if let Some(every) = scrape_every {
        cfg["global"]["scrape_interval"] = every.into();
        cfg["global"]["scrape_timeout"] = every.into();
        cfg["global"]["evaluation_interval"] = every.into();
    }
    let targets: Vec<Value> = pods
        .iter()
        .map(|(pod, addr, port_name)| {
            serde_yaml_ng::from_str::<Value>(&format!(
                r#"
targets: ["{ip}:{port}"]
labels:
  __meta_kubernetes_namespace: shop
  __meta_kubernetes_pod_name: {pod}
  __meta_kubernetes_pod_ip: "{ip}"
  __meta_kubernetes_pod_phase: Running
  __meta_kubernetes_pod_label_app: web
  __meta_kubernetes_pod_container_name: prescale
  __meta_kubernetes_pod_container_port_name: {port_name}
  __meta_kubernetes_pod_annotation_prometheus_io_scrape: "true"
  __meta_kubernetes_pod_annotation_prometheus_io_port: "{port}"
  __meta_kubernetes_pod_annotation_prometheus_io_path: /metrics
"#,
                ip = addr.ip(),
                port = addr.port()
            ))
            .unwrap()
        })
        .collect();
    for sc in cfg["scrape_configs"].as_sequence_mut().unwrap() {
        let m = sc.as_mapping_mut().unwrap();
        assert!(
            m.remove("kubernetes_sd_configs").is_some(),
            "every scrape config discovers pods"
        );
        m.insert("static_configs".into(), Value::Sequence(targets.clone()));
    }
    serde_yaml_ng::to_string(&cfg).unwrap()
}

fn promtool(args: &[&str], cwd: &Path) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("promtool runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn promtool_accepts_the_rules_their_unit_tests_and_the_scrape_config() {
    if !prometheus_usable("promtool_accepts_the_rules_their_unit_tests_and_the_scrape_config") {
        return;
    }
    let dir = deploy().join("prometheus");
    let (ok, out) = promtool(&["check", "rules", "alerts.yaml"], &dir);
    assert!(ok, "promtool check rules:\n{out}");
    let (ok, out) = promtool(&["test", "rules", "alerts.test.yaml"], &dir);
    assert!(ok, "promtool test rules:\n{out}");
    let (ok, out) = promtool(&["check", "config", "prometheus.yml"], &dir);
    if ok {
        return;
    }
    // Debian's build leaves Kubernetes discovery out; everything else must still pass.
    assert!(
        out.contains("kubernetes_sd_configs not found"),
        "promtool check config:\n{out}"
    );
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        b"note: this promtool has no Kubernetes discovery; checking prometheus.yml with a static target instead\n",
    );
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("prometheus.yml"),
        static_prometheus_config("127.0.0.1:9901".parse().unwrap(), None),
    )
    .unwrap();
    std::fs::copy(dir.join("alerts.yaml"), tmp.path().join("alerts.yaml")).unwrap();
    let (ok, out) = promtool(&["check", "config", "prometheus.yml"], tmp.path());
    assert!(ok, "promtool check config (static target):\n{out}");
}

// === the real binary and a real Prometheus ===

/// The shipped mesh config, moved onto free loopback ports, in front of `upstream`,
/// deciding every second, re-fitting signatures quickly and warm-starting from
/// `prometheus`.
fn test_mesh_config(
    admin: SocketAddr,
    inbound: SocketAddr,
    outbound: SocketAddr,
    upstream: SocketAddr,
    store: &Path,
    prometheus: &str,
    mean_service_time: &str,
) -> String {
    let mut cfg: Value = serde_yaml_ng::from_str(&shipped_mesh_config()).unwrap();
    cfg["admin"]["address"] = admin.to_string().into();
    // No mounted Secret here: the token is given inline.
    let admin_cfg = cfg["admin"].as_mapping_mut().unwrap();
    admin_cfg.remove("token_file");
    admin_cfg.insert("token".into(), "test-admin-token".into());
    for l in cfg["listeners"].as_sequence_mut().unwrap() {
        let addr = if l["direction"] == "inbound" {
            inbound
        } else {
            outbound
        };
        l["address"] = addr.to_string().into();
    }
    for c in cfg["clusters"].as_sequence_mut().unwrap() {
        c["endpoints"] = Value::Sequence(vec![upstream.to_string().into()]);
    }
    cfg["profiler"]["store"]["path"] = store.display().to_string().into();
    cfg["profiler"]["refit_interval"] = "5s".into();
    cfg["profiler"]["min_samples"] = 20.into();
    cfg["policies"]["scaling"]["sync_period"] = "1s".into();
    cfg["warm_start"] = serde_yaml_ng::from_str(&format!(
        "{{prometheus_url: \"{prometheus}\", query: \"sum(rate(demo_requests_total[1m]))\", unit: requests_per_second, mean_service_time: {mean_service_time}, lookback: 26h, step: 1m, timeout: 10s}}"
    ))
    .unwrap();
    serde_yaml_ng::to_string(&cfg).unwrap()
}

/// A Prometheus with `config` on a free loopback port, over `data`; killed on drop.
struct Prom {
    addr: SocketAddr,
    log: PathBuf,
    _child: KillOnDrop,
}

impl Prom {
    fn start(dir: &Path, config: &str, data: &Path) -> Self {
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        std::fs::copy(
            deploy().join("prometheus/alerts.yaml"),
            dir.join("alerts.yaml"),
        )
        .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = dir.join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn prometheus");
        let mut p = Self {
            addr,
            log,
            _child: KillOnDrop(child),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while admin_get(addr, "/-/ready").map(|(s, _)| s) != Some(200) {
            if let Ok(Some(status)) = p._child.0.try_wait() {
                panic!("prometheus exited ({status}):\n{}", p.logs());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready:\n{}",
                p.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A GET through curl (Prometheus answers large results chunked).
    fn get(&self, path: &str) -> Option<String> {
        let (code, body) = curl(&[&format!("http://{}{path}", self.addr)]);
        (code == 0).then_some(body)
    }

    /// An instant query: `Ok(result array)` or `Err(Prometheus' error)`.
    fn query(&self, promql: &str) -> Result<Vec<serde_json::Value>, String> {
        let body = self
            .get(&format!("/api/v1/query?query={}", url_encode(promql)))
            .ok_or("no answer")?;
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    fn value(&self, promql: &str) -> Option<f64> {
        let r = self.query(promql).ok()?;
        r.first()?["value"][1].as_str()?.parse().ok()
    }
}

/// Like `support::backfill_counter`, but the rate moves (10 ± 4 requests/s over a
/// 30-minute wave, plus jitter) so that forecast errors, and their ratio to
/// seasonal-naive's, are defined. Samples every 10 s up to now.
fn backfill_wavy_counter(data: &Path, name: &str, before: Duration) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let start = now - before.as_secs();
    let mut text = format!("# HELP {name} Backfilled test counter.\n# TYPE {name} counter\n");
    let (mut total, mut seed) = (0.0_f64, 0x2545_f491_u64);
    for t in (start..now).step_by(10) {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let jitter = (seed >> 33) as f64 / f64::from(u32::MAX) - 0.5;
        let phase = (t - start) as f64 / 1800.0 * std::f64::consts::TAU;
        total += (10.0 + 4.0 * phase.sin() + 2.0 * jitter) * 10.0;
        text.push_str(&format!("{name}_total {total:.1} {t}\n"));
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

fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `n` requests on one keep-alive connection (curl reuses it across URLs).
fn traffic(listen: SocketAddr, n: usize, path: &str, header: Option<&str>) {
    let urls: Vec<String> = (0..n)
        .map(|i| format!("http://{listen}{path}?i={i}"))
        .collect();
    let mut args: Vec<&str> = vec!["-w", "%{http_code}\n"];
    if let Some(h) = header {
        args.extend(["-H", h]);
    }
    for u in &urls {
        args.extend(["-o", "/dev/null", u.as_str()]);
    }
    let (code, out) = curl(&args);
    assert_eq!(code, 0, "{out}");
    assert!(out.lines().all(|l| l == "200"), "{out}");
}

#[test]
fn every_metric_in_deploy_is_exported_and_every_query_runs_on_a_real_prometheus() {
    let names = metric_names_in_deploy();
    let aliases = adapter_names();
    let wanted: BTreeMap<&String, &BTreeSet<String>> = names
        .iter()
        .filter(|(n, _)| !aliases.contains(*n))
        .collect();
    assert!(wanted.len() >= 15, "suspiciously few names: {wanted:?}");
    for alias in &aliases {
        for file in names.get(alias).into_iter().flatten() {
            assert!(
                file.ends_with("prometheus-adapter-rules.yaml")
                    || file.ends_with("hpa-forecast.yaml"),
                "{alias} is served by prometheus-adapter; {file} cannot query Prometheus for it"
            );
        }
    }
    if !prometheus_usable(
        "every_metric_in_deploy_is_exported_and_every_query_runs_on_a_real_prometheus",
    ) {
        return;
    }

    let rt = tokio::runtime::Runtime::new().unwrap();
    let upstream = rt.block_on(Upstream::start());
    let tmp = tempfile::tempdir().unwrap();
    // 26 hours of history to warm-start from: the forecast, and its accuracy against
    // seasonal-naive (which needs a whole day), exist within seconds.
    let data = tmp.path().join("data");
    backfill_wavy_counter(&data, "demo_requests", Duration::from_secs(26 * 3600));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let prom = Prom::start(
        tmp.path(),
        &static_prometheus_config(admin, Some("1s")),
        &data,
    );
    let (inbound, outbound) = (
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        SocketAddr::from(([127, 0, 0, 1], free_port())),
    );
    let mesh = test_mesh_config(
        admin,
        inbound,
        outbound,
        upstream.addr,
        &tmp.path().join("store.redb"),
        &format!("http://{}", prom.addr),
        "100ms",
    );
    let proxy = Proxy::start(&mesh, admin);

    // Traffic in every tier of the shipped config: critical, standard and batch.
    traffic(inbound, 40, "/checkout", None);
    traffic(inbound, 60, "/api/items/1", None);
    traffic(inbound, 20, "/api/reports", Some("x-priority: batch"));

    // Everything named in deploy/ shows up (forecasts come from the warm start,
    // signatures from the first re-fit, decisions every second).
    let mut last = BTreeSet::new();
    let missing = poll(Duration::from_secs(60), || {
        let (_, body) = admin_get(admin, "/metrics")?;
        last = exported_names(&body);
        let missing: Vec<&&String> = wanted.keys().filter(|n| !last.contains(**n)).collect();
        missing.is_empty().then_some(())
    });
    if missing.is_none() {
        let report: Vec<String> = wanted
            .iter()
            .filter(|(n, _)| !last.contains(**n))
            .map(|(n, files)| format!("{n} (used in {files:?})"))
            .collect();
        panic!(
            "deploy/ uses metrics the binary does not export:\n  {}\n--- exported ---\n{last:?}\n--- prescale log ---\n{}",
            report.join("\n  "),
            proxy.logs()
        );
    }

    // Prometheus scrapes the sidecar through the shipped relabelling.
    let up = poll(Duration::from_secs(30), || {
        let r = prom
            .query("up{job=\"prescale\",namespace=\"shop\",app=\"web\",pod=\"web-0\"} == 1")
            .ok()?;
        (!r.is_empty()).then_some(())
    });
    assert!(up.is_some(), "no scrape of the sidecar:\n{}", prom.logs());

    // Every query in deploy/ is valid PromQL, and (once the series are scraped)
    // returns something.
    let all = queries();
    assert!(all.len() >= 20, "{all:?}");
    let mut empty = Vec::new();
    for (at, q) in &all {
        let result = prom.query(q).unwrap_or_else(|e| panic!("{at}: {q}\n{e}"));
        if result.is_empty() {
            empty.push((at, q));
        }
    }
    // Alerts are silent on a healthy sidecar; dashboards and scalers must see data.
    let unexpected: Vec<_> = empty
        .iter()
        .filter(|(at, _)| !at.starts_with("alerts.yaml"))
        .collect();
    if !unexpected.is_empty() {
        // Rates need two scrapes of the new series: give it a few seconds.
        std::thread::sleep(Duration::from_secs(5));
        for (at, q) in unexpected {
            let r = poll(Duration::from_secs(20), || {
                prom.query(q).ok().filter(|r| !r.is_empty())
            });
            assert!(r.is_some(), "{at}: no data for {q}");
        }
    }

    // What the HPA (through the adapter) and KEDA read is the sidecar's own forecast:
    // the fleet sum of a fleet of one.
    let lead = |body: &str| {
        metric_value(
            body,
            "prescale_forecast_demand",
            "signature=\"total\",q=\"0.95\",horizon=\"lead\"",
        )
    };
    let adapter_rule = yaml("kubernetes/prometheus-adapter-rules.yaml")["externalRules"][0].clone();
    let adapter_q = render_adapter_query(&adapter_rule);
    let keda_q = k8s::documents(&read("kubernetes/keda-scaledobject.yaml"))[0]["spec"]["triggers"]
        [0]["metadata"]["query"]
        .as_str()
        .unwrap()
        .to_string();
    let agreed = poll(Duration::from_secs(20), || {
        let own = lead(&admin_get(admin, "/metrics")?.1)?;
        let via_adapter = prom.value(&adapter_q)?;
        let via_keda = prom.value(&keda_q)?;
        let close = |v: f64| (v - own).abs() <= 1e-9 * own.abs().max(1.0);
        (close(via_adapter) && close(via_keda)).then_some((own, via_adapter, via_keda))
    });
    let (own, _, _) = agreed.unwrap_or_else(|| {
        panic!(
            "adapter/KEDA queries disagree with the sidecar's forecast\nadapter: {adapter_q} = {:?}\nkeda: {keda_q} = {:?}\n",
            prom.value(&adapter_q),
            prom.value(&keda_q)
        )
    });
    // 10 ± 4 requests/s at 100 ms each: about one busy connection, 1.4 at the crest.
    assert!(
        own > 0.5,
        "warm-started forecast should be around 1 busy connection: {own}"
    );
    let series = prom.query(&adapter_q).unwrap();
    assert_eq!(series[0]["metric"]["app"], "web", "{series:?}");
    assert_eq!(series[0]["metric"]["namespace"], "shop", "{series:?}");

    // The alert rules loaded and evaluate cleanly.
    let rules = poll(Duration::from_secs(20), || {
        let body = prom.get("/api/v1/rules")?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let rules: Vec<serde_json::Value> = v["data"]["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let evaluated = rules.iter().all(|r| {
            r["lastEvaluation"]
                .as_str()
                .is_some_and(|t| !t.starts_with("0001"))
        });
        (!rules.is_empty() && evaluated).then_some(rules)
    })
    .unwrap_or_else(|| {
        panic!(
            "rules not loaded or not evaluated: {:?}\n{}",
            prom.get("/api/v1/rules"),
            prom.logs()
        )
    });
    for r in &rules {
        assert_eq!(r["health"], "ok", "{r}");
    }
    let firing: Vec<_> = rules
        .iter()
        .filter(|r| r["state"] == "firing")
        .map(|r| r["name"].clone())
        .collect();
    assert!(
        firing.is_empty(),
        "alerts firing on a healthy sidecar: {firing:?}"
    );
    drop(proxy);
    drop(rt);
}

#[test]
fn a_fleet_of_three_sums_in_prometheus_as_the_hpa_and_keda_read_it() {
    if !prometheus_usable("a_fleet_of_three_sums_in_prometheus_as_the_hpa_and_keda_read_it") {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    backfill_wavy_counter(&data, "demo_requests", Duration::from_secs(26 * 3600));
    let port = || SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admins = [port(), port(), port()];
    // Discovery also yields the app's own container port of pod web-0: the shipped
    // relabelling must keep only the sidecars' admin ports.
    let decoy = port();
    let pods = [
        ("web-0", admins[0], "prescale-admin"),
        ("web-1", admins[1], "prescale-admin"),
        ("web-2", admins[2], "prescale-admin"),
        ("web-0", decoy, "http"),
    ];
    let prom = Prom::start(
        tmp.path(),
        &static_prometheus_config_for(&pods, Some("1s")),
        &data,
    );
    let prom_url = format!("http://{}", prom.addr);

    // Three replicas with different shares of the work: the same request history at
    // 50, 100 and 200 ms a request is 0.5, 1 and 2 busy connections.
    let mut sidecars = Vec::new();
    for (i, (admin, service_time)) in admins.iter().zip(["50ms", "100ms", "200ms"]).enumerate() {
        let upstream = rt.block_on(Upstream::start());
        let (inbound, outbound) = (port(), port());
        let mesh = test_mesh_config(
            *admin,
            inbound,
            outbound,
            upstream.addr,
            &tmp.path().join(format!("store-{i}.redb")),
            &prom_url,
            service_time,
        );
        let proxy = Proxy::start(&mesh, *admin);
        sidecars.push((proxy, inbound, upstream));
    }
    // And different live loads: 10, 20 and 30 requests.
    for (i, (_, inbound, _)) in sidecars.iter().enumerate() {
        traffic(*inbound, 10 * (i + 1), "/api/items/1", None);
    }

    // What each sidecar says its forecast is: the highest upper bound of the total
    // over the lead window (what it exports as horizon="lead", q="0.95").
    let own_lead = |admin: SocketAddr| -> Option<f64> {
        let (_, body) = admin_get(admin, "/v1/forecast")?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let lead = usize::try_from(v["lead_steps"].as_u64()?).ok()?;
        v["series"]["total"]["points"]
            .as_array()?
            .iter()
            .take(lead)
            .filter_map(|p| p["upper"].as_f64())
            .reduce(f64::max)
    };
    let adapter_rule = yaml("kubernetes/prometheus-adapter-rules.yaml")["externalRules"][0].clone();
    let adapter_q = render_adapter_query(&adapter_rule);
    let keda_q = k8s::documents(&read("kubernetes/keda-scaledobject.yaml"))[0]["spec"]["triggers"]
        [0]["metadata"]["query"]
        .as_str()
        .unwrap()
        .to_string();
    let mut last = (Vec::new(), None, None);
    let agreed = poll(Duration::from_secs(30), || {
        let own: Vec<f64> = admins.iter().filter_map(|a| own_lead(*a)).collect();
        let via_adapter = prom.value(&adapter_q);
        let via_keda = prom.value(&keda_q);
        last = (own.clone(), via_adapter, via_keda);
        if own.len() != 3 {
            return None;
        }
        let sum: f64 = own.iter().sum();
        let close = |v: Option<f64>| v.is_some_and(|v| (v - sum).abs() <= 1e-9 * sum.max(1.0));
        (close(via_adapter) && close(via_keda)).then_some(own)
    });
    let own = agreed.unwrap_or_else(|| {
        panic!(
            "fleet sum disagrees: sidecars {:?}, adapter {:?}, keda {:?}\n{}",
            last.0,
            last.1,
            last.2,
            prom.logs()
        )
    });
    // The three really differ (0.5 : 1 : 2), so this is a sum, not one series thrice.
    assert!(own[0] < own[1] && own[1] < own[2], "{own:?}");
    assert!(own[2] > 3.0 * own[0], "{own:?}");

    // One target per sidecar: the app's port was dropped by the relabelling.
    assert_eq!(prom.value("count(up{job=\"prescale\"})"), Some(3.0));
    assert_eq!(
        prom.value("count(prescale_ready{namespace=\"shop\",app=\"web\"} == 1)"),
        Some(3.0),
        "the dashboard's ready replicas"
    );
    // The live metric sums too: 10 + 20 + 30 requests.
    let live = poll(Duration::from_secs(10), || {
        let v = prom.value(
            "sum(prescale_requests_total{app=\"web\",listener=\"inbound\",code_class=\"2xx\"})",
        )?;
        (v == 60.0).then_some(v)
    });
    assert_eq!(live, Some(60.0));
    drop(sidecars);
    drop(rt);
}

#[test]
fn metric_name_extraction_handles_suffixes_and_word_boundaries() {
    let words = prescale_words(
        "sum(rate(prescale_request_duration_seconds_bucket{a=\"b\"}[1m])) my_prescale_x prescale_ready==1",
    );
    assert_eq!(
        words.into_iter().collect::<Vec<_>>(),
        ["prescale_ready", "prescale_request_duration_seconds_bucket"]
    );
    let exp =
        "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 0\n# TYPE g gauge\ng 1\nu_total 3\n";
    let names = exported_names(exp);
    for n in ["h", "h_bucket", "h_sum", "h_count", "g", "u_total"] {
        assert!(names.contains(n), "{n}: {names:?}");
    }
}
