//! Test support shared with other crates' tests (feature `testing`): where a test's
//! registry lives, and opening it.
//!
//! Tests run on a SQLite file in their temporary directory. With
//! `PALISADE_TEST_POSTGRES_URL` set (e.g. `postgres://postgres@127.0.0.1:5432/palisade_ci`),
//! they run on that PostgreSQL server instead, each directory in a schema of its own, so
//! the same suite covers both backends.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::{Registry, RegistryConfig};

/// The variable naming the PostgreSQL server tests run against.
pub const POSTGRES_URL_VAR: &str = "PALISADE_TEST_POSTGRES_URL";

/// The PostgreSQL server tests run against, if one is named.
pub fn postgres_url() -> Option<String> {
    std::env::var(POSTGRES_URL_VAR)
        .ok()
        .filter(|url| !url.is_empty())
}

/// [`postgres_url`], saying on stderr that the calling test is skipped when there is none.
pub fn postgres_url_or_skip() -> Option<String> {
    let url = postgres_url();
    if url.is_none() {
        eprintln!("skipped: {POSTGRES_URL_VAR} is not set");
    }
    url
}

/// The configuration of the registry kept in `dir` (its objects in `dir/objects`).
pub fn config(dir: &Path) -> RegistryConfig {
    RegistryConfig {
        database_url: database_url(dir),
        objects: crate::ObjectStoreConfig::Local(dir.join("objects")),
    }
}

/// Opens (creating it the first time) the registry kept in `dir`, on SQLite or on the
/// PostgreSQL server of [`POSTGRES_URL_VAR`].
///
/// # Panics
///
/// When the registry cannot be opened: a test cannot go on without it.
pub async fn open(dir: &Path) -> Registry {
    match Registry::open(&config(dir)).await {
        Ok(registry) => registry,
        Err(e) => panic!("opening the test registry in {}: {e}", dir.display()),
    }
}

/// The database URL of the registry kept for `dir`: the same URL for the same directory,
/// so a test can reopen it.
pub fn database_url(dir: &Path) -> String {
    match postgres_url() {
        Some(server) => postgres_schema_url(&server, &schema_name(dir)),
        None => format!("sqlite://{}", dir.join("registry.db").display()),
    }
}

/// `server` with its `search_path` set to `schema`.
pub fn postgres_schema_url(server: &str, schema: &str) -> String {
    let separator = if server.contains('?') { '&' } else { '?' };
    format!("{server}{separator}options=-c%20search_path%3D{schema}")
}

/// A schema name for `dir`: `palisade_t_` and a digest of its path.
fn schema_name(dir: &Path) -> String {
    let digest = Sha256::digest(dir.as_os_str().as_encoded_bytes());
    format!("palisade_t_{}", &hex::encode(digest)[..16])
}

/// The registry kept in `dir` with its objects in `objects` instead of `dir/objects`.
///
/// # Panics
///
/// When the registry cannot be opened.
pub async fn open_with_objects(dir: &Path, objects: crate::ObjectStoreConfig) -> Registry {
    let config = RegistryConfig {
        objects,
        ..config(dir)
    };
    match Registry::open(&config).await {
        Ok(registry) => registry,
        Err(e) => panic!("opening the test registry in {}: {e}", dir.display()),
    }
}

/// The command that serves S3 on loopback for tests: moto's server mode (`pip install
/// 'moto[server]'`).
pub const S3_SERVER_COMMAND: &str = "moto_server";

/// A real S3-compatible server (moto) on a loopback port of its own, with one bucket;
/// stopped when dropped.
#[derive(Debug)]
pub struct S3Server {
    child: std::process::Child,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// The bucket created at start.
    pub bucket: String,
}

impl S3Server {
    /// Starts a server and creates `bucket`. `None` when [`S3_SERVER_COMMAND`] is not
    /// installed, saying on stderr that the calling test is skipped — except under CI
    /// (`CI` set), where a missing server fails the test.
    ///
    /// # Panics
    ///
    /// When the server is installed but does not start, or under CI when it is missing.
    pub fn start(bucket: &str) -> Option<S3Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .expect("a free loopback port");
        let spawned = std::process::Command::new(S3_SERVER_COMMAND)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "`{S3_SERVER_COMMAND}` is not installed (pip install 'moto[server]')"
                );
                eprintln!("skipped: `{S3_SERVER_COMMAND}` is not installed");
                return None;
            }
            Err(e) => panic!("starting {S3_SERVER_COMMAND}: {e}"),
        };
        let server = S3Server {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: bucket.to_owned(),
        };
        // Wait for it to listen, then create the bucket (moto takes unsigned requests).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match put_bucket(port, bucket) {
                Ok(status) if status.contains(" 200") => return Some(server),
                Ok(status) => panic!("creating bucket {bucket}: {status}"),
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(e) => panic!("{S3_SERVER_COMMAND} did not start on port {port}: {e}"),
            }
        }
    }

    /// The bucket, under `prefix` (none when empty), with static test credentials.
    pub fn config(&self, prefix: &str) -> crate::S3Config {
        crate::S3Config {
            url: format!("s3://{}/{prefix}", self.bucket),
            endpoint: Some(self.endpoint.clone()),
            region: Some("us-east-1".to_owned()),
            allow_http: true,
            credentials: Some(crate::S3Credentials {
                access_key_id: "test".to_owned(),
                secret_access_key: "test".to_owned(),
            }),
        }
    }

    /// The standard `AWS_*` variables that point a process at this server, as an operator
    /// would set them.
    pub fn aws_env(&self) -> [(&'static str, String); 5] {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ACCESS_KEY_ID", "test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
        ]
    }

    /// Stops the server now.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `PUT /{bucket}` over a plain connection; the status line of the answer.
fn put_bucket(port: u16, bucket: &str) -> std::io::Result<String> {
    use std::io::{BufRead as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(
        stream,
        "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut status = String::new();
    std::io::BufReader::new(stream).read_line(&mut status)?;
    if status.is_empty() {
        return Err(std::io::Error::other("no answer"));
    }
    Ok(status.trim_end().to_owned())
}
