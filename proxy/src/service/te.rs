//! `TE: trailers` towards an HTTP/2 upstream. pingora strips `TE` as hop-by-hop on
//! every upstream request, but RFC 9113 §8.2.2 allows it in HTTP/2 with the value
//! `trailers`, and gRPC servers refuse a call without it. So when the client said it
//! accepts trailers (RFC 9110 §10.1.4), an HTTP/2 upstream is told so too.

use pingora::http::RequestHeader;

/// Whether a client's `TE` field values list the `trailers` member.
pub fn accepts_trailers(client: &RequestHeader) -> bool {
    client
        .headers
        .get_all(http::header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|m| {
            m.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
}

/// Restores `te: trailers` on an HTTP/2 upstream request when the client sent it.
pub fn forward_to_h2(client: &RequestHeader, upstream: &mut RequestHeader) -> pingora::Result<()> {
    if upstream.version == http::Version::HTTP_2 && accepts_trailers(client) {
        upstream.insert_header(http::header::TE, "trailers")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(te: &[&str]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/", None).unwrap();
        for v in te {
            r.append_header("te", *v).unwrap();
        }
        r
    }

    #[test]
    fn trailers_member_is_found_in_any_te_value() {
        assert!(accepts_trailers(&req(&["trailers"])));
        assert!(accepts_trailers(&req(&["gzip;q=0.5, Trailers"])));
        assert!(accepts_trailers(&req(&["gzip", "trailers"])));
        assert!(!accepts_trailers(&req(&["gzip"])));
        assert!(!accepts_trailers(&req(&[])));
    }

    #[test]
    fn only_an_h2_upstream_request_gets_it() {
        let client = req(&["trailers"]);
        let mut h1 = req(&[]);
        forward_to_h2(&client, &mut h1).unwrap();
        assert!(h1.headers.get("te").is_none());
        let mut h2 = req(&[]);
        h2.set_version(http::Version::HTTP_2);
        forward_to_h2(&client, &mut h2).unwrap();
        assert_eq!(h2.headers.get("te").unwrap(), "trailers");
        let mut no = req(&[]);
        no.set_version(http::Version::HTTP_2);
        forward_to_h2(&req(&[]), &mut no).unwrap();
        assert!(no.headers.get("te").is_none());
    }
}
