//! `palisade:extension/storage`: key/value entries per install and namespace, each with a
//! revision; writes and deletes take a condition.
//!
//! The runtime checks everything it can without the backend — the namespace against the
//! install's grant, the key, value, prefix, cursor and page size against the operator's
//! [`StorageLimits`] — and hands the rest (conditions, quotas, paging, durability) to the
//! [`StorageBackend`] the runner provides. The install id always comes from the
//! invocation, never from the guest. What the guest sees:
//! * a namespace outside the grant → `access-denied` (the backend is not asked);
//! * an empty key, a NUL character, a bad cursor or page size → `invalid-argument`;
//! * a key or value over the size limits → `too-large`;
//! * a failed write condition → `conflict` with the key's current revision;
//! * a write over the install's byte quota or the namespace's key quota → `quota-exceeded`;
//! * a call past its budget of storage operations or bytes, or a write over the install's
//!   write rate → `quota-exceeded` (the operator's log names the budget);
//! * a backend failure → `unavailable`; the detail goes to the operator's log with the
//!   invocation's identifiers.
//!
//! A listing's cursor is the URL-safe base64 of the last key returned; the next page
//! starts strictly after it, so paging never repeats an entry or skips one that existed
//! throughout, whatever is written between pages. A page also stops at
//! [`StorageLimits::max_list_bytes`] (and at what is left of the call's byte budget), so a
//! listing never holds more than that in host memory, apart from a single entry larger
//! than the cap, which is returned alone.

mod rate;

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use wasmtime::component::{HasData, Linker};

use crate::bindings::current::storage::{
    self, Condition as WitCondition, Entry as WitEntry, Error as WitError, Page as WitPage,
};
use crate::capability::{Capability, CapabilityKey, Configure, Linked, Prepare};
use crate::execute::Invocation;
use crate::state::InstanceState;

pub use rate::WriteRate;

/// The operator's bounds on storage. Every field has a documented default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct StorageLimits {
    /// Longest key (and listing prefix), in UTF-8 bytes. Default 512.
    pub max_key_bytes: usize,
    /// Largest value, in bytes. Default 1 MiB.
    pub max_value_bytes: usize,
    /// Most keys one namespace of an install may hold. Default 100 000.
    pub max_keys_per_namespace: u64,
    /// Most bytes (keys plus values, across namespaces) one install may hold; a manifest's
    /// `capabilities.storage.max_bytes` may ask for less, never more. Default 64 MiB.
    pub max_bytes_per_install: u64,
    /// Largest page a listing may ask for. Default 1000.
    pub max_list_limit: u32,
    /// Most key and value bytes of one listing page; a page with more entries stops before
    /// the entry that would cross it (its first entry is always returned). Default 4 MiB.
    pub max_list_bytes: u64,
    /// Storage operations (get, set, delete, list-entries) one call may make. Default 1000.
    pub max_ops_per_call: u32,
    /// Key and value bytes one call may read and write, across its operations.
    /// Default 32 MiB.
    pub max_bytes_per_call: u64,
    /// Writes (set and delete) one install may make per second on one runner, on average;
    /// `0` turns the write rate off. Default 200.
    pub install_writes_per_second: u32,
    /// Writes one install may make at once after a quiet period (at least 1). Default 1000.
    pub install_write_burst: u32,
}

impl Default for StorageLimits {
    fn default() -> Self {
        StorageLimits {
            max_key_bytes: 512,
            max_value_bytes: 1024 * 1024,
            max_keys_per_namespace: 100_000,
            max_bytes_per_install: 64 * 1024 * 1024,
            max_list_limit: 1000,
            max_list_bytes: 4 * 1024 * 1024,
            max_ops_per_call: 1000,
            max_bytes_per_call: 32 * 1024 * 1024,
            install_writes_per_second: 200,
            install_write_burst: 1000,
        }
    }
}

impl StorageLimits {
    /// The quota of an install whose manifest asks for at most `requested_max_bytes`.
    pub fn quota(&self, requested_max_bytes: Option<u64>) -> WriteBounds {
        WriteBounds {
            max_keys_per_namespace: self.max_keys_per_namespace,
            max_bytes: requested_max_bytes.map_or(self.max_bytes_per_install, |b| {
                b.min(self.max_bytes_per_install)
            }),
        }
    }
}

/// The bounds one write must stay within; the backend checks them in the write's
/// transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteBounds {
    /// Most keys the namespace may hold after the write.
    pub max_keys_per_namespace: u64,
    /// Most bytes (keys plus values) the install may hold after the write.
    pub max_bytes: u64,
}

/// The precondition of a write or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Whatever is there.
    Any,
    /// Only if the key does not exist.
    MustNotExist,
    /// Only if the key exists with exactly this revision.
    MustEqualRevision(u64),
}

impl From<WitCondition> for Condition {
    fn from(condition: WitCondition) -> Self {
        match condition {
            WitCondition::Any => Condition::Any,
            WitCondition::MustNotExist => Condition::MustNotExist,
            WitCondition::MustEqualRevision(revision) => Condition::MustEqualRevision(revision),
        }
    }
}

/// One stored entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// The key.
    pub key: String,
    /// The stored bytes.
    pub value: Vec<u8>,
    /// The revision of this value.
    pub revision: u64,
}

/// One page of a listing, in key order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredPage {
    /// The entries, at most the requested limit.
    pub entries: Vec<StoredEntry>,
    /// Whether more entries with the prefix follow the last one.
    pub more: bool,
}

/// Which install and namespace a call is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope<'a> {
    /// The install, from the invocation.
    pub install_id: &'a str,
    /// A namespace the install's grant names.
    pub namespace: &'a str,
}

/// Why the backend did not do what was asked. Nothing was changed in any case.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The write condition does not hold.
    #[error("write condition failed; current revision {current:?}")]
    Conflict {
        /// The key's current revision, `None` if it does not exist.
        current: Option<u64>,
    },
    /// The write would exceed the quota; the text says which (for the operator's log).
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    /// The backend failed; the text is for the operator's log only.
    #[error(transparent)]
    Unavailable(Box<dyn std::error::Error + Send + Sync>),
}

impl BackendError {
    /// Wraps a backend failure.
    pub fn unavailable(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        BackendError::Unavailable(Box::new(error))
    }
}

/// What every [`StorageBackend`] method returns.
pub type BackendFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BackendError>> + Send + 'a>>;

/// The host-side service behind the `storage` capability. Arguments are already checked
/// against the grant and the [`limits`](StorageBackend::limits) when a method is called.
pub trait StorageBackend: Send + Sync + 'static {
    /// The operator's bounds this backend enforces.
    fn limits(&self) -> &StorageLimits;

    /// Reads one key.
    fn get<'a>(&'a self, scope: Scope<'a>, key: &'a str) -> BackendFuture<'a, Option<StoredEntry>>;

    /// Writes one key if `condition` holds and `quota` allows it, in one transaction that
    /// is committed before the future completes; returns the new revision. Revisions of an
    /// install grow with every write, also across a delete and re-create of a key.
    fn set<'a>(
        &'a self,
        scope: Scope<'a>,
        key: &'a str,
        value: &'a [u8],
        condition: Condition,
        quota: WriteBounds,
    ) -> BackendFuture<'a, u64>;

    /// Deletes one key if `condition` holds, committed before the future completes;
    /// returns whether a key was deleted.
    fn delete<'a>(
        &'a self,
        scope: Scope<'a>,
        key: &'a str,
        condition: Condition,
    ) -> BackendFuture<'a, bool>;

    /// Lists at most `limit` entries whose key starts with `prefix`, in byte order of the
    /// keys, strictly after `after` when given. The page stops before the entry whose key
    /// and value bytes would take the page past `max_bytes` (setting
    /// [`more`](StoredPage::more)), except that its first entry is always returned.
    fn list<'a>(
        &'a self,
        scope: Scope<'a>,
        prefix: &'a str,
        after: Option<&'a str>,
        limit: u32,
        max_bytes: u64,
    ) -> BackendFuture<'a, StoredPage>;

    /// The per-install write rate shared by every call on this backend, if any; the runtime
    /// takes one token from it before each `set` and `delete`.
    fn write_rate(&self) -> Option<&WriteRate> {
        None
    }
}

/// The cursor handed to the guest after a page ending at `key`.
pub fn encode_cursor(key: &str) -> String {
    URL_SAFE_NO_PAD.encode(key.as_bytes())
}

/// The key a cursor continues after, if it is one [`encode_cursor`] could have made.
pub fn decode_cursor(cursor: &str, limits: &StorageLimits) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let key = String::from_utf8(bytes).ok()?;
    check_key(&key, limits).ok()?;
    Some(key)
}

/// Checks a key against the limits.
fn check_key(key: &str, limits: &StorageLimits) -> Result<(), WitError> {
    if key.is_empty() {
        return Err(WitError::InvalidArgument("the key is empty".into()));
    }
    if key.contains('\0') {
        return Err(WitError::InvalidArgument(
            "the key contains a NUL character".into(),
        ));
    }
    if key.len() > limits.max_key_bytes {
        return Err(WitError::TooLarge);
    }
    Ok(())
}

/// Per-call state of the `storage` capability: the granted namespaces, the install's quota
/// and where to read and write.
#[derive(Default)]
pub struct StorageState {
    namespaces: BTreeSet<String>,
    backend: Option<Arc<dyn StorageBackend>>,
    limits: StorageLimits,
    requested_max_bytes: Option<u64>,
    /// The install whose storage this is (the call's other identifiers are in its span).
    install_id: String,
    /// Operations this call has made.
    ops: AtomicU32,
    /// Key and value bytes this call has read and written.
    bytes: AtomicU64,
    /// Whether this call has logged a budget refusal at `WARN` already.
    budget_logged: AtomicBool,
}

/// Size of a key and value, as the budgets count it.
fn entry_bytes(key: &str, value_len: usize) -> u64 {
    u64::try_from(key.len().saturating_add(value_len)).unwrap_or(u64::MAX)
}

impl std::fmt::Debug for StorageState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageState")
            .field("namespaces", &self.namespaces)
            .field("backend", &self.backend.is_some())
            .field("limits", &self.limits)
            .field("requested_max_bytes", &self.requested_max_bytes)
            .field("install_id", &self.install_id)
            .field("ops", &self.ops)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl StorageState {
    /// Prepares the state for one call, or `None` when the install's grant has no
    /// `storage`. Without a backend every granted call is `unavailable`.
    pub fn new(backend: Option<Arc<dyn StorageBackend>>, invocation: &Invocation) -> Option<Self> {
        let grant = invocation.grants.storage.as_ref()?;
        let limits = backend.as_ref().map(|b| *b.limits()).unwrap_or_default();
        Some(StorageState {
            namespaces: grant.namespaces.iter().cloned().collect(),
            requested_max_bytes: grant.max_bytes,
            backend,
            limits,
            install_id: invocation.install_id.clone(),
            ops: AtomicU32::new(0),
            bytes: AtomicU64::new(0),
            budget_logged: AtomicBool::new(false),
        })
    }

    /// Counts one operation against the call's budget; `quota-exceeded` once it is spent.
    fn take_op(&self, op: &'static str, namespace: &str) -> Result<(), WitError> {
        let max = self.limits.max_ops_per_call;
        let used = self.ops.load(Ordering::Relaxed);
        if used >= max {
            self.log_budget(
                op,
                namespace,
                "operations per call",
                format!("operation {} of at most {max}", u64::from(used) + 1),
            );
            return Err(WitError::QuotaExceeded);
        }
        self.ops.store(used + 1, Ordering::Relaxed);
        Ok(())
    }

    /// Key and value bytes the call may still read or write.
    fn bytes_left(&self) -> u64 {
        self.limits
            .max_bytes_per_call
            .saturating_sub(self.bytes.load(Ordering::Relaxed))
    }

    /// Counts `bytes` against the call's byte budget; `quota-exceeded` (and nothing
    /// counted) if they do not fit.
    fn charge_bytes(&self, op: &'static str, namespace: &str, bytes: u64) -> Result<(), WitError> {
        let max = self.limits.max_bytes_per_call;
        let total = self.bytes.load(Ordering::Relaxed).saturating_add(bytes);
        if total > max {
            self.log_budget(
                op,
                namespace,
                "bytes per call",
                format!("{total} bytes of at most {max}"),
            );
            return Err(WitError::QuotaExceeded);
        }
        self.bytes.store(total, Ordering::Relaxed);
        Ok(())
    }

    /// Takes a token from the install's write rate; `quota-exceeded` when none is left.
    fn take_write(
        &self,
        backend: &dyn StorageBackend,
        op: &'static str,
        namespace: &str,
    ) -> Result<(), WitError> {
        let Some(rate) = backend.write_rate() else {
            return Ok(());
        };
        if rate.check(&self.install_id) {
            return Ok(());
        }
        self.log_budget(
            op,
            namespace,
            "install writes per second",
            format!(
                "more than {} writes a second (burst {})",
                rate.per_second(),
                rate.burst()
            ),
        );
        Err(WitError::QuotaExceeded)
    }

    /// Tells the operator which budget a refusal spent: the first refusal of a call at
    /// `WARN`, any further ones of that call at `DEBUG`, so a guest retrying in a loop
    /// cannot flood the log.
    fn log_budget(&self, op: &'static str, namespace: &str, budget: &'static str, detail: String) {
        if self.budget_logged.swap(true, Ordering::Relaxed) {
            tracing::debug!(
                namespace,
                op,
                budget,
                detail,
                "storage budget exhausted again"
            );
            return;
        }
        tracing::warn!(
            namespace,
            op,
            budget,
            detail,
            "storage budget exhausted; the guest sees `quota-exceeded`"
        );
    }

    /// `access-denied` unless the install's grant names `namespace`.
    fn check_granted(&self, namespace: &str) -> Result<(), WitError> {
        if self.namespaces.contains(namespace) {
            Ok(())
        } else {
            Err(WitError::AccessDenied)
        }
    }

    /// The backend and scope for `namespace` (already checked to be granted).
    fn open<'a>(
        &'a self,
        op: &'static str,
        namespace: &'a str,
    ) -> Result<(&'a dyn StorageBackend, Scope<'a>), WitError> {
        let Some(backend) = &self.backend else {
            self.log_unavailable(
                op,
                namespace,
                "this runner has no storage backend configured",
            );
            return Err(WitError::Unavailable);
        };
        Ok((
            backend.as_ref(),
            Scope {
                install_id: &self.install_id,
                namespace,
            },
        ))
    }

    /// Reads one key for the guest.
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<WitEntry>, WitError> {
        self.check_granted(namespace)?;
        check_key(key, &self.limits)?;
        let (backend, scope) = self.open("get", namespace)?;
        self.take_op("get", namespace)?;
        let found = backend
            .get(scope, key)
            .await
            .map_err(|e| self.backend_error("get", namespace, e))?;
        if let Some(entry) = &found {
            self.charge_bytes("get", namespace, entry_bytes(&entry.key, entry.value.len()))?;
        }
        Ok(found.map(wit_entry))
    }

    /// Writes one key for the guest.
    async fn set(
        &self,
        namespace: &str,
        key: &str,
        value: &[u8],
        condition: Condition,
    ) -> Result<u64, WitError> {
        self.check_granted(namespace)?;
        check_key(key, &self.limits)?;
        if value.len() > self.limits.max_value_bytes {
            return Err(WitError::TooLarge);
        }
        let (backend, scope) = self.open("set", namespace)?;
        self.take_op("set", namespace)?;
        self.charge_bytes("set", namespace, entry_bytes(key, value.len()))?;
        self.take_write(backend, "set", namespace)?;
        let quota = self.limits.quota(self.requested_max_bytes);
        backend
            .set(scope, key, value, condition, quota)
            .await
            .map_err(|e| self.backend_error("set", namespace, e))
    }

    /// Deletes one key for the guest.
    async fn delete(
        &self,
        namespace: &str,
        key: &str,
        condition: Condition,
    ) -> Result<bool, WitError> {
        self.check_granted(namespace)?;
        check_key(key, &self.limits)?;
        let (backend, scope) = self.open("delete", namespace)?;
        self.take_op("delete", namespace)?;
        self.charge_bytes("delete", namespace, entry_bytes(key, 0))?;
        self.take_write(backend, "delete", namespace)?;
        backend
            .delete(scope, key, condition)
            .await
            .map_err(|e| self.backend_error("delete", namespace, e))
    }

    /// Lists one page for the guest.
    async fn list(
        &self,
        namespace: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<WitPage, WitError> {
        self.check_granted(namespace)?;
        let max = self.limits.max_list_limit;
        if limit == 0 || limit > max {
            return Err(WitError::InvalidArgument(format!(
                "the limit {limit} is outside 1..={max}"
            )));
        }
        if prefix.contains('\0') {
            return Err(WitError::InvalidArgument(
                "the prefix contains a NUL character".into(),
            ));
        }
        if prefix.len() > self.limits.max_key_bytes {
            return Err(WitError::InvalidArgument(format!(
                "the prefix is longer than the longest key ({} bytes)",
                self.limits.max_key_bytes
            )));
        }
        let after = match cursor {
            None => None,
            Some(cursor) => Some(decode_cursor(cursor, &self.limits).ok_or_else(|| {
                WitError::InvalidArgument("the cursor is not one that list-entries returned".into())
            })?),
        };
        let (backend, scope) = self.open("list-entries", namespace)?;
        self.take_op("list-entries", namespace)?;
        // The page stops at the listing cap or at what is left of the call's byte budget.
        let max_bytes = self.limits.max_list_bytes.min(self.bytes_left()).max(1);
        let page = backend
            .list(scope, prefix, after.as_deref(), limit, max_bytes)
            .await
            .map_err(|e| self.backend_error("list-entries", namespace, e))?;
        let page_bytes = page.entries.iter().fold(0u64, |sum, e| {
            sum.saturating_add(entry_bytes(&e.key, e.value.len()))
        });
        self.charge_bytes("list-entries", namespace, page_bytes)?;
        let next_cursor = if page.more {
            page.entries.last().map(|e| encode_cursor(&e.key))
        } else {
            None
        };
        Ok(WitPage {
            entries: page.entries.into_iter().map(wit_entry).collect(),
            next_cursor,
        })
    }

    /// The guest's view of a backend error; failures are logged for the operator.
    fn backend_error(&self, op: &'static str, namespace: &str, error: BackendError) -> WitError {
        match error {
            BackendError::Conflict { current } => WitError::Conflict(current),
            BackendError::QuotaExceeded(detail) => {
                tracing::info!(namespace, op, detail, "storage quota exceeded");
                WitError::QuotaExceeded
            }
            BackendError::Unavailable(error) => {
                self.log_unavailable(op, namespace, &error.to_string());
                WitError::Unavailable
            }
        }
    }

    fn log_unavailable(&self, op: &'static str, namespace: &str, error: &str) {
        tracing::error!(
            namespace,
            op,
            error,
            "storage backend failed; the guest sees `unavailable`"
        );
    }
}

fn wit_entry(entry: StoredEntry) -> WitEntry {
    WitEntry {
        key: entry.key,
        value: entry.value,
        revision: entry.revision,
    }
}

/// The `storage` capability: the runner's backend.
pub(crate) struct Storage {
    backend: Option<Arc<dyn StorageBackend>>,
}

impl Capability for Storage {
    const KEY: CapabilityKey = CapabilityKey::Storage;
    type State = StorageState;

    fn configure(runtime: &Configure<'_>) -> Self {
        Storage {
            backend: runtime.services.storage.clone(),
        }
    }

    fn prepare(&self, call: &Prepare<'_>) -> Option<StorageState> {
        StorageState::new(self.backend.clone(), call.invocation)
    }

    fn link(linker: &mut Linker<InstanceState>) -> wasmtime::Result<()> {
        storage::add_to_linker::<_, Storage>(linker, |s| s.caps.linked::<Storage>())
    }
}

impl HasData for Storage {
    type Data<'a> = Linked<'a, StorageState>;
}

impl storage::Host for Linked<'_, StorageState> {
    async fn get(
        &mut self,
        namespace: String,
        key: String,
    ) -> wasmtime::Result<Result<Option<WitEntry>, WitError>> {
        Ok(StorageState::get(self.state()?, &namespace, &key).await)
    }

    async fn set(
        &mut self,
        namespace: String,
        key: String,
        value: Vec<u8>,
        condition: WitCondition,
    ) -> wasmtime::Result<Result<u64, WitError>> {
        Ok(StorageState::set(self.state()?, &namespace, &key, &value, condition.into()).await)
    }

    async fn delete(
        &mut self,
        namespace: String,
        key: String,
        condition: WitCondition,
    ) -> wasmtime::Result<Result<bool, WitError>> {
        Ok(StorageState::delete(self.state()?, &namespace, &key, condition.into()).await)
    }

    async fn list_entries(
        &mut self,
        namespace: String,
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Result<WitPage, WitError>> {
        Ok(StorageState::list(self.state()?, &namespace, &prefix, cursor.as_deref(), limit).await)
    }
}

#[cfg(test)]
mod tests;
