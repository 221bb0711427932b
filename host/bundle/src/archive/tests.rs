use std::io::Read;

use super::*;

const MANIFEST: &str = r#"{"id":"com.example.hello","name":"Hello","publisher":"Example",
 "version":"0.1.0","runtime":"wasi-http@0.2","component":"hello.wasm",
 "ui":{"entry":"index.html"}}"#;
const COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

fn ui_files() -> Vec<(String, Vec<u8>)> {
    vec![
        ("index.html".into(), b"<h1>hi</h1>".to_vec()),
        ("assets/app.js".into(), b"console.log(1)".to_vec()),
    ]
}

fn packed() -> Vec<u8> {
    pack(MANIFEST.as_bytes(), "hello.wasm", COMPONENT, &ui_files()).unwrap()
}

fn tar_entries(bundle: &[u8]) -> Vec<tar::Header> {
    let tar = zstd::decode_all(bundle).unwrap();
    let mut archive = tar::Archive::new(&tar[..]);
    archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().header().clone())
        .collect()
}

/// One raw tar entry for hostile archives: the path bytes are written as given.
struct Raw<'a> {
    path: &'a [u8],
    kind: tar::EntryType,
    data: &'a [u8],
}

fn file<'a>(path: &'a str, data: &'a [u8]) -> Raw<'a> {
    Raw {
        path: path.as_bytes(),
        kind: tar::EntryType::Regular,
        data,
    }
}

fn hostile(entries: &[Raw<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..entry.path.len()].copy_from_slice(entry.path);
        header.set_entry_type(entry.kind);
        header.set_size(entry.data.len() as u64);
        header.set_mode(0o644);
        if entry.kind.is_symlink() || entry.kind.is_hard_link() {
            header.set_link_name("manifest.json").unwrap();
        }
        header.set_cksum();
        builder.append(&header, entry.data).unwrap();
    }
    zstd::encode_all(&builder.into_inner().unwrap()[..], 3).unwrap()
}

fn valid_files() -> Vec<Raw<'static>> {
    vec![
        file("hello.wasm", COMPONENT),
        file("manifest.json", MANIFEST.as_bytes()),
        file("ui/index.html", b"x"),
    ]
}

fn with<'a>(extra: Raw<'a>) -> Vec<u8> {
    let mut entries: Vec<Raw<'a>> = valid_files();
    entries.push(extra);
    hostile(&entries)
}

fn unpack_default(bytes: &[u8]) -> Result<Bundle, ArchiveError> {
    unpack(bytes, &UnpackLimits::default())
}

#[test]
fn pack_then_unpack_roundtrips() {
    let bundle = unpack_default(&packed()).unwrap();
    assert_eq!(bundle.manifest_json, MANIFEST.as_bytes());
    assert_eq!(bundle.manifest.id, "com.example.hello");
    assert_eq!(bundle.component, COMPONENT);
    assert_eq!(bundle.ui.len(), 2);
    assert_eq!(bundle.ui["assets/app.js"], b"console.log(1)");
    assert!(format!("{bundle:?}").contains("com.example.hello"));
}

#[test]
fn pack_is_reproducible() {
    let a = packed();
    let mut reversed = ui_files();
    reversed.reverse();
    let b = pack(MANIFEST.as_bytes(), "hello.wasm", COMPONENT, &reversed).unwrap();
    assert_eq!(a, b);
    assert_eq!(ContentHash::of(&a), ContentHash::of(&b));
}

#[test]
fn pack_writes_sorted_entries_with_fixed_metadata() {
    let headers = tar_entries(&packed());
    let paths: Vec<String> = headers
        .iter()
        .map(|h| h.path().unwrap().display().to_string())
        .collect();
    assert_eq!(
        paths,
        [
            "hello.wasm",
            "manifest.json",
            "ui/assets/app.js",
            "ui/index.html"
        ]
    );
    for header in headers {
        assert_eq!(header.mtime().unwrap(), 0);
        assert_eq!(header.uid().unwrap(), 0);
        assert_eq!(header.gid().unwrap(), 0);
        assert_eq!(header.mode().unwrap(), 0o644);
        assert_eq!(header.username().unwrap(), Some(""));
        assert_eq!(header.groupname().unwrap(), Some(""));
        assert!(header.entry_type().is_file());
    }
}

#[test]
fn pack_handles_long_paths() {
    let long = format!("{}/file.js", "d".repeat(150));
    let mut ui = ui_files();
    ui.push((long.clone(), b"long".to_vec()));
    let bytes = pack(MANIFEST.as_bytes(), "hello.wasm", COMPONENT, &ui).unwrap();
    assert_eq!(unpack_default(&bytes).unwrap().ui[&long], b"long");
}

#[test]
fn pack_refuses_inconsistent_input() {
    let err = pack(MANIFEST.as_bytes(), "other.wasm", COMPONENT, &ui_files()).unwrap_err();
    assert!(
        matches!(err, ArchiveError::ComponentMismatch { .. }),
        "{err}"
    );

    let mut bad = ui_files();
    bad.push(("../escape".into(), vec![]));
    let err = pack(MANIFEST.as_bytes(), "hello.wasm", COMPONENT, &bad).unwrap_err();
    assert!(err.to_string().contains("ui/../escape"), "{err}");

    let mut dup = ui_files();
    dup.push(("index.html".into(), vec![]));
    let err = pack(MANIFEST.as_bytes(), "hello.wasm", COMPONENT, &dup).unwrap_err();
    assert!(matches!(err, ArchiveError::Duplicate { .. }), "{err}");

    let err = pack(MANIFEST.as_bytes(), "hello.wasm", COMPONENT, &[]).unwrap_err();
    assert!(matches!(err, ArchiveError::UiEntryMissing(_)), "{err}");

    let err = pack(b"{}", "hello.wasm", COMPONENT, &[]).unwrap_err();
    assert!(matches!(err, ArchiveError::Manifest(_)), "{err}");
}

#[test]
fn pack_dir_reads_manifest_component_and_ui() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("manifest.json"), MANIFEST).unwrap();
    std::fs::create_dir_all(dir.path().join("ui/assets")).unwrap();
    std::fs::write(dir.path().join("ui/index.html"), b"<h1>hi</h1>").unwrap();
    std::fs::write(dir.path().join("ui/assets/app.js"), b"console.log(1)").unwrap();
    let component = dir.path().join("target.wasm");
    std::fs::write(&component, COMPONENT).unwrap();

    let bytes = pack_dir(dir.path(), &component).unwrap();
    assert_eq!(bytes, packed(), "pack_dir and pack agree");

    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("ui/passwd")).unwrap();
    let err = pack_dir(dir.path(), &component).unwrap_err();
    assert!(matches!(err, ArchiveError::Symlink(_)), "{err}");
    assert!(err.to_string().contains("passwd"));
}

#[test]
fn pack_dir_names_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let err = pack_dir(dir.path(), &dir.path().join("x.wasm")).unwrap_err();
    assert!(err.to_string().contains("manifest.json"), "{err}");

    std::fs::write(dir.path().join("manifest.json"), MANIFEST).unwrap();
    let err = pack_dir(dir.path(), &dir.path().join("x.wasm")).unwrap_err();
    assert!(err.to_string().contains("x.wasm"), "{err}");
}

#[test]
fn unpack_accepts_dot_slash_and_directories() {
    let bytes = hostile(&[
        Raw {
            path: b"./",
            kind: tar::EntryType::Directory,
            data: b"",
        },
        file("./hello.wasm", COMPONENT),
        file("./manifest.json", MANIFEST.as_bytes()),
        Raw {
            path: b"ui/",
            kind: tar::EntryType::Directory,
            data: b"",
        },
        file("./ui/index.html", b"x"),
    ]);
    let bundle = unpack_default(&bytes).unwrap();
    assert_eq!(bundle.ui.keys().collect::<Vec<_>>(), ["index.html"]);
}

#[test]
fn unpack_refuses_unsafe_paths() {
    for path in ["/etc/passwd", "../x", "ui/../../x", "ui//x", "ui/./x"] {
        let err = unpack_default(&with(file(path, b"x"))).unwrap_err();
        assert!(
            matches!(err, ArchiveError::InvalidPath { .. }),
            "{path}: {err}"
        );
        assert!(err.to_string().contains(path), "{err}");
    }
    let err = unpack_default(&with(Raw {
        path: b"ui/\xff.js",
        kind: tar::EntryType::Regular,
        data: b"",
    }))
    .unwrap_err();
    assert!(err.to_string().contains("UTF-8"), "{err}");
    let err = unpack_default(&with(Raw {
        path: b"../up/",
        kind: tar::EntryType::Directory,
        data: b"",
    }))
    .unwrap_err();
    assert!(matches!(err, ArchiveError::InvalidPath { .. }), "{err}");
}

#[test]
fn unpack_refuses_links_and_devices() {
    for (kind, name) in [
        (tar::EntryType::Symlink, "symbolic link"),
        (tar::EntryType::Link, "hard link"),
        (tar::EntryType::Char, "character device"),
        (tar::EntryType::Block, "block device"),
        (tar::EntryType::Fifo, "FIFO"),
    ] {
        let err = unpack_default(&with(Raw {
            path: b"ui/link",
            kind,
            data: b"",
        }))
        .unwrap_err();
        assert!(matches!(err, ArchiveError::NotRegularFile { .. }), "{err}");
        assert!(err.to_string().contains(name), "{err}");
    }
}

#[test]
fn unpack_refuses_duplicates() {
    let err = unpack_default(&with(file("ui/index.html", b"again"))).unwrap_err();
    assert!(
        matches!(err, ArchiveError::Duplicate { ref path } if path == "ui/index.html"),
        "{err}"
    );
    let err = unpack_default(&with(file("./manifest.json", b"{}"))).unwrap_err();
    assert!(matches!(err, ArchiveError::Duplicate { .. }), "{err}");
}

#[test]
fn unpack_refuses_unexpected_files() {
    let err = unpack_default(&with(file("extra.txt", b"x"))).unwrap_err();
    assert!(matches!(err, ArchiveError::Unexpected { .. }), "{err}");
    assert!(err.to_string().contains("extra.txt"));
    let err = unpack_default(&with(file("other.wasm", b"x"))).unwrap_err();
    assert!(err.to_string().contains("other.wasm"), "{err}");
}

#[test]
fn unpack_names_missing_parts() {
    let err = unpack_default(&hostile(&[file("hello.wasm", COMPONENT)])).unwrap_err();
    assert!(err.to_string().contains("manifest.json"), "{err}");
    let err = unpack_default(&hostile(&[file("manifest.json", MANIFEST.as_bytes())])).unwrap_err();
    assert!(err.to_string().contains("component `hello.wasm`"), "{err}");
    let err = unpack_default(&hostile(&[
        file("hello.wasm", COMPONENT),
        file("manifest.json", MANIFEST.as_bytes()),
    ]))
    .unwrap_err();
    assert!(matches!(err, ArchiveError::UiEntryMissing(_)), "{err}");
    let err = unpack_default(&hostile(&[
        file("hello.wasm", COMPONENT),
        file("manifest.json", b"{\"id\":1}"),
    ]))
    .unwrap_err();
    assert!(err.to_string().contains("manifest field `id`"), "{err}");
}

#[test]
fn unpack_enforces_entry_count() {
    let limits = UnpackLimits {
        max_entries: 3,
        ..UnpackLimits::default()
    };
    assert!(unpack(&hostile(&valid_files()), &limits).is_ok());
    let err = unpack(&with(file("ui/b", b"")), &limits).unwrap_err();
    assert!(
        matches!(err, ArchiveError::TooManyEntries { max: 3 }),
        "{err}"
    );
}

#[test]
fn unpack_enforces_declared_sizes() {
    let big = vec![0u8; 4096];
    let limits = UnpackLimits {
        max_entries: 10,
        max_total_bytes: 6000,
        max_file_bytes: 4000,
    };
    let err = unpack(&with(file("ui/big", &big)), &limits).unwrap_err();
    assert!(
        matches!(err, ArchiveError::FileTooLarge { max: 4000, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("ui/big"));

    let half = &big[..3000];
    let bytes = hostile(&[
        file("hello.wasm", COMPONENT),
        file("manifest.json", MANIFEST.as_bytes()),
        file("ui/index.html", half),
        file("ui/more", half),
    ]);
    let err = unpack(&bytes, &limits).unwrap_err();
    assert!(matches!(err, ArchiveError::TooLarge { max: 6000 }), "{err}");
}

#[test]
fn unpack_counts_bytes_actually_decompressed() {
    // A GNU long-name record is read into memory by the tar reader before any entry is
    // yielded; 8 MiB of it must hit the byte budget, not the allocator.
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    header.set_entry_type(tar::EntryType::GNULongName);
    let huge = vec![b'a'; 8 << 20];
    header.set_size(huge.len() as u64);
    header.set_cksum();
    builder.append(&header, &huge[..]).unwrap();
    let bytes = zstd::encode_all(&builder.into_inner().unwrap()[..], 3).unwrap();
    assert!(bytes.len() < 64 * 1024, "a small bomb");
    let limits = UnpackLimits {
        max_entries: 4,
        max_total_bytes: 64 * 1024,
        max_file_bytes: 64 * 1024,
    };
    let err = unpack(&bytes, &limits).unwrap_err();
    assert!(matches!(err, ArchiveError::TooLarge { .. }), "{err}");
}

#[test]
fn unpack_refuses_garbage_and_truncation() {
    let err = unpack_default(b"definitely not zstd").unwrap_err();
    assert!(matches!(err, ArchiveError::Corrupt(_)), "{err}");
    let bytes = packed();
    let err = unpack_default(&bytes[..bytes.len() / 2]).unwrap_err();
    assert!(matches!(err, ArchiveError::Corrupt(_)), "{err}");
}

#[test]
fn unpack_verified_checks_the_hash_first() {
    let bytes = packed();
    let hash = ContentHash::of(&bytes);
    assert!(unpack_verified(&bytes, &hash, &UnpackLimits::default()).is_ok());
    let err = unpack_verified(b"junk", &hash, &UnpackLimits::default()).unwrap_err();
    assert!(matches!(err, ArchiveError::HashMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&hash.to_string()));
}

#[test]
fn packed_bytes_decompress_to_a_plain_tar() {
    let bytes = packed();
    let mut decoder = zstd::stream::Decoder::new(&bytes[..]).unwrap();
    let mut tar = Vec::new();
    decoder.read_to_end(&mut tar).unwrap();
    assert_eq!(tar.len() % 512, 0);
}
