//! Per-source behaviour: the heaviest sources (Space-Saving top-K, so a million
//! distinct clients cost no more than K) each keep a baseline of their own rate and
//! signature mix; a source sending many times its usual rate (a scraper, a runaway
//! client) or a very different mix of work (abuse of an expensive endpoint) is flagged.
//!
//! Requests are counted with [`SourceMonitor::record`] (O(1), O(K) when a newcomer
//! evicts the smallest source) and judged per interval by [`SourceMonitor::tick`].

use super::departure::{Departure, Verdict};
use super::drift::Ewma;
use super::{source_subject, AnomalyEvent, AnomalyKind, Direction, Evidence};
use crate::sample::Millis;
use crate::signature::SignatureId;
use crate::topk::TopK;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;

/// Signature slots of a source's mix: ids are 0 (unclassified) and 1..=16; larger ids
/// (never produced by a valid model) share the last slot.
const MIX_SLOTS: usize = 17;

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SourceParams {
    /// Sources tracked (top-K by requests); at the bound, a newcomer replaces the
    /// smallest and that source's baseline is forgotten.
    pub capacity: usize,
    /// Length of one judgement interval; counts below are in intervals.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Weight of the newest interval in the baselines (0.02: a memory of ~50).
    pub alpha: f64,
    /// Intervals a source must be seen before it is judged.
    pub warmup: usize,
    /// Rate over baseline that is anomalous (10 = ten times the usual rate).
    pub rate_factor: f64,
    /// Baseline floor in requests per second, so that a near-silent source sending a
    /// few requests is not "infinitely" above its usual rate.
    pub min_rate: f64,
    /// Consecutive intervals a departure must last to be raised.
    pub sustain: usize,
    /// Total variation distance between an interval's signature mix and the
    /// source's baseline mix that is anomalous (0..=1).
    pub mix_distance: f64,
    /// Requests a source needs in an interval for its mix to be judged.
    pub min_mix_requests: u64,
}

/// The monitor of all sources.
pub struct SourceMonitor {
    p: SourceParams,
    top: TopK<u64>,
    /// State of the sources in `top` (evicted together): at most `capacity` entries.
    state: HashMap<u64, SourceState>,
    interval_start: Option<Millis>,
    /// Clears of anomalies whose source was evicted, reported at the next tick. At
    /// most two per source active at the last tick, so bounded by 2 × capacity.
    evicted: Vec<AnomalyEvent>,
}

#[derive(Clone, Debug)]
struct SourceState {
    /// Requests in the current interval, in total and per signature slot.
    count: u64,
    mix: [u32; MIX_SLOTS],
    rate: Ewma,
    base_mix: [f64; MIX_SLOTS],
    mix_n: usize,
    rate_dep: Departure,
    mix_dep: Departure,
}

// === impl SourceParams ===

impl Default for SourceParams {
    fn default() -> Self {
        Self {
            capacity: 256,
            interval: Duration::from_secs(10),
            alpha: 0.02,
            warmup: 6,
            rate_factor: 10.0,
            min_rate: 0.1,
            sustain: 3,
            mix_distance: 0.5,
            min_mix_requests: 20,
        }
    }
}

// === impl SourceMonitor ===

impl SourceMonitor {
    pub fn new(p: SourceParams) -> Self {
        Self {
            top: TopK::new(p.capacity.max(1)),
            state: HashMap::with_capacity(p.capacity.max(1)),
            p,
            interval_start: None,
            evicted: Vec::new(),
        }
    }

    /// Sources with state (at most `capacity`).
    pub fn tracked(&self) -> usize {
        self.state.len()
    }

    /// Counts one request of `source` (the data path's hash of its identity).
    pub fn record(&mut self, source: u64, signature: SignatureId) {
        if let Some(victim) = self.top.add(source, 1) {
            if let Some(mut st) = self.state.remove(&victim) {
                // The time is unknown here; the clear is dated at the next tick.
                self.evicted.extend(st.rate_dep.clear(0));
                self.evicted.extend(st.mix_dep.clear(0));
            }
        }
        let st = self.state.entry(source).or_insert_with(SourceState::new);
        st.count += 1;
        let slot = (signature as usize).min(MIX_SLOTS - 1);
        if let Some(c) = st.mix.get_mut(slot) {
            *c = c.saturating_add(1);
        }
    }

    /// Closes the interval if it has elapsed and judges every tracked source.
    ///
    /// Severities: `SourceRate`, the rate as a multiple of the baseline; `SourceMix`,
    /// the distance / `mix_distance`.
    pub fn tick(&mut self, now: Millis) -> Vec<AnomalyEvent> {
        let mut events: Vec<AnomalyEvent> = self
            .evicted
            .drain(..)
            .map(|e| match e {
                AnomalyEvent::Cleared {
                    kind,
                    subject,
                    since,
                    ..
                } => AnomalyEvent::Cleared {
                    kind,
                    subject,
                    since,
                    at: now,
                },
                other => other,
            })
            .collect();
        let Some(start) = self.interval_start else {
            self.interval_start = Some(now);
            return events;
        };
        let interval = self.p.interval.as_millis() as Millis;
        let elapsed = now.saturating_sub(start);
        if elapsed < interval.max(1) {
            return events;
        }
        self.interval_start = Some(now);
        let seconds = elapsed as f64 / 1000.0;
        let p = &self.p;
        for (source, st) in &mut self.state {
            st.judge(p, *source, now, seconds, &mut events);
        }
        events
    }
}

// === impl SourceState ===

impl SourceState {
    fn new() -> Self {
        Self {
            count: 0,
            mix: [0; MIX_SLOTS],
            rate: Ewma::default(),
            base_mix: [0.0; MIX_SLOTS],
            mix_n: 0,
            rate_dep: Departure::default(),
            mix_dep: Departure::default(),
        }
    }

    fn judge(
        &mut self,
        p: &SourceParams,
        source: u64,
        now: Millis,
        seconds: f64,
        events: &mut Vec<AnomalyEvent>,
    ) {
        let rate = self.count as f64 / seconds.max(1e-3);
        let subject = source_subject(source);

        let verdict = if self.rate.warm(p.warmup) {
            let base = self.rate.value.max(p.min_rate);
            let multiple = rate / base;
            if multiple > p.rate_factor {
                Verdict::Out {
                    severity: multiple,
                    direction: Some(Direction::Above),
                    evidence: Evidence::from([("rate", rate), ("baseline_rate", self.rate.value)]),
                }
            } else if multiple < p.rate_factor / 2.0 {
                Verdict::Back
            } else {
                Verdict::Between
            }
        } else {
            Verdict::Hold
        };
        // An elevated rate short of the threshold (often the first, partial interval of
        // a surge) is learned at `alpha` only: while the baseline is young its plain-mean
        // weight (1/n) would let one such interval lift it enough to hide the surge.
        let elevated = matches!(verdict, Verdict::Between);
        let step = self.rate_dep.judge(
            AnomalyKind::SourceRate,
            &subject,
            now,
            verdict,
            p.sustain,
            None,
        );
        events.extend(step.event);
        if !self.rate_dep.frozen() {
            if elevated {
                self.rate.nudge(rate, p.alpha);
            } else {
                self.rate.add(rate, p.alpha);
            }
        }

        let n = self.count;
        let verdict = if n >= p.min_mix_requests && self.mix_n >= p.warmup.max(1) {
            let tvd = self
                .mix
                .iter()
                .zip(&self.base_mix)
                .map(|(c, b)| (f64::from(*c) / n as f64 - b).abs())
                .sum::<f64>()
                / 2.0;
            if tvd > p.mix_distance {
                Verdict::Out {
                    severity: tvd / p.mix_distance.max(1e-9),
                    direction: None,
                    evidence: Evidence::from([("distance", tvd), ("requests", n as f64)]),
                }
            } else if tvd < p.mix_distance / 2.0 {
                Verdict::Back
            } else {
                Verdict::Between
            }
        } else {
            Verdict::Hold
        };
        let step = self.mix_dep.judge(
            AnomalyKind::SourceMix,
            &subject,
            now,
            verdict,
            p.sustain,
            None,
        );
        events.extend(step.event);
        if n >= p.min_mix_requests && !self.mix_dep.frozen() {
            self.mix_n = self.mix_n.saturating_add(1);
            let a = p.alpha.max(1.0 / self.mix_n as f64);
            for (b, c) in self.base_mix.iter_mut().zip(&self.mix) {
                *b += a * (f64::from(*c) / n as f64 - *b);
            }
        }

        self.count = 0;
        self.mix = [0; MIX_SLOTS];
    }
}

#[cfg(test)]
mod tests;
