//! What RFC 9112 says a server must reject in a parsed HTTP/1.1 request head and
//! pingora 0.9 lets through: a missing Host, an absurdly long method, and a
//! Content-Length that is a list or repeated. Each gets 400 `bad_request` and the
//! connection closes, since its framing or target cannot be trusted.
//!
//! (Control characters and spaces in the target never reach here: pingora
//! percent-encodes them, so `guard` checks the raw request line instead.)

use pingora::http::RequestHeader;

/// Longest method accepted: the registered ones are at most 17 characters
/// (`UPDATEREDIRECTREF`); anything far longer is an attack or a bug.
pub const MAX_METHOD_LEN: usize = 32;

/// Why a parsed head is refused, or `None` if it is acceptable.
pub fn violation(req: &RequestHeader, http2: bool) -> Option<&'static str> {
    if req.method.as_str().len() > MAX_METHOD_LEN {
        return Some("method too long");
    }
    if http2 {
        // h2 frames its own bodies and carries :authority; its rules are the h2 crate's.
        return None;
    }
    // RFC 9112 3.2: a server MUST respond 400 to an HTTP/1.1 request without Host.
    if req.version == http::Version::HTTP_11 && !req.headers.contains_key(http::header::HOST) {
        return Some("HTTP/1.1 request without Host");
    }
    let mut lengths = req.headers.get_all(http::header::CONTENT_LENGTH).iter();
    if let Some(first) = lengths.next() {
        // RFC 9112 6.3: a list or repeated Content-Length is unrecoverable framing.
        let digits = !first.is_empty() && first.as_bytes().iter().all(u8::is_ascii_digit);
        if lengths.next().is_some() || !digits {
            return Some("Content-Length is not one number");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build(method, b"/", None).unwrap();
        for (k, v) in headers {
            req.append_header(k.to_string(), *v).unwrap();
        }
        req
    }

    #[test]
    fn ordinary_heads_pass() {
        assert_eq!(violation(&head("GET", &[("host", "a")]), false), None);
        let post = head("POST", &[("host", "a"), ("content-length", "5")]);
        assert_eq!(violation(&post, false), None);
        assert_eq!(
            violation(&head("UPDATEREDIRECTREF", &[("host", "a")]), false),
            None
        );
        // h2 has :authority instead of Host.
        assert_eq!(violation(&head("GET", &[]), true), None);
    }

    #[test]
    fn rfc_9112_violations_are_named() {
        assert!(violation(&head("GET", &[]), false).is_some());
        let long = "A".repeat(MAX_METHOD_LEN + 1);
        assert!(violation(&head(&long, &[("host", "a")]), false).is_some());
        assert!(violation(&head(&long, &[]), true).is_some());
        for cl in ["5, 5", "5,6", "", "+5", "0x5"] {
            let req = head("POST", &[("host", "a"), ("content-length", cl)]);
            assert!(violation(&req, false).is_some(), "{cl:?}");
        }
        let twice = head(
            "POST",
            &[
                ("host", "a"),
                ("content-length", "5"),
                ("content-length", "5"),
            ],
        );
        assert!(violation(&twice, false).is_some());
    }
}
