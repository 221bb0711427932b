use std::collections::BTreeSet;

use palisade_bundle::manifest::CapabilityKey;

use super::*;
use crate::test_support::Fixture;

const NS: &str = "notes";

const ROOMY: StorageQuota = StorageQuota {
    max_keys_per_namespace: 1000,
    max_bytes: 1 << 30,
};

/// A registry with `com.example.store` installed for each tenant; returns the install ids.
async fn installs(tenants: &[&str]) -> (Fixture, Vec<String>) {
    let fx = Fixture::new().await;
    fx.publish_simple(
        "com.example.store",
        "1.0.0",
        serde_json::json!({"storage": {"namespaces": [NS, "other"]}}),
    )
    .await;
    let mut ids = Vec::new();
    for tenant in tenants {
        let install = fx
            .registry
            .install(
                tenant,
                "com.example.store",
                None,
                &CapabilityKey::ALL,
                Default::default(),
            )
            .await
            .unwrap();
        ids.push(install.install_id);
    }
    (fx, ids)
}

async fn one_install() -> (Fixture, String) {
    let (fx, mut ids) = installs(&["acme"]).await;
    (fx, ids.remove(0))
}

async fn set(r: &Registry, install: &str, key: &str, value: &str) -> u64 {
    r.storage_set(
        install,
        NS,
        key,
        value.as_bytes(),
        WriteCondition::Any,
        &ROOMY,
    )
    .await
    .unwrap()
}

async fn value_of(r: &Registry, install: &str, key: &str) -> Option<String> {
    r.storage_get(install, NS, key)
        .await
        .unwrap()
        .map(|e| String::from_utf8(e.value).unwrap())
}

/// Every key of the namespace, paging `limit` at a time.
async fn all_keys(r: &Registry, install: &str, prefix: &str, limit: u32) -> Vec<String> {
    let mut keys = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = r
            .storage_list(install, NS, prefix, after.as_deref(), limit, u64::MAX)
            .await
            .unwrap();
        assert!(page.entries.len() <= limit as usize);
        keys.extend(page.entries.iter().map(|e| e.key.clone()));
        if !page.more {
            return keys;
        }
        after = page.entries.last().map(|e| e.key.clone());
    }
}

/// The usage counters recomputed from the entries themselves.
async fn recomputed_usage(r: &Registry, install: &str) -> StorageUsage {
    let rows: Vec<(String, String, Vec<u8>)> = sqlx::query_as(
        "SELECT namespace, key, value FROM extension_storage WHERE install_id = $1 \
         ORDER BY namespace",
    )
    .bind(install)
    .fetch_all(r.pool())
    .await
    .unwrap();
    let mut usage = StorageUsage::default();
    for (namespace, key, value) in rows {
        let size = (key.len() + value.len()) as u64;
        usage.bytes += size;
        match usage.namespaces.last_mut() {
            Some(last) if last.namespace == namespace => {
                last.keys += 1;
                last.bytes += size;
            }
            _ => usage.namespaces.push(NamespaceUsage {
                namespace,
                keys: 1,
                bytes: size,
            }),
        }
    }
    usage
}

#[tokio::test]
async fn set_then_get_round_trips_and_revisions_grow() {
    let (fx, install) = one_install().await;
    let r = &fx.registry;
    assert_eq!(r.storage_get(&install, NS, "a").await.unwrap(), None);

    let first = set(r, &install, "a", "one").await;
    let second = set(r, &install, "a", "two").await;
    let other = set(r, &install, "b", "x").await;
    assert!(first >= 1);
    assert!(second > first);
    assert!(other > second, "revisions are unique per install");

    let entry = r.storage_get(&install, NS, "a").await.unwrap().unwrap();
    assert_eq!(
        entry,
        StorageEntry {
            key: "a".into(),
            value: b"two".to_vec(),
            revision: second,
        }
    );
    // Binary values survive unchanged.
    let bytes = [0u8, 255, 10, 0];
    r.storage_set(&install, NS, "bin", &bytes, WriteCondition::Any, &ROOMY)
        .await
        .unwrap();
    let entry = r.storage_get(&install, NS, "bin").await.unwrap().unwrap();
    assert_eq!(entry.value, bytes);
}

#[tokio::test]
async fn conditions_are_checked_and_a_conflict_carries_the_current_revision() {
    let (fx, install) = one_install().await;
    let r = &fx.registry;

    let created = r
        .storage_set(
            &install,
            NS,
            "k",
            b"v1",
            WriteCondition::MustNotExist,
            &ROOMY,
        )
        .await
        .unwrap();
    let err = r
        .storage_set(
            &install,
            NS,
            "k",
            b"v2",
            WriteCondition::MustNotExist,
            &ROOMY,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageWriteError::Conflict { current: Some(c) } if c == created),
        "{err:?}"
    );

    let err = r
        .storage_set(
            &install,
            NS,
            "k",
            b"v2",
            WriteCondition::MustEqualRevision(created + 100),
            &ROOMY,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StorageWriteError::Conflict { current: Some(c) } if c == created));
    assert_eq!(value_of(r, &install, "k").await.as_deref(), Some("v1"));

    let updated = r
        .storage_set(
            &install,
            NS,
            "k",
            b"v2",
            WriteCondition::MustEqualRevision(created),
            &ROOMY,
        )
        .await
        .unwrap();
    assert!(updated > created);

    let err = r
        .storage_set(
            &install,
            NS,
            "absent",
            b"x",
            WriteCondition::MustEqualRevision(1),
            &ROOMY,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StorageWriteError::Conflict { current: None }));
    assert_eq!(value_of(r, &install, "absent").await, None);
}

#[tokio::test]
async fn deletes_honour_conditions_and_a_recreated_key_gets_a_new_revision() {
    let (fx, install) = one_install().await;
    let r = &fx.registry;
    let rev = set(r, &install, "k", "v").await;

    assert!(
        !r.storage_delete(&install, NS, "missing", WriteCondition::Any)
            .await
            .unwrap()
    );
    assert!(
        !r.storage_delete(&install, NS, "missing", WriteCondition::MustNotExist)
            .await
            .unwrap()
    );
    let err = r
        .storage_delete(
            &install,
            NS,
            "missing",
            WriteCondition::MustEqualRevision(1),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StorageWriteError::Conflict { current: None }));
    let err = r
        .storage_delete(&install, NS, "k", WriteCondition::MustNotExist)
        .await
        .unwrap_err();
    assert!(matches!(err, StorageWriteError::Conflict { current: Some(c) } if c == rev));
    let err = r
        .storage_delete(
            &install,
            NS,
            "k",
            WriteCondition::MustEqualRevision(rev + 1),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StorageWriteError::Conflict { current: Some(c) } if c == rev));
    assert_eq!(value_of(r, &install, "k").await.as_deref(), Some("v"));

    assert!(
        r.storage_delete(&install, NS, "k", WriteCondition::MustEqualRevision(rev))
            .await
            .unwrap()
    );
    assert_eq!(value_of(r, &install, "k").await, None);

    let again = set(r, &install, "k", "v").await;
    assert!(
        again > rev,
        "a stale revision never matches a recreated key"
    );
    let err = r
        .storage_delete(&install, NS, "k", WriteCondition::MustEqualRevision(rev))
        .await
        .unwrap_err();
    assert!(matches!(err, StorageWriteError::Conflict { current: Some(c) } if c == again));
}

#[tokio::test]
async fn the_byte_quota_refuses_growth_and_leaves_the_store_unchanged() {
    let (fx, install) = one_install().await;
    let r = &fx.registry;
    let quota = StorageQuota {
        max_keys_per_namespace: 100,
        max_bytes: 100,
    };
    // "a" + 59 bytes = 60 bytes.
    let rev = r
        .storage_set(&install, NS, "a", &[b'x'; 59], WriteCondition::Any, &quota)
        .await
        .unwrap();
    let before = r.storage_usage(&install).await.unwrap();
    assert_eq!(before.bytes, 60);

    // "b" + 40 = 41 more: 101 > 100.
    let err = r
        .storage_set(&install, NS, "b", &[b'y'; 40], WriteCondition::Any, &quota)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StorageWriteError::QuotaExceeded(QuotaExceeded::Bytes {
                needed: 101,
                limit: 100
            })
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "storage quota exceeded: the install would hold 101 bytes, more than its limit of 100"
    );
    // Exactly at the limit is fine.
    r.storage_set(&install, NS, "b", &[b'y'; 39], WriteCondition::Any, &quota)
        .await
        .unwrap();
    // Growing an existing key past the limit is refused, and nothing changes.
    let err = r
        .storage_set(&install, NS, "a", &[b'z'; 60], WriteCondition::Any, &quota)
        .await
        .unwrap_err();
    assert!(matches!(err, StorageWriteError::QuotaExceeded(_)));
    let entry = r.storage_get(&install, NS, "a").await.unwrap().unwrap();
    assert_eq!((entry.value, entry.revision), (vec![b'x'; 59], rev));
    assert_eq!(r.storage_usage(&install).await.unwrap().bytes, 100);

    // After the limit is lowered, writes that shrink are still allowed.
    let lower = StorageQuota {
        max_bytes: 10,
        ..quota
    };
    r.storage_set(&install, NS, "a", b"small", WriteCondition::Any, &lower)
        .await
        .unwrap();
    assert_eq!(r.storage_usage(&install).await.unwrap().bytes, 46);
    assert_eq!(
        r.storage_usage(&install).await.unwrap(),
        recomputed_usage(r, &install).await
    );
}

#[tokio::test]
async fn the_key_quota_counts_new_keys_per_namespace() {
    let (fx, install) = one_install().await;
    let r = &fx.registry;
    let quota = StorageQuota {
        max_keys_per_namespace: 2,
        max_bytes: 1 << 20,
    };
    for key in ["a", "b"] {
        r.storage_set(&install, NS, key, b"v", WriteCondition::Any, &quota)
            .await
            .unwrap();
    }
    let err = r
        .storage_set(&install, NS, "c", b"v", WriteCondition::Any, &quota)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "storage quota exceeded: namespace `notes` already holds 2 keys, the most allowed"
    );
    assert_eq!(value_of(r, &install, "c").await, None);
    // Overwriting is not a new key; another namespace has its own count.
    r.storage_set(&install, NS, "a", b"w", WriteCondition::Any, &quota)
        .await
        .unwrap();
    r.storage_set(&install, "other", "c", b"v", WriteCondition::Any, &quota)
        .await
        .unwrap();
    // Deleting frees a slot.
    r.storage_delete(&install, NS, "b", WriteCondition::Any)
        .await
        .unwrap();
    r.storage_set(&install, NS, "c", b"v", WriteCondition::Any, &quota)
        .await
        .unwrap();
    let usage = r.storage_usage(&install).await.unwrap();
    assert_eq!(usage, recomputed_usage(r, &install).await);
    assert_eq!(
        usage
            .namespaces
            .iter()
            .map(|n| (n.namespace.as_str(), n.keys))
            .collect::<Vec<_>>(),
        [("notes", 2), ("other", 1)]
    );
}

#[tokio::test]
async fn listing_pages_in_key_order_within_the_prefix() {
    let (fx, install) = one_install().await;
    let r = &fx.registry;
    for key in ["a", "a/2", "a/1", "a/3", "b/1", "a.", "é", "z"] {
        set(r, &install, key, "v").await;
    }
    assert_eq!(all_keys(r, &install, "a/", 2).await, ["a/1", "a/2", "a/3"]);
    assert_eq!(all_keys(r, &install, "a/", 3).await, ["a/1", "a/2", "a/3"]);
    assert_eq!(
        all_keys(r, &install, "", 3).await,
        ["a", "a.", "a/1", "a/2", "a/3", "b/1", "z", "é"],
        "byte order of the UTF-8 keys"
    );
    assert!(all_keys(r, &install, "q", 5).await.is_empty());

    // An exact fit: the page is full but nothing follows.
    let page = r
        .storage_list(&install, NS, "a/", None, 3, u64::MAX)
        .await
        .unwrap();
    assert_eq!(page.entries.len(), 3);
    assert!(!page.more);

    // A cursor before the prefix starts at the prefix; one past it yields nothing.
    let page = r
        .storage_list(&install, NS, "a/", Some("0"), 10, u64::MAX)
        .await
        .unwrap();
    assert_eq!(page.entries.len(), 3);
    let page = r
        .storage_list(&install, NS, "a/", Some("b"), 10, u64::MAX)
        .await
        .unwrap();
    assert!(page.entries.is_empty() && !page.more);

    // Entries carry values and revisions.
    let entry = &r
        .storage_list(&install, NS, "z", None, 1, u64::MAX)
        .await
        .unwrap()
        .entries[0];
    assert_eq!(entry.value, b"v");
    assert!(entry.revision > 0);
}

#[tokio::test]
async fn paging_neither_skips_nor_repeats_while_writes_happen() {
    let (fx, install) = one_install().await;
    let r = &fx.registry;
    let original: Vec<String> = (0..30).map(|i| format!("k{:03}", i * 10)).collect();
    for key in &original {
        set(r, &install, key, "v").await;
    }

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut round = 0;
    loop {
        let page = r
            .storage_list(&install, NS, "k", after.as_deref(), 4, u64::MAX)
            .await
            .unwrap();
        seen.extend(page.entries.iter().map(|e| e.key.clone()));
        if !page.more {
            break;
        }
        after = page.entries.last().map(|e| e.key.clone());
        // Between pages: insert keys before and after the cursor, and rewrite one ahead.
        round += 1;
        set(r, &install, &format!("k{:03}", round * 10 + 5), "new").await;
        set(r, &install, &format!("k{:03}a", round), "new").await;
        set(r, &install, "k290", "rewritten").await;
    }

    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no entry repeated: {seen:?}");
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(sorted, seen, "pages are in key order");
    for key in &original {
        assert!(seen.contains(key), "{key} skipped");
    }
}

#[tokio::test]
async fn installs_never_see_each_others_rows() {
    let (fx, ids) = installs(&["acme", "globex"]).await;
    let r = &fx.registry;
    let (a, b) = (&ids[0], &ids[1]);
    assert_ne!(a, b);
    set(r, a, "shared", "from acme").await;
    set(r, b, "shared", "from globex").await;
    set(r, a, "only-acme", "x").await;

    assert_eq!(value_of(r, a, "shared").await.as_deref(), Some("from acme"));
    assert_eq!(
        value_of(r, b, "shared").await.as_deref(),
        Some("from globex")
    );
    assert_eq!(value_of(r, b, "only-acme").await, None);
    assert_eq!(all_keys(r, b, "", 10).await, ["shared"]);
    // A namespace is a separate key space too.
    assert_eq!(r.storage_get(a, "other", "shared").await.unwrap(), None);

    // Deleting and conditions are scoped as well.
    assert!(
        !r.storage_delete(b, NS, "only-acme", WriteCondition::Any)
            .await
            .unwrap()
    );
    assert!(
        r.storage_delete(b, NS, "shared", WriteCondition::Any)
            .await
            .unwrap()
    );
    assert_eq!(value_of(r, a, "shared").await.as_deref(), Some("from acme"));
}

#[tokio::test]
async fn concurrent_conditional_writes_let_exactly_one_win() {
    let (fx, install) = one_install().await;
    let rev = set(&fx.registry, &install, "counter", "0").await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let registry = fx.registry.clone();
        let install = install.clone();
        tasks.push(tokio::spawn(async move {
            registry
                .storage_set(
                    &install,
                    NS,
                    "counter",
                    format!("{i}").as_bytes(),
                    WriteCondition::MustEqualRevision(rev),
                    &ROOMY,
                )
                .await
        }));
    }
    let mut wins = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => wins += 1,
            Err(StorageWriteError::Conflict { current: Some(c) }) => assert!(c > rev),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(wins, 1);
}

#[tokio::test]
async fn uninstall_removes_the_data_and_the_counters() {
    let (fx, install) = one_install().await;
    let r = &fx.registry;
    set(r, &install, "k", "v").await;
    assert!(r.uninstall("acme", "com.example.store").await.unwrap());
    assert_eq!(fx.count("extension_storage").await, 0);
    assert_eq!(fx.count("extension_storage_install").await, 0);
    assert_eq!(fx.count("extension_storage_namespace").await, 0);
    assert_eq!(
        r.storage_usage(&install).await.unwrap(),
        StorageUsage::default()
    );
}

#[tokio::test]
async fn writing_for_an_unknown_install_is_a_database_error() {
    let (fx, _) = one_install().await;
    let err = fx
        .registry
        .storage_set(
            "no-such-install",
            NS,
            "k",
            b"v",
            WriteCondition::Any,
            &ROOMY,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StorageWriteError::Registry(_)), "{err:?}");
    assert_eq!(fx.count("extension_storage").await, 0);
}

#[test]
fn conditions_hold_as_documented() {
    assert!(WriteCondition::Any.holds(None));
    assert!(WriteCondition::Any.holds(Some(3)));
    assert!(WriteCondition::MustNotExist.holds(None));
    assert!(!WriteCondition::MustNotExist.holds(Some(3)));
    assert!(WriteCondition::MustEqualRevision(3).holds(Some(3)));
    assert!(!WriteCondition::MustEqualRevision(3).holds(Some(4)));
    assert!(!WriteCondition::MustEqualRevision(3).holds(None));
}

#[tokio::test]
async fn a_returned_write_is_visible_to_a_fresh_connection() {
    let (fx, install) = one_install().await;
    let rev = set(&fx.registry, &install, "k", "durable").await;
    let reopened = Registry::open(&crate::test_support::config_in(&fx.dir))
        .await
        .unwrap();
    let entry = reopened
        .storage_get(&install, NS, "k")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((entry.value, entry.revision), (b"durable".to_vec(), rev));
}

#[tokio::test]
async fn a_page_stops_at_its_byte_cap_and_paging_still_sees_every_entry() {
    let (fx, install) = one_install().await;
    let r = &fx.registry;
    // Entries of 1 + 9 bytes, except `c` (1 + 99) and the multi-byte `é` key (2 + 8).
    for (key, size) in [("a", 9), ("b", 9), ("c", 99), ("d", 9), ("é", 8)] {
        let value = vec![b'v'; size];
        r.storage_set(&install, NS, key, &value, WriteCondition::Any, &ROOMY)
            .await
            .unwrap();
    }
    let page = |after: Option<&'static str>, max_bytes: u64| {
        let r = r.clone();
        let install = install.clone();
        async move {
            let page = r
                .storage_list(&install, NS, "", after, 100, max_bytes)
                .await
                .unwrap();
            let keys: Vec<String> = page.entries.iter().map(|e| e.key.clone()).collect();
            (keys, page.more)
        }
    };
    // 10 + 10 fit in 25; `c` would cross it.
    assert_eq!(page(None, 25).await, (vec!["a".into(), "b".into()], true));
    assert_eq!(page(None, 20).await, (vec!["a".into(), "b".into()], true));
    assert_eq!(page(None, 19).await, (vec!["a".into()], true));
    // A first entry larger than the cap is returned alone, so paging always progresses.
    assert_eq!(page(Some("b"), 25).await, (vec!["c".into()], true));
    // Key bytes are UTF-8 bytes: `é` + 8 is 10 bytes, so `d` and `é` make 20.
    assert_eq!(
        page(Some("c"), 20).await,
        (vec!["d".into(), "é".into()], false)
    );
    assert_eq!(page(Some("c"), 19).await, (vec!["d".into()], true));
    // Paging with a small cap sees everything once, in order.
    let mut keys = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = r
            .storage_list(&install, NS, "", after.as_deref(), 100, 15)
            .await
            .unwrap();
        keys.extend(page.entries.iter().map(|e| e.key.clone()));
        if !page.more {
            break;
        }
        after = page.entries.last().map(|e| e.key.clone());
    }
    assert_eq!(keys, ["a", "b", "c", "d", "é"]);
    // The prefix still bounds the page: nothing past `b` is counted against it.
    let only_b = r
        .storage_list(&install, NS, "b", None, 100, 1000)
        .await
        .unwrap();
    assert_eq!(only_b.entries.len(), 1);
    assert!(!only_b.more);
}

/// Completion order of the writes spawned by the fairness tests.
type Done = tokio::sync::mpsc::UnboundedSender<&'static str>;

fn spawn_write(r: &Registry, install: &str, key: String, label: &'static str, done: &Done) {
    let (r, install, done) = (r.clone(), install.to_owned(), done.clone());
    tokio::spawn(async move {
        r.storage_set(&install, NS, &key, b"v", WriteCondition::Any, &ROOMY)
            .await
            .unwrap();
        done.send(label).unwrap();
    });
}

#[tokio::test]
async fn one_installs_write_flood_does_not_starve_other_writers() {
    let (fx, ids) = installs(&["acme", "globex"]).await;
    let r = fx.registry.clone();
    let (flooder, other) = (&ids[0], &ids[1]);
    set(&r, flooder, "warm", "v").await;
    let (done, mut order) = tokio::sync::mpsc::unbounded_channel();
    let settle = || tokio::time::sleep(std::time::Duration::from_millis(30));
    match r.backend() {
        crate::db::Backend::Sqlite => {
            // Hold the process's write turn while 20 writes of one install and then one of
            // another install and one execution-log batch queue up behind it.
            let turn = r.write_turn().await;
            for i in 0..20 {
                spawn_write(&r, flooder, format!("k{i}"), "flood", &done);
                settle().await;
            }
            spawn_write(&r, other, "k".into(), "other", &done);
            let (log, log_done) = (r.clone(), done.clone());
            tokio::spawn(async move {
                let row = crate::ExecutionRecord::new("req-1", "acme", "com.example.store", "http");
                log.record_execution_batch(&[row], &crate::quota::UsageTally::new())
                    .await
                    .unwrap();
                log_done.send("log").unwrap();
            });
            settle().await;
            drop(turn);
            let mut seen = Vec::new();
            while seen.len() < 22 {
                seen.push(order.recv().await.unwrap());
            }
            // Each waits behind at most one write of the flooding install.
            let position = |label| seen.iter().position(|s| *s == label).unwrap();
            assert!(position("other") <= 2, "{seen:?}");
            assert!(position("log") <= 2, "{seen:?}");
        }
        crate::db::Backend::Postgres => {
            // Hold the flooding install's counter row, so its writes block in the database.
            let mut lock = r.pool().begin().await.unwrap();
            sqlx::query(
                "SELECT revision FROM extension_storage_install WHERE install_id = $1 FOR UPDATE",
            )
            .bind(flooder)
            .fetch_one(&mut *lock)
            .await
            .unwrap();
            for i in 0..20 {
                spawn_write(&r, flooder, format!("k{i}"), "flood", &done);
            }
            settle().await;
            // The other install's write must not wait for a connection the flood holds.
            spawn_write(&r, other, "k".into(), "other", &done);
            let first = tokio::time::timeout(std::time::Duration::from_secs(5), order.recv())
                .await
                .expect("the other install's write waited behind the flood");
            assert_eq!(first, Some("other"));
            lock.rollback().await.unwrap();
            for _ in 0..20 {
                assert_eq!(order.recv().await, Some("flood"));
            }
        }
    }
    assert_eq!(r.lanes.len(), 0, "idle lanes are forgotten");
    assert_eq!(all_keys(&r, flooder, "k", 100).await.len(), 20);
}
