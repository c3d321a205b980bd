//! Config parsing and validation: the shipped example, strictness, error positions,
//! defaults and redaction.

use super::*;
use std::time::Duration;

const EXAMPLE: &str = include_str!("../../../deploy/examples/sidecar.yaml");

/// A small valid config; tests derive broken variants from it by replacing one line.
const BASE: &str = "\
admin:
  address: 127.0.0.1:9901
listeners:
  - name: inbound
    direction: inbound
    address: 127.0.0.1:4143
    cluster: local
  - name: outbound
    direction: outbound
    address: 127.0.0.1:4140
    routes:
      - authority: payments.internal
        cluster: payments
clusters:
  - name: local
    endpoints: [\"127.0.0.1:8080\"]
    timeouts:
      connect: 1s
      response_header: 30s
  - name: payments
    endpoints: [\"127.0.0.1:8081\"]
    protocol: h2c
";

fn parse(text: &str) -> Result<MeshConfig, ConfigError> {
    MeshConfig::parse(text, Path::new("/etc/prescale/mesh.yaml"))
}

/// The 1-based line of the only line containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    let hits: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(hits.len(), 1, "{needle:?} must be on exactly one line");
    hits[0]
}

/// `BASE` with the one line containing `from` replaced by `to` (which may be several lines).
fn with(from: &str, to: &str) -> String {
    line_of(BASE, from);
    BASE.lines()
        .map(|l| if l.contains(from) { to } else { l })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Asserts `text` is rejected at the line containing `needle`, with every `parts` in
/// the message, and that Display has the `file:line:column:` shape.
fn rejected_at(text: &str, needle: &str, parts: &[&str]) -> ConfigError {
    let err = parse(text).expect_err("config must be rejected");
    let shown = err.to_string();
    let line = line_of(text, needle);
    assert_eq!(err.line(), Some(line), "wrong line for {shown:?}\n{text}");
    assert!(
        shown.starts_with(&format!("/etc/prescale/mesh.yaml:{line}:")),
        "{shown:?} must start with file:line:"
    );
    for p in parts {
        assert!(shown.contains(p), "{shown:?} must mention {p:?}");
    }
    err
}

#[test]
fn shipped_example_parses() {
    let cfg = parse(EXAMPLE).expect("deploy/examples/sidecar.yaml must be valid");
    assert_eq!(cfg.listeners.len(), 2);
    assert_eq!(cfg.listeners[0].name, "inbound");
    assert_eq!(cfg.listeners[0].direction, Direction::Inbound);
    assert_eq!(cfg.listeners[0].cluster.as_deref(), Some("local"));
    assert_eq!(cfg.listeners[1].direction, Direction::Outbound);
    assert_eq!(cfg.listeners[1].routes[0].authority, "payments.internal");
    let payments = cfg.cluster("payments").expect("payments cluster");
    assert_eq!(payments.protocol, Protocol::H2c);
    assert_eq!(payments.timeouts.connect, Duration::from_millis(500));
    assert_eq!(payments.timeouts.response_header, Duration::from_secs(10));
    assert_eq!(cfg.drain.grace_period, Duration::from_secs(25));
    assert!(cfg.cluster("nope").is_none());
}

#[test]
fn base_fixture_parses() {
    let cfg = parse(BASE).expect("BASE is valid");
    assert_eq!(cfg.clusters.len(), 2);
}

#[test]
fn defaults_hold_for_a_minimal_config() {
    let cfg = parse(
        "listeners:\n  - name: in\n    direction: inbound\n    address: 127.0.0.1:4143\n    cluster: c\nclusters:\n  - name: c\n",
    )
    .expect("minimal config");
    assert_eq!(cfg.drain.grace_period, Duration::from_secs(25));
    assert_eq!(cfg.admin.address, "127.0.0.1:9901".parse().unwrap());
    assert!(cfg.admin.token.is_none());
    assert_eq!(cfg.limits.max_request_header_bytes, 64 * 1024);
    assert_eq!(cfg.limits.max_request_headers, 100);
    assert_eq!(cfg.limits.max_request_body_bytes, None);
    assert_eq!(cfg.limits.body_read_timeout, Duration::from_secs(30));
    assert_eq!(cfg.limits.keepalive_timeout, Duration::from_secs(60));
    assert_eq!(cfg.limits.header_timeout, Duration::from_secs(10));
    assert_eq!(cfg.limits.max_connections, 4096);
    assert_eq!(cfg.runtime.worker_threads, 0);
    assert!(cfg.runtime.threads() >= 1);
    let l = &cfg.listeners[0];
    assert!(l.h2c, "h2c defaults on");
    assert!(l.tls.is_none() && !l.original_dst && l.routes.is_empty());
    let c = &cfg.clusters[0];
    assert!(
        c.endpoints.is_empty(),
        "a cluster scaled to zero is allowed"
    );
    assert_eq!(c.protocol, Protocol::H1);
    assert_eq!(c.timeouts, Timeouts::default());
    assert_eq!(c.timeouts.connect, Duration::from_secs(3));
    assert_eq!(c.timeouts.response_header, Duration::from_secs(120));
    assert_eq!(c.timeouts.stream_idle, Some(Duration::from_secs(3600)));
    assert_eq!(c.pool_size, 128);
    assert_eq!(c.max_h2_streams, 100);
    assert_eq!(c.connect_retries, 2);
}

#[test]
fn typo_in_cluster_timeouts_is_rejected_at_its_line() {
    let text = with("      response_header: 30s", "      timeoutz: 30s");
    rejected_at(&text, "timeoutz", &["unknown field `timeoutz`"]);
}

#[test]
fn typo_in_cluster_key_is_rejected_at_its_line() {
    let text = with("    protocol: h2c", "    protocl: h2c");
    rejected_at(&text, "protocl", &["unknown field `protocl`"]);
}

#[test]
fn typo_in_listener_key_is_rejected_at_its_line() {
    let text = with("    address: 127.0.0.1:4140", "    adress: 127.0.0.1:4140");
    rejected_at(&text, "adress", &["unknown field `adress`"]);
}

#[test]
fn typo_in_flow_style_timeouts_is_rejected_at_its_line() {
    let text = with("      connect: 1s", "      connect: 1s\n    retries: 3");
    rejected_at(&text, "retries: 3", &["unknown field `retries`"]);
    let text = EXAMPLE.replace("timeouts: { connect: 3s,", "timeouts: { conect: 3s,");
    rejected_at(&text, "conect", &["unknown field `conect`"]);
}

#[test]
fn typo_at_top_level_is_rejected_at_its_line() {
    let text = format!("{BASE}drian:\n  grace_period: 5s\n");
    rejected_at(&text, "drian", &["unknown field `drian`"]);
}

#[test]
fn wrong_types_are_rejected_at_their_line() {
    let text = with("      response_header: 30s", "      response_header: soon");
    rejected_at(&text, "response_header: soon", &[]);
    let text = with("    address: 127.0.0.1:4143", "    address: not-an-address");
    rejected_at(&text, "not-an-address", &[]);
    let text = with("    protocol: h2c", "    protocol: h3");
    rejected_at(&text, "h3", &["unknown variant `h3`"]);
    let text = with("    direction: outbound", "    direction: sideways");
    rejected_at(&text, "sideways", &["unknown variant `sideways`"]);
    let text = format!("{BASE}limits:\n  max_request_headers: many\n");
    rejected_at(&text, "many", &[]);
    let text = format!("{BASE}drain:\n  grace_period: -5s\n");
    rejected_at(&text, "-5s", &[]);
}

#[test]
fn yaml_syntax_error_is_rejected_with_a_line() {
    let text = with("    cluster: local", "    cluster: [local");
    let err = parse(&text).expect_err("unterminated flow sequence");
    assert!(err.line().is_some(), "{err}");
    assert!(err.to_string().starts_with("/etc/prescale/mesh.yaml:"));
}

#[test]
fn missing_required_field_is_rejected() {
    let text = with("    direction: outbound", "");
    let err = parse(&text).expect_err("direction is required");
    assert!(err.to_string().contains("direction"), "{err}");
    assert!(err.line().is_some(), "{err}");
    let err = parse("admin:\n  address: 127.0.0.1:9901\n").expect_err("listeners required");
    assert!(err.to_string().contains("listeners"), "{err}");
}

#[test]
fn unknown_cluster_reference_names_path_and_line() {
    let text = with("    cluster: local", "    cluster: locl");
    rejected_at(
        &text,
        "cluster: locl",
        &["listeners[0].cluster", "unknown cluster \"locl\""],
    );
    let text = with("        cluster: payments", "        cluster: paymnts");
    rejected_at(
        &text,
        "cluster: paymnts",
        &["listeners[1].routes[0].cluster", "unknown cluster"],
    );
}

#[test]
fn duplicate_listener_name_points_at_the_duplicate() {
    let text = with("  - name: outbound", "  - name: inbound");
    let err = parse(&text).expect_err("duplicate listener names");
    let shown = err.to_string();
    assert!(shown.contains("listeners[1].name"), "{shown}");
    assert!(shown.contains("duplicate listener name"), "{shown}");
    // The second `- name: inbound`, not the first one.
    let second = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("- name: inbound"))
        .map(|(i, _)| i + 1)
        .nth(1)
        .unwrap();
    assert_eq!(err.line(), Some(second), "{shown}");
}

#[test]
fn duplicate_cluster_name_points_at_the_duplicate() {
    let text = with("  - name: payments", "  - name: local");
    let err = parse(&text).expect_err("duplicate cluster names");
    let shown = err.to_string();
    assert!(shown.contains("clusters[1].name"), "{shown}");
    let second = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("- name: local"))
        .map(|(i, _)| i + 1)
        .nth(1)
        .unwrap();
    assert_eq!(err.line(), Some(second), "{shown}");
}

#[test]
fn duplicate_listener_address_is_rejected() {
    let text = with("    address: 127.0.0.1:4140", "    address: 127.0.0.1:4143");
    let err = parse(&text).expect_err("two listeners on one address");
    let shown = err.to_string();
    assert!(shown.contains("listeners[1].address"), "{shown}");
    let second = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("address: 127.0.0.1:4143"))
        .map(|(i, _)| i + 1)
        .nth(1)
        .unwrap();
    assert_eq!(err.line(), Some(second), "{shown}");
    // A listener on the admin address is refused too.
    let text = with("    address: 127.0.0.1:4140", "    address: 127.0.0.1:9901");
    rejected_at(
        &text,
        "    address: 127.0.0.1:9901",
        &["listeners[1].address", "collides with admin.address"],
    );
}

#[test]
fn a_wildcard_listener_colliding_with_a_specific_one_names_both_lines() {
    let text = with("    address: 127.0.0.1:4140", "    address: 0.0.0.0:4143");
    let err = parse(&text).expect_err("wildcard and specific address on one port");
    let shown = err.to_string();
    let line_of = |needle: &str| {
        text.lines()
            .position(|l| l.contains(needle))
            .map(|i| i + 1)
            .unwrap()
    };
    assert_eq!(
        err.line(),
        Some(line_of("address: 0.0.0.0:4143")),
        "{shown}"
    );
    assert!(
        shown.contains(
            "listeners[1].address: 0.0.0.0:4143 collides with listeners[0].address 127.0.0.1:4143"
        ),
        "{shown}"
    );
    let other = format!("mesh.yaml:{}:", line_of("address: 127.0.0.1:4143"));
    assert!(shown.contains(&other), "must cite {other}: {shown}");
    // IPv6-only listeners sit beside IPv4 ones on the same port.
    let text = with("    address: 127.0.0.1:4140", "    address: \"[::]:4143\"");
    parse(&text).expect("[::]:P beside 127.0.0.1:P");
}

#[test]
fn h2_without_tls_is_rejected() {
    let text = with("    protocol: h2c", "    protocol: h2");
    rejected_at(
        &text,
        "protocol: h2",
        &["clusters[1].protocol", "needs a tls section"],
    );
}

#[test]
fn h2c_with_tls_is_rejected() {
    let text = with("    protocol: h2c", "    protocol: h2c\n    tls: {}");
    rejected_at(
        &text,
        "protocol: h2c",
        &["clusters[1].protocol", "plain text"],
    );
}

#[test]
fn zero_timeout_is_rejected() {
    let text = with("      response_header: 30s", "      response_header: 0s");
    rejected_at(
        &text,
        "response_header: 0s",
        &[
            "clusters[0].timeouts.response_header",
            "must be more than 0",
        ],
    );
    // Flow style, as in the example: the line of the mapping.
    let text = EXAMPLE.replace("timeouts: { connect: 3s,", "timeouts: { connect: 0s,");
    rejected_at(
        &text,
        "connect: 0s",
        &["clusters[0].timeouts.connect", "must be more than 0"],
    );
    let text = format!("{BASE}limits:\n  keepalive_timeout: 0s\n");
    rejected_at(
        &text,
        "keepalive_timeout: 0s",
        &["limits.keepalive_timeout", "must be more than 0"],
    );
    let text = format!("{BASE}limits:\n  header_timeout: 0s\n");
    rejected_at(
        &text,
        "header_timeout: 0s",
        &["limits.header_timeout", "must be more than 0"],
    );
    let text = format!("{BASE}limits:\n  max_connections: 0\n");
    rejected_at(
        &text,
        "max_connections: 0",
        &["limits.max_connections", "between 1 and"],
    );
}

#[test]
fn inbound_listener_without_cluster_is_rejected() {
    let text = with("    cluster: local", "");
    rejected_at(
        &text,
        "- name: inbound",
        &[
            "listeners[0].cluster",
            "needs the cluster of the local service",
        ],
    );
}

#[test]
fn outbound_listener_without_destination_is_rejected() {
    let text = with("    routes:", "    routes: []").replace(
        "      - authority: payments.internal\n        cluster: payments\n",
        "",
    );
    // The error names `listeners[1].routes`, so it points at that key.
    rejected_at(
        &text,
        "routes: []",
        &["listeners[1].routes", "needs routes"],
    );
}

#[test]
fn duplicate_route_authority_is_rejected() {
    let text = with(
        "        cluster: payments",
        "        cluster: payments\n      - authority: PAYMENTS.internal\n        cluster: local",
    );
    rejected_at(
        &text,
        "PAYMENTS.internal",
        &["listeners[1].routes[1].authority", "duplicate authority"],
    );
}

#[test]
fn out_of_range_numbers_are_rejected_with_path_and_line() {
    let text = with("    protocol: h2c", "    protocol: h2c\n    pool_size: 0");
    rejected_at(&text, "pool_size: 0", &["clusters[1].pool_size"]);
    let text = with(
        "    protocol: h2c",
        "    protocol: h2c\n    connect_retries: 11",
    );
    rejected_at(
        &text,
        "connect_retries: 11",
        &["clusters[1].connect_retries"],
    );
    let text = format!("{BASE}limits:\n  max_request_headers: 1000\n");
    rejected_at(
        &text,
        "max_request_headers: 1000",
        &["limits.max_request_headers"],
    );
    let text = format!("{BASE}profiler:\n  tick: 1ms\n");
    rejected_at(&text, "tick: 1ms", &["profiler.tick"]);
}

#[test]
fn unresolvable_endpoint_is_rejected() {
    let text = with(
        "    endpoints: [\"127.0.0.1:8081\"]",
        "    endpoints: [\"127.0.0.1\"]",
    );
    rejected_at(
        &text,
        "endpoints: [\"127.0.0.1\"]",
        &["clusters[1].endpoints", "127.0.0.1"],
    );
}

#[test]
fn empty_listener_list_is_rejected() {
    let err = parse("listeners: []\n").expect_err("no listeners");
    assert!(err.to_string().contains("at least one listener"), "{err}");
    assert_eq!(err.line(), Some(1));
}

#[test]
fn missing_file_is_a_read_error_naming_the_file() {
    let err = MeshConfig::load(Path::new("/nonexistent/prescale.yaml")).expect_err("no file");
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err
        .to_string()
        .starts_with("/nonexistent/prescale.yaml: cannot read"));
    assert_eq!(err.line(), None);
}

#[test]
fn redacted_json_never_contains_the_admin_token() {
    let text = BASE.replace(
        "  address: 127.0.0.1:9901",
        "  address: 127.0.0.1:9901\n  token: s3cret-Value",
    );
    let cfg = parse(&text).expect("config with token");
    assert_eq!(cfg.admin.token.as_ref().unwrap().expose(), "s3cret-Value");
    let json = cfg.redacted_json();
    let shown = json.to_string();
    assert!(!shown.contains("s3cret"), "{shown}");
    assert_eq!(json["admin"]["token"], "<redacted>");
    assert_eq!(json["listeners"][0]["name"], "inbound");
    assert_eq!(json["clusters"][1]["protocol"], "h2c");
    // Nor does Debug, which log lines use.
    assert!(!format!("{cfg:?}").contains("s3cret"));
    // Without a token there is nothing to redact.
    let json = parse(BASE).unwrap().redacted_json();
    assert!(json["admin"]["token"].is_null());
}

#[test]
fn relative_tls_paths_resolve_against_the_config_file() {
    let mut cfg = parse(BASE).unwrap();
    cfg.clusters[0].tls = Some(UpstreamTls {
        ca: Some("ca.pem".into()),
        sni: None,
    });
    cfg.resolve_paths(Path::new("/etc/prescale"));
    let ca = cfg.clusters[0].tls.as_ref().unwrap().ca.as_ref().unwrap();
    assert_eq!(ca, Path::new("/etc/prescale/ca.pem"));
}

#[test]
fn tier_policy_errors_name_path_and_line() {
    // A tier routed to a cluster nobody declared.
    let tiers = "policies:\n  tiers:\n    list:\n      - name: standard\n      - name: critical\n        cluster: reservd\n";
    let text = format!("{BASE}{tiers}");
    rejected_at(
        &text,
        "cluster: reservd",
        &[
            "policies.tiers.list[1].cluster",
            "unknown cluster \"reservd\"",
        ],
    );
    // The same tier on a declared cluster is fine.
    parse(&text.replace("reservd", "payments")).expect("tier cluster exists");
    // Shares over 1 point at the tier that tipped them over.
    let tiers = "policies:\n  tiers:\n    list:\n      - name: standard\n        share: 0.7\n      - name: batch\n        share: 0.5\n";
    rejected_at(
        &format!("{BASE}{tiers}"),
        "share: 0.5",
        &["policies.tiers.list[1].share", "more than 1"],
    );
}

#[test]
fn overflow_and_passive_health_are_checked_with_path_and_line() {
    let text = with(
        "    protocol: h2c",
        "    protocol: h2c\n    overflow: nowhere",
    );
    rejected_at(
        &text,
        "overflow: nowhere",
        &["clusters[1].overflow", "unknown cluster \"nowhere\""],
    );
    let text = with(
        "    protocol: h2c",
        "    protocol: h2c\n    overflow: payments",
    );
    rejected_at(
        &text,
        "overflow: payments",
        &["clusters[1].overflow", "itself"],
    );
    let text = with(
        "    protocol: h2c",
        "    protocol: h2c\n    passive_health: { consecutive_failures: 0 }",
    );
    rejected_at(
        &text,
        "consecutive_failures: 0",
        &["clusters[1].passive_health.consecutive_failures"],
    );
    // Payments overflows to local, which may not overflow further.
    let ok = with(
        "    protocol: h2c",
        "    protocol: h2c\n    overflow: local\n    passive_health: { consecutive_failures: 3, ejection: 5s }",
    );
    let cfg = parse(&ok).expect("overflow to local is fine");
    let p = cfg.cluster("payments").unwrap();
    assert_eq!(p.overflow.as_deref(), Some("local"));
    let h = p.passive_health.as_ref().unwrap();
    assert_eq!(
        (h.consecutive_failures, h.ejection, h.max_ejection),
        (3, Duration::from_secs(5), Duration::from_secs(300))
    );
    let chain = ok.replace(
        "      response_header: 30s",
        "      response_header: 30s\n    overflow: payments",
    );
    // local → payments → local: the first link is refused.
    rejected_at(
        &chain,
        "overflow: payments",
        &["clusters[0].overflow", "chains are not allowed"],
    );
}

#[test]
fn cluster_limits_name_a_cluster_admission_limits() {
    // `payments` is an outbound cluster: inbound admission keeps no limit for it.
    let text = BASE.to_string()
        + "policies:\n  admission:\n    cluster_limits:\n      payments: { ceiling: 8 }\n";
    rejected_at(
        &text,
        "payments: { ceiling: 8 }",
        &[
            "policies.admission.cluster_limits.payments",
            "has no admission limit",
            "\"local\"",
        ],
    );
    // The inbound listener's cluster has one.
    let ok = text.replace("payments: { ceiling: 8 }", "local: { ceiling: 8 }");
    let cfg = parse(&ok).expect("a limit for the inbound cluster is fine");
    assert_eq!(cfg.policies.admission.limit_for(Some("local")).ceiling, 8);
    // An override that cannot hold is refused at its line.
    let bad = text.replace("payments: { ceiling: 8 }", "local: { backoff: 3.0 }");
    rejected_at(
        &bad,
        "local: { backoff: 3.0 }",
        &["policies.admission.cluster_limits.local.backoff", "(0, 1]"],
    );
}

#[test]
fn read_is_still_accepted_for_response_header() {
    let text = with("      response_header: 30s", "      read: 7s");
    let cfg = parse(&text).expect("`read` is the former name of response_header");
    assert_eq!(
        cfg.clusters[0].timeouts.response_header,
        Duration::from_secs(7)
    );
    let both = with(
        "      response_header: 30s",
        "      response_header: 7s\n      read: 7s",
    );
    assert!(parse(&both).is_err(), "one name or the other, not both");
}

#[test]
fn stream_idle_is_off_only_when_said() {
    let off = with("      response_header: 30s", "      stream_idle: off");
    let cfg = parse(&off).unwrap();
    assert_eq!(cfg.clusters[0].timeouts.stream_idle, None);
    let five = with("      response_header: 30s", "      stream_idle: 5m");
    let cfg = parse(&five).unwrap();
    assert_eq!(
        cfg.clusters[0].timeouts.stream_idle,
        Some(Duration::from_secs(300))
    );
    for bad in ["      stream_idle: 0s", "      stream_idle: never"] {
        let text = with("      response_header: 30s", bad);
        assert!(parse(&text).is_err(), "{bad}");
    }
}
