//! Raw HTTP/1.1 over a TCP socket: for what curl and h2load never send (pipelined
//! writes, malformed heads) and to see the bytes on the wire (trailers).

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One HTTP/1.1 response as it came off the wire.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Status line and header lines, without the blank line.
    pub head: String,
    pub body: Vec<u8>,
    /// The chunked body's trailer section (lines after `0\r\n`), empty if none.
    pub trailers: String,
}

impl RawResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// A client connection that keeps whatever it read past the last response.
pub struct RawConn {
    pub stream: TcpStream,
    buf: Vec<u8>,
    limit: Duration,
}

impl RawConn {
    pub async fn connect(addr: std::net::SocketAddr) -> Self {
        let stream = TcpStream::connect(addr)
            .await
            .expect("connect to the proxy");
        Self {
            stream,
            buf: Vec::new(),
            limit: Duration::from_secs(10),
        }
    }

    /// Writes `bytes` in one `write` call (so requests in it arrive together).
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write request");
    }

    /// Reads more bytes; false on EOF or error. Panics if nothing comes within the limit.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        let read = tokio::time::timeout(self.limit, self.stream.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("no bytes within {:?}; have {:?}", self.limit, self.text()));
        match read {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }

    /// Takes one line (without CRLF) from the buffer, reading as needed.
    async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Some(line);
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    async fn take(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill().await {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }

    /// The next response, or `None` if the connection closed before a whole one came.
    pub async fn response(&mut self) -> Option<RawResponse> {
        let mut head = Vec::new();
        loop {
            let line = self.line().await?;
            if line.is_empty() {
                break;
            }
            head.push(line);
        }
        let head = head.join("\r\n");
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        let mut resp = RawResponse {
            status,
            head,
            body: Vec::new(),
            trailers: String::new(),
        };
        if resp
            .header("transfer-encoding")
            .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let size_line = self.line().await?;
                let size = usize::from_str_radix(size_line.split(';').next()?.trim(), 16).ok()?;
                if size == 0 {
                    break;
                }
                let chunk = self.take(size + 2).await?;
                resp.body.extend_from_slice(&chunk[..size]);
            }
            let mut trailers = Vec::new();
            loop {
                let line = self.line().await?;
                if line.is_empty() {
                    break;
                }
                trailers.push(line);
            }
            resp.trailers = trailers.join("\r\n");
        } else if let Some(len) = resp.header("content-length") {
            let len: usize = len.parse().ok()?;
            resp.body = self.take(len).await?;
        } else if !(resp.status == 204 || resp.status == 304 || resp.status < 200) {
            // Close-delimited.
            while self.fill().await {}
            resp.body = std::mem::take(&mut self.buf);
        }
        Some(resp)
    }

    /// Whether the peer closes the connection (EOF) within `limit` with no more bytes.
    pub async fn closed_within(&mut self, limit: Duration) -> bool {
        let mut chunk = [0u8; 1024];
        matches!(
            tokio::time::timeout(limit, self.stream.read(&mut chunk)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}
