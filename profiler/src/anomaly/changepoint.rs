//! A level-shift detector on forecast residuals: a two-sided CUSUM (Page 1954) says a
//! shift may have begun, and a robust check (most of the last few residuals lie outside
//! the interval, on the shift's side) confirms it, so a spike never passes for a new
//! level.
//!
//! augurs has a Bayesian change-point crate (`augurs-changepoint`), but it is not in
//! the offline registry this project builds from; CUSUM needs no dependency, runs in
//! O(1) per step and its parameters read in the same unit as the rate detector's.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

use super::Direction;
use crate::sample::Millis;

/// Residuals are given in interval half-widths (`z`): |z| > 1 is outside the interval.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ChangePointParams {
    pub enabled: bool,
    /// Slack per step (half-widths): residuals below it pull the sums back to zero.
    pub drift: f64,
    /// Cumulative excess (half-widths) at which a shift is suspected.
    pub threshold: f64,
    /// Four in five of this many latest residuals must lie outside the interval, on
    /// the shift's side, to confirm it (bounded: the ring of recent residuals). A
    /// surge shorter than this is a rate anomaly, a longer one a new level.
    pub confirm_steps: usize,
    /// Steps after which a shift the forecaster never absorbed stops being excused:
    /// alerting resumes (and a new refit may be requested).
    pub max_shift_steps: usize,
}

/// Share of the confirmation window that must be outside on the shift's side.
const CONFIRM_SHARE: f64 = 0.8;

/// A confirmed level shift.
#[derive(Clone, Debug, PartialEq)]
pub struct Shift {
    pub direction: Direction,
    /// When the shift began: the step where its cumulative sum last left zero.
    pub since: Millis,
    /// Median residual of the confirming steps, in the series' unit.
    pub amount: f64,
    /// Median residual of the confirming steps, in half-widths.
    pub score: f64,
}

/// The two one-sided sums and the recent residuals.
#[derive(Clone, Debug)]
pub struct Cusum {
    p: ChangePointParams,
    /// |z| a confirming residual must exceed (1: just outside the interval).
    confirm_level: f64,
    up: Side,
    down: Side,
    /// Last `confirm_steps` residuals: (half-widths, series unit).
    recent: VecDeque<(f64, f64)>,
}

#[derive(Clone, Debug, Default)]
struct Side {
    sum: f64,
    /// When the sum last left zero.
    start: Option<Millis>,
    /// When the current run of steps beyond the slack began: a better date for the
    /// shift than `start` when an earlier spike left the sum above zero.
    run: Option<Millis>,
}

// === impl ChangePointParams ===

impl Default for ChangePointParams {
    fn default() -> Self {
        Self {
            enabled: true,
            drift: 0.5,
            threshold: 8.0,
            confirm_steps: 10,
            max_shift_steps: 1440,
        }
    }
}

// === impl Cusum ===

impl Cusum {
    pub fn new(p: ChangePointParams) -> Self {
        Self {
            recent: VecDeque::with_capacity(p.confirm_steps.max(1)),
            p,
            confirm_level: 1.0,
            up: Side::default(),
            down: Side::default(),
        }
    }

    /// Confirming residuals must exceed `level` half-widths instead of 1: the rate
    /// detector sets its own outside level, so a shift is a rate anomaly that lasts.
    pub fn with_confirm_level(mut self, level: f64) -> Self {
        self.confirm_level = level.max(1.0);
        self
    }

    /// Adds the residual of one step, `z` in half-widths and `r` in the series' unit;
    /// returns a shift once one is confirmed (then starts over).
    pub fn update(&mut self, now: Millis, z: f64, r: f64) -> Option<Shift> {
        if !self.p.enabled || !z.is_finite() || !r.is_finite() {
            return None;
        }
        // Cap a single step's weight: one absurd point must not make a shift alone.
        let z = z.clamp(-self.p.threshold, self.p.threshold);
        if self.recent.len() == self.p.confirm_steps.max(1) {
            self.recent.pop_front();
        }
        self.recent.push_back((z, r));
        self.up.add(now, z - self.p.drift);
        self.down.add(now, -z - self.p.drift);
        let n = self.p.confirm_steps.max(1);
        let needed = (CONFIRM_SHARE * n as f64).ceil() as usize;
        let full = self.recent.len() >= n;
        let level = self.confirm_level;
        let above = self.recent.iter().filter(|e| e.0 > level).count();
        let below = self.recent.iter().filter(|e| e.0 < -level).count();
        let shift = if full && self.up.sum > self.p.threshold && above >= needed {
            Some((Direction::Above, self.up.since()))
        } else if full && self.down.sum > self.p.threshold && below >= needed {
            Some((Direction::Below, self.down.since()))
        } else {
            None
        }?;
        let (mz, mr) = (
            median(self.recent.iter().map(|e| e.0)),
            median(self.recent.iter().map(|e| e.1)),
        );
        let (direction, since) = shift;
        self.reset();
        Some(Shift {
            direction,
            since: since.unwrap_or(now),
            amount: mr,
            score: mz,
        })
    }

    pub fn reset(&mut self) {
        self.up = Side::default();
        self.down = Side::default();
        self.recent.clear();
    }
}

// === impl Side ===

impl Side {
    fn add(&mut self, now: Millis, x: f64) {
        self.sum = (self.sum + x).max(0.0);
        if self.sum == 0.0 {
            self.start = None;
        } else if self.start.is_none() {
            self.start = Some(now);
        }
        if x > 0.0 {
            self.run.get_or_insert(now);
        } else {
            self.run = None;
        }
    }

    fn since(&self) -> Option<Millis> {
        self.run.or(self.start)
    }
}

/// Median of a few values (0 for none).
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match (v.get(n / 2), n.checked_sub(1).and_then(|i| v.get(i / 2))) {
        (Some(a), Some(b)) => (a + b) / 2.0,
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sustained_shift_is_confirmed_and_a_spike_is_not() {
        let mut c = Cusum::new(ChangePointParams::default());
        // Noise inside the interval: nothing.
        for t in 0..100u64 {
            let z = if t % 2 == 0 { 0.6 } else { -0.6 };
            assert_eq!(c.update(t, z, z * 10.0), None);
        }
        // One enormous spike, then normal again: the confirmation check refuses it.
        assert_eq!(c.update(100, 50.0, 500.0), None);
        for t in 101..120 {
            assert_eq!(c.update(t, 0.2, 2.0), None);
        }
        // The level moves up by three half-widths for good: confirmed after the
        // confirmation window filled, dated from the first shifted step.
        let mut found = None;
        for t in 120..140 {
            if let Some(s) = c.update(t, 3.0, 30.0) {
                found = Some((t, s));
                break;
            }
        }
        let (at, s) = found.expect("shift confirmed");
        assert_eq!(at, 127, "eight of the last ten shifted");
        assert_eq!(s.direction, Direction::Above);
        assert_eq!(s.since, 120);
        assert_eq!(s.amount, 30.0);
    }

    #[test]
    fn medians() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 2.0, 3.0].into_iter()), 2.5);
        assert_eq!(median(std::iter::empty()), 0.0);
    }
}
