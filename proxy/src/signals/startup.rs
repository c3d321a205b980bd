//! Learns the replica start-up time from what the platform reports: the time from a
//! scale-up request until `readyReplicas` reaches the number asked for.
//!
//! Pure and bounded: time is passed in (milliseconds on any monotonic clock), at most
//! [`MAX_PENDING`] scale-ups are followed at once, and the estimate is the median of
//! the last [`MAX_SAMPLES`] observations (robust to one slow image pull or a node
//! that had to be provisioned).

use serde::Serialize;
use std::collections::VecDeque;

/// Scale-ups followed at once; the oldest is given up beyond this.
pub const MAX_PENDING: usize = 8;
/// Observations the estimate is the median of.
pub const MAX_SAMPLES: usize = 16;
/// A scale-up not ready after this long is given up (policies cap start-up at 1 h).
pub const MAX_WAIT_MS: u64 = 3_600_000;

/// What `/v1/scale` shows.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LearnedStartup {
    /// The median of the recent observations.
    pub seconds: f64,
    /// Observations the median is over (at most [`MAX_SAMPLES`]).
    pub observations: usize,
    /// The newest observation.
    pub last_seconds: f64,
}

/// Scale-ups waiting for readiness, and the recent observations.
#[derive(Debug, Default)]
pub struct StartupLearner {
    /// (replicas asked for, when), oldest first; targets strictly increasing.
    pending: VecDeque<(u32, u64)>,
    samples: VecDeque<f64>,
}

// === impl StartupLearner ===

impl StartupLearner {
    /// The platform accepted `target` replicas at `at` while `ready` were ready.
    /// A scale-up starts a wait; any request gives up waits for more than it asks.
    pub fn requested(&mut self, target: u32, ready: u32, at: u64) {
        self.pending.retain(|&(t, _)| t <= target);
        // Already there, or already followed: a repeated request keeps its first start.
        if ready >= target || self.pending.back().is_some_and(|&(t, _)| t == target) {
            return;
        }
        // Targets below this one keep their own (earlier) starts.
        if self.pending.len() == MAX_PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back((target, at));
    }

    /// `ready` replicas are ready at `at`: completes every wait it reaches and returns
    /// how many observations that added. Waits past [`MAX_WAIT_MS`] are given up.
    pub fn observe(&mut self, ready: u32, at: u64) -> usize {
        let mut added = 0;
        while let Some(&(target, since)) = self.pending.front() {
            if at.saturating_sub(since) > MAX_WAIT_MS {
                self.pending.pop_front();
                continue;
            }
            if ready < target {
                break;
            }
            self.pending.pop_front();
            if self.samples.len() == MAX_SAMPLES {
                self.samples.pop_front();
            }
            self.samples
                .push_back(at.saturating_sub(since) as f64 / 1000.0);
            added += 1;
        }
        added
    }

    /// Whether a scale-up is still becoming ready (worth polling readiness).
    pub fn waiting(&self) -> bool {
        !self.pending.is_empty()
    }

    pub fn estimate(&self) -> Option<LearnedStartup> {
        let last_seconds = *self.samples.back()?;
        let mut sorted: Vec<f64> = self.samples.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let mid = |i: usize| sorted.get(i).copied().unwrap_or(last_seconds);
        let seconds = if n % 2 == 1 {
            mid(n / 2)
        } else {
            (mid(n / 2 - 1) + mid(n / 2)) / 2.0
        };
        Some(LearnedStartup {
            seconds,
            observations: n,
            last_seconds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scale_up_is_timed_until_ready_reaches_it() {
        let mut l = StartupLearner::default();
        assert!(l.estimate().is_none());
        l.requested(3, 1, 10_000);
        assert!(l.waiting());
        assert_eq!(l.observe(2, 20_000), 0);
        assert_eq!(l.observe(3, 55_000), 1);
        assert!(!l.waiting());
        let e = l.estimate().unwrap();
        assert_eq!((e.seconds, e.observations, e.last_seconds), (45.0, 1, 45.0));
    }

    #[test]
    fn each_step_of_a_rising_scale_up_keeps_its_own_start() {
        let mut l = StartupLearner::default();
        l.requested(2, 1, 0);
        l.requested(3, 1, 15_000);
        // The same number again does not restart its clock.
        l.requested(3, 1, 30_000);
        assert_eq!(l.observe(3, 60_000), 2);
        let e = l.estimate().unwrap();
        // 60 s for the first, 45 s for the second: median of two is their mean.
        assert_eq!(e.seconds, 52.5);
        assert_eq!(e.last_seconds, 45.0);
    }

    #[test]
    fn scale_downs_and_ready_requests_start_nothing_and_cancel_larger_waits() {
        let mut l = StartupLearner::default();
        l.requested(2, 2, 0);
        assert!(!l.waiting(), "already ready");
        l.requested(5, 2, 0);
        l.requested(3, 2, 1_000);
        // 5 was given up; 3 is followed from 1 s.
        assert_eq!(l.observe(5, 31_000), 1);
        assert_eq!(l.estimate().unwrap().seconds, 30.0);
    }

    #[test]
    fn everything_is_bounded_and_stale_waits_expire() {
        let mut l = StartupLearner::default();
        for i in 0..100u32 {
            l.requested(i + 2, 1, u64::from(i));
        }
        assert_eq!(l.pending.len(), MAX_PENDING);
        // Nothing ever became ready within the hour: all given up, nothing learned.
        assert_eq!(l.observe(1000, MAX_WAIT_MS + 1000), 0);
        assert!(!l.waiting());
        for i in 0..40u64 {
            l.requested(2, 1, i * 100_000);
            l.observe(2, i * 100_000 + 1_000 * (i + 1));
            l.requested(1, 1, i * 100_000 + 50_000);
        }
        let e = l.estimate().unwrap();
        assert_eq!(e.observations, MAX_SAMPLES);
        // The last 16 observations are 25..=40 s: median 32.5 s.
        assert_eq!(e.seconds, 32.5);
        assert_eq!(e.last_seconds, 40.0);
    }

    #[test]
    fn one_outlier_does_not_move_the_median() {
        let mut l = StartupLearner::default();
        for (i, secs) in [30u64, 32, 600, 31, 29].into_iter().enumerate() {
            let at = i as u64 * 1_000_000;
            l.requested(2, 1, at);
            l.observe(2, at + secs * 1000);
            l.requested(1, 1, at + 900_000);
        }
        assert_eq!(l.estimate().unwrap().seconds, 31.0);
    }
}
