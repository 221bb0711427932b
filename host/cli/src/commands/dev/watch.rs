//! What `palisade dev` watches in the extension crate: `src/` and `ui/` (all below them),
//! and `Cargo.toml`, `manifest.json` and `build.rs` — through the crate directory itself,
//! not recursively, so that `target/` (where cargo writes, and where the dev data directory
//! is) is never watched, and a file an editor saves by renaming a new one over it is still
//! seen. Only changes count: a file opened or read (as cargo reads the sources it builds)
//! is not one. The changed paths are debounced into batches: a batch is complete once
//! [`DEBOUNCE`] has passed without another change.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use notify::event::{AccessKind, AccessMode, EventKind, MetadataKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

/// How long the watcher waits for more changes before it reports a batch.
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(150);

/// The directories watched with everything below them.
const TREES: [&str; 2] = ["src", "ui"];

/// The files of the crate's own directory that are watched.
const FILES: [&str; 3] = ["Cargo.toml", "manifest.json", "build.rs"];

/// A batch of changed paths, or what went wrong with the watch.
pub(crate) type Batch = std::result::Result<Vec<PathBuf>, String>;

/// One changed path of the crate (relative to its directory), or a watch error.
type Change = std::result::Result<PathBuf, String>;

/// The crate watched; [`Watch::next_batch`] gives its changes until it is dropped.
pub(crate) struct Watch {
    dir: PathBuf,
    watcher: RecommendedWatcher,
    /// The trees of [`TREES`] being watched now, with the directory each one is.
    watched: Vec<(PathBuf, (u64, u64))>,
    changes: mpsc::UnboundedReceiver<Change>,
}

impl Watch {
    /// Starts watching the crate in `dir`.
    pub(crate) fn start(dir: &Path) -> Result<Watch> {
        let (sender, changes) = mpsc::unbounded_channel();
        let root = dir.to_owned();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // The receiver is gone only when dev is stopping.
            match event {
                Ok(event) if is_change(&event.kind) => {
                    for path in event.paths.iter().filter_map(|p| relevant(&root, p)) {
                        let _ = sender.send(Ok(path));
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    let _ = sender.send(Err(error.to_string()));
                }
            }
        })
        .context("starting the file watcher")?;
        let mut watch = Watch {
            dir: dir.to_owned(),
            watcher,
            watched: Vec::new(),
            changes,
        };
        watch
            .watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .with_context(|| format!("watching {}", dir.display()))?;
        watch.rewatch(&[])?;
        Ok(watch)
    }

    /// The next batch of changes: it waits for a change, then takes every change that
    /// follows within [`DEBOUNCE`] of the one before. `None` once the watcher is gone.
    pub(crate) async fn next_batch(&mut self) -> Option<Batch> {
        debounce(&mut self.changes, DEBOUNCE).await
    }

    /// Watches the trees of [`TREES`] as they are now: one made since the last look is
    /// watched, one removed is forgotten, and one that `changed` names (the directory
    /// itself: removed and made again, or replaced, say by a checkout of another branch) or
    /// that is another directory now is watched afresh.
    pub(crate) fn rewatch(&mut self, changed: &[PathBuf]) -> Result<()> {
        for tree in TREES {
            let path = self.dir.join(tree);
            let now = identity(&path);
            let named = changed.iter().any(|c| c == Path::new(tree));
            let before = self
                .watched
                .iter()
                .position(|(watched, _)| watched == &path);
            if let Some(at) = before {
                if !named && Some(self.watched[at].1) == now {
                    continue;
                }
                // Gone or replaced: its old watch (if any is left) is of no use.
                let _ = self.watcher.unwatch(&path);
                self.watched.remove(at);
            }
            if let Some(id) = now {
                self.watcher
                    .watch(&path, RecursiveMode::Recursive)
                    .with_context(|| format!("watching {}", path.display()))?;
                self.watched.push((path, id));
            }
        }
        Ok(())
    }
}

/// Whether an event of `kind` is a change: not a file opened, read or closed after
/// reading, nor an access time updated.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Other => false,
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
        EventKind::Any | EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => true,
    }
}

/// Waits for the first change on `changes`, then takes the changes that follow until
/// `quiet` passes without one: the changed paths, sorted and without repeats, or the first
/// error. `None` once the sender is gone and nothing is left.
async fn debounce(changes: &mut mpsc::UnboundedReceiver<Change>, quiet: Duration) -> Option<Batch> {
    let mut batch = match changes.recv().await? {
        Ok(path) => vec![path],
        Err(error) => return Some(Err(error)),
    };
    loop {
        match tokio::time::timeout(quiet, changes.recv()).await {
            Ok(Some(Ok(path))) => batch.push(path),
            Ok(Some(Err(error))) => return Some(Err(error)),
            Ok(None) | Err(_) => return Some(Ok(sorted(batch))),
        }
    }
}

fn sorted(mut paths: Vec<PathBuf>) -> Vec<PathBuf> {
    paths.sort();
    paths.dedup();
    paths
}

/// Which directory `path` is (device and inode), if it is one.
fn identity(path: &Path) -> Option<(u64, u64)> {
    let meta = std::fs::metadata(path).ok().filter(|m| m.is_dir())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        Some((meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        Some((0, 0))
    }
}

/// `path` relative to the crate directory `dir` when a change there calls for a rebuild:
/// anything below `src/` or `ui/` (or those directories themselves), `Cargo.toml`,
/// `manifest.json` or `build.rs` — but not an editor's swap, backup or lock file.
pub(crate) fn relevant(dir: &Path, path: &Path) -> Option<PathBuf> {
    let relative = path.strip_prefix(dir).ok()?;
    let mut components = relative.components();
    let Some(Component::Normal(first)) = components.next() else {
        return None;
    };
    let first = first.to_str()?;
    let watched = if components.next().is_none() {
        TREES.contains(&first) || FILES.contains(&first)
    } else {
        TREES.contains(&first)
    };
    let name = relative.file_name()?.to_str()?;
    (watched && !editor_scratch(name)).then(|| relative.to_owned())
}

/// Whether `name` is a file editors write beside the one being edited: vim's swap files
/// and its write test `4913`, emacs's lock and autosave files, `~` backups.
fn editor_scratch(name: &str) -> bool {
    name == "4913"
        || name.ends_with('~')
        || (name.starts_with('.')
            && [".swp", ".swx", ".swo"]
                .iter()
                .any(|ext| name.ends_with(ext)))
        || name.starts_with(".#")
        || (name.starts_with('#') && name.ends_with('#'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_ui_and_the_crates_own_files_are_relevant() {
        let dir = Path::new("/work/ext");
        for (path, expected) in [
            ("/work/ext/src/lib.rs", Some("src/lib.rs")),
            ("/work/ext/src/deep/er/mod.rs", Some("src/deep/er/mod.rs")),
            ("/work/ext/src", Some("src")),
            ("/work/ext/ui/index.html", Some("ui/index.html")),
            ("/work/ext/ui/assets/app.js", Some("ui/assets/app.js")),
            ("/work/ext/Cargo.toml", Some("Cargo.toml")),
            ("/work/ext/manifest.json", Some("manifest.json")),
            ("/work/ext/build.rs", Some("build.rs")),
        ] {
            assert_eq!(
                relevant(dir, Path::new(path)),
                expected.map(PathBuf::from),
                "{path}"
            );
        }
    }

    #[test]
    fn build_output_other_files_and_editor_scratch_are_not() {
        let dir = Path::new("/work/ext");
        for path in [
            "/work/ext/target/release/ext.wasm",
            "/work/ext/target/palisade-dev/registry.db",
            "/work/ext/target",
            "/work/ext/Cargo.lock",
            "/work/ext/README.md",
            "/work/ext/.git/index",
            "/work/ext/tests/it.rs",
            // Only the crate's own files, not ones of the same name deeper down.
            "/work/ext/vendor/Cargo.toml",
            "/work/ext/target/manifest.json",
            "/work/ext/src/.lib.rs.swp",
            "/work/ext/src/.lib.rs.swx",
            "/work/ext/src/lib.rs~",
            "/work/ext/src/4913",
            "/work/ext/src/.#lib.rs",
            "/work/ext/src/#lib.rs#",
            "/work/ext/.manifest.json.swp",
            "/work/other/src/lib.rs",
            "/work/extension/src/lib.rs",
        ] {
            assert_eq!(relevant(dir, Path::new(path)), None, "{path}");
        }
    }

    #[test]
    fn only_changes_count_not_reads() {
        use notify::event::{AccessKind, CreateKind, DataChange, RemoveKind, RenameMode};
        for kind in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Read),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Access(AccessKind::Any),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)),
            EventKind::Other,
        ] {
            assert!(!is_change(&kind), "{kind:?}");
        }
        for kind in [
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::Permissions)),
            EventKind::Remove(RemoveKind::File),
            EventKind::Any,
        ] {
            assert!(is_change(&kind), "{kind:?}");
        }
    }

    /// Changes close together make one batch, sorted and without repeats; a change after a
    /// quiet spell starts the next; an error is reported at once.
    #[tokio::test]
    async fn changes_close_together_make_one_batch() {
        let (sender, mut changes) = mpsc::unbounded_channel();
        let quiet = Duration::from_millis(300);
        let feed = tokio::spawn(async move {
            for path in ["src/b.rs", "src/a.rs", "src/b.rs", "manifest.json"] {
                sender.send(Ok(PathBuf::from(path))).unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(1500)).await;
            sender.send(Ok(PathBuf::from("ui/index.html"))).unwrap();
            tokio::time::sleep(Duration::from_millis(1500)).await;
            sender.send(Err("watch limit reached".to_owned())).unwrap();
        });
        let started = tokio::time::Instant::now();
        assert_eq!(
            debounce(&mut changes, quiet).await,
            Some(Ok(vec![
                PathBuf::from("manifest.json"),
                PathBuf::from("src/a.rs"),
                PathBuf::from("src/b.rs"),
            ]))
        );
        // Taken once the quiet spell passed, not at the first change.
        assert!(started.elapsed() >= quiet, "{:?}", started.elapsed());
        assert_eq!(
            debounce(&mut changes, quiet).await,
            Some(Ok(vec![PathBuf::from("ui/index.html")]))
        );
        assert_eq!(
            debounce(&mut changes, quiet).await,
            Some(Err("watch limit reached".to_owned()))
        );
        feed.await.unwrap();
        assert_eq!(debounce(&mut changes, quiet).await, None);
    }

    /// Reading the crate's files (as cargo and dev itself do on every build) is no change:
    /// otherwise every build would start the next.
    #[tokio::test]
    async fn reading_the_crate_is_not_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::write(root.join("src/lib.rs"), "// one").unwrap();
        std::fs::write(root.join("Cargo.toml"), "[package]").unwrap();
        let mut watch = Watch::start(&root).unwrap();
        for file in ["src/lib.rs", "Cargo.toml"] {
            std::fs::read(root.join(file)).unwrap();
        }
        std::fs::read_dir(root.join("src")).unwrap().for_each(drop);
        let quiet = tokio::time::timeout(Duration::from_secs(1), watch.next_batch()).await;
        assert!(quiet.is_err(), "reads were reported: {quiet:?}");
        std::fs::write(root.join("src/lib.rs"), "// two").unwrap();
        let batch = tokio::time::timeout(Duration::from_secs(10), watch.next_batch())
            .await
            .unwrap();
        assert_eq!(batch, Some(Ok(vec![PathBuf::from("src/lib.rs")])));
    }

    /// A real watch of a crate: an edit of a source file and an atomic save of the manifest
    /// (a new file renamed over it) are reported; a write below `target/` is not.
    #[tokio::test]
    async fn edits_arrive_as_debounced_batches_of_relevant_paths() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::create_dir_all(root.join("target/release")).unwrap();
        std::fs::write(root.join("src/lib.rs"), "// one").unwrap();
        std::fs::write(root.join("manifest.json"), "{}").unwrap();
        let mut watch = Watch::start(&root).unwrap();

        std::fs::write(root.join("target/release/out.wasm"), "built").unwrap();
        std::fs::write(root.join("src/lib.rs"), "// two").unwrap();
        std::fs::write(root.join(".manifest.json.new"), "{ }").unwrap();
        std::fs::rename(root.join(".manifest.json.new"), root.join("manifest.json")).unwrap();
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !(seen.contains(&PathBuf::from("src/lib.rs"))
            && seen.contains(&PathBuf::from("manifest.json")))
        {
            let batch = tokio::time::timeout_at(deadline, watch.next_batch())
                .await
                .expect("the edits were not reported")
                .unwrap()
                .unwrap();
            seen.extend(batch);
        }
        assert!(
            seen.iter().all(|p| !p.starts_with("target")),
            "target/ was reported: {seen:?}"
        );

        // A tree made after the start is watched once rewatched, and one made anew again.
        for round in 0..2 {
            if round == 1 {
                std::fs::remove_dir_all(root.join("ui")).unwrap();
            }
            std::fs::create_dir_all(root.join("ui")).unwrap();
            wait_for(&mut watch, "ui").await;
            let page = format!("ui/page-{round}.html");
            std::fs::write(root.join(&page), "<p>hi</p>").unwrap();
            wait_for(&mut watch, &page).await;
        }
    }

    /// Waits for a batch naming `path`, rewatching after each as the reload loop does.
    async fn wait_for(watch: &mut Watch, path: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let batch = tokio::time::timeout_at(deadline, watch.next_batch())
                .await
                .unwrap_or_else(|_| panic!("{path} was not reported"))
                .unwrap()
                .unwrap();
            watch.rewatch(&batch).unwrap();
            if batch.contains(&PathBuf::from(path)) {
                return;
            }
        }
    }
}
