//! The operator commands' remote mode: with `--server URL` they call the gateway's admin
//! API (`/admin/v1/...`) with the admin token instead of opening the data directory. Also
//! the admin token `up` generates in the data directory.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::Args;
use palisade_gateway::admin::SIGNATURE_HEADER;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::datadir::{DataDir, read_string, write_private};

/// Environment variable holding the admin token for `--server`.
pub(crate) const ADMIN_TOKEN_ENV: &str = "PALISADE_ADMIN_TOKEN";

/// `--server` and `--admin-token`, shared by the commands that have a remote mode.
#[derive(Debug, Clone, Args)]
pub(crate) struct ServerArgs {
    /// Use the admin API of this gateway (e.g. `http://127.0.0.1:8080`) instead of the
    /// data directory.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// The admin token for `--server` (what `palisade up` prints); ignored without it.
    #[arg(long, env = ADMIN_TOKEN_ENV, hide_env_values = true)]
    pub admin_token: Option<String>,
}

impl ServerArgs {
    /// The admin client when `--server` is given.
    pub(crate) fn client(&self) -> Result<Option<AdminClient>> {
        let Some(server) = &self.server else {
            return Ok(None);
        };
        let Some(token) = self.admin_token.clone().filter(|t| !t.trim().is_empty()) else {
            bail!("--server needs the admin token: pass --admin-token or set ${ADMIN_TOKEN_ENV}");
        };
        Ok(Some(AdminClient::new(server, token.trim())))
    }
}

/// Path of the admin token in the data directory.
pub(crate) fn admin_token_path(data_dir: &DataDir) -> PathBuf {
    data_dir.root().join("keys").join("admin.token")
}

/// The admin token in `keys/admin.token`, generated (32 random bytes, hex, mode 0600) on
/// first use.
pub(crate) fn admin_token(data_dir: &DataDir) -> Result<String> {
    let path = admin_token_path(data_dir);
    if path.exists() {
        let token = read_string(&path)?.trim().to_owned();
        if token.is_empty() {
            bail!(
                "{} is empty; delete it to generate a new admin token",
                path.display()
            );
        }
        return Ok(token);
    }
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    let token = hex::encode(bytes);
    write_private(&path, &token)?;
    Ok(token)
}

/// A client of the admin API.
#[derive(Debug, Clone)]
pub(crate) struct AdminClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

/// The admin API's error body.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    request_id: String,
    #[serde(default)]
    message: Option<String>,
}

/// A published version, as the admin API answers.
#[derive(Debug, Deserialize)]
pub(crate) struct Published {
    /// The version's row id.
    pub version_id: String,
    /// The extension id.
    pub extension_id: String,
    /// The version.
    pub version: String,
    /// The bundle's content hash.
    pub content_hash: String,
}

/// An install, as the admin API answers.
#[derive(Debug, Deserialize)]
pub(crate) struct InstallReply {
    /// The install id.
    pub install_id: String,
    /// The tenant.
    pub tenant_id: String,
    /// The extension id.
    pub extension_id: String,
    /// The installed version.
    pub version: String,
    /// The installed version's bundle.
    #[serde(default)]
    pub content_hash: String,
    /// Whether calls are served.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The approved capabilities.
    #[serde(default)]
    pub approved: Vec<String>,
}

fn yes() -> bool {
    true
}

/// A version, as the admin API lists it.
#[derive(Debug, Deserialize)]
pub(crate) struct VersionReply {
    /// The version.
    pub version: String,
    /// The bundle's content hash.
    pub content_hash: String,
    /// The capabilities its manifest requests.
    pub requested: Vec<String>,
    /// When it was published, unix epoch milliseconds.
    pub published_at_ms: i64,
}

/// A secret's name, as the admin API lists it.
#[derive(Debug, Deserialize)]
pub(crate) struct SecretName {
    /// The name.
    pub name: String,
}

impl AdminClient {
    /// A client of the gateway at `server` (base URL) using `token`.
    pub(crate) fn new(server: &str, token: &str) -> Self {
        AdminClient {
            base: format!("{}/admin/v1", server.trim_end_matches('/')),
            token: token.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// Publishes a bundle; `signature` is raw or base64 (as `palisade sign` writes it).
    pub(crate) async fn publish(&self, bundle: Vec<u8>, signature: &[u8]) -> Result<Published> {
        let signature = STANDARD.encode(palisade_bundle::decode_signature(signature));
        let request = self
            .http
            .post(format!("{}/extensions", self.base))
            .header(SIGNATURE_HEADER.as_str(), signature)
            .header("content-type", "application/octet-stream")
            .body(bundle);
        self.json(request).await
    }

    /// Installs (or upgrades) `extension` for `tenant`.
    pub(crate) async fn install(
        &self,
        tenant: &str,
        extension: &str,
        version: Option<&semver::Version>,
        approve: &[String],
        config: &BTreeMap<String, String>,
        approve_widened_grant: bool,
    ) -> Result<InstallReply> {
        let body = serde_json::json!({
            "version": version.map(ToString::to_string),
            "approve": approve,
            "config": config,
            "approve_widened_grant": approve_widened_grant,
        });
        let request = self
            .http
            .put(self.install_url(tenant, extension))
            .json(&body);
        self.json(request).await
    }

    /// Uninstalls `extension` for `tenant`.
    pub(crate) async fn uninstall(&self, tenant: &str, extension: &str) -> Result<()> {
        self.empty(self.http.delete(self.install_url(tenant, extension)))
            .await
    }

    /// Enables or disables the install.
    pub(crate) async fn set_enabled(
        &self,
        tenant: &str,
        extension: &str,
        enabled: bool,
    ) -> Result<()> {
        let action = if enabled { "enable" } else { "disable" };
        let url = format!("{}/{action}", self.install_url(tenant, extension));
        self.empty(self.http.post(url)).await
    }

    /// The tenant's installs.
    pub(crate) async fn installs(&self, tenant: &str) -> Result<Vec<InstallReply>> {
        let url = format!("{}/tenants/{}/installs", self.base, seg(tenant));
        self.json(self.http.get(url)).await
    }

    /// The versions of `extension`, newest first.
    pub(crate) async fn versions(&self, extension: &str) -> Result<Vec<VersionReply>> {
        let url = format!("{}/extensions/{}/versions", self.base, seg(extension));
        self.json(self.http.get(url)).await
    }

    /// Seals and stores a secret.
    pub(crate) async fn set_secret(
        &self,
        tenant: &str,
        extension: &str,
        name: &str,
        value: &str,
    ) -> Result<()> {
        let url = format!(
            "{}/secrets/{}",
            self.install_url(tenant, extension),
            seg(name)
        );
        let request = self
            .http
            .put(url)
            .json(&serde_json::json!({ "value": value }));
        self.empty(request).await
    }

    /// Deletes a secret.
    pub(crate) async fn delete_secret(
        &self,
        tenant: &str,
        extension: &str,
        name: &str,
    ) -> Result<()> {
        let url = format!(
            "{}/secrets/{}",
            self.install_url(tenant, extension),
            seg(name)
        );
        self.empty(self.http.delete(url)).await
    }

    /// The names of the secrets set for an install.
    pub(crate) async fn list_secrets(
        &self,
        tenant: &str,
        extension: &str,
    ) -> Result<Vec<SecretName>> {
        let url = format!("{}/secrets", self.install_url(tenant, extension));
        self.json(self.http.get(url)).await
    }

    /// Publishes an event.
    pub(crate) async fn publish_event(&self, event: &serde_json::Value) -> Result<EventReply> {
        let url = format!("{}/events", self.base);
        self.json(self.http.post(url).json(event)).await
    }

    /// The tenant's deliveries, optionally in one state.
    pub(crate) async fn deliveries(
        &self,
        tenant: &str,
        state: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeliveryReply>> {
        let url = format!("{}/tenants/{}/deliveries", self.base, seg(tenant));
        let mut query = vec![("limit", limit.to_string())];
        query.extend(state.map(|s| ("state", s.to_owned())));
        self.json(self.http.get(url).query(&query)).await
    }

    /// Retries one of the tenant's deliveries now.
    pub(crate) async fn retry_delivery(&self, tenant: &str, id: &str) -> Result<DeliveryReply> {
        let url = format!(
            "{}/tenants/{}/deliveries/{}/retry",
            self.base,
            seg(tenant),
            seg(id)
        );
        self.json(self.http.post(url)).await
    }

    /// The tenant's newest execution-log rows that pass `query`, newest first.
    pub(crate) async fn executions(
        &self,
        tenant: &str,
        query: &[(&str, String)],
    ) -> Result<Vec<palisade_registry::ExecutionRecord>> {
        let url = format!("{}/tenants/{}/executions", self.base, seg(tenant));
        self.json(self.http.get(url).query(query)).await
    }

    /// The tenant's usage per extension and day, for the days in `query` (`from`, `to`).
    pub(crate) async fn usage(
        &self,
        tenant: &str,
        query: &[(&str, String)],
    ) -> Result<palisade_gateway::admin::UsageReport> {
        let url = format!("{}/tenants/{}/usage", self.base, seg(tenant));
        self.json(self.http.get(url).query(query)).await
    }

    fn install_url(&self, tenant: &str, extension: &str) -> String {
        format!(
            "{}/tenants/{}/installs/{}",
            self.base,
            seg(tenant),
            seg(extension)
        )
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("calling the admin API at {}", self.base))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => match body.message {
                Some(message) => bail!(
                    "the admin API answered {status} ({}): {message} (request {})",
                    body.error,
                    body.request_id
                ),
                None => bail!(
                    "the admin API answered {status} ({}) (request {})",
                    body.error,
                    body.request_id
                ),
            },
            Err(_) => bail!("the admin API answered {status}"),
        }
    }

    async fn json<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T> {
        self.send(request)
            .await?
            .json()
            .await
            .context("reading the admin API's answer")
    }

    async fn empty(&self, request: reqwest::RequestBuilder) -> Result<()> {
        self.send(request).await.map(|_| ())
    }
}

/// The answer of `POST /admin/v1/events`.
#[derive(Debug, Deserialize)]
pub(crate) struct EventReply {
    pub event_id: String,
    pub deliveries: u32,
    pub duplicate: bool,
}

/// A delivery as the admin API answers it.
#[derive(Debug, Deserialize)]
pub(crate) struct DeliveryReply {
    pub id: String,
    pub event_key: String,
    pub topic: String,
    pub extension_id: String,
    pub path: String,
    pub state: String,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
}

/// Percent-encodes a path segment (everything but unreserved characters).
fn seg(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(seg("com.example.x"), "com.example.x");
        assert_eq!(seg("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn the_admin_token_is_generated_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = DataDir::new(dir.path().to_path_buf());
        let first = admin_token(&data_dir).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(admin_token(&data_dir).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(admin_token_path(&data_dir))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn server_without_a_token_is_refused() {
        let args = ServerArgs {
            server: Some("http://127.0.0.1:1".into()),
            admin_token: None,
        };
        let err = args.client().unwrap_err().to_string();
        assert!(err.contains(ADMIN_TOKEN_ENV), "{err}");
        let args = ServerArgs {
            server: None,
            admin_token: None,
        };
        assert!(args.client().unwrap().is_none());
    }
}
