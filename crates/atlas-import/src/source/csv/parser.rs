//! The CSV tokenizer: strict RFC 4180 with a few dialect options, physical
//! line numbers, and the difference between an unquoted empty field (NULL)
//! and a quoted one (the empty string), as PostgreSQL's `COPY ... CSV` reads
//! them.
//!
//! It reads from any [`Read`] (a file, a decompressor) into one growing
//! buffer and hands out one record at a time as spans into that buffer. A
//! record that breaks the rules is still handed out, read leniently, with the
//! [`Problem`] attached: the caller fails the import or rejects the record.

use std::io::Read;

use super::CsvDialect;
use crate::error::{AtlasError, Result};

/// Bytes read from the input at a time (at least).
const READ_BYTES: usize = 1 << 20;
/// The longest record accepted; longer ones are an error (most often a
/// quote that is never closed).
const MAX_RECORD_BYTES: usize = 512 << 20;

/// One field of a record: a span of the parser's buffer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct FieldSpan {
    pub(crate) start: usize,
    pub(crate) end: usize,
    /// An unquoted empty field, or one equal to the dialect's NULL string.
    pub(crate) null: bool,
    /// A quoted field whose span holds doubled quotes or escapes to undo.
    pub(crate) escaped: bool,
}

/// What is wrong with a record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Problem {
    /// The physical line (1-based) where the problem is.
    pub(crate) line: u64,
    /// The 0-based field where it is.
    pub(crate) field: usize,
    /// What is wrong.
    pub(crate) message: String,
}

/// One record as the parser hands it out.
#[derive(Debug)]
pub(crate) struct RecordView<'a> {
    /// The physical line (1-based) the record starts on.
    pub(crate) line: u64,
    /// The fields, as spans of `bytes`.
    pub(crate) fields: &'a [FieldSpan],
    /// The buffer the spans point into.
    pub(crate) bytes: &'a [u8],
    /// The first rule the record breaks, if any.
    pub(crate) problem: Option<&'a Problem>,
    /// The record is a blank line.
    pub(crate) blank: bool,
}

impl RecordView<'_> {
    /// The bytes of field `i` with quoting undone, appended to `out`.
    pub(crate) fn append_field(&self, i: usize, dialect: &CsvDialect, out: &mut Vec<u8>) {
        let span = self.fields[i];
        let raw = &self.bytes[span.start..span.end];
        if span.escaped {
            unescape_into(raw, dialect, out);
        } else {
            out.extend_from_slice(raw);
        }
    }
}

/// How one attempt to read a record ended.
#[derive(Debug, PartialEq)]
enum Step {
    /// The buffer ends inside the record: read more and try again.
    Incomplete,
    /// No more input.
    End,
    /// A blank line of `consumed` bytes.
    Blank { consumed: usize },
    /// A comment line of `consumed` bytes (ending with one line break).
    Comment { consumed: usize, breaks: u64 },
    /// A record of `consumed` bytes spanning `breaks` line breaks.
    Record { consumed: usize, breaks: u64 },
}

/// A reader for an encoding no label names: fails at once.
struct UnknownEncoding(String);

impl Read for UnknownEncoding {
    fn read(&mut self, _buf: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("unknown encoding '{}'", self.0),
        ))
    }
}

/// Reads records from a byte stream.
pub(crate) struct CsvParser {
    input: Box<dyn Read + Send>,
    dialect: CsvDialect,
    /// Bytes of special meaning outside quotes.
    special: [bool; 256],
    buf: Vec<u8>,
    /// Start of the bytes not parsed yet.
    pos: usize,
    /// End of the bytes read.
    filled: usize,
    eof: bool,
    /// The physical line at `pos`.
    line: u64,
    fields: Vec<FieldSpan>,
    problem: Option<Problem>,
    /// The source, for I/O errors.
    source_name: String,
    /// Comment lines skipped so far (and a `sep=` line).
    pub(crate) comment_lines: u64,
    /// Whether the first line was looked at for a `sep=` line.
    hint_checked: bool,
    /// The delimiter a first line `sep=;` names.
    named_delimiter: Option<u8>,
}

impl CsvParser {
    pub(crate) fn new(input: Box<dyn Read + Send>, dialect: CsvDialect, source_name: &str) -> Self {
        let input = match dialect.encoding.as_deref().map(super::encoding_for) {
            None => super::decode::by_byte_order_mark(input),
            Some(Some(encoding)) => Box::new(super::decode::DecodingReader::new(input, encoding)),
            // Names are checked where the options are read; one in a plan
            // written by hand fails its first read.
            Some(None) => Box::new(UnknownEncoding(
                dialect.encoding.clone().unwrap_or_default(),
            )),
        };
        let mut special = [false; 256];
        special[usize::from(dialect.delimiter)] = true;
        special[usize::from(b'\n')] = true;
        special[usize::from(b'\r')] = true;
        if let Some(q) = dialect.quote {
            special[usize::from(q)] = true;
        }
        Self {
            input,
            dialect,
            special,
            buf: Vec::new(),
            pos: 0,
            filled: 0,
            eof: false,
            line: 1,
            fields: Vec::new(),
            problem: None,
            source_name: source_name.to_string(),
            comment_lines: 0,
            hint_checked: false,
            named_delimiter: None,
        }
    }

    /// The delimiter the file's first line names, as spreadsheets write it
    /// (`sep=;`), once the first record was asked for.
    pub(crate) fn named_delimiter(&self) -> Option<u8> {
        self.named_delimiter
    }

    /// Skips a first line `sep=;` (once): a line of the file that names its
    /// delimiter, neither a header nor a record.
    fn skip_separator_hint(&mut self) -> Result<()> {
        if std::mem::replace(&mut self.hint_checked, true) {
            return Ok(());
        }
        self.fill(READ_BYTES)?;
        if let Some((consumed, delimiter)) = separator_hint(&self.buf[self.pos..self.filled]) {
            self.pos += consumed;
            self.line += 1;
            self.comment_lines += 1;
            self.named_delimiter = Some(delimiter);
        }
        Ok(())
    }

    /// The next record (a blank line comes back as a record with `blank`
    /// set; comment lines are skipped and counted), or `None` at the end.
    pub(crate) fn next_record(&mut self) -> Result<Option<RecordView<'_>>> {
        self.skip_separator_hint()?;
        loop {
            let step = self.parse_at_pos();
            match step {
                Step::Incomplete => {
                    let pending = self.filled - self.pos;
                    if pending > MAX_RECORD_BYTES {
                        return Err(AtlasError::Source {
                            source_name: self.source_name.clone(),
                            message: format!(
                                "line {}: a record longer than {} MB (a quote that is never closed?)",
                                self.line,
                                MAX_RECORD_BYTES >> 20
                            ),
                        });
                    }
                    // Read at least as much again as is pending, so a long
                    // record is parsed a logarithmic number of times.
                    self.fill(pending.max(READ_BYTES))?;
                }
                Step::End => return Ok(None),
                Step::Comment { consumed, breaks } => {
                    self.pos += consumed;
                    self.line += breaks;
                    self.comment_lines += 1;
                }
                Step::Blank { consumed } => {
                    let line = self.line;
                    self.pos += consumed;
                    self.line += 1;
                    self.fields.clear();
                    self.problem = None;
                    return Ok(Some(RecordView {
                        line,
                        fields: &self.fields,
                        bytes: &self.buf,
                        problem: None,
                        blank: true,
                    }));
                }
                Step::Record { consumed, breaks } => {
                    let line = self.line;
                    // Spans are relative to `pos`: make them absolute.
                    let base = self.pos;
                    for f in &mut self.fields {
                        f.start += base;
                        f.end += base;
                    }
                    self.pos += consumed;
                    self.line += breaks;
                    return Ok(Some(RecordView {
                        line,
                        fields: &self.fields,
                        bytes: &self.buf,
                        problem: self.problem.as_ref(),
                        blank: false,
                    }));
                }
            }
        }
    }

    /// Reads until at least `want` more bytes are buffered or the input ends.
    fn fill(&mut self, want: usize) -> Result<()> {
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.filled, 0);
            self.filled -= self.pos;
            self.pos = 0;
        }
        let target = self.filled + want;
        if self.buf.len() < target {
            self.buf.resize(target, 0);
        }
        while self.filled < target {
            match self.input.read(&mut self.buf[self.filled..target]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // Text its encoding does not define is bad data, not I/O.
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    return Err(AtlasError::Source {
                        source_name: self.source_name.clone(),
                        message: e.to_string(),
                    });
                }
                Err(e) => return Err(AtlasError::io(self.source_name.clone(), e)),
            }
        }
        Ok(())
    }

    fn parse_at_pos(&mut self) -> Step {
        self.fields.clear();
        self.problem = None;
        let data = &self.buf[self.pos..self.filled];
        parse_record(
            &self.dialect,
            &self.special,
            data,
            self.eof,
            self.line,
            &mut self.fields,
            &mut self.problem,
        )
    }
}

/// A first line `sep=;` (after a UTF-8 byte-order mark, if any), as
/// spreadsheets write it to name the delimiter: its length with its line
/// break, and the delimiter. `data` holds the whole line.
fn separator_hint(data: &[u8]) -> Option<(usize, u8)> {
    let mark = if data.starts_with(b"\xEF\xBB\xBF") {
        3
    } else {
        0
    };
    let line = &data[mark..];
    let (name, delimiter) = (line.get(..4)?, *line.get(4)?);
    let named = name.eq_ignore_ascii_case(b"sep=")
        && (delimiter.is_ascii_punctuation() || delimiter == b'\t' || delimiter == b' ');
    let ending = match line.get(5..)? {
        [] => 0,
        [b'\r', b'\n', ..] => 2,
        [b'\r' | b'\n', ..] => 1,
        _ => return None,
    };
    named.then_some((mark + 5 + ending, delimiter))
}

/// Where a line break ends: `Some(len)` of the break at `data[i]` (`\n`,
/// `\r\n` or a lone `\r`), `None` when more input decides.
fn line_break_len(data: &[u8], i: usize, eof: bool) -> Option<usize> {
    match data[i] {
        b'\r' if i + 1 < data.len() => Some(if data[i + 1] == b'\n' { 2 } else { 1 }),
        b'\r' if eof => Some(1),
        b'\r' => None,
        _ => Some(1),
    }
}

fn note(problem: &mut Option<Problem>, line: u64, field: usize, message: impl Into<String>) {
    if problem.is_none() {
        *problem = Some(Problem {
            line,
            field,
            message: message.into(),
        });
    }
}

/// Parses one record at the start of `data`, filling `fields` with spans
/// relative to `data`.
fn parse_record(
    dialect: &CsvDialect,
    special: &[bool; 256],
    data: &[u8],
    eof: bool,
    line: u64,
    fields: &mut Vec<FieldSpan>,
    problem: &mut Option<Problem>,
) -> Step {
    let n = data.len();
    if n == 0 {
        return if eof { Step::End } else { Step::Incomplete };
    }
    if dialect.comment == Some(data[0]) {
        return match memchr::memchr(b'\n', data) {
            Some(end) => Step::Comment {
                consumed: end + 1,
                breaks: 1,
            },
            None if eof => Step::Comment {
                consumed: n,
                breaks: 0,
            },
            None => Step::Incomplete,
        };
    }
    if data[0] == b'\n' || data[0] == b'\r' {
        return match line_break_len(data, 0, eof) {
            Some(consumed) => Step::Blank { consumed },
            None => Step::Incomplete,
        };
    }
    let delimiter = dialect.delimiter;
    let mut i = 0;
    let mut breaks = 0u64;
    loop {
        let field = fields.len();
        if dialect.quote == Some(data[i]) {
            let quote = data[i];
            let opened_on = line + breaks;
            i += 1;
            let content = i;
            let mut escaped = false;
            let content_end;
            loop {
                let found = match dialect.escape {
                    Some(e) if e != quote => memchr::memchr2(quote, e, &data[i..]),
                    _ => memchr::memchr(quote, &data[i..]),
                };
                let Some(k) = found else {
                    if !eof {
                        return Step::Incomplete;
                    }
                    breaks += memchr::memchr_iter(b'\n', &data[i..]).count() as u64;
                    note(
                        problem,
                        opened_on,
                        field,
                        format!(
                            "a quoted field that starts on line {opened_on} is never closed (unterminated quote)"
                        ),
                    );
                    fields.push(FieldSpan {
                        start: content,
                        end: n,
                        null: false,
                        escaped: false,
                    });
                    return Step::Record {
                        consumed: n,
                        breaks,
                    };
                };
                breaks += memchr::memchr_iter(b'\n', &data[i..i + k]).count() as u64;
                i += k;
                if data[i] != quote {
                    // The escape character: it escapes a quote or itself.
                    if i + 1 >= n && !eof {
                        return Step::Incomplete;
                    }
                    if i + 1 < n && (data[i + 1] == quote || Some(data[i + 1]) == dialect.escape) {
                        escaped = true;
                        i += 2;
                    } else {
                        i += 1;
                    }
                    continue;
                }
                if i + 1 >= n && !eof {
                    return Step::Incomplete;
                }
                if i + 1 < n && data[i + 1] == quote {
                    escaped = true;
                    i += 2;
                    continue;
                }
                content_end = i;
                i += 1;
                break;
            }
            // After the closing quote: a delimiter, a line break or the end.
            if i < n && data[i] != delimiter && data[i] != b'\n' && data[i] != b'\r' {
                let hint = if content_end > content && data[content_end - 1] == b'\\' {
                    " (a backslash before a quote is not an escape in this dialect: say escape '\\' if the file uses them)"
                } else {
                    " (a quote inside a quoted field is written twice: \"\")"
                };
                note(
                    problem,
                    line + breaks,
                    field,
                    format!("text after the closing quote of a quoted field{hint}"),
                );
                // Read on leniently to the end of the field; keep its raw text.
                while i < n && data[i] != delimiter && data[i] != b'\n' && data[i] != b'\r' {
                    i += 1;
                }
                if i >= n && !eof {
                    return Step::Incomplete;
                }
                fields.push(FieldSpan {
                    start: content - 1,
                    end: i,
                    null: false,
                    escaped: false,
                });
            } else {
                fields.push(FieldSpan {
                    start: content,
                    end: content_end,
                    null: false,
                    escaped,
                });
            }
        } else {
            let start = i;
            loop {
                while i < n && !special[usize::from(data[i])] {
                    i += 1;
                }
                if i < n && Some(data[i]) == dialect.quote {
                    note(
                        problem,
                        line + breaks,
                        field,
                        "a quote inside an unquoted field (quote the whole field and write the quote twice: \"a \"\"b\"\" c\")",
                    );
                    i += 1;
                    continue;
                }
                break;
            }
            if i >= n && !eof {
                return Step::Incomplete;
            }
            let text = &data[start..i];
            let null = text.is_empty()
                || dialect
                    .null
                    .as_deref()
                    .is_some_and(|s| s.as_bytes() == text);
            fields.push(FieldSpan {
                start,
                end: i,
                null,
                escaped: false,
            });
        }
        // After a field: a delimiter (another field follows), a line break
        // or the end of the input (the record ends).
        if i >= n {
            return Step::Record {
                consumed: n,
                breaks,
            };
        }
        if data[i] == delimiter {
            i += 1;
            if i >= n {
                if !eof {
                    return Step::Incomplete;
                }
                // A delimiter at the very end: one more, empty, field.
                fields.push(FieldSpan {
                    start: i,
                    end: i,
                    null: true,
                    escaped: false,
                });
                return Step::Record {
                    consumed: n,
                    breaks,
                };
            }
            continue;
        }
        return match line_break_len(data, i, eof) {
            Some(len) => Step::Record {
                consumed: i + len,
                breaks: breaks + 1,
            },
            None => Step::Incomplete,
        };
    }
}

/// Undoes the quoting of a quoted field's content: doubled quotes, and the
/// dialect's escape before a quote or itself.
fn unescape_into(raw: &[u8], dialect: &CsvDialect, out: &mut Vec<u8>) {
    let quote = dialect.quote.unwrap_or(b'"');
    let escape = dialect.escape;
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if let Some(&next) = raw.get(i + 1) {
            let doubled_quote = b == quote && next == quote;
            let escape_sequence = Some(b) == escape && (next == quote || Some(next) == escape);
            if doubled_quote || escape_sequence {
                out.push(next);
                i += 2;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every record of `text` as (line, fields as text or None, problem).
    fn records(text: &str, dialect: CsvDialect) -> Vec<(u64, Vec<Option<String>>, Option<String>)> {
        // A tiny reader forces the parser through its incomplete paths.
        struct Trickle(Vec<u8>, usize);
        impl Read for Trickle {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = buf.len().min(3).min(self.0.len() - self.1);
                buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
                self.1 += n;
                Ok(n)
            }
        }
        let mut parser = CsvParser::new(
            Box::new(Trickle(text.as_bytes().to_vec(), 0)),
            dialect.clone(),
            "t.csv",
        );
        let mut out = Vec::new();
        while let Some(r) = parser.next_record().unwrap() {
            let fields = (0..r.fields.len())
                .map(|i| {
                    (!r.fields[i].null).then(|| {
                        let mut v = Vec::new();
                        r.append_field(i, &dialect, &mut v);
                        String::from_utf8(v).unwrap()
                    })
                })
                .collect();
            out.push((
                r.line,
                fields,
                r.problem.map(|p| format!("{}:{}", p.line, p.field)),
            ));
        }
        out
    }

    fn csv() -> CsvDialect {
        CsvDialect::default()
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn a_first_line_naming_the_delimiter_is_skipped() {
        let semicolons = CsvDialect {
            delimiter: b';',
            ..csv()
        };
        let r = records("sep=;\r\na;b\n1;2\n", semicolons.clone());
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].0, &r[0].1), (2, &vec![s("a"), s("b")]));
        assert_eq!((r[1].0, &r[1].1), (3, &vec![s("1"), s("2")]));
        let r = records("\u{feff}SEP=;\na;b\n", semicolons);
        assert_eq!((r[0].0, &r[0].1), (2, &vec![s("a"), s("b")]));
        // Only a first line of exactly that form.
        for text in ["sep=;x\na\n", "sep=\na\n", "a\nsep=;\n", "sepx;\na\n"] {
            assert_eq!(records(text, csv())[0].0, 1, "{text:?}");
        }
        let named = |text: &str| {
            let mut parser =
                CsvParser::new(Box::new(std::io::Cursor::new(text.to_string())), csv(), "t");
            parser.next_record().unwrap();
            parser.named_delimiter()
        };
        assert_eq!(named("sep=|\na|b\n"), Some(b'|'));
        assert_eq!(named("sep=\t"), Some(b'\t'));
        assert_eq!(named("a,b\n"), None);
    }

    #[test]
    fn quoted_and_unquoted_empty_fields_differ() {
        let r = records("a,b,c\n,\"\",x\n", csv());
        assert_eq!(r[1].1, vec![None, s(""), s("x")]);
        let r = records("a,b\n1,\n", csv());
        assert_eq!(r[1].1, vec![s("1"), None]);
        let r = records("a,b\n1,", csv());
        assert_eq!(r[1].1, vec![s("1"), None]);
    }

    #[test]
    fn whitespace_and_quotes_are_kept_exactly() {
        let r = records("a,b\n  ,\"x \"\"y\"\" z\"\n", csv());
        assert_eq!(r[1].1, vec![s("  "), s("x \"y\" z")]);
        assert_eq!(r[1].2, None);
    }

    #[test]
    fn physical_lines_count_embedded_newlines_and_crlf() {
        let r = records("a,b\r\n1,\"two\nlines\"\r\n2,x\r\n\r\n3,y", csv());
        let lines: Vec<u64> = r.iter().map(|r| r.0).collect();
        assert_eq!(lines, vec![1, 2, 4, 5, 6]);
        assert_eq!(r[1].1, vec![s("1"), s("two\nlines")]);
        assert_eq!(r[3].1, Vec::<Option<String>>::new(), "a blank line");
    }

    #[test]
    fn malformed_quoting_is_a_problem_on_its_line() {
        // Text after a closing quote, on line 3.
        let r = records("a,b\n1,ok\n1,\"foo \"bar\" baz\"\n", csv());
        assert_eq!(r[2].2.as_deref(), Some("3:1"));
        // A quote inside an unquoted field.
        let r = records("a,b\n1,12\" pipe\n", csv());
        assert_eq!(r[1].2.as_deref(), Some("2:1"));
        // Trailing spaces after a closing quote.
        let r = records("a,b\n\"x\"  ,1\n", csv());
        assert_eq!(r[1].2.as_deref(), Some("2:0"));
        // Never closed: named by the line it opened on.
        let r = records("a,b\n1,x\n2,\"never closed\n3,y\n", csv());
        assert_eq!(r[2].2.as_deref(), Some("3:1"));
    }

    #[test]
    fn dialect_options() {
        let backslash = CsvDialect {
            escape: Some(b'\\'),
            ..csv()
        };
        let r = records("a,b\n1,\"say \\\"hi\\\" \\\\ ok\"\n", backslash);
        assert_eq!(r[1].1, vec![s("1"), s("say \"hi\" \\ ok")]);
        assert_eq!(r[1].2, None);
        let r = records("a,b\n1,\"say \\\"hi\\\"\"\n", csv());
        assert!(r[1].2.is_some(), "a backslash escape is not RFC 4180");

        let dialect = CsvDialect {
            comment: Some(b'#'),
            null: Some("NULL".into()),
            quote: None,
            ..csv()
        };
        let r = records("# made by hand\na,b\nNULL,\"x\"\n", dialect);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].0, 2);
        assert_eq!(r[1].1, vec![None, s("\"x\"")]);
    }
}
