//! Lines of a file, gunzipped when its magic bytes say gzip, with read-ahead so the
//! format can be detected before the first line is parsed.

use flate2::bufread::MultiGzDecoder;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

const BUF: usize = 256 * 1024;

pub(super) enum Opened {
    Lines(Lines),
    /// A compression we do not read, by name.
    Unsupported(&'static str),
}

pub(super) struct Lines {
    inner: Box<dyn BufRead + Send>,
    ahead: VecDeque<Vec<u8>>,
    buf: Vec<u8>,
    line_no: u64,
    pub(super) gzip: bool,
}

impl Lines {
    pub(super) fn open(path: &Path) -> io::Result<Opened> {
        let mut file = BufReader::with_capacity(BUF, File::open(path)?);
        let head = file.fill_buf()?;
        let unsupported = match head {
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Some("zstd"),
            [b'B', b'Z', b'h', ..] => Some("bzip2"),
            [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => Some("xz"),
            _ => None,
        };
        if let Some(what) = unsupported {
            return Ok(Opened::Unsupported(what));
        }
        let gzip = head.starts_with(&[0x1f, 0x8b]);
        let inner: Box<dyn BufRead + Send> = if gzip {
            // Multi-member, because rotated logs are often concatenated `.gz` files.
            Box::new(BufReader::with_capacity(BUF, MultiGzDecoder::new(file)))
        } else {
            Box::new(file)
        };
        Ok(Opened::Lines(Lines {
            inner,
            ahead: VecDeque::new(),
            buf: Vec::with_capacity(1024),
            line_no: 0,
            gzip,
        }))
    }

    /// The next line without its line ending, and its 1-based number.
    pub(super) fn next_line(&mut self) -> io::Result<Option<(u64, &[u8])>> {
        if let Some(line) = self.ahead.pop_front() {
            self.buf = line;
        } else if !self.read_raw()? {
            return Ok(None);
        }
        self.line_no += 1;
        Ok(Some((self.line_no, trim_eol(&self.buf))))
    }

    /// Queues lines (without consuming them) until `max_lines` are queued, `want`
    /// non-blank ones are, or the input ends; returns the queue.
    pub(super) fn read_ahead(
        &mut self,
        max_lines: usize,
        want: usize,
    ) -> io::Result<impl Iterator<Item = &[u8]>> {
        let mut nonblank = self
            .ahead
            .iter()
            .filter(|l| !l.trim_ascii().is_empty())
            .count();
        while self.ahead.len() < max_lines && nonblank < want && self.read_raw()? {
            if !self.buf.trim_ascii().is_empty() {
                nonblank += 1;
            }
            self.ahead.push_back(std::mem::take(&mut self.buf));
        }
        Ok(self.ahead.iter().map(|l| trim_eol(l)))
    }

    fn read_raw(&mut self) -> io::Result<bool> {
        self.buf.clear();
        let n = self.inner.read_until(b'\n', &mut self.buf)?;
        if n > 0 && self.line_no == 0 && self.ahead.is_empty() {
            // A UTF-8 byte-order mark from Windows tools would spoil the first field.
            if let Some(rest) = self.buf.strip_prefix(b"\xef\xbb\xbf") {
                self.buf = rest.to_vec();
            }
        }
        Ok(n > 0)
    }
}

fn trim_eol(b: &[u8]) -> &[u8] {
    let b = b.strip_suffix(b"\n").unwrap_or(b);
    b.strip_suffix(b"\r").unwrap_or(b)
}
