//! Sealing secret values at rest with public-key encryption, so that whoever seals a value
//! (the gateway's admin API, the CLI) cannot open it: only the runners' keyring can.
//!
//! * HPKE (RFC 9180) in base mode: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
//!   ChaCha20-Poly1305, with the `hpke` crate. Every value gets a fresh encapsulated key.
//! * [`SecretSealer`] holds one X25519 **public** key: it seals, and cannot open.
//! * [`SecretOpener`] holds the runners' keyring of X25519 **private** keys: the first is the
//!   primary (its public key seals new values), the others stay readable for rotation.
//! * The HPKE `info` names the scheme, and the associated data binds a ciphertext to its
//!   install id and secret name, so a row copied to another install or name does not open.
//! * Each sealed value records the id of the key it was sealed to: `x` + 16 hex digits of a
//!   domain-separated SHA-256 of the public key. Ids are derived, so keys need no names and
//!   an id can never point at the wrong key.
//!
//! Values written by earlier versions were sealed with XChaCha20-Poly1305 under a
//! symmetric keyring that every sealer also held ([`LegacyKeyring`], key ids `k…`). A
//! [`SecretOpener`] given that keyring still opens them, and `palisade secrets migrate`
//! re-seals them to the public key so that the symmetric keyring can be deleted.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead as _, AeadCore, KeyInit, OsRng, Payload, rand_core::RngCore};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::value::SecretValue;

type Kem = hpke::kem::X25519HkdfSha256;
type Kdf = hpke::kdf::HkdfSha256;
type Cipher = hpke::aead::ChaCha20Poly1305;
type PrivateKey = <Kem as hpke::Kem>::PrivateKey;
type PublicKey = <Kem as hpke::Kem>::PublicKey;
type EncappedKey = <Kem as hpke::Kem>::EncappedKey;

/// Length of a key (private, public, or legacy symmetric) in bytes.
pub const SECRET_KEY_BYTES: usize = 32;

/// Length of a legacy XChaCha20-Poly1305 nonce in bytes.
pub const NONCE_BYTES: usize = 24;

/// Length of an HPKE encapsulated key (X25519) in bytes, stored in the `nonce` column.
pub const ENCAPPED_KEY_BYTES: usize = 32;

/// HPKE `info`: the scheme and its version.
const HPKE_INFO: &[u8] = b"palisade:extension-secret:v2";

/// Domain separation of the associated data of HPKE values.
const AAD_CONTEXT: &[u8] = b"palisade:extension-secret:v2";

/// Domain separation of the associated data of legacy values.
const LEGACY_AAD_CONTEXT: &[u8] = b"palisade:extension-secret:v1";

/// Domain separation of public key ids.
const KEY_ID_CONTEXT: &[u8] = b"palisade:secrets-public-key-id:v2";

/// Domain separation of legacy key ids.
const LEGACY_KEY_ID_CONTEXT: &[u8] = b"palisade:secrets-key-id:v1";

/// Prefix of the ids of legacy symmetric keys.
const LEGACY_ID_PREFIX: char = 'k';

fn decode_32(text: &str) -> Result<Zeroizing<[u8; SECRET_KEY_BYTES]>, SecretKeyError> {
    let decoded = Zeroizing::new(
        STANDARD
            .decode(text.trim())
            .map_err(|_| SecretKeyError::NotBase64)?,
    );
    let bytes: [u8; SECRET_KEY_BYTES] = decoded
        .as_slice()
        .try_into()
        .map_err(|_| SecretKeyError::WrongLength { len: decoded.len() })?;
    Ok(Zeroizing::new(bytes))
}

/// The entries of a keyring text: separated by newlines, commas or spaces; `#` starts a
/// comment that runs to the end of the line.
fn entries(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or(""))
        .flat_map(|line| line.split(|c: char| c == ',' || c.is_whitespace()))
        .filter(|entry| !entry.is_empty())
}

/// Parses every entry of `text` with `parse`, naming the entry that fails.
fn parse_entries<T>(
    text: &str,
    parse: impl Fn(&str) -> Result<T, SecretKeyError>,
) -> Result<Vec<T>, SecretKeyError> {
    entries(text)
        .enumerate()
        .map(|(index, entry)| {
            parse(entry).map_err(|reason| SecretKeyError::Entry {
                entry: index + 1,
                reason: Box::new(reason),
            })
        })
        .collect()
}

/// One X25519 private key of the runners' keyring. `Debug` shows the id only.
pub struct SecretKey {
    private: PrivateKey,
}

impl SecretKey {
    /// A key from its 32 raw bytes.
    pub fn from_bytes(bytes: [u8; SECRET_KEY_BYTES]) -> Result<Self, SecretKeyError> {
        let bytes = Zeroizing::new(bytes);
        PrivateKey::from_bytes(bytes.as_slice())
            .map(|private| SecretKey { private })
            .map_err(|_| SecretKeyError::NotAKey)
    }

    /// A fresh random key from the operating system's generator.
    pub fn generate() -> Self {
        let (private, _) = Kem::gen_keypair(&mut OsRng);
        SecretKey { private }
    }

    /// Parses a key written as standard base64 of 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, SecretKeyError> {
        Self::from_bytes(*decode_32(text)?)
    }

    /// The key as standard base64 (the keyring file format).
    pub fn to_base64(&self) -> Zeroizing<String> {
        let mut bytes = Zeroizing::new([0u8; SECRET_KEY_BYTES]);
        bytes.copy_from_slice(&self.private.to_bytes());
        Zeroizing::new(STANDARD.encode(bytes.as_slice()))
    }

    /// The public key values are sealed to.
    pub fn public_key(&self) -> SecretPublicKey {
        SecretPublicKey {
            public: Kem::sk_to_pk(&self.private),
        }
    }

    /// The key's id (that of its public key): `x` followed by 16 hex digits.
    pub fn id(&self) -> String {
        self.public_key().id()
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKey").field("id", &self.id()).finish()
    }
}

/// The X25519 public key new values are sealed to.
#[derive(Clone)]
pub struct SecretPublicKey {
    public: PublicKey,
}

impl SecretPublicKey {
    /// Parses a public key written as standard base64 of 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, SecretKeyError> {
        let bytes = decode_32(text)?;
        PublicKey::from_bytes(bytes.as_slice())
            .map(|public| SecretPublicKey { public })
            .map_err(|_| SecretKeyError::NotAKey)
    }

    /// The key as standard base64 (the public key file format).
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.public.to_bytes())
    }

    /// The key's id: `x` followed by 16 hex digits.
    pub fn id(&self) -> String {
        key_id("x", KEY_ID_CONTEXT, &self.public.to_bytes())
    }
}

impl std::fmt::Debug for SecretPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretPublicKey")
            .field("id", &self.id())
            .finish()
    }
}

/// Why a key or keyring was refused. Messages never contain key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretKeyError {
    /// The text is not standard base64.
    #[error("a secrets key must be standard base64 of 32 bytes, but this is not valid base64")]
    NotBase64,
    /// The text decodes to the wrong number of bytes.
    #[error("a secrets key must be 32 bytes, but this decodes to {len} bytes")]
    WrongLength {
        /// Decoded length.
        len: usize,
    },
    /// The bytes are not a usable X25519 key.
    #[error("the 32 bytes are not a usable X25519 key")]
    NotAKey,
    /// One entry of a keyring is malformed.
    #[error("secrets keyring entry {entry}: {reason}")]
    Entry {
        /// 1-based position of the entry.
        entry: usize,
        /// What is wrong with it.
        reason: Box<SecretKeyError>,
    },
    /// The keyring holds no key.
    #[error("the secrets keyring holds no key")]
    Empty,
    /// A public key file holds more than one key.
    #[error("a secrets public key file holds exactly one key, but this holds {count}")]
    NotOnePublicKey {
        /// How many it holds.
        count: usize,
    },
    /// The same key is listed twice.
    #[error("secrets keyring entry {entry} repeats key {key_id}")]
    Duplicate {
        /// 1-based position of the repeated entry.
        entry: usize,
        /// Id of the repeated key.
        key_id: String,
    },
}

/// A sealed value as stored: key id, the per-value public input (HPKE encapsulated key;
/// the nonce of a legacy value) and the ciphertext (with its 16-byte tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSecret {
    /// Id of the key the value was sealed to.
    pub key_id: String,
    /// The encapsulated key (32 bytes), or a legacy value's nonce (24 bytes).
    pub nonce: Vec<u8>,
    /// Ciphertext followed by the authentication tag.
    pub ciphertext: Vec<u8>,
}

impl SealedSecret {
    /// Whether this value was sealed by an earlier version with a symmetric key.
    pub fn is_legacy(&self) -> bool {
        self.key_id.starts_with(LEGACY_ID_PREFIX)
    }
}

/// Why a value could not be sealed or opened. Messages never contain the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The value was sealed to a key the keyring does not hold.
    #[error(
        "sealed with key {key_id}, which is not in the secrets keyring (keyring holds: {})",
        available.join(", ")
    )]
    UnknownKey {
        /// The key id stored with the value.
        key_id: String,
        /// The key ids the keyring holds.
        available: Vec<String>,
    },
    /// The stored nonce or encapsulated key has the wrong length.
    #[error("stored nonce is {len} bytes; expected {expected}")]
    BadNonce {
        /// Its length.
        len: usize,
        /// The length the value's scheme uses.
        expected: usize,
    },
    /// Authentication failed: another key, another install or name, or altered bytes.
    #[error(
        "decryption with key {key_id} failed: the ciphertext was altered or belongs to another install or name"
    )]
    Decrypt {
        /// The key that was tried.
        key_id: String,
    },
    /// The decrypted value is not UTF-8 text.
    #[error("the decrypted value is not UTF-8 text")]
    NotUtf8,
    /// Encryption failed (the value is beyond the cipher's limits).
    #[error("encryption with key {key_id} failed")]
    Encrypt {
        /// The primary key id.
        key_id: String,
    },
}

fn utf8(plaintext: Vec<u8>) -> Result<SecretValue, SealError> {
    match String::from_utf8(plaintext) {
        Ok(text) => Ok(SecretValue::new(text)),
        Err(err) => {
            drop(Zeroizing::new(err.into_bytes()));
            Err(SealError::NotUtf8)
        }
    }
}

/// Seals values to one public key. Holds nothing that opens a value: this is what
/// gateways and the CLI hold. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SecretSealer {
    key_id: String,
    public: SecretPublicKey,
}

impl SecretSealer {
    /// A sealer to `public`.
    pub fn new(public: SecretPublicKey) -> Self {
        SecretSealer {
            key_id: public.id(),
            public,
        }
    }

    /// Parses a public key file: one key in standard base64; `#` comments allowed.
    pub fn from_public_key(text: &str) -> Result<Self, SecretKeyError> {
        let mut keys = parse_entries(text, SecretPublicKey::from_base64)?;
        match keys.len() {
            0 => Err(SecretKeyError::Empty),
            1 => Ok(SecretSealer::new(keys.remove(0))),
            count => Err(SecretKeyError::NotOnePublicKey { count }),
        }
    }

    /// Id of the key new values are sealed to.
    pub fn primary_key_id(&self) -> &str {
        &self.key_id
    }

    /// The public key.
    pub fn public_key(&self) -> &SecretPublicKey {
        &self.public
    }

    /// Seals `value` of secret `name` for install `install_id`.
    pub fn seal(
        &self,
        install_id: &str,
        name: &str,
        value: &SecretValue,
    ) -> Result<SealedSecret, SealError> {
        let aad = associated_data(AAD_CONTEXT, install_id, name);
        let (encapped, ciphertext) = hpke::single_shot_seal::<Cipher, Kdf, Kem, _>(
            &OpModeS::Base,
            &self.public.public,
            HPKE_INFO,
            value.expose().as_bytes(),
            &aad,
            &mut OsRng,
        )
        .map_err(|_| SealError::Encrypt {
            key_id: self.key_id.clone(),
        })?;
        Ok(SealedSecret {
            key_id: self.key_id.clone(),
            nonce: encapped.to_bytes().to_vec(),
            ciphertext,
        })
    }
}

/// The runners' keyring: opens values sealed to any of its keys (and, given the legacy
/// keyring, values of earlier versions). The first key is the primary: [`Self::sealer`]
/// seals to it. Cheap to clone; `Debug` shows key ids only.
#[derive(Clone)]
pub struct SecretOpener {
    keys: Arc<[(String, PrivateKey)]>,
    sealer: SecretSealer,
    legacy: Option<LegacyKeyring>,
}

impl SecretOpener {
    /// A keyring with `primary` for new values and `older` keys kept readable.
    pub fn new(
        primary: SecretKey,
        older: impl IntoIterator<Item = SecretKey>,
    ) -> Result<Self, SecretKeyError> {
        let sealer = SecretSealer::new(primary.public_key());
        let mut keys: Vec<(String, PrivateKey)> = Vec::new();
        for (index, key) in std::iter::once(primary).chain(older).enumerate() {
            let key_id = key.id();
            if keys.iter().any(|(id, _)| *id == key_id) {
                return Err(SecretKeyError::Duplicate {
                    entry: index + 1,
                    key_id,
                });
            }
            keys.push((key_id, key.private));
        }
        Ok(SecretOpener {
            keys: keys.into(),
            sealer,
            legacy: None,
        })
    }

    /// Parses a keyring: private keys in standard base64, separated by newlines, commas or
    /// spaces; `#` starts a comment that runs to the end of the line. The first key is
    /// the primary.
    pub fn from_keyring(text: &str) -> Result<Self, SecretKeyError> {
        let mut keys = parse_entries(text, SecretKey::from_base64)?.into_iter();
        let primary = keys.next().ok_or(SecretKeyError::Empty)?;
        SecretOpener::new(primary, keys)
    }

    /// The same keyring, also opening values sealed by earlier versions under `legacy`.
    pub fn with_legacy(self, legacy: LegacyKeyring) -> Self {
        SecretOpener {
            legacy: Some(legacy),
            ..self
        }
    }

    /// The legacy keyring, if this opener holds one.
    pub fn legacy(&self) -> Option<&LegacyKeyring> {
        self.legacy.as_ref()
    }

    /// A sealer to the primary key: what gateways and the CLI hold.
    pub fn sealer(&self) -> &SecretSealer {
        &self.sealer
    }

    /// Ids of every key the keyring holds, the primary first, then legacy keys.
    pub fn key_ids(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|(id, _)| id.clone())
            .chain(self.legacy.iter().flat_map(LegacyKeyring::key_ids))
            .collect()
    }

    /// Opens a value sealed for secret `name` of install `install_id`.
    pub fn open(
        &self,
        install_id: &str,
        name: &str,
        sealed: &SealedSecret,
    ) -> Result<SecretValue, SealError> {
        if sealed.is_legacy()
            && let Some(legacy) = &self.legacy
        {
            return legacy.open(install_id, name, sealed);
        }
        let private = self
            .keys
            .iter()
            .find(|(id, _)| *id == sealed.key_id)
            .map(|(_, key)| key)
            .ok_or_else(|| SealError::UnknownKey {
                key_id: sealed.key_id.clone(),
                available: self.key_ids(),
            })?;
        let encapped = EncappedKey::from_bytes(&sealed.nonce).map_err(|_| SealError::BadNonce {
            len: sealed.nonce.len(),
            expected: ENCAPPED_KEY_BYTES,
        })?;
        let aad = associated_data(AAD_CONTEXT, install_id, name);
        let plaintext = hpke::single_shot_open::<Cipher, Kdf, Kem>(
            &OpModeR::Base,
            private,
            &encapped,
            HPKE_INFO,
            &sealed.ciphertext,
            &aad,
        )
        .map_err(|_| SealError::Decrypt {
            key_id: sealed.key_id.clone(),
        })?;
        utf8(plaintext)
    }
}

/// An opener seals as its [`SecretOpener::sealer`] does (to the primary key), so it can
/// be passed wherever a [`SecretSealer`] is expected.
impl std::ops::Deref for SecretOpener {
    type Target = SecretSealer;

    fn deref(&self) -> &SecretSealer {
        &self.sealer
    }
}

impl std::fmt::Debug for SecretOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretOpener")
            .field("primary", &self.primary_key_id())
            .field("keys", &self.key_ids())
            .finish()
    }
}

/// One 32-byte symmetric key of an earlier version's keyring. Its bytes are overwritten on
/// drop; `Debug` shows the id only.
pub struct LegacySecretKey {
    bytes: Zeroizing<[u8; SECRET_KEY_BYTES]>,
}

impl LegacySecretKey {
    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; SECRET_KEY_BYTES]) -> Self {
        LegacySecretKey {
            bytes: Zeroizing::new(bytes),
        }
    }

    /// A fresh random key (tests and tooling).
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; SECRET_KEY_BYTES]);
        OsRng.fill_bytes(bytes.as_mut_slice());
        LegacySecretKey { bytes }
    }

    /// Parses a key written as standard base64 of 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, SecretKeyError> {
        Ok(LegacySecretKey {
            bytes: decode_32(text)?,
        })
    }

    /// The key as standard base64.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.bytes.as_slice()))
    }

    /// The key's id: `k` followed by 16 hex digits.
    pub fn id(&self) -> String {
        key_id(
            LEGACY_ID_PREFIX,
            LEGACY_KEY_ID_CONTEXT,
            self.bytes.as_slice(),
        )
    }
}

impl std::fmt::Debug for LegacySecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacySecretKey")
            .field("id", &self.id())
            .finish()
    }
}

/// The symmetric keyring of earlier versions (XChaCha20-Poly1305, key ids `k…`): kept only
/// to open values that `palisade secrets migrate` has not re-sealed yet.
#[derive(Clone)]
pub struct LegacyKeyring {
    keys: Arc<[(String, XChaCha20Poly1305)]>,
}

impl LegacyKeyring {
    /// A keyring of `keys`, the first being the one earlier versions sealed with.
    pub fn new(keys: impl IntoIterator<Item = LegacySecretKey>) -> Result<Self, SecretKeyError> {
        let mut ring: Vec<(String, XChaCha20Poly1305)> = Vec::new();
        for (index, key) in keys.into_iter().enumerate() {
            let key_id = key.id();
            if ring.iter().any(|(id, _)| *id == key_id) {
                return Err(SecretKeyError::Duplicate {
                    entry: index + 1,
                    key_id,
                });
            }
            let cipher = XChaCha20Poly1305::new(Key::from_slice(key.bytes.as_slice()));
            ring.push((key_id, cipher));
        }
        if ring.is_empty() {
            return Err(SecretKeyError::Empty);
        }
        Ok(LegacyKeyring { keys: ring.into() })
    }

    /// Parses a keyring file of an earlier version (same syntax as [`SecretOpener`]'s).
    pub fn from_keyring(text: &str) -> Result<Self, SecretKeyError> {
        LegacyKeyring::new(parse_entries(text, LegacySecretKey::from_base64)?)
    }

    /// Ids of the keys.
    pub fn key_ids(&self) -> Vec<String> {
        self.keys.iter().map(|(id, _)| id.clone()).collect()
    }

    /// Seals as earlier versions did, with the first key. Only for tests and tooling that
    /// need values in the old format; the platform never seals this way.
    pub fn seal(
        &self,
        install_id: &str,
        name: &str,
        value: &SecretValue,
    ) -> Result<SealedSecret, SealError> {
        let (key_id, cipher) = &self.keys[0];
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = associated_data(LEGACY_AAD_CONTEXT, install_id, name);
        let ciphertext = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: value.expose().as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::Encrypt {
                key_id: key_id.clone(),
            })?;
        Ok(SealedSecret {
            key_id: key_id.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    /// Opens a value an earlier version sealed.
    pub fn open(
        &self,
        install_id: &str,
        name: &str,
        sealed: &SealedSecret,
    ) -> Result<SecretValue, SealError> {
        let cipher = self
            .keys
            .iter()
            .find(|(id, _)| *id == sealed.key_id)
            .map(|(_, cipher)| cipher)
            .ok_or_else(|| SealError::UnknownKey {
                key_id: sealed.key_id.clone(),
                available: self.key_ids(),
            })?;
        if sealed.nonce.len() != NONCE_BYTES {
            return Err(SealError::BadNonce {
                len: sealed.nonce.len(),
                expected: NONCE_BYTES,
            });
        }
        let aad = associated_data(LEGACY_AAD_CONTEXT, install_id, name);
        let plaintext = cipher
            .decrypt(
                XNonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::Decrypt {
                key_id: sealed.key_id.clone(),
            })?;
        utf8(plaintext)
    }
}

impl std::fmt::Debug for LegacyKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacyKeyring")
            .field("keys", &self.key_ids())
            .finish()
    }
}

/// The associated data of a sealed value: a context tag, then install id and name, each
/// prefixed with its length so that no two (install, name) pairs share an encoding.
fn associated_data(context: &[u8], install_id: &str, name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(context.len() + 8 + install_id.len() + name.len());
    aad.extend_from_slice(context);
    for part in [install_id, name] {
        let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
        aad.extend_from_slice(&len.to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

/// A key's id: `prefix` and the first 8 bytes of SHA-256(`context` ‖ `key`) in hex.
fn key_id(prefix: impl std::fmt::Display, context: &[u8], key: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(context);
    hasher.update(key);
    let digest = hasher.finalize();
    format!("{prefix}{}", hex::encode(&digest[..8]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opener() -> SecretOpener {
        SecretOpener::new(SecretKey::from_bytes([7; 32]).unwrap(), []).unwrap()
    }

    #[test]
    fn a_value_sealed_to_the_public_key_opens_with_the_keyring_only() {
        let opener = opener();
        // What a gateway holds: the public key, as its file carries it.
        let sealer = SecretSealer::from_public_key(&format!(
            "# public key\n{}\n",
            opener.sealer().public_key().to_base64()
        ))
        .unwrap();
        assert_eq!(sealer.primary_key_id(), opener.primary_key_id());
        assert!(sealer.primary_key_id().starts_with('x'));
        let sealed = sealer
            .seal("install-1", "TOKEN", &SecretValue::new("s3cr3t"))
            .unwrap();
        assert_eq!(sealed.key_id, opener.primary_key_id());
        assert_eq!(sealed.nonce.len(), ENCAPPED_KEY_BYTES);
        assert_eq!(sealed.ciphertext.len(), "s3cr3t".len() + 16);
        assert!(!sealed.is_legacy());
        assert!(
            !sealed
                .ciphertext
                .windows(6)
                .any(|w| w == b"s3cr3t".as_slice())
        );
        let opened = opener.open("install-1", "TOKEN", &sealed).unwrap();
        assert_eq!(opened.expose(), "s3cr3t");
    }

    #[test]
    fn every_write_uses_a_fresh_encapsulated_key() {
        let opener = opener();
        let value = SecretValue::new("same");
        let a = opener.seal("i", "N", &value).unwrap();
        let b = opener.seal("i", "N", &value).unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn another_install_or_name_does_not_open() {
        let opener = opener();
        let sealed = opener
            .seal("install-a", "TOKEN", &SecretValue::new("v"))
            .unwrap();
        for (install, name) in [("install-b", "TOKEN"), ("install-a", "OTHER")] {
            let err = opener.open(install, name, &sealed).unwrap_err();
            assert!(matches!(err, SealError::Decrypt { .. }), "{err}");
        }
    }

    #[test]
    fn the_aad_encoding_is_unambiguous() {
        assert_ne!(
            associated_data(AAD_CONTEXT, "ab", "c"),
            associated_data(AAD_CONTEXT, "a", "bc")
        );
    }

    #[test]
    fn a_wrong_key_does_not_open() {
        let opener = opener();
        let sealed = opener.seal("i", "N", &SecretValue::new("v")).unwrap();
        let other = SecretOpener::new(SecretKey::from_bytes([8; 32]).unwrap(), []).unwrap();
        let forged = SealedSecret {
            key_id: other.primary_key_id().to_owned(),
            ..sealed.clone()
        };
        let err = other.open("i", "N", &forged).unwrap_err();
        assert!(matches!(err, SealError::Decrypt { .. }), "{err}");
        let err = other.open("i", "N", &sealed).unwrap_err();
        assert!(matches!(err, SealError::UnknownKey { .. }), "{err}");
        assert!(err.to_string().contains(&sealed.key_id), "{err}");
    }

    #[test]
    fn tampered_bytes_do_not_open() {
        let opener = opener();
        let sealed = opener.seal("i", "N", &SecretValue::new("value")).unwrap();
        for index in [0, sealed.ciphertext.len() - 1] {
            let mut tampered = sealed.clone();
            tampered.ciphertext[index] ^= 1;
            assert!(matches!(
                opener.open("i", "N", &tampered),
                Err(SealError::Decrypt { .. })
            ));
        }
        let mut tampered = sealed.clone();
        tampered.nonce[3] ^= 1;
        assert!(matches!(
            opener.open("i", "N", &tampered),
            Err(SealError::Decrypt { .. })
        ));
        let mut short = sealed.clone();
        short.nonce.truncate(12);
        assert_eq!(
            opener.open("i", "N", &short).unwrap_err(),
            SealError::BadNonce {
                len: 12,
                expected: ENCAPPED_KEY_BYTES
            }
        );
    }

    #[test]
    fn rotation_keeps_old_values_readable_and_seals_to_the_new_key() {
        let old = SecretOpener::new(SecretKey::from_bytes([1; 32]).unwrap(), []).unwrap();
        let sealed_old = old.seal("i", "N", &SecretValue::new("before")).unwrap();
        let rotated = SecretOpener::new(
            SecretKey::from_bytes([2; 32]).unwrap(),
            [SecretKey::from_bytes([1; 32]).unwrap()],
        )
        .unwrap();
        assert_ne!(rotated.primary_key_id(), old.primary_key_id());
        assert_eq!(
            rotated.key_ids(),
            [rotated.primary_key_id(), old.primary_key_id()]
        );
        assert_eq!(
            rotated.open("i", "N", &sealed_old).unwrap().expose(),
            "before"
        );
        let sealed_new = rotated.seal("i", "N", &SecretValue::new("after")).unwrap();
        assert_eq!(sealed_new.key_id, rotated.primary_key_id());
        assert!(matches!(
            old.open("i", "N", &sealed_new),
            Err(SealError::UnknownKey { .. })
        ));
    }

    #[test]
    fn keyrings_and_public_keys_parse_with_comments_and_separators() {
        let a = SecretKey::from_bytes([1; 32]).unwrap();
        let b = SecretKey::from_bytes([2; 32]).unwrap();
        let c = SecretKey::from_bytes([3; 32]).unwrap();
        let text = format!(
            "# primary\n{}\n\n{}, {}  # old\n",
            *a.to_base64(),
            *b.to_base64(),
            *c.to_base64()
        );
        let opener = SecretOpener::from_keyring(&text).unwrap();
        assert_eq!(opener.key_ids(), [a.id(), b.id(), c.id()]);
        assert_eq!(opener.primary_key_id(), a.id());

        let two = format!(
            "{} {}",
            a.public_key().to_base64(),
            b.public_key().to_base64()
        );
        assert_eq!(
            SecretSealer::from_public_key(&two).unwrap_err(),
            SecretKeyError::NotOnePublicKey { count: 2 }
        );
        assert_eq!(
            SecretSealer::from_public_key("# none\n").unwrap_err(),
            SecretKeyError::Empty
        );
    }

    #[test]
    fn bad_keyrings_are_refused_without_echoing_the_key() {
        assert_eq!(
            SecretOpener::from_keyring("# nothing\n").unwrap_err(),
            SecretKeyError::Empty
        );
        let good = SecretKey::from_bytes([1; 32]).unwrap().to_base64();
        let err = SecretOpener::from_keyring(&format!("{}\nnot*base64", *good)).unwrap_err();
        assert!(err.to_string().contains("entry 2"), "{err}");
        assert!(err.to_string().contains("base64"), "{err}");
        assert!(!err.to_string().contains("not*base64"), "{err}");

        let short = STANDARD.encode([9u8; 16]);
        let err = SecretOpener::from_keyring(&short).unwrap_err();
        assert!(err.to_string().contains("16 bytes"), "{err}");
        assert!(!err.to_string().contains(&short), "{err}");

        let err = SecretOpener::from_keyring(&format!("{} {}", *good, *good)).unwrap_err();
        assert!(
            matches!(err, SecretKeyError::Duplicate { entry: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn key_ids_are_stable_and_distinct() {
        let a = SecretKey::from_bytes([1; 32]).unwrap();
        assert_eq!(a.id(), SecretKey::from_bytes([1; 32]).unwrap().id());
        assert_eq!(a.id(), a.public_key().id());
        assert_ne!(a.id(), SecretKey::from_bytes([2; 32]).unwrap().id());
        assert!(a.id().starts_with('x') && a.id().len() == 17);
        assert_ne!(SecretKey::generate().id(), SecretKey::generate().id());
        let legacy = LegacySecretKey::from_bytes([1; 32]);
        assert!(legacy.id().starts_with('k') && legacy.id().len() == 17);
    }

    #[test]
    fn keys_roundtrip_through_base64() {
        let key = SecretKey::generate();
        let parsed = SecretKey::from_base64(&key.to_base64()).unwrap();
        assert_eq!(parsed.id(), key.id());
        let public = SecretPublicKey::from_base64(&key.public_key().to_base64()).unwrap();
        assert_eq!(public.id(), key.id());
    }

    #[test]
    fn debug_output_shows_ids_only() {
        let key = SecretKey::from_bytes([5; 32]).unwrap();
        let encoded = key.to_base64();
        let opener = SecretOpener::new(SecretKey::from_bytes([5; 32]).unwrap(), []).unwrap();
        let legacy = LegacySecretKey::from_bytes([6; 32]);
        let legacy_encoded = legacy.to_base64();
        let printed = format!("{key:?} {opener:?} {:?} {legacy:?}", opener.sealer());
        assert!(printed.contains(&key.id()), "{printed}");
        assert!(!printed.contains(encoded.as_str()), "{printed}");
        assert!(!printed.contains(legacy_encoded.as_str()), "{printed}");
        assert!(!printed.contains("[5, 5"), "{printed}");
    }

    #[test]
    fn legacy_values_open_only_with_the_legacy_keyring() {
        let legacy = LegacyKeyring::new([LegacySecretKey::from_bytes([3; 32])]).unwrap();
        let sealed = legacy
            .seal("install-1", "TOKEN", &SecretValue::new("old"))
            .unwrap();
        assert!(sealed.is_legacy());
        assert_eq!(sealed.nonce.len(), NONCE_BYTES);
        let opener = opener();
        assert!(matches!(
            opener.open("install-1", "TOKEN", &sealed),
            Err(SealError::UnknownKey { .. })
        ));
        let opener = opener.with_legacy(legacy.clone());
        assert_eq!(
            opener.open("install-1", "TOKEN", &sealed).unwrap().expose(),
            "old"
        );
        assert!(matches!(
            opener.open("install-2", "TOKEN", &sealed),
            Err(SealError::Decrypt { .. })
        ));
        assert!(opener.key_ids().contains(&legacy.key_ids()[0]));
    }

    #[test]
    fn non_utf8_plaintext_is_refused() {
        let opener = opener();
        let aad = associated_data(AAD_CONTEXT, "i", "N");
        let (encapped, ciphertext) = hpke::single_shot_seal::<Cipher, Kdf, Kem, _>(
            &OpModeS::Base,
            &opener.sealer().public_key().public,
            HPKE_INFO,
            &[0xff, 0xfe],
            &aad,
            &mut OsRng,
        )
        .unwrap();
        let sealed = SealedSecret {
            key_id: opener.primary_key_id().to_owned(),
            nonce: encapped.to_bytes().to_vec(),
            ciphertext,
        };
        assert_eq!(
            opener.open("i", "N", &sealed).unwrap_err(),
            SealError::NotUtf8
        );
    }
}
