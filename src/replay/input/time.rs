//! Timestamps in access logs and rate series (CLF, ISO 8601, unix epoch) to unix seconds,
//! parsed by hand: a date library would cost more per line than the rest of the parse.

/// Seconds in a day.
const DAY: i64 = 86_400;

/// Any of the shapes below, chosen by the first characters; brackets around CLF time
/// (`[17/May/2015:10:05:03 +0000]`) and surrounding quotes are tolerated.
pub(super) fn parse_any(b: &[u8]) -> Option<f64> {
    let b = strip(b);
    if b.len() >= 10 && b[4] == b'-' {
        parse_iso(b)
    } else if b.get(2) == Some(&b'/') {
        parse_clf(b)
    } else {
        parse_epoch(b)
    }
}

/// `17/May/2015:10:05:03 +0000` (Apache `%t` without brackets); fractional seconds and a
/// missing or `Z` zone are accepted too, since log shippers rewrite these.
pub(super) fn parse_clf(b: &[u8]) -> Option<f64> {
    let day = digits(b, 0, 2)?;
    let month = month(b.get(3..6)?)?;
    let year = digits(b, 7, 4)?;
    let h = digits(b, 12, 2)?;
    let m = digits(b, 15, 2)?;
    let s = digits(b, 18, 2)?;
    if b.get(2) != Some(&b'/') || b.get(6) != Some(&b'/') || b.get(11) != Some(&b':') {
        return None;
    }
    if b.get(14) != Some(&b':') || b.get(17) != Some(&b':') {
        return None;
    }
    let (frac, offset) = tail(b, 20)?;
    local(year, month, day, h, m, s).map(|t| (t - offset) as f64 + frac)
}

/// `29:23:53:25`: day of the month and a clock, with no month or year (the EPA-HTTP
/// trace's `%t`); read as seconds since 1970-01-00 so that differences are right
/// within a month.
pub(super) fn parse_day_clock(b: &[u8]) -> Option<f64> {
    if b.len() != 11 || [2, 5, 8].iter().any(|i| b.get(*i) != Some(&b':')) {
        return None;
    }
    let (d, h, m, s) = (
        digits(b, 0, 2)?,
        digits(b, 3, 2)?,
        digits(b, 6, 2)?,
        digits(b, 9, 2)?,
    );
    if !(1..=31).contains(&d) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some(f64::from(d * 86_400 + h * 3600 + m * 60 + s))
}

/// `2015-05-17T10:05:03Z`, `2015-05-17 10:05:03.250+02:00`, `2015-05-17T10:05`, or a bare
/// date. A time without a zone is read as UTC, like `series_csv` does.
pub(super) fn parse_iso(b: &[u8]) -> Option<f64> {
    let year = digits(b, 0, 4)?;
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    if b.len() == 10 {
        return local(year, month, day, 0, 0, 0).map(|t| t as f64);
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) || b.get(13) != Some(&b':') {
        return None;
    }
    let h = digits(b, 11, 2)?;
    let m = digits(b, 14, 2)?;
    let (s, at) = if b.get(16) == Some(&b':') {
        (digits(b, 17, 2)?, 19)
    } else {
        (0, 16)
    };
    let (frac, offset) = tail(b, at)?;
    local(year, month, day, h, m, s).map(|t| (t - offset) as f64 + frac)
}

/// A unix epoch number. Loggers disagree on the unit, so it is told by magnitude: below
/// 1e11 seconds (until year 5138), below 1e14 milliseconds, below 1e17 microseconds,
/// else nanoseconds.
pub(super) fn parse_epoch(b: &[u8]) -> Option<f64> {
    if !b.first()?.is_ascii_digit() || !b.iter().all(|c| c.is_ascii_digit() || *c == b'.') {
        return None;
    }
    std::str::from_utf8(b)
        .ok()?
        .parse()
        .ok()
        .and_then(from_epoch)
}

/// An epoch number of unknown unit (see [`parse_epoch`]) to seconds.
pub(super) fn from_epoch(v: f64) -> Option<f64> {
    let secs = if v < 1e11 {
        v
    } else if v < 1e14 {
        v / 1e3
    } else if v < 1e17 {
        v / 1e6
    } else {
        v / 1e9
    };
    (secs.is_finite() && secs >= 0.0).then_some(secs)
}

fn strip(b: &[u8]) -> &[u8] {
    let b = b.trim_ascii();
    match b {
        [b'[', inner @ .., b']'] | [b'"', inner @ .., b'"'] => inner,
        _ => b,
    }
}

/// Optional fraction at `at`, then an optional zone; all of `b` must be used.
/// Returns the fraction of a second and the zone's offset east of UTC in seconds.
fn tail(b: &[u8], mut at: usize) -> Option<(f64, i64)> {
    let mut frac = 0.0;
    if matches!(b.get(at), Some(b'.' | b',')) {
        at += 1;
        let start = at;
        let mut scale = 0.1;
        while let Some(c) = b.get(at).filter(|c| c.is_ascii_digit()) {
            frac += f64::from(c - b'0') * scale;
            scale /= 10.0;
            at += 1;
        }
        if at == start {
            return None;
        }
    }
    if b.get(at) == Some(&b' ') {
        at += 1;
    }
    let zone = b.get(at..)?;
    let offset = match zone {
        [] | b"Z" | b"z" | b"UTC" | b"GMT" => 0,
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let (hh, mm) = match rest {
                [_, _] => (digits(rest, 0, 2)?, 0),
                [_, _, _, _] => (digits(rest, 0, 2)?, digits(rest, 2, 2)?),
                [_, _, b':', _, _] => (digits(rest, 0, 2)?, digits(rest, 3, 2)?),
                _ => return None,
            };
            if hh > 23 || mm > 59 {
                return None;
            }
            let secs = i64::from(hh * 3600 + mm * 60);
            if *sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return None,
    };
    Some((frac, offset))
}

/// Seconds since the epoch of a wall-clock time read as UTC; None when out of range.
fn local(year: u32, month: u32, day: u32, h: u32, m: u32, s: u32) -> Option<i64> {
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    // 60 allows a leap second.
    if h > 23 || m > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(i64::from(year), month, day);
    Some(days * DAY + i64::from(h * 3600 + m * 60 + s))
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn month(b: &[u8]) -> Option<u32> {
    const NAMES: [&[u8; 3]; 12] = [
        b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov",
        b"dec",
    ];
    let lower = [
        b.first()?.to_ascii_lowercase(),
        b.get(1)?.to_ascii_lowercase(),
        b.get(2)?.to_ascii_lowercase(),
    ];
    NAMES
        .iter()
        .position(|n| **n == lower)
        .and_then(|i| u32::try_from(i + 1).ok())
}

/// `n` ASCII digits at `at` as a number.
fn digits(b: &[u8], at: usize, n: usize) -> Option<u32> {
    b.get(at..at + n)?.iter().try_fold(0u32, |acc, c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // `date -u -d '2015-05-17 10:05:03' +%s`
    const T: f64 = 1_431_857_103.0;

    #[test]
    fn clf_times_with_any_offset() {
        assert_eq!(parse_clf(b"17/May/2015:10:05:03 +0000"), Some(T));
        assert_eq!(parse_clf(b"17/May/2015:12:05:03 +0200"), Some(T));
        assert_eq!(parse_clf(b"17/May/2015:04:35:03 -0530"), Some(T));
        assert_eq!(parse_clf(b"17/may/2015:10:05:03"), Some(T));
        assert_eq!(parse_clf(b"17/May/2015:10:05:03.250 +0000"), Some(T + 0.25));
        // Crossing midnight and a year boundary through the offset.
        assert_eq!(
            parse_clf(b"01/Jan/2016:01:00:00 +0200"),
            parse_iso(b"2015-12-31T23:00:00Z")
        );
        assert_eq!(parse_any(b"[17/May/2015:10:05:03 +0000]"), Some(T));
    }

    #[test]
    fn iso_times_and_naive_times_as_utc() {
        assert_eq!(parse_iso(b"2015-05-17T10:05:03Z"), Some(T));
        assert_eq!(parse_iso(b"2015-05-17 10:05:03"), Some(T));
        assert_eq!(parse_iso(b"2015-05-17T12:05:03+02:00"), Some(T));
        assert_eq!(parse_iso(b"2015-05-17T05:05:03-0500"), Some(T));
        assert_eq!(parse_iso(b"2015-05-17T10:05:03.5+00"), Some(T + 0.5));
        assert_eq!(parse_iso(b"2015-05-17T10:05"), Some(T - 3.0));
        assert_eq!(parse_iso(b"2015-05-17"), Some(T - 36_303.0));
        assert_eq!(parse_iso(b"2016-02-29 00:00:00"), Some(1_456_704_000.0));
        assert_eq!(parse_any(b"\"2015-05-17T10:05:03Z\""), Some(T));
    }

    #[test]
    fn epochs_by_magnitude() {
        assert_eq!(parse_any(b"1431857103"), Some(T));
        assert_eq!(parse_any(b"1431857103.5"), Some(T + 0.5));
        assert_eq!(parse_any(b"1431857103000"), Some(T));
        assert_eq!(parse_any(b"1431857103000000"), Some(T));
        assert_eq!(parse_any(b"1431857103000000000"), Some(T));
    }

    #[test]
    fn rejects_nonsense() {
        for bad in [
            &b"xx"[..],
            b"",
            b"17/Foo/2015:10:05:03 +0000",
            b"32/May/2015:10:05:03 +0000",
            b"17/May/2015:24:05:03 +0000",
            b"17/May/2015:10:05:03 +00000",
            b"2015-02-29T00:00:00",
            b"2015-05-17T10:05:03 garbage",
            b"2015-05-17X10:05:03",
            b"-5",
            b"1e9",
        ] {
            assert_eq!(parse_any(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
