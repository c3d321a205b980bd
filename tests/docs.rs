//! The reference docs checked against the code, so they cannot drift:
//! `docs/configuration.md` against the config types, `docs/metrics.md` against what
//! the real binary exports, and the README's minimal config against the parser.

mod support;

use prescale_proxy::MeshConfig;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};
use support::*;

fn read(rel: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The backticked names in the first cell of each row of the Markdown tables in `text`.
fn first_cells(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| l.split('|').nth(1))
        .map(|cell| {
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect()
        })
        .collect()
}

// === configuration ===

/// Key paths documented in the table: `a.b.c` / `d` stands for `a.b.c` and `a.b.d`.
fn documented_keys() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for names in first_cells(&read("docs/configuration.md")) {
        let Some(first) = names.first() else { continue };
        let parent = first.rsplit_once('.').map_or("", |(p, _)| p);
        for name in &names {
            if name.contains('.') || parent.is_empty() {
                keys.insert(name.clone());
            } else {
                keys.insert(format!("{parent}.{name}"));
            }
        }
    }
    keys
}

/// A config that sets every optional section, so that every key the types accept
/// shows up when it is serialized back. Parsed strictly: unknown keys are errors.
fn full_config(dir: &Path) -> MeshConfig {
    let cert = self_signed(dir, "localhost");
    std::fs::write(dir.join("kubeconfig"), "apiVersion: v1\nkind: Config\n").unwrap();
    let yaml = format!(
        r#"
admin: {{ address: "127.0.0.1:9901", token: secret }}
runtime: {{ worker_threads: 2 }}
drain: {{ grace_period: 5s }}
limits: {{ max_request_body_bytes: 1048576 }}
listeners:
  - name: inbound
    direction: inbound
    address: 127.0.0.1:4143
    cluster: local
    tls: {{ cert: {cert}, key: {key}, client_ca: {cert} }}
  - name: outbound
    direction: outbound
    address: 127.0.0.1:4140
    original_dst: true
    routes: [{{ authority: payments.internal, cluster: payments }}]
clusters:
  - name: local
    endpoints: ["127.0.0.1:8080"]
    passive_health: {{}}
    overflow: payments
  - name: payments
    endpoints: ["127.0.0.1:8081"]
    protocol: h2
    tls: {{ ca: {cert}, sni: payments.internal }}
profiler:
  source_header: x-client-id
  store: {{ path: store.redb }}
policies:
  scaling: {{ max_startup_time: 240s, cpu_per_replica: 2.0, memory_per_replica: 1073741824, shortfall_cost: 9, uncalibrated_margin: 0.5, forecast_stabilization: 30s }}
  tiers:
    trusted_sources: ["127.0.0.1"]
    list:
      - {{ name: critical, priority: 0, share: 0.5, sheddable: false, queue: true, cluster: payments, shadow: false, match: {{ headers: {{ x-tier: "*" }}, path_prefix: ["/checkout"], route: ["/checkout/{{id}}"], methods: [POST], sources: ["127.0.0.1"] }} }}
      - {{ name: standard, priority: 1 }}
      - {{ name: batch, priority: 2 }}
  sources:
    identities: {{ app: {{ tier: critical, weight: 2.0 }} }}
    rate_limit: {{ rps: 100, burst: 200 }}
  admission:
    cluster_limits: {{ payments: {{ ceiling: 16 }} }}
    latency_objective: 250ms
signals:
  webhook:
    url: http://127.0.0.1:9000/scale
    service: checkout
    ca_file: {cert}
    headers: {{ Authorization: "Bearer x" }}
  keda: {{ address: "127.0.0.1:9091" }}
  kubernetes: {{ namespace: default, deployment: web, kubeconfig: kubeconfig }}
  resize: {{ namespace: default, deployment: web, pod: web-1, kubeconfig: kubeconfig, min_memory: 1048576, max_memory: 2097152, node_capacity: true, node_refresh: 30s }}
warm_start:
  prometheus_url: http://127.0.0.1:9090
  query: sum(rate(prescale_requests_total[1m]))
  unit: requests_per_second
  mean_service_time: 50ms
  headers: {{ Authorization: "Bearer x" }}
resources: {{ source: prometheus, namespace: shop, pod: web-1, prometheus_url: "http://127.0.0.1:9090", headers: {{ Authorization: "Bearer x" }}, window: 10m }}
anomalies:
  alertmanager:
    url: http://127.0.0.1:9093
    labels: {{ service: checkout }}
    headers: {{ Authorization: "Bearer x" }}
    ca_file: {cert}
  webhook: {{ url: "http://127.0.0.1:9094/alerts" }}
  remediation: {{ mode: enforce, demote_to: batch }}
"#,
        cert = cert.cert.display(),
        key = cert.key.display(),
    );
    let path = dir.join("full.yaml");
    MeshConfig::parse(&yaml, &path).unwrap_or_else(|e| panic!("the full config: {e}\n{yaml}"))
}

/// Every key path in `v` (arrays as `name[]`), e.g. `listeners[].tls.cert`.
fn key_paths(v: &Value, at: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let p = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                out.insert(p.clone());
                key_paths(child, &p, out);
            }
        }
        Value::Array(items) => {
            let p = format!("{at}[]");
            out.insert(p.clone());
            for item in items {
                key_paths(item, &p, out);
            }
        }
        _ => {}
    }
}

/// Whether documented key `doc` covers accepted path `path`: equal, or one of its
/// ancestors (`policies.admission.limit` covers `policies.admission.limit.initial`).
fn covers(doc: &str, path: &str) -> bool {
    path == doc
        || path
            .strip_prefix(doc)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with("[]"))
}

#[test]
fn configuration_doc_lists_exactly_the_keys_the_config_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = full_config(dir.path());
    let mut accepted = BTreeSet::new();
    key_paths(&cfg.redacted_json(), "", &mut accepted);
    let documented = documented_keys();
    assert!(
        documented.len() > 100,
        "the table was not found: {documented:?}"
    );

    // A documented key that is not accepted: renamed, removed, or a typo in the doc.
    let unknown: Vec<_> = documented
        .iter()
        .filter(|d| !accepted.contains(*d))
        .collect();
    assert!(
        unknown.is_empty(),
        "docs/configuration.md documents keys the config does not accept: {unknown:#?}"
    );
    // An accepted key no documented key covers (intermediate keys like `listeners`
    // are covered by their documented children).
    let undocumented: Vec<_> = accepted
        .iter()
        .filter(|p| !documented.iter().any(|d| covers(d, p)))
        .filter(|p| !documented.iter().any(|d| covers(p, d)))
        .collect();
    assert!(
        undocumented.is_empty(),
        "keys the config accepts that docs/configuration.md does not document: {undocumented:#?}"
    );
}

#[test]
fn the_readme_minimal_config_is_valid() {
    let readme = read("README.md");
    let section = readme
        .split("## A minimal config")
        .nth(1)
        .expect("README has a minimal config section");
    let yaml = section
        .split("```yaml\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("a yaml block in it");
    let cfg = MeshConfig::parse(yaml, Path::new("README.md"))
        .unwrap_or_else(|e| panic!("README's minimal config: {e}"));
    assert_eq!(cfg.listeners.len(), 1);
}

// === metrics ===

/// Metric families in docs/metrics.md with their documented type.
fn documented_metrics() -> BTreeMap<String, String> {
    let text = read("docs/metrics.md");
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("| `prescale_")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (names, kind) = (cells[1], cells[2]);
        for name in names.split('`').skip(1).step_by(2) {
            // `prescale_build_info{version}`: the family is the name before the labels.
            let family = name.split('{').next().unwrap_or(name);
            out.insert(family.to_string(), kind.to_string());
        }
    }
    out
}

/// `# TYPE` lines of an exposition: family name → type.
fn exported_families(body: &str) -> BTreeMap<String, String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some((parts.next()?.to_string(), parts.next()?.to_string()))
        })
        .collect()
}

/// The real binary with tiers, scaling, a webhook signal and alert webhook (each to a
/// real receiver), after traffic through it: every `prescale_*` family it exports is
/// in docs/metrics.md, with the type documented there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_doc_lists_every_family_the_binary_exports() {
    let upstream = Upstream::start().await;
    let receiver = Receiver::start(vec![], Reply::Status(200, None)).await;
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let extra = format!(
        "profiler:\n  refit_interval: 5s\n  min_samples: 20\npolicies:\n  scaling:\n    sync_period: 1s\n  tiers:\n    list:\n      - {{ name: critical, priority: 0, share: 0.5, sheddable: false, match: {{ path_prefix: [\"/checkout\"] }} }}\n      - {{ name: standard, priority: 1 }}\nsignals:\n  webhook:\n    url: http://{r}/scale\n    service: docs\n    min_interval: 1s\n    only_on_change: false\nanomalies:\n  webhook:\n    url: http://{r}/alerts\n",
        r = receiver.addr
    );
    let yaml = inbound_config(admin, listen, upstream.addr, &extra);
    let proxy = tokio::task::spawn_blocking(move || Proxy::start(&yaml, admin))
        .await
        .unwrap();

    // Traffic of two kinds, so signatures are fitted and both tiers admit.
    tokio::task::spawn_blocking(move || {
        for i in 0..60 {
            let path = if i % 2 == 0 {
                "/checkout"
            } else {
                "/bytes/20000"
            };
            let (code, _) = curl(&["-o", "/dev/null", &format!("http://{listen}{path}")]);
            assert_eq!(code, 0);
        }
    })
    .await
    .unwrap();

    // Wait until the profiler has the samples and a scaling decision went out.
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let (_, body) = admin_get(admin, "/metrics").expect("GET /metrics");
        let samples = metric_value(&body, "prescale_profiler_samples_total", "");
        let sent = metric_value(&body, "prescale_signal_sends_total", "outcome=\"ok\"");
        if samples.is_some_and(|s| s >= 60.0) && sent.is_some_and(|s| s >= 1.0) {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "no samples or decision in 20 s:\n{body}\n{}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let documented = documented_metrics();
    let exported = exported_families(&body);
    let ours: BTreeMap<_, _> = exported
        .iter()
        .filter(|(name, _)| name.starts_with("prescale_"))
        .collect();
    assert!(ours.len() > 40, "too few families exported: {ours:?}");
    let mut problems = Vec::new();
    for (name, kind) in &ours {
        match documented.get(name.as_str()) {
            None => problems.push(format!("{name} ({kind}) is not documented")),
            Some(doc) if doc != *kind => {
                problems.push(format!("{name} is a {kind}, documented as {doc}"))
            }
            Some(_) => {}
        }
    }
    assert!(
        problems.is_empty(),
        "docs/metrics.md is out of date:\n{}",
        problems.join("\n")
    );
}
