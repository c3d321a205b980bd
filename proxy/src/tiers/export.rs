//! What tier policies show: admission metrics, refreshed from the policy's atomic
//! counters each time `/metrics` is rendered (never per request), and `GET /v1/tiers`.
//!
//! Label values are tier and cluster names from the config (at most 16 tiers, so at
//! most 16 × 9 decision series) and fixed decision and reason names.

use super::TierPolicy;
use crate::metrics as m;
use prescale_policies::sources::SourceOverride;
use prescale_policies::RejectReason;
use std::collections::BTreeSet;

/// `(cluster, tier)` in-flight series exported last time, so a tier removed by a
/// reload is zeroed rather than left stale. Kept by the one exporter (the admin API).
pub type Exported = BTreeSet<(String, String)>;

/// Publishes the policy's counters and gauges. Off the data path (admin thread).
pub fn export(policy: &TierPolicy, exported: &mut Exported) {
    let snap = policy.admission.snapshot();
    for (tier, kind, reason, n) in snap.decision_counts() {
        let reason = reason.map_or("none", RejectReason::as_str);
        ::metrics::counter!(m::ADMISSION_DECISIONS, "tier" => tier.to_string(), "decision" => kind.as_str(), "reason" => reason)
            .absolute(n);
    }
    let cluster_name =
        |c: &Option<String>| c.clone().unwrap_or_else(|| policy.route_cluster.clone());
    for c in &snap.clusters {
        let cluster = cluster_name(&c.cluster);
        ::metrics::gauge!(m::ADMISSION_LIMIT, "cluster" => cluster.clone())
            .set(f64::from(c.limit.limit));
        ::metrics::gauge!(m::ADMISSION_WAITING, "cluster" => cluster.clone())
            .set(f64::from(c.waiting));
        ::metrics::gauge!(m::ADMISSION_CLUSTER_IN_FLIGHT, "cluster" => cluster)
            .set(f64::from(c.inflight));
    }
    let mut now = BTreeSet::new();
    for t in &snap.tiers {
        let key = (cluster_name(&t.cluster), t.name.clone());
        ::metrics::gauge!(m::ADMISSION_IN_FLIGHT, "cluster" => key.0.clone(), "tier" => key.1.clone())
            .set(f64::from(t.inflight));
        ::metrics::counter!(m::ADMISSION_QUEUED, "tier" => t.name.clone()).absolute(t.queued);
        ::metrics::counter!(m::ADMISSION_OVERFLOWED, "tier" => t.name.clone())
            .absolute(t.overflowed);
        now.insert(key);
    }
    ::metrics::gauge!(m::PRESHED_LEVEL).set(snap.preshed_level);
    for (cluster, tier) in exported.difference(&now) {
        ::metrics::gauge!(m::ADMISSION_IN_FLIGHT, "cluster" => cluster.clone(), "tier" => tier.clone())
            .set(0.0);
    }
    *exported = now;
}

/// `GET /v1/tiers`: the admission snapshot with the route cluster's name, whether the
/// policy is enforced, and the tier header.
pub fn tiers_json(policy: &TierPolicy) -> serde_json::Value {
    let mut v = serde_json::to_value(policy.admission.snapshot()).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("route_cluster".into(), policy.route_cluster.clone().into());
        o.insert("enforcing".into(), policy.enforcing.into());
        o.insert(
            "header".into(),
            policy.admission.tiers().header().to_string().into(),
        );
        // Anomaly remediation in force: what each overridden source gets, and for how
        // long still (sources by hash, as `GET /v1/anomalies` names them).
        let now = policy.clock.now_micros();
        let table = policy.admission.tiers();
        let overrides: Vec<serde_json::Value> = policy
            .admission
            .source_overrides(now)
            .into_iter()
            .map(|e| {
                let action = match e.action {
                    SourceOverride::Demote(t) => serde_json::json!({
                        "demote_to": table.get(t).map(|t| t.name.as_str()),
                    }),
                    SourceOverride::RateLimit { rps } => {
                        serde_json::json!({ "rate_limit_rps": rps })
                    }
                    SourceOverride::Reject => serde_json::json!("reject"),
                };
                serde_json::json!({
                    "subject": prescale_profiler::anomaly::source_subject(e.source),
                    "action": action,
                    "expires_in_seconds": e.until.saturating_sub(now) / 1_000_000,
                })
            })
            .collect();
        o.insert("source_overrides".into(), overrides.into());
    }
    v
}
