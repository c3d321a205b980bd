//! The demo's daily traffic shape: one real day's hourly profile (the history's days
//! and the live day), plus a lunch spike that only the live day has.

/// Relative request rate for each hour of the day (00:00 … 23:00), peak hour = 1.0.
///
/// Taken from a real day of traffic: NAB's `nyc_taxi` series (New York City taxi
/// passengers per 30 minutes; `traces/nab_nyc_taxi.csv` in the project's shared
/// traces), day 2014-07-01 (a Tuesday). For each hour the two half-hour counts were
/// summed, and each hourly sum divided by the largest one (19:00, 51 731 passengers),
/// rounded to three decimals. The demo does not read the file; these are the values.
pub const HOURLY: [f64; 24] = [
    0.367, 0.210, 0.129, 0.086, 0.085, 0.133, 0.340, 0.575, 0.740, 0.766, 0.710, 0.690, 0.731,
    0.728, 0.776, 0.733, 0.604, 0.710, 0.977, 1.000, 0.836, 0.925, 0.871, 0.700,
];

/// The relative rate at `day_fraction` (0.0 = midnight, 1.0 = the next midnight),
/// linearly interpolated between hour midpoints so the offered rate has no steps.
pub fn relative_rate(day_fraction: f64) -> f64 {
    let hours = HOURLY.len() as f64;
    // Hour h's value sits at h + 0.5; between midpoints, interpolate (wrapping round).
    let x = (day_fraction.clamp(0.0, 1.0) * hours - 0.5).rem_euclid(hours);
    let i = x.floor() as usize % HOURLY.len();
    let j = (i + 1) % HOURLY.len();
    let t = x - x.floor();
    let (a, b) = (
        HOURLY.get(i).copied().unwrap_or(1.0),
        HOURLY.get(j).copied().unwrap_or(1.0),
    );
    a + (b - a) * t
}

/// Where the lunch spike peaks (12:20) and its half-width (20 min), as day fractions.
pub const SPIKE_CENTER: f64 = (12.0 + 20.0 / 60.0) / 24.0;
pub const SPIKE_HALF_WIDTH: f64 = 20.0 / 1440.0;
/// The spike's extra load at its peak, relative to the day's curve there.
pub const SPIKE_EXTRA: f64 = 2.0;

/// The live day's relative rate: the same curve as the history's days, plus a lunch
/// spike (a raised cosine, 3 times the load at 12:20) that no earlier day had, so it
/// is larger than the forecast. `day_fraction` may pass 1.0 (the next day).
pub fn live_rate(day_fraction: f64) -> f64 {
    let day = day_fraction.rem_euclid(1.0);
    let x = (day - SPIKE_CENTER) / SPIKE_HALF_WIDTH;
    let spike = if x.abs() < 1.0 {
        SPIKE_EXTRA * 0.5 * (1.0 + (std::f64::consts::PI * x).cos())
    } else {
        0.0
    };
    relative_rate(day) * (1.0 + spike)
}

/// The day's clock at `day_fraction`, as `HH:MM`.
pub fn clock(day_fraction: f64) -> String {
    let minutes = (day_fraction.rem_euclid(1.0) * 1440.0) as u32 % 1440;
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_is_one_and_interpolation_hits_hour_midpoints() {
        assert_eq!(HOURLY.iter().copied().fold(0.0, f64::max), 1.0);
        assert!((relative_rate(19.5 / 24.0) - 1.0).abs() < 1e-9);
        assert!((relative_rate(4.5 / 24.0) - 0.085).abs() < 1e-9);
        // Between 19:30 and 20:30 the rate falls from 1.0 to 0.836.
        assert!((relative_rate(20.0 / 24.0) - 0.918).abs() < 1e-9);
        // Wraps around midnight: 23:30 → 00:30.
        let midnight = relative_rate(0.0);
        assert!((midnight - (0.700 + 0.367) / 2.0).abs() < 1e-9);
        assert_eq!(clock(0.5), "12:00");
        assert_eq!(clock(1.0), "00:00");
    }

    #[test]
    fn the_live_day_is_the_curve_plus_a_lunch_spike() {
        assert!((live_rate(SPIKE_CENTER) / relative_rate(SPIKE_CENTER) - 3.0).abs() < 1e-9);
        for day in [0.2, 0.3, 0.45, 0.6, 0.9] {
            assert!((live_rate(day) - relative_rate(day)).abs() < 1e-12, "{day}");
        }
        assert!((live_rate(1.3) - relative_rate(0.3)).abs() < 1e-12);
    }
}
