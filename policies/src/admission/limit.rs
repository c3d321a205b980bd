//! An adaptive concurrency limit per upstream cluster (Gradient2, after Netflix's
//! concurrency-limits), learned from live traffic only: no probe windows.
//!
//! Each completed request is a sample (its latency and the in-flight count when it
//! started). Samples are summed into a window with atomics; the first sample after the
//! window has lasted `window` and holds `min_samples` rolls it (one thread wins a flag,
//! the others carry on) and runs one update on the window's average RTT ("short"):
//!
//! ```text
//! long     = exponential average of short over `long_window` windows (plain mean for
//!            the first 10), pulled down 5 % when long/short > 2 (recovery after a
//!            long overload) or when long > max(1.5, tolerance) × the live minimum
//!            RTT (drift under a standing queue: the minimum is the lowest window
//!            average within `min_rtt_window`, so it rises again if the service really
//!            slows down)
//! gradient = clamp(tolerance × long / short, 0.5, 1)
//! limit    = (1 - smoothing) × limit + smoothing × (limit × gradient + queue)
//! queue    = queue(limit) if gradient = 1, else 0
//! ```
//!
//! with queue(limit) = √limit unless configured, clamped to [floor, ceiling]. As in
//! Gradient2, an app-limited window (peak in-flight below half the limit) leaves the
//! limit alone. Unlike Gradient2:
//! - the queue allowance is added only on a window within tolerance (it probes for
//!   capacity; it does not pad a limit that is already queueing). Gradient2 adds it on
//!   every window, so its equilibrium is short = tolerance × long / (1 − queue/limit):
//!   with √limit at a limit of 25, 25 % more queueing than the tolerance allows, on
//!   top of the tolerance itself;
//! - the default tolerance is 1.1, not 1.5: a sidecar sheds to keep the traffic it
//!   admits fast, so it wants the short queue (the window may be 10 % slower than
//!   `long` rather than 50 %). The drift guard (`drift_guard`) keeps 1.5 by
//!   default: the minimum is the
//!   lowest of hundreds of window averages, so for a service with noisy latency it
//!   sits well below a typical window, and a guard as tight as 1.1 would hold `long`
//!   under the typical window and shrink the limit to the floor with no queue at all.
//!   For an upstream with steady service times a tighter guard (e.g. 1.1) keeps its
//!   queue short: with 1.5, `long` may settle at 1.5 × the minimum and `short` at
//!   `tolerance` × that;
//! - a window in which the upstream signalled overload (`Outcome::Overloaded`)
//!   multiplies the limit by `backoff`.
//!
//! The hot path reads the limit with one atomic load; a sample is a few relaxed atomic
//! adds. Controller state is written only by the thread holding the roll flag, which
//! nobody waits for.

use super::atomic::AtomicF64;
use super::config::LimitConfig;
use crate::Micros;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::*};
use std::time::Duration;

/// Plain mean for this many windows before the exponential average takes over.
const WARMUP: u64 = 10;

/// How a request ended, as the limiter learns from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered (any status but an overload signal): the latency counts.
    Success,
    /// The upstream signalled overload: timeout, refused connection, 503 or 429. No
    /// latency sample; the window backs the limit off.
    Overloaded,
    /// Nothing was learned (the client left, the request never reached the upstream).
    Ignored,
}

/// One cluster's adaptive limit.
#[derive(Debug)]
pub struct ConcurrencyLimit {
    p: Params,
    /// The published limit, read on every admission.
    limit: AtomicU32,
    window_start: AtomicU64,
    rtt_sum: AtomicU64,
    rtt_count: AtomicU64,
    max_inflight: AtomicU32,
    drops: AtomicU64,
    /// Held by the one thread running an update.
    rolling: AtomicBool,
    estimate: AtomicF64,
    long_rtt: AtomicF64,
    long_windows: AtomicU64,
    short_rtt: AtomicF64,
    /// Two-bucket windowed minimum of window averages (µs; infinity when empty).
    min_now: AtomicF64,
    min_before: AtomicF64,
    min_bucket_start: AtomicU64,
}

/// The limit's state, for `/v1/tiers` and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct LimitStats {
    /// The limit admission enforces now.
    pub limit: u32,
    /// The unrounded estimate.
    pub estimate: f64,
    /// Long-term, last window and minimum RTT in ms (0 until measured).
    pub long_rtt_ms: f64,
    pub short_rtt_ms: f64,
    pub min_rtt_ms: f64,
}

#[derive(Clone, Copy, Debug)]
struct Params {
    floor: f64,
    ceiling: f64,
    smoothing: f64,
    tolerance: f64,
    drift_guard: f64,
    queue_size: Option<f64>,
    window: Micros,
    min_samples: u64,
    long_factor: f64,
    min_rtt_bucket: Micros,
    backoff: f64,
}

// === impl ConcurrencyLimit ===

impl ConcurrencyLimit {
    /// A limit at `cfg.initial` (validated config), its first window starting at `now`.
    pub fn new(cfg: &LimitConfig, now: Micros) -> Self {
        let p = Params {
            floor: f64::from(cfg.floor),
            ceiling: f64::from(cfg.ceiling),
            smoothing: cfg.smoothing,
            tolerance: cfg.tolerance,
            drift_guard: cfg.drift_guard,
            queue_size: cfg.queue_size,
            window: micros(cfg.window),
            min_samples: u64::from(cfg.min_samples),
            long_factor: 2.0 / (f64::from(cfg.long_window) + 1.0),
            min_rtt_bucket: (micros(cfg.min_rtt_window) / 2).max(1),
            backoff: cfg.backoff,
        };
        Self {
            p,
            limit: AtomicU32::new(cfg.initial),
            window_start: AtomicU64::new(now),
            rtt_sum: AtomicU64::new(0),
            rtt_count: AtomicU64::new(0),
            max_inflight: AtomicU32::new(0),
            drops: AtomicU64::new(0),
            rolling: AtomicBool::new(false),
            estimate: AtomicF64::new(f64::from(cfg.initial)),
            long_rtt: AtomicF64::new(0.0),
            long_windows: AtomicU64::new(0),
            short_rtt: AtomicF64::new(0.0),
            min_now: AtomicF64::new(f64::INFINITY),
            min_before: AtomicF64::new(f64::INFINITY),
            min_bucket_start: AtomicU64::new(now),
        }
    }

    /// The current limit (≥ 1): one atomic load.
    pub fn current(&self) -> u32 {
        self.limit.load(Relaxed)
    }

    /// Records one completed request: `rtt` its latency, `inflight` the cluster's
    /// in-flight count when it was admitted. May run one update.
    pub fn sample(&self, rtt: Duration, inflight: u32, outcome: Outcome, now: Micros) {
        match outcome {
            Outcome::Ignored => return,
            Outcome::Overloaded => {
                self.drops.fetch_add(1, Relaxed);
            }
            Outcome::Success => {
                self.rtt_sum.fetch_add(micros(rtt), Relaxed);
                self.rtt_count.fetch_add(1, Relaxed);
            }
        }
        self.max_inflight.fetch_max(inflight, Relaxed);
        if self.window_due(now) {
            self.try_roll(now);
        }
    }

    fn window_due(&self, now: Micros) -> bool {
        let start = self.window_start.load(Relaxed);
        now.saturating_sub(start) >= self.p.window
            && (self.rtt_count.load(Relaxed) >= self.p.min_samples || self.drops.load(Relaxed) > 0)
    }

    /// Rolls the window if no other thread is; never waits.
    fn try_roll(&self, now: Micros) {
        if self
            .rolling
            .compare_exchange(false, true, Acquire, Relaxed)
            .is_err()
        {
            return;
        }
        // Another thread may have rolled between our check and the flag.
        if self.window_due(now) {
            self.window_start.store(now, Relaxed);
            let sum = self.rtt_sum.swap(0, Relaxed);
            let count = self.rtt_count.swap(0, Relaxed);
            let inflight = self.max_inflight.swap(0, Relaxed);
            let drops = self.drops.swap(0, Relaxed);
            let short = (count > 0).then(|| sum as f64 / count as f64);
            self.update(short, inflight, drops > 0, now);
        }
        self.rolling.store(false, Release);
    }

    /// One Gradient2 step on a closed window. Runs only under the roll flag.
    fn update(&self, short: Option<f64>, inflight: u32, dropped: bool, now: Micros) {
        let p = &self.p;
        let est = self.estimate.load();
        if dropped {
            self.publish((est * p.backoff).clamp(p.floor, p.ceiling));
            return;
        }
        let Some(short) = short else { return };
        let short = short.max(1.0);
        self.short_rtt.store(short);
        let min = self.track_min(short, now);

        let n = self.long_windows.fetch_add(1, Relaxed) + 1;
        let mut long = self.long_rtt.load();
        long = if n <= WARMUP {
            long + (short - long) / n as f64
        } else {
            long + (short - long) * p.long_factor
        };
        if long / short > 2.0 || long > p.drift_guard.max(p.tolerance) * min {
            long *= 0.95;
        }
        self.long_rtt.store(long);

        // Don't grow (or shrink) on a window that never came near the limit.
        if f64::from(inflight) < est / 2.0 {
            return;
        }
        let gradient = (p.tolerance * long / short).clamp(0.5, 1.0);
        // Probe for more only when the window shows no queueing beyond tolerance.
        let queue = if gradient < 1.0 {
            0.0
        } else {
            p.queue_size.unwrap_or_else(|| est.sqrt())
        };
        let target = est * gradient + queue;
        let next = est * (1.0 - p.smoothing) + target * p.smoothing;
        self.publish(next.clamp(p.floor, p.ceiling));
    }

    /// Folds a window average into the two-bucket minimum; returns the minimum.
    fn track_min(&self, short: f64, now: Micros) -> f64 {
        let start = self.min_bucket_start.load(Relaxed);
        if now.saturating_sub(start) >= self.p.min_rtt_bucket {
            self.min_before.store(self.min_now.load());
            self.min_now.store(f64::INFINITY);
            self.min_bucket_start.store(now, Relaxed);
        }
        self.min_now.store(self.min_now.load().min(short));
        self.min_now.load().min(self.min_before.load())
    }

    fn publish(&self, estimate: f64) {
        self.estimate.store(estimate);
        self.limit.store((estimate as u32).max(1), Relaxed);
    }

    /// Takes over another limit's learned state (config reload keeps what was learned).
    pub fn inherit(&self, from: &ConcurrencyLimit) {
        let est = from.estimate.load().clamp(self.p.floor, self.p.ceiling);
        self.publish(est);
        self.long_rtt.store(from.long_rtt.load());
        self.long_windows
            .store(from.long_windows.load(Relaxed), Relaxed);
        self.short_rtt.store(from.short_rtt.load());
        self.min_now.store(from.min_now.load());
        self.min_before.store(from.min_before.load());
    }

    /// The limit's state.
    pub fn stats(&self) -> LimitStats {
        let min = self.min_now.load().min(self.min_before.load());
        LimitStats {
            limit: self.current(),
            estimate: self.estimate.load(),
            long_rtt_ms: self.long_rtt.load() / 1000.0,
            short_rtt_ms: self.short_rtt.load() / 1000.0,
            min_rtt_ms: if min.is_finite() { min / 1000.0 } else { 0.0 },
        }
    }
}

fn micros(d: Duration) -> Micros {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1000;

    /// Feeds one full window of `n` samples of `rtt_ms`, with in-flight at the limit.
    fn window(l: &ConcurrencyLimit, now: &mut Micros, rtt_ms: u64, n: u32) {
        for _ in 0..n {
            let inflight = l.current();
            l.sample(
                Duration::from_millis(rtt_ms),
                inflight,
                Outcome::Success,
                *now,
            );
        }
        *now += 100 * MS;
    }

    fn cfg() -> LimitConfig {
        LimitConfig {
            initial: 20,
            floor: 5,
            ceiling: 200,
            ..LimitConfig::default()
        }
    }

    #[test]
    fn shrinks_when_latency_rises_and_recovers_when_it_falls() {
        let mut now = 0;
        let l = ConcurrencyLimit::new(&cfg(), now);
        // A healthy 20 ms service at its limit: each window adds √limit of queue
        // allowance, so the limit climbs.
        for _ in 0..100 {
            window(&l, &mut now, 20, 20);
        }
        let healthy = l.current();
        assert!(healthy > 40, "limit grew to {healthy}");
        assert!((19.0..21.0).contains(&l.stats().long_rtt_ms));

        // The service slows to 80 ms: short RTT is 4x long, the gradient bottoms at
        // 0.5, and the limit falls window after window.
        for _ in 0..30 {
            window(&l, &mut now, 80, 20);
        }
        let slow = l.current();
        assert!(slow < healthy / 2, "limit fell from {healthy} to {slow}");

        // Latency returns to 20 ms: the limit climbs back.
        for _ in 0..100 {
            window(&l, &mut now, 20, 20);
        }
        assert!(l.current() > slow * 2, "limit recovered to {}", l.current());
    }

    #[test]
    fn holds_a_short_queue_in_front_of_a_saturated_service() {
        // 16 slots × 40 ms, always offered more than the limit: a request admitted at
        // in-flight L waits L/16 service times (Little's law for the FIFO behind the
        // slots). The limit must settle just above 16, not drift up with its own queue.
        let rtt_ms = |limit: u32| 40.0 * (f64::from(limit) / 16.0).max(1.0);
        let mut now = 0;
        let l = ConcurrencyLimit::new(
            &LimitConfig {
                initial: 8,
                floor: 1,
                ceiling: 1000,
                ..LimitConfig::default()
            },
            now,
        );
        // Peak limit within the minimum's window (10–30 s), then up to 100 s.
        let (mut early, mut late) = (0, 0);
        for w in 0..1000 {
            let limit = l.current();
            let rtt = Duration::from_secs_f64(rtt_ms(limit) / 1000.0);
            for _ in 0..40 {
                l.sample(rtt, limit, Outcome::Success, now);
            }
            now += 100 * MS;
            match w {
                100..300 => early = early.max(l.current()),
                300.. => late = late.max(l.current()),
                _ => {}
            }
        }
        // While the unloaded minimum is in the window: at most ~30 % queueing.
        assert!((16..=21).contains(&early), "limit peaked at {early}");
        // Once it has aged out, every window carries our own queue and the limit creeps
        // up (without probing, a standing queue looks like a slower service), but far
        // slower than Gradient2 as published (tolerance 1.5, allowance on every
        // window), which passes 40 here.
        assert!(late <= 30, "limit peaked at {late}");
        assert!(l.current() >= 16, "limit fell to {}", l.current());
    }

    #[test]
    fn stays_within_floor_and_ceiling() {
        let mut now = 0;
        let l = ConcurrencyLimit::new(&cfg(), now);
        for _ in 0..2000 {
            window(&l, &mut now, 10, 20);
            assert!(l.current() <= 200);
        }
        assert_eq!(l.current(), 200, "a fast service reaches the ceiling");
        for _ in 0..100 {
            // A hundredfold slower: every window halves the limit's target.
            window(&l, &mut now, 1000, 20);
            assert!(l.current() >= 5);
        }
        assert_eq!(l.current(), 5, "a collapsing service holds the floor");
    }

    #[test]
    fn app_limited_windows_and_ignored_samples_change_nothing() {
        let mut now = 0;
        let l = ConcurrencyLimit::new(&cfg(), now);
        // In-flight 3 against a limit of 20: the upstream is not the bottleneck.
        for _ in 0..50 {
            for _ in 0..20 {
                l.sample(Duration::from_millis(500), 3, Outcome::Success, now);
            }
            now += 100 * MS;
        }
        assert_eq!(l.current(), 20);
        for _ in 0..100 {
            l.sample(Duration::ZERO, 20, Outcome::Ignored, now);
            now += 100 * MS;
        }
        assert_eq!(l.current(), 20);
    }

    #[test]
    fn overload_signals_back_off_and_windows_wait_for_enough_samples() {
        let mut now = 0;
        let l = ConcurrencyLimit::new(&cfg(), now);
        // Nine fast samples spread over a second do not close a window (min 10).
        for _ in 0..9 {
            l.sample(Duration::from_millis(1), 20, Outcome::Success, now);
            now += 100 * MS;
        }
        assert_eq!(l.stats().short_rtt_ms, 0.0);
        // A timeout closes it at once and backs the limit off by 10 %.
        l.sample(Duration::from_secs(5), 20, Outcome::Overloaded, now);
        assert_eq!(l.current(), 18);
    }
}
