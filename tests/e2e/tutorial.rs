//! `docs/tutorial.md` is executed: its `sh` blocks run in order, as a reader would type
//! them, in a fresh directory with a fresh data directory and the `palisade` binary on the
//! `PATH`, and the tutorial must end with a working call.
//!
//! A block's info string may carry attributes after `sh`:
//! * `terminal-2 ready="TEXT"` — the block is what the reader starts in a second terminal
//!   (`palisade dev`, `palisade up`): it runs in the background until the tutorial ends, and
//!   the next block starts once its output contains `TEXT`;
//! * `wait="TEXT"` — before the block runs, the second terminal's output must contain
//!   `TEXT` (say, the line that announces a reload);
//! * `expect="TEXT"` (or `expect='TEXT'`) — the block's output must contain `TEXT`;
//! * `retry="N"` — the block may run up to `N` times, a second apart, until it succeeds
//!   with its expected output (what a reader does when a log row is not there yet).
//!
//! Each block is a `bash -euo pipefail` script; the working directory and exported
//! variables carry over to the next block, as in one terminal.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::palisade_binary;

/// How long a block may wait for the second terminal (the first `palisade dev` builds the
/// extension from nothing).
const WAIT: Duration = Duration::from_secs(600);

/// One `sh` block of the tutorial.
#[derive(Debug, PartialEq)]
struct Block {
    /// The line of its opening fence, for messages.
    line: usize,
    script: String,
    attributes: BTreeMap<String, String>,
    background: bool,
}

/// The `sh` blocks of `markdown`, in order; other blocks are left alone.
fn blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    let mut in_other = false;
    for (number, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(block) = open.as_mut() {
            if trimmed.starts_with("```") {
                blocks.extend(open.take());
            } else {
                block.script.push_str(line);
                block.script.push('\n');
            }
            continue;
        }
        let Some(info) = trimmed.strip_prefix("```") else {
            continue;
        };
        if in_other {
            in_other = false;
            continue;
        }
        let mut words = info.splitn(2, ' ');
        if words.next() != Some("sh") {
            in_other = true;
            continue;
        }
        let (background, attributes) = attributes(words.next().unwrap_or(""));
        open = Some(Block {
            line: number + 1,
            script: String::new(),
            attributes,
            background,
        });
    }
    assert!(open.is_none(), "docs/tutorial.md ends inside a code block");
    blocks
}

/// `terminal-2 key="value" ...`: whether the block runs in the second terminal, and the
/// attributes.
fn attributes(info: &str) -> (bool, BTreeMap<String, String>) {
    let mut background = false;
    let mut found = BTreeMap::new();
    let mut rest = info.trim();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("terminal-2") {
            background = true;
            rest = after.trim_start();
            continue;
        }
        // `key="value"`, or `key='value'` for a value holding `"`.
        let (key, after) = rest
            .split_once('=')
            .unwrap_or_else(|| panic!("unreadable block attributes: {info}"));
        let quote = after
            .chars()
            .next()
            .filter(|c| matches!(c, '"' | '\''))
            .unwrap_or_else(|| panic!("attribute `{key}` is not quoted: {info}"));
        let (value, after) = after[1..]
            .split_once(quote)
            .unwrap_or_else(|| panic!("unterminated attribute `{key}`: {info}"));
        found.insert(key.trim().to_owned(), value.to_owned());
        rest = after.trim_start();
    }
    (background, found)
}

/// The reader's session: one working directory, one environment, one second terminal.
struct Session {
    dir: PathBuf,
    /// Where each block leaves its working directory and exported variables.
    state: PathBuf,
    path: String,
    background: Vec<(Child, PathBuf)>,
}

impl Session {
    /// The script that runs `block` where the previous one left off.
    fn script(&self, block: &str) -> String {
        let state = self.state.display();
        format!(
            "set -euo pipefail\n\
             if [ -f {state}/env ]; then source {state}/env; fi\n\
             cd \"$(cat {state}/cwd)\"\n\
             {block}\n\
             pwd > {state}/cwd\n\
             export -p > {state}/env\n"
        )
    }

    fn command(&self, script: &str) -> Command {
        let mut command = Command::new("bash");
        command
            .arg("-c")
            .arg(self.script(script))
            .env("PATH", &self.path)
            .env("PALISADE_DATA_DIR", self.dir.join(".palisade"))
            .env_remove("PALISADE_CONFIG")
            .env_remove("PALISADE_DATABASE_URL")
            .env_remove("PALISADE_OBJECT_STORE")
            .env_remove("RUSTUP_TOOLCHAIN")
            .stdin(Stdio::null());
        command
    }

    /// What the second terminals printed so far.
    fn background_output(&self) -> String {
        self.background
            .iter()
            .map(|(_, log)| std::fs::read_to_string(log).unwrap_or_default())
            .collect()
    }

    /// Waits until the second terminal's output contains `text`.
    fn wait_for(&mut self, text: &str, block: &Block) {
        let start = Instant::now();
        loop {
            if self.background_output().contains(text) {
                return;
            }
            for (child, _) in &mut self.background {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "the second terminal (before the block at docs/tutorial.md:{}) exited with {status} \
                         without printing `{text}`:\n{}",
                        block.line,
                        self.background_output()
                    );
                }
            }
            assert!(
                start.elapsed() < WAIT,
                "docs/tutorial.md:{}: `{text}` did not appear in the second terminal within {WAIT:?}:\n{}",
                block.line,
                self.background_output()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn run(&mut self, block: &Block) {
        if let Some(text) = block.attributes.get("wait") {
            self.wait_for(text, block);
        }
        if block.background {
            let log = self.state.join(format!("terminal-2-{}.log", block.line));
            let out = std::fs::File::create(&log).unwrap();
            let child = self
                .command(&block.script)
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .process_group(0)
                .spawn()
                .unwrap();
            self.background.push((child, log));
            if let Some(text) = block.attributes.get("ready") {
                self.wait_for(text, block);
            }
            return;
        }
        let attempts: u32 = block
            .attributes
            .get("retry")
            .map_or(1, |n| n.parse().expect("retry=\"N\" takes a number"));
        for attempt in 1..=attempts {
            match self.run_once(block) {
                Ok(()) => return,
                Err(failure) if attempt == attempts => panic!("{failure}"),
                Err(_) => std::thread::sleep(Duration::from_secs(1)),
            }
        }
    }

    /// Runs `block` once; why it failed, if it did.
    fn run_once(&mut self, block: &Block) -> Result<(), String> {
        let mut child = self
            .command(&block.script)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            stderr.read_to_string(&mut text).ok();
            text
        });
        let mut stdout = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        let status = child.wait().unwrap();
        let stderr = stderr.join().unwrap();
        if !status.success() {
            return Err(format!(
                "docs/tutorial.md:{}: the block failed ({status}):\n{}\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- second terminal\n{}",
                block.line,
                block.script,
                self.background_output()
            ));
        }
        if let Some(text) = block.attributes.get("expect") {
            let output = format!("{stdout}{stderr}");
            if !output.contains(text) {
                return Err(format!(
                    "docs/tutorial.md:{}: the output lacks `{text}`:\n{output}",
                    block.line
                ));
            }
        }
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for (child, _) in &mut self.background {
            // The whole process group: bash and what it started.
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = Command::new("kill")
                    .arg("--")
                    .arg(format!("-{pid}"))
                    .status();
            }
            let _ = child.wait();
        }
    }
}

fn tutorial() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/tutorial.md"))
        .unwrap()
}

#[test]
fn blocks_and_their_attributes_are_read() {
    let markdown = "text\n```sh\necho one\n```\n```rust\nlet x = 1;\n```\n\
                    ```sh terminal-2 ready=\"up and running\"\npalisade up\n```\n\
                    ```sh wait=\"reloaded\" expect='\"n\":1'\ncurl x\n```\n";
    let read = blocks(markdown);
    assert_eq!(read.len(), 3);
    assert_eq!(read[0].script, "echo one\n");
    assert!(read[1].background);
    assert_eq!(read[1].attributes["ready"], "up and running");
    assert_eq!(read[2].attributes["wait"], "reloaded");
    assert_eq!(read[2].attributes["expect"], "\"n\":1");
    assert_eq!(read[2].line, 11);
}

/// The whole tutorial, on a fresh directory and data directory.
#[test]
fn the_tutorial_runs_from_new_to_a_working_call() {
    let blocks = blocks(&tutorial());
    assert!(
        blocks.len() >= 8,
        "the tutorial has {} shell blocks",
        blocks.len()
    );
    let last = blocks.last().unwrap();
    assert!(
        last.attributes.contains_key("expect"),
        "the tutorial's last block is a call whose answer is checked"
    );

    let work = tempfile::tempdir().unwrap();
    let state = work.path().join(".tutorial");
    std::fs::create_dir_all(&state).unwrap();
    let dir = work.path().join("work");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(state.join("cwd"), dir.display().to_string()).unwrap();
    let binary = palisade_binary();
    let bin_dir = binary.parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut session = Session {
        dir,
        state: state.clone(),
        path,
        background: Vec::new(),
    };
    // The crates the tutorial makes share one target directory beside the workspace's
    // (as the scaffolding test does), so repeated runs are quick.
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).unwrap().join("scaffolds");
    std::fs::write(
        state.join("env"),
        format!("export CARGO_TARGET_DIR={}\n", target.display()),
    )
    .unwrap();
    for block in &blocks {
        session.run(block);
    }
}
