//! Text in another encoding than UTF-8 (`encoding 'latin1'`), decoded to
//! UTF-8 as it is read, so that the parser and everything after it see
//! UTF-8. A byte sequence the encoding does not define is an error naming
//! it, never a replacement character: a value must not change on the way in.

use std::io::{self, Read};

use encoding_rs::{DecoderResult, Encoding};

/// Bytes read from the input at a time.
const RAW_BYTES: usize = 64 << 10;

/// The encoding `label` names (WHATWG labels: `latin1`, `windows-1252`,
/// `utf-16le`, `shift_jis`, ...), or `None`.
pub(crate) fn encoding_for(label: &str) -> Option<&'static Encoding> {
    Encoding::for_label(label.trim().as_bytes())
}

/// `input` (in `encoding`) read as UTF-8.
pub(crate) struct DecodingReader {
    input: Box<dyn Read + Send>,
    decoder: encoding_rs::Decoder,
    encoding: &'static Encoding,
    raw: Vec<u8>,
    /// The undecoded bytes: `raw[raw_start..raw_end]`.
    raw_start: usize,
    raw_end: usize,
    input_done: bool,
    decoded: Vec<u8>,
    /// The decoded bytes not handed out yet: `decoded[out_start..out_end]`.
    out_start: usize,
    out_end: usize,
    finished: bool,
    /// Input bytes decoded before `raw`, for the error's position.
    consumed: u64,
}

impl DecodingReader {
    pub(crate) fn new(input: Box<dyn Read + Send>, encoding: &'static Encoding) -> Self {
        Self {
            input,
            // A byte-order mark, if any, says the encoding and is dropped.
            decoder: encoding.new_decoder(),
            encoding,
            raw: vec![0; RAW_BYTES],
            raw_start: 0,
            raw_end: 0,
            input_done: false,
            decoded: vec![0; RAW_BYTES * 3 + 16],
            out_start: 0,
            out_end: 0,
            finished: false,
            consumed: 0,
        }
    }
}

impl Read for DecodingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.out_start < self.out_end {
                let n = buf.len().min(self.out_end - self.out_start);
                buf[..n].copy_from_slice(&self.decoded[self.out_start..self.out_start + n]);
                self.out_start += n;
                return Ok(n);
            }
            if self.finished || buf.is_empty() {
                return Ok(0);
            }
            if self.raw_start == self.raw_end && !self.input_done {
                self.consumed += self.raw_end as u64;
                self.raw_start = 0;
                self.raw_end = self.input.read(&mut self.raw)?;
                self.input_done = self.raw_end == 0;
            }
            let (result, read, written) = self.decoder.decode_to_utf8_without_replacement(
                &self.raw[self.raw_start..self.raw_end],
                &mut self.decoded,
                self.input_done,
            );
            let at = self.consumed + (self.raw_start + read) as u64;
            self.raw_start += read;
            (self.out_start, self.out_end) = (0, written);
            match result {
                DecoderResult::InputEmpty => self.finished = self.input_done,
                DecoderResult::OutputFull => {}
                DecoderResult::Malformed(bad, _) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "bytes near byte {} are not valid {} ({bad} byte(s) that encoding does not define)",
                            at.saturating_sub(u64::from(bad)),
                            self.encoding.name()
                        ),
                    ));
                }
            }
        }
    }
}

/// `input` as UTF-8 where no encoding is named: text that starts with a
/// UTF-16 byte-order mark (spreadsheets' "Unicode text") is decoded from
/// UTF-16, as `encoding 'utf-16le'` (or `be`) would; anything else passes
/// through unchanged (a UTF-8 mark is dropped with the header's first name).
pub(crate) fn by_byte_order_mark(mut input: Box<dyn Read + Send>) -> Box<dyn Read + Send> {
    let mut head = [0u8; 2];
    let mut filled = 0;
    while filled < head.len() {
        match input.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // The parser's first read reports it.
            Err(e) => return Box::new(FailedRead(Some(e))),
        }
    }
    let utf16 = matches!(head, [0xFF, 0xFE] | [0xFE, 0xFF]) && filled == 2;
    let input = Box::new(io::Cursor::new(head[..filled].to_vec()).chain(input));
    if utf16 {
        // The decoder reads the mark: little- or big-endian, then dropped.
        Box::new(DecodingReader::new(input, encoding_rs::UTF_16LE))
    } else {
        input
    }
}

/// A read that failed before the parser began: fails its first read.
struct FailedRead(Option<io::Error>);

impl Read for FailedRead {
    fn read(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
        match self.0.take() {
            Some(e) => Err(e),
            None => Ok(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(bytes: &[u8], label: &str) -> io::Result<String> {
        let mut reader = DecodingReader::new(
            Box::new(io::Cursor::new(bytes.to_vec())),
            encoding_for(label).unwrap(),
        );
        let mut out = String::new();
        reader.read_to_string(&mut out)?;
        Ok(out)
    }

    #[test]
    fn other_encodings_read_as_utf8() {
        assert_eq!(
            decoded(b"caf\xe9;\x80 5\n", "latin1").unwrap(),
            "café;€ 5\n"
        );
        assert_eq!(
            decoded(b"\xff\xfea\x00,\x00\xe9\x00", "utf-16le").unwrap(),
            "a,é"
        );
        // Longer than one read, a character across the boundary.
        let long: Vec<u8> = std::iter::repeat_n(b"\x82\xa0".as_slice(), RAW_BYTES)
            .flatten()
            .copied()
            .collect();
        assert_eq!(decoded(&long, "shift_jis").unwrap(), "あ".repeat(RAW_BYTES));
        let err = decoded(b"ok \x82", "shift_jis").unwrap_err().to_string();
        assert!(err.contains("not valid Shift_JIS"), "{err}");
        assert!(encoding_for("klingon").is_none());
    }

    fn sniffed(bytes: &[u8]) -> io::Result<String> {
        let mut out = String::new();
        by_byte_order_mark(Box::new(io::Cursor::new(bytes.to_vec()))).read_to_string(&mut out)?;
        Ok(out)
    }

    #[test]
    fn a_utf16_byte_order_mark_names_the_encoding() {
        assert_eq!(
            sniffed(b"\xff\xfea\x00\t\x00\xe9\x00").unwrap(),
            "a\t\u{e9}"
        );
        assert_eq!(sniffed(b"\xfe\xff\x00a\x00,\x00\xe9").unwrap(), "a,\u{e9}");
        // Anything else as it is, however short.
        assert_eq!(sniffed(b"a,b\n1,2\n").unwrap(), "a,b\n1,2\n");
        assert_eq!(sniffed(b"\xef\xbb\xbfa").unwrap(), "\u{feff}a");
        assert_eq!(sniffed(b"x").unwrap(), "x");
        assert_eq!(sniffed(b"").unwrap(), "");
        // A lone surrogate is not UTF-16.
        assert!(sniffed(b"\xff\xfe\x00\xd8a\x00").is_err());
    }
}
