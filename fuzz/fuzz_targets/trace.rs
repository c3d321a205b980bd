//! Trace-header parsing on arbitrary values: never panics, never yields the zero id,
//! and surrounding whitespace does not change the id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prescale_profiler::trace::{TraceId, HEADERS};

fuzz_target!(|data: &[u8]| {
    let value = String::from_utf8_lossy(data);
    for header in HEADERS {
        let id = TraceId::parse(header, &value);
        if let Some(id) = id {
            assert_ne!(id.get(), 0);
        }
        assert_eq!(TraceId::parse(header, &format!(" {value}\t")), id);
    }
    assert_eq!(TraceId::parse("x-unknown", &value), None);
});
