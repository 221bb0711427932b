//! Key/value storage per install and namespace (`palisade:extension/storage`, feature
//! `storage`, granted by the manifest capability `storage` with the namespaces it names).
//!
//! Every entry has a revision that grows with every write to its key; writes and deletes
//! take a [`Condition`] for optimistic concurrency.
//!
//! ```no_run
//! use palisade_sdk::storage::{self, Condition, StorageError};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Counter { hits: u64 }
//!
//! fn bump() -> Result<u64, StorageError> {
//!     loop {
//!         let (counter, condition) = match storage::get("counters", "home")? {
//!             Some(entry) => {
//!                 let counter: Counter = serde_json::from_slice(&entry.value)
//!                     .unwrap_or(Counter { hits: 0 });
//!                 (counter, Condition::MustEqualRevision(entry.revision))
//!             }
//!             None => (Counter { hits: 0 }, Condition::MustNotExist),
//!         };
//!         let next = Counter { hits: counter.hits + 1 };
//!         match storage::set_json("counters", "home", &next, condition) {
//!             Ok(_) => return Ok(next.hits),
//!             Err(StorageError::Conflict { .. }) => continue,
//!             Err(other) => return Err(other),
//!         }
//!     }
//! }
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

#[cfg(not(palisade_fake_host))]
use crate::bindings::storage::palisade::extension::storage as wit;
#[cfg(palisade_fake_host)]
use crate::testing::storage as wit;

/// A stored value with its revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// The stored bytes.
    pub value: Vec<u8>,
    /// The revision of this value; it grows with every write to the key.
    pub revision: u64,
}

impl From<wit::Entry> for Entry {
    fn from(entry: wit::Entry) -> Self {
        Entry {
            key: entry.key,
            value: entry.value,
            revision: entry.revision,
        }
    }
}

/// The precondition of a write or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Condition {
    /// Whatever is there.
    #[default]
    Any,
    /// Only if the key does not exist.
    MustNotExist,
    /// Only if the key exists with exactly this revision.
    MustEqualRevision(u64),
}

impl From<Condition> for wit::Condition {
    fn from(condition: Condition) -> Self {
        match condition {
            Condition::Any => wit::Condition::Any,
            Condition::MustNotExist => wit::Condition::MustNotExist,
            Condition::MustEqualRevision(revision) => wit::Condition::MustEqualRevision(revision),
        }
    }
}

/// One page of a listing, in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The entries of this page.
    pub entries: Vec<Entry>,
    /// Pass to the next [`list`] call to continue; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Why a storage call failed. Nothing was changed when a call fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The namespace is not granted to this install.
    #[error(
        "storage access denied: the namespace is not granted by the manifest's `storage` capability"
    )]
    AccessDenied,
    /// The write condition failed.
    #[error("storage write conflict: the key's current revision is {}", describe_revision(*.current))]
    Conflict {
        /// The key's current revision, `None` if it does not exist.
        current: Option<u64>,
    },
    /// A key or value exceeds the operator's size limits.
    #[error("storage key or value is too large")]
    TooLarge,
    /// The install's storage quota (bytes or keys) would be exceeded.
    #[error("storage quota exceeded")]
    QuotaExceeded,
    /// The key, prefix or cursor is malformed; the text says which.
    #[error("invalid storage argument: {0}")]
    InvalidArgument(String),
    /// The storage backend failed; the operator's log has the detail.
    #[error("storage is unavailable")]
    Unavailable,
    /// [`set_json`] could not serialize the value (nothing was written).
    #[error("the value for key `{key}` could not be serialized as JSON: {message}")]
    Serialize {
        /// The key that was to be written.
        key: String,
        /// The serializer's message.
        message: String,
    },
    /// [`get_json`] read a value that is not the expected JSON.
    #[error("the value of key `{key}` is not the expected JSON: {message}")]
    Deserialize {
        /// The key that was read.
        key: String,
        /// The deserializer's message.
        message: String,
    },
}

fn describe_revision(revision: Option<u64>) -> String {
    match revision {
        Some(revision) => revision.to_string(),
        None => "none (the key does not exist)".to_owned(),
    }
}

impl From<wit::Error> for StorageError {
    fn from(error: wit::Error) -> Self {
        match error {
            wit::Error::AccessDenied => StorageError::AccessDenied,
            wit::Error::Conflict(current) => StorageError::Conflict { current },
            wit::Error::TooLarge => StorageError::TooLarge,
            wit::Error::QuotaExceeded => StorageError::QuotaExceeded,
            wit::Error::InvalidArgument(message) => StorageError::InvalidArgument(message),
            wit::Error::Unavailable => StorageError::Unavailable,
        }
    }
}

/// Reads one key.
pub fn get(namespace: &str, key: &str) -> Result<Option<Entry>, StorageError> {
    Ok(wit::get(namespace, key)?.map(Entry::from))
}

/// Writes one key if `condition` holds; returns the new revision.
pub fn set(
    namespace: &str,
    key: &str,
    value: &[u8],
    condition: Condition,
) -> Result<u64, StorageError> {
    Ok(wit::set(namespace, key, value, condition.into())?)
}

/// Deletes one key if `condition` holds; returns whether a key was deleted.
pub fn delete(namespace: &str, key: &str, condition: Condition) -> Result<bool, StorageError> {
    Ok(wit::delete(namespace, key, condition.into())?)
}

/// Lists entries whose key starts with `prefix`, in key order, at most `limit` per page.
/// Start with `cursor: None`, then pass the previous page's
/// [`next_cursor`](Page::next_cursor) until it is `None`.
pub fn list(
    namespace: &str,
    prefix: &str,
    cursor: Option<&str>,
    limit: u32,
) -> Result<Page, StorageError> {
    let page = wit::list_entries(namespace, prefix, cursor, limit)?;
    Ok(Page {
        entries: page.entries.into_iter().map(Entry::from).collect(),
        next_cursor: page.next_cursor,
    })
}

/// Reads one key and parses its value as JSON.
pub fn get_json<T: DeserializeOwned>(
    namespace: &str,
    key: &str,
) -> Result<Option<T>, StorageError> {
    match get(namespace, key)? {
        Some(entry) => decode_json(key, &entry.value).map(Some),
        None => Ok(None),
    }
}

/// Writes `value` as JSON if `condition` holds; returns the new revision.
pub fn set_json<T: Serialize + ?Sized>(
    namespace: &str,
    key: &str,
    value: &T,
    condition: Condition,
) -> Result<u64, StorageError> {
    let bytes = encode_json(key, value)?;
    set(namespace, key, &bytes, condition)
}

fn decode_json<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StorageError> {
    serde_json::from_slice(bytes).map_err(|error| StorageError::Deserialize {
        key: key.to_owned(),
        message: error.to_string(),
    })
}

fn encode_json<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<Vec<u8>, StorageError> {
    serde_json::to_vec(value).map_err(|error| StorageError::Serialize {
        key: key.to_owned(),
        message: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_convert_from_the_host() {
        assert_eq!(
            StorageError::from(wit::Error::AccessDenied),
            StorageError::AccessDenied
        );
        assert_eq!(
            StorageError::from(wit::Error::Conflict(Some(3))),
            StorageError::Conflict { current: Some(3) }
        );
        assert_eq!(
            StorageError::from(wit::Error::TooLarge),
            StorageError::TooLarge
        );
        assert_eq!(
            StorageError::from(wit::Error::QuotaExceeded),
            StorageError::QuotaExceeded
        );
        assert_eq!(
            StorageError::from(wit::Error::InvalidArgument("bad cursor".into())),
            StorageError::InvalidArgument("bad cursor".into())
        );
        assert_eq!(
            StorageError::from(wit::Error::Unavailable),
            StorageError::Unavailable
        );
    }

    #[test]
    fn error_messages_name_the_problem() {
        assert_eq!(
            StorageError::Conflict { current: Some(4) }.to_string(),
            "storage write conflict: the key's current revision is 4"
        );
        assert_eq!(
            StorageError::Conflict { current: None }.to_string(),
            "storage write conflict: the key's current revision is none (the key does not exist)"
        );
        assert!(
            StorageError::AccessDenied
                .to_string()
                .contains("`storage` capability")
        );
        assert_eq!(
            StorageError::InvalidArgument("key is empty".into()).to_string(),
            "invalid storage argument: key is empty"
        );
    }

    #[test]
    fn conditions_convert_to_the_host() {
        assert!(matches!(
            wit::Condition::from(Condition::Any),
            wit::Condition::Any
        ));
        assert!(matches!(
            wit::Condition::from(Condition::MustNotExist),
            wit::Condition::MustNotExist
        ));
        assert!(matches!(
            wit::Condition::from(Condition::MustEqualRevision(9)),
            wit::Condition::MustEqualRevision(9)
        ));
        assert_eq!(Condition::default(), Condition::Any);
    }

    #[test]
    fn json_round_trips_and_reports_the_key() {
        let bytes = encode_json("k", &serde_json::json!({"a": 1})).unwrap();
        let value: serde_json::Value = decode_json("k", &bytes).unwrap();
        assert_eq!(value, serde_json::json!({"a": 1}));

        let error = decode_json::<u32>("notes/1", b"\"text\"").unwrap_err();
        assert!(matches!(&error, StorageError::Deserialize { key, .. } if key == "notes/1"));
        assert!(
            error
                .to_string()
                .starts_with("the value of key `notes/1` is not the expected JSON")
        );

        let mut map = std::collections::BTreeMap::new();
        map.insert((1, 2), 3);
        let error = encode_json("bad", &map).unwrap_err();
        assert!(matches!(&error, StorageError::Serialize { key, .. } if key == "bad"));
    }

    #[test]
    fn entries_convert_from_the_host() {
        let entry = Entry::from(wit::Entry {
            key: "k".into(),
            value: vec![1, 2],
            revision: 5,
        });
        assert_eq!(
            entry,
            Entry {
                key: "k".into(),
                value: vec![1, 2],
                revision: 5
            }
        );
    }
}
