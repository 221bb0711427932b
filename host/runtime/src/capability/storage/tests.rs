use std::collections::BTreeMap;
use std::sync::Mutex;

use palisade_bundle::manifest::{Capabilities, StorageCapability};

use super::*;

/// The WIT types have no `PartialEq`; compare their debug forms (`right` is inferred to be
/// of `left`'s type).
macro_rules! assert_same {
    ($left:expr, $right:expr $(, $($msg:tt)+)?) => {{
        let left = $left;
        let right = same_type(&left, $right);
        assert_eq!(format!("{left:?}"), format!("{right:?}") $(, $($msg)+)?)
    }};
}

fn same_type<T>(_: &T, right: T) -> T {
    right
}

#[derive(Debug, thiserror::Error)]
#[error("disk on fire")]
struct OnFire;

/// (install, namespace, key)
type Id = (String, String, String);

/// Entries by [`Id`] with their revisions; a counter per backend; records every call.
#[derive(Default)]
struct Fake {
    limits: StorageLimits,
    entries: Mutex<BTreeMap<Id, (Vec<u8>, u64)>>,
    revision: Mutex<u64>,
    calls: Mutex<Vec<String>>,
    broken: bool,
    quotas: Mutex<Vec<WriteBounds>>,
    rate: Option<WriteRate>,
}

impl Fake {
    fn with_limits(limits: StorageLimits) -> Self {
        Fake {
            limits,
            ..Fake::default()
        }
    }

    fn record(&self, call: String) -> Result<(), BackendError> {
        self.calls.lock().unwrap().push(call);
        if self.broken {
            Err(BackendError::unavailable(OnFire))
        } else {
            Ok(())
        }
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

fn id(scope: Scope<'_>, key: &str) -> Id {
    (scope.install_id.into(), scope.namespace.into(), key.into())
}

impl StorageBackend for Fake {
    fn limits(&self) -> &StorageLimits {
        &self.limits
    }

    fn get<'a>(&'a self, scope: Scope<'a>, key: &'a str) -> BackendFuture<'a, Option<StoredEntry>> {
        Box::pin(async move {
            self.record(format!(
                "get {} {} {key}",
                scope.install_id, scope.namespace
            ))?;
            Ok(self
                .entries
                .lock()
                .unwrap()
                .get(&id(scope, key))
                .map(|(value, revision)| StoredEntry {
                    key: key.into(),
                    value: value.clone(),
                    revision: *revision,
                }))
        })
    }

    fn set<'a>(
        &'a self,
        scope: Scope<'a>,
        key: &'a str,
        value: &'a [u8],
        condition: Condition,
        quota: WriteBounds,
    ) -> BackendFuture<'a, u64> {
        Box::pin(async move {
            self.record(format!(
                "set {} {} {key}",
                scope.install_id, scope.namespace
            ))?;
            self.quotas.lock().unwrap().push(quota);
            let mut entries = self.entries.lock().unwrap();
            let current = entries.get(&id(scope, key)).map(|(_, r)| *r);
            let holds = match condition {
                Condition::Any => true,
                Condition::MustNotExist => current.is_none(),
                Condition::MustEqualRevision(r) => current == Some(r),
            };
            if !holds {
                return Err(BackendError::Conflict { current });
            }
            if value.len() as u64 > quota.max_bytes {
                return Err(BackendError::QuotaExceeded("bytes".into()));
            }
            let mut revision = self.revision.lock().unwrap();
            *revision += 1;
            entries.insert(id(scope, key), (value.to_vec(), *revision));
            Ok(*revision)
        })
    }

    fn delete<'a>(
        &'a self,
        scope: Scope<'a>,
        key: &'a str,
        condition: Condition,
    ) -> BackendFuture<'a, bool> {
        Box::pin(async move {
            self.record(format!(
                "delete {} {} {key}",
                scope.install_id, scope.namespace
            ))?;
            let mut entries = self.entries.lock().unwrap();
            let current = entries.get(&id(scope, key)).map(|(_, r)| *r);
            if let Condition::MustEqualRevision(r) = condition
                && current != Some(r)
            {
                return Err(BackendError::Conflict { current });
            }
            Ok(entries.remove(&id(scope, key)).is_some())
        })
    }

    fn list<'a>(
        &'a self,
        scope: Scope<'a>,
        prefix: &'a str,
        after: Option<&'a str>,
        limit: u32,
        max_bytes: u64,
    ) -> BackendFuture<'a, StoredPage> {
        Box::pin(async move {
            self.record(format!(
                "list {} {} {prefix} {after:?} {limit} {max_bytes}",
                scope.install_id, scope.namespace
            ))?;
            let entries = self.entries.lock().unwrap();
            let mut page = StoredPage::default();
            let mut bytes = 0u64;
            for ((install, namespace, key), (value, revision)) in entries.iter() {
                if install != scope.install_id
                    || namespace != scope.namespace
                    || !key.starts_with(prefix)
                    || after.is_some_and(|a| key.as_str() <= a)
                {
                    continue;
                }
                let size = (key.len() + value.len()) as u64;
                if page.entries.len() == limit as usize
                    || (!page.entries.is_empty() && bytes + size > max_bytes)
                {
                    page.more = true;
                    break;
                }
                bytes += size;
                page.entries.push(StoredEntry {
                    key: key.clone(),
                    value: value.clone(),
                    revision: *revision,
                });
            }
            Ok(page)
        })
    }

    fn write_rate(&self) -> Option<&WriteRate> {
        self.rate.as_ref()
    }
}

fn invocation(install_id: &str, namespaces: &[&str], max_bytes: Option<u64>) -> Invocation {
    Invocation {
        request_id: "req-1".into(),
        tenant_id: "acme".into(),
        extension_id: "com.example.notes".into(),
        install_id: install_id.into(),
        grants: Capabilities {
            storage: Some(StorageCapability {
                namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
                max_bytes,
            }),
            ..Capabilities::default()
        },
        ..Invocation::default()
    }
}

fn state(backend: &Arc<Fake>, install_id: &str, namespaces: &[&str]) -> StorageState {
    let backend: Arc<dyn StorageBackend> = backend.clone();
    StorageState::new(Some(backend), &invocation(install_id, namespaces, None)).unwrap()
}

#[tokio::test]
async fn granted_namespaces_round_trip_through_the_backend() {
    let fake = Arc::new(Fake::default());
    let s = state(&fake, "inst-1", &["notes"]);
    assert_same!(s.get("notes", "a").await, Ok(None));
    let rev = s.set("notes", "a", b"one", Condition::Any).await.unwrap();
    let entry = s.get("notes", "a").await.unwrap().unwrap();
    assert_eq!(
        (entry.key.as_str(), entry.value.as_slice(), entry.revision),
        ("a", &b"one"[..], rev)
    );
    assert_same!(s.delete("notes", "a", Condition::Any).await, Ok(true));
    assert_same!(s.delete("notes", "a", Condition::Any).await, Ok(false));
    // The install id is the invocation's, whatever the guest passes.
    assert!(fake.calls().iter().all(|c| c.contains(" inst-1 notes ")));
}

#[tokio::test]
async fn other_namespaces_are_denied_without_asking_the_backend() {
    let fake = Arc::new(Fake::default());
    let s = state(&fake, "inst-1", &["notes"]);
    assert_same!(s.get("secret", "a").await, Err(WitError::AccessDenied));
    assert_same!(
        s.set("secret", "a", b"v", Condition::Any).await,
        Err(WitError::AccessDenied)
    );
    assert_same!(
        s.delete("secret", "a", Condition::Any).await,
        Err(WitError::AccessDenied)
    );
    assert_same!(
        s.list("secret", "", None, 10).await,
        Err(WitError::AccessDenied)
    );
    // Denial comes before argument checks, so nothing about the namespace leaks.
    assert_same!(s.get("secret", "").await, Err(WitError::AccessDenied));
    assert!(fake.calls().is_empty());

    // A call without prepared state (storage not granted) denies everything.
    let ungranted = StorageState::default();
    assert_same!(
        ungranted.get("notes", "a").await,
        Err(WitError::AccessDenied)
    );
    let none: Option<Arc<dyn StorageBackend>> = None;
    assert!(StorageState::new(none, &Invocation::default()).is_none());
}

#[tokio::test]
async fn keys_and_values_are_checked_against_the_limits() {
    let fake = Arc::new(Fake::with_limits(StorageLimits {
        max_key_bytes: 4,
        max_value_bytes: 3,
        ..StorageLimits::default()
    }));
    let s = state(&fake, "inst-1", &["notes"]);
    assert_same!(
        s.get("notes", "").await,
        Err(WitError::InvalidArgument("the key is empty".into()))
    );
    assert_same!(
        s.set("notes", "a\0b", b"v", Condition::Any).await,
        Err(WitError::InvalidArgument(
            "the key contains a NUL character".into()
        ))
    );
    assert_same!(
        s.set("notes", "abcde", b"v", Condition::Any).await,
        Err(WitError::TooLarge)
    );
    assert_same!(
        s.set("notes", "abcd", b"vvvv", Condition::Any).await,
        Err(WitError::TooLarge)
    );
    assert_same!(
        s.delete("notes", "ééé", Condition::Any).await,
        Err(WitError::TooLarge),
        "the limit counts UTF-8 bytes"
    );
    assert!(fake.calls().is_empty(), "refused before the backend");
    assert!(s.set("notes", "abcd", b"vvv", Condition::Any).await.is_ok());
}

#[tokio::test]
async fn conflicts_carry_the_current_revision() {
    let fake = Arc::new(Fake::default());
    let s = state(&fake, "inst-1", &["notes"]);
    let rev = s
        .set("notes", "k", b"v", Condition::MustNotExist)
        .await
        .unwrap();
    assert_same!(
        s.set("notes", "k", b"w", Condition::MustNotExist).await,
        Err(WitError::Conflict(Some(rev)))
    );
    assert_same!(
        s.set("notes", "x", b"w", Condition::MustEqualRevision(7))
            .await,
        Err(WitError::Conflict(None))
    );
    assert_same!(
        s.delete("notes", "k", Condition::MustEqualRevision(rev + 1))
            .await,
        Err(WitError::Conflict(Some(rev)))
    );
}

#[tokio::test]
async fn the_quota_is_the_manifest_request_capped_by_the_operator() {
    let limits = StorageLimits {
        max_bytes_per_install: 100,
        max_keys_per_namespace: 7,
        ..StorageLimits::default()
    };
    assert_eq!(
        limits.quota(None),
        WriteBounds {
            max_keys_per_namespace: 7,
            max_bytes: 100
        }
    );
    assert_eq!(limits.quota(Some(10)).max_bytes, 10);
    assert_eq!(limits.quota(Some(1000)).max_bytes, 100);

    let fake = Arc::new(Fake::with_limits(limits));
    let backend: Arc<dyn StorageBackend> = fake.clone();
    let s = StorageState::new(Some(backend), &invocation("i", &["n"], Some(5))).unwrap();
    assert_same!(
        s.set("n", "k", b"123456", Condition::Any).await,
        Err(WitError::QuotaExceeded)
    );
    assert_eq!(
        fake.quotas.lock().unwrap()[0],
        WriteBounds {
            max_keys_per_namespace: 7,
            max_bytes: 5
        }
    );
}

#[tokio::test]
async fn backend_failures_are_unavailable() {
    let fake = Arc::new(Fake {
        broken: true,
        ..Fake::default()
    });
    let s = state(&fake, "inst-1", &["notes"]);
    assert_same!(s.get("notes", "k").await, Err(WitError::Unavailable));
    assert_same!(
        s.set("notes", "k", b"v", Condition::Any).await,
        Err(WitError::Unavailable)
    );
    assert_same!(
        s.delete("notes", "k", Condition::Any).await,
        Err(WitError::Unavailable)
    );
    assert_same!(
        s.list("notes", "", None, 5).await,
        Err(WitError::Unavailable)
    );

    // No backend configured: granted calls are unavailable, ungranted still denied.
    let s = StorageState::new(None, &invocation("i", &["notes"], None)).unwrap();
    assert_same!(s.get("notes", "k").await, Err(WitError::Unavailable));
    assert_same!(s.get("other", "k").await, Err(WitError::AccessDenied));
}

#[tokio::test]
async fn listing_pages_with_an_opaque_cursor() {
    let fake = Arc::new(Fake::default());
    let s = state(&fake, "inst-1", &["notes"]);
    for key in ["a/1", "a/2", "a/3", "b/1"] {
        s.set("notes", key, key.as_bytes(), Condition::Any)
            .await
            .unwrap();
    }
    let first = s.list("notes", "a/", None, 2).await.unwrap();
    let keys: Vec<_> = first.entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["a/1", "a/2"]);
    assert_eq!(first.entries[0].value, b"a/1");
    let cursor = first.next_cursor.unwrap();
    assert_eq!(cursor, encode_cursor("a/2"));

    let second = s.list("notes", "a/", Some(&cursor), 2).await.unwrap();
    let keys: Vec<_> = second.entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["a/3"]);
    assert_eq!(second.next_cursor, None);
    assert!(
        fake.calls()
            .contains(&"list inst-1 notes a/ Some(\"a/2\") 2 4194304".to_owned())
    );
}

#[tokio::test]
async fn listing_arguments_are_checked() {
    let fake = Arc::new(Fake::with_limits(StorageLimits {
        max_list_limit: 10,
        max_key_bytes: 8,
        ..StorageLimits::default()
    }));
    let s = state(&fake, "inst-1", &["notes"]);
    for limit in [0, 11] {
        assert_same!(
            s.list("notes", "", None, limit).await,
            Err(WitError::InvalidArgument(format!(
                "the limit {limit} is outside 1..=10"
            )))
        );
    }
    assert!(matches!(
        s.list("notes", "123456789", None, 5).await,
        Err(WitError::InvalidArgument(m)) if m.contains("prefix is longer")
    ));
    assert!(matches!(
        s.list("notes", "a\0", None, 5).await,
        Err(WitError::InvalidArgument(m)) if m.contains("NUL")
    ));
    let too_long = encode_cursor("123456789");
    for cursor in ["not base64!", "_w", too_long.as_str(), ""] {
        assert_same!(
            s.list("notes", "", Some(cursor), 5).await,
            Err(WitError::InvalidArgument(
                "the cursor is not one that list-entries returned".into()
            )),
            "{cursor:?}"
        );
    }
    assert!(fake.calls().is_empty());
}

#[test]
fn cursors_round_trip_and_are_url_safe() {
    let limits = StorageLimits::default();
    for key in ["a", "notes/2024-01-01", "é/ü?&=+", "\u{10FFFF}"] {
        let cursor = encode_cursor(key);
        assert!(
            cursor
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{cursor}"
        );
        assert_eq!(decode_cursor(&cursor, &limits).as_deref(), Some(key));
    }
}

#[test]
fn limits_have_the_documented_defaults_and_parse_from_json() {
    let d = StorageLimits::default();
    assert_eq!(d.max_key_bytes, 512);
    assert_eq!(d.max_value_bytes, 1 << 20);
    assert_eq!(d.max_keys_per_namespace, 100_000);
    assert_eq!(d.max_bytes_per_install, 64 << 20);
    assert_eq!(d.max_list_limit, 1000);
    assert_eq!(d.max_list_bytes, 4 << 20);
    assert_eq!(d.max_ops_per_call, 1000);
    assert_eq!(d.max_bytes_per_call, 32 << 20);
    assert_eq!(d.install_writes_per_second, 200);
    assert_eq!(d.install_write_burst, 1000);

    let parsed: StorageLimits = serde_json::from_str(r#"{"max_value_bytes": 10}"#).unwrap();
    assert_eq!(
        parsed,
        StorageLimits {
            max_value_bytes: 10,
            ..d
        }
    );
    let err = serde_json::from_str::<StorageLimits>(r#"{"max_values": 10}"#).unwrap_err();
    assert!(err.to_string().contains("max_values"), "{err}");
}

#[tokio::test]
async fn a_call_has_a_budget_of_operations() {
    let fake = Arc::new(Fake::with_limits(StorageLimits {
        max_ops_per_call: 3,
        ..StorageLimits::default()
    }));
    let s = state(&fake, "inst-1", &["notes"]);
    s.set("notes", "a", b"1", Condition::Any).await.unwrap();
    assert_same!(s.get("notes", "a").await.map(|e| e.is_some()), Ok(true));
    assert_same!(
        s.list("notes", "", None, 5).await.map(|p| p.entries.len()),
        Ok(1)
    );
    // The budget is spent: every operation is quota-exceeded and the store is not asked.
    assert_same!(s.get("notes", "a").await, Err(WitError::QuotaExceeded));
    assert_same!(
        s.set("notes", "b", b"2", Condition::Any).await,
        Err(WitError::QuotaExceeded)
    );
    assert_same!(
        s.delete("notes", "a", Condition::Any).await,
        Err(WitError::QuotaExceeded)
    );
    assert_same!(
        s.list("notes", "", None, 5).await,
        Err(WitError::QuotaExceeded)
    );
    assert_eq!(fake.calls().len(), 3);
    // Refusals that come first (namespace, arguments) keep their own errors.
    assert_same!(s.get("secret", "a").await, Err(WitError::AccessDenied));
    // The budget is per call: the next call starts afresh.
    let next = state(&fake, "inst-1", &["notes"]);
    assert_same!(next.delete("notes", "a", Condition::Any).await, Ok(true));
}

#[tokio::test]
async fn a_call_has_a_budget_of_bytes_read_and_written() {
    let fake = Arc::new(Fake::with_limits(StorageLimits {
        max_bytes_per_call: 100,
        ..StorageLimits::default()
    }));
    let s = state(&fake, "inst-1", &["notes"]);
    // 1 + 60 bytes written.
    s.set("notes", "a", &[b'x'; 60], Condition::Any)
        .await
        .unwrap();
    // 1 + 40 would make 102: refused, nothing written.
    assert_same!(
        s.set("notes", "b", &[b'x'; 40], Condition::Any).await,
        Err(WitError::QuotaExceeded)
    );
    assert_same!(s.get("notes", "b").await, Ok(None));
    // Reading `a` back (61 bytes) does not fit either: the value is not handed out.
    assert_same!(s.get("notes", "a").await, Err(WitError::QuotaExceeded));
    // A page is capped at what is left (39 bytes), so the 61-byte entry alone is refused.
    assert_same!(
        s.list("notes", "", None, 5).await,
        Err(WitError::QuotaExceeded)
    );
    assert!(
        fake.calls().last().unwrap().ends_with(" 5 39"),
        "{:?}",
        fake.calls()
    );
    // Small operations still fit.
    s.set("notes", "c", &[b'x'; 30], Condition::Any)
        .await
        .unwrap();
    assert_eq!(fake.entries.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_listing_page_stops_at_the_byte_cap() {
    let fake = Arc::new(Fake::with_limits(StorageLimits {
        max_list_bytes: 25,
        ..StorageLimits::default()
    }));
    let writer = state(&fake, "inst-1", &["notes"]);
    for key in ["a", "b", "c", "d"] {
        writer
            .set("notes", key, &[b'x'; 9], Condition::Any)
            .await
            .unwrap();
    }
    let s = state(&fake, "inst-1", &["notes"]);
    let first = s.list("notes", "", None, 100).await.unwrap();
    let keys: Vec<_> = first.entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        ["a", "b"],
        "two entries of 10 bytes fit in 25, three do not"
    );
    let second = s
        .list("notes", "", first.next_cursor.as_deref(), 100)
        .await
        .unwrap();
    let keys: Vec<_> = second.entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["c", "d"]);
    assert_eq!(second.next_cursor, None);
    assert!(fake.calls().last().unwrap().ends_with(" 100 25"));
}

#[tokio::test]
async fn writes_over_the_install_rate_are_quota_exceeded() {
    let fake = Arc::new(Fake {
        rate: Some(WriteRate::new(1, 2)),
        ..Fake::default()
    });
    let s = state(&fake, "inst-1", &["notes"]);
    s.set("notes", "a", b"1", Condition::Any).await.unwrap();
    s.delete("notes", "a", Condition::Any).await.unwrap();
    assert_same!(
        s.set("notes", "a", b"2", Condition::Any).await,
        Err(WitError::QuotaExceeded)
    );
    // The rate spans calls of the install; reads are not limited; other installs are not.
    let again = state(&fake, "inst-1", &["notes"]);
    assert_same!(
        again.delete("notes", "a", Condition::Any).await,
        Err(WitError::QuotaExceeded)
    );
    assert_same!(again.get("notes", "a").await, Ok(None));
    let other = state(&fake, "inst-2", &["notes"]);
    assert!(other.set("notes", "a", b"1", Condition::Any).await.is_ok());
    let writes = fake
        .calls()
        .iter()
        .filter(|c| !c.starts_with("get"))
        .count();
    assert_eq!(writes, 3, "refused writes never reach the store");
}
