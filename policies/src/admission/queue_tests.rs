//! The admission queue, narrated: slots go to waiters before new arrivals, the most
//! important first; CoDel deadlines; adaptive LIFO; a full queue refuses at once.

use super::*;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};

/// Critical queues; standard and batch are refused at once. Fixed limit of 4, headroom
/// 0.25 (one slot per level that does not queue): standard may fill 4 (critical
/// queues, so it leaves no room for it), batch 3.
const QUEUED: &str = r#"
tiers:
  default: batch
  list:
    - { name: critical, priority: 0, share: 1.0, sheddable: false, queue: true, match: { path_prefix: ["/c"] } }
    - { name: standard, priority: 1, match: { path_prefix: ["/s"] } }
    - { name: batch, priority: 2 }
admission:
  limit: { initial: 4, floor: 4, ceiling: 4 }
  priority_headroom: 0.25
  queue: { max_waiting: 3, target: 5ms, interval: 100ms }
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

fn decide(a: &Admission, tier: &str, now: Micros) -> Decision {
    a.try_acquire(a.tiers().by_name(tier).unwrap(), None, None, now)
}

fn take(a: &Admission, tier: &str) -> Permit {
    decide(a, tier, 0).permit().expect("admitted")
}

fn wait(a: &Admission, tier: &str, now: Micros) -> Ticket {
    match decide(a, tier, now) {
        Decision::Wait(t) => t,
        other => panic!("{tier} not queued: {other:?}"),
    }
}

/// Counts wake-ups, so a test sees that a granted waiter is woken.
#[derive(Default)]
struct Wakes(AtomicUsize);

impl Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn poll(t: &mut Ticket, waker: &Waker) -> Option<Permit> {
    match Pin::new(t).poll(&mut Context::from_waker(waker)) {
        Poll::Ready(p) => Some(p),
        Poll::Pending => None,
    }
}

fn snapshot_tier(a: &Admission, name: &str) -> TierSnapshot {
    a.snapshot()
        .tiers
        .into_iter()
        .find(|t| t.name == name)
        .unwrap()
}

#[test]
fn a_queued_tier_gets_the_next_freed_slot_before_any_new_arrival() {
    let a = admission(QUEUED);
    let held: Vec<_> = (0..4).map(|_| take(&a, "standard")).collect();
    // Full: critical would once have gone over the limit on its guarantee; it waits.
    let mut ticket = wait(&a, "critical", 0);
    assert_eq!(
        ticket.deadline(),
        100_000,
        "not standing: the long deadline"
    );
    assert_eq!(a.snapshot().clusters[0].inflight, 4, "never over the limit");
    assert_eq!(a.snapshot().clusters[0].waiting, 1);
    let wakes = Arc::new(Wakes::default());
    let waker = Waker::from(wakes.clone());
    assert!(poll(&mut ticket, &waker).is_none());

    // One standard finishes: the slot is handed to critical and critical is woken; a
    // standard arriving at the same moment finds nothing.
    let mut held = held;
    drop(held.pop());
    assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
    assert!(decide(&a, "standard", 1).rejection().is_some());
    let permit = poll(&mut ticket, &waker).expect("granted");
    assert_eq!(permit.tier(), a.tiers().by_name("critical").unwrap());
    let c = snapshot_tier(&a, "critical");
    assert_eq!((c.admitted, c.queued, c.inflight), (1, 1, 1));
    assert_eq!(a.snapshot().clusters[0].waiting, 0);
    drop(permit);
    drop(held);
    assert_eq!(a.snapshot().clusters[0].inflight, 0);
}

#[test]
fn while_critical_waits_lower_tiers_cannot_take_a_slot() {
    let a = admission(QUEUED);
    // Limit 4: batch fills its 3, a critical takes the fourth, the next waits.
    let batch: Vec<_> = (0..3).map(|_| take(&a, "batch")).collect();
    let _c1 = take(&a, "critical");
    let _t = wait(&a, "critical", 0);
    // Standard's ceiling is 4 and it could fit when a batch leaves, but a critical
    // request is waiting: the slot goes to it.
    let mut batch = batch;
    drop(batch.pop());
    assert_eq!(a.snapshot().clusters[0].waiting, 0, "the waiter was served");
    let r = decide(&a, "standard", 1).rejection().expect("refused");
    assert_eq!(r.reason, RejectReason::Overload);
    assert_eq!(r.status(), 503);
}

#[test]
fn an_expired_wait_is_refused_and_counted_once() {
    let a = admission(QUEUED);
    let _held: Vec<_> = (0..4).map(|_| take(&a, "standard")).collect();
    let t = wait(&a, "critical", 0);
    let r = t.expire().expect_err("refused");
    assert_eq!(r.reason, RejectReason::Overload);
    assert!(r.retry_after_secs >= 1);
    let c = snapshot_tier(&a, "critical");
    assert_eq!((c.admitted, c.rejected.overload), (0, 1));
    assert_eq!(a.snapshot().clusters[0].waiting, 0);
}

#[test]
fn a_ticket_granted_as_it_expires_keeps_its_slot_and_a_dropped_one_frees_it() {
    let a = admission(QUEUED);
    let mut held: Vec<_> = (0..4).map(|_| take(&a, "standard")).collect();
    let t1 = wait(&a, "critical", 0);
    let t2 = wait(&a, "critical", 0);
    drop(held.pop());
    drop(held.pop());
    // Both were granted before anyone polled: expiring now still admits.
    assert!(t1.expire().is_ok());
    // A client that went away: its granted slot goes back.
    drop(t2);
    assert_eq!(a.snapshot().clusters[0].inflight, 2);
}

#[test]
fn a_standing_queue_gets_the_short_deadline_and_serves_the_newest_first() {
    let a = admission(QUEUED);
    let mut held: Vec<_> = (0..4).map(|_| take(&a, "standard")).collect();
    // The queue was empty in the first window: not standing, the long deadline.
    let old = wait(&a, "critical", 0);
    let mid = wait(&a, "critical", 100_000);
    assert_eq!(mid.deadline(), 200_000);
    // A whole interval in which nobody got a slot while some waited: standing.
    let new = wait(&a, "critical", 200_001);
    assert_eq!(new.deadline(), 205_001, "standing: the 5 ms target");
    // Full (max_waiting 3 with `old`, `mid`, `new`): refused at once.
    assert!(decide(&a, "critical", 200_002).rejection().is_some());

    drop(held.pop());
    // Newest first while standing.
    let _p = new.expire().expect("newest served");
    assert!(mid.expire().is_err());
    assert!(old.expire().is_err());
    // The queue emptied during this window: the next one is not standing, and its
    // waiters get the long deadline and FIFO again.
    let t = wait(&a, "critical", 300_001);
    assert_eq!(t.deadline(), 400_001);
}

#[test]
fn a_busy_queue_whose_waiters_are_served_quickly_is_not_standing() {
    // Critical keeps the queue non-empty for longer than an interval, but every
    // waiter gets a slot within 2 ms: a burst absorbed, not overload.
    let a = admission(QUEUED);
    let mut held: Vec<_> = (0..4).map(|_| take(&a, "standard")).collect();
    let mut tickets = vec![wait(&a, "critical", 0)];
    for step in 1..=150u64 {
        let now = step * 2_000;
        // A new waiter arrives, then the oldest is served (a slot freed).
        tickets.push(wait(&a, "critical", now));
        assert_eq!(
            tickets.last().unwrap().deadline(),
            now + 100_000,
            "at {now}"
        );
        let served = tickets.remove(0);
        let permit = take_freed(&mut held, served);
        held.push(permit);
    }
}

/// Frees one held slot, which the queue hands to `ticket`; returns its permit.
fn take_freed(held: &mut Vec<Permit>, ticket: Ticket) -> Permit {
    drop(held.remove(0));
    ticket.expire().expect("served")
}

#[test]
fn tiers_that_do_not_queue_are_refused_at_once_and_shadow_never_waits() {
    let a = admission(QUEUED);
    let _held: Vec<_> = (0..4).map(|_| take(&a, "standard")).collect();
    assert!(decide(&a, "batch", 0).rejection().is_some());
    assert!(decide(&a, "standard", 0).rejection().is_some());

    let shadow = admission(&format!("shadow: true\n{QUEUED}"));
    let _held: Vec<_> = (0..4).map(|_| take(&shadow, "standard")).collect();
    let p = decide(&shadow, "critical", 0)
        .permit()
        .expect("shadow admits");
    assert_eq!(p.shadow_rejected(), Some(RejectReason::Overload));
}

#[test]
fn waiters_are_served_across_threads_without_losing_a_slot() {
    // Many threads churn permits while critical requests queue: every ticket is
    // either granted or expires, and the books balance afterwards.
    let a = admission(&QUEUED.replace("max_waiting: 3", "max_waiting: 64"));
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for i in 0..2_000u64 {
                    match decide(&a, "critical", i) {
                        Decision::Admit(p) => drop(p),
                        Decision::Wait(mut t) => {
                            let waker = Waker::from(Arc::new(Wakes::default()));
                            let got = (0..1_000).find_map(|_| {
                                std::thread::yield_now();
                                poll(&mut t, &waker)
                            });
                            drop(got.or_else(|| t.expire().ok()));
                        }
                        Decision::Reject(_) => {}
                    }
                }
            });
            s.spawn(|| {
                for i in 0..2_000u64 {
                    drop(decide(&a, "standard", i).permit());
                }
            });
        }
    });
    let snap = a.snapshot();
    assert_eq!(snap.clusters[0].inflight, 0);
    assert_eq!(snap.clusters[0].waiting, 0);
    assert!(snapshot_tier(&a, "critical").admitted > 0);
}

/// Without a latency objective: a burst over the limit waits (every tier), oldest
/// first within a tier and most important tier first, each up to `queue.max_wait`;
/// only a full queue is refused at once.
mod burst_tests {
    use super::*;

    const BURST: &str = r#"
tiers:
  default: batch
  list:
    - { name: critical, priority: 0, share: 0.5, sheddable: false, match: { path_prefix: ["/c"] } }
    - { name: batch, priority: 1 }
admission:
  limit: { initial: 2, floor: 2, ceiling: 2 }
  queue: { max_waiting: 3, max_wait: 2s }
"#;

    fn burst() -> Admission {
        let cfg: PoliciesConfig = serde_yaml_ng::from_str(BURST).unwrap();
        assert!(cfg.admission.latency_objective.is_none());
        Admission::new(&cfg, 0).unwrap()
    }

    #[test]
    fn without_an_objective_every_tier_waits_up_to_max_wait() {
        let a = burst();
        let mut held = vec![take(&a, "batch"), take(&a, "batch")];
        let first = wait(&a, "batch", 1_000);
        assert_eq!(first.deadline(), 1_000 + 2_000_000, "max_wait, not CoDel's");
        let second = wait(&a, "batch", 2_000);
        let critical = wait(&a, "critical", 3_000);
        // The queue is full (3): the next one is refused at once.
        assert!(matches!(
            decide(&a, "batch", 4_000),
            Decision::Reject(Rejection {
                reason: RejectReason::Overload,
                ..
            })
        ));
        // Freed slots go to critical first, then to the oldest batch waiter.
        let p = take_freed(&mut held, critical);
        assert_eq!(a.tiers().get(p.tier()).unwrap().name, "critical");
        held.push(p);
        let _ = take_freed(&mut held, first);
        // Even long after the queue became non-empty (a standing queue for CoDel),
        // new waiters keep the full bound and the oldest is still served first.
        let later = wait(&a, "batch", 5_000_000);
        assert_eq!(later.deadline(), 5_000_000 + 2_000_000);
        let _ = take_freed(&mut held, second);
        drop(later);
    }

    #[test]
    fn an_objective_brings_back_refusal_at_the_limit() {
        let mut cfg: PoliciesConfig = serde_yaml_ng::from_str(BURST).unwrap();
        cfg.admission.latency_objective = Some(std::time::Duration::from_millis(200));
        cfg.admission.priority_headroom = 0.0;
        let a = Admission::new(&cfg, 0).unwrap();
        let _held = [take(&a, "critical"), take(&a, "batch")];
        assert!(matches!(
            decide(&a, "batch", 1_000),
            Decision::Reject(Rejection {
                reason: RejectReason::Overload,
                ..
            })
        ));
    }
}
