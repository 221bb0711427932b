//! The keys that caller tokens may be signed with: operator-configured PEM keys and
//! secrets, and the keys of a JWKS file, each bound to one algorithm.

use std::path::{Path, PathBuf};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// Shortest HS256 secret accepted: 256 bits, as RFC 7518 §3.2 asks.
pub const MIN_HS256_SECRET_BYTES: usize = 32;

/// A signature algorithm accepted for caller tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallerKeyAlgorithm {
    /// Ed25519 (`EdDSA`); key: SPKI PEM.
    EdDsa,
    /// ECDSA P-256 with SHA-256 (`ES256`); key: SPKI PEM.
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (`RS256`); key: SPKI or PKCS#1 PEM.
    Rs256,
    /// HMAC with SHA-256 (`HS256`); key: a shared secret of at least 32 bytes.
    Hs256,
}

impl CallerKeyAlgorithm {
    /// The JOSE name (`EdDSA`, `ES256`, `RS256`, `HS256`).
    pub fn as_str(self) -> &'static str {
        match self {
            CallerKeyAlgorithm::EdDsa => "EdDSA",
            CallerKeyAlgorithm::Es256 => "ES256",
            CallerKeyAlgorithm::Rs256 => "RS256",
            CallerKeyAlgorithm::Hs256 => "HS256",
        }
    }

    fn jwt(self) -> Algorithm {
        match self {
            CallerKeyAlgorithm::EdDsa => Algorithm::EdDSA,
            CallerKeyAlgorithm::Es256 => Algorithm::ES256,
            CallerKeyAlgorithm::Rs256 => Algorithm::RS256,
            CallerKeyAlgorithm::Hs256 => Algorithm::HS256,
        }
    }
}

impl std::fmt::Display for CallerKeyAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for CallerKeyAlgorithm {
    type Err = KeyError;

    /// Parses a JOSE name, case-insensitively.
    fn from_str(name: &str) -> Result<Self, KeyError> {
        [
            CallerKeyAlgorithm::EdDsa,
            CallerKeyAlgorithm::Es256,
            CallerKeyAlgorithm::Rs256,
            CallerKeyAlgorithm::Hs256,
        ]
        .into_iter()
        .find(|alg| alg.as_str().eq_ignore_ascii_case(name))
        .ok_or_else(|| KeyError::UnknownAlgorithm(name.to_owned()))
    }
}

/// One operator-configured verification key.
#[derive(Clone)]
pub struct CallerKey {
    /// Key id matched against a token's `kid` header; `None` matches tokens without one
    /// (and is tried for them alongside the other keys of the token's algorithm).
    pub kid: Option<String>,
    /// The algorithm this key verifies; tokens of another algorithm never use it.
    pub algorithm: CallerKeyAlgorithm,
    /// PEM text for EdDSA, ES256 and RS256; the raw shared secret for HS256.
    pub material: Vec<u8>,
}

impl CallerKey {
    /// A public key in PEM for `algorithm` (EdDSA, ES256 or RS256).
    pub fn pem(algorithm: CallerKeyAlgorithm, pem: impl Into<String>) -> Self {
        CallerKey {
            kid: None,
            algorithm,
            material: pem.into().into_bytes(),
        }
    }

    /// An Ed25519 public key, SPKI PEM.
    pub fn eddsa_pem(pem: impl Into<String>) -> Self {
        Self::pem(CallerKeyAlgorithm::EdDsa, pem)
    }

    /// An HS256 shared secret (at least [`MIN_HS256_SECRET_BYTES`] bytes).
    pub fn hs256_secret(secret: impl Into<Vec<u8>>) -> Self {
        CallerKey {
            kid: None,
            algorithm: CallerKeyAlgorithm::Hs256,
            material: secret.into(),
        }
    }

    /// The same key, selected by `kid`.
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into());
        self
    }
}

impl std::fmt::Debug for CallerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// Why the verification keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Neither a key nor a JWKS file with a usable key is configured.
    #[error("no verification key configured (keys is empty and jwks_path has no usable key)")]
    NoKeys,
    /// An algorithm name is not one of EdDSA, ES256, RS256, HS256.
    #[error("unsupported key algorithm `{0}` (expected EdDSA, ES256, RS256 or HS256)")]
    UnknownAlgorithm(String),
    /// A configured key could not be read.
    #[error("keys[{index}] ({algorithm}): {source}")]
    Pem {
        /// Position in `caller_auth.keys`.
        index: usize,
        /// The key's algorithm.
        algorithm: CallerKeyAlgorithm,
        /// What the parser said.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// An HS256 secret is too short.
    #[error(
        "keys[{index}] (HS256): the secret has {len} bytes, at least {MIN_HS256_SECRET_BYTES} are required"
    )]
    ShortSecret {
        /// Position in `caller_auth.keys`.
        index: usize,
        /// The secret's length.
        len: usize,
    },
    /// The JWKS file could not be read.
    #[error("jwks_path {path}: {source}")]
    JwksRead {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The JWKS file is not a JSON object with a `keys` array.
    #[error("jwks_path {path}: not a JWK set: {reason}")]
    JwksFormat {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// A key ready to verify tokens of exactly one algorithm.
pub(crate) struct VerifyingKey {
    pub(crate) kid: Option<String>,
    pub(crate) algorithm: Algorithm,
    pub(crate) key: DecodingKey,
}

/// All keys caller tokens may be verified with.
pub struct KeySet {
    keys: Vec<VerifyingKey>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| (&k.kid, k.algorithm)))
            .finish()
    }
}

impl KeySet {
    /// Reads the configured keys and, when given, the JWKS file.
    pub fn load(keys: &[CallerKey], jwks_path: Option<&Path>) -> Result<Self, KeyError> {
        let mut loaded = Vec::new();
        for (index, key) in keys.iter().enumerate() {
            loaded.push(configured_key(index, key)?);
        }
        if let Some(path) = jwks_path {
            let text = std::fs::read(path).map_err(|source| KeyError::JwksRead {
                path: path.to_owned(),
                source,
            })?;
            loaded.extend(jwks_keys(&text, path)?);
        }
        if loaded.is_empty() {
            return Err(KeyError::NoKeys);
        }
        Ok(KeySet { keys: loaded })
    }

    /// How many keys are usable.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is usable (never true for a loaded set).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys to try for a token signed with `algorithm`: those with its `kid` when it
    /// has one, otherwise every key of the algorithm.
    pub(crate) fn candidates<'a>(
        &'a self,
        algorithm: Algorithm,
        kid: Option<&'a str>,
    ) -> impl Iterator<Item = &'a VerifyingKey> + 'a {
        self.keys.iter().filter(move |key| {
            key.algorithm == algorithm && (kid.is_none() || key.kid.as_deref() == kid)
        })
    }
}

fn configured_key(index: usize, key: &CallerKey) -> Result<VerifyingKey, KeyError> {
    let pem_error = |source| KeyError::Pem {
        index,
        algorithm: key.algorithm,
        source,
    };
    let decoding = match key.algorithm {
        CallerKeyAlgorithm::EdDsa => DecodingKey::from_ed_pem(&key.material).map_err(pem_error)?,
        CallerKeyAlgorithm::Es256 => DecodingKey::from_ec_pem(&key.material).map_err(pem_error)?,
        CallerKeyAlgorithm::Rs256 => DecodingKey::from_rsa_pem(&key.material).map_err(pem_error)?,
        CallerKeyAlgorithm::Hs256 => {
            if key.material.len() < MIN_HS256_SECRET_BYTES {
                return Err(KeyError::ShortSecret {
                    index,
                    len: key.material.len(),
                });
            }
            DecodingKey::from_secret(&key.material)
        }
    };
    Ok(VerifyingKey {
        kid: key.kid.clone(),
        algorithm: key.algorithm.jwt(),
        key: decoding,
    })
}

/// The usable keys of a JWK set. Keys for encryption, of an unsupported type or
/// algorithm, or that do not parse are skipped (and logged), so that an identity
/// provider's set may carry keys the gateway has no use for.
fn jwks_keys(text: &[u8], path: &Path) -> Result<Vec<VerifyingKey>, KeyError> {
    let format = |reason: String| KeyError::JwksFormat {
        path: path.to_owned(),
        reason,
    };
    let set: serde_json::Value =
        serde_json::from_slice(text).map_err(|err| format(err.to_string()))?;
    let entries = set
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| format("no `keys` array".to_owned()))?;
    let mut keys = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        match jwk_key(entry) {
            Ok(key) => keys.push(key),
            Err(reason) => tracing::warn!(
                path = %path.display(),
                index,
                reason,
                "JWKS key skipped"
            ),
        }
    }
    Ok(keys)
}

fn jwk_key(entry: &serde_json::Value) -> Result<VerifyingKey, String> {
    let jwk: Jwk = serde_json::from_value(entry.clone()).map_err(|err| err.to_string())?;
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return Err("not a signature key (`use` is not `sig`)".to_owned());
    }
    let inferred = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        AlgorithmParameters::OctetKey(_) => Algorithm::HS256,
        _ => return Err("unsupported key type or curve".to_owned()),
    };
    let algorithm = match jwk.common.key_algorithm {
        None => inferred,
        Some(KeyAlgorithm::RS256) => Algorithm::RS256,
        Some(KeyAlgorithm::ES256) => Algorithm::ES256,
        Some(KeyAlgorithm::EdDSA) => Algorithm::EdDSA,
        Some(KeyAlgorithm::HS256) => Algorithm::HS256,
        Some(other) => return Err(format!("unsupported `alg` {other:?}")),
    };
    if algorithm != inferred {
        return Err(format!("`alg` {algorithm:?} does not fit the key type"));
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|err| err.to_string())?;
    if algorithm == Algorithm::HS256 && key_len_too_short(&jwk) {
        return Err(format!(
            "HS256 secret shorter than {MIN_HS256_SECRET_BYTES} bytes"
        ));
    }
    Ok(VerifyingKey {
        kid: jwk.common.key_id.clone(),
        algorithm,
        key,
    })
}

fn key_len_too_short(jwk: &Jwk) -> bool {
    use base64::Engine as _;
    match &jwk.algorithm {
        AlgorithmParameters::OctetKey(oct) => base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(oct.value.trim_end_matches('='))
            .map(|secret| secret.len() < MIN_HS256_SECRET_BYTES)
            .unwrap_or(true),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn algorithm_names_parse() {
        assert_eq!(
            "es256".parse::<CallerKeyAlgorithm>().unwrap(),
            CallerKeyAlgorithm::Es256
        );
        assert_eq!(
            "EdDSA".parse::<CallerKeyAlgorithm>().unwrap(),
            CallerKeyAlgorithm::EdDsa
        );
        let err = "PS512".parse::<CallerKeyAlgorithm>().unwrap_err();
        assert!(err.to_string().contains("PS512"), "{err}");
    }

    #[test]
    fn no_keys_is_an_error() {
        assert!(matches!(KeySet::load(&[], None), Err(KeyError::NoKeys)));
    }

    #[test]
    fn bad_pem_and_short_secret_name_the_key() {
        let err =
            KeySet::load(&[CallerKey::pem(CallerKeyAlgorithm::Es256, "junk")], None).unwrap_err();
        assert!(err.to_string().contains("keys[0] (ES256)"), "{err}");
        let err = KeySet::load(&[CallerKey::hs256_secret(b"short".to_vec())], None).unwrap_err();
        assert!(
            matches!(err, KeyError::ShortSecret { index: 0, len: 5 }),
            "{err}"
        );
    }

    #[test]
    fn jwks_file_keys_are_loaded_and_unusable_ones_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            r#"{"keys":[
                {"kty":"oct","kid":"h1","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldC0"},
                {"kty":"oct","kid":"short","k":"c2hvcnQ"},
                {"kty":"OKP","crv":"Ed25519","kid":"e1","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
                {"kty":"OKP","crv":"Ed25519","use":"enc","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
                {"kty":"weird"}
            ]}"#,
        );
        let set = KeySet::load(&[], Some(&path)).unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set.candidates(Algorithm::HS256, Some("h1")).count(), 1);
        assert_eq!(set.candidates(Algorithm::HS256, Some("e1")).count(), 0);
        assert_eq!(set.candidates(Algorithm::EdDSA, None).count(), 1);
    }

    #[test]
    fn bad_jwks_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.json");
        assert!(matches!(
            KeySet::load(&[], Some(&missing)),
            Err(KeyError::JwksRead { .. })
        ));
        let path = write(&dir, r#"{"nokeys":[]}"#);
        let err = KeySet::load(&[], Some(&path)).unwrap_err();
        assert!(err.to_string().contains("`keys`"), "{err}");
        let path = write(&dir, r#"{"keys":[]}"#);
        assert!(matches!(
            KeySet::load(&[], Some(&path)),
            Err(KeyError::NoKeys)
        ));
    }
}
