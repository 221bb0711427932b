//! Admin handlers for events: publish one (`POST /admin/v1/events`), list a tenant's
//! deliveries and retry one by hand. Delivery itself is the dispatchers' work (see
//! `palisade_runner::events`).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use palisade_registry::events::MAX_LISTED_DELIVERIES;
use palisade_registry::{Delivery, DeliveryState, NewEvent};
use serde::{Deserialize, Serialize};

use super::error::{AdminError, AdminErrorCode};
use super::read_body;
use crate::GatewayState;
use crate::headers;

/// Room for the rest of a publish body around its payload.
const ENVELOPE_BYTES: usize = 4096;

/// Deliveries listed when the request names no `limit`.
const DEFAULT_DELIVERIES_LIMIT: u32 = 100;

/// Body of `POST /admin/v1/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PublishRequest {
    /// The tenant whose installs receive the event.
    tenant_id: String,
    /// The event's topic, e.g. `ticket.created`.
    topic: String,
    /// The publisher's id of the event: publishing it again for the tenant is a no-op.
    id: String,
    /// Any JSON value.
    payload: serde_json::Value,
}

/// Answer of `POST /admin/v1/events`.
#[derive(Debug, Serialize)]
struct PublishJson {
    event_id: String,
    deliveries: u32,
    /// Whether `id` had been published before (the first result is answered).
    duplicate: bool,
}

/// `POST /admin/v1/events`: 202 with the event id and the number of deliveries.
pub(super) async fn publish(
    State(state): State<Arc<GatewayState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AdminError> {
    let request_id = headers::request_id(&headers);
    let max_payload = state.config.max_event_payload_bytes;
    let bytes = read_body(
        &headers,
        body,
        max_payload.saturating_add(ENVELOPE_BYTES),
        &request_id,
        "event",
    )
    .await?;
    let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
    let request: PublishRequest =
        serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
            let path = err.path().to_string();
            let inner = err.into_inner();
            AdminError::bad_request(&request_id, format!("invalid event at `{path}`: {inner}"))
        })?;
    let payload = request.payload.to_string();
    if payload.len() > max_payload {
        return Err(
            AdminError::new(AdminErrorCode::TooLarge, &request_id).message(format!(
                "the event payload is {} bytes, over the limit of {max_payload}",
                payload.len()
            )),
        );
    }
    let published = state
        .registry
        .publish_event(NewEvent {
            tenant_id: &request.tenant_id,
            topic: &request.topic,
            key: &request.id,
            payload: &payload,
        })
        .await
        .map_err(|err| AdminError::event(&request_id, err))?;
    let answer = PublishJson {
        event_id: published.event_id,
        deliveries: published.deliveries,
        duplicate: published.duplicate,
    };
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

/// Query of `GET /admin/v1/tenants/{tenant_id}/deliveries`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeliveriesQuery {
    /// Only deliveries in this state: `pending`, `delivered` or `dead`.
    state: Option<String>,
    /// At most this many (1..=1000; default 100).
    limit: Option<u32>,
}

/// A delivery as answered.
#[derive(Debug, Serialize)]
pub(super) struct DeliveryJson {
    id: String,
    event_id: String,
    event_key: String,
    topic: String,
    tenant_id: String,
    extension_id: String,
    install_id: String,
    path: String,
    trigger: &'static str,
    state: &'static str,
    attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_attempt_at_ms: Option<i64>,
    last_status: Option<u16>,
    last_error: Option<String>,
    published_at_ms: i64,
    updated_at_ms: i64,
}

impl From<Delivery> for DeliveryJson {
    fn from(d: Delivery) -> Self {
        DeliveryJson {
            id: d.id,
            event_id: d.event_id,
            event_key: d.event_key,
            topic: d.topic,
            tenant_id: d.tenant_id,
            extension_id: d.extension_id,
            install_id: d.install_id,
            path: d.path,
            trigger: d.trigger.as_str(),
            state: d.state.as_str(),
            attempts: d.attempts,
            next_attempt_at_ms: d.next_attempt_at_ms,
            last_status: d.last_status,
            last_error: d.last_error,
            published_at_ms: d.published_at_ms,
            updated_at_ms: d.updated_at_ms,
        }
    }
}

/// `GET /admin/v1/tenants/{tenant_id}/deliveries?state=&limit=`: oldest first.
pub(super) async fn list(
    State(state): State<Arc<GatewayState>>,
    Path(tenant_id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<DeliveriesQuery>, QueryRejection>,
) -> Result<Json<Vec<DeliveryJson>>, AdminError> {
    let request_id = headers::request_id(&headers);
    let Query(query) =
        query.map_err(|rejection| AdminError::bad_request(&request_id, rejection.body_text()))?;
    let wanted = query
        .state
        .as_deref()
        .map(str::parse::<DeliveryState>)
        .transpose()
        .map_err(|message| AdminError::bad_request(&request_id, message))?;
    let limit = query.limit.unwrap_or(DEFAULT_DELIVERIES_LIMIT);
    if !(1..=MAX_LISTED_DELIVERIES).contains(&limit) {
        return Err(AdminError::bad_request(
            &request_id,
            format!("`limit` must be between 1 and {MAX_LISTED_DELIVERIES}, not {limit}"),
        ));
    }
    let deliveries = state
        .registry
        .list_deliveries(&tenant_id, wanted, limit)
        .await
        .map_err(|err| AdminError::event(&request_id, err))?;
    Ok(Json(deliveries.into_iter().map(Into::into).collect()))
}

/// `POST /admin/v1/tenants/{tenant_id}/deliveries/{delivery_id}/retry`: the delivery,
/// due now.
pub(super) async fn retry(
    State(state): State<Arc<GatewayState>>,
    Path((tenant_id, delivery_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<DeliveryJson>, AdminError> {
    let request_id = headers::request_id(&headers);
    let delivery = state
        .registry
        .retry_delivery(&tenant_id, &delivery_id)
        .await
        .map_err(|err| AdminError::event(&request_id, err))?;
    Ok(Json(delivery.into()))
}
