//! Finds the line of a `key: value` pair in YAML text, so semantic errors (which serde
//! cannot place) still cite a line.

/// Returns the 1-based (line, column) of the first `key: value` entry whose value is
/// `value` (quoted or not), or `None`. A best effort: it reads lines, not YAML structure,
/// which is enough to point a person at the right place.
pub(crate) fn find(text: &str, key: &str, value: &str) -> Option<(usize, usize)> {
    for (i, line) in text.lines().enumerate() {
        let body = line.trim_start();
        let body = body.strip_prefix("- ").map(str::trim_start).unwrap_or(body);
        let Some(rest) = body.strip_prefix(key) else {
            continue;
        };
        let Some(rest) = rest.trim_start().strip_prefix(':') else {
            continue;
        };
        let rest = rest.split(" #").next().unwrap_or("").trim();
        let unquoted = rest.trim_matches(|c| c == '"' || c == '\'');
        if unquoted == value || value.is_empty() {
            let column = line.len() - line.trim_start().len() + 1;
            return Some((i + 1, column));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::find;

    #[test]
    fn finds_plain_quoted_and_list_item_values() {
        let text = "a: 1\nlisteners:\n  - name: in\n    cluster: \"web\" # comment\n";
        assert_eq!(find(text, "name", "in"), Some((3, 3)));
        assert_eq!(find(text, "cluster", "web"), Some((4, 5)));
        assert_eq!(find(text, "cluster", "nope"), None);
    }
}
