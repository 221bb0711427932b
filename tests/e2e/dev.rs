//! `palisade dev` run as an author runs it: on a crate `palisade new` made, edited while it
//! serves.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::palisade_binary;

/// A `palisade dev` process, its stdout and stderr in files; killed when dropped.
struct Dev {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Dev {
    fn spawn(crate_dir: &Path, logs: &Path, target: &Path) -> Dev {
        let stdout = logs.join("dev.out");
        let stderr = logs.join("dev.err");
        let child = Command::new(palisade_binary())
            .arg("dev")
            .arg(crate_dir)
            .args(["--listen", "127.0.0.1:0"])
            .env("CARGO_TARGET_DIR", target)
            .env_remove("RUST_LOG")
            .env_remove("PALISADE_DATA_DIR")
            .env_remove("PALISADE_DATABASE_URL")
            .env_remove("PALISADE_OBJECT_STORE")
            .env_remove("PALISADE_CONFIG")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Dev {
            child,
            stdout,
            stderr,
        }
    }

    fn out(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    fn err(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn both(&self) -> String {
        format!(
            "--- stdout\n{}\n--- stderr\n{}",
            self.out(),
            tail(&self.err(), 60)
        )
    }

    /// Waits until stdout holds `text`; fails if the process exits first.
    async fn wait_for(&mut self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.out().contains(text) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "dev exited with {status} before printing {text:?}\n{}",
                    self.both()
                );
            }
            assert!(
                Instant::now() < deadline,
                "dev did not print {text:?} within {timeout:?}\n{}",
                self.both()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The URL and token of the `curl` line dev printed.
fn curl_line(out: &str) -> (String, String) {
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("curl "))
        .unwrap_or_else(|| panic!("no curl line in:\n{out}"));
    let token = line
        .split("Bearer ")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap()
        .to_owned();
    let url = line.rsplit(' ').next().unwrap().to_owned();
    (url, token)
}

/// `GET url` with `token`: status and body.
async fn get(client: &reqwest::Client, url: &str, token: &str) -> (u16, String) {
    let response = client.get(url).bearer_auth(token).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// Polls `GET url` until the body holds `text`.
async fn wait_answer(dev: &mut Dev, client: &reqwest::Client, url: &str, token: &str, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let (status, body) = get(client, url, token).await;
        if status == 200 && body.contains(text) {
            return;
        }
        if let Some(status) = dev.child.try_wait().unwrap() {
            panic!("dev exited with {status}\n{}", dev.both());
        }
        assert!(
            Instant::now() < deadline,
            "{url} never answered {text:?} (last: {status} {body})\n{}",
            dev.both()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Replaces each `from` by its `to` in `file` (which must hold them), in one write.
fn edit(file: &Path, changes: &[(&str, &str)]) {
    let mut text = std::fs::read_to_string(file).unwrap();
    for (from, to) in changes {
        assert!(text.contains(from), "{} has no {from:?}", file.display());
        text = text.replace(from, to);
    }
    std::fs::write(file, text).unwrap();
}

/// The loop of `palisade dev`: the first version answers through the gateway with the
/// printed token; an edit answers as the next version and its log line reaches dev's
/// output; a compile error is shown and the last good version keeps answering; the fix
/// is the version after. SIGTERM stops it cleanly.
#[tokio::test(flavor = "multi_thread")]
async fn dev_rebuilds_and_reloads_on_every_change_and_survives_a_broken_build() {
    let parent = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // The crates of `new_then_build_works_for_every_template` build there too.
    let target = exe.ancestors().nth(3).unwrap().join("scaffolds");
    let created = Command::new(palisade_binary())
        .args(["new", "dev-hello", "--parent"])
        .arg(parent.path())
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let crate_dir = parent.path().join("dev-hello");
    let lib = crate_dir.join("src/lib.rs");

    let mut dev = Dev::spawn(&crate_dir, parent.path(), &target);
    // The first build compiles the SDK for wasm32-wasip2 unless another test did.
    dev.wait_for("try it:", Duration::from_secs(900)).await;
    let out = dev.out();
    assert!(
        out.contains("reloaded com.example.dev-hello@0.1.0-dev.1 ("),
        "{out}"
    );
    let (url, token) = curl_line(&out);
    assert!(
        url.ends_with("/api/ext/com.example.dev-hello/hello/world"),
        "{url}"
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let (status, body) = get(&client, &url, &token).await;
    assert_eq!(status, 200, "{body}\n{}", dev.both());
    assert!(body.contains("Hello, world!"), "{body}");
    // Its own data directory, inside the crate's target/.
    assert!(crate_dir.join("target/palisade-dev/registry.db").is_file());
    // Without the token, the gateway refuses the call.
    let anonymous = client.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);

    // An edit: a new answer and a log line with a field.
    edit(
        &lib,
        &[
            (
                "fn hello(request: Request) -> Response {\n",
                "fn hello(request: Request) -> Response {\n    \
                 palisade_sdk::log::write(palisade_sdk::log::Level::Warn, \"howdy said\", \
                 &[(\"path\", \"/hello\")]);\n",
            ),
            ("Hello, {name}!", "Howdy, {name}!"),
        ],
    );
    wait_answer(&mut dev, &client, &url, &token, "Howdy, world!").await;
    dev.wait_for(
        "reloaded com.example.dev-hello@0.1.0-dev.2 (",
        Duration::from_secs(10),
    )
    .await;
    let reloaded = dev
        .out()
        .lines()
        .find(|l| l.starts_with("reloaded com.example.dev-hello@0.1.0-dev.2 "))
        .unwrap()
        .to_owned();
    assert!(
        reloaded.contains(" ms (build ") && reloaded.ends_with(" ms)"),
        "{reloaded}"
    );
    // The call above logged; its line reaches dev's output as the guest wrote it.
    dev.wait_for(
        "WARN   com.example.dev-hello@0.1.0-dev.2  howdy said  path=/hello",
        Duration::from_secs(10),
    )
    .await;

    // A compile error: shown, and the last good version keeps answering.
    edit(&lib, &[("Howdy, {name}!", "Howdy, {name}!\" + ")]);
    dev.wait_for(
        "build failed: still serving com.example.dev-hello@0.1.0-dev.2",
        Duration::from_secs(600),
    )
    .await;
    let stderr = dev.err();
    assert!(
        stderr.contains("error") && stderr.contains("src/lib.rs"),
        "cargo's error is not shown:\n{}",
        tail(&stderr, 60)
    );
    let (status, body) = get(&client, &url, &token).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Howdy, world!"), "{body}");

    // Fixed: the next version answers.
    edit(&lib, &[("Howdy, {name}!\" + ", "Hi there, {name}!")]);
    wait_answer(&mut dev, &client, &url, &token, "Hi there, world!").await;
    dev.wait_for(
        "reloaded com.example.dev-hello@0.1.0-dev.3 (",
        Duration::from_secs(10),
    )
    .await;
    assert!(
        !dev.out().contains("@0.1.0-dev.4"),
        "a version was published for the broken build:\n{}",
        dev.out()
    );

    // SIGTERM stops it, cleanly.
    let pid = dev.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = dev.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "dev did not stop\n{}",
            dev.both()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}\n{}", dev.both());
    assert!(dev.out().contains("stopping"), "{}", dev.out());
}

/// What dev refuses: a directory that is not an extension crate, and a registry other than
/// its own.
#[test]
fn dev_refuses_what_it_cannot_serve() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(palisade_binary())
        .arg("dev")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is not an extension crate: it has no Cargo.toml"),
        "{stderr}"
    );

    let output = Command::new(palisade_binary())
        .args(["--database-url", "postgres://db.invalid/x", "dev"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("drop --database-url"), "{stderr}");
}
