//! Scripted client populations: steady sources, one that surges or changes its mix,
//! and a flood of a million one-off clients.

use super::*;
use crate::anomaly::Anomaly;

const SECOND: Millis = 1000;

/// Fifty steady sources at 1 request per second each, all of signature 1, for
/// `seconds` seconds from `from`, ticking every second as the profiler does.
fn steady(m: &mut SourceMonitor, from: u64, seconds: u64) -> Vec<(u64, AnomalyEvent)> {
    let mut out = Vec::new();
    for s in from..from + seconds {
        for source in 0..50u64 {
            m.record(source, 1);
        }
        out.extend(m.tick(s * SECOND).into_iter().map(|e| (s, e)));
    }
    out
}

#[test]
fn a_source_at_twenty_times_its_rate_is_flagged_within_a_minute_and_no_other_is() {
    let mut m = SourceMonitor::new(SourceParams::default());
    // Ten minutes of ordinary traffic: nothing to report.
    assert!(steady(&mut m, 0, 600).is_empty());
    // Source 7 now sends 20 requests a second; the others carry on.
    let mut events = Vec::new();
    for s in 600..660u64 {
        for _ in 0..19 {
            m.record(7, 1);
        }
        for source in 0..50u64 {
            m.record(source, 1);
        }
        events.extend(m.tick(s * SECOND).into_iter().map(|e| (s, e)));
    }
    let raised: Vec<(u64, &Anomaly)> = events
        .iter()
        .filter_map(|(s, e)| match e {
            AnomalyEvent::Raised(a) => Some((*s, a)),
            _ => None,
        })
        .collect();
    assert_eq!(raised.len(), 1, "{raised:?}");
    let (at, a) = raised[0];
    assert_eq!(a.kind, AnomalyKind::SourceRate);
    assert_eq!(a.subject, source_subject(7));
    assert!(at - 600 <= 60, "flagged after {} s", at - 600);
    assert!((15.0..=25.0).contains(&a.severity), "{}", a.severity);
    // It calms down: the anomaly ends, and the baseline did not learn the surge.
    let after = steady(&mut m, 660, 60);
    assert!(after.iter().any(|(_, e)| matches!(
        e,
        AnomalyEvent::Cleared {
            kind: AnomalyKind::SourceRate,
            ..
        }
    )));
    assert!(after
        .iter()
        .all(|(_, e)| !matches!(e, AnomalyEvent::Raised(_))));
}

#[test]
fn a_source_switching_to_other_work_is_a_mix_anomaly() {
    let mut m = SourceMonitor::new(SourceParams::default());
    // Source 3 usually sends 5 requests a second, all reads (signature 1).
    for s in 0..300u64 {
        for _ in 0..5 {
            m.record(3, 1);
        }
        assert!(m.tick(s * SECOND).is_empty());
    }
    // Same rate, but now all uploads (signature 4).
    let mut kinds = Vec::new();
    for s in 300..360u64 {
        for _ in 0..5 {
            m.record(3, 4);
        }
        for e in m.tick(s * SECOND) {
            if let AnomalyEvent::Raised(a) = e {
                kinds.push((s, a.kind, a.severity));
            }
        }
    }
    assert_eq!(kinds.len(), 1, "{kinds:?}");
    let (at, kind, severity) = kinds[0];
    assert_eq!(kind, AnomalyKind::SourceMix);
    assert!(at < 340, "flagged at {at}");
    // Distance ~1 (disjoint mixes; the baseline had learnt a few uploads from the
    // interval straddling the switch) over a threshold of 0.5.
    assert!((severity - 2.0).abs() < 0.02, "{severity}");
}

#[test]
fn a_million_distinct_sources_keep_state_for_at_most_capacity() {
    let p = SourceParams::default();
    let cap = p.capacity;
    let mut m = SourceMonitor::new(p);
    let started = std::time::Instant::now();
    let mut events = 0usize;
    // A million one-off clients, plus a steady heavy client, over 1000 seconds.
    for i in 0..1_000_000u64 {
        m.record(1_000_000_000 + i, (i % 5) as SignatureId);
        if i % 100 == 0 {
            m.record(42, 1);
        }
        if i % 1000 == 0 {
            events += m.tick(i / 1000 * SECOND).len();
            assert!(m.tracked() <= cap);
        }
    }
    assert!(m.tracked() <= cap);
    assert!(m.top.len() <= cap);
    // The heavy client survived the churn, and the one-offs raised nothing.
    assert!(m.state.contains_key(&42));
    assert_eq!(events, 0);
    eprintln!("10^6 sources: {:?}", started.elapsed());
}

#[test]
fn a_surge_soon_after_start_is_flagged_though_its_first_interval_is_only_partly_elevated() {
    // Short intervals and a young baseline (5 intervals): the surge begins halfway
    // through an interval, so that interval is "only" 10× (not above the threshold).
    // It must not teach the young baseline enough to hide the 21× that follows.
    let p = SourceParams {
        interval: std::time::Duration::from_secs(2),
        warmup: 4,
        sustain: 2,
        ..SourceParams::default()
    };
    let mut m = SourceMonitor::new(p);
    let mut raised = Vec::new();
    for s in 0..40u64 {
        let n = if s < 12 { 2 } else { 42 };
        for _ in 0..n {
            m.record(1, 1);
        }
        m.record(2, 1);
        m.record(2, 1);
        for e in m.tick(s * SECOND) {
            if let AnomalyEvent::Raised(a) = e {
                raised.push((s, a));
            }
        }
    }
    assert_eq!(raised.len(), 1, "{raised:?}");
    let (at, a) = &raised[0];
    assert_eq!(a.subject, source_subject(1));
    assert!(*at <= 18, "flagged at {at} s");
}
