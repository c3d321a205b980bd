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
//! [`Clock`] is the one clock: made once at start (`Clock::system`) and handed to
//! everything that reads time — the data path's admission and health (monotonic
//! microseconds), the profiler and forecaster (series time). It is the only place
//! `Instant::now` and `SystemTime::now` are called (`clippy.toml` bans them elsewhere).
//! A scale factor lets one wall second count as several for series time (a demo);
//! admission and health always run on real time.

use prescale_profiler::sample::Millis;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Microseconds on the monotonic clock since the [`Clock`] started.
pub type Micros = u64;

/// The one clock, shared by cloning (one start, one series offset).
#[derive(Clone, Debug)]
pub struct Clock(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    epoch: Instant,
    series: SeriesClock,
    /// Series seconds per wall second (1 but in a demo).
    scale: f64,
}

/// Differences up to this are the two clocks' ordinary drift and slew: ignored.
pub const STEP: Millis = 60_000;

/// Series time from a start and the monotonic time elapsed since.
#[derive(Debug)]
pub struct SeriesClock {
    start: Millis,
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
        Self {
            start,
            offset: AtomicU64::new(0),
            behind: AtomicBool::new(false),
        }
    }

    /// Series time `elapsed` after the start: two adds and one relaxed load.
    pub fn at(&self, elapsed: Duration) -> Millis {
        let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        self.start
            .saturating_add(ms)
            .saturating_add(self.offset.load(Relaxed))
    }

    /// Compares with the system clock reading `system` at `elapsed`; see the module doc.
    pub fn resync(&self, elapsed: Duration, system: Millis) -> Resync {
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

// === impl Clock ===

impl Clock {
    /// The clock of a running sidecar: series time starts at the system clock.
    pub fn system() -> Self {
        Self::scaled(1.0)
    }

    /// Series time runs `scale` times as fast as the wall clock (a demo); `scale` is
    /// clamped to [1, 3600].
    #[allow(
        clippy::disallowed_methods,
        reason = "the clock module is the one place time is read"
    )]
    pub fn scaled(scale: f64) -> Self {
        Self::scaled_from(system_ms(), scale)
    }

    /// As [`Clock::scaled`], with series time starting at `start` (Unix ms): a demo
    /// day can begin at 03:00 whatever the time of day.
    #[allow(
        clippy::disallowed_methods,
        reason = "the clock module is the one place time is read"
    )]
    pub fn scaled_from(start: Millis, scale: f64) -> Self {
        let scale = if scale.is_finite() {
            scale.clamp(1.0, 3600.0)
        } else {
            1.0
        };
        Self(Arc::new(Inner {
            epoch: Instant::now(),
            series: SeriesClock::new(start),
            scale,
        }))
    }

    /// Series seconds per wall second (1 but in a demo).
    pub fn scale(&self) -> f64 {
        self.0.scale
    }

    /// The wall time a series-time period takes (a decision period, a flush
    /// interval): timers wait this long.
    pub fn wall(&self, series: Duration) -> Duration {
        if self.0.scale == 1.0 {
            series
        } else {
            series.div_f64(self.0.scale)
        }
    }

    /// The series time a wall duration counts as (a request's service time, so that
    /// demand in busy concurrency is the same at any scale).
    pub fn series(&self, wall: Duration) -> Duration {
        if self.0.scale == 1.0 {
            wall
        } else {
            wall.mul_f64(self.0.scale)
        }
    }

    /// Series time now (the data path stamps requests with it): two adds, one load.
    pub fn now_ms(&self) -> Millis {
        self.0.series.at(self.series_elapsed())
    }

    /// Monotonic microseconds since the start, unscaled: admission's and passive
    /// health's `now`.
    pub fn now_micros(&self) -> Micros {
        u64::try_from(self.0.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// A monotonic instant, for measuring how long something took.
    #[allow(
        clippy::disallowed_methods,
        reason = "the clock module is the one place time is read"
    )]
    pub fn instant(&self) -> Instant {
        Instant::now()
    }

    /// Unix seconds on the system clock (metrics such as last-success times).
    pub fn unix_secs(&self) -> f64 {
        system_ms() as f64 / 1000.0
    }

    fn series_elapsed(&self) -> Duration {
        let e = self.0.epoch.elapsed();
        if self.0.scale == 1.0 {
            e
        } else {
            e.mul_f64(self.0.scale)
        }
    }

    /// Checks the system clock (from the profiler's tick), logging a step. A scaled
    /// clock runs ahead of the system clock on purpose: not checked.
    pub fn resync(&self) {
        if self.0.scale != 1.0 {
            return;
        }
        resync_with(&self.0.series, self.series_elapsed(), system_ms());
    }
}

/// Measures how long something took (compute time in reports and logs): a monotonic
/// duration, never a time of day or an input to a decision, so it needs no injected
/// clock.
#[derive(Clone, Copy, Debug)]
pub struct Stopwatch(Instant);

impl Stopwatch {
    #[allow(
        clippy::disallowed_methods,
        reason = "the clock module is the one place time is read"
    )]
    pub fn start() -> Self {
        Self(Instant::now())
    }

    pub fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

fn resync_with(clock: &SeriesClock, elapsed: Duration, system: Millis) {
    match clock.resync(elapsed, system) {
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

/// The system clock, Unix ms (timestamps other systems compare with theirs).
#[allow(
    clippy::disallowed_methods,
    reason = "the clock module is the one place time is read"
)]
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
    fn the_clock_starts_at_the_system_clock_and_is_monotonic() {
        let c = Clock::system();
        let a = c.now_ms();
        let sys = system_ms();
        assert!(a.abs_diff(sys) < STEP, "{a} vs {sys}");
        let b = c.clone().now_ms();
        assert!(b >= a);
        assert!(c.now_micros() <= c.now_micros());
    }

    #[test]
    fn a_scaled_clock_runs_series_time_faster_and_admission_time_at_wall_speed() {
        let c = Clock::scaled(60.0);
        let (s0, m0) = (c.now_ms(), c.now_micros());
        std::thread::sleep(Duration::from_millis(50));
        let (s1, m1) = (c.now_ms(), c.now_micros());
        // 50 ms of wall time: at least 3 s of series time, but only ~50 ms of micros.
        assert!(s1 - s0 >= 3_000, "{}", s1 - s0);
        assert!((50_000..1_000_000).contains(&(m1 - m0)), "{}", m1 - m0);
        // Periods convert both ways.
        assert_eq!(c.wall(Duration::from_secs(60)), Duration::from_secs(1));
        assert_eq!(
            c.series(Duration::from_millis(5)),
            Duration::from_millis(300)
        );
        // A demo day starts where it is told to.
        let day = Clock::scaled_from(T0, 600.0);
        assert!(day.now_ms() >= T0 && day.now_ms() < T0 + 60_000);
    }
}
