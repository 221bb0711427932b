//! The fake of `palisade:extension/storage`, with the host's checks in the host's order:
//! the namespace (`access-denied`), the arguments and sizes (`invalid-argument`,
//! `too-large`), the call's operation and byte budgets (`quota-exceeded`), then the
//! condition (`conflict`) and the quotas (`quota-exceeded`). A refused call changes
//! nothing. The limits are the operator's defaults (`StorageLimits`).

use std::collections::BTreeMap;
use std::ops::Bound;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

pub(crate) use crate::bindings::storage::palisade::extension::storage::{
    Condition, Entry, Error, Page,
};

use super::{State, not_granted, with_state};

const MAX_KEY_BYTES: usize = 512;
const MAX_VALUE_BYTES: usize = 1024 * 1024;
const MAX_KEYS_PER_NAMESPACE: u64 = 100_000;
const MAX_BYTES_PER_INSTALL: u64 = 64 * 1024 * 1024;
const MAX_LIST_LIMIT: u32 = 1000;
const MAX_LIST_BYTES: u64 = 4 * 1024 * 1024;
const MAX_OPS_PER_CALL: u32 = 1000;
const MAX_BYTES_PER_CALL: u64 = 32 * 1024 * 1024;

/// One install's entries and counters, and the current call's budgets.
#[derive(Default)]
pub(crate) struct Store {
    namespaces: BTreeMap<String, BTreeMap<String, Stored>>,
    /// The install's revision counter: the last revision given out.
    revision: u64,
    /// Key and value bytes of every entry.
    bytes: u64,
    call_ops: u32,
    call_bytes: u64,
}

struct Stored {
    value: Vec<u8>,
    revision: u64,
}

impl Store {
    pub(crate) fn begin_call(&mut self) {
        self.call_ops = 0;
        self.call_bytes = 0;
    }

    pub(crate) fn entry(&self, namespace: &str, key: &str) -> Option<crate::storage::Entry> {
        let stored = self.namespaces.get(namespace)?.get(key)?;
        Some(crate::storage::Entry {
            key: key.to_owned(),
            value: stored.value.clone(),
            revision: stored.revision,
        })
    }

    fn take_op(&mut self) -> Result<(), Error> {
        if self.call_ops >= MAX_OPS_PER_CALL {
            return Err(Error::QuotaExceeded);
        }
        self.call_ops += 1;
        Ok(())
    }

    fn bytes_left(&self) -> u64 {
        MAX_BYTES_PER_CALL.saturating_sub(self.call_bytes)
    }

    fn charge(&mut self, bytes: u64) -> Result<(), Error> {
        if bytes > self.bytes_left() {
            return Err(Error::QuotaExceeded);
        }
        self.call_bytes += bytes;
        Ok(())
    }
}

fn entry_bytes(key: &str, value_len: usize) -> u64 {
    (key.len() + value_len) as u64
}

fn holds(condition: Condition, current: Option<u64>) -> bool {
    match condition {
        Condition::Any => true,
        Condition::MustNotExist => current.is_none(),
        Condition::MustEqualRevision(revision) => current == Some(revision),
    }
}

fn check_key(key: &str) -> Result<(), Error> {
    if key.is_empty() {
        return Err(Error::InvalidArgument("the key is empty".into()));
    }
    if key.contains('\0') {
        return Err(Error::InvalidArgument(
            "the key contains a NUL character".into(),
        ));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::TooLarge);
    }
    Ok(())
}

/// The granted install's store, after the namespace check; `max_bytes` is the install's
/// byte quota.
fn granted<R>(
    function: &str,
    namespace: &str,
    f: impl FnOnce(&mut Store, u64) -> Result<R, Error>,
) -> Result<R, Error> {
    with_state(function, |state: &mut State| {
        let Some((namespaces, max_bytes)) = &state.grants.storage else {
            not_granted("palisade:extension/storage", "storage");
        };
        if !namespaces.contains(namespace) {
            return Err(Error::AccessDenied);
        }
        let quota = max_bytes.map_or(MAX_BYTES_PER_INSTALL, |max| max.min(MAX_BYTES_PER_INSTALL));
        f(&mut state.storage, quota)
    })
}

pub(crate) fn get(namespace: &str, key: &str) -> Result<Option<Entry>, Error> {
    granted("storage::get", namespace, |store, _| {
        check_key(key)?;
        store.take_op()?;
        let found = store.entry(namespace, key);
        if let Some(entry) = &found {
            store.charge(entry_bytes(key, entry.value.len()))?;
        }
        Ok(found.map(|entry| Entry {
            key: entry.key,
            value: entry.value,
            revision: entry.revision,
        }))
    })
}

pub(crate) fn set(
    namespace: &str,
    key: &str,
    value: &[u8],
    condition: Condition,
) -> Result<u64, Error> {
    granted("storage::set", namespace, |store, quota| {
        check_key(key)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(Error::TooLarge);
        }
        store.take_op()?;
        store.charge(entry_bytes(key, value.len()))?;
        let entries = store.namespaces.entry(namespace.to_owned()).or_default();
        let current = entries.get(key);
        if !holds(condition, current.map(|c| c.revision)) {
            return Err(Error::Conflict(current.map(|c| c.revision)));
        }
        let old = current.map_or(0, |c| entry_bytes(key, c.value.len()));
        let new = entry_bytes(key, value.len());
        let bytes = store.bytes - old + new;
        if new > old && bytes > quota {
            return Err(Error::QuotaExceeded);
        }
        if current.is_none() && entries.len() as u64 >= MAX_KEYS_PER_NAMESPACE {
            return Err(Error::QuotaExceeded);
        }
        store.revision += 1;
        let revision = store.revision;
        entries.insert(
            key.to_owned(),
            Stored {
                value: value.to_vec(),
                revision,
            },
        );
        store.bytes = bytes;
        Ok(revision)
    })
}

pub(crate) fn delete(namespace: &str, key: &str, condition: Condition) -> Result<bool, Error> {
    granted("storage::delete", namespace, |store, _| {
        check_key(key)?;
        store.take_op()?;
        store.charge(entry_bytes(key, 0))?;
        let entries = store.namespaces.entry(namespace.to_owned()).or_default();
        let current = entries.get(key).map(|c| c.revision);
        if !holds(condition, current) {
            return Err(Error::Conflict(current));
        }
        match entries.remove(key) {
            Some(removed) => {
                store.bytes -= entry_bytes(key, removed.value.len());
                Ok(true)
            }
            None => Ok(false),
        }
    })
}

pub(crate) fn list_entries(
    namespace: &str,
    prefix: &str,
    cursor: Option<&str>,
    limit: u32,
) -> Result<Page, Error> {
    granted("storage::list_entries", namespace, |store, _| {
        if limit == 0 || limit > MAX_LIST_LIMIT {
            return Err(Error::InvalidArgument(format!(
                "the limit {limit} is outside 1..={MAX_LIST_LIMIT}"
            )));
        }
        if prefix.contains('\0') {
            return Err(Error::InvalidArgument(
                "the prefix contains a NUL character".into(),
            ));
        }
        if prefix.len() > MAX_KEY_BYTES {
            return Err(Error::InvalidArgument(format!(
                "the prefix is longer than the longest key ({MAX_KEY_BYTES} bytes)"
            )));
        }
        let after = match cursor {
            None => None,
            Some(cursor) => Some(decode_cursor(cursor).ok_or_else(|| {
                Error::InvalidArgument("the cursor is not one that list-entries returned".into())
            })?),
        };
        store.take_op()?;
        let max_bytes = MAX_LIST_BYTES.min(store.bytes_left()).max(1);
        let start = match after.as_deref().filter(|after| *after >= prefix) {
            Some(after) => Bound::Excluded(after.to_owned()),
            None => Bound::Included(prefix.to_owned()),
        };
        let mut entries = Vec::new();
        let (mut page_bytes, mut more) = (0u64, false);
        if let Some(stored) = store.namespaces.get(namespace) {
            for (key, value) in stored
                .range((start, Bound::Unbounded))
                .take_while(|(key, _)| key.starts_with(prefix))
            {
                let size = entry_bytes(key, value.value.len());
                let fits = entries.is_empty() || page_bytes + size <= max_bytes;
                if entries.len() >= limit as usize || !fits {
                    more = true;
                    break;
                }
                page_bytes += size;
                entries.push(Entry {
                    key: key.clone(),
                    value: value.value.clone(),
                    revision: value.revision,
                });
            }
        }
        store.charge(page_bytes)?;
        let next_cursor = if more {
            entries
                .last()
                .map(|e| URL_SAFE_NO_PAD.encode(e.key.as_bytes()))
        } else {
            None
        };
        Ok(Page {
            entries,
            next_cursor,
        })
    })
}

fn decode_cursor(cursor: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let key = String::from_utf8(bytes).ok()?;
    check_key(&key).ok()?;
    Some(key)
}
