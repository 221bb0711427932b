//! The layout of `--data-dir`: the embedded registry (SQLite file and object store) and
//! the keys `up` generates on first start. With `--database-url`, the
//! registry's database is that server instead of the SQLite file; with `--object-store
//! s3://…`, the objects are in that bucket instead of `objects/`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use palisade_protocol::ServiceKeyPair;
use palisade_registry::{ObjectStoreConfig, Registry, RegistryConfig, S3Config};
use palisade_runtime::{ArtifactKey, ArtifactSigningKey, ArtifactVerifyingKey, Artifacts};

/// Issuer and audience of the development caller tokens `palisade token` mints.
pub(crate) const DEV_ISSUER: &str = "palisade-dev";
/// See [`DEV_ISSUER`].
pub(crate) const DEV_AUDIENCE: &str = "palisade";

/// How long a process that finds half a key pair waits for the other half, which another
/// process starting at the same time may be writing.
const HALF_PAIR_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Paths inside the data directory.
#[derive(Debug, Clone)]
pub(crate) struct DataDir {
    root: PathBuf,
    operator: std::sync::Arc<crate::config::OperatorConfig>,
    /// The registry database, when not the SQLite file in the directory.
    database_url: Option<String>,
    /// The object store (`s3://bucket/prefix`), when not `objects/` in the directory.
    object_store: Option<String>,
}

impl DataDir {
    pub(crate) fn new(root: PathBuf) -> Self {
        DataDir {
            root,
            operator: std::sync::Arc::default(),
            database_url: None,
            object_store: None,
        }
    }

    /// The same directory, with the objects at `location` (`s3://bucket/prefix`) instead
    /// of `objects/` in the directory; `None` keeps `[registry] object_store`.
    pub(crate) fn with_object_store(self, location: Option<String>) -> Self {
        DataDir {
            object_store: location,
            ..self
        }
    }

    /// The same directory, with the registry's database at `url` (any URL the registry
    /// accepts) instead of `registry.db` in the directory.
    pub(crate) fn with_database_url(self, url: Option<String>) -> Self {
        DataDir {
            database_url: url,
            ..self
        }
    }

    /// The same directory, run with the operator's configuration file.
    pub(crate) fn with_operator_config(self, operator: crate::config::OperatorConfig) -> Self {
        DataDir {
            operator: std::sync::Arc::new(operator),
            ..self
        }
    }

    /// The operator's configuration (defaults when no file was given).
    pub(crate) fn operator(&self) -> &crate::config::OperatorConfig {
        &self.operator
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Where an earlier version kept the trusted publisher keys; imported into the
    /// registry when found.
    pub(crate) fn trust_bundle(&self) -> PathBuf {
        self.root.join("trust.pem")
    }

    fn keys(&self) -> PathBuf {
        self.root.join("keys")
    }

    /// The registry: `registry.db` (or the `--database-url` database) and `objects/`.
    pub(crate) async fn registry(&self) -> Result<Registry> {
        std::fs::create_dir_all(&self.root)
            .with_context(|| format!("creating data directory {}", self.root.display()))?;
        let config = RegistryConfig {
            database_url: self
                .database_url
                .clone()
                .unwrap_or_else(|| format!("sqlite://{}", self.root.join("registry.db").display())),
            objects: self.objects()?,
        };
        let registry = Registry::open(&config)
            .await
            .with_context(|| format!("opening the registry in {}", self.root.display()))?
            .with_component_limits(self.operator.runtime.component_limits())
            .with_trust_cache_ttl(std::time::Duration::from_millis(
                self.operator.registry.trust_cache_ttl_ms,
            ));
        self.import_legacy_trust_file(&registry).await?;
        Ok(registry)
    }

    /// Where the objects are: `--object-store`, else `[registry] object_store`, else
    /// `objects/` in the directory.
    fn objects(&self) -> Result<ObjectStoreConfig> {
        let section = &self.operator.registry;
        let location = self.object_store.as_ref().or(section.object_store.as_ref());
        match location {
            None => Ok(ObjectStoreConfig::Local(self.root.join("objects"))),
            Some(url) if url.starts_with("s3://") => Ok(ObjectStoreConfig::S3(S3Config {
                url: url.clone(),
                endpoint: section.s3_endpoint.clone(),
                region: section.s3_region.clone(),
                allow_http: section.s3_allow_http,
                credentials: None,
            })),
            Some(other) => anyhow::bail!(
                "unsupported object store `{other}`: use `s3://bucket` or `s3://bucket/prefix` \
                 (leave it unset for `objects/` in the data directory)"
            ),
        }
    }

    /// Imports the keys of a `trust.pem` left in the data directory by an earlier version
    /// (which kept the trust set in that file) into the registry's trust set, then renames
    /// the file to `trust.pem.imported`, so that a key removed later is not imported again.
    async fn import_legacy_trust_file(&self, registry: &Registry) -> Result<()> {
        let path = self.trust_bundle();
        if !path.exists() {
            return Ok(());
        }
        let trust = palisade_bundle::TrustBundle::load(&path)
            .with_context(|| format!("reading the trust bundle {}", path.display()))?;
        for key in trust.keys() {
            registry
                .trust_key(key)
                .await
                .with_context(|| format!("importing {}", path.display()))?;
        }
        match std::fs::rename(&path, path.with_extension("pem.imported")) {
            Ok(()) => {}
            // Another process of this data directory imported it at the same time.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("renaming {}", path.display())),
        }
        tracing::info!(
            keys = trust.len(),
            file = %path.display(),
            "publisher keys imported into the registry's trust set; manage them with `palisade trust`"
        );
        Ok(())
    }

    /// The Ed25519 key pair the gateway signs service tokens with (generated once).
    pub(crate) fn service_keys(&self) -> Result<ServiceKeyPair> {
        self.ed25519_pair("service")
    }

    /// The public half of the service key pair, which is all a runner needs: a data
    /// directory given only `keys/service.pub.pem` (a runner's) uses it as it is; one with
    /// neither half gets a new pair, as for [`DataDir::service_keys`].
    pub(crate) fn service_public_key(&self) -> Result<String> {
        let public = self.keys().join("service.pub.pem");
        let private = self.keys().join("service.key.pem");
        if public.exists() && !private.exists() {
            return read_string(&public);
        }
        Ok(self.service_keys()?.public_pem)
    }

    /// The Ed25519 key pair that signs development caller tokens (generated once).
    pub(crate) fn caller_issuer_keys(&self) -> Result<ServiceKeyPair> {
        self.ed25519_pair("caller-issuer")
    }

    /// The key that seals this data directory's own artifact cache (32 random bytes,
    /// generated once). It never leaves the directory: no other runner needs it.
    pub(crate) fn artifact_key(&self) -> Result<ArtifactKey> {
        let path = self.keys().join("artifact.key");
        if path.exists() {
            let text = read_string(&path)?;
            let bytes = hex::decode(text.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .with_context(|| format!("{} must hold 64 hex digits", path.display()))?;
            return Ok(ArtifactKey::new(bytes));
        }
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        write_private(&path, &hex::encode(bytes))?;
        Ok(ArtifactKey::new(bytes))
    }

    /// Path of the operator's artifact signing key (private half).
    pub(crate) fn artifact_signing_key_path(&self) -> PathBuf {
        self.keys().join("artifact-signing.key.pem")
    }

    /// Path of the artifact signing key's public half, which runners trust.
    pub(crate) fn artifact_verifying_key_path(&self) -> PathBuf {
        self.keys().join("artifact-signing.pub.pem")
    }

    /// The operator's key that signs artifacts for the shared store, generated with its
    /// public half on first use. Only the publish step reads it; runners never do.
    pub(crate) fn artifact_signing_key(&self) -> Result<ArtifactSigningKey> {
        let private = self.artifact_signing_key_path();
        let public = self.artifact_verifying_key_path();
        if private.exists() {
            let key = ArtifactSigningKey::from_pem(&read_string(&private)?)
                .with_context(|| format!("reading {}", private.display()))?;
            if !public.exists() {
                write_file(&public, key.verifying_key().to_pem()?.as_bytes())?;
            }
            return Ok(key);
        }
        let key = ArtifactSigningKey::generate();
        write_private(&private, &key.to_pem()?)?;
        write_file(&public, key.verifying_key().to_pem()?.as_bytes())?;
        tracing::info!(path = %private.display(), fingerprint = %key.verifying_key().fingerprint(), "generated the artifact signing key");
        Ok(key)
    }

    /// The public key whose signatures make shared artifacts loadable; `None` (shared
    /// artifacts are never loaded) when the data directory has none.
    pub(crate) fn artifact_verifying_key(&self) -> Result<Option<ArtifactVerifyingKey>> {
        let path = self.artifact_verifying_key_path();
        if !path.exists() {
            return Ok(None);
        }
        ArtifactVerifyingKey::from_pem(&read_string(&path)?)
            .map(Some)
            .with_context(|| format!("reading {}", path.display()))
    }

    /// Artifact caching for a runner on this data directory: its own `cache/` sealed with
    /// [`Self::artifact_key`], and the registry's object store for artifacts signed by the
    /// key of [`Self::artifact_verifying_key`]. A runner signs nothing and never writes
    /// to the shared store.
    ///
    /// Creates `cache/artifacts/` now, so that a process that cannot write its cache says
    /// so at start rather than at every first load.
    pub(crate) fn artifacts(&self, registry: &Registry) -> Result<Artifacts> {
        let cache = self.root.join("cache");
        let dir = cache.join("artifacts");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating the artifact cache {}", dir.display()))?;
        Ok(Artifacts {
            local_dir: Some(cache),
            remote: Some(palisade_runner::artifact_store(registry)),
            key: self.artifact_key()?,
            trusted: self.artifact_verifying_key()?,
            signer: None,
        })
    }

    /// Artifact caching for the publish step (`publish --precompile`): as a runner's,
    /// plus the signing key, so that the artifact it stores in the shared store is
    /// loaded by every runner that trusts the key.
    pub(crate) fn signing_artifacts(&self, registry: &Registry) -> Result<Artifacts> {
        let signer = self.artifact_signing_key()?;
        Ok(Artifacts {
            trusted: Some(signer.verifying_key()),
            signer: Some(signer),
            ..self.artifacts(registry)?
        })
    }

    /// A publisher signing key (ECDSA P-256) kept in the data directory as
    /// `keys/<name>.key.pem`, with its public half beside it; generated on first use.
    /// `up --demo` and `dev` sign what they publish with one.
    pub(crate) fn publisher_key(&self, name: &str) -> Result<palisade_bundle::SigningKey> {
        let path = self.keys().join(format!("{name}.key.pem"));
        if path.exists() {
            return palisade_bundle::SigningKey::from_pem(&read_bytes(&path)?)
                .with_context(|| format!("reading {}", path.display()));
        }
        let key = palisade_bundle::SigningKey::generate()?;
        write_private(&path, &key.to_pem()?)?;
        write_file(
            &self.keys().join(format!("{name}.pub.pem")),
            key.public_key_pem()?.as_bytes(),
        )?;
        Ok(key)
    }

    fn ed25519_pair(&self, name: &str) -> Result<ServiceKeyPair> {
        let private = self.keys().join(format!("{name}.key.pem"));
        let public = self.keys().join(format!("{name}.pub.pem"));
        // Half a pair may be another process writing the pair right now (several processes
        // started at once on a new directory): give it a moment to write the other half.
        let deadline = std::time::Instant::now() + HALF_PAIR_WAIT;
        while private.exists() != public.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        match (private.exists(), public.exists()) {
            (true, true) => {
                return Ok(ServiceKeyPair {
                    private_pem: read_string(&private)?,
                    public_pem: read_string(&public)?,
                });
            }
            (false, false) => {}
            // Never replace half a pair: the other half may be in use elsewhere.
            (true, false) | (false, true) => {
                let (there, missing) = if private.exists() {
                    (&private, &public)
                } else {
                    (&public, &private)
                };
                anyhow::bail!(
                    "{} exists but {} does not: restore it, or remove both to make a new pair",
                    there.display(),
                    missing.display()
                );
            }
        }
        let pair = ServiceKeyPair::generate().context("generating an Ed25519 key pair")?;
        write_private(&private, &pair.private_pem)?;
        write_file(&public, pair.public_pem.as_bytes())?;
        Ok(pair)
    }
}

pub(crate) fn read_string(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

pub(crate) fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Writes a private key readable by the owner only, from its first byte: the key goes into
/// a new file created with mode 0600 beside `path`, which then replaces `path`. A file
/// already at `path` (whatever its mode, and any handle open on it) never sees the key.
pub(crate) fn write_private(path: &Path, pem: &str) -> Result<()> {
    use std::io::Write as _;
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            dir
        }
        None => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".palisade-key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o600));
    }
    let mut file = builder
        .tempfile_in(dir)
        .with_context(|| format!("creating a key file in {}", dir.display()))?;
    file.write_all(pem.as_bytes())
        .and_then(|()| file.as_file().sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    file.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A key never lands in a file that someone else could read: not in a world-readable
    /// file already at the path, nor through a handle opened on it beforehand.
    #[cfg(unix)]
    #[test]
    fn private_keys_are_owner_only_from_the_first_byte() {
        use std::io::Read as _;
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/runner.key.pem");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut watcher = std::fs::File::open(&path).unwrap();

        write_private(&path, "-----BEGIN PRIVATE KEY-----").unwrap();

        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "-----BEGIN PRIVATE KEY-----"
        );
        let mut seen = String::new();
        watcher.read_to_string(&mut seen).unwrap();
        assert_eq!(seen, "old", "a handle opened before the write saw the key");
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["runner.key.pem"]);
    }

    /// A runner's data directory may hold the service public key alone; a directory with
    /// half a pair is refused rather than given a new pair over the half it has.
    #[test]
    fn half_a_key_pair_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let full = DataDir::new(dir.path().join("full"));
        let pair = full.service_keys().unwrap();

        let runner = DataDir::new(dir.path().join("runner"));
        write_file(
            &runner.keys().join("service.pub.pem"),
            pair.public_pem.as_bytes(),
        )
        .unwrap();
        assert_eq!(runner.service_public_key().unwrap(), pair.public_pem);
        let err = runner.service_keys().unwrap_err().to_string();
        assert!(err.contains("service.pub.pem exists but"), "{err}");
        assert_eq!(
            read_string(&runner.keys().join("service.pub.pem")).unwrap(),
            pair.public_pem
        );
        assert!(!runner.keys().join("service.key.pem").exists());

        // A fresh directory still gets a pair, and a full one keeps it.
        let fresh = DataDir::new(dir.path().join("fresh"));
        let made = fresh.service_public_key().unwrap();
        assert_eq!(fresh.service_keys().unwrap().public_pem, made);
        assert_eq!(full.service_public_key().unwrap(), pair.public_pem);
    }
}
