//! The object store holding bundle blobs, their detached signatures and the runners'
//! precompiled artifacts: a local directory, or an S3-compatible bucket shared by every
//! node of a platform.
//!
//! Objects are content-addressed, written create-only and never changed:
//!
//! * `bundles/<hex>.tar.zst` — a bundle, `<hex>` the SHA-256 of its bytes (its content
//!   hash);
//! * `signatures/<hex>.sig` — a detached signature, `<hex>` the SHA-256 of the signature's
//!   own bytes; the registry database names the signature a bundle carries now
//!   (`extension_bundle.signature_key`), so signing a bundle again writes a new object;
//! * `artifacts/...` — precompiled components, sealed by the runners (see
//!   `palisade_runtime::artifacts`).
//!
//! Every read of a bundle or signature is checked against the hash in its key: a corrupted
//! or substituted object is refused with [`RegistryError::ObjectMismatch`]. Signatures
//! written by earlier versions under `bundles/<hex>.sig` are still read (unchecked here;
//! the runner verifies every signature before it runs anything).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, S3ConditionalPut};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ClientConfigKey, RetryConfig};
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
use palisade_bundle::hash::ContentHash;
use sha2::{Digest, Sha256};

use crate::error::RegistryError;

/// Retries of one S3 request that failed for a reason that may pass.
pub const S3_MAX_RETRIES: usize = 2;
/// Longest time one S3 request is retried.
pub const S3_RETRY_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for a connection to the S3 server.
pub const S3_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest time one S3 request may take (a bundle is at most 64 MiB).
pub const S3_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the objects live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectStoreConfig {
    /// A local directory, created if missing.
    Local(PathBuf),
    /// An S3-compatible bucket.
    S3(S3Config),
}

/// An S3-compatible bucket. Credentials, and any setting left `None` here, come from the
/// standard `AWS_*` variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, `AWS_REGION`/`AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    /// `s3://bucket` or `s3://bucket/prefix`: every key is put under the prefix.
    pub url: String,
    /// The endpoint of an S3-compatible server, e.g. `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    /// The bucket's region.
    pub region: Option<String>,
    /// Allow plain `http://` endpoints (for a server on loopback or a private network).
    pub allow_http: bool,
    /// Static credentials; `None`: the `AWS_*` variables, or the instance's role.
    pub credentials: Option<S3Credentials>,
}

/// A static S3 access key.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl S3Config {
    /// A bucket at `url` with every other setting from the environment.
    pub fn new(url: impl Into<String>) -> Self {
        S3Config {
            url: url.into(),
            endpoint: None,
            region: None,
            allow_http: false,
            credentials: None,
        }
    }

    /// The bucket and the prefix (without slashes at either end) of `url`.
    fn bucket_and_prefix(&self) -> Result<(&str, &str), RegistryError> {
        let invalid = |reason: &str| RegistryError::InvalidObjectStore {
            location: self.url.clone(),
            reason: reason.to_owned(),
        };
        let rest = self
            .url
            .strip_prefix("s3://")
            .ok_or_else(|| invalid("an S3 location is `s3://bucket` or `s3://bucket/prefix`"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid("the bucket name is missing"));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|part| part == "." || part == "..") || prefix.contains("//") {
            return Err(invalid("the prefix may not hold `.`, `..` or empty parts"));
        }
        Ok((bucket, prefix))
    }
}

/// Bundle blobs and signatures in any [`ObjectStore`].
#[derive(Clone, Debug)]
pub struct BundleStore {
    store: Arc<dyn ObjectStore>,
    /// Where the store is, for messages (no credentials).
    location: String,
}

impl BundleStore {
    /// Wraps an existing object store (S3, in-memory, ...).
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self {
            store,
            location: "(object store)".to_owned(),
        }
    }

    /// Opens the store `config` describes.
    pub fn open(config: &ObjectStoreConfig) -> Result<Self, RegistryError> {
        match config {
            ObjectStoreConfig::Local(dir) => Self::local(dir),
            ObjectStoreConfig::S3(s3) => Self::s3(s3),
        }
    }

    /// A store rooted at the local directory `dir`, created if missing.
    pub fn local(dir: &Path) -> Result<Self, RegistryError> {
        std::fs::create_dir_all(dir).map_err(|source| RegistryError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let store = LocalFileSystem::new_with_prefix(dir)?.with_automatic_cleanup(true);
        Ok(Self {
            store: Arc::new(store),
            location: dir.display().to_string(),
        })
    }

    /// A store in the S3-compatible bucket `config` names. Nothing is asked of the server
    /// here: a bucket that cannot be reached fails the first read or write.
    pub fn s3(config: &S3Config) -> Result<Self, RegistryError> {
        let (bucket, prefix) = config.bucket_and_prefix()?;
        // `If-None-Match: *` makes create-only writes atomic on AWS S3 and on compatible
        // servers that support it.
        // A server that cannot be reached fails a call's first load within seconds (a clear
        // 503) rather than after minutes of retries.
        let retry = RetryConfig {
            max_retries: S3_MAX_RETRIES,
            retry_timeout: S3_RETRY_TIMEOUT,
            ..RetryConfig::default()
        };
        // Set key by key: replacing the client options would drop those read from the
        // environment (`AWS_ALLOW_HTTP`, ...).
        let seconds = |duration: Duration| format!("{}s", duration.as_secs());
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_retry(retry)
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                seconds(S3_CONNECT_TIMEOUT),
            )
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
                seconds(S3_REQUEST_TIMEOUT),
            );
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(region) = &config.region {
            builder = builder.with_region(region);
        }
        if config.allow_http {
            builder = builder.with_allow_http(true);
        }
        if let Some(credentials) = &config.credentials {
            builder = builder
                .with_access_key_id(&credentials.access_key_id)
                .with_secret_access_key(&credentials.secret_access_key);
        }
        let store = builder
            .build()
            .map_err(|err| RegistryError::InvalidObjectStore {
                location: config.url.clone(),
                reason: err.to_string(),
            })?;
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            Arc::new(store)
        } else {
            Arc::new(PrefixStore::new(store, prefix))
        };
        Ok(Self {
            store,
            location: config.url.clone(),
        })
    }

    /// The underlying object store.
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Where the store is (a directory or an `s3://` URL), for messages.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Key of the bundle blob with content hash `hash`.
    pub fn bundle_key(hash: &ContentHash) -> String {
        format!("bundles/{}.tar.zst", hash.hex())
    }

    /// Key of the detached signature `signature`.
    pub fn signature_key(signature: &[u8]) -> String {
        format!("signatures/{}.sig", hex::encode(Sha256::digest(signature)))
    }

    /// Stores a bundle (create-only; the same bytes stored again are no change). Returns its
    /// key.
    pub async fn put_bundle(
        &self,
        hash: &ContentHash,
        bundle: &[u8],
    ) -> Result<String, RegistryError> {
        let key = Self::bundle_key(hash);
        self.create(&key, bundle).await?;
        Ok(key)
    }

    /// Stores a detached signature (create-only). Returns its key.
    pub async fn put_signature(&self, signature: &[u8]) -> Result<String, RegistryError> {
        let key = Self::signature_key(signature);
        self.create(&key, signature).await?;
        Ok(key)
    }

    /// Writes `bytes` at `key` unless an object is there already. Keys are content
    /// addresses, so an object already there holds the same bytes (reads check it).
    async fn create(&self, key: &str, bytes: &[u8]) -> Result<(), RegistryError> {
        let path = ObjectPath::from(key);
        let create = PutOptions::from(PutMode::Create);
        match self
            .store
            .put_opts(&path, PutPayload::from(bytes.to_vec()), create)
            .await
        {
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
            // A server without conditional writes: ask first, then write. Two writers of
            // one key write the same bytes, so the race is harmless.
            Err(object_store::Error::NotImplemented) => match self.store.head(&path).await {
                Ok(_) => Ok(()),
                Err(object_store::Error::NotFound { .. }) => {
                    self.store
                        .put(&path, PutPayload::from(bytes.to_vec()))
                        .await?;
                    Ok(())
                }
                Err(err) => Err(err.into()),
            },
            Err(err) => Err(err.into()),
        }
    }

    /// Reads the bundle of content hash `hash` stored at `key`, checked against the hash.
    pub async fn read_bundle(
        &self,
        hash: &ContentHash,
        key: &str,
    ) -> Result<Vec<u8>, RegistryError> {
        let bytes = self.read(hash, key).await?;
        let actual = ContentHash::of(&bytes);
        if &actual != hash {
            return Err(RegistryError::ObjectMismatch {
                key: self.full_name(key),
                expected: hash.hex(),
                actual: actual.hex(),
            });
        }
        Ok(bytes)
    }

    /// Reads the signature of the bundle `hash` stored at `key`, checked against the hash
    /// its key names (keys of earlier versions name none).
    pub async fn read_signature(
        &self,
        hash: &ContentHash,
        key: &str,
    ) -> Result<Vec<u8>, RegistryError> {
        let bytes = self.read(hash, key).await?;
        if let Some(expected) = key
            .strip_prefix("signatures/")
            .and_then(|name| name.strip_suffix(".sig"))
        {
            let actual = hex::encode(Sha256::digest(&bytes));
            if actual != expected {
                return Err(RegistryError::ObjectMismatch {
                    key: self.full_name(key),
                    expected: expected.to_owned(),
                    actual,
                });
            }
        }
        Ok(bytes)
    }

    /// `key` with the store's location before it, for messages.
    fn full_name(&self, key: &str) -> String {
        format!("{}/{key}", self.location.trim_end_matches('/'))
    }

    async fn read(&self, hash: &ContentHash, key: &str) -> Result<Vec<u8>, RegistryError> {
        let path = ObjectPath::from(key);
        let result = match self.store.get(&path).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(RegistryError::BundleMissing {
                    hash: hash.to_string(),
                    key: key.to_owned(),
                });
            }
            Err(err) => return Err(err.into()),
        };
        Ok(result.bytes().await?.to_vec())
    }

    /// Checks that the store answers: lists at most one key.
    pub async fn check_reachable(&self) -> Result<(), RegistryError> {
        use futures::StreamExt as _;
        let mut listing = self.store.list(Some(&ObjectPath::from("bundles")));
        match listing.next().await {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(err)) => Err(err.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_locations_name_a_bucket_and_an_optional_prefix() {
        let parts = |url: &str| {
            S3Config::new(url)
                .bucket_and_prefix()
                .map(|(b, p)| (b.to_owned(), p.to_owned()))
        };
        assert_eq!(parts("s3://b").unwrap(), ("b".into(), "".into()));
        assert_eq!(parts("s3://b/").unwrap(), ("b".into(), "".into()));
        assert_eq!(
            parts("s3://b/platform/prod/").unwrap(),
            ("b".into(), "platform/prod".into())
        );
        for bad in [
            "b/prefix",
            "s3:///prefix",
            "s3://b/a/../c",
            "s3://b/a//c",
            "gs://b",
        ] {
            let err = parts(bad).unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[tokio::test]
    async fn objects_are_written_once_and_checked_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = BundleStore::local(dir.path()).unwrap();
        let bundle = b"bundle bytes".to_vec();
        let hash = ContentHash::of(&bundle);
        let key = store.put_bundle(&hash, &bundle).await.unwrap();
        assert_eq!(key, BundleStore::bundle_key(&hash));
        // Again: no change, no error.
        store.put_bundle(&hash, &bundle).await.unwrap();
        assert_eq!(store.read_bundle(&hash, &key).await.unwrap(), bundle);
        let sig_key = store.put_signature(b"sig").await.unwrap();
        assert!(sig_key.starts_with("signatures/"), "{sig_key}");
        assert_eq!(store.read_signature(&hash, &sig_key).await.unwrap(), b"sig");

        // Substituted behind the registry's back: refused, naming the key.
        let raw = store.inner();
        raw.put(
            &ObjectPath::from(key.as_str()),
            PutPayload::from(b"evil".to_vec()),
        )
        .await
        .unwrap();
        let err = store.read_bundle(&hash, &key).await.unwrap_err();
        assert!(matches!(err, RegistryError::ObjectMismatch { .. }), "{err}");
        assert!(err.to_string().contains(&key), "{err}");
        raw.put(
            &ObjectPath::from(sig_key.as_str()),
            PutPayload::from(b"other".to_vec()),
        )
        .await
        .unwrap();
        let err = store.read_signature(&hash, &sig_key).await.unwrap_err();
        assert!(matches!(err, RegistryError::ObjectMismatch { .. }), "{err}");
        // Missing: named as such.
        let other = ContentHash::of(b"never stored");
        let err = store
            .read_bundle(&other, &BundleStore::bundle_key(&other))
            .await
            .unwrap_err();
        assert!(matches!(err, RegistryError::BundleMissing { .. }), "{err}");
        store.check_reachable().await.unwrap();
    }

    #[tokio::test]
    async fn an_s3_bucket_holds_the_objects_under_its_prefix_written_once_and_checked() {
        use futures::StreamExt as _;
        use palisade_bundle::signing::{SigningKey, TrustBundle};

        use crate::test_support::{EMPTY_COMPONENT, bundle, manifest};

        let Some(mut server) = crate::testing::S3Server::start("palisade-registry") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let objects = ObjectStoreConfig::S3(server.config("platform/a"));
        let registry = crate::testing::open_with_objects(dir.path(), objects).await;
        let key = SigningKey::generate().unwrap();
        let trust = TrustBundle::from_keys(vec![key.public_key().clone()]).unwrap();
        registry.trust_key(key.public_key()).await.unwrap();
        let bytes = bundle(
            &manifest("com.example.s3", "1.0.0", serde_json::json!({})),
            EMPTY_COMPONENT,
        );
        let signature = key.sign(&bytes).unwrap();
        let published = registry.publish(&bytes, &signature, &trust).await.unwrap();
        let hash = published.content_hash;
        assert_eq!(
            registry.bundle_bytes(&hash).await.unwrap(),
            (bytes.clone(), signature.clone())
        );

        // In the bucket, under the prefix.
        let whole = BundleStore::s3(&server.config("")).unwrap();
        let keys: Vec<String> = whole
            .inner()
            .list(None)
            .map(|meta| meta.unwrap().location.to_string())
            .collect()
            .await;
        let bundle_key = format!("platform/a/bundles/{}.tar.zst", hash.hex());
        assert!(keys.contains(&bundle_key), "{keys:?}");
        assert!(
            keys.iter().any(|k| k.starts_with("platform/a/signatures/")),
            "{keys:?}"
        );

        // Create-only: the server refuses a second write of a key, and the object stays.
        let path = ObjectPath::from(bundle_key.as_str());
        let again = whole
            .inner()
            .put_opts(
                &path,
                PutPayload::from(b"other".to_vec()),
                PutOptions::from(PutMode::Create),
            )
            .await;
        assert!(
            matches!(again, Err(object_store::Error::AlreadyExists { .. })),
            "{again:?}"
        );
        assert_eq!(registry.bundle_bytes(&hash).await.unwrap().0, bytes);

        // Substituted behind the registry's back: refused with the key named.
        whole
            .inner()
            .put(&path, PutPayload::from(b"evil".to_vec()))
            .await
            .unwrap();
        let err = registry.bundle_bytes(&hash).await.unwrap_err();
        assert!(matches!(err, RegistryError::ObjectMismatch { .. }), "{err}");
        assert!(err.to_string().contains(&bundle_key), "{err}");
        registry.objects().check_reachable().await.unwrap();

        // The server gone: an object-store error, within seconds.
        server.stop();
        let started = std::time::Instant::now();
        let err = registry.objects().check_reachable().await.unwrap_err();
        assert!(matches!(err, RegistryError::ObjectStore(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(20));
    }
}
