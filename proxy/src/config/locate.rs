//! Finds where a config path (`listeners[1].name`) stands in the YAML text, so errors
//! found after parsing (duplicates, unknown references) still cite a line.
//!
//! serde gives positions only for syntax and type errors; for the rest we walk the
//! document's events once with a position-reporting parser and index every key and
//! sequence item by its path.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// The (line, column) of `path`, both 1-based, or of its nearest ancestor that is
/// present in the text (a missing key is reported where its parent stands).
pub(crate) fn find(text: &str, path: &str) -> Option<(usize, usize)> {
    let mut index = PathIndex::default();
    // A document serde accepted parses here too; if not, there is simply no position.
    Parser::new_from_str(text).load(&mut index, false).ok()?;
    let mut p = path;
    loop {
        if let Some(pos) = index.marks.get(p) {
            return Some(*pos);
        }
        let cut = p.rfind(['.', '['])?;
        p = p.get(..cut)?;
    }
}

#[derive(Default)]
struct PathIndex {
    frames: Vec<Frame>,
    marks: HashMap<String, (usize, usize)>,
}

enum Frame {
    /// A mapping; `key` is set between a key and the end of its value.
    Map { key: Option<String> },
    /// A sequence; `next` is the index of the item being read.
    Seq { next: usize },
}

// === impl PathIndex ===

impl PathIndex {
    fn path(&self) -> String {
        let mut out = String::new();
        for f in &self.frames {
            match f {
                Frame::Map { key: Some(k) } => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                }
                Frame::Map { key: None } => {}
                Frame::Seq { next } => out.push_str(&format!("[{next}]")),
            }
        }
        out
    }

    fn record(&mut self, path: String, mark: Marker) {
        // yaml-rust2 counts lines from 1 and columns from 0.
        self.marks
            .entry(path)
            .or_insert((mark.line(), mark.col() + 1));
    }

    /// A key was read: index it, and index the mapping that holds it at its first key,
    /// because a block mapping's start event is not marked where its text begins.
    fn key(&mut self, mark: Marker) {
        let path = self.path();
        // A key path ends in `.key` unless the key is top-level.
        if let Some(parent) = path.rfind('.').and_then(|cut| path.get(..cut)) {
            self.record(parent.to_string(), mark);
        }
        self.record(path, mark);
    }

    /// A scalar or sequence value starts: sequence items are indexed here; mapping
    /// values were indexed at their key, mapping items at their first key.
    fn begin_value(&mut self, mark: Marker) {
        if matches!(self.frames.last(), Some(Frame::Seq { .. })) {
            let path = self.path();
            self.record(path, mark);
        }
    }

    fn end_value(&mut self) {
        match self.frames.last_mut() {
            Some(Frame::Map { key }) => *key = None,
            Some(Frame::Seq { next }) => *next += 1,
            None => {}
        }
    }
}

impl MarkedEventReceiver for PathIndex {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, ..) => {
                if let Some(Frame::Map { key: key @ None }) = self.frames.last_mut() {
                    *key = Some(value);
                    self.key(mark);
                } else {
                    self.begin_value(mark);
                    self.end_value();
                }
            }
            Event::Alias(_) => {
                self.begin_value(mark);
                self.end_value();
            }
            Event::MappingStart(..) => {
                self.frames.push(Frame::Map { key: None });
            }
            Event::SequenceStart(..) => {
                self.begin_value(mark);
                self.frames.push(Frame::Seq { next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.frames.pop();
                self.end_value();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::find;

    const TEXT: &str = "\
admin:
  address: 127.0.0.1:9901
listeners:
  - name: in
    cluster: web
  - name: in
    routes:
      - authority: a
        cluster: b
clusters: [{name: web}]
";

    #[test]
    fn finds_keys_items_and_the_second_of_two_duplicates() {
        assert_eq!(find(TEXT, "admin.address"), Some((2, 3)));
        assert_eq!(find(TEXT, "listeners[0].name"), Some((4, 5)));
        assert_eq!(find(TEXT, "listeners[1].name"), Some((6, 5)));
        assert_eq!(find(TEXT, "listeners[1].routes[0].cluster"), Some((9, 9)));
        assert_eq!(find(TEXT, "clusters[0].name"), Some((10, 13)));
    }

    #[test]
    fn a_missing_key_is_placed_at_its_nearest_present_ancestor() {
        assert_eq!(
            find(TEXT, "listeners[1].cluster"),
            find(TEXT, "listeners[1]")
        );
        assert_eq!(find(TEXT, "listeners[1]"), Some((6, 5)));
        assert_eq!(find(TEXT, "nothing.here"), None);
    }
}
