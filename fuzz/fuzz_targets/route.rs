//! Route templates and path complexity on arbitrary request targets: never panics, the
//! data-path hash is the hash of the off-path template string, and templating is
//! idempotent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prescale_profiler::route::{template, PathShape};

fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fuzz_target!(|data: &[u8]| {
    let target = String::from_utf8_lossy(data);
    let shape = PathShape::of(&target);
    let t = template(&target);
    assert_eq!(
        shape.template_hash,
        fnv(t.as_bytes()),
        "{target:?} -> {t:?}"
    );
    assert!(shape.id_segments <= shape.segments);
    assert!(t.starts_with('/'));
    assert_eq!(template(&t), t, "not idempotent on {target:?}");
});
