//! The `prescale replay` line readers (Common/Combined Log Format, JSON lines, rate CSV,
//! and format detection) on arbitrary bytes: never panic, and what they accept is sane.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The readers live in the binary crate; compiled in here as benches/replay_input.rs does.
#[allow(unused, dead_code)]
#[path = "../../src/replay/input/mod.rs"]
mod input;

use input::{Format, Record};

fuzz_target!(|data: &[u8]| {
    for format in [
        Format::Auto,
        Format::Combined,
        Format::Common,
        Format::Jsonl,
        Format::RateCsv,
    ] {
        match input::parse_line(format, data) {
            Ok(Some(Record::Request(r))) => {
                assert!(r.ts.is_finite(), "{format}: {r:?}");
                assert!(r.duration.is_none_or(|d| !d.is_nan()), "{format}: {r:?}");
            }
            Ok(Some(Record::Count { ts, count, .. })) => {
                assert!(ts.is_finite() && count.is_finite() && count >= 0.0);
            }
            Ok(None) | Err(_) => {}
        }
    }
});
