//! Publisher signatures over bundle bytes: ECDSA P-256 with SHA-256 and ASN.1 DER
//! signatures (what `cosign sign-blob` and `openssl dgst -sha256 -sign` produce), and
//! Ed25519 for verification. Keys are PEM: PKCS#8 for private keys, SPKI for public keys.

mod pem;
mod trust;

use std::fmt;
use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use sigstore::crypto::signing_key::SigStoreSigner;
use sigstore::crypto::signing_key::ecdsa::ECDSAKeys;
use sigstore::crypto::{CosignVerificationKey, Signature, SigningScheme};

use crate::hash::ContentHash;

pub use trust::TrustBundle;

const PUBLIC_KEY_LABEL: &str = "PUBLIC KEY";
const PRIVATE_KEY_LABEL: &str = "PRIVATE KEY";

/// Why a key could not be used or a signature did not verify.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// The system could not generate a key.
    #[error("cannot generate a signing key: {0}")]
    Generate(String),
    /// A private key is malformed or of the wrong kind.
    #[error("invalid private key: {0}")]
    PrivateKey(String),
    /// A public key is malformed.
    #[error("invalid public key: {0}")]
    PublicKey(String),
    /// A well-formed key of an algorithm this platform does not accept.
    #[error("unsupported key type {0}; only ECDSA P-256 and Ed25519 keys are accepted")]
    UnsupportedKey(String),
    /// Producing a signature failed.
    #[error("cannot sign: {0}")]
    Sign(String),
    /// The signature is malformed or no trusted key verifies it.
    #[error("bad signature: no trusted key verifies it")]
    BadSignature,
    /// One block of a trust bundle is not a usable public key.
    #[error("trust bundle key #{block}: {message}")]
    TrustBundleKey {
        /// 1-based position of the block in the file.
        block: usize,
        /// What is wrong with it.
        message: String,
    },
    /// The trust set holds no key, so nothing can verify.
    #[error("no publisher key is trusted; add one with `palisade trust add KEY.pub.pem`")]
    NoTrustedKeys,
    /// A trust bundle without any key.
    #[error("trust bundle holds no `-----BEGIN PUBLIC KEY-----` block")]
    EmptyTrustBundle,
    /// A key or trust bundle file could not be read.
    #[error("cannot read `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// `sha256:<hex>` of a public key's DER SubjectPublicKeyInfo; stable across PEM formatting.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyFingerprint(String);

impl KeyFingerprint {
    /// The fingerprint of the DER SubjectPublicKeyInfo `der`.
    pub fn of_der(der: &[u8]) -> Self {
        Self(ContentHash::of(der).to_string())
    }

    /// The `sha256:<hex>` text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Text that is not a key fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a key fingerprint: expected `sha256:` and 64 hex digits")]
pub struct InvalidFingerprint(pub String);

impl std::str::FromStr for KeyFingerprint {
    type Err = InvalidFingerprint;

    /// Reads `sha256:<hex>` (hex digits in either case; kept lower case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_prefix("sha256:") {
            Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Ok(Self(format!("sha256:{}", hex.to_ascii_lowercase())))
            }
            _ => Err(InvalidFingerprint(s.to_owned())),
        }
    }
}

impl fmt::Display for KeyFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Signature algorithm of a public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    /// ECDSA on P-256 with SHA-256, DER signatures.
    EcdsaP256,
    /// Ed25519 (pure), 64-byte signatures.
    Ed25519,
}

impl KeyAlgorithm {
    /// `ecdsa-p256` or `ed25519`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::EcdsaP256 => "ecdsa-p256",
            KeyAlgorithm::Ed25519 => "ed25519",
        }
    }
}

/// A publisher's public key (ECDSA P-256 or Ed25519).
#[derive(Clone)]
pub struct PublicKey {
    key: CosignVerificationKey,
    der: Vec<u8>,
    algorithm: KeyAlgorithm,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("algorithm", &self.algorithm.as_str())
            .field("fingerprint", &self.fingerprint().as_str())
            .finish()
    }
}

impl PublicKey {
    /// Reads one `-----BEGIN PUBLIC KEY-----` (SPKI) block.
    pub fn from_pem(pem_bytes: &[u8]) -> Result<Self, SigningError> {
        let text = std::str::from_utf8(pem_bytes)
            .map_err(|_| SigningError::PublicKey("the PEM text is not UTF-8".to_owned()))?;
        let mut blocks = pem::parse_blocks(text).into_iter();
        let block = match (blocks.next(), blocks.next()) {
            (Some(block), None) => block.map_err(SigningError::PublicKey)?,
            (None, _) => {
                return Err(SigningError::PublicKey(
                    "no `-----BEGIN PUBLIC KEY-----` block found".to_owned(),
                ));
            }
            (Some(_), Some(_)) => {
                return Err(SigningError::PublicKey(
                    "more than one PEM block; use a trust bundle for several keys".to_owned(),
                ));
            }
        };
        if block.label != PUBLIC_KEY_LABEL {
            return Err(SigningError::PublicKey(format!(
                "expected a `PUBLIC KEY` block, found `{}`",
                block.label
            )));
        }
        Self::from_der(&block.der)
    }

    /// Reads a DER SubjectPublicKeyInfo.
    pub fn from_der(der: &[u8]) -> Result<Self, SigningError> {
        let key = CosignVerificationKey::try_from_der(der).map_err(|e| {
            SigningError::PublicKey(format!("not a DER SubjectPublicKeyInfo key: {e}"))
        })?;
        let algorithm = match &key {
            CosignVerificationKey::ECDSA_P256_SHA256_ASN1(_) => KeyAlgorithm::EcdsaP256,
            CosignVerificationKey::ED25519(_) => KeyAlgorithm::Ed25519,
            CosignVerificationKey::ECDSA_P384_SHA384_ASN1(_) => {
                return Err(SigningError::UnsupportedKey("ECDSA P-384".to_owned()));
            }
            _ => return Err(SigningError::UnsupportedKey("RSA".to_owned())),
        };
        Ok(Self {
            key,
            der: der.to_vec(),
            algorithm,
        })
    }

    /// The key as a `-----BEGIN PUBLIC KEY-----` PEM block.
    pub fn to_pem(&self) -> String {
        pem::encode(PUBLIC_KEY_LABEL, &self.der)
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// `sha256:<hex>` of the DER SubjectPublicKeyInfo.
    pub fn fingerprint(&self) -> KeyFingerprint {
        KeyFingerprint::of_der(&self.der)
    }

    /// Verifies `signature` (raw bytes: DER for ECDSA, 64 bytes for Ed25519) over `bytes`.
    /// Use [`decode_signature`] first for base64 text.
    pub fn verify(&self, bytes: &[u8], signature: &[u8]) -> Result<(), SigningError> {
        self.key
            .verify_signature(Signature::Raw(signature), bytes)
            .map_err(|_| SigningError::BadSignature)
    }
}

/// An ECDSA P-256 private key that signs bundles.
pub struct SigningKey {
    signer: SigStoreSigner,
    public: PublicKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.public.algorithm.as_str())
            .field("fingerprint", &self.public.fingerprint().as_str())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates a fresh P-256 key from the operating system's randomness.
    pub fn generate() -> Result<SigningKey, SigningError> {
        let signer = SigningScheme::ECDSA_P256_SHA256_ASN1
            .create_signer()
            .map_err(|e| SigningError::Generate(e.to_string()))?;
        Self::from_signer(signer).map_err(|e| SigningError::Generate(e.to_string()))
    }

    /// Reads an unencrypted PKCS#8 `-----BEGIN PRIVATE KEY-----` block holding a P-256 key
    /// (e.g. from `openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8
    /// -nocrypt`).
    pub fn from_pem(pem_bytes: &[u8]) -> Result<SigningKey, SigningError> {
        let bad = |m: &str| SigningError::PrivateKey(m.to_owned());
        let text = std::str::from_utf8(pem_bytes).map_err(|_| bad("the PEM text is not UTF-8"))?;
        let mut blocks = pem::parse_blocks(text).into_iter();
        let block = match (blocks.next(), blocks.next()) {
            (Some(block), None) => block.map_err(SigningError::PrivateKey)?,
            (None, _) => return Err(bad("no `-----BEGIN PRIVATE KEY-----` block found")),
            (Some(_), Some(_)) => return Err(bad("more than one PEM block")),
        };
        match block.label.as_str() {
            PRIVATE_KEY_LABEL => {}
            "EC PRIVATE KEY" => {
                return Err(bad(
                    "a SEC1 `EC PRIVATE KEY`; convert it with `openssl pkcs8 -topk8 -nocrypt`",
                ));
            }
            label if label.contains("ENCRYPTED") => {
                return Err(bad("encrypted private keys are not supported"));
            }
            label => {
                return Err(SigningError::PrivateKey(format!(
                    "expected a `PRIVATE KEY` block, found `{label}`"
                )));
            }
        }
        let keys = ECDSAKeys::from_der(&block.der)
            .map_err(|_| bad("not an ECDSA P-256 PKCS#8 private key"))?;
        let signer = match keys {
            ECDSAKeys::P256(_) => keys
                .to_sigstore_signer()
                .map_err(|e| SigningError::PrivateKey(e.to_string()))?,
            ECDSAKeys::P384(_) => return Err(SigningError::UnsupportedKey("ECDSA P-384".into())),
        };
        Self::from_signer(signer)
    }

    fn from_signer(signer: SigStoreSigner) -> Result<SigningKey, SigningError> {
        let der = signer
            .to_sigstore_keypair()
            .and_then(|pair| pair.public_key_to_der())
            .map_err(|e| SigningError::PrivateKey(e.to_string()))?;
        let public = PublicKey::from_der(&der)?;
        Ok(Self { signer, public })
    }

    /// The private key as unencrypted PKCS#8 PEM. Store it with care.
    pub fn to_pem(&self) -> Result<String, SigningError> {
        let pem = self
            .signer
            .to_sigstore_keypair()
            .and_then(|pair| pair.private_key_to_pem())
            .map_err(|e| SigningError::PrivateKey(e.to_string()))?;
        Ok(pem.as_str().to_owned())
    }

    /// The public key as `-----BEGIN PUBLIC KEY-----` PEM.
    pub fn public_key_pem(&self) -> Result<String, SigningError> {
        Ok(self.public.to_pem())
    }

    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Signs `bytes`: ECDSA P-256 over their SHA-256, ASN.1 DER encoded.
    pub fn sign(&self, bytes: &[u8]) -> Result<Vec<u8>, SigningError> {
        self.signer
            .sign(bytes)
            .map_err(|e| SigningError::Sign(e.to_string()))
    }
}

/// Accepts a signature as raw bytes or as base64 text (what `cosign sign-blob` writes),
/// with surrounding whitespace; returns the raw bytes.
pub fn decode_signature(signature: &[u8]) -> Vec<u8> {
    let trimmed = signature.trim_ascii();
    let is_base64_text = !trimmed.is_empty()
        && trimmed
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'\r' | b'\n'));
    if is_base64_text {
        let compact: Vec<u8> = trimmed
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        if let Ok(raw) = STANDARD.decode(compact) {
            return raw;
        }
    }
    signature.to_vec()
}

#[cfg(test)]
mod tests;
