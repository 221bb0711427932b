//! Who and what the current invocation is about, and the install's configuration
//! (`palisade:extension/context`, always available).

#[cfg(not(palisade_fake_host))]
use crate::bindings::context::palisade::extension::context as wit;
#[cfg(palisade_fake_host)]
use crate::testing::context as wit;

/// The identifiers of the current invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// Unique id of this call; echoed to the caller as `x-request-id`.
    pub request_id: String,
    /// The tenant on whose behalf the extension runs.
    pub tenant_id: String,
    /// The extension id from the manifest, e.g. `com.example.hello`.
    pub extension_id: String,
    /// The tenant's install of this extension.
    pub install_id: String,
    /// The registry id of the running version.
    pub version_id: String,
    /// The semantic version string from the manifest.
    pub version: String,
    /// `sha256:<hex>` of the signed bundle that is running.
    pub content_hash: String,
    /// What started the call: `http` for API calls, `event` for an event delivery,
    /// `schedule` for a schedule's firing.
    pub trigger: String,
    /// The calling user: the `sub` of the caller's token, as the gateway verified it.
    /// `None` for events and schedules, and for a caller whose token names no user.
    pub user: Option<String>,
}

impl From<wit::Invocation> for Invocation {
    fn from(invocation: wit::Invocation) -> Self {
        Invocation {
            request_id: invocation.request_id,
            tenant_id: invocation.tenant_id,
            extension_id: invocation.extension_id,
            install_id: invocation.install_id,
            version_id: invocation.version_id,
            version: invocation.version,
            content_hash: invocation.content_hash,
            trigger: invocation.trigger,
            user: invocation.user,
        }
    }
}

/// Returns the identifiers of the current invocation.
///
/// ```no_run
/// let invocation = palisade_sdk::context::get();
/// println!("tenant {} calls {}", invocation.tenant_id, invocation.extension_id);
/// if let Some(user) = &invocation.user {
///     println!("on behalf of {user}");
/// }
/// ```
pub fn get() -> Invocation {
    wit::get().into()
}

/// Returns every non-secret configuration value of this install, sorted by key.
pub fn config() -> Vec<(String, String)> {
    wit::config()
}

/// Returns one non-secret configuration value of this install, if it is set.
///
/// ```no_run
/// let greeting = palisade_sdk::context::config_get("greeting").unwrap_or_else(|| "Hello".into());
/// ```
pub fn config_get(key: &str) -> Option<String> {
    wit::config_get(key)
}
