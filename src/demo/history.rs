//! Synthetic history for the demo's store, so the forecaster has days to work from at once.
//!
//! The forecaster works on whole minutes, so a one-minute demo would otherwise show
//! little more than "forecast waiting". Before the sidecar starts, its store is
//! seeded with [`DAYS`] days of per-minute buckets at real wall-clock minutes (UTC),
//! ending with the minute before the current one, each shaped by the same 24-hour
//! curve the load generator compresses ([`shape::relative_rate`]) and scaled like it:
//! at a given point of the day, history and the live load have the same demand
//! (requests per second × mean service time = busy concurrency). Everything is
//! counted under [`UNCLASSIFIED`] and in the minute's total (the forecaster's total
//! series reads the total), with small deterministic noise. Demo only: the view and
//! the summary say so, and `--no-history` turns it off.

use super::shape;
use super::upstream::Jitter;
use prescale_profiler::sample::Millis;
use prescale_profiler::series::{Bucket, Cell, MINUTE_MS, UNCLASSIFIED};
use prescale_profiler::store::{Store, StoreError};
use std::collections::BTreeMap;
use std::path::Path;

/// Days of history seeded.
pub const DAYS: u64 = 2;
/// Mean service time of the load generator's mix as the sidecar measures it: 60 %
/// items (~2 ms), 20 % search (~20 ms), 12 % static (~0 ms) and 8 % checkout (~50 ms:
/// 30 ms plus 2–3 payments calls of 8 ms) make ~9 ms of work, plus the proxy's and the
/// timers' overhead (a debug build measures 12–14 ms).
const MEAN_SERVICE_SECONDS: f64 = 0.012;
/// Each minute's demand is off the curve by up to this share, either way.
const NOISE: f64 = 0.05;
const DAY_MS: Millis = 86_400_000;

/// What the view and the summary say when the history was seeded.
pub fn note() -> String {
    format!("forecast seeded with {DAYS} days of synthetic history (demo only)")
}

/// Writes the history into the store at `path` (created if missing) and closes it, so
/// the sidecar can open it. `now` is Unix milliseconds; returns the minutes written.
pub fn seed(path: &Path, now: Millis, peak_rate: f64) -> Result<usize, StoreError> {
    let buckets = minutes(now, peak_rate);
    let store = Store::open(path, now)?.store;
    let refs: Vec<&Bucket> = buckets.iter().collect();
    store.write(&refs, 0)?;
    Ok(buckets.len())
}

/// The minutes of the [`DAYS`] days before the minute holding `now`, oldest first.
pub fn minutes(now: Millis, peak_rate: f64) -> Vec<Bucket> {
    let current = now - now % MINUTE_MS;
    let count = DAYS * DAY_MS / MINUTE_MS;
    (1..=count)
        .rev()
        .filter_map(|back| current.checked_sub(back * MINUTE_MS))
        .map(|start| bucket(start, peak_rate))
        .collect()
}

/// One minute: the curve at the minute's middle, scaled to the live load, plus noise
/// that depends only on the minute (the same minute always gets the same value).
fn bucket(start: Millis, peak_rate: f64) -> Bucket {
    let day = ((start % DAY_MS) + MINUTE_MS / 2) as f64 / DAY_MS as f64;
    let noise = 1.0 + NOISE * (2.0 * Jitter::new(start).next_f64() - 1.0);
    let requests = peak_rate * shape::relative_rate(day) * noise * (MINUTE_MS / 1000) as f64;
    let cell = Cell {
        requests: requests.round() as u64,
        work_us: (requests * MEAN_SERVICE_SECONDS * 1e6).round() as u64,
    };
    Bucket {
        start,
        total: cell,
        by_signature: BTreeMap::from([(UNCLASSIFIED, cell)]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_days_of_minutes_follow_the_curve_and_end_before_now() {
        // 2026-01-02 19:30:20 UTC: the curve's peak hour.
        let now = 1_767_382_220_000;
        let peak = 150.0;
        let b = minutes(now, peak);
        assert_eq!(b.len(), 2 * 1440);
        let last = b.last().unwrap();
        assert_eq!(last.start, now - now % MINUTE_MS - MINUTE_MS);
        assert!(b.windows(2).all(|w| w[1].start - w[0].start == MINUTE_MS));
        // Demand (busy concurrency) near the peak is peak rate × mean service time,
        // within the noise; the forecaster reads the total.
        let demand = last.total.demand(MINUTE_MS);
        let expected = peak * MEAN_SERVICE_SECONDS;
        assert!((demand / expected - 1.0).abs() <= NOISE + 0.01, "{demand}");
        assert_eq!(last.by_signature.get(&UNCLASSIFIED), Some(&last.total));
        // Night (04:30) is the curve's low: ~0.085 of the peak.
        let night = b
            .iter()
            .find(|m| m.start % DAY_MS == 4 * 3_600_000 + 30 * 60_000);
        let night = night.unwrap().total.demand(MINUTE_MS) / expected;
        assert!((0.07..0.1).contains(&night), "{night}");
        // Deterministic: the same minute gets the same value.
        assert_eq!(minutes(now + 1000, peak), b);
    }

    #[test]
    fn seeded_store_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let now = 1_767_382_220_000;
        assert_eq!(seed(&path, now, 100.0).unwrap(), 2880);
        let rows = Store::open(&path, now).unwrap().store.load(0).unwrap();
        assert_eq!(rows, minutes(now, 100.0));
    }
}
