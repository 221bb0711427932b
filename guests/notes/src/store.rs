//! Where notes are kept: [`NoteStore`] is the four storage calls the API needs, so the
//! handlers can be tested natively; [`Storage`] is the real thing, the platform's
//! `storage` capability through the SDK.

use palisade_sdk::storage::{self, Condition, Entry, Page, StorageError};

/// The storage namespace the manifest grants.
pub const NAMESPACE: &str = "notes";

/// The storage calls the API makes, all in [`NAMESPACE`].
pub trait NoteStore {
    /// Reads one key.
    fn get(&self, key: &str) -> Result<Option<Entry>, StorageError>;
    /// Writes one key if `condition` holds; returns the new revision.
    fn set(&self, key: &str, value: &[u8], condition: Condition) -> Result<u64, StorageError>;
    /// Deletes one key if `condition` holds; returns whether it existed.
    fn delete(&self, key: &str, condition: Condition) -> Result<bool, StorageError>;
    /// One page of keys in order, after `cursor`.
    fn list(&self, cursor: Option<&str>, limit: u32) -> Result<Page, StorageError>;
}

/// The platform's storage.
#[derive(Debug, Clone, Copy, Default)]
pub struct Storage;

impl NoteStore for Storage {
    fn get(&self, key: &str) -> Result<Option<Entry>, StorageError> {
        storage::get(NAMESPACE, key)
    }

    fn set(&self, key: &str, value: &[u8], condition: Condition) -> Result<u64, StorageError> {
        storage::set(NAMESPACE, key, value, condition)
    }

    fn delete(&self, key: &str, condition: Condition) -> Result<bool, StorageError> {
        storage::delete(NAMESPACE, key, condition)
    }

    fn list(&self, cursor: Option<&str>, limit: u32) -> Result<Page, StorageError> {
        storage::list(NAMESPACE, "", cursor, limit)
    }
}

/// An in-memory store with the platform's semantics, for the handlers' tests.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct Memory {
    entries: std::cell::RefCell<std::collections::BTreeMap<String, (Vec<u8>, u64)>>,
    revision: std::cell::Cell<u64>,
    /// When set, every call fails with this error.
    pub failing: std::cell::RefCell<Option<StorageError>>,
}

#[cfg(test)]
impl Memory {
    fn fail(&self) -> Result<(), StorageError> {
        match self.failing.borrow().clone() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn check(&self, key: &str, condition: Condition) -> Result<(), StorageError> {
        let current = self.entries.borrow().get(key).map(|(_, r)| *r);
        let holds = match condition {
            Condition::Any => true,
            Condition::MustNotExist => current.is_none(),
            Condition::MustEqualRevision(r) => current == Some(r),
        };
        if holds {
            Ok(())
        } else {
            Err(StorageError::Conflict { current })
        }
    }
}

#[cfg(test)]
impl NoteStore for Memory {
    fn get(&self, key: &str) -> Result<Option<Entry>, StorageError> {
        self.fail()?;
        Ok(self
            .entries
            .borrow()
            .get(key)
            .map(|(value, revision)| Entry {
                key: key.to_owned(),
                value: value.clone(),
                revision: *revision,
            }))
    }

    fn set(&self, key: &str, value: &[u8], condition: Condition) -> Result<u64, StorageError> {
        self.fail()?;
        self.check(key, condition)?;
        let revision = self.revision.get() + 1;
        self.revision.set(revision);
        self.entries
            .borrow_mut()
            .insert(key.to_owned(), (value.to_vec(), revision));
        Ok(revision)
    }

    fn delete(&self, key: &str, condition: Condition) -> Result<bool, StorageError> {
        self.fail()?;
        self.check(key, condition)?;
        Ok(self.entries.borrow_mut().remove(key).is_some())
    }

    fn list(&self, cursor: Option<&str>, limit: u32) -> Result<Page, StorageError> {
        self.fail()?;
        let entries = self.entries.borrow();
        let mut after: Vec<_> = entries
            .iter()
            .filter(|(key, _)| cursor.is_none_or(|c| key.as_str() > c))
            .take(limit as usize + 1)
            .map(|(key, (value, revision))| Entry {
                key: key.clone(),
                value: value.clone(),
                revision: *revision,
            })
            .collect();
        let more = after.len() > limit as usize;
        after.truncate(limit as usize);
        let next_cursor = more.then(|| after.last().map(|e| e.key.clone())).flatten();
        Ok(Page {
            entries: after,
            next_cursor,
        })
    }
}
