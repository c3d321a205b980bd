//! Typed validation of Kubernetes manifests (shared by tests/inject.rs and
//! tests/deploy.rs): built-in kinds must deserialise into their k8s-openapi type and
//! serialise back to the same JSON (so no field was unknown, misspelt or mistyped);
//! CRDs (KEDA ScaledObject, prometheus-operator PodMonitor) are checked for apiVersion,
//! kind and their required fields.
#![allow(dead_code)]

use k8s_openapi::api::{apps, autoscaling, batch, core, networking, policy, rbac};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use serde_yaml_ng::Value;

/// Every non-empty document of a YAML stream.
pub fn documents(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// `apiVersion/kind` of a document.
pub fn kind_of(doc: &Value) -> String {
    format!(
        "{}/{}",
        doc["apiVersion"].as_str().unwrap_or("?"),
        doc["kind"].as_str().unwrap_or("?")
    )
}

/// Deserialises into `T` and checks nothing was lost on the way back.
pub fn typed<T: DeserializeOwned + Serialize>(doc: &Value) -> Result<T, String> {
    let obj: T = serde_yaml_ng::from_value(doc.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&obj).map_err(|e| e.to_string())?;
    let orig = serde_json::to_value(doc).map_err(|e| e.to_string())?;
    if let Some(diff) = first_difference("", &orig, &back) {
        return Err(format!(
            "does not round-trip through its typed object (unknown or mistyped field?): {diff}"
        ));
    }
    Ok(obj)
}

/// The first path where `a` has something `b` lacks or differs on.
fn first_difference(path: &str, a: &Json, b: &Json) -> Option<String> {
    match (a, b) {
        (Json::Object(x), Json::Object(y)) => x.iter().find_map(|(k, v)| match y.get(k) {
            Some(w) => first_difference(&format!("{path}.{k}"), v, w),
            None => Some(format!("{path}.{k} is not a field of the type")),
        }),
        (Json::Array(x), Json::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (v, w))| first_difference(&format!("{path}[{i}]"), v, w)),
        (Json::Number(x), Json::Number(y)) if x.as_f64() == y.as_f64() => None,
        _ if a == b => None,
        _ => Some(format!("{path}: {a} became {b}")),
    }
}

/// Validates one manifest of any kind this project ships; `Err` names the problem.
pub fn validate(doc: &Value) -> Result<(), String> {
    let kind = kind_of(doc);
    let name = doc["metadata"]["name"].as_str().unwrap_or("<unnamed>");
    let at = |e: String| format!("{kind} {name}: {e}");
    match kind.as_str() {
        "v1/Pod" => typed::<core::v1::Pod>(doc).map(drop),
        "v1/Service" => typed::<core::v1::Service>(doc).map(drop),
        "v1/ConfigMap" => typed::<core::v1::ConfigMap>(doc).map(drop),
        "v1/Secret" => typed::<core::v1::Secret>(doc).map(drop),
        "v1/ServiceAccount" => typed::<core::v1::ServiceAccount>(doc).map(drop),
        "v1/Namespace" => typed::<core::v1::Namespace>(doc).map(drop),
        "rbac.authorization.k8s.io/v1/Role" => typed::<rbac::v1::Role>(doc).map(drop),
        "rbac.authorization.k8s.io/v1/RoleBinding" => typed::<rbac::v1::RoleBinding>(doc).map(drop),
        "rbac.authorization.k8s.io/v1/ClusterRole" => typed::<rbac::v1::ClusterRole>(doc).map(drop),
        "rbac.authorization.k8s.io/v1/ClusterRoleBinding" => {
            typed::<rbac::v1::ClusterRoleBinding>(doc).map(drop)
        }
        "policy/v1/PodDisruptionBudget" => typed::<policy::v1::PodDisruptionBudget>(doc).map(drop),
        "networking.k8s.io/v1/NetworkPolicy" => {
            typed::<networking::v1::NetworkPolicy>(doc).map(drop)
        }
        "v1/List" => {
            for item in doc["items"].as_sequence().cloned().unwrap_or_default() {
                validate(&item)?;
            }
            Ok(())
        }
        "apps/v1/Deployment" => typed::<apps::v1::Deployment>(doc).map(drop),
        "apps/v1/StatefulSet" => typed::<apps::v1::StatefulSet>(doc).map(drop),
        "apps/v1/DaemonSet" => typed::<apps::v1::DaemonSet>(doc).map(drop),
        "apps/v1/ReplicaSet" => typed::<apps::v1::ReplicaSet>(doc).map(drop),
        "batch/v1/Job" => typed::<batch::v1::Job>(doc).map(drop),
        "batch/v1/CronJob" => typed::<batch::v1::CronJob>(doc).map(drop),
        "autoscaling/v2/HorizontalPodAutoscaler" => {
            typed::<autoscaling::v2::HorizontalPodAutoscaler>(doc).map(drop)
        }
        "keda.sh/v1alpha1/ScaledObject" => scaled_object(doc),
        "monitoring.coreos.com/v1/PodMonitor" => pod_monitor(doc),
        other => Err(format!("no validator for {other}")),
    }
    .map_err(at)
}

fn need_str<'a>(v: &'a Value, path: &str) -> Result<&'a str, String> {
    let mut cur = v;
    for key in path.split('.') {
        cur = &cur[key];
    }
    cur.as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("{path} must be a non-empty string"))
}

/// KEDA `ScaledObject` (keda.sh/v1alpha1): scaleTargetRef.name, trigger types and
/// their required metadata (KEDA's metadata is a map of strings).
fn scaled_object(doc: &Value) -> Result<(), String> {
    need_str(doc, "metadata.name")?;
    need_str(doc, "spec.scaleTargetRef.name")?;
    let spec = &doc["spec"];
    let min = spec["minReplicaCount"].as_u64();
    let max = spec["maxReplicaCount"].as_u64();
    if let (Some(min), Some(max)) = (min, max) {
        if min > max {
            return Err(format!("minReplicaCount {min} > maxReplicaCount {max}"));
        }
    }
    let triggers = spec["triggers"]
        .as_sequence()
        .filter(|t| !t.is_empty())
        .ok_or("spec.triggers must be a non-empty list")?;
    for (i, t) in triggers.iter().enumerate() {
        let ty = need_str(t, "type").map_err(|e| format!("triggers[{i}].{e}"))?;
        let meta = t["metadata"]
            .as_mapping()
            .ok_or(format!("triggers[{i}].metadata must be a map"))?;
        for (k, v) in meta {
            if !v.is_string() {
                return Err(format!(
                    "triggers[{i}].metadata.{}: KEDA metadata values are strings",
                    k.as_str().unwrap_or("?")
                ));
            }
        }
        let required: &[&str] = match ty {
            "prometheus" => &["serverAddress", "query", "threshold"],
            "external" | "external-push" => &["scalerAddress"],
            other => return Err(format!("triggers[{i}]: unexpected trigger type {other}")),
        };
        for key in required {
            need_str(&t["metadata"], key).map_err(|e| format!("triggers[{i}].metadata.{e}"))?;
        }
        if ty == "prometheus" {
            let th = need_str(&t["metadata"], "threshold")?;
            th.parse::<f64>()
                .map_err(|_| format!("triggers[{i}].metadata.threshold {th:?} is not a number"))?;
        }
    }
    Ok(())
}

/// prometheus-operator `PodMonitor` (monitoring.coreos.com/v1): a selector and at
/// least one endpoint naming a port and a path; relabelings well-formed.
fn pod_monitor(doc: &Value) -> Result<(), String> {
    need_str(doc, "metadata.name")?;
    let spec = &doc["spec"];
    if !spec["selector"].is_mapping() {
        return Err("spec.selector must be a label selector (a map)".into());
    }
    let eps = spec["podMetricsEndpoints"]
        .as_sequence()
        .filter(|e| !e.is_empty())
        .ok_or("spec.podMetricsEndpoints must be a non-empty list")?;
    for (i, ep) in eps.iter().enumerate() {
        need_str(ep, "port").map_err(|e| format!("podMetricsEndpoints[{i}].{e}"))?;
        let path = need_str(ep, "path").map_err(|e| format!("podMetricsEndpoints[{i}].{e}"))?;
        if !path.starts_with('/') {
            return Err(format!("podMetricsEndpoints[{i}].path must start with /"));
        }
        for (j, r) in ep["relabelings"]
            .as_sequence()
            .cloned()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let ok_sources = r["sourceLabels"]
                .as_sequence()
                .is_some_and(|s| s.iter().all(Value::is_string));
            if !ok_sources || need_str(r, "targetLabel").is_err() {
                return Err(format!(
                    "podMetricsEndpoints[{i}].relabelings[{j}] needs sourceLabels (strings) and targetLabel"
                ));
            }
        }
    }
    Ok(())
}
