//! The `storage` capability end to end, through the gateway: the `notes` sample's CRUD API
//! with optimistic concurrency and paging, and the `storage-probe` test guest for grants,
//! limits and isolation between installs and tenants.

use std::collections::BTreeSet;

use palisade_bundle::CapabilityKey;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::Platform;

const NOTES: &str = "com.example.notes";
const PROBE: &str = "com.example.storage-probe";
const APPROVED: &[CapabilityKey] = &[CapabilityKey::Log, CapabilityKey::Storage];

fn manifest(path: &str) -> Value {
    let path = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

async fn install_notes(platform: &Platform, tenants: &[&str]) {
    let notes = manifest("../guests/notes/manifest.json");
    platform
        .install_guest(&notes, "notes", tenants, APPROVED)
        .await;
}

async fn install_probe(platform: &Platform, tenants: &[&str]) {
    let probe = manifest("guests/storage-probe/manifest.json");
    platform
        .install_guest(&probe, "storage-probe", tenants, APPROVED)
        .await;
}

struct Reply {
    status: u16,
    etag: Option<String>,
    body: Value,
}

/// Calls `ext` through the gateway as `tenant`.
async fn send(
    platform: &Platform,
    tenant: &str,
    ext: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
    if_match: Option<&str>,
) -> Reply {
    let mut request = platform
        .client
        .request(
            method,
            format!("http://{}/api/ext/{ext}{path}", platform.gateway),
        )
        .bearer_auth(platform.token(tenant));
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    if let Some(revision) = if_match {
        request = request.header("if-match", revision);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let etag = response
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = response.bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("{status}: {}", String::from_utf8_lossy(&bytes)))
    };
    Reply { status, etag, body }
}

async fn notes(
    platform: &Platform,
    tenant: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Reply {
    send(platform, tenant, NOTES, method, path, body, None).await
}

/// What the storage probe of `ext` reported, as `tenant`.
async fn probe_as(
    platform: &Platform,
    tenant: &str,
    ext: &str,
    method: Method,
    path: &str,
) -> Value {
    let reply = send(platform, tenant, ext, method, path, None, None).await;
    assert_eq!(reply.status, 200, "{path}: {}", reply.body);
    reply.body
}

async fn probe(platform: &Platform, method: Method, path: &str) -> Value {
    probe_as(platform, "acme", PROBE, method, path).await
}

fn error_kind(reply: &Value) -> &str {
    reply["error"]["kind"]
        .as_str()
        .unwrap_or_else(|| panic!("expected an error, got {reply}"))
}

fn ids(page: &Value) -> Vec<String> {
    page["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn granted_storage_serves_the_notes_crud_api() {
    let platform = Platform::start().await;
    install_notes(&platform, &["acme"]).await;

    let created = notes(
        &platform,
        "acme",
        Method::POST,
        "/notes",
        Some(json!({"id": "n1", "title": "Groceries", "body": "milk"})),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let revision = created.body["revision"].as_u64().unwrap();
    assert_eq!(created.etag, Some(format!("\"{revision}\"")));

    let read = notes(&platform, "acme", Method::GET, "/notes/n1", None).await;
    assert_eq!(read.status, 200);
    assert_eq!(
        read.body,
        json!({"id": "n1", "revision": revision, "title": "Groceries", "body": "milk"})
    );

    let updated = notes(
        &platform,
        "acme",
        Method::PUT,
        "/notes/n1",
        Some(json!({"title": "Groceries", "body": "milk, eggs"})),
    )
    .await;
    assert_eq!(updated.status, 200);
    assert!(updated.body["revision"].as_u64().unwrap() > revision);

    let put_new = notes(
        &platform,
        "acme",
        Method::PUT,
        "/notes/n2",
        Some(json!({"title": "Ideas"})),
    )
    .await;
    assert_eq!(put_new.status, 200);

    let listed = notes(&platform, "acme", Method::GET, "/notes", None).await;
    assert_eq!(listed.status, 200);
    assert_eq!(ids(&listed.body), ["n1", "n2"]);
    assert_eq!(listed.body["notes"][0]["body"], "milk, eggs");
    assert_eq!(listed.body["next_cursor"], Value::Null);

    let deleted = notes(&platform, "acme", Method::DELETE, "/notes/n1", None).await;
    assert_eq!(deleted.status, 204);
    let gone = notes(&platform, "acme", Method::GET, "/notes/n1", None).await;
    assert_eq!(gone.status, 404);
    let again = notes(&platform, "acme", Method::DELETE, "/notes/n1", None).await;
    assert_eq!(again.status, 404);
}

#[tokio::test]
async fn concurrent_edits_conflict_on_the_revision() {
    let platform = Platform::start().await;
    install_notes(&platform, &["acme"]).await;
    let created = notes(
        &platform,
        "acme",
        Method::POST,
        "/notes",
        Some(json!({"id": "plan", "title": "v1"})),
    )
    .await;
    let seen = created.body["revision"].as_u64().unwrap().to_string();

    // Two editors read revision `seen`; the first write wins.
    let first = send(
        &platform,
        "acme",
        NOTES,
        Method::PUT,
        "/notes/plan",
        Some(json!({"title": "editor one"})),
        Some(&format!("\"{seen}\"")),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.body);
    let winner = first.body["revision"].as_u64().unwrap();

    let second = send(
        &platform,
        "acme",
        NOTES,
        Method::PUT,
        "/notes/plan",
        Some(json!({"title": "editor two"})),
        Some(&format!("\"{seen}\"")),
    )
    .await;
    assert_eq!(second.status, 412, "{}", second.body);
    assert_eq!(
        second.body,
        json!({"error": "revision_mismatch", "current_revision": winner})
    );

    let stale_delete = send(
        &platform,
        "acme",
        NOTES,
        Method::DELETE,
        "/notes/plan",
        None,
        Some(&seen),
    )
    .await;
    assert_eq!(stale_delete.status, 412);

    // Creating an existing id is refused with must-not-exist.
    let duplicate = notes(
        &platform,
        "acme",
        Method::POST,
        "/notes",
        Some(json!({"id": "plan", "title": "other"})),
    )
    .await;
    assert_eq!(duplicate.status, 409);
    assert_eq!(duplicate.body["current_revision"], winner);

    let read = notes(&platform, "acme", Method::GET, "/notes/plan", None).await;
    assert_eq!(read.body["title"], "editor one");
    assert_eq!(read.body["revision"], winner);
}

#[tokio::test]
async fn paging_neither_skips_nor_repeats_while_writes_happen() {
    let platform = Platform::start().await;
    install_notes(&platform, &["acme"]).await;
    let original: Vec<String> = (0..12).map(|i| format!("n{:02}", i * 10)).collect();
    for id in &original {
        let reply = notes(
            &platform,
            "acme",
            Method::PUT,
            &format!("/notes/{id}"),
            Some(json!({"title": id})),
        )
        .await;
        assert_eq!(reply.status, 200);
    }

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut round = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/notes?limit=5&cursor={c}"),
            None => "/notes?limit=5".to_owned(),
        };
        let page = notes(&platform, "acme", Method::GET, &path, None).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let page_ids = ids(&page.body);
        assert!(page_ids.len() <= 5);
        seen.extend(page_ids);
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        // Between pages: new notes before and after the cursor, and an update ahead of it.
        round += 1;
        for id in [format!("n{:02}5", round), format!("n{:02}", round * 10 + 1)] {
            notes(
                &platform,
                "acme",
                Method::PUT,
                &format!("/notes/{id}"),
                Some(json!({"title": "added"})),
            )
            .await;
        }
        notes(
            &platform,
            "acme",
            Method::PUT,
            "/notes/n110",
            Some(json!({"title": "rewritten"})),
        )
        .await;
        assert!(round < 20, "paging does not end");
    }

    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "an entry was repeated: {seen:?}");
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(sorted, seen, "pages are in key order");
    for id in &original {
        assert!(seen.contains(id), "{id} was skipped: {seen:?}");
    }
}

#[tokio::test]
async fn a_namespace_outside_the_grant_is_access_denied() {
    let platform = Platform::start().await;
    install_probe(&platform, &["acme"]).await;

    let written = probe(&platform, Method::PUT, "/set?ns=probe&key=a").await;
    assert!(written["ok"].as_u64().is_some(), "{written}");

    for (method, path) in [
        (Method::GET, "/get?ns=notes&key=a"),
        (Method::PUT, "/set?ns=private&key=a"),
        (Method::DELETE, "/delete?ns=Probe&key=a"),
        (Method::GET, "/list?ns=other"),
        (Method::GET, "/probe"),
    ] {
        let reply = probe(&platform, method.clone(), path).await;
        let denied = reply["error"]["kind"] == "access-denied"
            || reply["error"]
                .as_str()
                .is_some_and(|e| e.contains("access denied"));
        assert!(denied, "{method} {path}: {reply}");
    }
    // The granted namespaces still work, and nothing was written elsewhere.
    let spare = probe(&platform, Method::GET, "/get?ns=spare&key=a").await;
    assert_eq!(spare, json!({"ok": null}));
    let listed = probe(&platform, Method::GET, "/list?ns=probe").await;
    assert_eq!(listed["ok"]["entries"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn limits_refuse_with_the_right_error_and_change_nothing() {
    let platform = Platform::start().await;
    install_probe(&platform, &["acme"]).await;

    // The manifest caps the install at 8192 bytes (below the operator's 64 MiB).
    let first = probe(&platform, Method::PUT, "/set?ns=probe&key=a&size=5000").await;
    let revision = first["ok"].as_u64().unwrap();

    let over = probe(&platform, Method::PUT, "/set?ns=spare&key=b&size=4000").await;
    assert_eq!(error_kind(&over), "quota-exceeded");
    let grow = probe(&platform, Method::PUT, "/set?ns=probe&key=a&size=9000").await;
    assert_eq!(error_kind(&grow), "quota-exceeded");

    let long_key = "k".repeat(513);
    let reply = probe(
        &platform,
        Method::PUT,
        &format!("/set?ns=probe&key={long_key}"),
    )
    .await;
    assert_eq!(error_kind(&reply), "too-large");
    let reply = probe(&platform, Method::PUT, "/set?ns=probe&key=big&size=1048577").await;
    assert_eq!(error_kind(&reply), "too-large");
    let reply = probe(&platform, Method::PUT, "/set?ns=probe&key=").await;
    assert_eq!(error_kind(&reply), "invalid-argument");
    for query in ["limit=0", "limit=1001", "cursor=%21%21"] {
        let reply = probe(&platform, Method::GET, &format!("/list?ns=probe&{query}")).await;
        assert_eq!(error_kind(&reply), "invalid-argument", "{query}");
    }

    // Nothing changed: `a` keeps its value and revision, nothing else exists.
    let a = probe(&platform, Method::GET, "/get?ns=probe&key=a").await;
    assert_eq!(a["ok"]["revision"], revision);
    assert_eq!(a["ok"]["value"].as_str().unwrap().len(), 5000);
    for (ns, key) in [("spare", "b"), ("probe", "big")] {
        let reply = probe(&platform, Method::GET, &format!("/get?ns={ns}&key={key}")).await;
        assert_eq!(reply, json!({"ok": null}), "{ns}/{key}");
    }
    let install = platform
        .registry
        .resolve("acme", PROBE)
        .await
        .unwrap()
        .unwrap();
    let usage = platform
        .registry
        .storage_usage(&install.install_id)
        .await
        .unwrap();
    assert_eq!(usage.bytes, 5001);

    // A write that shrinks is fine, and frees room.
    let shrink = probe(&platform, Method::PUT, "/set?ns=probe&key=a&size=10").await;
    assert!(shrink["ok"].as_u64().unwrap() > revision);
    let now_fits = probe(&platform, Method::PUT, "/set?ns=spare&key=b&size=4000").await;
    assert!(now_fits["ok"].is_u64(), "{now_fits}");
}

#[tokio::test]
async fn tenants_and_installs_never_see_each_others_data() {
    let platform = Platform::start().await;
    install_notes(&platform, &["acme", "globex"]).await;

    let acme = notes(
        &platform,
        "acme",
        Method::PUT,
        "/notes/shared",
        Some(json!({"title": "acme's"})),
    )
    .await;
    assert_eq!(acme.status, 200);
    let missing = notes(&platform, "globex", Method::GET, "/notes/shared", None).await;
    assert_eq!(missing.status, 404);
    let listed = notes(&platform, "globex", Method::GET, "/notes", None).await;
    assert!(ids(&listed.body).is_empty());
    // globex's must-not-exist create succeeds: the id is free in its own install.
    let globex = notes(
        &platform,
        "globex",
        Method::POST,
        "/notes",
        Some(json!({"id": "shared", "title": "globex's"})),
    )
    .await;
    assert_eq!(globex.status, 201);
    let deleted = notes(&platform, "globex", Method::DELETE, "/notes/shared", None).await;
    assert_eq!(deleted.status, 204);
    let still = notes(&platform, "acme", Method::GET, "/notes/shared", None).await;
    assert_eq!(still.body["title"], "acme's");

    // Two extensions of one tenant naming the same namespace are separate installs.
    let mut twin = manifest("guests/storage-probe/manifest.json");
    twin["id"] = "com.example.storage-probe-twin".into();
    install_probe(&platform, &["acme"]).await;
    platform
        .install_guest(&twin, "storage-probe", &["acme"], APPROVED)
        .await;
    probe(&platform, Method::PUT, "/set?ns=probe&key=k").await;
    let other = probe_as(
        &platform,
        "acme",
        "com.example.storage-probe-twin",
        Method::GET,
        "/get?ns=probe&key=k",
    )
    .await;
    assert_eq!(other, json!({"ok": null}));

    // Uninstalling removes an install's data; a new install starts empty.
    assert!(platform.registry.uninstall("acme", NOTES).await.unwrap());
    platform
        .registry
        .install("acme", NOTES, None, APPROVED, Default::default())
        .await
        .unwrap();
    let fresh = notes(&platform, "acme", Method::GET, "/notes/shared", None).await;
    assert_eq!(fresh.status, 404);
}

#[tokio::test]
async fn a_call_past_its_storage_budget_or_the_install_write_rate_gets_quota_exceeded() {
    // A slow refill (20 a second instead of 200), so that however long the first flood
    // takes on a busy machine, the second one finds the install's burst spent.
    let platform = Platform::start_with(crate::support::Options {
        storage: Some(palisade_runtime::capability::storage::StorageLimits {
            install_writes_per_second: 20,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await;
    install_probe(&platform, &["acme", "globex"]).await;

    // The default budget is 1000 operations per call: the 1001st write of one call is
    // refused with an error the guest handles (the call still answers 200).
    let flood = probe(&platform, Method::PUT, "/flood?ns=probe&key=f&n=1001").await;
    assert_eq!(flood["written"], 1000, "{flood}");
    assert_eq!(flood["error"]["kind"], "quota-exceeded", "{flood}");

    // Those writes spent most of the install's burst (1000, refilled at 20 a second): a
    // second call of 1000 writes runs out of the install's write rate before its own
    // operation budget.
    let next = probe(&platform, Method::PUT, "/flood?ns=probe&key=f&n=1000").await;
    assert!(next["written"].as_u64().unwrap() < 1000, "{next}");
    assert_eq!(next["error"]["kind"], "quota-exceeded", "{next}");
    // Reads go on, and another tenant's install writes as usual.
    let read = probe(&platform, Method::GET, "/get?ns=probe&key=f").await;
    assert_eq!(read["ok"]["key"], "f", "{read}");
    let other = probe_as(
        &platform,
        "globex",
        PROBE,
        Method::PUT,
        "/flood?ns=probe&key=f&n=5",
    )
    .await;
    assert_eq!(other["written"], 5, "{other}");
}
