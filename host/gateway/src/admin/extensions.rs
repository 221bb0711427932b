//! Admin handlers for published extensions: publish a bundle, list extensions, get one
//! with its versions.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use http::header::HeaderName;
use palisade_registry::{ExtensionSummary, PublishedVersion, VersionSummary};
use serde::Serialize;

use super::error::AdminError;
use super::{MAX_BUNDLE_BYTES, read_body};
use crate::GatewayState;
use crate::headers;

/// The request header carrying the bundle's signature (base64, as `cosign sign-blob`
/// writes it) on `POST /admin/v1/extensions`.
pub const SIGNATURE_HEADER: HeaderName = HeaderName::from_static("x-palisade-signature");

/// A published version, as answered by publish.
#[derive(Debug, Serialize)]
pub(super) struct PublishedJson {
    version_id: String,
    extension_id: String,
    version: String,
    content_hash: String,
}

impl From<PublishedVersion> for PublishedJson {
    fn from(v: PublishedVersion) -> Self {
        PublishedJson {
            version_id: v.version_id,
            extension_id: v.extension_id,
            version: v.version,
            content_hash: v.content_hash.to_string(),
        }
    }
}

/// One extension.
#[derive(Debug, Serialize)]
pub(super) struct ExtensionJson {
    id: String,
    name: String,
    publisher: String,
    latest_version: Option<String>,
    created_at_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    versions: Option<Vec<VersionJson>>,
}

impl From<ExtensionSummary> for ExtensionJson {
    fn from(e: ExtensionSummary) -> Self {
        ExtensionJson {
            id: e.id,
            name: e.name,
            publisher: e.publisher,
            latest_version: e.latest_version,
            created_at_ms: e.created_at_ms,
            versions: None,
        }
    }
}

/// One version.
#[derive(Debug, Serialize)]
pub(super) struct VersionJson {
    version_id: String,
    extension_id: String,
    version: String,
    content_hash: String,
    requested: Vec<String>,
    signer_fingerprint: String,
    published_at_ms: i64,
    /// Where the version's UI entry document is served, when it has a UI and the
    /// operator set the UI's public base.
    #[serde(skip_serializing_if = "Option::is_none")]
    ui_url: Option<String>,
}

/// The URL of `entry` in the UI of `extension_id`'s version `hash`, under `base`.
pub(super) fn ui_url(
    base: Option<&str>,
    extension_id: &str,
    hash: &impl std::fmt::Display,
    entry: Option<&str>,
) -> Option<String> {
    let (base, entry) = (base?, entry?);
    let base = base.trim_end_matches('/');
    Some(format!("{base}/ext-ui/{extension_id}/{hash}/{entry}"))
}

impl VersionJson {
    /// `v`, with its UI's URL under `ui_base`.
    pub(super) fn new(v: VersionSummary, ui_base: Option<&str>) -> Self {
        let ui_url = ui_url(
            ui_base,
            &v.extension_id,
            &v.content_hash,
            v.ui_entry.as_deref(),
        );
        VersionJson {
            ui_url,
            version_id: v.version_id,
            extension_id: v.extension_id,
            version: v.version,
            content_hash: v.content_hash.to_string(),
            requested: v
                .requested
                .iter()
                .map(|key| key.as_str().to_owned())
                .collect(),
            signer_fingerprint: v.signer_fingerprint,
            published_at_ms: v.published_at_ms,
        }
    }
}

/// `POST /admin/v1/extensions`: the body is the bundle's bytes, the signature is in
/// [`SIGNATURE_HEADER`], verified against the registry's trust set. Publishing the same
/// bytes again answers the existing version.
pub(super) async fn publish(
    State(state): State<Arc<GatewayState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AdminError> {
    let request_id = headers::request_id(&headers);
    let signature = headers
        .get(&SIGNATURE_HEADER)
        .map(|value| value.as_bytes().to_vec())
        .filter(|value| !value.is_empty())
        .ok_or_else(|| {
            AdminError::bad_request(
                &request_id,
                format!(
                    "missing header `{SIGNATURE_HEADER}`: the bundle's signature, base64 encoded"
                ),
            )
        })?;
    let bundle = read_body(&headers, body, MAX_BUNDLE_BYTES, &request_id, "bundle").await?;
    if bundle.is_empty() {
        return Err(AdminError::bad_request(
            &request_id,
            "the request body is empty: send the bundle's bytes (bundle.tar.zst)",
        ));
    }
    // The registry's trust set as it is now: a key trusted or removed a moment ago counts.
    let trust = state
        .registry
        .trust_set()
        .await
        .map_err(|err| AdminError::registry(&request_id, &err))?;
    let published = state
        .registry
        .publish(&bundle, &signature, &trust)
        .await
        .map_err(|err| AdminError::publish(&request_id, err))?;
    Ok(Json(PublishedJson::from(published)).into_response())
}

/// `GET /admin/v1/extensions`.
pub(super) async fn list(
    State(state): State<Arc<GatewayState>>,
    headers: HeaderMap,
) -> Result<Json<Vec<ExtensionJson>>, AdminError> {
    let request_id = headers::request_id(&headers);
    let extensions = state
        .registry
        .list_extensions()
        .await
        .map_err(|err| AdminError::registry(&request_id, &err))?;
    Ok(Json(extensions.into_iter().map(Into::into).collect()))
}

/// `GET /admin/v1/extensions/{extension_id}`: the extension with its versions.
pub(super) async fn get_one(
    State(state): State<Arc<GatewayState>>,
    Path(extension_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<ExtensionJson>, AdminError> {
    let request_id = headers::request_id(&headers);
    let extensions = state
        .registry
        .list_extensions()
        .await
        .map_err(|err| AdminError::registry(&request_id, &err))?;
    let Some(summary) = extensions.into_iter().find(|e| e.id == extension_id) else {
        return Err(unknown_extension(&request_id, &extension_id));
    };
    let versions = state
        .registry
        .list_versions(&extension_id)
        .await
        .map_err(|err| AdminError::registry(&request_id, &err))?;
    let mut json = ExtensionJson::from(summary);
    let base = state.config.ui_public_base.as_deref();
    json.versions = Some(
        versions
            .into_iter()
            .map(|v| VersionJson::new(v, base))
            .collect(),
    );
    Ok(Json(json))
}

/// `GET /admin/v1/extensions/{extension_id}/versions`: newest first.
pub(super) async fn versions(
    State(state): State<Arc<GatewayState>>,
    Path(extension_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Vec<VersionJson>>, AdminError> {
    let request_id = headers::request_id(&headers);
    let versions = state
        .registry
        .list_versions(&extension_id)
        .await
        .map_err(|err| AdminError::registry(&request_id, &err))?;
    if versions.is_empty() {
        return Err(unknown_extension(&request_id, &extension_id));
    }
    let base = state.config.ui_public_base.as_deref();
    Ok(Json(
        versions
            .into_iter()
            .map(|v| VersionJson::new(v, base))
            .collect(),
    ))
}

fn unknown_extension(request_id: &str, extension_id: &str) -> AdminError {
    AdminError::not_found(
        request_id,
        format!("extension `{extension_id}` is not published"),
    )
}
