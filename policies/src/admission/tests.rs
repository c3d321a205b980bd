//! Admission scenarios, narrated; time is passed in, limits are fixed unless a test is
//! about the adaptive limit.

use super::*;
use std::time::Duration;

/// Three tiers on one cluster with a fixed limit of 10. With headroom 0.1 (one slot per
/// level): critical may fill 10, standard 9, batch 8.
const THREE: &str = r#"
tiers:
  default: standard
  list:
    - { name: critical, priority: 0, share: 0.5, sheddable: false, match: { path_prefix: ["/checkout"] } }
    - { name: standard, priority: 1, share: 0.3 }
    - { name: batch, priority: 2, share: 0.0 }
admission:
  limit: { initial: 10, floor: 10, ceiling: 10 }
  priority_headroom: 0.1
"#;

fn admission(yaml: &str) -> Admission {
    Admission::new(&with_objective(yaml), 0).unwrap()
}

/// `yaml` with a latency objective unless it sets one: these tests are about refusing
/// at the limit (and CoDel queueing for `queue: true` tiers), which an objective
/// turns on; without one every tier waits (tested in `burst_tests`).
fn with_objective(yaml: &str) -> PoliciesConfig {
    let mut cfg: PoliciesConfig = serde_yaml_ng::from_str(yaml).unwrap();
    cfg.admission
        .latency_objective
        .get_or_insert(std::time::Duration::from_millis(500));
    cfg
}

fn id(a: &Admission, name: &str) -> TierId {
    a.tiers().by_name(name).unwrap()
}

/// Admits one request of `tier` (no cost, no source) or fails the test.
fn take(a: &Admission, tier: &str) -> Permit {
    match a.try_acquire(id(a, tier), None, None, 0) {
        Decision::Admit(p) => p,
        Decision::Reject(r) => panic!("{tier} refused: {r:?}"),
        Decision::Wait(t) => panic!("{tier} queued: {t:?}"),
    }
}

fn refused(a: &Admission, tier: &str) -> Rejection {
    a.try_acquire(id(a, tier), None, None, 0)
        .rejection()
        .unwrap_or_else(|| panic!("{tier} admitted"))
}

fn inflight(a: &Admission) -> u32 {
    a.snapshot().clusters[0].inflight
}

fn tier<'a>(s: &'a AdmissionSnapshot, name: &str) -> &'a TierSnapshot {
    s.tiers.iter().find(|t| t.name == name).unwrap()
}

#[test]
fn unused_share_is_borrowed_and_guarantees_are_honoured() {
    let a = admission(THREE);
    // Standard alone: its 3 guaranteed slots, then it borrows up to its ceiling of 9.
    let mut standard: Vec<_> = (0..9).map(|_| take(&a, "standard")).collect();
    assert_eq!(refused(&a, "standard").reason, RejectReason::Overload);

    // Critical arrives while standard holds 9 of 10 slots: its 5 guaranteed slots are
    // its own whatever the others borrowed, so it goes over the limit to get them.
    let critical: Vec<_> = (0..5).map(|_| take(&a, "critical")).collect();
    assert_eq!(inflight(&a), 14);
    // Beyond its guarantee it may only borrow below the limit: refused for now.
    assert_eq!(refused(&a, "critical").reason, RejectReason::Overload);

    // Six standard requests finish. Standard is back at its guarantee, and the cluster
    // at 8: critical can borrow again, standard (ceiling 9) once, then no more.
    standard.truncate(3);
    assert_eq!(inflight(&a), 8);
    let _c6 = take(&a, "critical");
    assert_eq!(refused(&a, "standard").reason, RejectReason::Overload);
    drop(critical);
    assert_eq!(inflight(&a), 4);
}

#[test]
fn at_the_limit_lower_tiers_are_refused_first() {
    let a = admission(THREE);
    // Critical and standard take their guarantees: 8 in flight.
    let mut held: Vec<_> = (0..5).map(|_| take(&a, "critical")).collect();
    held.extend((0..3).map(|_| take(&a, "standard")));
    // Batch may fill only 8: refused first.
    let r = refused(&a, "batch");
    assert_eq!(
        (r.reason, r.status(), r.retry_after_secs),
        (RejectReason::Overload, 503, 1)
    );
    // Standard may still borrow the 9th slot, critical the 10th.
    held.push(take(&a, "standard"));
    assert_eq!(refused(&a, "standard").reason, RejectReason::Overload);
    held.push(take(&a, "critical"));
    // Now the hard limit: even critical (not sheddable) is refused beyond its share.
    assert_eq!(refused(&a, "critical").reason, RejectReason::Overload);

    let s = a.snapshot();
    assert_eq!(tier(&s, "batch").rejected.overload, 1);
    assert_eq!(tier(&s, "critical").admitted, 6);
    assert_eq!(tier(&s, "critical").inflight, 6);
    assert_eq!(s.clusters[0].limit.limit, 10);
}

#[test]
fn near_the_limit_an_expensive_sheddable_request_goes_before_a_cheap_one() {
    let a = admission(
        r#"
tiers:
  list:
    - { name: critical, priority: 0, sheddable: false }
    - { name: standard, priority: 0 }
sources:
  identities: { crawler: { weight: 0.5 } }
admission:
  limit: { initial: 20, floor: 20, ceiling: 20 }
"#,
    );
    let std = id(&a, "standard");
    let acquire = |cost: f64, src: Option<&str>| a.try_acquire(std, Some(cost), src, 0);
    // Most requests cost 10 (ms, say): that is the median.
    for _ in 0..100 {
        drop(acquire(10.0, None));
    }
    let mut held: Vec<_> = (0..19)
        .map(|_| acquire(10.0, None).permit().unwrap())
        .collect();
    // 19 of 20 in flight. A request costing 40 counts for 4 slots: it does not fit.
    assert_eq!(
        acquire(40.0, None).rejection().map(|r| r.reason),
        Some(RejectReason::Overload)
    );
    // A source of weight 0.5 makes even a cheap request count twice: it does not fit.
    assert!(acquire(10.0, Some("crawler")).rejection().is_some());
    // A cheap request of an ordinary source takes the last slot.
    held.push(acquire(10.0, Some("web")).permit().unwrap());
    // With room, the expensive request is admitted: cost orders shedding, it does not
    // forbid work.
    held.truncate(10);
    held.push(acquire(40.0, None).permit().unwrap());
    held.extend((0..8).map(|_| take(&a, "standard")));
    // 19 in flight again. A tier that is not sheddable ignores cost: its costly request
    // takes the last slot, where a sheddable one of that cost is refused.
    assert!(acquire(1000.0, None).rejection().is_some());
    assert!(a
        .try_acquire(id(&a, "critical"), Some(1000.0), None, 0)
        .permit()
        .is_some());
}

#[test]
fn shadow_mode_never_rejects_but_counts_the_same_decisions() {
    let a = admission(&format!("shadow: true\n{THREE}"));
    let held: Vec<_> = (0..10).map(|_| take(&a, "critical")).collect();
    // Over the hard limit: admitted anyway, marked with the reason it would have had.
    let p = take(&a, "critical");
    assert_eq!(p.shadow_rejected(), Some(RejectReason::Overload));
    let batch = take(&a, "batch");
    assert_eq!(batch.shadow_rejected(), Some(RejectReason::Overload));

    let s = a.snapshot();
    assert_eq!(tier(&s, "critical").shadow_rejected.overload, 1);
    assert_eq!(tier(&s, "critical").rejected, ReasonCounts::default());
    assert_eq!(tier(&s, "batch").shadow_rejected.overload, 1);
    // Shadow-admitted requests do not take slots, so later decisions are the ones
    // enforcement would make.
    assert_eq!(
        (s.clusters[0].inflight, s.clusters[0].shadow_inflight),
        (10, 2)
    );
    drop((p, batch, held));
    let s = a.snapshot();
    assert_eq!(
        (s.clusters[0].inflight, s.clusters[0].shadow_inflight),
        (0, 0)
    );
}

#[test]
fn shadow_mode_per_tier() {
    let a = admission(&THREE.replace(
        "{ name: batch, priority: 2, share: 0.0 }",
        "{ name: batch, priority: 2, share: 0.0, shadow: true }",
    ));
    // Standard holds its guarantee, critical the rest.
    let mut held: Vec<_> = (0..3).map(|_| take(&a, "standard")).collect();
    held.extend((0..7).map(|_| take(&a, "critical")));
    // Batch is in shadow mode: admitted, marked. Standard is enforced: refused.
    assert_eq!(
        take(&a, "batch").shadow_rejected(),
        Some(RejectReason::Overload)
    );
    assert_eq!(refused(&a, "standard").reason, RejectReason::Overload);
}

#[test]
fn a_source_over_its_rate_gets_429_with_retry_after() {
    let a = admission(&format!(
        "{THREE}\nsources: {{ rate_limit: {{ rps: 0.5, burst: 2 }} }}"
    ));
    let std = id(&a, "standard");
    let second = 1_000_000;
    // A burst of two, then one every two seconds.
    assert!(a
        .try_acquire(std, None, Some("app-b"), 0)
        .permit()
        .is_some());
    assert!(a
        .try_acquire(std, None, Some("app-b"), 0)
        .permit()
        .is_some());
    let r = a
        .try_acquire(std, None, Some("app-b"), 0)
        .rejection()
        .unwrap();
    assert_eq!(
        (r.reason, r.status(), r.retry_after_secs),
        (RejectReason::RateLimited, 429, 2)
    );
    // Half a second in, it must wait 1.5 s: Retry-After rounds up to 2.
    let r = a
        .try_acquire(std, None, Some("app-b"), second / 2)
        .rejection()
        .unwrap();
    assert_eq!(r.retry_after_secs, 2);
    // Other sources, and requests without a source, are not affected.
    assert!(a
        .try_acquire(std, None, Some("app-c"), 0)
        .permit()
        .is_some());
    assert!(a.try_acquire(std, None, None, 0).permit().is_some());
    // After the two seconds it may send again.
    assert!(a
        .try_acquire(std, None, Some("app-b"), 2 * second)
        .permit()
        .is_some());
    assert_eq!(tier(&a.snapshot(), "standard").rejected.rate_limited, 2);
}

/// Sends `n` rounds of one request per tier in `tiers`, one at a time (never more than
/// one in flight), each served in 10 ms; returns how many of each were pre-shed.
fn one_at_a_time(a: &Admission, tiers: &[&str], n: usize) -> Vec<usize> {
    let mut shed = vec![0; tiers.len()];
    for _ in 0..n {
        for (i, t) in tiers.iter().enumerate() {
            match a.try_acquire(id(a, t), None, None, 0) {
                Decision::Admit(p) => p.release(Duration::from_millis(10), Outcome::Success, 0),
                Decision::Reject(r) => {
                    assert_eq!((r.reason, r.status()), (RejectReason::PreShed, 503));
                    shed[i] += 1;
                }
                Decision::Wait(_) => panic!("{t} queued"),
            }
        }
    }
    shed
}

#[test]
fn preshed_refuses_its_share_of_arrivals_least_important_tier_first() {
    // A limit of 100 and never more than one request in flight: the old rule (narrow
    // the room at the limit) refused nothing here.
    let a = admission(
        r#"
tiers:
  default: standard
  list:
    - { name: critical, priority: 0, share: 0.4, sheddable: false }
    - { name: standard, priority: 1, share: 0.2 }
    - { name: batch, priority: 2 }
admission:
  limit: { initial: 100, floor: 100, ceiling: 100 }
"#,
    );
    let all = ["critical", "standard", "batch"];
    // Equal traffic and cost per tier: sheddable demand is two thirds of the total.
    assert_eq!(one_at_a_time(&a, &all, 100), [0, 0, 0]);
    assert!((a.sheddable_fraction() - 2.0 / 3.0).abs() < 1e-9);
    // A quarter of sheddable demand will not fit: half of batch's, none of standard's.
    a.set_preshed(0.25);
    assert_eq!(a.preshed(), 0.25);
    assert!((a.preshed_share(id(&a, "batch")) - 0.5).abs() < 1e-9);
    assert_eq!(a.preshed_share(id(&a, "standard")), 0.0);
    assert_eq!(one_at_a_time(&a, &all, 100), [0, 0, 50]);
    // Three quarters: all of batch, then half of standard; critical never.
    a.set_preshed(0.75);
    let shed = one_at_a_time(&a, &all, 100);
    assert_eq!((shed[0], shed[2]), (0, 100));
    // Standard's share is re-estimated on the mix refused batch requests still count
    // in (at batch's mean service time): one half.
    assert!((49..=51).contains(&shed[1]), "{shed:?}");
    let s = a.snapshot();
    assert_eq!(tier(&s, "batch").rejected.pre_shed, 150);
    assert_eq!(tier(&s, "critical").rejected, ReasonCounts::default());
    // Capacity arrived: nothing is refused.
    a.set_preshed(0.0);
    assert_eq!(one_at_a_time(&a, &all, 20), [0, 0, 0]);
    // Nonsense levels are clamped.
    a.set_preshed(f64::NAN);
    assert_eq!(a.preshed(), 0.0);
    a.set_preshed(7.0);
    assert_eq!(a.preshed(), 1.0);
    assert_eq!(one_at_a_time(&a, &all, 10), [0, 10, 10]);
}

#[test]
fn a_standing_min_level_sheds_without_a_forecast_and_survives_a_reload() {
    let yaml = |min: f64| {
        format!(
            "{THREE}  preshed: {{ enabled: true, min_level: {min} }}\n",
            THREE = THREE.replace(
                "limit: { initial: 10, floor: 10, ceiling: 10 }",
                "limit: { initial: 50, floor: 50, ceiling: 50 }"
            )
        )
    };
    let a = admission(&yaml(0.1));
    assert_eq!(a.preshed(), 0.1, "in force from the start");
    // Nothing seen yet: the tiers count alike, so 0.1 of two tiers is 0.2 of batch.
    let all = ["critical", "standard", "batch"];
    assert_eq!(one_at_a_time(&a, &all, 50), [0, 0, 10]);
    // A forecast level below the floor leaves it; one above it stands instead.
    a.set_preshed(0.05);
    assert_eq!(a.preshed(), 0.1);
    a.set_preshed(0.4);
    assert_eq!(a.preshed(), 0.4);
    // A reload keeps the forecast's level and applies the new floor.
    let b = a.reconfigure(&with_objective(&yaml(0.5)), 0).unwrap();
    assert_eq!(b.preshed(), 0.5);
    let c = b.reconfigure(&with_objective(&yaml(0.0)), 0).unwrap();
    assert_eq!(c.preshed(), 0.4);
    // Off: no floor.
    let off = admission(&THREE.replace(
        "priority_headroom: 0.1",
        "priority_headroom: 0.1\n  preshed: { min_level: 0.5 }",
    ));
    assert_eq!(off.preshed(), 0.0);
    // Out of range is a config error naming the field.
    let mut bad: PoliciesConfig = serde_yaml_ng::from_str(&yaml(0.5)).unwrap();
    bad.admission.preshed.min_level = 1.5;
    let e = Admission::new(&bad, 0).unwrap_err();
    assert!(e.to_string().contains("preshed.min_level"), "{e}");
}

#[test]
fn shadow_mode_counts_preshed_refusals_and_admits() {
    let a = admission(&format!("shadow: true\n{THREE}"));
    a.set_preshed(1.0);
    let p = take(&a, "batch");
    assert_eq!(p.shadow_rejected(), Some(RejectReason::PreShed));
    assert_eq!(take(&a, "critical").shadow_rejected(), None);
    assert_eq!(tier(&a.snapshot(), "batch").shadow_rejected.pre_shed, 1);
}

#[test]
fn a_cluster_limit_overrides_the_shared_settings_for_that_cluster_only() {
    let yaml = THREE.replace("sheddable: false,", "sheddable: false, cluster: reserved,")
        + "  cluster_limits:\n    reserved: { ceiling: 4 }\n    app: { initial: 12, ceiling: 12 }\n";
    let cfg = with_objective(&yaml);
    let topology = Topology {
        route: Some("app".into()),
        overflow: Default::default(),
    };
    let a = Admission::with_topology(&cfg, 0, &topology).unwrap();
    // `reserved` has a ceiling of 4: its floor and initial (10 in `limit`) fit under it.
    let _c: Vec<_> = (0..4).map(|_| take(&a, "critical")).collect();
    assert_eq!(refused(&a, "critical").reason, RejectReason::Overload);
    // The route's own cluster, named `app` by the proxy, starts at 12; the floor stays 10.
    let s = a.snapshot();
    assert_eq!(
        (s.clusters[0].limit.limit, s.clusters[1].limit.limit),
        (12, 4)
    );
    // Without the route's name, its override does not apply.
    let unnamed = Admission::new(&cfg, 0).unwrap();
    assert_eq!(unnamed.snapshot().clusters[0].limit.limit, 10);

    // An override that cannot hold names the field it set.
    let bad: PoliciesConfig = serde_yaml_ng::from_str(
        &(THREE.to_string() + "  cluster_limits:\n    reserved: { floor: 20 }\n"),
    )
    .unwrap();
    let e = bad.validate().unwrap_err();
    assert_eq!(e.field, "admission.cluster_limits.reserved");
    assert!(e.reason.contains("floor <= initial <= ceiling"), "{e:?}");
    let bad: PoliciesConfig = serde_yaml_ng::from_str(
        &(THREE.to_string() + "  cluster_limits:\n    reserved: { backoff: 2.0 }\n"),
    )
    .unwrap();
    assert_eq!(
        bad.validate().unwrap_err().field,
        "admission.cluster_limits.reserved.backoff"
    );
}

#[test]
fn tiers_routed_to_their_own_cluster_have_their_own_limit() {
    let a = admission(&THREE.replace("sheddable: false,", "sheddable: false, cluster: reserved,"));
    // Standard fills the route's cluster...
    let _s: Vec<_> = (0..9).map(|_| take(&a, "standard")).collect();
    // ... critical has the reserved cluster's 10 slots to itself.
    let _c: Vec<_> = (0..10).map(|_| take(&a, "critical")).collect();
    let s = a.snapshot();
    assert_eq!(s.clusters.len(), 2);
    assert_eq!(
        (s.clusters[0].cluster.as_deref(), s.clusters[0].inflight),
        (None, 9)
    );
    assert_eq!(
        (s.clusters[1].cluster.as_deref(), s.clusters[1].inflight),
        (Some("reserved"), 10)
    );
}

/// `THREE` with critical on its own `reserved` cluster, which overflows to the route's
/// cluster: the config and admission built with that overflow.
fn reserved_overflowing() -> (PoliciesConfig, Admission) {
    let cfg =
        with_objective(&THREE.replace("sheddable: false,", "sheddable: false, cluster: reserved,"));
    let topology = Topology {
        route: None,
        overflow: [("reserved".to_string(), None)].into_iter().collect(),
    };
    let a = Admission::with_topology(&cfg, 0, &topology).unwrap();
    (cfg, a)
}

#[test]
fn a_full_tier_cluster_overflows_to_a_free_slot_on_the_shared_one() {
    let (cfg, a) = reserved_overflowing();
    // Critical fills its reserved cluster's 10 slots...
    let reserved: Vec<_> = (0..10).map(|_| take(&a, "critical")).collect();
    assert!(reserved.iter().all(|p| p.cluster() == Some("reserved")));
    // ... then borrows free slots on the route's cluster, up to that cluster's limit
    // for a non-sheddable tier (10), with no guarantee there.
    let spilled: Vec<_> = (0..10).map(|_| take(&a, "critical")).collect();
    assert!(spilled.iter().all(|p| p.cluster().is_none()));
    assert_eq!(refused(&a, "critical").reason, RejectReason::Overload);
    let s = a.snapshot();
    let c = tier(&s, "critical");
    assert_eq!((c.admitted, c.overflowed, c.rejected.overload), (20, 10, 1));
    assert_eq!((s.clusters[0].inflight, s.clusters[1].inflight), (10, 10));
    // Spilled critical work counts on the shared cluster: standard gets only its
    // guaranteed 3 slots there, nothing to borrow.
    let _s: Vec<_> = (0..3).map(|_| take(&a, "standard")).collect();
    assert_eq!(refused(&a, "standard").reason, RejectReason::Overload);
    // Freed slots go back where they were taken.
    drop(spilled);
    assert_eq!(a.snapshot().clusters[0].inflight, 3);
    drop(reserved);
    assert_eq!(a.snapshot().clusters[1].inflight, 0);
    // Without an overflow, a full reserved cluster refuses at once.
    let plain = Admission::new(&cfg, 0).unwrap();
    let _r: Vec<_> = (0..10).map(|_| take(&plain, "critical")).collect();
    assert_eq!(refused(&plain, "critical").reason, RejectReason::Overload);
}

#[test]
fn a_tier_cluster_with_no_endpoint_takes_its_slot_on_the_overflow_cluster() {
    let (_, a) = reserved_overflowing();
    let crit = id(&a, "critical");
    let down = |c: &str| c == "reserved";
    let take_down = || match a.try_acquire_unless_down(crit, None, None, 0, down) {
        Decision::Admit(p) => p,
        other => panic!("critical not admitted: {other:?}"),
    };
    // Reserved is down: critical's slots are held where its requests will go, so the
    // reserved cluster's limit is untouched.
    let moved: Vec<_> = (0..10).map(|_| take_down()).collect();
    assert!(moved.iter().all(|p| p.cluster().is_none()));
    let s = a.snapshot();
    assert_eq!((s.clusters[0].inflight, s.clusters[1].inflight), (10, 0));
    assert_eq!(tier(&s, "critical").overflowed, 10);
    // The overflow cluster full (for a borrower), it falls back to its own rule.
    let home = take_down();
    assert_eq!(home.cluster(), Some("reserved"));
    // Up again, it uses its own cluster first.
    drop(moved);
    assert_eq!(take(&a, "critical").cluster(), Some("reserved"));
}

#[test]
fn released_permits_teach_the_limit() {
    let a = admission(
        r#"
admission:
  limit: { initial: 20, floor: 2, ceiling: 100 }
"#,
    );
    let std = id(&a, "standard");
    let mut now = 0;
    // Fill the limit each 100 ms window; every request takes `ms`.
    let mut run = |windows: usize, ms: u64| {
        for _ in 0..windows {
            let n = a.limit(std).unwrap();
            let permits: Vec<_> = (0..n)
                .filter_map(|_| a.try_acquire(std, None, None, now).permit())
                .collect();
            for p in permits {
                p.release(Duration::from_millis(ms), Outcome::Success, now);
            }
            now += 100_000;
        }
        a.limit(std).unwrap()
    };
    let fast = run(60, 10);
    assert!(fast > 40, "limit grew to {fast}");
    let slow = run(20, 50);
    assert!(slow < fast / 2, "latency rose: limit {fast} → {slow}");
    let again = run(60, 10);
    assert!(again > slow * 2, "latency fell: limit {slow} → {again}");
    assert_eq!(inflight(&a), 0, "every permit released its slot");
}

#[test]
fn disabled_admission_admits_all_but_still_rate_limits() {
    let a = admission(&format!(
        "{THREE}\n  enabled: false\nsources: {{ rate_limit: {{ rps: 1, burst: 1 }} }}"
    ));
    let _held: Vec<_> = (0..30).map(|_| take(&a, "batch")).collect();
    assert_eq!(inflight(&a), 30);
    let std = id(&a, "standard");
    assert!(a.try_acquire(std, None, Some("x"), 0).permit().is_some());
    assert!(a.try_acquire(std, None, Some("x"), 0).rejection().is_some());
}

#[test]
fn reload_keeps_learned_limits_and_counters() {
    let a = admission(
        r#"
tiers: { list: [ { name: standard } ] }
admission: { limit: { initial: 20, floor: 2, ceiling: 100 } }
"#,
    );
    let std = id(&a, "standard");
    // Teach it a higher limit and count some decisions.
    let mut now = 0;
    for _ in 0..30 {
        let n = a.limit(std).unwrap();
        let ps: Vec<_> = (0..n)
            .filter_map(|_| a.try_acquire(std, None, None, now).permit())
            .collect();
        for p in ps {
            p.release(Duration::from_millis(5), Outcome::Success, now);
        }
        now += 100_000;
    }
    let learned = a.limit(std).unwrap();
    assert!(learned > 20);
    let admitted = tier(&a.snapshot(), "standard").admitted;

    let cfg = with_objective(
        r#"
tiers: { default: standard, list: [ { name: vip, share: 0.2 }, { name: standard } ] }
admission: { limit: { initial: 20, floor: 2, ceiling: 100 } }
"#,
    );
    let b = a.reconfigure(&cfg, now).unwrap();
    let std_b = id(&b, "standard");
    assert_eq!(b.limit(std_b), Some(learned));
    assert_eq!(tier(&b.snapshot(), "standard").admitted, admitted);
    assert_eq!(tier(&b.snapshot(), "vip").admitted, 0);
    // A tier id of the old table still decides (as the default tier) in the new one.
    let stale = a.tiers().by_name("standard").unwrap();
    assert!(b.try_acquire(stale, None, None, now).permit().is_some());
}

#[test]
fn snapshot_serializes_and_lists_every_decision_counter() {
    let a = admission(THREE);
    let _p = take(&a, "critical");
    let s = a.snapshot();
    let counts: Vec<_> = s.decision_counts().collect();
    assert_eq!(counts.len(), 3 * 9);
    assert!(counts.contains(&("critical", DecisionKind::Admitted, None, 1)));
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["tiers"][0]["name"], "critical");
    assert_eq!(json["tiers"][0]["rejected"]["pre_shed"], 0);
    assert_eq!(json["clusters"][0]["limit"], 10);
    assert_eq!(json["clusters"][0]["cluster"], serde_json::Value::Null);
    assert_eq!(json["sources"]["capacity"], 1024);
}

#[test]
fn a_source_override_demotes_limits_or_rejects_that_source_only_and_survives_a_reload() {
    let a = admission(THREE);
    let bad = a.identity_hash("10.9.9.9");
    let from = |src: &'static str| a.try_acquire(id(&a, "standard"), None, Some(src), 5);

    // Demoted to batch: its standard requests are admitted (and counted) as batch.
    a.set_source_override(bad, SourceOverride::Demote(id(&a, "batch")), 0, 100)
        .unwrap();
    let p = from("10.9.9.9").permit().unwrap();
    assert_eq!(p.tier(), id(&a, "batch"));
    // Another source keeps its tier.
    assert_eq!(
        from("10.0.0.1").permit().unwrap().tier(),
        id(&a, "standard")
    );
    // A "demotion" to standard never promotes the source's batch requests.
    a.set_source_override(bad, SourceOverride::Demote(id(&a, "standard")), 0, 100)
        .unwrap();
    let b = a.try_acquire(id(&a, "batch"), None, Some("10.9.9.9"), 5);
    assert_eq!(b.permit().unwrap().tier(), id(&a, "batch"));

    // Rejected: 429 with reason `anomaly` and the configured Retry-After.
    a.set_source_override(bad, SourceOverride::Reject, 0, 100)
        .unwrap();
    let r = from("10.9.9.9").rejection().unwrap();
    assert_eq!((r.status(), r.reason), (429, RejectReason::Anomaly));
    assert_eq!(r.retry_after_secs, 1);
    assert_eq!(tier(&a.snapshot(), "standard").rejected.anomaly, 1);

    // A reload keeps the override (same hash, same effect).
    let cfg = with_objective(THREE);
    let b = a.reconfigure(&cfg, 6).unwrap();
    assert_eq!(b.identity_hash("10.9.9.9"), bad);
    let r = b.try_acquire(id(&b, "standard"), None, Some("10.9.9.9"), 7);
    assert_eq!(r.rejection().unwrap().reason, RejectReason::Anomaly);

    // Cleared, or expired: the source is itself again.
    assert!(b.clear_source_override(bad));
    assert!(b
        .try_acquire(id(&b, "standard"), None, Some("10.9.9.9"), 8)
        .permit()
        .is_some());
    b.set_source_override(bad, SourceOverride::RateLimit { rps: 1.0 }, 8, 1_000_000)
        .unwrap();
    assert_eq!(b.source_overrides(9).len(), 1);
    assert!(b
        .try_acquire(id(&b, "standard"), None, Some("10.9.9.9"), 9)
        .permit()
        .is_some());
    let r = b.try_acquire(id(&b, "standard"), None, Some("10.9.9.9"), 10);
    assert_eq!(r.rejection().unwrap().retry_after_secs, 1);
    assert!(b
        .try_acquire(id(&b, "standard"), None, Some("10.9.9.9"), 1_000_000)
        .permit()
        .is_some());
    assert!(b.source_overrides(1_000_000).is_empty());
}

#[test]
fn concurrent_borrowers_never_overshoot_the_ceiling() {
    let a = admission(
        r#"
tiers: { list: [ { name: standard } ] }
admission: { limit: { initial: 16, floor: 16, ceiling: 16 } }
"#,
    );
    let std = id(&a, "standard");
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                let mut held = Vec::new();
                for i in 0..20_000 {
                    if let Some(p) = a.try_acquire(std, None, None, 0).permit() {
                        held.push(p);
                    }
                    let n = a.shared.clusters[0].inflight.load(Relaxed);
                    assert!(n <= 16, "in flight {n}");
                    if i % 3 == 0 {
                        held.clear();
                    }
                }
            });
        }
    });
    assert_eq!(inflight(&a), 0);
    let s = a.snapshot();
    assert_eq!(
        tier(&s, "standard").admitted + tier(&s, "standard").rejected.overload,
        8 * 20_000
    );
}

#[test]
fn admission_permits_and_tables_cross_threads() {
    // Workers share one Admission and TierTable; a permit may finish on another thread.
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Admission>();
    send_sync::<Permit>();
    send_sync::<TierTable>();
}

/// Rough cost of the per-request path: `cargo test --release -p prescale-policies
/// hot_path -- --ignored --nocapture`. The criterion bench is the proxy's to own.
#[test]
#[ignore]
fn hot_path_cost() {
    let cfg: PoliciesConfig = serde_yaml_ng::from_str(crate::tiers::tests::EXAMPLE).unwrap();
    let a = Admission::new(&cfg, 0).unwrap();
    let headers = [("x-job", "1"), ("user-agent", "curl/8"), ("accept", "*/*")];
    let req = crate::RequestParts {
        method: "POST",
        path: "/reports/981",
        route: Some("/reports/{id}"),
        source: Some("web-7"),
        client_ip: Some("203.0.113.9".parse().unwrap()),
        headers: &headers,
    };
    let n = 1_000_000u64;
    let start = std::time::Instant::now();
    for i in 0..n {
        let c = a.tiers().classify(&req);
        if let Some(p) = a.try_acquire(c.tier, Some(12.0), req.source, i).permit() {
            p.release(Duration::from_millis(10), Outcome::Success, i);
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / n as f64;
    println!("classify + try_acquire + release: {ns:.0} ns/request");
}
