//! What injecting a pod template would quietly break, found before it is changed:
//! the app's own Prometheus scrape annotations, app ports the interception rules
//! leave out, and app ports the sidecar itself listens on.
//!
//! Each finding is a warning (stderr, exit 0) or, with `--strict`, an error.

use super::pod::Settings;
use crate::iptables::PortList;
use serde_yaml_ng::{Mapping, Value};

/// The annotation prefix of Prometheus' pod-annotation discovery convention.
pub const SCRAPE_PREFIX: &str = "prometheus.io/";

/// Findings for one template, in the order a reader would fix them.
pub fn check(template: &Mapping, s: &Settings) -> Vec<String> {
    let mut out = Vec::new();
    let own = scrape_annotations(template);
    if !own.is_empty() {
        out.push(format!(
            "keeps the app's own scrape annotations ({}); the sidecar's metrics are then \
             scraped through its container port prescale-admin (the PodMonitor in \
             deploy/kubernetes/podmonitor.yaml), not through prometheus.io annotations",
            own.join(", ")
        ));
    }
    let ports = app_ports(template);
    let sidecar = [
        ("admin", Some(s.admin_port)),
        ("inbound listener", s.inbound_port),
        ("outbound listener", s.outbound_port),
    ];
    let clash = |port: u16| sidecar.iter().find(|(_, p)| *p == Some(port));
    if s.inbound_port.is_some() {
        let inbound: PortList = s.inbound_ports.parse().unwrap_or_default();
        let excluded: PortList = s.exclude_inbound_ports.parse().unwrap_or_default();
        // An empty list intercepts every port; a clash is reported below instead.
        if !inbound.0.is_empty() {
            for (container, port) in &ports {
                if !inbound.contains(*port) && !excluded.contains(*port) && clash(*port).is_none() {
                    out.push(format!(
                        "container {container:?} listens on {port}, which --inbound-ports {} \
                         does not intercept: its traffic bypasses the sidecar (add it to \
                         --inbound-ports, or to --exclude-inbound-ports to say so)",
                        s.inbound_ports
                    ));
                }
            }
        }
    }
    for (container, port) in &ports {
        if let Some((what, _)) = clash(*port) {
            out.push(format!(
                "container {container:?} uses port {port}, the sidecar's {what} port: \
                 one of them cannot bind it (change the app's port or the mesh config's)"
            ));
        }
    }
    out
}

/// The template's `prometheus.io/*` annotations as `key: value`, sorted.
pub fn scrape_annotations(template: &Mapping) -> Vec<String> {
    let Some(ann) = template
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_mapping)
    else {
        return Vec::new();
    };
    let mut out: Vec<String> = ann
        .iter()
        .filter_map(|(k, v)| {
            let k = k.as_str()?;
            k.starts_with(SCRAPE_PREFIX).then(|| {
                let v = v.as_str().map_or_else(|| format!("{v:?}"), str::to_string);
                format!("{k}: {v}")
            })
        })
        .collect();
    out.sort();
    out
}

/// `(container, port)` for every TCP `containerPort` of the app's containers and of
/// its own init containers (a native sidecar of the app listens too).
fn app_ports(template: &Mapping) -> Vec<(String, u16)> {
    let Some(spec) = template.get("spec").and_then(Value::as_mapping) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for list in ["initContainers", "containers"] {
        let items = spec.get(list).and_then(Value::as_sequence);
        for c in items.into_iter().flatten() {
            let name = c.get("name").and_then(Value::as_str).unwrap_or("<unnamed>");
            if [super::pod::SIDECAR, super::pod::INIT].contains(&name) {
                continue;
            }
            let ports = c.get("ports").and_then(Value::as_sequence);
            for p in ports.into_iter().flatten() {
                let tcp = p
                    .get("protocol")
                    .and_then(Value::as_str)
                    .is_none_or(|proto| proto == "TCP");
                let port = p
                    .get("containerPort")
                    .and_then(Value::as_u64)
                    .and_then(|n| u16::try_from(n).ok());
                if let (true, Some(port)) = (tcp, port) {
                    out.push((name.to_string(), port));
                }
            }
        }
    }
    out
}
