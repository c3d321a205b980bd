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

fn global() -> &'static (Instant, SeriesClock) {
    static CLOCK: OnceLock<(Instant, SeriesClock)> = OnceLock::new();
    CLOCK.get_or_init(|| (Instant::now(), SeriesClock::new(system_ms())))
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
    fn the_global_clock_starts_at_the_system_clock_and_is_monotonic() {
        let a = now_ms();
        let sys = system_ms();
        assert!(a.abs_diff(sys) < STEP, "{a} vs {sys}");
        let b = now_ms();
        assert!(b >= a);
    }
}
