//! Sources (callers): configured tiers and weights, per-source rate limits over a
//! bounded top-K table, and runtime overrides (anomaly remediation).

mod config;
pub mod overrides;
mod table;

pub use self::config::{IdentityConfig, RateLimitConfig, SourcesConfig, MAX_TOP_K};
pub use self::overrides::{
    OverrideEffect, OverrideEntry, OverridesFull, SourceOverride, SourceOverrides, MAX_OVERRIDES,
};
pub use self::table::{SourceTable, WAYS};

#[cfg(test)]
mod tests {
    use super::*;

    fn limited(rps: f64, burst: f64, top_k: usize) -> SourceTable {
        SourceTable::new(&SourcesConfig {
            top_k,
            rate_limit: Some(RateLimitConfig {
                rps,
                burst: Some(burst),
            }),
            ..SourcesConfig::default()
        })
    }

    #[test]
    fn token_bucket_allows_burst_then_rate_with_exact_wait() {
        // 10 rps, burst 5: five at once, then one every 100 ms.
        let t = limited(10.0, 5.0, 64);
        for _ in 0..5 {
            assert_eq!(t.check("app-a", 1.0, 1_000_000), Ok(()));
        }
        // The sixth at the same instant must wait a full interval.
        assert_eq!(t.check("app-a", 1.0, 1_000_000), Err(100_000));
        // 100 ms later one token has come back, and only one.
        assert_eq!(t.check("app-a", 1.0, 1_100_000), Ok(()));
        assert_eq!(t.check("app-a", 1.0, 1_100_000), Err(100_000));
        // Another source has its own bucket.
        assert_eq!(t.check("app-b", 1.0, 1_100_000), Ok(()));
    }

    #[test]
    fn weight_scales_rate_and_burst() {
        let t = limited(10.0, 2.0, 64);
        // Weight 2: burst 4, then every 50 ms.
        for _ in 0..4 {
            assert_eq!(t.check("vip", 2.0, 0), Ok(()));
        }
        assert_eq!(t.check("vip", 2.0, 0), Err(50_000));
    }

    #[test]
    fn state_stays_bounded_under_a_million_sources_and_heavy_hitters_stay_limited() {
        let t = limited(100.0, 10.0, 1024);
        assert_eq!(t.capacity(), 1024);
        let mut heavy_rejected = 0;
        // 10^6 distinct sources, one request each, interleaved with a heavy hitter
        // sending one request in every 16 (far above 1/K of the traffic) at 10 kHz.
        for i in 0..1_000_000u64 {
            let now = i * 100;
            assert_eq!(t.check(&format!("client-{i}"), 1.0, now), Ok(()));
            if i % 16 == 0 && t.check("abuser", 1.0, now).is_err() {
                heavy_rejected += 1;
            }
        }
        assert!(t.tracked() <= t.capacity(), "tracked {}", t.tracked());
        // The abuser sends 625 rps against a 100 rps limit: it stayed tracked, so
        // about 5/6 of its 62 500 requests were limited.
        assert!(heavy_rejected > 50_000, "rejected {heavy_rejected}");
    }

    #[test]
    fn without_a_rate_limit_nothing_is_tracked() {
        let t = SourceTable::new(&SourcesConfig::default());
        assert!(!t.is_limiting());
        assert_eq!(t.check("x", 1.0, 0), Ok(()));
        assert_eq!(t.tracked(), 0);
        assert_eq!(t.weight("x"), 1.0);
    }
}
