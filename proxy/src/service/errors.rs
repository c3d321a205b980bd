//! Maps failures to the status a client should see, and writes the proxy's own answers.

use crate::metrics::{ConnectErrorKind, LocalReason};
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType};

/// The status and reason for a failed request; status 0 means the client is gone and
/// nothing can be written.
pub fn classify(e: &Error) -> (u16, LocalReason) {
    use ErrorType::*;
    let upstream = matches!(e.esource(), ErrorSource::Upstream);
    match e.etype() {
        HTTPStatus(code) => (*code, status_reason(*code)),
        // nginx answers 504 to proxy_connect_timeout too: the upstream did not answer.
        ConnectTimedout | TLSHandshakeTimedout => (504, LocalReason::UpstreamTimeout),
        ConnectRefused | ConnectNoRoute | ConnectError | BindError | SocketError
        | ConnectProxyFailure => (502, LocalReason::UpstreamConnect),
        TLSHandshakeFailure | InvalidCert | HandshakeError | TLSWantX509Lookup => {
            (502, LocalReason::UpstreamConnect)
        }
        ReadTimedout | WriteTimedout if upstream => (504, LocalReason::UpstreamTimeout),
        ReadTimedout | WriteTimedout => (408, LocalReason::ClientTimeout),
        ConnectionClosed | ReadError | WriteError if upstream => (502, LocalReason::UpstreamReset),
        ConnectionClosed | ReadError | WriteError => (0, LocalReason::BadRequest),
        InvalidHTTPHeader | H1Error | H2Error | InvalidH2 | H2Downgrade if upstream => {
            (502, LocalReason::UpstreamProtocol)
        }
        InvalidHTTPHeader | H1Error | H2Error | InvalidH2 | H2Downgrade => {
            (400, LocalReason::BadRequest)
        }
        _ => match e.esource() {
            ErrorSource::Upstream => (502, LocalReason::UpstreamProtocol),
            ErrorSource::Downstream => (400, LocalReason::BadRequest),
            _ => (500, LocalReason::Internal),
        },
    }
}

/// Which connection-attempt failure this is, for the connect-error counter.
pub fn connect_kind(e: &Error) -> ConnectErrorKind {
    use ErrorType::*;
    match e.etype() {
        ConnectRefused => ConnectErrorKind::Refused,
        ConnectTimedout | TLSHandshakeTimedout => ConnectErrorKind::Timeout,
        TLSHandshakeFailure | InvalidCert | HandshakeError | TLSWantX509Lookup => {
            ConnectErrorKind::Tls
        }
        _ => ConnectErrorKind::Other,
    }
}

fn status_reason(code: u16) -> LocalReason {
    match code {
        400 => LocalReason::BadRequest,
        404 => LocalReason::NoRoute,
        408 => LocalReason::ClientTimeout,
        413 => LocalReason::BodyTooLarge,
        431 => LocalReason::HeaderTooLarge,
        503 => LocalReason::NoEndpoint,
        504 => LocalReason::UpstreamTimeout,
        _ => LocalReason::Internal,
    }
}

/// Writes a small plain-text answer with `x-prescale-error: <reason>`, so a client (or
/// an operator reading curl output) can tell the proxy's answer from the service's.
pub async fn respond(
    session: &mut Session,
    status: u16,
    reason: LocalReason,
) -> pingora::Result<()> {
    let canonical = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let body = Bytes::from(format!("{status} {canonical}: {}\n", reason.as_str()));
    let mut resp = ResponseHeader::build(status, Some(4))?;
    resp.insert_header("content-type", "text/plain; charset=utf-8")?;
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header("x-prescale-error", reason.as_str())?;
    if status == 503 {
        resp.insert_header("retry-after", "1")?;
    }
    // After a malformed or oversized request the framing of what follows is unknown.
    if matches!(status, 400 | 408 | 413 | 431) {
        session.set_keepalive(None);
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

/// Answers a request admission refused: 503 (overload, pre-shedding) or 429 (rate
/// limit), with `Retry-After`, `x-prescale-error: shed | rate_limited` like every local
/// answer, and `x-prescale-shed: <reason>; tier=<tier>` naming why and for whom.
pub async fn reject(
    session: &mut Session,
    rejection: &prescale_policies::Rejection,
    tier: &str,
) -> pingora::Result<LocalReason> {
    let status = rejection.status();
    let local = if status == 429 {
        LocalReason::RateLimited
    } else {
        LocalReason::Shed
    };
    let reason = rejection.reason.as_str();
    let body = Bytes::from(format!("{status} {reason}: tier {tier}\n"));
    let mut resp = ResponseHeader::build(status, Some(6))?;
    resp.insert_header("content-type", "text/plain; charset=utf-8")?;
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header("retry-after", rejection.retry_after_secs.to_string())?;
    resp.insert_header("x-prescale-error", local.as_str())?;
    resp.insert_header("x-prescale-shed", format!("{reason}; tier={tier}"))?;
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(local)
}
