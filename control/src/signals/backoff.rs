//! How long a signal waits before its next attempt: exponential backoff with jitter,
//! or the receiver's own `Retry-After`.

use http::header::RETRY_AFTER;
use http::HeaderMap;
use std::time::{Duration, SystemTime};

/// The longest `Retry-After` honoured: a receiver asking for more is still retried
/// then (a newer decision replaces a stale one anyway).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The delay before retry `n` (1-based): `base × 2^(n−1)`, capped at `cap`, then
/// scaled into [½, 1]× by `unit` ∈ [0, 1) ("equal jitter": never zero, so a fleet of
/// sidecars spreads out without hammering a receiver that is down).
pub fn delay(n: u32, base: Duration, cap: Duration, unit: f64) -> Duration {
    let doublings = n.saturating_sub(1).min(30);
    let full = base.saturating_mul(1u32 << doublings).min(cap);
    full.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
}

/// The receiver's `Retry-After` (delay-seconds or an HTTP date), capped at
/// [`MAX_RETRY_AFTER`].
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let d = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(v)
            .ok()?
            .duration_since(now)
            .unwrap_or(Duration::ZERO),
    };
    Some(d.min(MAX_RETRY_AFTER))
}

/// The system clock as a `SystemTime` (an HTTP date in `Retry-After` is absolute).
pub fn system_now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(prescale_proxy::clock::system_ms())
}

/// A small xorshift generator for jitter: not for secrets, just to decorrelate
/// sidecars that fail at the same moment.
pub struct Jitter(u64);

// === impl Jitter ===

impl Jitter {
    pub fn seeded() -> Self {
        let ms = prescale_proxy::clock::system_ms();
        // Sidecars started in the same millisecond differ by pid.
        Self((ms.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (u64::from(std::process::id()) << 32)) | 1)
    }

    /// The next value in [0, 1).
    pub fn next_unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_schedule_doubles_from_base_until_the_cap() {
        // Without jitter (unit just under 1) the delays are the full schedule.
        let full: Vec<_> = (1..=7)
            .map(|n| delay(n, 200 * MS, 5000 * MS, 0.999_999_9).as_millis())
            .collect();
        assert_eq!(full, [199, 399, 799, 1599, 3199, 4999, 4999]);
        // With the lowest jitter they are half of it.
        let half: Vec<_> = (1..=4)
            .map(|n| delay(n, 200 * MS, 5000 * MS, 0.0).as_millis())
            .collect();
        assert_eq!(half, [100, 200, 400, 800]);
        // Absurd attempt numbers neither overflow nor pass the cap.
        assert_eq!(delay(u32::MAX, 200 * MS, 5000 * MS, 0.0), 2500 * MS);
    }

    #[test]
    fn jitter_stays_in_half_to_full_and_varies() {
        let mut j = Jitter::seeded();
        let units: Vec<f64> = (0..1000).map(|_| j.next_unit()).collect();
        assert!(units.iter().all(|u| (0.0..1.0).contains(u)));
        let mean = units.iter().sum::<f64>() / units.len() as f64;
        assert!((0.4..0.6).contains(&mean), "mean {mean}");
        for u in units {
            let d = delay(3, 200 * MS, 5000 * MS, u);
            assert!(d >= 400 * MS && d <= 800 * MS, "{d:?}");
        }
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date_and_is_capped() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h, now), None);
        h.insert(RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(3)));
        h.insert(RETRY_AFTER, "86400".parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(MAX_RETRY_AFTER));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(7));
        h.insert(RETRY_AFTER, later.parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        // A date in the past means "now".
        let past = httpdate::fmt_http_date(now - Duration::from_secs(7));
        h.insert(RETRY_AFTER, past.parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h, now), None);
    }
}
