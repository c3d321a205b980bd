//! Route templates and path complexity: `/users/42/orders/9f1c…` → `/users/{id}/orders/{id}`.
//!
//! On the data path only [`PathShape::of`] runs: one pass over the bytes, no
//! allocation, returning counts and a hash of the template. The template *string* is
//! built off the data path, by the profiler, for the routes it decides to keep.

/// What an identifier-like segment is replaced by.
pub const ID: &str = "{id}";

/// Complexity counts and the template hash of one request path.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct PathShape {
    /// FNV-1a hash of the route template (the path with identifiers replaced).
    pub template_hash: u64,
    /// Non-empty path segments.
    pub segments: u16,
    /// Segments that look like identifiers.
    pub id_segments: u16,
    /// `key=value` pairs in the query string.
    pub query_params: u16,
    /// Bytes in the path (without the query), saturating.
    pub path_bytes: u16,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

// === impl PathShape ===

impl PathShape {
    /// Measures a request target (`/path?query`), without allocating.
    pub fn of(target: &str) -> Self {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut shape = PathShape {
            path_bytes: u16::try_from(path.len()).unwrap_or(u16::MAX),
            query_params: saturate(query.split('&').filter(|p| !p.is_empty()).count()),
            ..Default::default()
        };
        let mut hash = FNV_OFFSET;
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            shape.segments = shape.segments.saturating_add(1);
            hash = fnv(hash, b"/");
            match Segment::of(seg) {
                Segment::Id { ext } => {
                    shape.id_segments = shape.id_segments.saturating_add(1);
                    hash = fnv(fnv(hash, ID.as_bytes()), ext.as_bytes());
                }
                Segment::Word(w) => hash = fnv(hash, w.as_bytes()),
            }
        }
        if shape.segments == 0 {
            hash = fnv(hash, b"/");
        }
        shape.template_hash = hash;
        shape
    }
}

/// The route template of a request target, as a string (off the data path).
pub fn template(target: &str) -> String {
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let mut out = String::with_capacity(path.len());
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        match Segment::of(seg) {
            Segment::Id { ext } => {
                out.push_str(ID);
                out.push_str(ext);
            }
            Segment::Word(w) => out.push_str(w),
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// One path segment as the template sees it.
enum Segment<'a> {
    /// Kept as is.
    Word(&'a str),
    /// Replaced by `{id}`, keeping a file extension (`.json`, `.ttf`) when there is one.
    Id { ext: &'a str },
}

impl<'a> Segment<'a> {
    fn of(seg: &'a str) -> Self {
        if is_identifier(seg) {
            return Segment::Id { ext: "" };
        }
        // `9f1c0b7e1a2b.json` or a hashed asset name: the stem is the identifier.
        if let Some(dot) = seg.rfind('.') {
            let (stem, ext) = seg.split_at(dot);
            let short_ext = (2..=6).contains(&ext.len())
                && ext.bytes().skip(1).all(|c| c.is_ascii_alphanumeric());
            if short_ext && is_identifier(stem) {
                return Segment::Id { ext };
            }
        }
        Segment::Word(seg)
    }
}

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

fn saturate(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

/// Whether a path segment names one thing among many (an id, a hash, a token) rather
/// than a kind of resource. Errs towards keeping words: `logstash-monitorama-2013`
/// stays, `42`, `9f1c0b7e…`, UUIDs and random base64 tokens become `{id}`.
pub fn is_identifier(seg: &str) -> bool {
    let b = seg.as_bytes();
    if b.is_empty() {
        return false;
    }
    // A file name keeps its extension as a word: `photo-123.jpg` is a resource.
    if b.iter().all(u8::is_ascii_digit) {
        return true;
    }
    if is_uuid(b) {
        return true;
    }
    let hex = b.iter().all(u8::is_ascii_hexdigit);
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    // Hashes and short hex ids (git shas, object ids): mixed hex letters and digits.
    if hex && b.len() >= 8 && digits > 0 && digits < b.len() {
        return true;
    }
    // Random tokens (base64/url-safe ids) switch character class often; words and
    // slugs do not. Measured on the share of class changes between neighbours.
    let token_chars = b
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'=' | b'+'));
    if token_chars && b.len() >= 16 && digits > 0 {
        let changes = b
            .iter()
            .zip(b.iter().skip(1))
            .filter(|(x, y)| class(**x) != class(**y))
            .count();
        return changes * 10 >= b.len() * 3;
    }
    false
}

fn class(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => 0,
        b'a'..=b'z' => 1,
        b'A'..=b'Z' => 2,
        _ => 3,
    }
}

fn is_uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests;
