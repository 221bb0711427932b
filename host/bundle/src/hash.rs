//! Content hashes: `sha256:<64 lowercase hex>` of a bundle's bytes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

const PREFIX: &str = "sha256:";

/// The SHA-256 of some bytes, written `sha256:<64 lowercase hex digits>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash([u8; 32]);

/// Why a string is not a content hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentHashError {
    /// The string does not start with `sha256:`.
    #[error("content hash `{0}` must start with `sha256:`")]
    MissingPrefix(String),
    /// The digest part is not 64 characters long.
    #[error("content hash `{input}` must have 64 hex digits after `sha256:`, found {len}")]
    WrongLength {
        /// The string that was parsed.
        input: String,
        /// How many characters followed the prefix.
        len: usize,
    },
    /// The digest part has a character other than `0-9a-f`.
    #[error("content hash `{0}` must use lowercase hex digits (0-9, a-f) only")]
    NotLowercaseHex(String),
}

impl ContentHash {
    /// Hashes `bytes` with SHA-256.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// Wraps an already computed SHA-256 digest.
    pub fn from_digest(digest: [u8; 32]) -> Self {
        Self(digest)
    }

    /// The raw 32-byte digest.
    pub fn digest(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 lowercase hex digits, without the `sha256:` prefix.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", self.hex())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({self})")
    }
}

impl FromStr for ContentHash {
    type Err = ContentHashError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s
            .strip_prefix(PREFIX)
            .ok_or_else(|| ContentHashError::MissingPrefix(s.to_owned()))?;
        if digits.len() != 64 {
            return Err(ContentHashError::WrongLength {
                input: s.to_owned(),
                len: digits.chars().count(),
            });
        }
        if !digits
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(ContentHashError::NotLowercaseHex(s.to_owned()));
        }
        let mut digest = [0u8; 32];
        hex::decode_to_slice(digits, &mut digest)
            .map_err(|_| ContentHashError::NotLowercaseHex(s.to_owned()))?;
        Ok(Self(digest))
    }
}

impl Serialize for ContentHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ContentHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn hashes_and_displays() {
        let hash = ContentHash::of(b"");
        assert_eq!(hash.to_string(), EMPTY);
        assert_eq!(hash.hex(), &EMPTY[7..]);
        assert_eq!(format!("{hash:?}"), format!("ContentHash({EMPTY})"));
    }

    #[test]
    fn parses_its_own_display() {
        let hash = ContentHash::of(b"bundle");
        assert_eq!(hash.to_string().parse::<ContentHash>().unwrap(), hash);
        assert_eq!(ContentHash::from_digest(*hash.digest()), hash);
    }

    #[test]
    fn refuses_malformed_strings() {
        assert!(matches!(
            EMPTY[7..].parse::<ContentHash>(),
            Err(ContentHashError::MissingPrefix(_))
        ));
        assert!(matches!(
            "sha256:abc".parse::<ContentHash>(),
            Err(ContentHashError::WrongLength { len: 3, .. })
        ));
        let upper = EMPTY.to_uppercase().replace("SHA256", "sha256");
        let err = upper.parse::<ContentHash>().unwrap_err();
        assert!(matches!(err, ContentHashError::NotLowercaseHex(_)));
        assert!(err.to_string().contains("lowercase hex"));
        let non_hex = format!("sha256:{}", "g".repeat(64));
        assert!(non_hex.parse::<ContentHash>().is_err());
        let multibyte = format!("sha256:{}", "é".repeat(32));
        assert!(multibyte.parse::<ContentHash>().is_err());
    }

    #[test]
    fn serde_uses_the_string_form() {
        let hash = ContentHash::of(b"x");
        let json = serde_json::to_string(&hash).unwrap();
        assert_eq!(json, format!("\"{hash}\""));
        assert_eq!(serde_json::from_str::<ContentHash>(&json).unwrap(), hash);
        let err = serde_json::from_str::<ContentHash>("\"md5:00\"").unwrap_err();
        assert!(err.to_string().contains("sha256:"));
    }
}
