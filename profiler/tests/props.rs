//! Property tests of what the data path parses from every request: route templates and
//! path complexity, and trace-context headers. Bounded case counts (PROPTEST_CASES).

use prescale_profiler::route::{is_identifier, template, PathShape};
use prescale_profiler::trace::{TraceId, HEADERS};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Request targets: segments of words, numbers, hex, UUIDs, tokens, file names, odd
/// bytes, and a query.
fn target() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        "[a-z]{1,10}",
        "[0-9]{1,12}",
        "[0-9a-f]{8,40}",
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        "[A-Za-z0-9_=+-]{16,40}",
        "[a-z0-9]{4,20}\\.[a-z]{2,6}",
        "\\PC{0,8}",
        Just(String::new()),
    ];
    (
        prop::collection::vec(segment, 0..8),
        "(\\?([a-z]{1,5}=[a-z0-9]{0,5}&?){0,4})?",
    )
        .prop_map(|(segs, q)| format!("/{}{q}", segs.join("/")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// The hash computed on the data path (no allocation) is the hash of the template
    /// string built off it: a route seen on the data path is the route reported.
    #[test]
    fn shape_hash_is_the_template_hash(t in prop_oneof![target(), "\\PC{0,120}"]) {
        let shape = PathShape::of(&t);
        let tpl = template(&t);
        prop_assert_eq!(shape.template_hash, fnv(tpl.as_bytes()), "{:?} -> {:?}", t, tpl);
        prop_assert!(tpl.starts_with('/'));
        prop_assert!(shape.id_segments <= shape.segments);
        let path = t.split_once('?').map_or(t.as_str(), |(p, _)| p);
        let segs = path.split('/').filter(|s| !s.is_empty()).count();
        prop_assert_eq!(usize::from(shape.segments), segs.min(usize::from(u16::MAX)));
        prop_assert_eq!(usize::from(shape.path_bytes), path.len().min(usize::from(u16::MAX)));
    }

    /// Templating is idempotent, and identifiers never survive it.
    #[test]
    fn templates_are_fixed_points(t in target()) {
        let tpl = template(&t);
        prop_assert_eq!(template(&tpl), tpl.clone());
        for seg in tpl.split('/').filter(|s| !s.is_empty()) {
            prop_assert!(!is_identifier(seg), "{:?} kept identifier {:?}", t, seg);
        }
    }

    /// Numbers and UUIDs are always identifiers; the same route with different ids has
    /// one template.
    #[test]
    fn ids_fold_into_one_route(
        a in "[0-9]{1,12}",
        b in "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        word in "[a-z]{2,10}",
    ) {
        prop_assert!(is_identifier(&a) && is_identifier(&b));
        let x = PathShape::of(&format!("/{word}/{a}/items"));
        let y = PathShape::of(&format!("/{word}/{b}/items"));
        prop_assert_eq!(x.template_hash, y.template_hash);
        prop_assert_eq!(template(&format!("/{word}/{a}")), format!("/{word}/{{id}}"));
    }

    /// Trace headers: arbitrary values never panic, never give the zero id, and
    /// surrounding whitespace changes nothing.
    #[test]
    fn trace_headers_never_panic(value in "\\PC{0,80}") {
        for h in HEADERS {
            let id = TraceId::parse(h, &value);
            prop_assert!(id.is_none_or(|id| id.get() != 0));
            prop_assert_eq!(TraceId::parse(h, &format!("  {value}\t")), id);
        }
    }

    /// A trace id is the same whichever header carries it, and case does not matter.
    #[test]
    fn one_trace_id_across_headers(id in "[0-9a-f]{32}", span in "[0-9a-f]{16}") {
        prop_assume!(id.bytes().any(|b| b != b'0'));
        let tp = TraceId::parse("traceparent", &format!("00-{id}-{span}-01"));
        prop_assert!(tp.is_some());
        prop_assert_eq!(TraceId::parse("b3", &format!("{id}-{span}-1")), tp);
        prop_assert_eq!(TraceId::parse("x-b3-traceid", &id.to_uppercase()), tp);
    }

    /// Malformed traceparents are refused, not guessed at.
    #[test]
    fn malformed_traceparent_is_none(id in "[0-9a-f]{0,31}|[0-9a-f]{33,40}|[g-z]{32}") {
        prop_assert_eq!(TraceId::parse("traceparent", &format!("00-{id}-00f067aa0ba902b7-01")), None);
    }
}
