//! The profiler's wall clock: Unix milliseconds that advance with the monotonic clock,
//! so a step of the system clock (an NTP correction, `date -s`) does not break series.
//!
//! Series buckets are keyed by wall-clock time on purpose (they persist across restarts
//! and line up with Prometheus), but read straight from the system clock a step back
//! by an hour would send an hour of requests into old buckets and stall the forecast
//! feed until the clock caught up, and a step forward would leave a hole that looks
//! like an outage. So the time here starts at the system clock and advances at the
//! monotonic rate. Each profiler tick compares it with the system clock ([`resync`]):
//! - system clock *ahead* by more than [`STEP`] (a VM resumed from suspend, during
//!   which the monotonic clock stood still, or a clock set forward): catch up in one
//!   step, since that time really passed or the operator says so;
//! - system clock *behind* by more than [`STEP`]: keep going and warn once. Series
//!   never run backwards; a restart adopts the system clock again.
//!
//! Timestamps sent to other systems (alerts, webhooks) use the system clock.
//!
//! Demo only: a *scaled* clock ([`SeriesClock::scaled`], installed by [`install_scaled`]
//! from `prescale run --time-scale N`) starts at a chosen time and counts N series
//! milliseconds per monotonic one, so a day of series, forecasts and scaling fits in
//! minutes. It never resyncs (its time is not the system's), request service times are
//! stretched by the same factor ([`series`]) so demand (busy concurrency) is unchanged,
//! and the timers that pace series-time work wait [`wall`] of their configured period.

use prescale_profiler::sample::Millis;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Differences up to this are the two clocks' ordinary drift and slew: ignored.
pub const STEP: Millis = 60_000;

/// Series time from a start and the monotonic time elapsed since.
#[derive(Debug)]
pub struct SeriesClock {
    start: Millis,
    /// Series milliseconds per monotonic millisecond: 1 except in the demo.
    factor: u64,
    /// Forward catch-ups so far.
    offset: AtomicU64,
    /// The system clock is behind (warned once per episode).
    behind: AtomicBool,
}

/// What [`SeriesClock::resync`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resync {
    /// The clocks agree (within [`STEP`]).
    InStep,
    /// The system clock was ahead: series time jumped forward by this much.
    Forward(Millis),
    /// The system clock is behind by this much: ignored (first time in an episode).
    Behind(Millis),
    /// Still behind; already reported.
    StillBehind,
}

// === impl SeriesClock ===

impl SeriesClock {
    /// A clock reading `start` (Unix ms) at monotonic elapsed zero.
    pub fn new(start: Millis) -> Self {
        Self::scaled(start, 1)
    }

    /// A clock reading `start` at elapsed zero and running `factor` times faster than
    /// the monotonic clock (demo only; a factor of 0 counts as 1).
    pub fn scaled(start: Millis, factor: u64) -> Self {
        Self {
            start,
            factor: factor.max(1),
            offset: AtomicU64::new(0),
            behind: AtomicBool::new(false),
        }
    }

    /// Series time `elapsed` after the start: two adds and one relaxed load.
    pub fn at(&self, elapsed: Duration) -> Millis {
        let ms = u64::try_from(elapsed.as_millis())
            .unwrap_or(u64::MAX)
            .saturating_mul(self.factor);
        self.start
            .saturating_add(ms)
            .saturating_add(self.offset.load(Relaxed))
    }

    /// Compares with the system clock reading `system` at `elapsed`; see the module doc.
    pub fn resync(&self, elapsed: Duration, system: Millis) -> Resync {
        if self.factor != 1 {
            // A scaled clock leaves the system's time on purpose.
            return Resync::InStep;
        }
        let ours = self.at(elapsed);
        if system > ours.saturating_add(STEP) {
            let ahead = system - ours;
            self.offset.fetch_add(ahead, Relaxed);
            self.behind.store(false, Relaxed);
            Resync::Forward(ahead)
        } else if ours > system.saturating_add(STEP) {
            if self.behind.swap(true, Relaxed) {
                Resync::StillBehind
            } else {
                Resync::Behind(ours - system)
            }
        } else {
            self.behind.store(false, Relaxed);
            Resync::InStep
        }
    }
}

static CLOCK: OnceLock<(Instant, SeriesClock)> = OnceLock::new();

fn global() -> &'static (Instant, SeriesClock) {
    CLOCK.get_or_init(|| (Instant::now(), SeriesClock::new(system_ms())))
}

/// Demo only: makes series time start at `start` (Unix ms) now and run `factor` times
/// faster. Must come before anything reads the clock; returns false (and changes
/// nothing) when the clock was already in use.
pub fn install_scaled(start: Millis, factor: u64) -> bool {
    CLOCK
        .set((Instant::now(), SeriesClock::scaled(start, factor)))
        .is_ok()
}

/// Series milliseconds per wall millisecond: 1 unless `--time-scale` is in force.
pub fn factor() -> u64 {
    global().1.factor
}

/// The wall time a timer waits for a `series` period (`series` itself when unscaled).
pub fn wall(series: Duration) -> Duration {
    series / u32::try_from(factor()).unwrap_or(u32::MAX)
}

/// A wall duration measured on the data path, in series time (the demo's stretch).
pub fn series(wall: Duration) -> Duration {
    wall.saturating_mul(u32::try_from(factor()).unwrap_or(u32::MAX))
}

/// Series time now (the data path stamps requests with it).
pub fn now_ms() -> Millis {
    let (epoch, clock) = global();
    clock.at(epoch.elapsed())
}

/// Checks the system clock (from the profiler's tick), logging a step.
pub fn resync() {
    let (epoch, clock) = global();
    match clock.resync(epoch.elapsed(), system_ms()) {
        Resync::Forward(ms) => {
            tracing::warn!(
                ahead_ms = ms,
                "system clock ahead of series time (resumed, or set forward): caught up"
            );
        }
        Resync::Behind(ms) => {
            tracing::warn!(
                behind_ms = ms,
                "system clock stepped back: series time keeps running forward (a restart adopts the system clock)"
            );
        }
        Resync::InStep | Resync::StillBehind => {}
    }
}

/// The system clock, Unix ms.
pub fn system_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Millis = 1_700_000_000_000;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn series_time_follows_the_monotonic_clock_through_system_clock_steps() {
        let c = SeriesClock::new(T0);
        assert_eq!(c.at(secs(10)), T0 + 10_000);
        // Ordinary drift: ignored.
        assert_eq!(c.resync(secs(10), T0 + 10_000 + 30_000), Resync::InStep);
        assert_eq!(c.at(secs(10)), T0 + 10_000);

        // The system clock steps back an hour: series time does not.
        let back = T0 + 20_000 - 3_600_000;
        assert_eq!(c.resync(secs(20), back), Resync::Behind(3_600_000));
        assert_eq!(c.resync(secs(21), back + 1_000), Resync::StillBehind);
        assert_eq!(
            c.at(secs(30)),
            T0 + 30_000,
            "still advancing, never backwards"
        );

        // It steps forward again (corrected): in step, nothing to do.
        assert_eq!(c.resync(secs(40), T0 + 40_000), Resync::InStep);

        // A VM suspended for 2 h (the monotonic clock stood still): catch up once.
        let resumed = T0 + 50_000 + 7_200_000;
        assert_eq!(c.resync(secs(50), resumed), Resync::Forward(7_200_000));
        assert_eq!(c.at(secs(50)), resumed);
        assert_eq!(c.at(secs(51)), resumed + 1_000);
        // Time read before and after every step never decreased.
    }

    #[test]
    fn a_scaled_clock_runs_faster_and_never_resyncs() {
        let c = SeriesClock::scaled(T0, 60);
        assert_eq!(c.at(secs(2)), T0 + 120_000);
        // Far from the system clock either way: left alone.
        assert_eq!(c.resync(secs(2), T0 + 86_400_000), Resync::InStep);
        assert_eq!(c.resync(secs(2), T0 - 86_400_000), Resync::InStep);
        assert_eq!(c.at(secs(3)), T0 + 180_000);
        assert_eq!(SeriesClock::scaled(T0, 0).at(secs(1)), T0 + 1_000);
    }

    #[test]
    fn the_global_clock_starts_at_the_system_clock_and_is_monotonic() {
        let a = now_ms();
        let sys = system_ms();
        assert!(a.abs_diff(sys) < STEP, "{a} vs {sys}");
        let b = now_ms();
        assert!(b >= a);
    }
}
