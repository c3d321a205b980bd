//! Splitting a multi-document YAML stream into documents while keeping each one's
//! original text, so documents the injector does not change are written back byte for
//! byte (comments included) and only changed ones are re-serialised.

/// One document of a stream: the separator line before it (if any) and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDoc {
    /// `---` (possibly with a trailing comment), or `None` for the text before the
    /// first separator.
    pub separator: Option<String>,
    pub text: String,
    /// 1-based line of the document's first line in the whole stream.
    pub first_line: usize,
}

/// Splits at lines starting with `---` (followed by nothing or whitespace) and drops
/// `...` end markers. A document marker at column 0 cannot occur inside a scalar
/// (YAML forbids it), so this agrees with a YAML parser's split.
pub fn split(input: &str) -> Vec<RawDoc> {
    let mut docs = vec![RawDoc {
        separator: None,
        text: String::new(),
        first_line: 1,
    }];
    for (i, line) in input.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches(['\n', '\r']);
        if let Some(rest) = marker_rest(bare, "---") {
            // Content on the separator line itself (`--- {a: 1}`) starts the document.
            let (sep, text) = if rest.trim_start().starts_with('#') || rest.trim().is_empty() {
                (bare.to_string(), String::new())
            } else {
                ("---".to_string(), format!("{}\n", rest.trim_start()))
            };
            docs.push(RawDoc {
                separator: Some(sep),
                text,
                first_line: i + 2,
            });
            continue;
        }
        if marker_rest(bare, "...").is_some() {
            continue;
        }
        if let Some(d) = docs.last_mut() {
            d.text.push_str(line);
        }
    }
    docs
}

/// The rest of the line after a document marker, if the line is one.
fn marker_rest<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(marker)?;
    (rest.is_empty() || rest.starts_with([' ', '\t'])).then_some(rest)
}

/// Whether a document holds nothing but blank lines and comments.
pub fn is_blank(text: &str) -> bool {
    text.lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
}

/// The comment and blank lines heading a document.
pub fn leading_comments(text: &str) -> String {
    text.split_inclusive('\n')
        .take_while(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        .collect()
}

/// Joins documents back into a stream.
pub fn join(docs: &[(Option<String>, String)]) -> String {
    let mut out = String::new();
    for (sep, text) in docs {
        if let Some(sep) = sep {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(sep);
            out.push('\n');
        }
        out.push_str(text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_joins_back_to_the_same_text() {
        let input = "# header\n---\na: 1\n--- # second\nb: |\n  ---x\n  text\n...\n---\n";
        let docs = split(input);
        assert_eq!(docs.len(), 4);
        assert_eq!(docs[0].text, "# header\n");
        assert!(is_blank(&docs[0].text));
        assert_eq!(docs[1].text, "a: 1\n");
        assert_eq!(docs[1].first_line, 3);
        assert_eq!(docs[2].separator.as_deref(), Some("--- # second"));
        assert_eq!(docs[2].text, "b: |\n  ---x\n  text\n");
        assert!(is_blank(&docs[3].text));
        assert_eq!(leading_comments("# a\n\n# b\nx: 1 # c\n"), "# a\n\n# b\n");
        let parts: Vec<_> = docs
            .iter()
            .map(|d| (d.separator.clone(), d.text.clone()))
            .collect();
        assert_eq!(
            join(&parts),
            "# header\n---\na: 1\n--- # second\nb: |\n  ---x\n  text\n---\n"
        );
    }

    #[test]
    fn content_on_the_separator_line_starts_the_document() {
        let docs = split("--- {a: 1}\n---\nb: 2");
        assert_eq!(docs[1].text, "{a: 1}\n");
        assert_eq!(docs[2].text, "b: 2");
        assert!(split("----\n").len() == 1, "---- is not a marker");
    }
}
