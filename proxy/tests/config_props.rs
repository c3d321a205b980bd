//! Property tests of the mesh config parser: arbitrary text and mutations of the
//! documented example never panic, and every refusal names the file and, where the text
//! has a position, a line inside it.

use prescale_proxy::{ConfigError, MeshConfig};
use proptest::prelude::*;
use std::path::Path;

const EXAMPLE: &str = include_str!("../../deploy/examples/sidecar.yaml");
const FILE: &str = "/props/mesh.yaml";

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// Parses `text`; asserts the error contract; returns whether it was accepted.
fn check(text: &str) -> Result<bool, TestCaseError> {
    match MeshConfig::parse(text, Path::new(FILE)) {
        Ok(cfg) => {
            prop_assert!(!cfg.listeners.is_empty());
            prop_assert!(!cfg.redacted_json().is_null());
            Ok(true)
        }
        Err(e) => {
            let msg = e.to_string();
            prop_assert!(msg.starts_with(&format!("{FILE}:")), "{}", msg);
            if let ConfigError::Invalid { line, .. } = &e {
                // YAML (1.1) breaks lines at CR, LF, CRLF, NEL, LS and PS; `str::lines`
                // knows only LF and CRLF.
                let lines = text
                    .replace("\r\n", "\n")
                    .replace(['\r', '\u{85}', '\u{2028}', '\u{2029}'], "\n")
                    .lines()
                    .count();
                prop_assert!(*line <= lines + 1, "line {} of {}: {}", line, lines, msg);
            }
            Ok(false)
        }
    }
}

/// One edit of a YAML document, line-wise or character-wise.
#[derive(Clone, Debug)]
enum Edit {
    DeleteLine(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    Indent(usize, i8),
    ReplaceValue(usize, String),
    InsertChar(usize, char),
    DeleteChar(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let value = prop_oneof![
        Just(String::new()),
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("18446744073709551616".to_string()),
        Just("1h1s".to_string()),
        Just("0s".to_string()),
        Just("[".to_string()),
        Just("{a: b}".to_string()),
        Just("~".to_string()),
        Just("\"\\u0000\"".to_string()),
        Just("999.999.999.999:99999".to_string()),
        Just("&a *a".to_string()),
        "[ -~]{0,12}",
    ];
    prop_oneof![
        any::<usize>().prop_map(Edit::DeleteLine),
        any::<usize>().prop_map(Edit::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
        (any::<usize>(), -4i8..=4).prop_map(|(a, d)| Edit::Indent(a, d)),
        (any::<usize>(), value).prop_map(|(a, v)| Edit::ReplaceValue(a, v)),
        (
            any::<usize>(),
            prop_oneof![
                Just(':'),
                Just('-'),
                Just(' '),
                Just('\t'),
                Just('{'),
                Just('"'),
                Just('#'),
                any::<char>()
            ]
        )
            .prop_map(|(a, c)| Edit::InsertChar(a, c)),
        any::<usize>().prop_map(Edit::DeleteChar),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for e in edits {
        if lines.is_empty() {
            break;
        }
        let n = lines.len();
        match e {
            Edit::DeleteLine(i) => {
                lines.remove(i % n);
            }
            Edit::DuplicateLine(i) => {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
            Edit::SwapLines(a, b) => lines.swap(a % n, b % n),
            Edit::Indent(i, d) => {
                let l = &mut lines[i % n];
                if *d > 0 {
                    *l = " ".repeat(*d as usize) + l;
                } else {
                    let cut = l.len() - l.trim_start().len();
                    *l = l[cut.min(d.unsigned_abs() as usize)..].to_string();
                }
            }
            Edit::ReplaceValue(i, v) => {
                let l = &mut lines[i % n];
                if let Some((k, _)) = l.split_once(": ") {
                    *l = format!("{k}: {v}");
                }
            }
            Edit::InsertChar(i, c) => {
                let l = &mut lines[i % n];
                let at = l
                    .char_indices()
                    .map(|(j, _)| j)
                    .nth(i % (l.chars().count() + 1))
                    .unwrap_or(l.len());
                l.insert(at, *c);
            }
            Edit::DeleteChar(i) => {
                let l = &mut lines[i % n];
                if let Some((at, _)) = l.char_indices().nth(i % (l.chars().count().max(1))) {
                    l.remove(at);
                }
            }
        }
    }
    lines.join("\n") + "\n"
}

#[test]
fn the_example_itself_is_accepted() {
    assert!(check(EXAMPLE).unwrap());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        check(&text)?;
    }

    #[test]
    fn yaml_shaped_text_never_panics(text in "([a-z_]{1,12}: ?([a-z0-9.:\\[\\]{}\"-]{0,16})?\n {0,6}){0,30}") {
        check(&text)?;
    }

    #[test]
    fn mutated_examples_never_panic(edits in prop::collection::vec(edit(), 1..6)) {
        check(&apply(EXAMPLE, &edits))?;
    }
}
