//! Compressed sources: gzip, zstd, bzip2 and xz, told by the file's last
//! extension (`contacts.csv.gz`) or named by an option. Decoding is streamed
//! by the codecs' own crates; the file hash stays that of the bytes as stored.

use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{AtlasError, Result};

/// How a source file's bytes are compressed.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum Compression {
    /// Plain bytes.
    #[default]
    None,
    /// gzip (`.gz`), several members allowed.
    Gzip,
    /// Zstandard (`.zst`, `.zstd`), several frames allowed.
    Zstd,
    /// bzip2 (`.bz2`), several streams allowed.
    Bzip2,
    /// xz (`.xz`), several streams allowed.
    Xz,
}

impl Compression {
    /// The compression a file extension names, if it names one.
    pub fn from_extension(extension: &str) -> Option<Self> {
        match extension.to_ascii_lowercase().as_str() {
            "gz" | "gzip" => Some(Compression::Gzip),
            "zst" | "zstd" => Some(Compression::Zstd),
            "bz2" | "bzip2" => Some(Compression::Bzip2),
            "xz" => Some(Compression::Xz),
            _ => None,
        }
    }

    /// The compression of `path` by its last extension, and the path without
    /// that extension (whose extension then names the format).
    pub fn of_path(path: &Path) -> (Self, &Path) {
        let by_extension = path
            .extension()
            .and_then(|e| e.to_str())
            .and_then(Compression::from_extension);
        match (by_extension, path.file_stem()) {
            (Some(compression), Some(stem)) => (compression, Path::new(stem)),
            _ => (Compression::None, path),
        }
    }

    /// Opens `path` and decodes its bytes as they are read.
    pub fn open(self, path: &Path, source_name: &str) -> Result<Box<dyn Read + Send>> {
        self.open_counted(path, source_name, &ReadProgress::default())
    }

    /// Opens `path` and decodes its bytes as they are read, adding the
    /// bytes read from the file (compressed, as stored) to `progress`.
    pub fn open_counted(
        self,
        path: &Path,
        source_name: &str,
        progress: &ReadProgress,
    ) -> Result<Box<dyn Read + Send>> {
        let file = File::open(path).map_err(|e| AtlasError::io(source_name, e))?;
        let file = BufReader::with_capacity(
            1 << 16,
            CountingRead {
                inner: file,
                counter: progress.0.clone(),
            },
        );
        Ok(match self {
            Compression::None => Box::new(file),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(file)),
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::with_buffer(file)
                    .map_err(|e| AtlasError::io(source_name, e))?,
            ),
            Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(file)),
            Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(file)),
        })
    }
}

/// Where a reader counts the bytes it has read, for a progress display: a
/// runtime handle, not a setting, so it compares equal and hashes to
/// nothing (the file it belongs to stays plain settings).
#[derive(Debug, Clone, Default)]
pub struct ReadProgress(pub Option<Arc<AtomicU64>>);

impl PartialEq for ReadProgress {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for ReadProgress {}

impl std::hash::Hash for ReadProgress {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

/// A file that adds what it reads to a counter.
struct CountingRead {
    inner: File,
    counter: Option<Arc<AtomicU64>>,
}

impl Read for CountingRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(counter) = &self.counter {
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(n)
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Bzip2 => "bzip2",
            Compression::Xz => "xz",
        })
    }
}

impl FromStr for Compression {
    type Err = AtlasError;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "none" | "uncompressed" => Ok(Compression::None),
            other => Compression::from_extension(other).ok_or_else(|| {
                AtlasError::Usage(format!(
                    "unknown compression '{other}': expected gzip, zstd, bzip2, xz or none"
                ))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn extensions_name_the_codec_and_leave_the_format() {
        let (c, rest) = Compression::of_path(Path::new("data/contacts.csv.gz"));
        assert_eq!((c, rest), (Compression::Gzip, Path::new("contacts.csv")));
        let (c, rest) = Compression::of_path(Path::new("a.ndjson.zst"));
        assert_eq!((c, rest), (Compression::Zstd, Path::new("a.ndjson")));
        let (c, rest) = Compression::of_path(Path::new("a.csv"));
        assert_eq!((c, rest), (Compression::None, Path::new("a.csv")));
        assert_eq!("XZ".parse::<Compression>().unwrap(), Compression::Xz);
        assert!("lz4".parse::<Compression>().is_err());
    }

    #[test]
    fn every_codec_decodes_what_its_crate_encodes() {
        let text = b"a,b\n1,2\n".repeat(1000);
        let dir = std::env::temp_dir().join(format!("atlas_compression_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let encoded: [(Compression, Vec<u8>); 4] = [
            (Compression::Gzip, {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), Default::default());
                e.write_all(&text).unwrap();
                e.finish().unwrap()
            }),
            (
                Compression::Zstd,
                zstd::stream::encode_all(&text[..], 3).unwrap(),
            ),
            (Compression::Bzip2, {
                let mut e = bzip2::write::BzEncoder::new(Vec::new(), Default::default());
                e.write_all(&text).unwrap();
                e.finish().unwrap()
            }),
            (Compression::Xz, {
                let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
                e.write_all(&text).unwrap();
                e.finish().unwrap()
            }),
        ];
        for (codec, bytes) in encoded {
            let path = dir.join(format!("x.{codec}"));
            std::fs::write(&path, bytes).unwrap();
            let mut out = Vec::new();
            codec
                .open(&path, "x")
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, text, "{codec}");
        }
        std::fs::remove_dir_all(dir).ok();
    }
}
