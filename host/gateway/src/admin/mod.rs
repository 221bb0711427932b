//! The admin API under `/admin/v1`: publish bundles, list extensions and versions, manage
//! tenants' installs (install, upgrade with capability approval, enable, disable,
//! uninstall), set and delete sealed secrets (write only), read the execution log and the
//! usage per extension and day, publish events and see and retry their deliveries.
//!
//! Every route requires `authorization: Bearer <admin token>` (the operator's
//! [`GatewayConfig::admin_token`](crate::GatewayConfig::admin_token)); `POST
//! /admin/v1/events` also takes a credential of scope `events` from the registry. Without a
//! configured admin token the routes are not mounted and answer 404. Errors are the gateway's JSON error body
//! plus a `message` naming what is wrong (4xx only).

mod auth;
mod error;
mod events;
mod extensions;
mod tenants;
mod usage;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::{MethodRouter, delete, get, post, put};
use bytes::Bytes;
use http::{HeaderMap, Method};
use serde::de::DeserializeOwned;

use crate::GatewayState;
use crate::body::BodyError;

pub use auth::{CREDENTIAL_CACHE_TTL, tokens_match};
pub(crate) use auth::{CredentialCache, credential_cache};
pub use error::{AdminError, AdminErrorCode};
pub use extensions::SIGNATURE_HEADER;
pub use usage::{
    DEFAULT_USAGE_DAYS, DayUsage, ExtensionUsage, LimitsJson, MAX_USAGE_DAYS, QuotasJson,
    UsageReport, period as usage_period, report as usage_report,
};

/// Prefix of every admin route.
pub const ADMIN_PREFIX: &str = "/admin/v1";

/// Largest bundle the publish endpoint reads: 64 MiB.
pub const MAX_BUNDLE_BYTES: usize = 64 * 1024 * 1024;

/// Largest JSON body of the other admin endpoints: 1 MiB.
pub const MAX_JSON_BYTES: usize = 1024 * 1024;

/// Deadline for receiving an admin request body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(120);

type Route = (Method, &'static str, MethodRouter<Arc<GatewayState>>);

/// The admin routes: (method, path in axum syntax, handler). The single source for the
/// router and for [`admin_route_list`].
fn table() -> Vec<Route> {
    vec![
        (
            Method::POST,
            "/admin/v1/extensions",
            post(extensions::publish),
        ),
        (Method::GET, "/admin/v1/extensions", get(extensions::list)),
        (
            Method::GET,
            "/admin/v1/extensions/{extension_id}",
            get(extensions::get_one),
        ),
        (
            Method::GET,
            "/admin/v1/extensions/{extension_id}/versions",
            get(extensions::versions),
        ),
        (
            Method::GET,
            "/admin/v1/tenants/{tenant_id}/installs",
            get(tenants::list_installs),
        ),
        (
            Method::GET,
            "/admin/v1/tenants/{tenant_id}/installs/{extension_id}",
            get(tenants::get_install),
        ),
        (
            Method::PUT,
            "/admin/v1/tenants/{tenant_id}/installs/{extension_id}",
            put(tenants::install),
        ),
        (
            Method::DELETE,
            "/admin/v1/tenants/{tenant_id}/installs/{extension_id}",
            delete(tenants::uninstall),
        ),
        (
            Method::POST,
            "/admin/v1/tenants/{tenant_id}/installs/{extension_id}/enable",
            post(tenants::enable),
        ),
        (
            Method::POST,
            "/admin/v1/tenants/{tenant_id}/installs/{extension_id}/disable",
            post(tenants::disable),
        ),
        (
            Method::GET,
            "/admin/v1/tenants/{tenant_id}/installs/{extension_id}/secrets",
            get(tenants::list_secrets),
        ),
        (
            Method::PUT,
            "/admin/v1/tenants/{tenant_id}/installs/{extension_id}/secrets/{name}",
            put(tenants::set_secret),
        ),
        (
            Method::DELETE,
            "/admin/v1/tenants/{tenant_id}/installs/{extension_id}/secrets/{name}",
            delete(tenants::delete_secret),
        ),
        (
            Method::GET,
            "/admin/v1/tenants/{tenant_id}/executions",
            get(tenants::executions),
        ),
        (
            Method::GET,
            "/admin/v1/tenants/{tenant_id}/usage",
            get(usage::usage),
        ),
        (Method::POST, EVENTS_PATH, post(events::publish)),
        (
            Method::GET,
            "/admin/v1/tenants/{tenant_id}/deliveries",
            get(events::list),
        ),
        (
            Method::POST,
            "/admin/v1/tenants/{tenant_id}/deliveries/{delivery_id}/retry",
            post(events::retry),
        ),
    ]
}

/// The route that a credential of scope `events` may call too.
const EVENTS_PATH: &str = "/admin/v1/events";

/// Every admin route as (method, path), paths in the `{param}` syntax OpenAPI uses too.
pub fn admin_route_list() -> Vec<(Method, &'static str)> {
    table()
        .into_iter()
        .map(|(method, path, _)| (method, path))
        .collect()
}

/// The admin routes, each behind the admin-token check; an empty router when the
/// configuration has no admin token (so every admin path answers the gateway's 404).
pub fn admin_routes(state: &Arc<GatewayState>) -> Router<Arc<GatewayState>> {
    if state.config.admin_token.is_none() {
        return Router::new();
    }
    let mut router = Router::new();
    for (_, path, handler) in table() {
        let guard = auth::Guard {
            state: Arc::clone(state),
            scope: (path == EVENTS_PATH).then_some(palisade_registry::CredentialScope::Events),
        };
        router = router.route(
            path,
            handler.route_layer(axum::middleware::from_fn_with_state(
                guard,
                auth::require_admin,
            )),
        );
    }
    let guard = auth::Guard {
        state: Arc::clone(state),
        scope: Some(palisade_registry::CredentialScope::Metrics),
    };
    router.route(
        METRICS_PATH,
        axum::routing::get(crate::metrics::metrics).route_layer(
            axum::middleware::from_fn_with_state(guard, auth::require_admin),
        ),
    )
}

/// The gateway's metrics exposition: outside `/admin/v1`, where scrapers look, behind the
/// same guard (the admin token, or a credential of scope `metrics`).
pub const METRICS_PATH: &str = "/metrics";

/// Reads an admin request body (`what` names it in errors) of at most `limit` bytes.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    request_id: &str,
    what: &str,
) -> Result<Bytes, AdminError> {
    crate::body::read_body(headers, body, limit, BODY_TIMEOUT)
        .await
        .map_err(|err| match err {
            BodyError::TooLarge { limit } => AdminError::new(AdminErrorCode::TooLarge, request_id)
                .message(format!("the {what} exceeds {limit} bytes")),
            BodyError::Timeout => AdminError::bad_request(
                request_id,
                format!("the {what} was not received within {BODY_TIMEOUT:?}"),
            ),
            BodyError::Read(_) => {
                AdminError::bad_request(request_id, format!("reading the {what} failed"))
            }
        })
}

/// Reads and parses a JSON request body; errors name the field path.
async fn read_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    request_id: &str,
) -> Result<T, AdminError> {
    let bytes = read_body(headers, body, MAX_JSON_BYTES, request_id, "JSON body").await?;
    let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let message = if path == "." || path.is_empty() {
            format!("invalid JSON body: {inner}")
        } else {
            format!("invalid JSON body at `{path}`: {inner}")
        };
        AdminError::bad_request(request_id, message)
    })
}

#[cfg(test)]
mod tests;
