//! Scripted snapshot sequences: a steady mix of three signatures, then one change.

use super::*;

const MINUTE: Millis = 60_000;

/// Three signatures: cheap reads, searches and expensive uploads.
fn steady() -> Vec<SignatureSnapshot> {
    [
        (1, 0.5, 0.002, 2_000.0),
        (2, 0.3, 0.02, 20_000.0),
        (3, 0.2, 0.2, 200.0),
    ]
    .into_iter()
    .map(|(id, share, svc, bytes)| SignatureSnapshot {
        id,
        share,
        requests: (share * 1000.0) as u64,
        mean_service_seconds: svc,
        mean_response_bytes: bytes,
        new_distance: None,
    })
    .collect()
}

fn snap(signatures: Vec<SignatureSnapshot>) -> DriftSnapshot {
    DriftSnapshot {
        model_version: 1,
        signatures,
    }
}

fn raised(events: &[AnomalyEvent]) -> Vec<(AnomalyKind, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            AnomalyEvent::Raised(a) => Some((a.kind, a.subject.clone())),
            _ => None,
        })
        .collect()
}

/// A detector that has seen `n` steady snapshots (with a little jitter).
fn warmed(n: u64) -> DriftDetector {
    let mut d = DriftDetector::new(DriftParams::default());
    for t in 0..n {
        let mut s = steady();
        for x in &mut s {
            x.mean_service_seconds *= 1.0 + 0.05 * ((t % 3) as f64 - 1.0);
        }
        assert!(d.observe(t * MINUTE, &snap(s)).is_empty());
    }
    d
}

#[test]
fn cost_doubling_at_a_constant_mix_is_cost_drift_of_that_signature_only() {
    let mut d = warmed(30);
    // Searches now take twice as long; the mix is unchanged.
    let mut all = Vec::new();
    for t in 30..40 {
        let mut s = steady();
        if let Some(x) = s.get_mut(1) {
            x.mean_service_seconds = 0.04;
        }
        let ev = d.observe(t * MINUTE, &snap(s));
        if !raised(&ev).is_empty() {
            all.push((t, raised(&ev)));
        }
        if t == 32 {
            // Raised on the third snapshot in a row, dated from the first.
            let a = ev
                .iter()
                .find_map(|e| match e {
                    AnomalyEvent::Raised(a) => Some(a),
                    _ => None,
                })
                .expect("raised");
            assert_eq!(a.since, 30 * MINUTE);
            assert!((a.severity - 2.0).abs() < 0.1, "{}", a.severity);
            assert_eq!(a.evidence.get("service_seconds"), Some(&0.04));
        }
    }
    assert_eq!(
        all,
        vec![(
            32,
            vec![(AnomalyKind::CostDrift, "signature:2".to_string())]
        )]
    );
    // The fix ships: cost back to normal, the anomaly ends.
    let ev = d.observe(40 * MINUTE, &snap(steady()));
    assert!(matches!(
        ev.as_slice(),
        [AnomalyEvent::Cleared {
            kind: AnomalyKind::CostDrift,
            ..
        }]
    ));
}

#[test]
fn a_growing_response_size_is_cost_drift_too_and_is_accepted_after_a_while() {
    let p = DriftParams {
        accept_after: 10,
        ..DriftParams::default()
    };
    let mut d = DriftDetector::new(p);
    for t in 0..20 {
        d.observe(t * MINUTE, &snap(steady()));
    }
    let mut log = Vec::new();
    for t in 20..40 {
        let mut s = steady();
        if let Some(x) = s.get_mut(0) {
            x.mean_response_bytes = 5_000.0;
        }
        for e in d.observe(t * MINUTE, &snap(s)) {
            match e {
                AnomalyEvent::Raised(a) => log.push((t, "raised", a.kind)),
                AnomalyEvent::Cleared { kind, .. } => log.push((t, "cleared", kind)),
                _ => {}
            }
        }
    }
    // Raised after three snapshots; a regression nobody fixes becomes the baseline.
    assert_eq!(
        log,
        vec![
            (22, "raised", AnomalyKind::CostDrift),
            (31, "cleared", AnomalyKind::CostDrift)
        ]
    );
}

#[test]
fn a_cost_change_with_a_mix_change_is_a_share_shift_not_cost_drift() {
    let mut d = warmed(30);
    let mut kinds = Vec::new();
    for t in 30..36 {
        // Uploads jump from 20 % to 50 % of traffic, and searches double in cost.
        let mut s = steady();
        if let [a, b, c] = s.as_mut_slice() {
            a.share = 0.3;
            b.share = 0.2;
            b.mean_service_seconds = 0.04;
            c.share = 0.5;
        }
        kinds.extend(raised(&d.observe(t * MINUTE, &snap(s))));
    }
    assert_eq!(
        kinds,
        vec![
            (AnomalyKind::ShareShift, "signature:1".to_string()),
            (AnomalyKind::ShareShift, "signature:3".to_string())
        ]
    );
}

#[test]
fn a_new_signature_is_reported_only_when_far_from_all_known_ones() {
    let mut d = DriftDetector::new(DriftParams::default());
    // At start-up every signature is new to us: none is reported.
    let mut first = steady();
    for s in &mut first {
        s.new_distance = Some(10.0);
    }
    assert!(d.observe(0, &snap(first)).is_empty());
    for t in 1..20 {
        d.observe(t * MINUTE, &snap(steady()));
    }
    // A re-fit creates signature 4 near signature 2 (distance 2): not new work.
    let mut s = steady();
    s.push(SignatureSnapshot {
        id: 4,
        share: 0.01,
        requests: 10,
        new_distance: Some(2.0),
        ..SignatureSnapshot::default()
    });
    let ev = d.observe(
        20 * MINUTE,
        &DriftSnapshot {
            model_version: 2,
            signatures: s,
        },
    );
    assert!(raised(&ev).is_empty());
    // The next re-fit creates signature 5 far from everything: reported once, even
    // if the caller repeats the distance in later snapshots of the same model.
    for t in 21..24 {
        let mut s = steady();
        s.push(SignatureSnapshot {
            id: 5,
            share: 0.02,
            requests: 20,
            new_distance: Some(6.0),
            ..SignatureSnapshot::default()
        });
        let ev = d.observe(
            t * MINUTE,
            &DriftSnapshot {
                model_version: 3,
                signatures: s,
            },
        );
        if t == 21 {
            assert_eq!(
                raised(&ev),
                vec![(AnomalyKind::NewSignature, "signature:5".to_string())]
            );
        } else {
            assert!(raised(&ev).is_empty());
        }
    }
    // Signature 5 disappears: forgotten (and its anomaly cleared) after a while.
    let mut cleared = false;
    for t in 24..40 {
        cleared |= d.observe(t * MINUTE, &snap(steady())).iter().any(|e| {
            matches!(
                e,
                AnomalyEvent::Cleared {
                    kind: AnomalyKind::NewSignature,
                    ..
                }
            )
        });
    }
    assert!(cleared);
    assert_eq!(d.tracked(), 3);
}
