//! Property tests of tier classification on arbitrary requests: it never panics, always
//! names a tier of the table, never honours a tier header from an untrusted source (and
//! always flags it for stripping), and honours it from a trusted one.

use prescale_policies::tiers::{ClassifiedBy, RequestParts, TierTable};
use prescale_policies::PoliciesConfig;
use proptest::prelude::*;
use std::net::IpAddr;

const POLICY: &str = r#"
tiers:
  header: x-prescale-tier
  trusted_sources: ["10.0.0.0/8", "ingress-gateway"]
  default: standard
  list:
    - { name: critical, priority: 0, share: 0.5, sheddable: false, match: { path_prefix: ["/checkout"], sources: ["payments-app"] } }
    - { name: standard, priority: 1, share: 0.3 }
    - { name: batch, priority: 2, share: 0.0, match: { headers: { x-job: "*" }, methods: [POST], route: ["/reports/{id}"] } }
sources:
  identities:
    app-a: { tier: critical, weight: 2.0 }
"#;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

fn table() -> TierTable {
    let cfg: PoliciesConfig = serde_yaml_ng::from_str(POLICY).unwrap();
    TierTable::new(&cfg).unwrap()
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("x-prescale-tier".to_string()),
        Just("X-Prescale-Tier".to_string()),
        Just("x-job".to_string()),
        "[a-zA-Z-]{1,12}",
    ]
}

fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("critical".to_string()),
        Just("batch".to_string()),
        Just("standard".to_string()),
        Just(String::new()),
        "\\PC{0,20}",
    ]
}

fn ip() -> impl Strategy<Value = Option<IpAddr>> {
    prop_oneof![
        Just(None),
        any::<[u8; 4]>().prop_map(|b| Some(IpAddr::from(b))),
        any::<[u8; 3]>().prop_map(|b| Some(IpAddr::from([10, b[0], b[1], b[2]]))),
        any::<[u8; 16]>().prop_map(|b| Some(IpAddr::from(b))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn classification_is_total_and_never_trusts_strangers(
        method in prop_oneof![Just("GET".to_string()), Just("POST".to_string()), "\\PC{0,8}"],
        path in prop_oneof![Just("/checkout/cart".to_string()), "/[ -~]{0,40}", "\\PC{0,40}"],
        route in proptest::option::of(prop_oneof![Just("/reports/{id}".to_string()), "\\PC{0,20}"]),
        source in proptest::option::of(prop_oneof![
            Just("payments-app".to_string()), Just("app-a".to_string()),
            Just("ingress-gateway".to_string()), "\\PC{0,16}"
        ]),
        client_ip in ip(),
        headers in prop::collection::vec((header_name(), header_value()), 0..6),
    ) {
        let t = table();
        let hs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let req = RequestParts {
            method: &method,
            path: &path,
            route: route.as_deref(),
            source: source.as_deref(),
            client_ip,
            headers: &hs,
        };
        let c = t.classify(&req);
        prop_assert!(c.tier.index() < t.len());
        let tier_header = hs.iter().find(|(n, _)| n.eq_ignore_ascii_case("x-prescale-tier"));
        if t.trusts(source.as_deref(), client_ip) {
            prop_assert!(!c.strip_header);
            if let Some((_, v)) = tier_header {
                if let Some(named) = t.by_name(v) {
                    prop_assert_eq!(c.tier, named);
                    prop_assert_eq!(c.by, ClassifiedBy::Header);
                }
            }
        } else {
            prop_assert_ne!(c.by, ClassifiedBy::Header);
            prop_assert_eq!(c.strip_header, tier_header.is_some());
        }
    }
}
