//! One profiled request: its arrival features (known before forwarding) and its
//! completion features (known once the response is done). Plain data, `Copy`, no heap.

use crate::route::PathShape;

/// Milliseconds since the Unix epoch, passed in by the caller (the live clock or trace
/// time in `replay`); the profiler never reads a clock.
pub type Millis = u64;

/// The request method, reduced to what matters for cost.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Method {
    #[default]
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
    Other,
}

/// Known in `request_filter`, before the request is forwarded.
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub struct Arrival {
    pub method: Method,
    pub shape: PathShape,
    /// Declared request body size (content-length), 0 when unknown or streamed.
    pub request_bytes: u64,
    /// Hash of the source identity (header, mTLS peer, or client address).
    pub source: u64,
    /// The tier the policies assigned (0 until tiers exist).
    pub tier: u8,
}

/// Known in `logging`, after the response.
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub struct Completion {
    /// Request body bytes actually read (covers streamed bodies).
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// Time from request header to the end of the response, in microseconds.
    pub service_time_us: u64,
    pub status: u16,
    /// Outbound calls the service made while serving this request.
    pub fanout: u32,
}

/// The first bytes of the request target, copied inline so the sample needs no heap.
/// The profiler builds route template strings from it, off the data path.
#[derive(Copy, Clone, PartialEq, Eq)]
pub struct InlinePath {
    len: u8,
    truncated: bool,
    bytes: [u8; InlinePath::CAP],
}

/// A finished request as the profiler sees it.
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// When the request arrived.
    pub at: Millis,
    pub arrival: Arrival,
    pub completion: Completion,
    pub path: InlinePath,
    /// The signature the arrival classifier guessed, for its accuracy metric.
    pub guess: Option<u32>,
}

// === impl Method ===

impl Method {
    pub fn parse(m: &str) -> Self {
        match m {
            "GET" => Self::Get,
            "HEAD" => Self::Head,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "PATCH" => Self::Patch,
            "DELETE" => Self::Delete,
            "OPTIONS" => Self::Options,
            _ => Self::Other,
        }
    }

    /// Methods that usually change state, and cost more than reads of the same size.
    pub fn is_write(self) -> bool {
        matches!(self, Self::Post | Self::Put | Self::Patch | Self::Delete)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
            Self::Options => "OPTIONS",
            Self::Other => "OTHER",
        }
    }
}

// === impl InlinePath ===

impl InlinePath {
    pub const CAP: usize = 96;

    /// Copies up to `CAP` bytes, cut at a character boundary.
    pub fn new(target: &str) -> Self {
        let mut end = target.len().min(Self::CAP);
        while !target.is_char_boundary(end) {
            end -= 1;
        }
        let mut bytes = [0u8; Self::CAP];
        let src = target.as_bytes().get(..end).unwrap_or_default();
        if let Some(dst) = bytes.get_mut(..end) {
            dst.copy_from_slice(src);
        }
        Self {
            len: u8::try_from(end).unwrap_or(0),
            truncated: end < target.len(),
            bytes,
        }
    }

    pub fn as_str(&self) -> &str {
        let b = self.bytes.get(..usize::from(self.len)).unwrap_or_default();
        std::str::from_utf8(b).unwrap_or("")
    }

    pub fn is_truncated(&self) -> bool {
        self.truncated
    }
}

impl Default for InlinePath {
    fn default() -> Self {
        Self::new("/")
    }
}

impl std::fmt::Debug for InlinePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_path_truncates_on_a_char_boundary() {
        let short = InlinePath::new("/a/b?c=1");
        assert_eq!((short.as_str(), short.is_truncated()), ("/a/b?c=1", false));
        let long = format!("/{}é", "x".repeat(InlinePath::CAP - 2));
        let p = InlinePath::new(&long);
        assert!(p.is_truncated());
        assert_eq!(p.as_str().len(), InlinePath::CAP - 1);
        assert!(long.starts_with(p.as_str()));
    }
}
