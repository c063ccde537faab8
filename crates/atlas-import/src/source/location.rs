//! Where source files live: local paths, `file://` URLs, `s3://` and
//! `http(s)://` objects, and globs over local files and S3 prefixes.
//!
//! Remote objects are streamed through `object_store` into a private staging
//! directory before anything else happens. The import then hashes, checks and
//! reads exactly the bytes it staged: an object that changes (or a connection
//! that drops) while being read cannot produce an import whose rows and
//! recorded hash disagree, and a failed download fails the import before any
//! row is written. The hash is taken while staging; a reader in another
//! process (an executor of a cluster) fetches the object again by its
//! [`ObjectOrigin`] and refuses bytes with another hash ([`fetch_origin`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::io::AsyncWriteExt;

use crate::error::{AtlasError, Result};
use crate::secrets::mask_password;

/// One source file: the name reports and `file_imports` use, and where its
/// bytes are on this machine.
#[derive(Debug, Clone)]
pub struct LocatedFile {
    /// The path or URL as the user would recognize it (passwords masked).
    pub name: String,
    /// The local file (the original, or the staged copy of a remote object).
    pub local: PathBuf,
    /// SHA-256 of a staged copy, taken while it was written.
    pub sha256: Option<String>,
    /// Where another process fetches the same object (a staged object whose
    /// URL holds no password).
    pub origin: Option<ObjectOrigin>,
}

/// A remote object as another process fetches it: its URL (no secrets: the
/// fetching process has its own credentials) and the SHA-256 of the bytes
/// the import was planned with.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ObjectOrigin {
    /// `s3://bucket/key` or `http(s)://host/path`.
    pub url: String,
    /// SHA-256 of the object when it was staged, as hex.
    pub sha256: String,
}

/// The files a source location names, with the staging directory that holds
/// remote copies (removed when this is dropped).
#[derive(Debug)]
pub struct LocatedFiles {
    /// The files, in name order.
    pub files: Vec<LocatedFile>,
    staging: Option<PathBuf>,
}

impl Drop for LocatedFiles {
    fn drop(&mut self) {
        if let Some(dir) = &self.staging {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Whether a location has pattern characters; a file or object of exactly
/// that name still wins over the pattern.
fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

fn usage(location: &str, message: impl std::fmt::Display) -> AtlasError {
    AtlasError::Usage(format!("source '{}': {message}", mask_password(location)))
}

/// Resolves a source location to its files, staging remote objects locally.
pub async fn locate(location: &str) -> Result<LocatedFiles> {
    let scheme = location
        .split_once("://")
        .map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        None => locate_local(location),
        Some("file") => {
            let url = url::Url::parse(location).map_err(|e| usage(location, e))?;
            let path = url
                .to_file_path()
                .map_err(|_| usage(location, "not a local file URL"))?;
            locate_local(&path.to_string_lossy())
        }
        Some("s3") => locate_s3(location).await,
        Some("http" | "https") => locate_http(location).await,
        Some(other) => Err(usage(
            location,
            format!(
                "unsupported scheme '{other}://': expected a path, file://, s3:// or http(s)://"
            ),
        )),
    }
}

fn locate_local(path: &str) -> Result<LocatedFiles> {
    // A file that exists is that file, whatever its name holds
    // (`[eu]_daily.csv`); only a name that is no file is a pattern.
    let files = if has_glob(path) && !Path::new(path).exists() {
        let mut matched: Vec<PathBuf> = glob::glob(path)
            .map_err(|e| usage(path, format!("invalid glob: {e}")))?
            .filter_map(|p| p.ok())
            .filter(|p| p.is_file())
            .collect();
        matched.sort();
        if matched.is_empty() {
            return Err(usage(path, "no file matches the pattern"));
        }
        matched
    } else {
        vec![PathBuf::from(path)]
    };
    Ok(LocatedFiles {
        files: files
            .into_iter()
            .map(|p| LocatedFile {
                name: p.display().to_string(),
                local: p,
                sha256: None,
                origin: None,
            })
            .collect(),
        staging: None,
    })
}

/// The store of an `s3://bucket/key` URL (credentials, region and endpoint
/// from the usual AWS environment variables) and the key.
fn s3_store(location: &str) -> Result<(Arc<dyn ObjectStore>, String, String)> {
    let url = url::Url::parse(location).map_err(|e| usage(location, e))?;
    let bucket = url
        .host_str()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| usage(location, "no bucket"))?;
    let key = url.path().trim_start_matches('/');
    let key = percent_decode(key);
    if key.is_empty() {
        return Err(usage(location, "no object key"));
    }
    let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .or_else(|_| std::env::var("AWS_ENDPOINT"))
        .unwrap_or_default();
    if endpoint.starts_with("http://") {
        // A local or private endpoint without TLS (MinIO, moto, ...).
        builder = builder.with_allow_http(true);
    }
    let store: Arc<dyn ObjectStore> = Arc::new(
        builder
            .build()
            .map_err(|e| usage(location, format!("cannot configure S3: {e}")))?,
    );
    Ok((store, bucket.to_string(), key))
}

/// The store of an `http(s)://` URL (its origin) and the object's path.
fn http_store(location: &str) -> Result<(Arc<dyn ObjectStore>, ObjectPath)> {
    let url = url::Url::parse(location).map_err(|e| usage(location, e))?;
    let origin = url.origin().ascii_serialization();
    let options = object_store::ClientOptions::new().with_allow_http(url.scheme() == "http");
    let store: Arc<dyn ObjectStore> = Arc::new(
        object_store::http::HttpBuilder::new()
            .with_url(origin)
            .with_client_options(options)
            .build()
            .map_err(|e| usage(location, e))?,
    );
    let key = percent_decode(url.path().trim_start_matches('/'));
    Ok((store, ObjectPath::from(key.as_str())))
}

async fn locate_s3(location: &str) -> Result<LocatedFiles> {
    let (store, bucket, key) = s3_store(location)?;
    // An object that exists is that object; only a key that is none is a
    // pattern.
    let literal_exists =
        has_glob(&key) && store.head(&ObjectPath::from(key.as_str())).await.is_ok();
    let keys = if has_glob(&key) && !literal_exists {
        let pattern = glob::Pattern::new(&key).map_err(|e| usage(location, e))?;
        let literal = &key[..key.find(['*', '?', '[']).expect("has a glob")];
        let prefix = literal.rfind('/').map(|i| &literal[..i]).unwrap_or("");
        let prefix = (!prefix.is_empty()).then(|| ObjectPath::from(prefix));
        let mut keys: Vec<String> = store
            .list(prefix.as_ref())
            .map_ok(|meta| meta.location.to_string())
            .try_filter(|k| futures::future::ready(pattern.matches(k)))
            .try_collect()
            .await
            .map_err(|e| source_error(location, format!("cannot list the bucket: {e}")))?;
        keys.sort();
        if keys.is_empty() {
            return Err(usage(location, "no object matches the pattern"));
        }
        keys
    } else {
        vec![key]
    };
    let named: Vec<(String, ObjectPath)> = keys
        .into_iter()
        .map(|k| (format!("s3://{bucket}/{k}"), ObjectPath::from(k.as_str())))
        .collect();
    stage(store, named).await
}

async fn locate_http(location: &str) -> Result<LocatedFiles> {
    // HTTP cannot list: a URL is always one object, whatever its path holds.
    let (store, path) = http_store(location)?;
    stage(store, vec![(location.to_string(), path)]).await
}

/// Fetches the object of `origin` into `dir` and returns the local file;
/// fails, keeping nothing, when its bytes are no longer those the import
/// was planned with.
pub async fn fetch_origin(origin: &ObjectOrigin, dir: &Path) -> Result<PathBuf> {
    let location = origin.url.as_str();
    let (store, path) = match location.split_once("://").map(|(s, _)| s) {
        Some("s3") => {
            let (store, _, key) = s3_store(location)?;
            (store, ObjectPath::from(key.as_str()))
        }
        Some("http" | "https") => http_store(location)?,
        _ => return Err(usage(location, "not an object URL")),
    };
    let local = dir.join(path.filename().unwrap_or("object"));
    let sha256 = download(&store, &path, &local, location).await?;
    if sha256 != origin.sha256 {
        let _ = tokio::fs::remove_file(&local).await;
        return Err(AtlasError::Source {
            source_name: location.to_string(),
            message: format!(
                "the object changed after the import was planned (SHA-256 {} then, {sha256} \
                 when read); nothing was written",
                origin.sha256
            ),
        });
    }
    tracing::info!("Fetched {location} to read it here (SHA-256 as planned)");
    Ok(local)
}

/// An object fetched by [`fetch_origin`] into a directory of its own, to be
/// read in this process; the directory and the copy go when this is dropped.
#[derive(Debug)]
pub(crate) struct FetchedObject {
    dir: PathBuf,
    path: PathBuf,
}

impl FetchedObject {
    /// Fetches `origin`, failing when its bytes are not those planned with.
    pub(crate) async fn fetch(origin: &ObjectOrigin) -> Result<Self> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "atlas-import-fetch-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| AtlasError::io(dir.display().to_string(), e))?;
        // Made before the fetch, so that a failed fetch removes the directory.
        let mut fetched = Self {
            path: dir.clone(),
            dir,
        };
        fetched.path = fetch_origin(origin, &fetched.dir).await?;
        Ok(fetched)
    }

    /// The local copy.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for FetchedObject {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("k={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

fn source_error(name: &str, message: String) -> AtlasError {
    AtlasError::Source {
        source_name: mask_password(name),
        message,
    }
}

/// Streams each object (by its URL) into the staging directory, keeping its
/// file name (the format comes from the extension), hashing it on the way.
async fn stage(
    store: Arc<dyn ObjectStore>,
    objects: Vec<(String, ObjectPath)>,
) -> Result<LocatedFiles> {
    let staging = std::env::temp_dir().join(format!(
        "atlas-import-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    ));
    let mut located = LocatedFiles {
        files: Vec::with_capacity(objects.len()),
        staging: Some(staging.clone()),
    };
    for (i, (url, path)) in objects.into_iter().enumerate() {
        let name = mask_password(&url);
        let file_name = path.filename().unwrap_or("object").to_string();
        let dir = staging.join(i.to_string());
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| AtlasError::io(dir.display().to_string(), e))?;
        let local = dir.join(&file_name);
        let sha256 = download(&store, &path, &local, &name).await?;
        tracing::info!("Fetched {name}");
        // A URL with a password is this process's to read only.
        let origin = (name == url).then(|| ObjectOrigin {
            url,
            sha256: sha256.clone(),
        });
        located.files.push(LocatedFile {
            name,
            local,
            sha256: Some(sha256),
            origin,
        });
    }
    Ok(located)
}

/// Writes the object at `path` to `local`; returns the SHA-256 of its bytes.
async fn download(
    store: &Arc<dyn ObjectStore>,
    path: &ObjectPath,
    local: &Path,
    name: &str,
) -> Result<String> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let result = store
        .get(path)
        .await
        .map_err(|e| source_error(name, format!("cannot fetch: {e}")))?;
    let mut stream = result.into_stream();
    let mut file = tokio::fs::File::create(local)
        .await
        .map_err(|e| AtlasError::io(local.display().to_string(), e))?;
    while let Some(bytes) = stream
        .try_next()
        .await
        .map_err(|e| source_error(name, format!("the download failed: {e}")))?
    {
        hasher.update(&bytes);
        file.write_all(&bytes)
            .await
            .map_err(|e| AtlasError::io(local.display().to_string(), e))?;
    }
    file.flush()
        .await
        .map_err(|e| AtlasError::io(local.display().to_string(), e))?;
    Ok(hex::encode(hasher.finalize()))
}
