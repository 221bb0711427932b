//! The extension manifest (`manifest.json`): model, strict parsing and validation.
//!
//! Parsing refuses unknown fields anywhere and names the path of the offending field;
//! [`Manifest::validate`] then checks every value.

mod capabilities;
mod cron;
mod headers;
mod origin;
mod schedule;
mod topic;
mod validate;

use std::fmt;

use serde::{Deserialize, Serialize};

#[cfg(test)]
pub(crate) use capabilities::everything;
pub use capabilities::{
    CAPABILITIES, Capabilities, CapabilityKey, CapabilitySpec, HttpCapability, StorageCapability,
    UnknownCapability,
};
pub use headers::{
    ApiHeaders, CREDENTIAL_HEADERS, HOP_BY_HOP_HEADERS, MAX_DECLARED_HEADERS,
    PALISADE_HEADER_PREFIX, is_header_token, reserved_header,
};
pub use origin::{AllowedOrigin, OriginError};
pub use schedule::ScheduleSpec;
pub use topic::{MAX_TOPIC_LEN, TopicError, TopicPattern, check_topic};

/// The only runtime this platform runs: a `wasi:http/incoming-handler` component.
pub const RUNTIME_WASI_HTTP: &str = "wasi-http@0.2";

/// The manifest of one extension version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The JSON Schema the file names for editors (`$schema`); not otherwise used.
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Reverse-domain, lowercase id, e.g. `com.example.hello`.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// Who publishes the extension.
    pub publisher: String,
    /// The version of this release.
    pub version: semver::Version,
    /// Must be [`RUNTIME_WASI_HTTP`].
    pub runtime: String,
    /// Path of the component inside the bundle (relative, ends in `.wasm`).
    pub component: String,
    /// What the extension asks the host for.
    #[serde(default)]
    pub capabilities: Capabilities,
    /// The HTTP endpoints the gateway routes to the extension.
    #[serde(default)]
    pub api: Api,
    /// The extension's UI, served from the bundle's `ui/` tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ui: Option<Ui>,
    /// Event topics the extension subscribes to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<EventSubscription>,
    /// Periodic invocations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<Schedule>,
    /// Resource limits the extension asks for (the operator's policy caps them).
    #[serde(default)]
    pub limits: Limits,
}

/// The `api` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Api {
    /// Routed endpoints; a request matching none is answered 404 by the gateway.
    pub endpoints: Vec<Endpoint>,
    /// Headers passed to and from the guest besides the gateway's default lists.
    #[serde(skip_serializing_if = "ApiHeaders::is_empty")]
    pub headers: ApiHeaders,
}

/// One routed endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Upper-case HTTP method: GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS, or `*` for
    /// every method.
    pub method: String,
    /// Path starting with `/`; segments `:name` match any single segment, and a last
    /// segment `*name` matches the rest of the path (zero or more segments).
    pub path: String,
    /// Who may store the endpoint's answers: `private` (the default) or `public`.
    #[serde(default, skip_serializing_if = "EndpointCache::is_private")]
    pub cache: EndpointCache,
}

/// Who may store an endpoint's answers (`api.endpoints[].cache`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointCache {
    /// Only the caller's own cache: the gateway answers with `cache-control: private`,
    /// whatever the guest sets.
    #[default]
    Private,
    /// Shared caches too: the guest's `cache-control` is passed on as it is. Every answer
    /// still carries `vary: authorization`, so a shared cache keeps one caller's answer
    /// apart from another's.
    Public,
}

impl EndpointCache {
    /// Whether this is [`EndpointCache::Private`].
    pub fn is_private(&self) -> bool {
        *self == EndpointCache::Private
    }
}

/// The `ui` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ui {
    /// Entry document, relative to the bundle's `ui/` directory (e.g. `index.html`).
    pub entry: String,
    /// Places in the host application where the UI may be shown (e.g. `settings`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<String>,
    /// A path that names a directory of `ui/` serves that directory's `index.html`;
    /// without it such a path is not found.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub directory_index: bool,
    /// A path that names no file serves the entry document (a single-page application
    /// that routes in the browser); without it such a path is not found.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub spa_fallback: bool,
    /// Sandbox permissions the UI's iframe gets beyond `allow-scripts`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sandbox: Vec<SandboxPermission>,
}

/// A permission of the UI's iframe sandbox a manifest may ask for, beyond `allow-scripts`
/// (never `allow-same-origin` or a top-level navigation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SandboxPermission {
    /// `allow-forms`: the UI may submit forms.
    AllowForms,
    /// `allow-modals`: the UI may open `alert`, `confirm` and `prompt`.
    AllowModals,
    /// `allow-popups`: the UI may open new windows.
    AllowPopups,
    /// `allow-downloads`: the UI may start downloads.
    AllowDownloads,
}

impl SandboxPermission {
    /// Every permission, as the bridge (`sdk/ui`) lists them too.
    pub const ALL: [SandboxPermission; 4] = [
        SandboxPermission::AllowForms,
        SandboxPermission::AllowModals,
        SandboxPermission::AllowPopups,
        SandboxPermission::AllowDownloads,
    ];

    /// The attribute token, e.g. `allow-forms`.
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxPermission::AllowForms => "allow-forms",
            SandboxPermission::AllowModals => "allow-modals",
            SandboxPermission::AllowPopups => "allow-popups",
            SandboxPermission::AllowDownloads => "allow-downloads",
        }
    }
}

/// One event subscription: events on `topic` are delivered as `POST path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSubscription {
    /// Topic name, e.g. `order.created`.
    pub topic: String,
    /// Path the event is posted to.
    pub path: String,
}

/// One schedule: the extension receives `POST path` whenever `cron` fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Five-field cron expression (`minute hour day-of-month month day-of-week`, UTC).
    pub cron: String,
    /// Path the invocation is posted to.
    pub path: String,
}

/// Resource limits per invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Wall-clock deadline in milliseconds.
    pub timeout_ms: u64,
    /// Linear memory cap in MiB.
    pub memory_mb: u64,
    /// Fuel (instruction budget), if the extension wants one.
    pub fuel: Option<u64>,
    /// Largest request body accepted, in bytes.
    pub max_request_bytes: u64,
    /// Largest response body produced, in bytes.
    pub max_response_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout_ms: 10_000,
            memory_mb: 64,
            fuel: None,
            max_request_bytes: 1024 * 1024,
            max_response_bytes: 4 * 1024 * 1024,
        }
    }
}

/// A manifest that does not parse or does not validate. `path` names the field
/// (`capabilities.http.allow[1]`); it is empty when the document as a whole is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ManifestError {
    /// Dotted path of the offending field, e.g. `api.endpoints[0].path`.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

impl ManifestError {
    /// An error about the field at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }

    fn from_serde(err: serde_path_to_error::Error<serde_json::Error>) -> Self {
        let mut path = err.path().to_string();
        if path == "." {
            path.clear();
        }
        let mut message = err.inner().to_string();
        // serde reports a missing field at its parent; name the field itself.
        if let Some(rest) = message.strip_prefix("missing field `")
            && let Some((field, tail)) = rest.split_once('`')
        {
            path = if path.is_empty() {
                field.to_owned()
            } else {
                format!("{path}.{field}")
            };
            message = format!("missing field{tail}");
        }
        Self { path, message }
    }
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "manifest: {}", self.message)
        } else {
            write!(f, "manifest field `{}`: {}", self.path, self.message)
        }
    }
}

impl Manifest {
    /// Parses `manifest.json` and validates it.
    pub fn from_json(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let manifest = Self::parse(bytes)?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Parses `manifest.json` without validating the values (unknown fields and wrong
    /// types are still refused).
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let manifest: Manifest =
            serde_path_to_error::deserialize(&mut de).map_err(ManifestError::from_serde)?;
        de.end().map_err(|e| {
            ManifestError::new("", format!("trailing data after the manifest: {e}"))
        })?;
        Ok(manifest)
    }

    /// Checks an extension id as `id` in a manifest is checked: a lowercase reverse-domain
    /// id like `com.example.hello`.
    pub fn check_id(id: &str) -> Result<(), ManifestError> {
        validate::check_id(id)
    }

    /// Serialises the manifest as pretty-printed JSON.
    pub fn to_json_pretty(&self) -> Vec<u8> {
        // Serialising these plain data types cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
