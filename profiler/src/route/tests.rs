use super::*;
use std::collections::HashSet;

#[test]
fn identifiers_become_id_and_words_stay() {
    for id in [
        "42",
        "20101209",
        "123e4567-e89b-12d3-a456-426614174000",
        "9f1c0b7e",
        "5f2b9c1d8e7a6b3c",
        "xjAJXh38I15wypJXxuGMBp0EAVxt0G0biEntp43Qt6E",
        "dGhlIHNhbXBsZSBub25jZQ2",
    ] {
        assert!(is_identifier(id), "{id} should be an identifier");
    }
    for word in [
        "users",
        "logstash-monitorama-2013",
        "logstash-puppetconf-2012",
        "rubygems615",
        "hackday08",
        "jordan-80.png",
        "style2.css",
        "deadbeef", // hex letters only: a word, not an id
        "installing-windows-8-consumer-preview.html",
        "ahhh___rage_face_by_samusmmx-d5g5zap.png",
    ] {
        assert!(!is_identifier(word), "{word} should stay a word");
    }
}

#[test]
fn template_replaces_ids_and_keeps_extensions_and_drops_the_query() {
    assert_eq!(
        template("/users/42/orders/9f1c0b7e1a2b?expand=1"),
        "/users/{id}/orders/{id}"
    );
    assert_eq!(
        template("/fonts/xjAJXh38I15wypJXxuGMBp0EAVxt0G0biEntp43Qt6E.ttf"),
        "/fonts/{id}.ttf"
    );
    assert_eq!(template("/"), "/");
    assert_eq!(template("//a//b/"), "/a/b");
}

#[test]
fn shape_counts_and_hash_agree_with_the_template() {
    let s = PathShape::of("/users/42/orders/7?a=1&b=2&");
    assert_eq!((s.segments, s.id_segments, s.query_params), (4, 2, 2));
    assert_eq!(s.path_bytes, "/users/42/orders/7".len() as u16);
    // Same template, same hash; different template, different hash.
    assert_eq!(
        s.template_hash,
        PathShape::of("/users/1/orders/2").template_hash
    );
    assert_ne!(
        s.template_hash,
        PathShape::of("/users/1/invoices/2").template_hash
    );
    assert_ne!(
        PathShape::of("/").template_hash,
        PathShape::of("/a").template_hash
    );
}

/// Real paths from a public web server's access log (see testdata/traces/README.md).
fn trace_paths() -> Option<Vec<String>> {
    let path = crate::test_require::trace(
        "route template tests on the real access log",
        "apache_access_semicomplete_2015-05-17_20.log",
    )?;
    let text = std::fs::read_to_string(path).expect("the access log reads");
    Some(
        text.lines()
            .filter_map(|l| l.split('"').nth(1)?.split(' ').nth(1).map(str::to_string))
            .collect(),
    )
}

#[test]
fn real_access_log_paths_collapse_into_fewer_templates() {
    let Some(paths) = trace_paths() else { return };
    assert!(
        paths.len() > 9_000,
        "expected the 10 000-line log, got {}",
        paths.len()
    );
    let distinct: HashSet<&str> = paths
        .iter()
        .map(|p| p.split('?').next().unwrap_or(p))
        .collect();
    let templates: HashSet<String> = paths.iter().map(|p| template(p)).collect();
    // Every template hash matches its string: equal strings, equal hashes.
    for p in &paths {
        let t = template(p);
        assert_eq!(
            PathShape::of(p).template_hash,
            PathShape::of(&t).template_hash,
            "{p} -> {t}"
        );
    }
    // Blog archives (/blog/2009/...) and hashed font files collapse; words do not.
    assert!(
        templates.len() < distinct.len(),
        "{} templates for {} paths",
        templates.len(),
        distinct.len()
    );
    assert!(templates.iter().all(|t| !t
        .split('/')
        .any(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))));
    assert!(templates.contains("/presentations/logstash-monitorama-2013/images/kibana-search.png"));
    assert!(templates.contains("/blog/tags/puppet"));
}
