use std::sync::Arc;

use axum::body::Body;
use http::{Request, StatusCode};
use tower::ServiceExt;

use super::*;

const EXT: &str = "com.example.widget";
const HASH: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn asked(tail: &str) -> Option<String> {
    parse_path(&format!("/ext-ui/{EXT}/{HASH}/{tail}")).map(|asked| asked.path)
}

#[test]
fn plain_paths_pass() {
    assert_eq!(asked("index.html").as_deref(), Some("index.html"));
    assert_eq!(asked("js/app.js").as_deref(), Some("js/app.js"));
    assert_eq!(asked("docs/").as_deref(), Some("docs/"));
    assert_eq!(asked("").as_deref(), Some(""));
    assert_eq!(asked("a%20b.png").as_deref(), Some("a b.png"));
    let parsed = parse_path(&format!("/ext-ui/{EXT}/{}/x", HASH.replace(':', "%3A"))).unwrap();
    assert_eq!(parsed.hash.to_string(), HASH);
    assert_eq!(parsed.extension_id, EXT);
}

#[test]
fn traversal_and_hidden_paths_are_refused_in_every_form() {
    for tail in [
        "../x",
        "a/../../x",
        "./x",
        "%2e%2e/x",
        "%2E%2E/x",
        ".%2e/x",
        "%2e/x",
        "a%2fb",
        "a%2Fb",
        "..%2fx",
        "a%5cb",
        "a%5Cb",
        "a\\b",
        "a%00b",
        "a\0b",
        ".env",
        "a/.git/config",
        "%2egit/config",
        "a//b",
        "/etc/passwd",
        "%ff.html",
        "a%0ab",
    ] {
        assert_eq!(asked(tail), None, "{tail:?} was not refused");
    }
    for raw in [
        "/ext-ui/com.example.widget/not-a-hash/index.html",
        "/ext-ui/com.example.widget/sha256:00/index.html",
        "/ext-ui/com.example.widget",
        "/other/com.example.widget/x",
    ] {
        assert!(parse_path(raw).is_none(), "{raw} was not refused");
    }
}

#[test]
fn single_byte_ranges_are_understood() {
    assert_eq!(byte_range("bytes=0-3", 10), Some(Some((0, 3))));
    assert_eq!(byte_range("bytes=4-", 10), Some(Some((4, 9))));
    assert_eq!(byte_range("bytes=-3", 10), Some(Some((7, 9))));
    assert_eq!(byte_range("bytes=5-100", 10), Some(Some((5, 9))));
    assert_eq!(byte_range("bytes=10-", 10), Some(None));
    assert_eq!(byte_range("bytes=5-2", 10), Some(None));
    assert_eq!(byte_range("bytes=0-1,4-5", 10), None);
    assert_eq!(byte_range("items=0-1", 10), None);
    assert_eq!(byte_range("bytes=x-1", 10), None);
}

/// A runner over a registry holding `EXT` with a UI tree, and that version's content hash.
struct Served {
    _dir: tempfile::TempDir,
    cache: PathBuf,
    app: axum::Router,
    hash: ContentHash,
    /// The content hash of another extension's version.
    other: ContentHash,
}

const INDEX: &str = "<!doctype html><title>w</title><script src=\"app.js\"></script>";
const APP: &str = "document.title = 'widget';";

async fn served(ui: serde_json::Value) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let registry = palisade_registry::testing::open(dir.path()).await;
    let key = palisade_bundle::SigningKey::generate().unwrap();
    let trust =
        palisade_bundle::TrustBundle::from_pem(key.public_key_pem().unwrap().as_bytes()).unwrap();
    registry.trust_key(key.public_key()).await.unwrap();
    let files: Vec<(String, Vec<u8>)> = [
        ("index.html", INDEX.as_bytes().to_vec()),
        ("app.js", APP.as_bytes().to_vec()),
        ("style.css", b"body { margin: 0 }".to_vec()),
        (
            "logo.svg",
            b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>".to_vec(),
        ),
        ("docs/index.html", b"<p>docs</p>".to_vec()),
        ("big.bin", vec![7u8; 2048]),
    ]
    .into_iter()
    .map(|(path, content)| (path.to_owned(), content))
    .collect();
    let mut hashes = Vec::new();
    for (id, ui) in [
        (EXT, ui),
        (
            "com.example.other",
            serde_json::json!({"entry": "index.html"}),
        ),
    ] {
        let manifest = serde_json::json!({
            "id": id,
            "name": "widget",
            "version": "1.0.0",
            "publisher": "example",
            "component": "ext.wasm",
            "runtime": "wasi-http@0.2",
            "ui": ui,
        });
        let bundle = palisade_bundle::pack(
            manifest.to_string().as_bytes(),
            "ext.wasm",
            &[0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00],
            &files,
        )
        .unwrap();
        let published = registry
            .publish(&bundle, &key.sign(&bundle).unwrap(), &trust)
            .await
            .unwrap();
        hashes.push(published.content_hash);
    }
    let cache = dir.path().join("ui-cache");
    let config = crate::RunnerConfig {
        ui: UiConfig {
            cache_dir: cache.clone(),
            max_file_bytes: 1024,
            frame_ancestors: vec!["https://app.example".into()],
            ..UiConfig::default()
        },
        ..crate::RunnerConfig::default()
    };
    let (state, _) = crate::test_support::runner_on(registry, config);
    Served {
        _dir: dir,
        cache,
        app: crate::app(Arc::new(state)),
        hash: hashes[0],
        other: hashes[1],
    }
}

impl Served {
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, Bytes) {
        let mut request = Request::get(format!("/ext-ui/{EXT}/{}/{path}", self.hash));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self
            .app
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        (parts.status, parts.headers, body)
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .map_or("", |v| v.to_str().unwrap_or_default())
}

#[tokio::test]
async fn files_are_served_with_headers_for_their_type() {
    let s = served(serde_json::json!({"entry": "index.html"})).await;
    let (status, headers, body) = s.get("index.html", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, INDEX);
    assert_eq!(header(&headers, "content-type"), "text/html; charset=utf-8");
    let csp = header(&headers, "content-security-policy");
    assert!(csp.contains("frame-ancestors https://app.example"), "{csp}");
    assert!(csp.contains("connect-src 'none'"), "{csp}");
    assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
    assert_eq!(header(&headers, "referrer-policy"), "no-referrer");
    assert_eq!(
        header(&headers, "cache-control"),
        "public, max-age=31536000, immutable"
    );
    let etag = header(&headers, "etag");
    assert_eq!(etag, format!("\"{}\"", hex::encode(Sha256::digest(INDEX))));

    for (path, content_type) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("logo.svg", "image/svg+xml"),
    ] {
        let (status, headers, _) = s.get(path, &[]).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let got = header(&headers, "content-type");
        assert!(
            got == content_type || got == "application/javascript; charset=utf-8",
            "{path}: {got}"
        );
        assert!(headers.get("content-security-policy").is_none(), "{path}");
    }
}

#[tokio::test]
async fn an_etag_match_is_304_and_ranges_are_served() {
    let s = served(serde_json::json!({"entry": "index.html"})).await;
    let (_, headers, _) = s.get("app.js", &[]).await;
    let etag = header(&headers, "etag").to_owned();
    let (status, headers, body) = s.get("app.js", &[("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    assert_eq!(header(&headers, "etag"), etag);
    let (status, _, _) = s.get("app.js", &[("if-none-match", "\"other\"")]).await;
    assert_eq!(status, StatusCode::OK);

    let (status, headers, body) = s.get("app.js", &[("range", "bytes=0-7")]).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, &APP.as_bytes()[..8]);
    assert_eq!(
        header(&headers, "content-range"),
        format!("bytes 0-7/{}", APP.len())
    );
    let (status, headers, _) = s.get("app.js", &[("range", "bytes=999-")]).await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        header(&headers, "content-range"),
        format!("bytes */{}", APP.len())
    );
}

#[tokio::test]
async fn unknown_hashes_paths_and_oversized_files_are_404() {
    let s = served(serde_json::json!({"entry": "index.html"})).await;
    for path in [
        "missing.html",
        "docs/",
        "",
        "big.bin",
        "../index.html",
        "%2e%2e/index.html",
    ] {
        let (status, _, _) = s.get(path, &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    // A well-formed hash of no version, and another extension's version.
    let unknown = ContentHash::of(b"no such bundle");
    for hash in [unknown, s.other] {
        let response = s
            .app
            .clone()
            .oneshot(
                Request::get(format!("/ext-ui/{EXT}/{hash}/index.html"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{hash}");
    }
}

#[tokio::test]
async fn directories_and_the_spa_fallback_follow_the_manifest() {
    let s = served(serde_json::json!({
        "entry": "index.html", "directory_index": true, "spa_fallback": true
    }))
    .await;
    let (status, _, body) = s.get("docs/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "<p>docs</p>");
    let (status, _, body) = s.get("", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, INDEX);
    let (status, headers, body) = s.get("settings/profile", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, INDEX);
    assert_eq!(header(&headers, "cache-control"), "no-cache");
    // The fallback never opens a refused path.
    let (status, _, _) = s.get("../index.html", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_tampered_cached_tree_is_detected_and_unpacked_again() {
    let s = served(serde_json::json!({"entry": "index.html"})).await;
    let (status, _, _) = s.get("app.js", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let file = s.cache.join(hash_dir(&s.hash)).join("ui/app.js");
    std::fs::write(&file, "alert('planted')").unwrap();
    let (status, _, body) = s.get("app.js", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, APP);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), APP);
    // A tree removed from the disk is unpacked again too.
    std::fs::remove_dir_all(s.cache.join(hash_dir(&s.hash))).unwrap();
    let (status, _, body) = s.get("index.html", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, INDEX);
}

#[test]
fn trees_past_the_byte_bound_leave_the_disk_least_recently_used_first() {
    let dir = tempfile::tempdir().unwrap();
    let trees = UiTrees::new(UiConfig {
        cache_dir: dir.path().to_owned(),
        cache_bytes: 250,
        ..UiConfig::default()
    });
    let tree = |bytes: u64| {
        let mut index = TreeIndex::default();
        index.files.insert(
            "a".into(),
            FileEntry {
                len: bytes,
                sha256: String::new(),
            },
        );
        Arc::new(index)
    };
    let hashes: Vec<ContentHash> = (0u8..3).map(|i| ContentHash::of(&[i])).collect();
    for hash in &hashes {
        std::fs::create_dir_all(trees.dir(hash)).unwrap();
    }
    trees.remember(hashes[0], tree(100));
    trees.remember(hashes[1], tree(100));
    assert!(trees.cached(&hashes[0]).is_some());
    trees.remember(hashes[2], tree(100));
    // 300 bytes > 250: the least recently used (hashes[1]) went, from memory and disk.
    assert!(trees.cached(&hashes[1]).is_none());
    assert!(!trees.dir(&hashes[1]).exists());
    assert!(trees.dir(&hashes[0]).exists() && trees.dir(&hashes[2]).exists());
    assert_eq!(trees.bytes.load(Ordering::Relaxed), 200);
}
