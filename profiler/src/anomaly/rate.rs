//! Demand against its forecast: one [`RateDetector`] per series (the total and each
//! signature) raises a `Rate` anomaly when actuals stay outside the calibrated
//! interval the forecaster published for them, or when one step lands further out than
//! anything the series did lately (a short, severe spike), and turns a confirmed level
//! shift into a `ChangePoint` and a refit request instead of alerting until the model
//! catches up.
//!
//! Feed it, at each step, the actual and the [`ForecastPoint`] that was forecast for
//! that step *before* it was observed (the one-step-ahead point of the previous
//! forecast). Pass only calibrated forecasts: the fallback interval is a guess.

use super::changepoint::{ChangePointParams, Cusum};
use super::{Anomaly, AnomalyEvent, AnomalyKind, Direction, Evidence};
use crate::forecast::ForecastPoint;
use crate::sample::Millis;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// When steps outside the interval make an anomaly; counts are in series steps.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RateParams {
    /// Latest steps looked at (bounded: the detector keeps only these).
    pub window: usize,
    /// Steps of the window that must be outside, on one side, to raise.
    pub min_outside: usize,
    /// Consecutive steps no longer outside that end an anomaly.
    pub clear_after: usize,
    /// How far beyond the interval a step must be to count as outside, in interval
    /// widths. 0 counts every miss; with a 90 % interval, 1 in 10 steps misses by
    /// design, so a margin keeps the false-alarm rate down.
    pub margin: f64,
    /// Floor of the interval width, as a share of the larger of the point forecast and
    /// the actual: a degenerate interval (a flat history, or a forecast clamped at
    /// zero) must not make every wiggle infinitely severe.
    pub min_width_ratio: f64,
    /// Severity for a short excursion: a single outside step raises alone, without
    /// `min_outside` companions, when it is at least this many interval widths beyond
    /// the bound *and* further out than every step of the last `spike_memory` (see
    /// there). The default, 2.25, is `min_outside × margin`: as much excess in one
    /// step as the weakest sustained anomaly has in its steps together.
    pub spike_excess: f64,
    /// Steps a spike must out-do to raise alone (0 turns the spike rule off). The
    /// width alone cannot say a step is rare: on a heavy-tailed series (tweet counts)
    /// steps far beyond the interval come every few hours, so a spike must also be a
    /// record of its series. The rule is armed once this many steps were judged. The
    /// default, 1000, is the forecaster's calibration window: a spike is beyond every
    /// error the interval was calibrated on.
    pub spike_memory: usize,
}

/// The detector of one series.
#[derive(Clone, Debug)]
pub struct RateDetector {
    subject: String,
    p: RateParams,
    max_shift_steps: usize,
    /// The latest `window` steps: when, and on which side they were outside.
    recent: VecDeque<(Millis, Option<Direction>)>,
    active: Option<Anomaly>,
    /// Consecutive steps not outside while `active`.
    calm: usize,
    cusum: Cusum,
    shift: Option<ShiftState>,
    /// The largest excesses of the latest `spike_memory` steps.
    tail: SlidingMax,
}

/// The maximum over the latest `len` values, in amortised O(1) per value: it keeps
/// only the values not beaten by a later one (a decreasing run), so a few in practice
/// and at most `len`.
#[derive(Clone, Debug)]
struct SlidingMax {
    len: u64,
    /// Values pushed so far.
    count: u64,
    /// (index, value), values strictly decreasing.
    run: VecDeque<(u64, f64)>,
}

/// A confirmed level shift the forecaster has not absorbed yet: deviations up to
/// `amount` on its side are excused.
#[derive(Clone, Debug)]
struct ShiftState {
    anomaly: Anomaly,
    amount: f64,
    steps: usize,
    /// Consecutive steps inside the raw interval: the forecaster has caught up.
    inside: usize,
}

// === impl RateParams ===

impl Default for RateParams {
    fn default() -> Self {
        Self {
            window: 5,
            min_outside: 3,
            clear_after: 3,
            margin: 0.75,
            min_width_ratio: 0.05,
            spike_excess: 2.25,
            spike_memory: 1000,
        }
    }
}

// === impl RateDetector ===

impl RateDetector {
    pub fn new(subject: impl Into<String>, p: RateParams, cp: ChangePointParams) -> Self {
        Self {
            subject: subject.into(),
            recent: VecDeque::with_capacity(p.window.max(1)),
            max_shift_steps: cp.max_shift_steps.max(1),
            // A shift must be as far out as a rate anomaly's steps: 1 half-width to the
            // bound plus the margin (in widths, i.e. two half-widths each).
            cusum: Cusum::new(cp).with_confirm_level(1.0 + 2.0 * p.margin.max(0.0)),
            tail: SlidingMax::new(p.spike_memory),
            p,
            active: None,
            calm: 0,
            shift: None,
        }
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The active `Rate` anomaly, if any.
    pub fn active(&self) -> Option<&Anomaly> {
        self.active.as_ref()
    }

    /// The active `ChangePoint` (a shift not absorbed by the forecaster yet), if any.
    pub fn shift(&self) -> Option<&Anomaly> {
        self.shift.as_ref().map(|s| &s.anomaly)
    }

    /// Judges the actual of one step against the interval forecast for it. Non-finite
    /// inputs (a gap) are skipped.
    ///
    /// Severity of a `Rate` anomaly: the largest distance beyond the interval seen so
    /// far, in interval widths; of a `ChangePoint`: the shift, in interval widths.
    pub fn observe(&mut self, now: Millis, actual: f64, f: &ForecastPoint) -> Vec<AnomalyEvent> {
        let mut events = Vec::new();
        if ![actual, f.point, f.lower, f.upper]
            .iter()
            .all(|v| v.is_finite())
        {
            return events;
        }
        // Relative to the larger of forecast and actual: when the forecaster publishes a
        // degenerate interval at zero, severity stays finite (at most about
        // 1 / min_width_ratio widths) instead of dividing by nothing.
        let floor = (self.p.min_width_ratio * f.point.abs().max(actual.abs())).max(1e-9);
        let width = (f.upper - f.lower).max(floor);
        // A shift being absorbed widens the interval on its side by its amount.
        let excused = self.shift.as_ref().map_or(0.0, |s| s.amount);
        let (lower, upper) = (f.lower + excused.min(0.0), f.upper + excused.max(0.0));
        let above = (actual - upper) / width;
        let below = (lower - actual) / width;
        let (outside, excess) = if above > self.p.margin {
            (Some(Direction::Above), above)
        } else if below > self.p.margin {
            (Some(Direction::Below), below)
        } else {
            (None, above.max(below).max(0.0))
        };
        // A record: further out than every step of the memory (once it is full).
        let record = self
            .tail
            .push(excess)
            .is_some_and(|best| excess > best && excess >= self.p.spike_excess);
        let evidence = Evidence::from([
            ("actual", actual),
            ("point", f.point),
            ("lower", f.lower),
            ("upper", f.upper),
            ("excess_widths", excess),
        ]);

        // Residual for the change-point detector, net of any excused shift, in
        // half-widths of the interval's side it falls on.
        let r = actual - f.point;
        let r = r - r.clamp(excused.min(0.0), excused.max(0.0));
        let half = if r >= 0.0 {
            (f.upper - f.point).max(floor / 2.0)
        } else {
            (f.point - f.lower).max(floor / 2.0)
        };
        if let Some(shift) = self.cusum.update(now, r / half, r) {
            self.confirm_shift(now, shift, width, f, actual, &mut events);
            return events;
        }
        self.absorb_shift(now, actual, f, &mut events);

        if self.recent.len() == self.p.window.max(1) {
            self.recent.pop_front();
        }
        self.recent.push_back((now, outside));
        match &mut self.active {
            None => {
                let Some(dir) = outside else { return events };
                let n = self.recent.iter().filter(|s| s.1 == Some(dir)).count();
                // Sustained, or one step severe and unprecedented.
                if n >= self.p.min_outside.max(1) || record {
                    let since = self
                        .recent
                        .iter()
                        .find(|s| s.1 == Some(dir))
                        .map_or(now, |s| s.0);
                    let a = Anomaly {
                        kind: AnomalyKind::Rate,
                        subject: self.subject.clone(),
                        since,
                        updated: now,
                        severity: excess,
                        direction: Some(dir),
                        evidence,
                    };
                    self.calm = 0;
                    self.active = Some(a.clone());
                    events.push(AnomalyEvent::Raised(a));
                }
            }
            Some(a) if outside == a.direction => {
                self.calm = 0;
                a.updated = now;
                a.severity = a.severity.max(excess);
                a.evidence = evidence;
                events.push(AnomalyEvent::Updated(a.clone()));
            }
            Some(a) => {
                self.calm += 1;
                if self.calm >= self.p.clear_after.max(1) {
                    events.push(AnomalyEvent::cleared(a, now));
                    self.active = None;
                    self.recent.clear();
                }
            }
        }
        events
    }

    /// A level shift was confirmed: it replaces any rate anomaly, asks for a refit, and
    /// is excused from now on until the forecaster has caught up.
    fn confirm_shift(
        &mut self,
        now: Millis,
        shift: super::changepoint::Shift,
        width: f64,
        f: &ForecastPoint,
        actual: f64,
        events: &mut Vec<AnomalyEvent>,
    ) {
        if let Some(a) = self.active.take() {
            events.push(AnomalyEvent::cleared(&a, now));
        }
        let amount = self.shift.as_ref().map_or(0.0, |s| s.amount) + shift.amount;
        if let Some(old) = self.shift.take() {
            events.push(AnomalyEvent::cleared(&old.anomaly, now));
        }
        let anomaly = Anomaly {
            kind: AnomalyKind::ChangePoint,
            subject: self.subject.clone(),
            since: shift.since,
            updated: now,
            severity: amount.abs() / width,
            direction: Some(shift.direction),
            evidence: Evidence::from([
                ("shift", amount),
                ("actual", actual),
                ("point", f.point),
                ("lower", f.lower),
                ("upper", f.upper),
            ]),
        };
        events.push(AnomalyEvent::Raised(anomaly.clone()));
        events.push(AnomalyEvent::RefitRequested {
            subject: self.subject.clone(),
            since: shift.since,
            at: now,
        });
        self.shift = Some(ShiftState {
            anomaly,
            amount,
            steps: 0,
            inside: 0,
        });
        self.recent.clear();
        self.calm = 0;
    }

    /// Ends the excuse once actuals are back inside the forecaster's own interval (it
    /// has learnt the new level), or after `max_shift_steps` if it never does.
    fn absorb_shift(
        &mut self,
        now: Millis,
        actual: f64,
        f: &ForecastPoint,
        events: &mut Vec<AnomalyEvent>,
    ) {
        let Some(s) = &mut self.shift else { return };
        s.steps += 1;
        if (f.lower..=f.upper).contains(&actual) {
            s.inside += 1;
        } else {
            s.inside = 0;
        }
        if s.inside >= self.p.clear_after.max(1) || s.steps >= self.max_shift_steps {
            events.push(AnomalyEvent::cleared(&s.anomaly, now));
            self.shift = None;
            self.cusum.reset();
        }
    }
}

// === impl SlidingMax ===

impl SlidingMax {
    fn new(len: usize) -> Self {
        Self {
            len: len as u64,
            count: 0,
            run: VecDeque::new(),
        }
    }

    /// Adds `x`; returns the maximum of the `len` values before it (0 if none was
    /// positive), or None while fewer than `len` came before it or when `len` is 0.
    fn push(&mut self, x: f64) -> Option<f64> {
        if self.len == 0 || !x.is_finite() {
            return None;
        }
        let i = self.count;
        self.count += 1;
        // The run holds the values of steps i - len ..= i - 1 only.
        let best = (i >= self.len).then(|| self.run.front().map_or(0.0, |r| r.1));
        while self.run.back().is_some_and(|r| r.1 <= x) {
            self.run.pop_back();
        }
        if x > 0.0 {
            self.run.push_back((i, x));
        }
        while self.run.front().is_some_and(|r| r.0 + self.len <= i) {
            self.run.pop_front();
        }
        best
    }
}

#[cfg(test)]
mod tests;
