//! The profiler thread's side of anomaly detection: the source and signature of every
//! finished request (and of every shed one: a source's rate is what it sends, not what
//! it is served), judged each tick, and a signature snapshot every `drift.interval`.

use super::Anomalies;
use prescale_profiler::anomaly::snapshot::SnapshotBuilder;
use prescale_profiler::sample::{Millis, Sample};
use prescale_profiler::signature::{Model, SignatureId};
use std::sync::Arc;

/// Sources held between two ticks; beyond it they are not counted (a tick drains at
/// most the recorder's queue and the shed queue, both bounded well below this).
const MAX_PENDING: usize = 1 << 20;

/// Owned by the profiler thread.
pub struct ProfilerFeed {
    anomalies: Arc<Anomalies>,
    sources: Vec<(u64, SignatureId)>,
    builder: SnapshotBuilder,
    interval: Millis,
    next_snapshot: Option<Millis>,
}

// === impl ProfilerFeed ===

impl ProfilerFeed {
    pub fn new(anomalies: Arc<Anomalies>) -> Self {
        let interval = u64::try_from(anomalies.config().drift.interval.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        Self {
            anomalies,
            sources: Vec::new(),
            builder: SnapshotBuilder::new(),
            interval,
            next_snapshot: None,
        }
    }

    /// A finished request the profile assigned to `signature`.
    pub fn finished(&mut self, s: &Sample, signature: SignatureId) {
        if !self.anomalies.enabled() {
            return;
        }
        self.builder.record(signature, s);
        self.shed(s.arrival.source, signature);
    }

    /// A request of `source` that admission refused (its expected signature, or 0).
    pub fn shed(&mut self, source: u64, signature: SignatureId) {
        // 0: no identity was known (the request never reached admission).
        if source != 0 && self.sources.len() < MAX_PENDING && self.anomalies.enabled() {
            self.sources.push((source, signature));
        }
    }

    /// Judges the sources, and the signatures when a snapshot is due under `model`.
    pub fn tick(&mut self, now: Millis, model: &Arc<Model>) {
        if !self.anomalies.enabled() {
            return;
        }
        let due = *self.next_snapshot.get_or_insert(now + self.interval);
        let snapshot = if now >= due {
            self.next_snapshot = Some(now + self.interval);
            let snap = self.builder.take(model);
            // Before the first fit every request is unclassified: nothing to judge.
            (!model.is_empty()).then_some(snap)
        } else {
            None
        };
        self.anomalies
            .profiler_tick(now, &self.sources, snapshot.as_ref());
        self.sources.clear();
    }
}
