//! `prescale inject` (like `linkerd inject`): reads Kubernetes YAML and writes it back
//! with the prescale sidecar added to every pod template it knows (Pod, Deployment,
//! StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, and `List`s of them).
//!
//! The sidecar is a native sidecar (an init container with `restartPolicy: Always`,
//! Kubernetes 1.29+), so the app starts once the proxy is ready and Jobs can finish;
//! a second init container runs `prescale init-iptables`. Documents of other kinds,
//! opted-out workloads and documents left unchanged are written back byte for byte;
//! changed documents are re-serialised (comments heading them are kept, comments
//! inside them are lost).

mod docs;
mod pod;
mod warnings;

use crate::iptables::{CidrList, PortList};
use pod::{Outcome, Settings};
use prescale_proxy::config::Direction;
use prescale_proxy::MeshConfig;
use serde_yaml_ng::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Add the prescale sidecar to Kubernetes workloads (or remove it with --uninject).
#[derive(clap::Args, Debug, Clone)]
pub struct InjectArgs {
    /// Kubernetes YAML (one or more documents): a file, or `-` for stdin.
    pub input: PathBuf,
    /// Remove the sidecar instead, restoring what injection changed.
    #[arg(long)]
    pub uninject: bool,
    /// Refuse (exit 64, nothing written) instead of warning when injection would
    /// leave app ports unintercepted, clash with the sidecar's ports, or meet the
    /// app's own scrape annotations.
    #[arg(long)]
    pub strict: bool,
    /// The ConfigMap holding the mesh config under the key `config.yaml` [default:
    /// the --mesh-config ConfigMap's name, else prescale-config].
    #[arg(long)]
    pub config_map: Option<String>,
    /// The mesh config the sidecar will run (a config file, or a ConfigMap manifest
    /// holding it as `config.yaml`): ports and drain grace are taken from it.
    #[arg(long)]
    pub mesh_config: Option<PathBuf>,
    /// The Secret mounted where the mesh config's `admin.token_file` points (its key
    /// named as the file); only used when the mesh config sets `admin.token_file`.
    #[arg(long, default_value = "prescale-admin-token")]
    pub admin_token_secret: String,
    /// The prescale container image.
    #[arg(long, default_value = concat!("ghcr.io/prescale/prescale:", env!("CARGO_PKG_VERSION")))]
    pub image: String,
    /// The injected containers' imagePullPolicy: Always, IfNotPresent or Never.
    #[arg(long, default_value = "IfNotPresent")]
    pub image_pull_policy: String,
    /// The UID (and GID) the proxy runs as; its traffic is never intercepted.
    #[arg(long, default_value_t = 2102)]
    pub proxy_uid: u32,
    /// The admin port [default: from --mesh-config, else 9901].
    #[arg(long)]
    pub admin_port: Option<u16>,
    /// The inbound listener's port [default: from --mesh-config, else 4143].
    #[arg(long)]
    pub inbound_port: Option<u16>,
    /// The outbound listener's port [default: from --mesh-config, else 4140].
    #[arg(long)]
    pub outbound_port: Option<u16>,
    /// Also intercept IPv6 (the init container gets `--ipv6`) [default: when the
    /// mesh config has a listener on an IPv6 address].
    #[arg(long)]
    pub ipv6: bool,
    /// Drain grace of the sidecar; terminationGracePeriodSeconds is raised to at
    /// least this plus 5 s [default: from --mesh-config, else 25s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub drain_grace: Option<Duration>,
    /// Inbound ports to intercept [default: the ports of the inbound listener's
    /// cluster in --mesh-config, else every port].
    #[arg(long)]
    pub inbound_ports: Option<String>,
    /// Inbound ports never intercepted, e.g. `22,8000-8100` [default: none].
    #[arg(long, default_value = "", hide_default_value = true)]
    pub exclude_inbound_ports: String,
    /// Outbound ports to intercept [default: every port]. The outbound listener
    /// speaks HTTP: leave TLS and other protocols out (or exclude them).
    #[arg(long, default_value = "", hide_default_value = true)]
    pub outbound_ports: String,
    /// Outbound destination ports never intercepted, e.g. `443,5432` [default: none].
    #[arg(long, default_value = "", hide_default_value = true)]
    pub exclude_outbound_ports: String,
    /// Outbound destination networks never intercepted, e.g. `10.96.0.1/32`
    /// [default: none].
    #[arg(long, default_value = "", hide_default_value = true)]
    pub exclude_outbound_cidrs: String,
    /// The sidecar's CPU request.
    #[arg(long, default_value = "100m")]
    pub proxy_cpu_request: String,
    /// The sidecar's memory request.
    #[arg(long, default_value = "64Mi")]
    pub proxy_memory_request: String,
    /// The sidecar's CPU limit [default: none].
    #[arg(long)]
    pub proxy_cpu_limit: Option<String>,
    /// The sidecar's memory limit; empty for none.
    #[arg(long, default_value = "256Mi")]
    pub proxy_memory_limit: String,
}

#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("{0}: {1}")]
    Read(String, std::io::Error),
    #[error("{file}:{line}:{column}: {reason}")]
    Yaml {
        file: String,
        line: usize,
        column: usize,
        reason: String,
    },
    #[error("{file}: {what}: {reason}")]
    Workload {
        file: String,
        what: String,
        reason: String,
    },
    #[error("--mesh-config {0}: {1}")]
    MeshConfig(String, String),
    #[error("{0}")]
    Args(String),
    #[error("writing the output: {0}")]
    Write(std::io::Error),
    #[error("{file}: {} problem(s) refused by --strict:\n  {}", .warnings.len(), .warnings.join("\n  "))]
    Strict { file: String, warnings: Vec<String> },
}

/// Exit 0 on success, 64 on bad input (nothing is written), 1 when writing failed.
pub fn main(args: &InjectArgs) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ InjectError::Write(_)) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(64)
        }
    }
}

pub fn run(args: &InjectArgs) -> Result<(), InjectError> {
    let settings = settings(args)?;
    let (name, input) = read_input(&args.input)?;
    let (output, report, warnings) = transform(&name, &input, &settings, args.uninject)?;
    if args.strict && !warnings.is_empty() {
        return Err(InjectError::Strict {
            file: name,
            warnings,
        });
    }
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(output.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(InjectError::Write)?;
    for line in report {
        eprintln!("{line}");
    }
    for w in warnings {
        eprintln!("warning: {w}");
    }
    Ok(())
}

/// What [`transform`] made: the output, one report line per workload, and warnings
/// (each naming its workload).
type Transformed = (String, Vec<String>, Vec<String>);

/// Transforms a whole stream.
pub fn transform(
    file: &str,
    input: &str,
    s: &Settings,
    uninject: bool,
) -> Result<Transformed, InjectError> {
    let mut out = Vec::new();
    let mut report = Vec::new();
    let mut warnings = Vec::new();
    for raw in docs::split(input) {
        if docs::is_blank(&raw.text) {
            out.push((raw.separator, raw.text));
            continue;
        }
        let mut value: Value = serde_yaml_ng::from_str(&raw.text).map_err(|e| {
            let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
            InjectError::Yaml {
                file: file.to_string(),
                line: raw.first_line + line.saturating_sub(1),
                column,
                reason: e.to_string(),
            }
        })?;
        let before = value.clone();
        visit(&mut value, s, uninject, &mut report, &mut warnings).map_err(|(what, reason)| {
            InjectError::Workload {
                file: file.to_string(),
                what,
                reason,
            }
        })?;
        if value == before {
            out.push((raw.separator, raw.text));
        } else {
            let text = serde_yaml_ng::to_string(&value).map_err(|e| InjectError::Yaml {
                file: file.to_string(),
                line: raw.first_line,
                column: 0,
                reason: e.to_string(),
            })?;
            // Comments heading the document stay; those inside it are lost.
            out.push((raw.separator, docs::leading_comments(&raw.text) + &text));
        }
    }
    Ok((docs::join(&out), report, warnings))
}

/// Injects into one object (recursing into `List` items); errors name the object.
fn visit(
    doc: &mut Value,
    s: &Settings,
    uninject: bool,
    report: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Result<(), (String, String)> {
    let Some(obj) = doc.as_mapping_mut() else {
        return Ok(());
    };
    let kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let name = obj
        .get("metadata")
        .and_then(|m| m.get("name").or_else(|| m.get("generateName")))
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>")
        .to_string();
    let what = format!("{}/{name}", kind.to_ascii_lowercase());
    if kind == "List" || (kind.ends_with("List") && obj.contains_key("items")) {
        if let Some(items) = obj.get_mut("items").and_then(Value::as_sequence_mut) {
            for item in items {
                visit(item, s, uninject, report, warnings)?;
            }
        }
        return Ok(());
    }
    if !uninject && pod::annotation(obj, pod::INJECT_ANNOTATION) == Some(pod::DISABLED) {
        report.push(format!(
            "{what}: skipped: opted out ({}: {})",
            pod::INJECT_ANNOTATION,
            pod::DISABLED
        ));
        return Ok(());
    }
    let path: &[&str] = match kind.as_str() {
        "Pod" => &[],
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "Job"
        | "ReplicationController" => &["spec", "template"],
        "CronJob" => &["spec", "jobTemplate", "spec", "template"],
        _ => {
            if !kind.is_empty() {
                report.push(format!("{what}: skipped: kind {kind} has no pod template"));
            }
            return Ok(());
        }
    };
    let mut template = Some(&mut *obj);
    for key in path {
        template = template
            .and_then(|m| m.get_mut(*key))
            .and_then(Value::as_mapping_mut);
    }
    let Some(template) = template else {
        report.push(format!("{what}: skipped: no pod template"));
        return Ok(());
    };
    let mut found = Vec::new();
    let outcome = if uninject {
        pod::uninject(template)
    } else {
        pod::inject(template, s, &mut found)
    }
    .map_err(|reason| (what.clone(), reason))?;
    warnings.extend(found.into_iter().map(|w| format!("{what}: {w}")));
    report.push(match outcome {
        Outcome::Injected => format!("{what}: injected"),
        Outcome::Reinjected => format!("{what}: already injected; refreshed with these settings"),
        Outcome::Uninjected => format!("{what}: uninjected"),
        Outcome::Skipped(why) => format!("{what}: skipped: {why}"),
    });
    Ok(())
}

fn read_input(path: &Path) -> Result<(String, String), InjectError> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| InjectError::Read("<stdin>".into(), e))?;
        return Ok(("<stdin>".into(), text));
    }
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| InjectError::Read(name.clone(), e))?;
    Ok((name, text))
}

/// What the mesh config says about ports and drain.
#[derive(Default)]
struct FromMesh {
    config_map: Option<String>,
    admin_port: Option<u16>,
    inbound_port: Option<Option<u16>>,
    outbound_port: Option<Option<u16>>,
    inbound_ports: Option<String>,
    drain_grace: Option<Duration>,
    /// Some listener binds an IPv6 address, so IPv6 can be intercepted too.
    ipv6: bool,
    /// `admin.token_file`, resolved against the config's mount directory.
    admin_token_file: Option<PathBuf>,
}

fn from_mesh(path: &Path) -> Result<FromMesh, InjectError> {
    let file = path.display().to_string();
    let bad = |reason: String| InjectError::MeshConfig(file.clone(), reason);
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let doc: Value = serde_yaml_ng::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let mut out = FromMesh::default();
    let config_text = if doc.get("kind").and_then(Value::as_str) == Some("ConfigMap") {
        out.config_map = doc
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string);
        doc.get("data")
            .and_then(|d| d.get("config.yaml"))
            .and_then(Value::as_str)
            .ok_or_else(|| bad("the ConfigMap has no data key config.yaml".into()))?
            .to_string()
    } else {
        text
    };
    // Typed, but not validated: endpoints are cluster names this machine cannot resolve.
    let cfg: MeshConfig = serde_yaml_ng::from_str(&config_text).map_err(|e| bad(e.to_string()))?;
    if cfg.admin.address.ip().is_loopback() {
        return Err(bad(format!(
            "admin.address {} is loopback: kubelet probes and Prometheus reach the admin API on the pod IP (use 0.0.0.0:{})",
            cfg.admin.address,
            cfg.admin.address.port()
        )));
    }
    out.admin_port = Some(cfg.admin.address.port());
    out.admin_token_file = cfg
        .admin
        .token_file
        .as_ref()
        .map(|f| Path::new(pod::CONFIG_DIR).join(f));
    out.drain_grace = Some(cfg.drain.grace_period);
    let inbound = cfg
        .listeners
        .iter()
        .find(|l| l.direction == Direction::Inbound);
    if let Some(l) = inbound {
        if l.address.ip().is_loopback() {
            return Err(bad(format!(
                "inbound listener {:?} binds {}: redirected connections arrive on the pod IP (use 0.0.0.0:{})",
                l.name,
                l.address,
                l.address.port()
            )));
        }
        let ports: Vec<String> = l
            .cluster
            .as_deref()
            .and_then(|c| cfg.cluster(c))
            .map(|c| {
                c.endpoints
                    .iter()
                    .filter_map(|e| e.rsplit_once(':').map(|(_, p)| p.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        if !ports.is_empty() {
            out.inbound_ports = Some(ports.join(","));
        }
    }
    out.inbound_port = Some(inbound.map(|l| l.address.port()));
    let outbound = cfg
        .listeners
        .iter()
        .find(|l| l.direction == Direction::Outbound);
    if let Some(l) = outbound {
        if !l.original_dst {
            eprintln!(
                "warning: outbound listener {:?} has no original_dst: intercepted calls that match no route are answered 404",
                l.name
            );
        }
    }
    out.outbound_port = Some(outbound.map(|l| l.address.port()));
    out.ipv6 = cfg.listeners.iter().any(|l| l.address.is_ipv6());
    Ok(out)
}

/// Flags first, then the mesh config, then defaults.
fn settings(a: &InjectArgs) -> Result<Settings, InjectError> {
    let mesh = match &a.mesh_config {
        Some(p) => from_mesh(p)?,
        None => FromMesh::default(),
    };
    let config_map = a
        .config_map
        .clone()
        .or(mesh.config_map)
        .unwrap_or_else(|| "prescale-config".into());
    if !is_dns_label_ish(&config_map) {
        return Err(InjectError::Args(format!(
            "--config-map {config_map:?} is not a valid ConfigMap name"
        )));
    }
    let admin_token = match &mesh.admin_token_file {
        None => None,
        Some(file) => Some(token_mount(file, &a.admin_token_secret)?),
    };
    let s = Settings {
        image: a.image.clone(),
        image_pull_policy: a.image_pull_policy.clone(),
        config_map,
        proxy_uid: a.proxy_uid,
        admin_port: a.admin_port.or(mesh.admin_port).unwrap_or(9901),
        inbound_port: a
            .inbound_port
            .map(Some)
            .or(mesh.inbound_port)
            .unwrap_or(Some(4143)),
        outbound_port: a
            .outbound_port
            .map(Some)
            .or(mesh.outbound_port)
            .unwrap_or(Some(4140)),
        inbound_ports: a
            .inbound_ports
            .clone()
            .or(mesh.inbound_ports)
            .unwrap_or_default(),
        exclude_inbound_ports: a.exclude_inbound_ports.clone(),
        outbound_ports: a.outbound_ports.clone(),
        exclude_outbound_ports: a.exclude_outbound_ports.clone(),
        exclude_outbound_cidrs: a.exclude_outbound_cidrs.clone(),
        ipv6: a.ipv6 || mesh.ipv6,
        drain_grace_seconds: a
            .drain_grace
            .or(mesh.drain_grace)
            .unwrap_or(Duration::from_secs(25))
            .as_secs_f64()
            .ceil() as u64,
        cpu_request: a.proxy_cpu_request.clone(),
        memory_request: a.proxy_memory_request.clone(),
        cpu_limit: a.proxy_cpu_limit.clone(),
        memory_limit: Some(a.proxy_memory_limit.clone()).filter(|m| !m.is_empty()),
        admin_token,
    };
    validate(&s)?;
    Ok(s)
}

fn validate(s: &Settings) -> Result<(), InjectError> {
    let bad = |m: String| Err(InjectError::Args(m));
    for (flag, v) in [
        ("--inbound-ports", &s.inbound_ports),
        ("--exclude-inbound-ports", &s.exclude_inbound_ports),
        ("--outbound-ports", &s.outbound_ports),
        ("--exclude-outbound-ports", &s.exclude_outbound_ports),
    ] {
        if let Err(e) = v.parse::<PortList>() {
            return bad(format!("{flag}: {e}"));
        }
    }
    if let Err(e) = s.exclude_outbound_cidrs.parse::<CidrList>() {
        return bad(format!("--exclude-outbound-cidrs: {e}"));
    }
    for (flag, q) in [
        ("--proxy-cpu-request", Some(&s.cpu_request)),
        ("--proxy-memory-request", Some(&s.memory_request)),
        ("--proxy-cpu-limit", s.cpu_limit.as_ref()),
        ("--proxy-memory-limit", s.memory_limit.as_ref()),
    ] {
        if let Some(q) = q {
            if !is_quantity(q) {
                return bad(format!(
                    "{flag} {q:?} is not a Kubernetes quantity (e.g. 100m, 64Mi)"
                ));
            }
        }
    }
    if s.image.trim().is_empty() || s.image.contains(char::is_whitespace) {
        return bad(format!("--image {:?} is not an image reference", s.image));
    }
    if !["Always", "IfNotPresent", "Never"].contains(&s.image_pull_policy.as_str()) {
        return bad("--image-pull-policy must be Always, IfNotPresent or Never".into());
    }
    if s.proxy_uid == 0 {
        return bad("--proxy-uid must not be 0: the proxy runs as a non-root user".into());
    }
    if s.inbound_port.is_some() && s.inbound_port == s.outbound_port {
        return bad("the inbound and outbound ports must differ".into());
    }
    if s.inbound_port.is_none() && s.outbound_port.is_none() {
        return bad("the mesh config has neither an inbound nor an outbound listener".into());
    }
    Ok(())
}

/// Where the admin token Secret is mounted so that `file` is its key.
fn token_mount(file: &Path, secret: &str) -> Result<pod::TokenMount, InjectError> {
    let bad = |m: String| InjectError::Args(m);
    if !is_dns_label_ish(secret) {
        return Err(bad(format!(
            "--admin-token-secret {secret:?} is not a valid Secret name"
        )));
    }
    let (Some(dir), Some(key)) = (file.parent(), file.file_name()) else {
        return Err(bad(format!(
            "admin.token_file {} has no directory and file name",
            file.display()
        )));
    };
    // A mount over the config's own directory would hide the config.
    if dir == Path::new(pod::CONFIG_DIR) || dir == Path::new("/") {
        return Err(bad(format!(
            "admin.token_file {} must be in a directory of its own (e.g. /var/run/secrets/prescale/), not {}",
            file.display(),
            dir.display()
        )));
    }
    Ok(pod::TokenMount {
        secret: secret.to_string(),
        dir: dir.display().to_string(),
        key: key.to_string_lossy().into_owned(),
    })
}

/// A DNS-1123 subdomain (what a ConfigMap name must be).
fn is_dns_label_ish(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A Kubernetes resource quantity: a decimal number with an optional suffix.
fn is_quantity(q: &str) -> bool {
    const SUFFIXES: [&str; 14] = [
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "m", "k", "M", "G", "T", "P", "E", "",
    ];
    SUFFIXES.iter().any(|suffix| {
        q.strip_suffix(suffix).is_some_and(|num| {
            !num.is_empty()
                && num.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                && num.bytes().filter(|b| *b == b'.').count() <= 1
                && num.bytes().any(|b| b.is_ascii_digit())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            image: "prescale:test".into(),
            image_pull_policy: "IfNotPresent".into(),
            config_map: "prescale-config".into(),
            proxy_uid: 2102,
            admin_port: 9901,
            inbound_port: Some(4143),
            outbound_port: Some(4140),
            inbound_ports: "8080".into(),
            exclude_inbound_ports: String::new(),
            outbound_ports: String::new(),
            exclude_outbound_ports: String::new(),
            exclude_outbound_cidrs: String::new(),
            ipv6: false,
            drain_grace_seconds: 40,
            cpu_request: "100m".into(),
            memory_request: "64Mi".into(),
            cpu_limit: None,
            memory_limit: Some("256Mi".into()),
            admin_token: None,
        }
    }

    const DEPLOYMENT: &str = "\
# the app
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: nginx
---
apiVersion: v1
kind: Service # kept as is
metadata: {name: web}
spec:
  ports: [{port: 80}]
";

    #[test]
    fn injects_once_keeps_other_documents_and_uninjects_exactly() {
        let s = settings();
        let (once, report, _) = transform("t.yaml", DEPLOYMENT, &s, false).unwrap();
        assert_eq!(
            report,
            [
                "deployment/web: injected",
                "service/web: skipped: kind Service has no pod template"
            ]
        );
        assert!(once.ends_with("---\napiVersion: v1\nkind: Service # kept as is\nmetadata: {name: web}\nspec:\n  ports: [{port: 80}]\n"), "{once}");
        let v: Value = serde_yaml_ng::from_str(once.split("\n---\n").next().unwrap()).unwrap();
        let spec = &v["spec"]["template"]["spec"];
        let keys: Vec<_> = spec
            .as_mapping()
            .unwrap()
            .keys()
            .map(|k| k.as_str().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "initContainers",
                "containers",
                "volumes",
                "terminationGracePeriodSeconds"
            ]
        );
        assert_eq!(spec["terminationGracePeriodSeconds"].as_u64(), Some(45));
        assert_eq!(spec["initContainers"][1]["restartPolicy"], "Always");

        let (twice, _, _) = transform("t.yaml", &once, &s, false).unwrap();
        assert_eq!(twice, once);

        let (back, report, _) = transform("t.yaml", &once, &s, true).unwrap();
        assert_eq!(report[0], "deployment/web: uninjected");
        let orig: Vec<Value> = DEPLOYMENT
            .split("\n---\n")
            .map(|d| serde_yaml_ng::from_str(d).unwrap())
            .collect();
        let got: Vec<Value> = back
            .split("\n---\n")
            .map(|d| serde_yaml_ng::from_str(d).unwrap())
            .collect();
        assert_eq!(got, orig);
    }

    #[test]
    fn opted_out_host_network_and_foreign_sidecars_are_left_alone() {
        let s = settings();
        let opted = DEPLOYMENT.replace(
            "  name: web\nspec:",
            "  name: web\n  annotations: {prescale.io/inject: disabled}\nspec:",
        );
        let (out, report, _) = transform("t.yaml", &opted, &s, false).unwrap();
        assert_eq!(out, opted);
        assert!(report[0].contains("opted out"), "{report:?}");
        let host = DEPLOYMENT.replace(
            "      containers:",
            "      hostNetwork: true\n      containers:",
        );
        let (out, report, _) = transform("t.yaml", &host, &s, false).unwrap();
        assert_eq!(out, host);
        assert!(report[0].contains("hostNetwork"), "{report:?}");
        let foreign = DEPLOYMENT.replace("- name: web\n", "- name: prescale\n");
        let (out, _, _) = transform("t.yaml", &foreign, &s, false).unwrap();
        assert_eq!(out, foreign);
    }

    #[test]
    fn bad_yaml_names_the_line_of_the_whole_stream() {
        let err = transform("t.yaml", "a: 1\n---\nb: [1,\n", &settings(), false).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("t.yaml:"), "{text}");
        let line: usize = text.split(':').nth(1).unwrap().parse().unwrap();
        assert!(line >= 3, "{text}");
    }

    #[test]
    fn quantities_and_names() {
        for q in ["100m", "64Mi", "1", "0.5", "2Gi", "1k"] {
            assert!(is_quantity(q), "{q}");
        }
        for q in ["", "Mi", "1.2.3", "ten", "64MB", "-1"] {
            assert!(!is_quantity(q), "{q}");
        }
        assert!(is_dns_label_ish("prescale-config"));
        assert!(!is_dns_label_ish("Prescale"));
        assert!(!is_dns_label_ish("-x"));
    }
}
