//! Sealing secret values at rest: XChaCha20-Poly1305 under the operator's keyring.
//!
//! * Every write draws a fresh random 192-bit nonce.
//! * The associated data binds a ciphertext to its install id and secret name, so a row
//!   copied to another install or name does not decrypt.
//! * Each sealed value records the id of the key that sealed it. The keyring maps key ids
//!   to keys: the first key is the primary (used for new writes), the others stay readable
//!   so that keys can be rotated without losing values.
//!
//! A key id is derived from the key itself (`k` + 16 hex digits of a domain-separated
//! SHA-256), so keys need no names and an id can never point at the wrong key.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload, rand_core::RngCore};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::value::SecretValue;

/// Length of a sealing key in bytes.
pub const SECRET_KEY_BYTES: usize = 32;

/// Length of a nonce in bytes.
pub const NONCE_BYTES: usize = 24;

/// Domain separation of the associated data.
const AAD_CONTEXT: &[u8] = b"palisade:extension-secret:v1";

/// Domain separation of key ids.
const KEY_ID_CONTEXT: &[u8] = b"palisade:secrets-key-id:v1";

/// One 32-byte sealing key. Its bytes are overwritten on drop; `Debug` shows the id only.
pub struct SecretKey {
    bytes: Zeroizing<[u8; SECRET_KEY_BYTES]>,
}

impl SecretKey {
    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; SECRET_KEY_BYTES]) -> Self {
        SecretKey {
            bytes: Zeroizing::new(bytes),
        }
    }

    /// A fresh random key from the operating system's generator.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; SECRET_KEY_BYTES]);
        OsRng.fill_bytes(bytes.as_mut_slice());
        SecretKey { bytes }
    }

    /// Parses a key written as standard base64 of 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, SecretKeyError> {
        let decoded = Zeroizing::new(
            STANDARD
                .decode(text.trim())
                .map_err(|_| SecretKeyError::NotBase64)?,
        );
        let bytes: [u8; SECRET_KEY_BYTES] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| SecretKeyError::WrongLength { len: decoded.len() })?;
        Ok(SecretKey::from_bytes(bytes))
    }

    /// The key as standard base64 (the keyring file format).
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.bytes.as_slice()))
    }

    /// The key's id: `k` followed by 16 hex digits.
    pub fn id(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(KEY_ID_CONTEXT);
        hasher.update(self.bytes.as_slice());
        let digest = hasher.finalize();
        format!("k{}", hex::encode(&digest[..8]))
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKey").field("id", &self.id()).finish()
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
    /// The same key is listed twice.
    #[error("secrets keyring entry {entry} repeats key {key_id}")]
    Duplicate {
        /// 1-based position of the repeated entry.
        entry: usize,
        /// Id of the repeated key.
        key_id: String,
    },
}

/// A sealed value as stored: key id, nonce and ciphertext (with its 16-byte tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSecret {
    /// Id of the key that sealed the value.
    pub key_id: String,
    /// The 24-byte nonce.
    pub nonce: Vec<u8>,
    /// Ciphertext followed by the authentication tag.
    pub ciphertext: Vec<u8>,
}

/// Why a value could not be sealed or opened. Messages never contain the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The value was sealed with a key the keyring does not hold.
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
    /// The stored nonce has the wrong length.
    #[error("stored nonce is {len} bytes; expected 24")]
    BadNonce {
        /// Its length.
        len: usize,
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

/// The operator's keyring: seals with the primary key, opens with any key it holds.
/// Cheap to clone; `Debug` shows key ids only.
#[derive(Clone)]
pub struct SecretSealer {
    keys: Arc<[(String, XChaCha20Poly1305)]>,
}

impl SecretSealer {
    /// A sealer with `primary` for new writes and `older` keys kept readable.
    pub fn new(
        primary: SecretKey,
        older: impl IntoIterator<Item = SecretKey>,
    ) -> Result<Self, SecretKeyError> {
        let mut keys: Vec<(String, XChaCha20Poly1305)> = Vec::new();
        for (index, key) in std::iter::once(primary).chain(older).enumerate() {
            let key_id = key.id();
            if keys.iter().any(|(id, _)| *id == key_id) {
                return Err(SecretKeyError::Duplicate {
                    entry: index + 1,
                    key_id,
                });
            }
            let cipher = XChaCha20Poly1305::new(Key::from_slice(key.bytes.as_slice()));
            keys.push((key_id, cipher));
        }
        Ok(SecretSealer { keys: keys.into() })
    }

    /// Parses a keyring: keys in standard base64, separated by newlines, commas or
    /// spaces; `#` starts a comment that runs to the end of the line. The first key is
    /// the primary.
    pub fn from_keyring(text: &str) -> Result<Self, SecretKeyError> {
        let mut keys = Vec::new();
        let entries = text
            .lines()
            .map(|line| line.split('#').next().unwrap_or(""))
            .flat_map(|line| line.split(|c: char| c == ',' || c.is_whitespace()))
            .filter(|entry| !entry.is_empty());
        for (index, entry) in entries.enumerate() {
            let key = SecretKey::from_base64(entry).map_err(|reason| SecretKeyError::Entry {
                entry: index + 1,
                reason: Box::new(reason),
            })?;
            keys.push(key);
        }
        let mut keys = keys.into_iter();
        let primary = keys.next().ok_or(SecretKeyError::Empty)?;
        SecretSealer::new(primary, keys)
    }

    /// Id of the key new values are sealed with.
    pub fn primary_key_id(&self) -> &str {
        &self.keys[0].0
    }

    /// Ids of every key the keyring holds, the primary first.
    pub fn key_ids(&self) -> Vec<String> {
        self.keys.iter().map(|(id, _)| id.clone()).collect()
    }

    /// Seals `value` of secret `name` for install `install_id` under the primary key.
    pub fn seal(
        &self,
        install_id: &str,
        name: &str,
        value: &SecretValue,
    ) -> Result<SealedSecret, SealError> {
        let (key_id, cipher) = &self.keys[0];
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = associated_data(install_id, name);
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

    /// Opens a value sealed for secret `name` of install `install_id`.
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
            });
        }
        let aad = associated_data(install_id, name);
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
        match String::from_utf8(plaintext) {
            Ok(text) => Ok(SecretValue::new(text)),
            Err(err) => {
                drop(Zeroizing::new(err.into_bytes()));
                Err(SealError::NotUtf8)
            }
        }
    }
}

impl std::fmt::Debug for SecretSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretSealer")
            .field("primary", &self.primary_key_id())
            .field("keys", &self.key_ids())
            .finish()
    }
}

/// The associated data of a sealed value: a context tag, then install id and name, each
/// prefixed with its length so that no two (install, name) pairs share an encoding.
fn associated_data(install_id: &str, name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_CONTEXT.len() + 8 + install_id.len() + name.len());
    aad.extend_from_slice(AAD_CONTEXT);
    for part in [install_id, name] {
        let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
        aad.extend_from_slice(&len.to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> (SecretSealer, SecretKey) {
        let key = SecretKey::from_bytes([7; 32]);
        let same = SecretKey::from_bytes([7; 32]);
        (SecretSealer::new(key, []).unwrap(), same)
    }

    #[test]
    fn a_sealed_value_opens_again() {
        let (sealer, key) = sealer();
        let sealed = sealer
            .seal("install-1", "TOKEN", &SecretValue::new("s3cr3t"))
            .unwrap();
        assert_eq!(sealed.key_id, key.id());
        assert_eq!(sealed.nonce.len(), NONCE_BYTES);
        assert_eq!(sealed.ciphertext.len(), "s3cr3t".len() + 16);
        assert!(
            !sealed
                .ciphertext
                .windows(6)
                .any(|w| w == b"s3cr3t".as_slice())
        );
        let opened = sealer.open("install-1", "TOKEN", &sealed).unwrap();
        assert_eq!(opened.expose(), "s3cr3t");
    }

    #[test]
    fn every_write_uses_a_fresh_nonce() {
        let (sealer, _) = sealer();
        let value = SecretValue::new("same");
        let a = sealer.seal("i", "N", &value).unwrap();
        let b = sealer.seal("i", "N", &value).unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn another_install_or_name_does_not_open() {
        let (sealer, _) = sealer();
        let sealed = sealer
            .seal("install-a", "TOKEN", &SecretValue::new("v"))
            .unwrap();
        for (install, name) in [("install-b", "TOKEN"), ("install-a", "OTHER")] {
            let err = sealer.open(install, name, &sealed).unwrap_err();
            assert!(matches!(err, SealError::Decrypt { .. }), "{err}");
        }
    }

    #[test]
    fn the_aad_encoding_is_unambiguous() {
        assert_ne!(associated_data("ab", "c"), associated_data("a", "bc"));
    }

    #[test]
    fn a_wrong_key_does_not_open() {
        let (sealer, _) = sealer();
        let sealed = sealer.seal("i", "N", &SecretValue::new("v")).unwrap();
        // A row whose key id names a key that did not seal it does not open.
        let other = SecretSealer::new(SecretKey::from_bytes([8; 32]), []).unwrap();
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
        let (sealer, _) = sealer();
        let sealed = sealer.seal("i", "N", &SecretValue::new("value")).unwrap();
        for index in [0, sealed.ciphertext.len() - 1] {
            let mut tampered = sealed.clone();
            tampered.ciphertext[index] ^= 1;
            assert!(matches!(
                sealer.open("i", "N", &tampered),
                Err(SealError::Decrypt { .. })
            ));
        }
        let mut tampered = sealed.clone();
        tampered.nonce[3] ^= 1;
        assert!(matches!(
            sealer.open("i", "N", &tampered),
            Err(SealError::Decrypt { .. })
        ));
        let mut short = sealed.clone();
        short.nonce.truncate(12);
        assert_eq!(
            sealer.open("i", "N", &short).unwrap_err(),
            SealError::BadNonce { len: 12 }
        );
    }

    #[test]
    fn rotation_keeps_old_values_readable_and_seals_with_the_new_key() {
        let old = SecretSealer::new(SecretKey::from_bytes([1; 32]), []).unwrap();
        let sealed_old = old.seal("i", "N", &SecretValue::new("before")).unwrap();

        let rotated = SecretSealer::new(
            SecretKey::from_bytes([2; 32]),
            [SecretKey::from_bytes([1; 32])],
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
        // The old keyring alone cannot read what the new key sealed.
        assert!(matches!(
            old.open("i", "N", &sealed_new),
            Err(SealError::UnknownKey { .. })
        ));
    }

    #[test]
    fn keyrings_parse_with_comments_and_separators() {
        let a = SecretKey::from_bytes([1; 32]);
        let b = SecretKey::from_bytes([2; 32]);
        let c = SecretKey::from_bytes([3; 32]);
        let text = format!(
            "# primary\n{}\n\n{}, {}  # old\n",
            *a.to_base64(),
            *b.to_base64(),
            *c.to_base64()
        );
        let sealer = SecretSealer::from_keyring(&text).unwrap();
        assert_eq!(sealer.key_ids(), [a.id(), b.id(), c.id()]);
        assert_eq!(sealer.primary_key_id(), a.id());
    }

    #[test]
    fn bad_keyrings_are_refused_without_echoing_the_key() {
        assert_eq!(
            SecretSealer::from_keyring("# nothing\n").unwrap_err(),
            SecretKeyError::Empty
        );
        let good = SecretKey::from_bytes([1; 32]).to_base64();
        let err = SecretSealer::from_keyring(&format!("{}\nnot*base64", *good)).unwrap_err();
        assert!(err.to_string().contains("entry 2"), "{err}");
        assert!(err.to_string().contains("base64"), "{err}");
        assert!(!err.to_string().contains("not*base64"), "{err}");

        let short = STANDARD.encode([9u8; 16]);
        let err = SecretSealer::from_keyring(&short).unwrap_err();
        assert!(err.to_string().contains("16 bytes"), "{err}");
        assert!(!err.to_string().contains(&short), "{err}");

        let err = SecretSealer::from_keyring(&format!("{} {}", *good, *good)).unwrap_err();
        assert!(
            matches!(err, SecretKeyError::Duplicate { entry: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn key_ids_are_stable_and_distinct() {
        let a = SecretKey::from_bytes([1; 32]);
        assert_eq!(a.id(), SecretKey::from_bytes([1; 32]).id());
        assert_ne!(a.id(), SecretKey::from_bytes([2; 32]).id());
        assert!(a.id().starts_with('k') && a.id().len() == 17);
        assert_ne!(SecretKey::generate().id(), SecretKey::generate().id());
    }

    #[test]
    fn keys_roundtrip_through_base64() {
        let key = SecretKey::generate();
        let parsed = SecretKey::from_base64(&key.to_base64()).unwrap();
        assert_eq!(parsed.id(), key.id());
    }

    #[test]
    fn debug_output_shows_ids_only() {
        let key = SecretKey::from_bytes([5; 32]);
        let encoded = key.to_base64();
        let sealer = SecretSealer::new(SecretKey::from_bytes([5; 32]), []).unwrap();
        let printed = format!("{key:?} {sealer:?}");
        assert!(printed.contains(&key.id()), "{printed}");
        assert!(!printed.contains(encoded.as_str()), "{printed}");
        assert!(!printed.contains("[5, 5"), "{printed}");
    }

    #[test]
    fn non_utf8_plaintext_is_refused() {
        let (sealer, _) = sealer();
        let (key_id, cipher) = &sealer.keys[0];
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ciphertext = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: &[0xff, 0xfe],
                    aad: &associated_data("i", "N"),
                },
            )
            .unwrap();
        let sealed = SealedSecret {
            key_id: key_id.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
        };
        assert_eq!(
            sealer.open("i", "N", &sealed).unwrap_err(),
            SealError::NotUtf8
        );
    }
}
