//! Real `palisade` server processes, for the tests that run the binary as an operator
//! would: started with their stderr in a file, waited on through `/healthz`, stopped with
//! SIGTERM, and killed when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::support::palisade_binary;

/// A `palisade` server process, killed when dropped.
pub(crate) struct Server {
    pub name: &'static str,
    child: Child,
    /// `http://` and the address it serves.
    pub url: String,
    log: PathBuf,
}

impl Server {
    /// Starts `palisade --data-dir DIR --database-url DB ARGS...` with `RUST_LOG` at
    /// `log_level` and its stderr in `log`. `ARGS` carry the listen address; `addr` is
    /// where the process will serve.
    pub(crate) fn spawn(
        name: &'static str,
        data_dir: &Path,
        database_url: &str,
        addr: &str,
        log: PathBuf,
        log_level: &str,
        args: &[&str],
    ) -> Server {
        let stderr = std::fs::File::create(&log).unwrap();
        let child = Command::new(palisade_binary())
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--database-url")
            .arg(database_url)
            .args(args)
            .env("RUST_LOG", log_level)
            .env_remove("PALISADE_SECRETS_KEY")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        Server {
            name,
            child,
            url: format!("http://{addr}"),
            log,
        }
    }

    /// Waits until `/healthz` answers 200.
    pub(crate) async fn wait_healthy(&mut self, client: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = client.get(format!("{}/healthz", self.url)).send().await
                && response.status() == StatusCode::OK
            {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("{} exited with {status}:\n{}", self.name, self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "{} did not become healthy:\n{}",
                self.name,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits at most `timeout` for the process to exit by itself.
    pub(crate) async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit:\n{}",
                self.name,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub(crate) async fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        self.wait_exit(Duration::from_secs(30)).await
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub(crate) fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log lines at WARN or ERROR.
    pub(crate) fn warnings(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback address.
pub(crate) fn free_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// A caller token for `tenant` (user `user-1`, 10 minutes), signed by the data directory's
/// development caller key, which `palisade gateway --dev` accepts.
pub(crate) fn dev_caller_token(data_dir: &Path, tenant: &str) -> String {
    let pem = std::fs::read(data_dir.join("keys/caller-issuer.key.pem")).unwrap();
    palisade_gateway::mint_dev_token(
        &pem,
        "palisade-dev",
        "palisade",
        tenant,
        "user-1",
        Duration::from_secs(600),
    )
    .unwrap()
}
