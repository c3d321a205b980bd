//! Pre-shedding at admission: which requests a level refuses.
//!
//! The level `L` (from [`PreShed`](super::PreShed)) is the share of sheddable demand
//! the ready capacity will not carry. Admission refuses that share of the sheddable
//! demand *as it arrives*, least important tier first: walking the sheddable tiers from
//! the highest `priority` number up, each refuses as much of its own demand as is still
//! to be shed (all of it, then part of the next tier's), so a shortfall smaller than
//! the batch tier's demand refuses batch requests only. Tiers of equal priority share
//! alike; tiers with `sheddable: false` are never pre-shed.
//!
//! Why not narrow the room at the concurrency limit: a level must refuse something at
//! any concurrency. A service running 3 requests in flight under a limit of 100 has all
//! the room it needs *now*; the shortfall is in the replicas still starting. Refusing a
//! share of arrivals works the same at 3 in flight and at 3 000.
//!
//! Demand per tier is its arrivals × its mean upstream service time (Little's law, the
//! unit the level is computed in), over about the last [`WINDOW`] arrivals: counted on
//! the data path with atomics, folded into the window off it (at each
//! [`Admission::set_preshed`](super::Admission::set_preshed)). A refused request still
//! counts as an arrival, at its tier's mean service time, as the profiler counts it.
//!
//! A tier refusing share `f` refuses arrival `n` (its arrival counter) exactly when
//! `⌊(n + 1) f⌋ > ⌊n f⌋`: evenly spaced, within one request of `f × arrivals` over any
//! run of arrivals, with no random number, lock or allocation on the data path.

use super::atomic::AtomicF64;
use super::shares::TierPlan;
use crate::tiers::MAX_TIERS;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Arrivals the demand mix is estimated over (at least the last decision's, if more).
const WINDOW: f64 = 1000.0;

/// Per-tier refusal shares, and the counters they are estimated from.
#[derive(Debug)]
pub(super) struct Split {
    /// Share of each tier's arrivals refused now (0 for tiers not sheddable).
    refuse: [AtomicF64; MAX_TIERS],
    /// Requests that reached the pre-shed check, per tier.
    arrived: [AtomicU64; MAX_TIERS],
    /// Released permits and their summed upstream latency (µs), per tier.
    finished: [AtomicU64; MAX_TIERS],
    busy_us: [AtomicU64; MAX_TIERS],
    /// Only the thread that sets the level takes it (never the data path).
    window: Mutex<Window>,
}

/// The recent mix per tier: `[arrivals, finished, busy µs]`, decayed.
#[derive(Clone, Debug, Default)]
struct Window {
    /// The counters as last read.
    seen: [[u64; 3]; MAX_TIERS],
    mix: [[f64; 3]; MAX_TIERS],
}

// === impl Split ===

impl Split {
    pub(super) fn new() -> Self {
        Self {
            refuse: std::array::from_fn(|_| AtomicF64::new(0.0)),
            arrived: std::array::from_fn(|_| AtomicU64::new(0)),
            finished: std::array::from_fn(|_| AtomicU64::new(0)),
            busy_us: std::array::from_fn(|_| AtomicU64::new(0)),
            window: Mutex::new(Window::default()),
        }
    }

    /// Counts an arrival of tier `t`; true when pre-shedding refuses it.
    pub(super) fn refuses(&self, t: usize) -> bool {
        let (Some(arrived), Some(f)) = (self.arrived.get(t), self.refuse.get(t)) else {
            return false;
        };
        let n = arrived.fetch_add(1, Relaxed);
        let f = f.load();
        if f.is_nan() || f <= 0.0 {
            return false;
        }
        if f >= 1.0 {
            return true;
        }
        ((n + 1) as f64 * f).floor() > (n as f64 * f).floor()
    }

    /// A request of tier `t` was served in `latency`.
    pub(super) fn finished(&self, t: usize, latency: Duration) {
        if let (Some(n), Some(b)) = (self.finished.get(t), self.busy_us.get(t)) {
            n.fetch_add(1, Relaxed);
            b.fetch_add(
                u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
                Relaxed,
            );
        }
    }

    /// The share of each tier's arrivals refused now.
    pub(super) fn share(&self, t: usize) -> f64 {
        self.refuse.get(t).map_or(0.0, AtomicF64::load)
    }

    /// Share of recent demand in sheddable tiers; 1 before any demand was seen.
    pub(super) fn sheddable_fraction(&self, plans: &[TierPlan]) -> f64 {
        let d = self.demand();
        let all: f64 = d.iter().take(plans.len()).sum();
        let shed: f64 = plans
            .iter()
            .zip(&d)
            .filter(|(p, _)| p.sheddable)
            .map(|(_, d)| d)
            .sum();
        if all > 0.0 {
            (shed / all).clamp(0.0, 1.0)
        } else {
            1.0
        }
    }

    /// Sets each tier's refusal share for level `level` (in [0, 1]).
    pub(super) fn apply(&self, level: f64, plans: &[TierPlan]) {
        let d = self.demand();
        let shares = split(level, plans, &d);
        for (slot, s) in self.refuse.iter().zip(shares) {
            slot.store(s);
        }
    }

    /// Starts from `old`'s demand mix (after a reload); `map` gives a tier's index in
    /// `old`, by name.
    pub(super) fn inherit(&self, old: &Split, map: impl Fn(usize) -> Option<usize>) {
        let from = lock(&old.window).clone();
        let mut w = lock(&self.window);
        for (t, mix) in w.mix.iter_mut().enumerate() {
            if let Some(o) = map(t).and_then(|o| from.mix.get(o)) {
                *mix = *o;
            }
        }
    }

    /// Folds the counters into the window; returns demand per tier (arrivals × mean
    /// service time; µs per request, or 1 before anything was served).
    fn demand(&self) -> [f64; MAX_TIERS] {
        let mut w = lock(&self.window);
        let w = &mut *w;
        let mut delta = [[0.0; 3]; MAX_TIERS];
        let counters = self.arrived.iter().zip(&self.finished).zip(&self.busy_us);
        for (((a, f), b), (seen, d)) in counters.zip(w.seen.iter_mut().zip(&mut delta)) {
            let now = [a, f, b].map(|c| c.load(Relaxed));
            for ((d, n), s) in d.iter_mut().zip(now).zip(seen.iter()) {
                *d = n.saturating_sub(*s) as f64;
            }
            *seen = now;
        }
        let new: f64 = delta.iter().map(|d| d[0]).sum();
        let old: f64 = w.mix.iter().map(|m| m[0]).sum();
        let keep = if old + new <= WINDOW || old <= 0.0 {
            1.0
        } else {
            (WINDOW - new).max(0.0) / old
        };
        for (m, d) in w.mix.iter_mut().zip(&delta) {
            for (m, d) in m.iter_mut().zip(d) {
                *m = *m * keep + d;
            }
        }
        let (n, busy) = w
            .mix
            .iter()
            .fold((0.0, 0.0), |(n, b), m| (n + m[1], b + m[2]));
        let overall = if n > 0.0 { busy / n } else { 1.0 };
        w.mix.map(|[arrived, finished, busy]| {
            let mean = if finished >= 1.0 {
                busy / finished
            } else {
                overall
            };
            arrived * mean
        })
    }
}

/// Each tier's refusal share for `level` given its `demand`: the sheddable demand to
/// refuse, taken least important tier first. With no demand seen, every tier counts
/// alike.
fn split(level: f64, plans: &[TierPlan], demand: &[f64; MAX_TIERS]) -> [f64; MAX_TIERS] {
    let mut out = [0.0; MAX_TIERS];
    let level = if level.is_nan() {
        0.0
    } else {
        level.clamp(0.0, 1.0)
    };
    // (priority, demand) of each sheddable tier, by index; None otherwise.
    let tiers: Vec<Option<(u8, f64)>> = plans
        .iter()
        .zip(demand)
        .map(|(p, d)| p.sheddable.then_some((p.priority, d.max(0.0))))
        .collect();
    let seen: f64 = tiers.iter().flatten().map(|(_, d)| d).sum();
    let weight = |d: f64| if seen > 0.0 { d } else { 1.0 };
    let total: f64 = tiers.iter().flatten().map(|(_, d)| weight(*d)).sum();
    let mut left = level * total;
    // Least important first; equal priorities together.
    let mut priorities: Vec<u8> = tiers.iter().flatten().map(|(p, _)| *p).collect();
    priorities.sort_unstable_by(|a, b| b.cmp(a));
    priorities.dedup();
    for prio in priorities {
        let in_group = |t: &Option<(u8, f64)>| t.filter(|(p, _)| *p == prio);
        let g: f64 = tiers
            .iter()
            .filter_map(in_group)
            .map(|(_, d)| weight(d))
            .sum();
        let share = if left <= total * 1e-9 {
            0.0
        } else if g <= 0.0 {
            1.0
        } else {
            (left / g).min(1.0)
        };
        left -= share * g;
        for (o, t) in out.iter_mut().zip(&tiers) {
            if in_group(t).is_some() {
                *o = share;
            }
        }
    }
    out
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(priority: u8, sheddable: bool) -> TierPlan {
        TierPlan {
            cluster: 0,
            share: 0.0,
            sheddable,
            shadow: false,
            priority,
            queue: false,
            rank: 0,
        }
    }

    /// critical (not sheddable), standard, batch.
    fn plans() -> Vec<TierPlan> {
        vec![plan(0, false), plan(1, true), plan(2, true)]
    }

    fn demand(v: &[f64]) -> [f64; MAX_TIERS] {
        let mut d = [0.0; MAX_TIERS];
        d[..v.len()].copy_from_slice(v);
        d
    }

    #[test]
    fn the_least_important_tier_is_shed_first_and_protected_tiers_never() {
        // Demand: critical 4, standard 5, batch 1 (sheddable 6).
        let d = demand(&[4.0, 5.0, 1.0]);
        // Level 1/12 of sheddable demand = 0.5: half of batch, nothing else.
        let s = split(0.5 / 6.0, &plans(), &d);
        assert!((s[2] - 0.5).abs() < 1e-12, "{s:?}");
        assert_eq!((s[0], s[1]), (0.0, 0.0));
        // Level 0.5 = 3: all of batch (1), then 2 of standard's 5.
        let s = split(0.5, &plans(), &d);
        assert_eq!(s[2], 1.0);
        assert!((s[1] - 0.4).abs() < 1e-12, "{s:?}");
        assert_eq!(s[0], 0.0);
        // Level 1: every sheddable request; still no critical one.
        assert_eq!(split(1.0, &plans(), &d)[..3], [0.0, 1.0, 1.0]);
        assert_eq!(split(0.0, &plans(), &d)[..3], [0.0, 0.0, 0.0]);
        assert_eq!(split(f64::NAN, &plans(), &d)[..3], [0.0, 0.0, 0.0]);
        // Nothing seen yet: tiers count alike, batch first.
        let s = split(0.25, &plans(), &demand(&[]));
        assert!((s[2] - 0.5).abs() < 1e-12 && s[1] == 0.0, "{s:?}");
        // Equal priorities share alike.
        let two = vec![plan(0, false), plan(1, true), plan(1, true)];
        let s = split(0.5, &two, &demand(&[1.0, 1.0, 3.0]));
        assert!((s[1] - 0.5).abs() < 1e-12 && (s[2] - 0.5).abs() < 1e-12);
    }

    #[test]
    fn refusals_are_evenly_spaced_at_the_share() {
        let s = Split::new();
        let p = [plan(0, true)];
        s.apply(0.3, &p);
        let refused: Vec<bool> = (0..1000).map(|_| s.refuses(0)).collect();
        let n = refused.iter().filter(|r| **r).count();
        assert_eq!(n, 300);
        // Any 10 consecutive arrivals hold 3 refusals, give or take one.
        for w in refused.windows(10) {
            let k = w.iter().filter(|r| **r).count();
            assert!((2..=4).contains(&k), "{k}");
        }
        s.apply(1.0, &p);
        assert!((0..50).all(|_| s.refuses(0)));
        s.apply(0.0, &p);
        assert!((0..50).all(|_| !s.refuses(0)));
    }

    #[test]
    fn demand_is_arrivals_times_service_time_over_a_bounded_window() {
        let s = Split::new();
        let p = plans();
        assert_eq!(s.sheddable_fraction(&p), 1.0, "idle");
        // 100 critical requests of 60 ms, 300 standard of 10 ms, 100 batch of 30 ms:
        // work 6 000 / 3 000 / 3 000.
        for (t, n, ms) in [(0, 100, 60), (1, 300, 10), (2, 100, 30)] {
            for _ in 0..n {
                assert!(!s.refuses(t));
                s.finished(t, Duration::from_millis(ms));
            }
        }
        assert!((s.sheddable_fraction(&p) - 0.5).abs() < 1e-9);
        // Shedding half the sheddable work (3 000) takes batch's entirely, and nothing
        // of standard's.
        s.apply(0.5, &p);
        assert_eq!(s.share(2), 1.0);
        assert!(s.share(1) < 1e-9 && s.share(0) == 0.0, "{}", s.share(1));
        // Batch refused: its arrivals still count, at its mean service time.
        for _ in 0..100 {
            assert!(s.refuses(2));
        }
        assert!((s.sheddable_fraction(&p) - 9.0 / 15.0).abs() < 1e-9);
        // Then only critical, for long: the window forgets the old mix.
        for _ in 0..20 {
            for _ in 0..500 {
                s.refuses(0);
                s.finished(0, Duration::from_millis(60));
            }
            s.sheddable_fraction(&p);
        }
        assert!(s.sheddable_fraction(&p) < 0.01);
    }
}
