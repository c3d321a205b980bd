//! The resize planner: vertical pre-allocation, the bridge, limits and damping.

use super::*;

/// A pod requesting 1 core (its spec's request), 2 replicas ready and asked for.
fn input(now_s: u64, need: Option<f64>) -> ResizeInput {
    ResizeInput {
        now: now_s * 1000,
        cpu_need: need,
        protected_cpu: None,
        memory_need: None,
        current_cpu: 1.0,
        base_cpu: 1.0,
        current_memory: None,
        base_memory: None,
        requested_replicas: 2,
        ready_replicas: 2,
        node_free_cpu: None,
        node_free_memory: None,
        memory_can_shrink: false,
    }
}

fn vertical() -> ResizeConfig {
    ResizeConfig {
        vertical: true,
        bridge: false,
        ..ResizeConfig::default()
    }
}

#[test]
fn vertical_follows_the_forecast_need_at_the_target_utilisation() {
    let mut r = Resizer::new(vertical());
    // 2 cores needed at 80 %: 2.5 cores, ahead of the load.
    let p = r.plan(input(0, Some(2.0)));
    assert_eq!(
        (p.cpu, p.reason, p.change),
        (2.5, ResizeReason::Forecast, true)
    );
    // Capped at max_cpu (4).
    let p = Resizer::new(vertical()).plan(input(0, Some(10.0)));
    assert_eq!((p.cpu, p.reason), (4.0, ResizeReason::AtLimit));
    // Never below min_cpu, and below the spec's request when the forecast says so.
    let p = Resizer::new(vertical()).plan(input(0, Some(0.0)));
    assert_eq!(
        (p.cpu, p.reason, p.change),
        (0.1, ResizeReason::Forecast, true)
    );
}

#[test]
fn the_bridge_covers_a_pending_scale_up_and_hands_back_once_ready() {
    let mut r = Resizer::new(ResizeConfig::default());
    // Nothing pending: the bridge alone keeps the spec's request.
    let p = r.plan(input(0, Some(2.0)));
    assert_eq!(
        (p.cpu, p.reason, p.change),
        (1.0, ResizeReason::Base, false)
    );
    // 4 asked for, 2 ready: the running pod covers the forecast (2 / 0.8 = 2.5).
    let pending = ResizeInput {
        requested_replicas: 4,
        ..input(10, Some(2.0))
    };
    let p = r.plan(pending);
    assert_eq!(
        (p.cpu, p.reason, p.change),
        (2.5, ResizeReason::Bridge, true)
    );
    // New replicas ready, but inside the cooldown: held.
    let bridged = ResizeInput {
        current_cpu: 2.5,
        requested_replicas: 4,
        ready_replicas: 4,
        ..input(40, Some(1.0))
    };
    let p = r.plan(bridged);
    assert_eq!(
        (p.cpu, p.reason, p.change),
        (2.5, ResizeReason::Hold, false)
    );
    // After it: handed back to the spec's request.
    let p = r.plan(ResizeInput {
        now: 71_000,
        ..bridged
    });
    assert_eq!((p.cpu, p.reason, p.change), (1.0, ResizeReason::Base, true));
}

#[test]
fn the_bridge_says_when_only_the_protected_share_fits() {
    let cfg = ResizeConfig {
        max_cpu: 3.0,
        ..ResizeConfig::default()
    };
    let pending = |protected: f64| ResizeInput {
        requested_replicas: 6,
        protected_cpu: Some(protected),
        ..input(0, Some(4.0))
    };
    // 4 cores needed (5 requested at 80 %) above the 3-core maximum; the
    // non-sheddable 2 cores (2.5) fit: the rest is for tier admission to shed.
    let p = Resizer::new(cfg.clone()).plan(pending(2.0));
    assert_eq!((p.cpu, p.reason), (3.0, ResizeReason::BridgeProtectedOnly));
    // Not even that fits.
    let p = Resizer::new(cfg).plan(pending(2.8));
    assert_eq!((p.cpu, p.reason), (3.0, ResizeReason::AtLimit));
}

/// The decision's need as the sidecar builds it: 4 cores forecast, of which the tier
/// admission estimates `sheddable` is in sheddable tiers.
fn bridged_with_tiers(sheddable: f64) -> ResizeInput {
    let need = crate::scale::ResourceNeed {
        cpu_cores: Some(4.0),
        ..Default::default()
    }
    .with_sheddable_share(Some(sheddable));
    ResizeInput {
        requested_replicas: 6,
        protected_cpu: need.protected_cpu_cores,
        // The node can give 2 more cores: 3 in all, under max_cpu (4).
        node_free_cpu: Some(2.0),
        ..input(0, need.cpu_cores)
    }
}

#[test]
fn the_bridge_covers_protected_cpu_before_sheddable_when_the_node_binds() {
    // 4 cores needed (5 requested at 80 %), the node gives 3. Half the demand is
    // sheddable: the protected 2 cores (2.5 requested) are covered, the rest is for
    // tier admission to shed.
    let p = Resizer::new(ResizeConfig::default()).plan(bridged_with_tiers(0.5));
    assert_eq!(
        (p.cpu, p.reason, p.change),
        (3.0, ResizeReason::BridgeProtectedOnly, true)
    );
    assert!(p.cpu >= 2.0 / 0.8, "{p:?}");
    // 10 % sheddable: the protected 3.6 cores (4.5 requested) do not fit either.
    let p = Resizer::new(ResizeConfig::default()).plan(bridged_with_tiers(0.1));
    assert_eq!((p.cpu, p.reason), (3.0, ResizeReason::AtLimit));
    // No tier admission: nothing is known to be protected.
    let need = crate::scale::ResourceNeed {
        cpu_cores: Some(4.0),
        ..Default::default()
    }
    .with_sheddable_share(None);
    assert_eq!(need.protected_cpu_cores, None);
    // All demand protected, a bad estimate clamped.
    let need = need.with_sheddable_share(Some(-0.5));
    assert_eq!(need.protected_cpu_cores, Some(4.0));
}

#[test]
fn never_above_what_the_node_can_give() {
    let mut r = Resizer::new(vertical());
    let p = r.plan(ResizeInput {
        node_free_cpu: Some(0.5),
        ..input(0, Some(2.0))
    });
    assert_eq!((p.cpu, p.reason), (1.5, ResizeReason::AtLimit));
    // The plan says the node cut it, and from what (2 / 0.8).
    assert_eq!(p.node_capped_cpu, Some(2.5));
    // A node with nothing left: no change at all.
    let p = Resizer::new(vertical()).plan(ResizeInput {
        node_free_cpu: Some(0.0),
        ..input(0, Some(2.0))
    });
    assert!(!p.change && p.cpu == 1.0, "{p:?}");
    assert_eq!(p.node_capped_cpu, Some(2.5));
    // max_cpu (4) binding before the node (10 free): not the node's doing.
    let p = Resizer::new(vertical()).plan(ResizeInput {
        node_free_cpu: Some(10.0),
        ..input(0, Some(10.0))
    });
    assert_eq!((p.cpu, p.node_capped_cpu), (4.0, None));
    // Memory: 1 GB wanted, the node has 100 MB beyond the 512 MB held.
    let cfg = ResizeConfig {
        min_memory: Some(256e6),
        max_memory: Some(2e9),
        ..vertical()
    };
    let p = Resizer::new(cfg).plan(ResizeInput {
        memory_need: Some(800e6),
        current_memory: Some(512e6),
        node_free_memory: Some(100e6),
        ..input(0, Some(0.8))
    });
    assert_eq!((p.memory, p.node_capped_memory), (Some(612e6), Some(1e9)));
}

#[test]
fn small_changes_are_not_worth_a_resize_and_increases_skip_the_cooldown() {
    let mut r = Resizer::new(vertical());
    // 0.84 / 0.8 = 1.05: 5 % of the current request, under min_change (10 %).
    let p = r.plan(input(0, Some(0.84)));
    assert_eq!(
        (p.cpu, p.reason, p.change),
        (1.0, ResizeReason::Hold, false)
    );
    assert!(r.plan(input(1, Some(2.0))).change);
    // Right after that change, another increase goes through at once.
    let p = r.plan(ResizeInput {
        current_cpu: 2.5,
        ..input(2, Some(3.0))
    });
    assert_eq!((p.cpu, p.change), (3.75, true));
}

#[test]
fn memory_rises_with_the_forecast_and_is_never_taken_back_below_use() {
    let cfg = ResizeConfig {
        min_memory: Some(256e6),
        max_memory: Some(2e9),
        ..vertical()
    };
    let with_memory = |need: f64, current: f64| ResizeInput {
        memory_need: Some(need),
        current_memory: Some(current),
        base_memory: Some(512e6),
        ..input(0, Some(0.8))
    };
    // 800 MB at 80 %: 1 GB.
    let p = Resizer::new(cfg.clone()).plan(with_memory(800e6, 512e6));
    assert_eq!(p.memory, Some(1e9));
    assert!(p.change);
    // Forecast falls to 100 MB while 1 GB is held: memory stays (an in-place shrink
    // can OOM-kill the container); CPU at 1 core is unchanged, so nothing is sent.
    let p = Resizer::new(cfg.clone()).plan(with_memory(100e6, 1e9));
    assert_eq!((p.memory, p.change), (Some(1e9), false));
    // Without memory bounds, memory is left alone.
    let p = Resizer::new(vertical()).plan(with_memory(800e6, 512e6));
    assert_eq!(p.memory, Some(512e6));
}

#[test]
fn memory_goes_down_only_where_the_limit_may_stay_and_after_the_cooldown() {
    let cfg = ResizeConfig {
        min_memory: Some(256e6),
        max_memory: Some(2e9),
        ..vertical()
    };
    let shrinkable = |now: u64, need: f64, current: f64| ResizeInput {
        memory_need: Some(need),
        current_memory: Some(current),
        base_memory: Some(512e6),
        memory_can_shrink: true,
        ..input(now, Some(0.8))
    };
    // The forecast falls to 400 MB (500 MB at 80 %) while 1 GB is held: the request
    // goes down (the caller keeps the limit where it is).
    let mut r = Resizer::new(cfg.clone());
    let p = r.plan(shrinkable(0, 400e6, 1e9));
    assert_eq!((p.memory, p.change), (Some(500e6), true));
    // Right after a change, a decrease waits for the cooldown (60 s)...
    let p = r.plan(shrinkable(10, 240e6, 500e6));
    assert_eq!((p.memory, p.change), (Some(500e6), false));
    // ...an increase does not...
    let p = r.plan(shrinkable(20, 800e6, 500e6));
    assert_eq!((p.memory, p.change), (Some(1e9), true));
    // ...and a CPU increase inside it does not take memory down with it.
    let p = r.plan(ResizeInput {
        cpu_need: Some(2.0),
        ..shrinkable(30, 240e6, 1e9)
    });
    assert_eq!((p.cpu, p.memory, p.change), (2.5, Some(1e9), true));
    // After the cooldown it goes down to min_memory.
    let p = r.plan(ResizeInput {
        current_cpu: 2.5,
        cpu_need: Some(2.0),
        ..shrinkable(100, 100e6, 1e9)
    });
    assert_eq!((p.memory, p.change), (Some(256e6), true));
}

#[test]
fn bad_config_names_the_field() {
    let bad = |cfg: ResizeConfig| cfg.validate().unwrap_err().field;
    assert!(ResizeConfig::default().validate().is_ok());
    assert_eq!(
        bad(ResizeConfig {
            min_cpu: 5.0,
            ..ResizeConfig::default()
        }),
        "min_cpu"
    );
    assert_eq!(
        bad(ResizeConfig {
            min_memory: Some(1.0),
            ..ResizeConfig::default()
        }),
        "min_memory"
    );
    assert_eq!(
        bad(ResizeConfig {
            vertical: false,
            bridge: false,
            ..ResizeConfig::default()
        }),
        "vertical"
    );
    assert_eq!(
        bad(ResizeConfig {
            target_utilization: 0.0,
            ..ResizeConfig::default()
        }),
        "target_utilization"
    );
}
