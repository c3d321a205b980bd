//! The sidecar's load over a platform's own window. The metrics API and cAdvisor
//! report CPU over windows of their own (metrics-server's `[timestamp − window,
//! timestamp]`, the interval between two scrapes of a counter), not over the
//! sidecar's tick. Pairing such a reading with the requests of the last tick
//! attributes part of each phase's CPU to its neighbours and biases the costs low;
//! pairing it with the requests of the same window does not.
//!
//! The ring keeps the profiler's cumulative per-signature totals at each tick, on
//! the system clock (the platform's timestamps are Unix time), and gives the load
//! between any two instants it spans, interpolating linearly between ticks.

use super::Totals;
use prescale_profiler::resources::Load;
use prescale_profiler::sample::Millis;
use prescale_profiler::signature::SignatureId;
use std::collections::{BTreeMap, VecDeque};

/// Ticks kept: ten minutes at the default 1 s tick, longer than metrics-server's
/// window (at most a minute) or a scrape interval. Bounds memory (≤ 18 signatures
/// each).
pub const MAX_TICKS: usize = 600;

/// One tick's cumulative totals.
struct Point {
    wall: Millis,
    totals: Totals,
    bytes: BTreeMap<SignatureId, u64>,
}

/// The load over a window: per signature, and request plus response body bytes per
/// second.
pub struct WindowLoad {
    pub load: BTreeMap<SignatureId, Load>,
    pub network_bytes_per_second: f64,
}

#[derive(Default)]
pub struct TickRing {
    points: VecDeque<Point>,
}

// === impl TickRing ===

impl TickRing {
    /// Adds a tick at `wall` (Unix ms); a tick not after the newest is ignored.
    pub fn push(&mut self, wall: Millis, totals: &Totals, bytes: &BTreeMap<SignatureId, u64>) {
        if self.points.back().is_some_and(|p| p.wall >= wall) {
            return;
        }
        self.points.push_back(Point {
            wall,
            totals: totals.clone(),
            bytes: bytes.clone(),
        });
        while self.points.len() > MAX_TICKS {
            self.points.pop_front();
        }
    }

    /// Forgets every tick (a signature re-fit: older totals split requests otherwise).
    pub fn clear(&mut self) {
        self.points.clear();
    }

    /// The newest tick's time.
    pub fn newest(&self) -> Option<Millis> {
        self.points.back().map(|p| p.wall)
    }

    /// The load over `[from, to]` (Unix ms); None unless the ticks kept span it.
    pub fn load(&self, from: Millis, to: Millis) -> Option<WindowLoad> {
        let (first, last) = (self.points.front()?, self.points.back()?);
        if to <= from || from < first.wall || to > last.wall {
            return None;
        }
        let dt = (to - from) as f64 / 1000.0;
        let (a, b) = (self.at(from)?, self.at(to)?);
        let sigs: std::collections::BTreeSet<SignatureId> =
            a.0.keys().chain(b.0.keys()).copied().collect();
        let load = sigs
            .into_iter()
            .map(|s| {
                let (r0, w0) = a.0.get(&s).copied().unwrap_or_default();
                let (r1, w1) = b.0.get(&s).copied().unwrap_or_default();
                let load = Load {
                    rate: (r1 - r0).max(0.0) / dt,
                    concurrency: (w1 - w0).max(0.0) / 1e6 / dt,
                };
                (s, load)
            })
            .collect();
        Some(WindowLoad {
            load,
            network_bytes_per_second: (b.1 - a.1).max(0.0) / dt,
        })
    }

    /// Totals (requests, work µs) per signature and all body bytes at `t`, linear
    /// between the ticks around it.
    #[allow(clippy::type_complexity)]
    fn at(&self, t: Millis) -> Option<(BTreeMap<SignatureId, (f64, f64)>, f64)> {
        let i = self.points.partition_point(|p| p.wall <= t);
        let lo = self.points.get(i.checked_sub(1)?)?;
        let hi = self.points.get(i).unwrap_or(lo);
        let f = if hi.wall > lo.wall {
            (t - lo.wall) as f64 / (hi.wall - lo.wall) as f64
        } else {
            0.0
        };
        let mix = |x: u64, y: u64| x as f64 + (y as f64 - x as f64) * f;
        let totals = lo
            .totals
            .keys()
            .chain(hi.totals.keys())
            .map(|s| {
                let (r0, w0) = lo.totals.get(s).copied().unwrap_or((0, 0));
                let (r1, w1) = hi.totals.get(s).copied().unwrap_or((r0, w0));
                (*s, (mix(r0, r1), mix(w0, w1)))
            })
            .collect();
        let sum = |m: &BTreeMap<SignatureId, u64>| m.values().sum::<u64>();
        Some((totals, mix(sum(&lo.bytes), sum(&hi.bytes))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(n: u64) -> Totals {
        // Signature 1: n requests of 10 ms each; signature 2 appears at n = 20.
        let mut t = BTreeMap::from([(1, (n, n * 10_000))]);
        if n >= 20 {
            t.insert(2, (n - 20, 0));
        }
        t
    }

    #[test]
    fn the_load_over_a_window_interpolates_between_ticks() {
        let mut ring = TickRing::default();
        // A tick a second, 10 requests a second from t = 1 000 s.
        for s in 0..5u64 {
            let n = s * 10;
            ring.push(
                1_000_000 + s * 1000,
                &totals(n),
                &BTreeMap::from([(1, n * 100)]),
            );
        }
        // Half a tick in at each end: [1 000.5 s, 1 003.5 s] is 30 requests.
        let w = ring.load(1_000_500, 1_003_500).unwrap();
        assert!((w.load[&1].rate - 10.0).abs() < 1e-9, "{:?}", w.load);
        assert!((w.load[&1].concurrency - 0.1).abs() < 1e-9, "{:?}", w.load);
        assert!((w.network_bytes_per_second - 1000.0).abs() < 1e-9);
        // Signature 2 counts from 0 before its first tick: 15 by 1 003.5 s.
        assert!((w.load[&2].rate - 5.0).abs() < 1e-9, "{:?}", w.load);
        // Outside what the ring spans: nothing.
        assert!(ring.load(999_000, 1_002_000).is_none());
        assert!(ring.load(1_001_000, 1_004_001).is_none());
        assert!(ring.load(1_002_000, 1_002_000).is_none());
        // Bounded.
        for s in 5..(MAX_TICKS as u64 + 50) {
            ring.push(1_000_000 + s * 1000, &totals(s * 10), &BTreeMap::new());
        }
        assert_eq!(ring.points.len(), MAX_TICKS);
        // A tick out of order is ignored.
        let newest = ring.newest().unwrap();
        ring.push(newest - 1, &totals(0), &BTreeMap::new());
        assert_eq!(ring.newest(), Some(newest));
    }
}
