//! Injecting into (and removing from) one pod template: its `metadata` and `spec`.
//!
//! Everything the injector overwrites is recorded in the `prescale.io/original`
//! annotation, so `--uninject` restores the template exactly, and injecting an
//! injected template (uninject, then inject) equals injecting it once.

use serde_yaml_ng::{Mapping, Value};

pub const INJECT_ANNOTATION: &str = "prescale.io/inject";
pub const ORIGINAL_ANNOTATION: &str = "prescale.io/original";
pub const DONE: &str = "done";
pub const DISABLED: &str = "disabled";
pub const SIDECAR: &str = "prescale";
pub const INIT: &str = "prescale-init";
pub const CONFIG_VOLUME: &str = "prescale-config";
pub const DATA_VOLUME: &str = "prescale-data";
pub const INIT_RUN_VOLUME: &str = "prescale-init-run";
pub const TOKEN_VOLUME: &str = "prescale-admin-token";
pub const CONFIG_DIR: &str = "/etc/prescale";
pub const DATA_DIR: &str = "/var/lib/prescale";
/// Kubernetes' default when a pod does not set it.
const DEFAULT_GRACE_SECONDS: u64 = 30;

/// What the injected containers look like (resolved from flags and the mesh config).
#[derive(Clone, Debug)]
pub struct Settings {
    pub image: String,
    pub image_pull_policy: String,
    pub config_map: String,
    pub proxy_uid: u32,
    pub admin_port: u16,
    /// `None`: no inbound listener, inbound traffic is not intercepted.
    pub inbound_port: Option<u16>,
    /// `None`: no outbound listener, outbound traffic is not intercepted.
    pub outbound_port: Option<u16>,
    pub inbound_ports: String,
    pub exclude_inbound_ports: String,
    pub outbound_ports: String,
    pub exclude_outbound_ports: String,
    pub exclude_outbound_cidrs: String,
    /// Intercept IPv6 too.
    pub ipv6: bool,
    pub drain_grace_seconds: u64,
    pub cpu_request: String,
    pub memory_request: String,
    pub cpu_limit: Option<String>,
    pub memory_limit: Option<String>,
    /// The admin token Secret, when the mesh config reads its token from a file.
    pub admin_token: Option<TokenMount>,
}

/// A Secret mounted read-only at `dir`, holding the admin token under `key`.
#[derive(Clone, Debug)]
pub struct TokenMount {
    pub secret: String,
    pub dir: String,
    pub key: String,
}

/// What happened to one pod template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Injected,
    /// Was injected already; injected afresh with these settings.
    Reinjected,
    Uninjected,
    /// Left alone, and why.
    Skipped(String),
}

/// The prometheus / kubectl annotations the injector sets (their old values are kept).
/// An app that has scrape annotations of its own keeps them: replacing its port would
/// stop its metrics being scraped, so the sidecar is scraped by its port name instead.
fn pod_annotations(
    s: &Settings,
    first_container: Option<&str>,
    app_scraped: bool,
) -> Vec<(&'static str, String)> {
    let mut v = Vec::new();
    if !app_scraped {
        v.push(("prometheus.io/scrape", "true".to_string()));
        v.push(("prometheus.io/port", s.admin_port.to_string()));
        v.push(("prometheus.io/path", "/metrics".to_string()));
    }
    if let Some(c) = first_container {
        v.push(("kubectl.kubernetes.io/default-container", c.to_string()));
    }
    v
}

/// Injects into `template` (a mapping with `metadata` and `spec`); what it would
/// quietly break is added to `warnings`.
pub fn inject(
    template: &mut Mapping,
    s: &Settings,
    warnings: &mut Vec<String>,
) -> Result<Outcome, String> {
    let was_injected = is_injected(template);
    if was_injected {
        uninject(template)?;
    } else if let Some(why) = refuse(template) {
        return Ok(Outcome::Skipped(why));
    }
    if annotation(template, INJECT_ANNOTATION) == Some(DISABLED) {
        return Ok(Outcome::Skipped(format!(
            "opted out ({INJECT_ANNOTATION}: {DISABLED})"
        )));
    }
    let Some(spec) = template.get("spec").and_then(Value::as_mapping) else {
        return Ok(Outcome::Skipped("no pod spec".into()));
    };
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        return Ok(Outcome::Skipped(
            "hostNetwork: interception would rewrite the node's iptables".into(),
        ));
    }
    let first_container = spec
        .get("containers")
        .and_then(Value::as_sequence)
        .and_then(|c| c.first())
        .and_then(|c| c.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let Some(first_container) = first_container else {
        return Ok(Outcome::Skipped("no containers".into()));
    };
    for name in [CONFIG_VOLUME, DATA_VOLUME, INIT_RUN_VOLUME, TOKEN_VOLUME] {
        if has_named(spec, "volumes", name) {
            return Err(format!("the pod already has a volume named {name:?}"));
        }
    }
    warnings.extend(super::warnings::check(template, s));
    let app_scraped = !super::warnings::scrape_annotations(template).is_empty();

    // Record what is about to be overwritten.
    let mut had = Vec::new();
    if template.contains_key("metadata") {
        had.push("metadata");
    }
    let meta = mapping_at(template, "metadata", Some("spec"))?;
    if meta.contains_key("annotations") {
        had.push("annotations");
    }
    let annotations = mapping_at(meta, "annotations", None)?;
    let default_container = annotations
        .get("kubectl.kubernetes.io/default-container")
        .is_none()
        .then_some(first_container.as_str());
    let set = pod_annotations(s, default_container, app_scraped);
    let mut old_annotations = serde_json::Map::new();
    for (k, _) in &set {
        let old = annotations
            .get(*k)
            .and_then(Value::as_str)
            .map_or(serde_json::Value::Null, |v| v.into());
        old_annotations.insert((*k).to_string(), old);
    }
    let spec = mapping_at(template, "spec", None)?;
    let old_grace = spec
        .get("terminationGracePeriodSeconds")
        .and_then(Value::as_u64);
    for key in ["initContainers", "volumes"] {
        if spec.contains_key(key) {
            had.push(key);
        }
    }
    let original = serde_json::json!({
        "annotations": old_annotations,
        "terminationGracePeriodSeconds": old_grace,
        "had": had,
    });

    // The containers and volumes.
    let inits = seq_at(spec, "initContainers", Some("containers"))?;
    let mut new_inits = vec![init_container(s), sidecar_container(s)];
    new_inits.append(inits);
    *inits = new_inits;
    let volumes = seq_at(spec, "volumes", None)?;
    volumes.push(map([
        ("name", str_v(CONFIG_VOLUME)),
        ("configMap", map([("name", str_v(&s.config_map))])),
    ]));
    volumes.push(map([
        ("name", str_v(DATA_VOLUME)),
        ("emptyDir", Value::Mapping(Mapping::new())),
    ]));
    volumes.push(map([
        ("name", str_v(INIT_RUN_VOLUME)),
        ("emptyDir", Value::Mapping(Mapping::new())),
    ]));
    if let Some(t) = &s.admin_token {
        volumes.push(map([
            ("name", str_v(TOKEN_VOLUME)),
            (
                "secret",
                map([
                    ("secretName", str_v(&t.secret)),
                    (
                        "items",
                        Value::Sequence(vec![map([
                            ("key", str_v(&t.key)),
                            ("path", str_v(&t.key)),
                        ])]),
                    ),
                ]),
            ),
        ]));
    }
    let grace = old_grace
        .unwrap_or(DEFAULT_GRACE_SECONDS)
        .max(s.drain_grace_seconds + 5);
    spec.insert(
        str_v("terminationGracePeriodSeconds"),
        Value::Number(grace.into()),
    );

    // The annotations.
    let meta = mapping_at(template, "metadata", Some("spec"))?;
    let annotations = mapping_at(meta, "annotations", None)?;
    for (k, v) in set {
        annotations.insert(str_v(k), str_v(&v));
    }
    annotations.insert(str_v(INJECT_ANNOTATION), str_v(DONE));
    annotations.insert(str_v(ORIGINAL_ANNOTATION), str_v(&original.to_string()));
    Ok(if was_injected {
        Outcome::Reinjected
    } else {
        Outcome::Injected
    })
}

/// Removes what `inject` added and restores what it overwrote.
pub fn uninject(template: &mut Mapping) -> Result<Outcome, String> {
    if !is_injected(template) {
        return Ok(Outcome::Skipped("not injected".into()));
    }
    let original: serde_json::Value = annotation(template, ORIGINAL_ANNOTATION)
        .and_then(|t| serde_json::from_str(t).ok())
        .ok_or_else(|| format!("the {ORIGINAL_ANNOTATION} annotation is missing or damaged"))?;
    let had = |key: &str| {
        original["had"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v == key))
    };
    if let Some(spec) = template.get_mut("spec").and_then(Value::as_mapping_mut) {
        for (key, names) in [
            ("initContainers", &[INIT, SIDECAR][..]),
            (
                "volumes",
                &[CONFIG_VOLUME, DATA_VOLUME, INIT_RUN_VOLUME, TOKEN_VOLUME][..],
            ),
        ] {
            if let Some(list) = spec.get_mut(key).and_then(Value::as_sequence_mut) {
                list.retain(|item| {
                    !item
                        .get("name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| names.contains(&n))
                });
                if list.is_empty() && !had(key) {
                    spec.shift_remove(key);
                }
            }
        }
        match original["terminationGracePeriodSeconds"].as_u64() {
            Some(g) => {
                spec.insert(
                    str_v("terminationGracePeriodSeconds"),
                    Value::Number(g.into()),
                );
            }
            None => {
                spec.shift_remove("terminationGracePeriodSeconds");
            }
        }
    }
    if let Some(meta) = template.get_mut("metadata").and_then(Value::as_mapping_mut) {
        if let Some(ann) = meta.get_mut("annotations").and_then(Value::as_mapping_mut) {
            ann.shift_remove(INJECT_ANNOTATION);
            ann.shift_remove(ORIGINAL_ANNOTATION);
            if let Some(old) = original["annotations"].as_object() {
                for (k, v) in old {
                    match v.as_str() {
                        Some(v) => {
                            ann.insert(str_v(k), str_v(v));
                        }
                        None => {
                            ann.shift_remove(k.as_str());
                        }
                    }
                }
            }
            if ann.is_empty() && !had("annotations") {
                meta.shift_remove("annotations");
            }
        }
        if meta.is_empty() && !had("metadata") {
            template.shift_remove("metadata");
        }
    }
    Ok(Outcome::Uninjected)
}

/// Injected by us: the annotation says so.
fn is_injected(template: &Mapping) -> bool {
    annotation(template, INJECT_ANNOTATION) == Some(DONE)
}

/// Why a template that is not marked as injected must still be left alone.
fn refuse(template: &Mapping) -> Option<String> {
    let spec = template.get("spec").and_then(Value::as_mapping)?;
    for key in ["containers", "initContainers"] {
        for name in [SIDECAR, INIT] {
            if has_named(spec, key, name) {
                return Some(format!(
                    "already has a container named {name:?} (but no {INJECT_ANNOTATION}: {DONE} annotation)"
                ));
            }
        }
    }
    None
}

pub fn annotation<'a>(obj: &'a Mapping, key: &str) -> Option<&'a str> {
    obj.get("metadata")?.get("annotations")?.get(key)?.as_str()
}

fn has_named(spec: &Mapping, list: &str, name: &str) -> bool {
    spec.get(list)
        .and_then(Value::as_sequence)
        .is_some_and(|items| {
            items
                .iter()
                .any(|i| i.get("name").and_then(Value::as_str) == Some(name))
        })
}

/// The mapping under `key`, created (before `before`, if that key exists) when absent
/// or not a mapping.
fn mapping_at<'a>(
    m: &'a mut Mapping,
    key: &str,
    before: Option<&str>,
) -> Result<&'a mut Mapping, String> {
    if !m.get(key).is_some_and(Value::is_mapping) {
        insert_before(m, key, Value::Mapping(Mapping::new()), before);
    }
    m.get_mut(key)
        .and_then(Value::as_mapping_mut)
        .ok_or_else(|| format!("could not create {key}"))
}

/// The sequence under `key`, created (before `before`) when absent or not a sequence.
fn seq_at<'a>(
    m: &'a mut Mapping,
    key: &str,
    before: Option<&str>,
) -> Result<&'a mut Vec<Value>, String> {
    if !m.get(key).is_some_and(Value::is_sequence) {
        insert_before(m, key, Value::Sequence(Vec::new()), before);
    }
    m.get_mut(key)
        .and_then(Value::as_sequence_mut)
        .ok_or_else(|| format!("could not create {key}"))
}

/// Inserts `key` just before `before` (keeping the order a reader expects, e.g.
/// `initContainers` before `containers`), or at the end.
fn insert_before(m: &mut Mapping, key: &str, value: Value, before: Option<&str>) {
    let at = before.and_then(|b| m.keys().position(|k| k.as_str() == Some(b)));
    let Some(at) = at else {
        m.insert(str_v(key), value);
        return;
    };
    let old = std::mem::take(m);
    for (i, (k, v)) in old.into_iter().enumerate() {
        if i == at {
            m.insert(str_v(key), value.clone());
        }
        if k.as_str() != Some(key) {
            m.insert(k, v);
        }
    }
}

fn init_container(s: &Settings) -> Value {
    let mut args = vec!["init-iptables".to_string()];
    let mut flag = |name: &str, value: String| {
        args.push(format!("--{name}"));
        args.push(value);
    };
    if let Some(p) = s.inbound_port {
        flag("inbound-port", p.to_string());
    }
    if let Some(p) = s.outbound_port {
        flag("outbound-port", p.to_string());
    }
    flag("proxy-uid", s.proxy_uid.to_string());
    flag("admin-port", s.admin_port.to_string());
    for (name, v) in [
        ("inbound-ports", &s.inbound_ports),
        ("exclude-inbound-ports", &s.exclude_inbound_ports),
        ("outbound-ports", &s.outbound_ports),
        ("exclude-outbound-ports", &s.exclude_outbound_ports),
        ("exclude-outbound-cidrs", &s.exclude_outbound_cidrs),
    ] {
        if !v.is_empty() {
            flag(name, v.clone());
        }
    }
    if s.inbound_port.is_none() {
        args.push("--no-inbound".into());
    }
    if s.outbound_port.is_none() {
        args.push("--no-outbound".into());
    }
    if s.ipv6 {
        args.push("--ipv6".into());
    }
    map([
        ("name", str_v(INIT)),
        ("image", str_v(&s.image)),
        ("imagePullPolicy", str_v(&s.image_pull_policy)),
        (
            "args",
            Value::Sequence(args.iter().map(|a| str_v(a)).collect()),
        ),
        (
            "resources",
            map([
                (
                    "requests",
                    map([("cpu", str_v("10m")), ("memory", str_v("16Mi"))]),
                ),
                (
                    "limits",
                    map([("cpu", str_v("100m")), ("memory", str_v("64Mi"))]),
                ),
            ]),
        ),
        (
            "securityContext",
            map([
                ("runAsUser", Value::Number(0.into())),
                ("runAsNonRoot", Value::Bool(false)),
                ("privileged", Value::Bool(false)),
                ("allowPrivilegeEscalation", Value::Bool(false)),
                ("readOnlyRootFilesystem", Value::Bool(true)),
                (
                    "capabilities",
                    map([
                        ("add", strs(&["NET_ADMIN", "NET_RAW"])),
                        ("drop", strs(&["ALL"])),
                    ]),
                ),
            ]),
        ),
        (
            "volumeMounts",
            Value::Sequence(vec![map([
                ("name", str_v(INIT_RUN_VOLUME)),
                // iptables-legacy takes its lock in /run, read-only otherwise.
                ("mountPath", str_v("/run")),
            ])]),
        ),
        ("terminationMessagePolicy", str_v("FallbackToLogsOnError")),
    ])
}

fn sidecar_container(s: &Settings) -> Value {
    let probe = |path: &str, period: u64, failures: u64| {
        map([
            (
                "httpGet",
                map([
                    ("path", str_v(path)),
                    ("port", Value::Number(s.admin_port.into())),
                ]),
            ),
            ("periodSeconds", Value::Number(period.into())),
            ("failureThreshold", Value::Number(failures.into())),
        ])
    };
    let port = |name: &str, port: u16| {
        map([
            ("name", str_v(name)),
            ("containerPort", Value::Number(port.into())),
            ("protocol", str_v("TCP")),
        ])
    };
    let mut ports = vec![port("prescale-admin", s.admin_port)];
    if let Some(p) = s.inbound_port {
        ports.push(port("prescale-in", p));
    }
    let mut limits = Mapping::new();
    if let Some(cpu) = &s.cpu_limit {
        limits.insert(str_v("cpu"), str_v(cpu));
    }
    if let Some(mem) = &s.memory_limit {
        limits.insert(str_v("memory"), str_v(mem));
    }
    let mut resources = Mapping::new();
    resources.insert(
        str_v("requests"),
        map([
            ("cpu", str_v(&s.cpu_request)),
            ("memory", str_v(&s.memory_request)),
        ]),
    );
    if !limits.is_empty() {
        resources.insert(str_v("limits"), Value::Mapping(limits));
    }
    let mut mounts = vec![
        map([
            ("name", str_v(CONFIG_VOLUME)),
            ("mountPath", str_v(CONFIG_DIR)),
            ("readOnly", Value::Bool(true)),
        ]),
        map([("name", str_v(DATA_VOLUME)), ("mountPath", str_v(DATA_DIR))]),
    ];
    if let Some(t) = &s.admin_token {
        mounts.push(map([
            ("name", str_v(TOKEN_VOLUME)),
            ("mountPath", str_v(&t.dir)),
            ("readOnly", Value::Bool(true)),
        ]));
    }
    map([
        ("name", str_v(SIDECAR)),
        ("image", str_v(&s.image)),
        ("imagePullPolicy", str_v(&s.image_pull_policy)),
        // A native sidecar: started before the app, kept running, stopped after it.
        ("restartPolicy", str_v("Always")),
        (
            "args",
            strs(&["run", "--config", &format!("{CONFIG_DIR}/config.yaml")]),
        ),
        ("ports", Value::Sequence(ports)),
        // The app starts only once the proxy's listeners accept.
        ("startupProbe", probe("/ready", 1, 120)),
        ("readinessProbe", probe("/ready", 5, 2)),
        ("livenessProbe", probe("/live", 10, 3)),
        ("resources", Value::Mapping(resources)),
        (
            "securityContext",
            map([
                ("runAsUser", Value::Number(s.proxy_uid.into())),
                ("runAsGroup", Value::Number(s.proxy_uid.into())),
                ("runAsNonRoot", Value::Bool(true)),
                ("allowPrivilegeEscalation", Value::Bool(false)),
                ("readOnlyRootFilesystem", Value::Bool(true)),
                ("capabilities", map([("drop", strs(&["ALL"]))])),
                ("seccompProfile", map([("type", str_v("RuntimeDefault"))])),
            ]),
        ),
        ("volumeMounts", Value::Sequence(mounts)),
        ("terminationMessagePolicy", str_v("FallbackToLogsOnError")),
    ])
}

fn str_v(s: &str) -> Value {
    Value::String(s.to_string())
}

fn strs(items: &[&str]) -> Value {
    Value::Sequence(items.iter().map(|s| str_v(s)).collect())
}

fn map<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    let mut m = Mapping::with_capacity(N);
    for (k, v) in pairs {
        m.insert(str_v(k), v);
    }
    Value::Mapping(m)
}
