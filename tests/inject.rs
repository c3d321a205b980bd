//! `prescale inject` through the real binary: every workload kind gets a native
//! sidecar and an interception init container, the output deserialises into the
//! Kubernetes API types (k8s-openapi), injection is idempotent and reversible, and
//! what it does not know passes through byte for byte.

mod k8s;

use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::api::{apps, batch, core};
use serde_yaml_ng::Value;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const WORKLOADS: &str = r#"# A comment before the first document survives.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  selector: { matchLabels: { app: web } }
  template:
    metadata:
      labels: { app: web }
      annotations:
        prometheus.io/scrape: "true"
        prometheus.io/port: "8080"
    spec:
      securityContext: { runAsNonRoot: true }
      initContainers:
        - name: migrate
          image: migrate:1
      containers:
        - name: web
          image: nginx
          ports: [{ containerPort: 8080 }]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: { name: db }
spec:
  serviceName: db
  selector: { matchLabels: { app: db } }
  template:
    metadata: { labels: { app: db } }
    spec:
      terminationGracePeriodSeconds: 120
      containers: [{ name: db, image: postgres }]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: { name: agent }
spec:
  selector: { matchLabels: { app: agent } }
  template:
    metadata: { labels: { app: agent } }
    spec:
      containers: [{ name: agent, image: agent }]
---
apiVersion: v1
kind: Pod
metadata: { name: solo }
spec:
  containers: [{ name: solo, image: busybox }]
---
apiVersion: batch/v1
kind: Job
metadata: { name: once }
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{ name: once, image: busybox }]
---
apiVersion: batch/v1
kind: CronJob
metadata: { name: nightly }
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{ name: nightly, image: busybox }]
---
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Pod
    metadata: { name: listed }
    spec:
      containers: [{ name: listed, image: busybox }]
---
apiVersion: v1
kind: Service   # passes through untouched, comment and all
metadata: { name: web }
spec:
  ports: [ { port: 80, targetPort: 8080 } ]
---
apiVersion: v1
kind: ConfigMap
metadata: { name: settings }
data: { a: "1" }
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: opted-out
  annotations: { prescale.io/inject: disabled }
spec:
  selector: { matchLabels: { app: x } }
  template:
    metadata: { labels: { app: x } }
    spec:
      containers: [{ name: x, image: x }]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: { name: node-agent }
spec:
  selector: { matchLabels: { app: n } }
  template:
    metadata: { labels: { app: n } }
    spec:
      hostNetwork: true
      containers: [{ name: n, image: n }]
"#;

fn inject(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_prescale"))
        .arg("inject")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn prescale inject");
    // Bad input may be refused before inject has read all of it: a closed pipe is
    // then its answer, not a test failure (the exit status and stderr say the rest).
    if let Err(e) = child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write stdin: {e}");
    }
    child.wait_with_output().unwrap()
}

/// Runs inject and asserts success; returns stdout.
fn inject_ok(args: &[&str], stdin: &str) -> String {
    let out = inject(args, stdin);
    assert!(
        out.status.success(),
        "inject {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn template_of(doc: &Value) -> PodTemplateSpec {
    let kind = doc["kind"].as_str().unwrap();
    match kind {
        "Deployment" => {
            k8s::typed::<apps::v1::Deployment>(doc)
                .unwrap()
                .spec
                .template
        }
        "StatefulSet" => {
            k8s::typed::<apps::v1::StatefulSet>(doc)
                .unwrap()
                .spec
                .template
        }
        "DaemonSet" => {
            k8s::typed::<apps::v1::DaemonSet>(doc)
                .unwrap()
                .spec
                .template
        }
        "Job" => {
            k8s::typed::<batch::v1::Job>(doc)
                .unwrap()
                .spec
                .unwrap()
                .template
        }
        "CronJob" => {
            k8s::typed::<batch::v1::CronJob>(doc)
                .unwrap()
                .spec
                .job_template
                .spec
                .unwrap()
                .template
        }
        "Pod" => {
            let pod = k8s::typed::<core::v1::Pod>(doc).unwrap();
            PodTemplateSpec {
                metadata: Some(pod.metadata),
                spec: pod.spec,
            }
        }
        other => panic!("not a workload: {other}"),
    }
}

fn container<'a>(list: &'a [Container], name: &str) -> &'a Container {
    list.iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// Everything the injected pod must look like.
/// `scrape_port`: the `prometheus.io/port` the template must end with: the app's own
/// when it had one (kept), else the sidecar's admin port.
fn assert_injected(
    t: &PodTemplateSpec,
    app: &str,
    config_map: &str,
    grace_at_least: i64,
    scrape_port: &str,
) {
    let spec: &PodSpec = t.spec.as_ref().unwrap();
    let inits = spec.init_containers.as_deref().unwrap_or_default();
    assert_eq!(inits[0].name, "prescale-init", "{app}: iptables first");
    assert_eq!(inits[1].name, "prescale", "{app}: then the sidecar");

    let init = &inits[0];
    assert_eq!(init.args.as_ref().unwrap()[0], "init-iptables");
    let sc = init.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_user, Some(0));
    assert_eq!(
        sc.run_as_non_root,
        Some(false),
        "overrides a pod-level runAsNonRoot"
    );
    let caps = sc.capabilities.as_ref().unwrap();
    assert_eq!(
        caps.add.as_deref().unwrap(),
        ["NET_ADMIN".to_string(), "NET_RAW".to_string()]
    );
    assert_eq!(caps.drop.as_deref().unwrap(), ["ALL".to_string()]);

    let side = &inits[1];
    assert_eq!(
        side.restart_policy.as_deref(),
        Some("Always"),
        "native sidecar"
    );
    assert_eq!(
        side.args.as_deref().unwrap(),
        ["run", "--config", "/etc/prescale/config.yaml"].map(String::from)
    );
    let probe_path = |p: &Option<core::v1::Probe>| {
        p.as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.path.clone())
    };
    assert_eq!(probe_path(&side.startup_probe).as_deref(), Some("/ready"));
    assert_eq!(probe_path(&side.readiness_probe).as_deref(), Some("/ready"));
    assert_eq!(probe_path(&side.liveness_probe).as_deref(), Some("/live"));
    let sc = side.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_user, Some(2102));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_deref().unwrap(),
        ["ALL".to_string()]
    );
    assert!(sc.capabilities.as_ref().unwrap().add.is_none());
    let req = side
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .unwrap();
    assert!(req.contains_key("cpu") && req.contains_key("memory"));
    let mounts = side.volume_mounts.as_deref().unwrap();
    assert!(mounts
        .iter()
        .any(|m| m.name == "prescale-config" && m.mount_path == "/etc/prescale"));

    let volumes = spec.volumes.as_deref().unwrap();
    let cm = volumes
        .iter()
        .find(|v| v.name == "prescale-config")
        .and_then(|v| v.config_map.as_ref())
        .unwrap();
    assert_eq!(cm.name, config_map);

    assert!(
        spec.termination_grace_period_seconds.unwrap() >= grace_at_least,
        "{app}: grace {:?}",
        spec.termination_grace_period_seconds
    );
    assert_eq!(container(&spec.containers, app).name, app, "app untouched");

    let ann = t
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
        .unwrap();
    assert_eq!(ann["prescale.io/inject"], "done");
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(ann["prometheus.io/port"], scrape_port, "{app}");
    if scrape_port == "9901" {
        assert_eq!(ann["prometheus.io/path"], "/metrics");
    }
}

#[test]
fn every_workload_kind_gets_a_native_sidecar_and_the_rest_passes_through() {
    let out = inject_ok(&["-", "--config-map", "mesh"], WORKLOADS);
    assert!(out.starts_with("# A comment before the first document survives.\n"));
    // Unknown kinds are written back byte for byte, comments included.
    assert!(out.contains(
        "kind: Service   # passes through untouched, comment and all\nmetadata: { name: web }\nspec:\n  ports: [ { port: 80, targetPort: 8080 } ]\n"
    ), "{out}");
    assert!(out.contains("kind: ConfigMap\nmetadata: { name: settings }\ndata: { a: \"1\" }\n"));

    let docs = k8s::documents(&out);
    assert_eq!(docs.len(), 11);
    for d in &docs {
        k8s::validate(d).unwrap_or_else(|e| panic!("{e}\n{out}"));
    }
    for (kind, name, app, grace) in [
        ("Deployment", "web", "web", 30),
        ("StatefulSet", "db", "db", 120),
        ("DaemonSet", "agent", "agent", 30),
        ("Pod", "solo", "solo", 30),
        ("Job", "once", "once", 30),
        ("CronJob", "nightly", "nightly", 30),
    ] {
        // The web Deployment scrapes its own port 8080: kept.
        let port = if name == "web" { "8080" } else { "9901" };
        assert_injected(
            &template_of(named(&docs, kind, name)),
            app,
            "mesh",
            grace,
            port,
        );
    }
    // A longer grace period is kept.
    let db = template_of(named(&docs, "StatefulSet", "db"));
    assert_eq!(db.spec.unwrap().termination_grace_period_seconds, Some(120));
    // Items of a List are injected too.
    let list = docs.iter().find(|d| d["kind"] == "List").unwrap();
    assert_injected(
        &template_of(&list["items"][0]),
        "listed",
        "mesh",
        30,
        "9901",
    );
    // The app's own init containers run after the sidecar is up.
    let web = template_of(named(&docs, "Deployment", "web"));
    let inits: Vec<_> = web
        .spec
        .as_ref()
        .unwrap()
        .init_containers
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(inits, ["prescale-init", "prescale", "migrate"]);
    // Opted out, and host-network pods: untouched.
    for (kind, name) in [("Deployment", "opted-out"), ("DaemonSet", "node-agent")] {
        let t = template_of(named(&docs, kind, name));
        assert!(t.spec.unwrap().init_containers.is_none(), "{name}");
    }
}

#[test]
fn injecting_twice_is_injecting_once_and_uninject_restores_the_original() {
    let once = inject_ok(&["-"], WORKLOADS);
    let twice = inject_ok(&["-"], &once);
    assert_eq!(twice, once);

    let back = inject_ok(&["--uninject", "-"], &once);
    assert_eq!(k8s::documents(&back), k8s::documents(WORKLOADS));
    // The app's own prometheus annotations come back.
    assert!(
        back.contains("prometheus.io/port: '8080'")
            || back.contains("prometheus.io/port: \"8080\"")
    );
    // Nothing to remove: untouched.
    assert_eq!(inject_ok(&["--uninject", "-"], WORKLOADS), WORKLOADS);
}

#[test]
fn the_mesh_config_sets_ports_interception_and_grace() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cm = root.join("deploy/kubernetes/configmap.yaml");
    let out = inject_ok(
        &[
            "-",
            "--mesh-config",
            cm.to_str().unwrap(),
            "--drain-grace",
            "50s",
        ],
        WORKLOADS,
    );
    let docs = k8s::documents(&out);
    let t = template_of(named(&docs, "Deployment", "web"));
    // --drain-grace wins over the file: 50 s + 5 s.
    assert_injected(&t, "web", "prescale-config", 55, "8080");
    let spec = t.spec.unwrap();
    let args = spec.init_containers.unwrap()[0].args.clone().unwrap();
    let joined = args.join(" ");
    // Only the app's port (the `local` cluster's) is intercepted inbound.
    assert!(joined.contains("--inbound-ports 8080"), "{joined}");
    assert!(
        joined.contains("--inbound-port 4143 --outbound-port 4140"),
        "{joined}"
    );
    assert!(joined.contains("--admin-port 9901"), "{joined}");
    assert!(
        !joined.contains("--ipv6"),
        "the shipped config is IPv4: {joined}"
    );

    // Listeners on `[::]` too: IPv6 is intercepted as well.
    let dir = tempfile::tempdir().unwrap();
    let dual = dir.path().join("dual.yaml");
    std::fs::write(
        &dual,
        "admin: { address: 0.0.0.0:9901 }\nlisteners:\n  - { name: in, direction: inbound, address: 0.0.0.0:4143, cluster: local }\n  - { name: in6, direction: inbound, address: \"[::]:4143\", cluster: local }\nclusters:\n  - { name: local, endpoints: [\"127.0.0.1:8080\"] }\n",
    )
    .unwrap();
    let out = inject_ok(&["-", "--mesh-config", dual.to_str().unwrap()], WORKLOADS);
    let t = template_of(named(&k8s::documents(&out), "Deployment", "web"));
    let args = t.spec.unwrap().init_containers.unwrap()[0]
        .args
        .clone()
        .unwrap();
    assert!(args.iter().any(|a| a == "--ipv6"), "{args:?}");

    // A mesh config whose admin API only listens on loopback cannot be probed.
    let bad = dir.path().join("mesh.yaml");
    std::fs::write(
        &bad,
        "admin: { address: 127.0.0.1:9901 }\nlisteners:\n  - { name: in, direction: inbound, address: 0.0.0.0:4143, cluster: local }\nclusters:\n  - { name: local, endpoints: [\"127.0.0.1:8080\"] }\n",
    )
    .unwrap();
    let out = inject(&["-", "--mesh-config", bad.to_str().unwrap()], WORKLOADS);
    assert_eq!(out.status.code(), Some(64));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("admin.address 127.0.0.1:9901 is loopback"),
        "{err}"
    );
}

#[test]
fn bad_input_is_refused_with_file_line_and_reason_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.yaml");
    std::fs::write(&file, "apiVersion: v1\nkind: Pod\n---\nkind: [Pod\n").unwrap();
    let out = inject(&[file.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(64));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!("error: {}:4:", file.display()))
            || err.starts_with(&format!("error: {}:5:", file.display())),
        "{err}"
    );

    let out = inject(&["-", "--proxy-memory-request", "lots"], WORKLOADS);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a Kubernetes quantity"));
    let out = inject(&["-", "--exclude-outbound-ports", "99999"], WORKLOADS);
    assert_eq!(out.status.code(), Some(64));
    let out = inject(&["/does/not/exist.yaml"], "");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/does/not/exist.yaml"));
}

#[test]
fn the_shipped_example_app_is_what_inject_writes_today() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("deploy/kubernetes");
    let out = Command::new(env!("CARGO_BIN_EXE_prescale"))
        .arg("inject")
        .arg("--mesh-config")
        .arg(dir.join("configmap.yaml"))
        .arg(dir.join("example-app.source.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shipped = std::fs::read_to_string(dir.join("example-app.yaml")).unwrap();
    assert!(
        out.stdout == shipped.as_bytes(),
        "deploy/kubernetes/example-app.yaml is stale; regenerate it (command in its header)"
    );
    let docs = k8s::documents(&shipped);
    let t = template_of(named(&docs, "Deployment", "web"));
    assert_injected(&t, "web", "prescale-config", 30, "9901");
}

/// The traps of injecting a real app: its own scrape annotations, a port the
/// interception list leaves out, and a port the sidecar listens on itself.
const TRAPS: &str = r#"apiVersion: apps/v1
kind: StatefulSet
metadata: { name: db }
spec:
  serviceName: db
  selector: { matchLabels: { app: db } }
  template:
    metadata:
      labels: { app: db }
      annotations:
        prometheus.io/scrape: "true"
        prometheus.io/port: "9187"
    spec:
      containers:
        - name: db
          image: db
          ports: [{ containerPort: 80 }, { containerPort: 9187 }, { containerPort: 53, protocol: UDP }]
        - name: debug
          image: debug
          ports: [{ containerPort: 9901 }]
"#;

#[test]
fn traps_are_warned_about_and_strict_refuses_them() {
    let args = ["-", "--inbound-ports", "8080,9187"];
    let out = inject(&args, TRAPS);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning: ")).collect();
    let has = |parts: &[&str]| {
        warnings
            .iter()
            .any(|w| w.contains("statefulset/db") && parts.iter().all(|p| w.contains(p)))
    };
    assert!(
        has(&["prometheus.io/port: 9187", "prescale-admin", "PodMonitor"]),
        "{err}"
    );
    assert!(
        has(&[
            "container \"db\" listens on 80",
            "--inbound-ports 8080,9187"
        ]),
        "{err}"
    );
    assert!(
        has(&["container \"debug\" uses port 9901", "admin"]),
        "{err}"
    );
    // UDP is not intercepted anyway; 9187 is covered.
    assert!(
        !err.contains("listens on 53") && !err.contains("listens on 9187"),
        "{err}"
    );
    assert_eq!(warnings.len(), 3, "{err}");

    // The app's own scrape annotations are kept, and the sidecar is still scraped
    // through its named port.
    let docs = k8s::documents(&String::from_utf8(out.stdout).unwrap());
    let t = template_of(named(&docs, "StatefulSet", "db"));
    let ann = t.metadata.as_ref().unwrap().annotations.clone().unwrap();
    assert_eq!(ann["prometheus.io/port"], "9187");
    assert!(!ann.contains_key("prometheus.io/path"));
    let sidecar = t.spec.unwrap().init_containers.unwrap()[1].clone();
    let ports = sidecar.ports.unwrap();
    assert!(ports
        .iter()
        .any(|p| p.name.as_deref() == Some("prescale-admin") && p.container_port == 9901));

    // A port excluded on purpose is not a trap.
    let out = inject(
        &[
            "-",
            "--inbound-ports",
            "8080,9187",
            "--exclude-inbound-ports",
            "80",
        ],
        TRAPS,
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("listens on 80"));

    // --strict: the same findings are errors, and nothing is written.
    let mut strict = args.to_vec();
    strict.push("--strict");
    let out = inject(&strict, TRAPS);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(out.stdout.is_empty());
    assert!(
        err.starts_with("error: <stdin>: 3 problem(s) refused by --strict"),
        "{err}"
    );
    assert!(
        err.contains("listens on 80") && err.contains("uses port 9901"),
        "{err}"
    );

    // A workload with none of these passes --strict.
    let clean = "apiVersion: v1\nkind: Pod\nmetadata: { name: p }\nspec:\n  containers: [{ name: p, image: p, ports: [{ containerPort: 8080 }] }]\n";
    let out = inject(&["-", "--inbound-ports", "8080", "--strict"], clean);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
}
