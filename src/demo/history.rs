//! History for the demo's store: earlier days of the same shape as the live day, so the
//! forecaster knows the morning ramp before it comes.
//!
//! Before the sidecar starts, its store is seeded with [`DAYS`] days of per-minute
//! buckets ending at the series time the sidecar starts at (`--time-start`), each
//! shaped by the curve the load generator follows ([`shape::relative_rate`]; the live
//! day adds a lunch spike on top) and at the level the live load will show: the
//! sidecar sees `rate / time_scale` requests per series second, each taking
//! `time_scale` times its wall service time, so demand (busy concurrency) is
//! `rate × service time` at any scale. The count and the work of each minute carry
//! the noise the live minutes will have at that scale (a Poisson count of requests of
//! a mixed cost), so the forecast's band is calibrated to what it will see.
//! Everything is counted under [`UNCLASSIFIED`] and in the minute's total (the
//! forecaster's total series reads the total). Demo only: the view and the summary say
//! so, and `--no-history` turns it off.

use super::shape;
use super::upstream::Jitter;
use prescale_profiler::sample::Millis;
use prescale_profiler::series::{Bucket, Cell, MINUTE_MS, UNCLASSIFIED};
use prescale_profiler::store::{Store, StoreError};
use std::collections::BTreeMap;
use std::path::Path;

/// Days of history seeded: daily seasonality needs two.
pub const DAYS: u64 = 3;
/// Mean wall service time of the load generator's mix as the sidecar measures it:
/// 55 % items (~2 ms), 20 % search (~20 ms), 12 % static (~0 ms), 8 % checkout
/// (~50 ms: 30 ms plus 2–3 payments calls of 8 ms) and 5 % reports (~15 ms) make
/// ~10 ms of work, plus the proxy's and the timers' overhead in a debug build.
pub const MEAN_SERVICE_SECONDS: f64 = 0.013;
/// Coefficient of variation of one request's service time in that mix: a minute of n
/// requests has work with relative noise `COST_CV / sqrt(n)` around its mean.
const COST_CV: f64 = 1.6;
const DAY_MS: Millis = 86_400_000;

/// What the view and the summary say when the history was seeded.
pub fn note() -> String {
    format!("forecast warm-started from {DAYS} earlier days of the same shape (demo only)")
}

/// Writes the history into the store at `path` (created if missing) and closes it, so
/// the sidecar can open it. `start` is the series time the sidecar starts at (Unix ms);
/// returns the minutes written.
pub fn seed(
    path: &Path,
    start: Millis,
    peak_rate: f64,
    time_scale: f64,
) -> Result<usize, StoreError> {
    let buckets = minutes(start, peak_rate, time_scale);
    let store = Store::open(path, start)?.store;
    let refs: Vec<&Bucket> = buckets.iter().collect();
    store.write(&refs, 0)?;
    Ok(buckets.len())
}

/// The minutes of the [`DAYS`] days before the minute holding `now`, oldest first.
pub fn minutes(now: Millis, peak_rate: f64, time_scale: f64) -> Vec<Bucket> {
    let current = now - now % MINUTE_MS;
    let count = DAYS * DAY_MS / MINUTE_MS;
    (1..=count)
        .rev()
        .filter_map(|back| current.checked_sub(back * MINUTE_MS))
        .map(|start| bucket(start, peak_rate, time_scale))
        .collect()
}

/// One minute: the curve at the minute's middle at the live load's level, with noise
/// that depends only on the minute (the same minute always gets the same value).
fn bucket(start: Millis, peak_rate: f64, time_scale: f64) -> Bucket {
    let day = ((start % DAY_MS) + MINUTE_MS / 2) as f64 / DAY_MS as f64;
    let scale = time_scale.max(1.0);
    // Requests the sidecar sees in one series minute.
    let mean = peak_rate * shape::relative_rate(day) * (MINUTE_MS / 1000) as f64 / scale;
    let rng = Jitter::new(start);
    let requests = (mean + mean.sqrt() * normal(&rng)).round().max(0.0);
    let cost = (1.0 + COST_CV / requests.max(1.0).sqrt() * normal(&rng)).max(0.1);
    let work_s = requests * MEAN_SERVICE_SECONDS * scale * cost;
    let cell = Cell {
        requests: requests as u64,
        work_us: (work_s * 1e6).round() as u64,
    };
    Bucket {
        start,
        total: cell,
        by_signature: BTreeMap::from([(UNCLASSIFIED, cell)]),
    }
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &Jitter) -> f64 {
    let u = rng.next_f64().max(1e-12);
    let v = rng.next_f64();
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_of_minutes_follow_the_curve_at_the_live_level_and_end_before_start() {
        // 2026-01-02 19:30:20 UTC: the curve's peak hour.
        let now = 1_767_382_220_000;
        let (peak, scale) = (150.0, 600.0);
        let b = minutes(now, peak, scale);
        assert_eq!(b.len(), DAYS as usize * 1440);
        let last = b.last().unwrap();
        assert_eq!(last.start, now - now % MINUTE_MS - MINUTE_MS);
        assert!(b.windows(2).all(|w| w[1].start - w[0].start == MINUTE_MS));
        assert_eq!(last.by_signature.get(&UNCLASSIFIED), Some(&last.total));
        // Demand (busy concurrency) is rate × wall service time whatever the scale:
        // averaged over the peak hour of every day, within the noise.
        let expected = peak * MEAN_SERVICE_SECONDS;
        let mean_at = |hour: u64| {
            let v: Vec<f64> = b
                .iter()
                .filter(|m| (m.start % DAY_MS) / 3_600_000 == hour)
                .map(|m| m.total.demand(MINUTE_MS))
                .collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        let peak_hour = mean_at(19) / expected;
        assert!((0.85..1.1).contains(&peak_hour), "{peak_hour}");
        // Night (04:00–05:00) is the curve's low: ~0.085 of the peak.
        let night = mean_at(4) / expected;
        assert!((0.05..0.13).contains(&night), "{night}");
        // Deterministic: the same minute gets the same value.
        assert_eq!(minutes(now + 1000, peak, scale), b);
    }

    #[test]
    fn seeded_store_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let now = 1_767_382_220_000;
        assert_eq!(seed(&path, now, 100.0, 60.0).unwrap(), DAYS as usize * 1440);
        let rows = Store::open(&path, now).unwrap().store.load(0).unwrap();
        assert_eq!(rows, minutes(now, 100.0, 60.0));
    }
}
