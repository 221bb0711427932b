//! Admin handlers for a tenant's installs: install or upgrade (with capability approval),
//! enable, disable, uninstall; the install's secrets (write only); the execution log.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use palisade_bundle::{Capabilities, CapabilityKey};
use palisade_registry::executions::{ExecutionFilter, MAX_RECENT_EXECUTIONS, status_filter};
use palisade_registry::install::validate_tenant_id;
use palisade_registry::{ExecutionRecord, Install, SecretValue};
use serde::{Deserialize, Serialize};

use super::error::{AdminError, AdminErrorCode};
use super::read_json;
use crate::GatewayState;
use crate::headers;

/// Rows answered by the execution log when the request names no `limit`.
pub(super) const DEFAULT_EXECUTIONS_LIMIT: u32 = 100;

/// Body of `PUT .../installs/{extension_id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct InstallRequest {
    /// The version to install (default: the newest release).
    #[serde(default)]
    version: Option<String>,
    /// The capabilities the tenant approves; every one the manifest requests is needed.
    approve: Vec<CapabilityKey>,
    /// The install's non-secret configuration; replaces what was stored.
    #[serde(default)]
    config: BTreeMap<String, String>,
    /// Approves moving to `version` (which must be named) although it grants more than the
    /// installed version: new storage namespaces, secret names or HTTP origins.
    #[serde(default)]
    approve_widened_grant: bool,
}

/// An install as answered.
#[derive(Debug, Serialize)]
pub(super) struct InstallJson {
    install_id: String,
    tenant_id: String,
    extension_id: String,
    version_id: String,
    version: String,
    content_hash: String,
    approved: Vec<CapabilityKey>,
    grant: Capabilities,
    config: BTreeMap<String, String>,
    enabled: bool,
    created_at_ms: i64,
    updated_at_ms: i64,
    /// Where the installed version's UI entry document is served, when it has a UI and
    /// the operator set the UI's public base.
    #[serde(skip_serializing_if = "Option::is_none")]
    ui_url: Option<String>,
}

impl InstallJson {
    /// `i`, with its UI's URL under `ui_base`.
    fn new(i: Install, ui_base: Option<&str>) -> Self {
        let ui_url = super::extensions::ui_url(
            ui_base,
            &i.extension_id,
            &i.content_hash,
            i.ui_entry.as_deref(),
        );
        InstallJson {
            ui_url,
            content_hash: i.content_hash.to_string(),
            install_id: i.install_id,
            tenant_id: i.tenant_id,
            extension_id: i.extension_id,
            version_id: i.version_id,
            version: i.version,
            approved: i.approved,
            grant: i.grant,
            config: i.config,
            enabled: i.enabled,
            created_at_ms: i.created_at_ms,
            updated_at_ms: i.updated_at_ms,
        }
    }
}

/// `PUT /admin/v1/tenants/{tenant_id}/installs/{extension_id}`: installs, or moves the
/// existing install to another version. When the version requests a capability that
/// `approve` lacks, or grants more than the installed version and `approve_widened_grant`
/// is not set, nothing changes (the install stays on its version) and the answer is 409
/// naming what is missing or new.
pub(super) async fn install(
    State(state): State<Arc<GatewayState>>,
    Path((tenant_id, extension_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<InstallJson>, AdminError> {
    let request_id = headers::request_id(&headers);
    let request: InstallRequest = read_json(&headers, body, &request_id).await?;
    let version = request
        .version
        .as_deref()
        .map(semver::Version::parse)
        .transpose()
        .map_err(|err| {
            AdminError::bad_request(
                &request_id,
                format!("`version` is not a semver version: {err}"),
            )
        })?;
    let install = state
        .registry
        .install_with(
            &tenant_id,
            &extension_id,
            version.as_ref(),
            &request.approve,
            request.config,
            request.approve_widened_grant,
        )
        .await;
    // Calls through this gateway see the change at once (whatever the outcome: the cached
    // resolution is only a copy, and reading it again is cheap).
    state.installs.invalidate(&tenant_id, &extension_id);
    let install = install.map_err(|err| AdminError::install(&request_id, err))?;
    let base = state.config.ui_public_base.as_deref();
    Ok(Json(InstallJson::new(install, base)))
}

/// `GET /admin/v1/tenants/{tenant_id}/installs`: the tenant's installs, by extension id.
pub(super) async fn list_installs(
    State(state): State<Arc<GatewayState>>,
    Path(tenant_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Vec<InstallJson>>, AdminError> {
    let request_id = headers::request_id(&headers);
    let installs = state
        .registry
        .list_installs(&tenant_id)
        .await
        .map_err(|err| AdminError::registry(&request_id, &err))?;
    let base = state.config.ui_public_base.as_deref();
    Ok(Json(
        installs
            .into_iter()
            .map(|install| InstallJson::new(install, base))
            .collect(),
    ))
}

/// `GET /admin/v1/tenants/{tenant_id}/installs/{extension_id}`: the install.
pub(super) async fn get_install(
    State(state): State<Arc<GatewayState>>,
    Path((tenant_id, extension_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<InstallJson>, AdminError> {
    let request_id = headers::request_id(&headers);
    let install = state
        .registry
        .get_install(&tenant_id, &extension_id)
        .await
        .map_err(|err| AdminError::registry(&request_id, &err))?
        .ok_or_else(|| no_install(&request_id, &tenant_id, &extension_id))?;
    let base = state.config.ui_public_base.as_deref();
    Ok(Json(InstallJson::new(install, base)))
}

/// `DELETE /admin/v1/tenants/{tenant_id}/installs/{extension_id}`: removes the install
/// with its storage, secrets and counters.
pub(super) async fn uninstall(
    State(state): State<Arc<GatewayState>>,
    Path((tenant_id, extension_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, AdminError> {
    let request_id = headers::request_id(&headers);
    let removed = state.registry.uninstall(&tenant_id, &extension_id).await;
    state.installs.invalidate(&tenant_id, &extension_id);
    let removed = removed.map_err(|err| AdminError::install(&request_id, err))?;
    if removed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_install(&request_id, &tenant_id, &extension_id))
    }
}

/// `POST .../installs/{extension_id}/enable`.
pub(super) async fn enable(
    state: State<Arc<GatewayState>>,
    path: Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, AdminError> {
    set_enabled(state, path, headers, true).await
}

/// `POST .../installs/{extension_id}/disable`.
pub(super) async fn disable(
    state: State<Arc<GatewayState>>,
    path: Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, AdminError> {
    set_enabled(state, path, headers, false).await
}

async fn set_enabled(
    State(state): State<Arc<GatewayState>>,
    Path((tenant_id, extension_id)): Path<(String, String)>,
    headers: HeaderMap,
    enabled: bool,
) -> Result<Response, AdminError> {
    let request_id = headers::request_id(&headers);
    let found = state
        .registry
        .set_enabled(&tenant_id, &extension_id, enabled)
        .await;
    state.installs.invalidate(&tenant_id, &extension_id);
    let found = found.map_err(|err| AdminError::install(&request_id, err))?;
    if !found {
        return Err(no_install(&request_id, &tenant_id, &extension_id));
    }
    Ok(Json(serde_json::json!({
        "tenant_id": tenant_id,
        "extension_id": extension_id,
        "enabled": enabled,
    }))
    .into_response())
}

/// A stored secret, without its value.
#[derive(Debug, Serialize)]
pub(super) struct SecretJson {
    name: String,
    key_id: String,
    updated_at_ms: i64,
}

/// `GET .../installs/{extension_id}/secrets`: names only, never values.
pub(super) async fn list_secrets(
    State(state): State<Arc<GatewayState>>,
    Path((tenant_id, extension_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Vec<SecretJson>>, AdminError> {
    let request_id = headers::request_id(&headers);
    let secrets = state
        .registry
        .list_secrets(&tenant_id, &extension_id)
        .await
        .map_err(|err| AdminError::secret(&request_id, err))?;
    Ok(Json(
        secrets
            .into_iter()
            .map(|s| SecretJson {
                name: s.name,
                key_id: s.key_id,
                updated_at_ms: s.updated_at_ms,
            })
            .collect(),
    ))
}

/// Body of `PUT .../secrets/{name}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SecretRequest {
    value: String,
}

/// `PUT .../installs/{extension_id}/secrets/{name}`: seals and stores the value; 204.
pub(super) async fn set_secret(
    State(state): State<Arc<GatewayState>>,
    Path((tenant_id, extension_id, name)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, AdminError> {
    let request_id = headers::request_id(&headers);
    let Some(sealer) = state.sealer.as_ref() else {
        tracing::warn!(
            request_id,
            "setting a secret refused: the gateway has no secrets keyring configured"
        );
        return Err(AdminError::new(AdminErrorCode::Unavailable, request_id));
    };
    let request: SecretRequest = read_json(&headers, body, &request_id).await?;
    let value = SecretValue::new(request.value);
    state
        .registry
        .set_secret(sealer, &tenant_id, &extension_id, &name, &value)
        .await
        .map_err(|err| AdminError::secret(&request_id, err))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE .../installs/{extension_id}/secrets/{name}`; 204.
pub(super) async fn delete_secret(
    State(state): State<Arc<GatewayState>>,
    Path((tenant_id, extension_id, name)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, AdminError> {
    let request_id = headers::request_id(&headers);
    state
        .registry
        .delete_secret(&tenant_id, &extension_id, &name)
        .await
        .map_err(|err| AdminError::secret(&request_id, err))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query of `GET /admin/v1/tenants/{tenant_id}/executions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExecutionsQuery {
    /// Only rows of this extension.
    extension: Option<String>,
    /// At most this many rows (1..=1000; default 100).
    limit: Option<u32>,
    /// Only rows of this status (`503`) or status class (`5xx`).
    status: Option<String>,
    /// Only rows of calls made at or after this time (unix epoch milliseconds).
    since_ms: Option<i64>,
}

/// `GET /admin/v1/tenants/{tenant_id}/executions?extension=&limit=&status=&since_ms=`:
/// newest first.
pub(super) async fn executions(
    State(state): State<Arc<GatewayState>>,
    Path(tenant_id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<ExecutionsQuery>, QueryRejection>,
) -> Result<Json<Vec<ExecutionRecord>>, AdminError> {
    let request_id = headers::request_id(&headers);
    let Query(query) =
        query.map_err(|rejection| AdminError::bad_request(&request_id, rejection.body_text()))?;
    validate_tenant_id(&tenant_id)
        .map_err(|err| AdminError::bad_request(&request_id, err.to_string()))?;
    let limit = query.limit.unwrap_or(DEFAULT_EXECUTIONS_LIMIT);
    if !(1..=MAX_RECENT_EXECUTIONS).contains(&limit) {
        return Err(AdminError::bad_request(
            &request_id,
            format!("`limit` must be between 1 and {MAX_RECENT_EXECUTIONS}, not {limit}"),
        ));
    }
    let status = query
        .status
        .as_deref()
        .map(status_filter)
        .transpose()
        .map_err(|err| AdminError::bad_request(&request_id, format!("`status`: {err}")))?;
    let filter = ExecutionFilter {
        extension_id: query.extension,
        status,
        since_ms: query.since_ms,
    };
    let rows = state
        .registry
        .executions(&tenant_id, &filter, limit)
        .await
        .map_err(|err| AdminError::registry(&request_id, &err))?;
    Ok(Json(rows))
}

fn no_install(request_id: &str, tenant_id: &str, extension_id: &str) -> AdminError {
    AdminError::not_found(
        request_id,
        format!("tenant `{tenant_id}` has no install of extension `{extension_id}`"),
    )
}
