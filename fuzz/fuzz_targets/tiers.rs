//! Tier classification of arbitrary requests against the documented example policy:
//! never panics, always names a tier of the table, and an untrusted client's tier header
//! is never honoured (and always flagged for stripping).
#![no_main]

use libfuzzer_sys::fuzz_target;
use prescale_policies::tiers::{ClassifiedBy, RequestParts, TierTable};
use prescale_policies::PoliciesConfig;
use std::net::IpAddr;
use std::sync::OnceLock;

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

fn table() -> &'static TierTable {
    static T: OnceLock<TierTable> = OnceLock::new();
    T.get_or_init(|| {
        let cfg: PoliciesConfig = serde_yaml_ng::from_str(POLICY).expect("policy parses");
        TierTable::new(&cfg).expect("policy is valid")
    })
}

fuzz_target!(|data: &[u8]| {
    // Fields separated by NUL: method, path, route, source, then header name/value pairs.
    let text = String::from_utf8_lossy(data);
    let mut f = text.split('\0');
    let method = f.next().unwrap_or("");
    let path = f.next().unwrap_or("");
    let route = f.next().filter(|r| !r.is_empty());
    let source = f.next().filter(|s| !s.is_empty());
    let ip_byte = data.first().copied().unwrap_or(0);
    let client_ip: IpAddr = if ip_byte % 2 == 0 {
        [10, 1, 2, ip_byte].into()
    } else {
        [192, 0, 2, ip_byte].into()
    };
    let rest: Vec<&str> = f.collect();
    let headers: Vec<(&str, &str)> = rest
        .chunks(2)
        .map(|c| {
            (
                c.first().copied().unwrap_or(""),
                c.get(1).copied().unwrap_or(""),
            )
        })
        .collect();
    let req = RequestParts {
        method,
        path,
        route,
        source,
        client_ip: Some(client_ip),
        headers: &headers,
    };
    let t = table();
    let c = t.classify(&req);
    assert!(c.tier.index() < t.len());
    let has_header = headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("x-prescale-tier"));
    if !t.trusts(source, Some(client_ip)) {
        assert_ne!(c.by, ClassifiedBy::Header, "{req:?}");
        assert_eq!(c.strip_header, has_header, "{req:?}");
    }
});
