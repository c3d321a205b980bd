//! Remediation of anomalous sources: for a `source_rate` or `source_mix` anomaly, the
//! configured action (demote, rate-limit, reject) is logged, counted and — in
//! `enforce` mode — installed as a per-source override in admission until the anomaly
//! clears (then reversed, and logged again) or lapses (`max_duration` after its last
//! confirmation). In `shadow` mode (the default) nothing changes on the wire.
//!
//! The policies decide what an override does to a request (`sources::overrides`); this
//! module only maps anomalies to overrides, on the threads that raise them, never on
//! the data path.

use crate::config::{RemediationAction, RemediationConfig, RemediationMode};
use crate::metrics as m;
use crate::tiers::{LiveTiers, TierPolicy};
use metrics::Counter;
use prescale_policies::sources::SourceOverride;
use prescale_policies::TierId;
use prescale_profiler::anomaly::{subject_source, Anomaly, AnomalyKind};
use prescale_profiler::sample::Millis;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Sources with an action in force at once; beyond it an action is logged and counted
/// but not taken (it could not be reversed reliably).
pub const MAX_SOURCES: usize = 256;

/// The remediation state, shared by the threads that raise anomalies.
pub struct Remediation {
    cfg: RemediationConfig,
    /// The live tier admission it acts through; None without an inbound listener.
    tiers: Option<LiveTiers>,
    /// Per source hash: the action per anomaly kind (at most two: rate and mix).
    taken: Mutex<BTreeMap<u64, BTreeMap<AnomalyKind, Taken>>>,
    counters: BTreeMap<(AnomalyKind, RemediationAction), Counter>,
}

#[derive(Clone, Debug)]
struct Taken {
    action: RemediationAction,
    subject: String,
    /// When the anomaly began.
    since: Millis,
}

/// One action in force, for `GET /v1/anomalies`.
#[derive(Clone, Debug, Serialize)]
pub struct ActionView {
    pub kind: AnomalyKind,
    pub subject: String,
    pub action: RemediationAction,
    pub mode: RemediationMode,
    pub since: Millis,
}

// === impl Remediation ===

impl Remediation {
    pub fn new(cfg: &RemediationConfig, tiers: Option<LiveTiers>) -> Self {
        let mode = cfg.mode.as_str();
        let mut counters = BTreeMap::new();
        for (kind, action) in [
            (AnomalyKind::SourceRate, cfg.source_rate),
            (AnomalyKind::SourceMix, cfg.source_mix),
        ] {
            if action != RemediationAction::None {
                // Registered at 0, so dashboards see the series before the first action.
                let c = ::metrics::counter!(m::ANOMALY_ACTIONS, "kind" => kind.as_str(),
                    "action" => action.as_str(), "mode" => mode);
                c.increment(0);
                counters.insert((kind, action), c);
            }
        }
        Self {
            cfg: cfg.clone(),
            tiers,
            taken: Mutex::new(BTreeMap::new()),
            counters,
        }
    }

    /// A new anomaly: takes the configured action if it is about a source.
    pub fn raised(&self, a: &Anomaly) {
        let Some((source, action)) = self.action_for(a.kind, &a.subject) else {
            return;
        };
        let mode = self.cfg.mode.as_str();
        let mut taken = self.lock();
        if !taken.contains_key(&source) && taken.len() >= MAX_SOURCES {
            tracing::warn!(kind = a.kind.as_str(), subject = %a.subject, action = action.as_str(),
                mode, max = MAX_SOURCES, "remediation table full; action not taken");
            return;
        }
        taken.entry(source).or_default().insert(
            a.kind,
            Taken {
                action,
                subject: a.subject.clone(),
                since: a.since,
            },
        );
        if let Some(c) = self.counters.get(&(a.kind, action)) {
            c.increment(1);
        }
        tracing::warn!(kind = a.kind.as_str(), subject = %a.subject, action = action.as_str(),
            mode, severity = a.severity, "anomaly remediation: action taken");
        if self.cfg.mode == RemediationMode::Enforce {
            self.apply(source, taken.get(&source));
        }
    }

    /// An active anomaly confirmed again: its override's expiry moves on.
    pub fn confirmed(&self, a: &Anomaly) {
        if self.cfg.mode != RemediationMode::Enforce {
            return;
        }
        let Some(source) = subject_source(&a.subject) else {
            return;
        };
        let taken = self.lock();
        if taken.get(&source).is_some_and(|k| k.contains_key(&a.kind)) {
            self.apply(source, taken.get(&source));
        }
    }

    /// The anomaly ended: its action is reversed (the source keeps an action another
    /// of its anomalies still calls for).
    pub fn cleared(&self, kind: AnomalyKind, subject: &str) {
        let Some(source) = subject_source(subject) else {
            return;
        };
        let mut taken = self.lock();
        let Some(kinds) = taken.get_mut(&source) else {
            return;
        };
        let Some(t) = kinds.remove(&kind) else {
            return;
        };
        tracing::info!(
            kind = kind.as_str(),
            subject,
            action = t.action.as_str(),
            mode = self.cfg.mode.as_str(),
            "anomaly remediation: action reversed"
        );
        if kinds.is_empty() {
            taken.remove(&source);
        }
        if self.cfg.mode == RemediationMode::Enforce {
            self.apply(source, taken.get(&source));
        }
    }

    /// Actions in force, oldest first.
    pub fn actions(&self) -> Vec<ActionView> {
        let taken = self.lock();
        let mut out: Vec<ActionView> = taken
            .values()
            .flat_map(|kinds| kinds.iter())
            .map(|(kind, t)| ActionView {
                kind: *kind,
                subject: t.subject.clone(),
                action: t.action,
                mode: self.cfg.mode,
                since: t.since,
            })
            .collect();
        out.sort_by_key(|a| a.since);
        out
    }

    fn action_for(&self, kind: AnomalyKind, subject: &str) -> Option<(u64, RemediationAction)> {
        let action = match kind {
            AnomalyKind::SourceRate => self.cfg.source_rate,
            AnomalyKind::SourceMix => self.cfg.source_mix,
            _ => return None,
        };
        (action != RemediationAction::None)
            .then(|| subject_source(subject).map(|s| (s, action)))
            .flatten()
    }

    /// Installs the strongest action `kinds` call for on `source`, or clears its
    /// override when there is none.
    fn apply(&self, source: u64, kinds: Option<&BTreeMap<AnomalyKind, Taken>>) {
        let Some(policy) = self.tiers.as_ref().and_then(LiveTiers::load) else {
            tracing::warn!(source = %format!("{source:016x}"),
                "no tier admission to remediate through (no inbound listener)");
            return;
        };
        let strongest = kinds.and_then(|k| k.values().map(|t| t.action).max());
        let action = match strongest {
            None | Some(RemediationAction::None) => {
                policy.admission.clear_source_override(source);
                return;
            }
            Some(RemediationAction::Demote) => match demote_target(&policy, &self.cfg) {
                Some(t) => SourceOverride::Demote(t),
                None => {
                    tracing::warn!("no tier to demote to; remediation skipped");
                    return;
                }
            },
            Some(RemediationAction::RateLimit) => SourceOverride::RateLimit {
                rps: self.cfg.rate_limit_rps,
            },
            Some(RemediationAction::Reject) => SourceOverride::Reject,
        };
        let now = policy.clock.now_micros();
        let lapse = u64::try_from(self.cfg.max_duration.as_micros()).unwrap_or(u64::MAX);
        if let Err(e) =
            policy
                .admission
                .set_source_override(source, action, now, now.saturating_add(lapse))
        {
            tracing::error!(source = %format!("{source:016x}"), error = %e,
                "anomaly remediation could not be enforced");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, BTreeMap<AnomalyKind, Taken>>> {
        self.taken.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `demote_to`, or the least important sheddable tier (the least important tier of
/// all when none is sheddable).
fn demote_target(policy: &TierPolicy, cfg: &RemediationConfig) -> Option<TierId> {
    let table = policy.admission.tiers();
    if let Some(name) = &cfg.demote_to {
        return table.by_name(name);
    }
    table
        .iter()
        .filter(|(_, t)| t.sheddable)
        .max_by_key(|(_, t)| t.priority)
        .or_else(|| table.iter().max_by_key(|(_, t)| t.priority))
        .map(|(id, _)| id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prescale_profiler::anomaly::{source_subject, Evidence};

    fn anomaly(kind: AnomalyKind, source: u64) -> Anomaly {
        Anomaly {
            kind,
            subject: source_subject(source),
            since: 10,
            updated: 10,
            severity: 20.0,
            direction: None,
            evidence: Evidence::new(),
        }
    }

    #[test]
    fn source_anomalies_map_to_their_configured_action_and_are_reversed() {
        let cfg = RemediationConfig {
            source_mix: RemediationAction::Reject,
            ..RemediationConfig::default()
        };
        let r = Remediation::new(&cfg, None);
        // Not about a source, or a kind without an action: nothing.
        r.raised(&anomaly(AnomalyKind::CostDrift, 7));
        assert!(r.actions().is_empty());

        // Shadow mode: recorded (and counted), nothing to enforce through.
        r.raised(&anomaly(AnomalyKind::SourceRate, 7));
        r.raised(&anomaly(AnomalyKind::SourceMix, 7));
        let actions = r.actions();
        assert_eq!(actions.len(), 2);
        assert!(actions.iter().all(|a| a.mode == RemediationMode::Shadow));
        assert_eq!(
            actions.iter().map(|a| a.action).max(),
            Some(RemediationAction::Reject)
        );
        // Each clear reverses its own action only.
        r.cleared(AnomalyKind::SourceMix, &source_subject(7));
        assert_eq!(r.actions().len(), 1);
        r.cleared(AnomalyKind::SourceRate, &source_subject(7));
        assert!(r.actions().is_empty());
        // A stray clear is harmless.
        r.cleared(AnomalyKind::SourceRate, "total");
    }

    #[test]
    fn the_action_table_is_bounded() {
        let r = Remediation::new(&RemediationConfig::default(), None);
        for s in 0..(MAX_SOURCES as u64 + 20) {
            r.raised(&anomaly(AnomalyKind::SourceRate, s));
        }
        assert_eq!(r.actions().len(), MAX_SOURCES);
    }
}
