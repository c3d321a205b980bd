//! Tier config parsing, validation and classification, narrated.

use super::*;
use crate::PoliciesConfig;

/// The worked example of the docs.
pub(crate) const EXAMPLE: &str = r#"
shadow: false
tiers:
  header: x-prescale-tier
  trusted_sources: ["10.0.0.0/8", "ingress-gateway"]
  default: standard
  list:
    - { name: critical, priority: 0, share: 0.5, sheddable: false, cluster: reserved, match: { path_prefix: ["/checkout"], sources: ["payments-app"] } }
    - { name: standard, priority: 1, share: 0.3, sheddable: true }
    - { name: batch, priority: 2, share: 0.0, sheddable: true, match: { headers: { x-job: "*" }, methods: [POST], route: ["/reports/{id}"] } }
sources:
  top_k: 1024
  identities:
    app-a: { tier: critical, weight: 2.0 }
    crawler: { weight: 0.5 }
  rate_limit: { rps: 100, burst: 200 }
admission:
  limit: { initial: 20, floor: 4, ceiling: 500, window: 100ms }
  priority_headroom: 0.1
  retry_after: 2s
  preshed: { enabled: true, release_rate: 0.2 }
"#;

fn parse(yaml: &str) -> PoliciesConfig {
    serde_yaml_ng::from_str(yaml).unwrap()
}

fn table(yaml: &str) -> TierTable {
    TierTable::new(&parse(yaml)).unwrap()
}

fn ip(s: &str) -> Option<std::net::IpAddr> {
    Some(s.parse().unwrap())
}

fn name(t: &TierTable, c: Classification) -> &str {
    &t.get(c.tier).unwrap().name
}

#[test]
fn example_config_parses_and_validates() {
    let cfg = parse(EXAMPLE);
    cfg.validate().unwrap();
    assert_eq!(cfg.tiers.list.len(), 3);
    assert_eq!(cfg.tiers.list[2].rules.methods, vec!["POST"]);
    assert_eq!(cfg.admission.retry_after, std::time::Duration::from_secs(2));
    assert_eq!(cfg.sources.rate_limit.as_ref().unwrap().burst(), 200.0);
    let refs: Vec<_> = cfg.tiers.clusters().collect();
    assert_eq!(
        refs,
        vec![("tiers.list[0].cluster".to_string(), "reserved")]
    );
    // An empty section is valid: one `standard` tier for everything.
    let empty = parse("{}");
    empty.validate().unwrap();
    let t = TierTable::new(&empty).unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(
        name(
            &t,
            t.classify(&RequestParts {
                method: "GET",
                path: "/",
                ..Default::default()
            })
        ),
        "standard"
    );
}

#[test]
fn first_matching_tier_wins_else_default() {
    let t = table(EXAMPLE);
    // Path and source must both hold for `critical`.
    let checkout = RequestParts {
        method: "POST",
        path: "/checkout/42",
        source: Some("payments-app"),
        ..Default::default()
    };
    let c = t.classify(&checkout);
    assert_eq!((name(&t, c), c.by), ("critical", ClassifiedBy::Rule));
    let other_app = RequestParts {
        source: Some("web"),
        ..checkout
    };
    assert_eq!(name(&t, t.classify(&other_app)), "standard");

    // `batch` needs the header (any value), the method and the route template.
    let headers = [("X-Job", "nightly")];
    let report = RequestParts {
        method: "POST",
        path: "/reports/981",
        route: Some("/reports/{id}"),
        headers: &headers,
        ..Default::default()
    };
    let c = t.classify(&report);
    assert_eq!((name(&t, c), c.by), ("batch", ClassifiedBy::Rule));
    assert_eq!(
        name(
            &t,
            t.classify(&RequestParts {
                method: "GET",
                ..report
            })
        ),
        "standard"
    );
    assert_eq!(
        name(
            &t,
            t.classify(&RequestParts {
                headers: &[],
                ..report
            })
        ),
        "standard"
    );
    let c = t.classify(&RequestParts {
        route: None,
        ..report
    });
    assert_eq!((name(&t, c), c.by), ("standard", ClassifiedBy::Default));

    // A source identity with a tier is classified by it.
    let c = t.classify(&RequestParts {
        method: "GET",
        path: "/anything",
        source: Some("app-a"),
        ..Default::default()
    });
    assert_eq!((name(&t, c), c.by), ("critical", ClassifiedBy::Identity));
}

#[test]
fn spoofed_tier_header_from_an_untrusted_source_is_ignored_and_stripped() {
    let t = table(EXAMPLE);
    let headers = [("x-prescale-tier", "critical")];
    // A client on the internet claims `critical`.
    let spoof = RequestParts {
        method: "GET",
        path: "/search",
        client_ip: ip("203.0.113.9"),
        source: Some("random-client"),
        headers: &headers,
        ..Default::default()
    };
    let c = t.classify(&spoof);
    // It gets its real tier, and the proxy is told to drop the header.
    assert_eq!(name(&t, c), "standard");
    assert_eq!(c.by, ClassifiedBy::Default);
    assert!(c.strip_header);

    // The same header from inside 10.0.0.0/8 is honoured and kept.
    let trusted = RequestParts {
        client_ip: ip("10.3.4.5"),
        ..spoof
    };
    let c = t.classify(&trusted);
    assert_eq!(
        (name(&t, c), c.by, c.strip_header),
        ("critical", ClassifiedBy::Header, false)
    );

    // ... and from the trusted identity, whatever its address.
    let gateway = RequestParts {
        source: Some("ingress-gateway"),
        ..spoof
    };
    assert_eq!(name(&t, t.classify(&gateway)), "critical");

    // A trusted header naming no tier is ignored, not stripped.
    let unknown = [("x-prescale-tier", "platinum")];
    let c = t.classify(&RequestParts {
        headers: &unknown,
        ..trusted
    });
    assert_eq!((name(&t, c), c.strip_header), ("standard", false));

    // No header at all: nothing to strip.
    assert!(
        !t.classify(&RequestParts {
            headers: &[],
            ..spoof
        })
        .strip_header
    );
}

#[test]
fn validation_names_the_field_and_the_reason() {
    let bad = |yaml: &str| parse(yaml).validate().unwrap_err();

    let e = bad("tiers: { default: gold, list: [ { name: standard } ] }");
    assert_eq!(e.field, "tiers.default");
    assert!(e.reason.contains("unknown tier \"gold\""), "{e}");

    let e = bad("tiers: { list: [ { name: standard, share: 0.6 }, { name: b, share: 0.5 } ] }");
    assert_eq!(e.field, "tiers.list[1].share");
    assert!(e.reason.contains("more than 1"), "{e}");
    // The same shares on different clusters are fine.
    parse(
        "tiers: { list: [ { name: standard, share: 0.6 }, { name: b, share: 0.5, cluster: r } ] }",
    )
    .validate()
    .unwrap();

    let e = bad("tiers: { list: [ { name: standard }, { name: standard } ] }");
    assert_eq!(e.field, "tiers.list[1].name");
    assert!(e.reason.contains("duplicate"), "{e}");

    let e = bad("tiers: { trusted_sources: [\"10.0.0.0/40\"] }");
    assert_eq!(e.field, "tiers.trusted_sources[0]");

    let e = bad("tiers: { list: [ { name: standard, match: { path_prefix: [api] } } ] }");
    assert_eq!(e.field, "tiers.list[0].match.path_prefix[0]");

    let e = bad("sources: { identities: { app-a: { tier: gold } } }");
    assert_eq!(e.field, "sources.identities.app-a.tier");

    let e = bad("sources: { rate_limit: { rps: 0 } }");
    assert_eq!(e.field, "sources.rate_limit.rps");

    let e = bad("admission: { limit: { floor: 50, initial: 20 } }");
    assert_eq!(e.field, "admission.limit.initial");

    let many: Vec<String> = (0..17).map(|i| format!("{{ name: t{i} }}")).collect();
    let e = bad(&format!(
        "tiers: {{ default: t0, list: [ {} ] }}",
        many.join(", ")
    ));
    assert_eq!(e.field, "tiers.list");

    // Unknown keys are errors, not silently ignored.
    assert!(serde_yaml_ng::from_str::<PoliciesConfig>("tiers: { lsit: [] }").is_err());
    assert!(serde_yaml_ng::from_str::<PoliciesConfig>(
        "tiers: { list: [ { name: a, match: { path: [/] } } ] }"
    )
    .is_err());
    assert!(
        serde_yaml_ng::from_str::<PoliciesConfig>("admission: { limit: { flor: 1 } }").is_err()
    );
}

#[test]
fn a_config_round_trips_through_yaml() {
    let cfg = parse(EXAMPLE);
    let text = serde_yaml_ng::to_string(&cfg).unwrap();
    assert_eq!(parse(&text), cfg);
}
