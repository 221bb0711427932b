//! Events and their deliveries: the outbox that publishing writes and dispatchers drain.
//!
//! Publishing writes the event and one delivery per matching subscription of the tenant's
//! installs in one transaction; a publisher's id already used for the tenant answers the
//! first result and writes nothing. A dispatcher claims due deliveries under a lease (on
//! PostgreSQL with `FOR UPDATE SKIP LOCKED`, on SQLite in its single-writer transaction),
//! runs them, and records each attempt's end: delivered, pending again at a later time,
//! or dead. Deliveries of one subscription are claimed one at a time in publish order, so
//! a delivery waits while an earlier one of its subscription is pending; deliveries of
//! disabled installs are not claimed until the install is enabled again.
//!
//! The policy (how many attempts, which backoff) is the dispatcher's: this module stores
//! what it decided.

use sqlx::Row;

use crate::Registry;
use crate::db::{Backend, Row as DbRow, now_millis};
use crate::error::{InvalidTenantId, RegistryError};
use crate::executions::truncate;
use crate::install::validate_tenant_id;
use palisade_bundle::manifest::{TopicError, TopicPattern, check_topic};

/// Longest publisher event id, in bytes.
pub const MAX_EVENT_KEY_LEN: usize = 256;

/// Most deliveries [`Registry::list_deliveries`] returns.
pub const MAX_LISTED_DELIVERIES: u32 = 1000;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    /// Waiting for its next attempt (or in one, under a lease).
    Pending,
    /// An attempt was answered with a 2xx status.
    Delivered,
    /// Every attempt failed; kept until retried by hand or uninstalled.
    Dead,
}

impl DeliveryState {
    /// The stored and answered word: `pending`, `delivered` or `dead`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
        }
    }
}

impl std::str::FromStr for DeliveryState {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "pending" => Ok(DeliveryState::Pending),
            "delivered" => Ok(DeliveryState::Delivered),
            "dead" => Ok(DeliveryState::Dead),
            other => Err(format!(
                "`{other}` is not a delivery state (pending, delivered or dead)"
            )),
        }
    }
}

/// Why an event or a delivery request is refused.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The tenant id is malformed.
    #[error(transparent)]
    InvalidTenantId(#[from] InvalidTenantId),
    /// The topic is malformed.
    #[error("topic `{topic}` {source}")]
    InvalidTopic {
        /// The topic as given.
        topic: String,
        /// What is wrong with it.
        #[source]
        source: TopicError,
    },
    /// The publisher's id is empty or too long.
    #[error("event id must be 1 to {MAX_EVENT_KEY_LEN} bytes")]
    InvalidKey,
    /// The payload is not JSON.
    #[error("payload is not JSON: {0}")]
    InvalidPayload(String),
    /// The tenant has no installs: no event of it could reach anything.
    #[error("tenant `{0}` has no installs")]
    UnknownTenant(String),
    /// No delivery with that id belongs to the tenant.
    #[error("no delivery `{0}` for this tenant")]
    DeliveryNotFound(String),
    /// The delivery cannot be retried in its state.
    #[error(
        "delivery `{id}` is {reason}; only a dead delivery, or a pending one between attempts, can be retried"
    )]
    NotRetryable {
        /// The delivery.
        id: String,
        /// Its state, in words.
        reason: &'static str,
    },
    /// The database failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl From<sqlx::Error> for EventError {
    fn from(err: sqlx::Error) -> Self {
        EventError::Registry(err.into())
    }
}

/// An event to publish.
#[derive(Debug, Clone, Copy)]
pub struct NewEvent<'a> {
    /// The tenant whose installs receive it.
    pub tenant_id: &'a str,
    /// Its topic (no wildcards).
    pub topic: &'a str,
    /// The publisher's id: publishing it again for the tenant is a no-op.
    pub key: &'a str,
    /// The JSON payload, as text.
    pub payload: &'a str,
}

/// What publishing an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedEvent {
    /// The platform's id of the event.
    pub event_id: String,
    /// How many deliveries it made (one per matching subscription).
    pub deliveries: u32,
    /// Whether the publisher's id had been published before (nothing was written now).
    pub duplicate: bool,
}

/// A delivery a dispatcher claimed: everything needed to make the attempt.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    /// Delivery id.
    pub id: String,
    /// The claim's lease token; finishing the attempt needs it.
    pub lease: String,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// An event's delivery, or a schedule's firing.
    pub trigger: Trigger,
    /// The event.
    pub event_id: String,
    /// The publisher's id of the event.
    pub event_key: String,
    /// The event's topic.
    pub topic: String,
    /// The event's JSON payload.
    pub payload: String,
    /// When the event was published (unix epoch milliseconds).
    pub published_at_ms: i64,
    /// When this claim was made (unix epoch milliseconds, the registry's clock).
    pub claimed_at_ms: i64,
    /// The receiving install, its tenant and extension.
    pub install_id: String,
    /// The tenant.
    pub tenant_id: String,
    /// The extension.
    pub extension_id: String,
    /// Path the event is posted to.
    pub path: String,
}

/// How an attempt ended, as the dispatcher decided.
#[derive(Debug, Clone)]
pub enum AttemptEnd {
    /// Answered 2xx.
    Delivered {
        /// The status.
        status: u16,
    },
    /// Failed; try again `retry_after` from now, or (`None`) give up: the delivery is dead.
    Failed {
        /// The status, when the guest answered.
        status: Option<u16>,
        /// What went wrong, for operators (a stable code and a short text).
        error: String,
        /// How long to wait before the next attempt, or `None` for dead.
        retry_after: Option<std::time::Duration>,
    },
}

/// A delivery as listed to operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Delivery id.
    pub id: String,
    /// The event.
    pub event_id: String,
    /// The publisher's id of the event.
    pub event_key: String,
    /// The event's topic.
    pub topic: String,
    /// The tenant.
    pub tenant_id: String,
    /// The receiving extension and install.
    pub extension_id: String,
    /// The receiving install.
    pub install_id: String,
    /// Path the event is posted to.
    pub path: String,
    /// An event's delivery, or a schedule's firing.
    pub trigger: Trigger,
    /// Where it stands.
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due (pending only; unix epoch milliseconds).
    pub next_attempt_at_ms: Option<i64>,
    /// The last attempt's status, when the guest answered.
    pub last_status: Option<u16>,
    /// The last failed attempt's error.
    pub last_error: Option<String>,
    /// When the event was published.
    pub published_at_ms: i64,
    /// When the delivery last changed.
    pub updated_at_ms: i64,
}

/// Longest stored error text of an attempt.
const MAX_ERROR_LEN: usize = 1024;

/// The due-delivery filter of a claim: pending, due, not under a live lease, of an enabled
/// install, and first of its subscription's pending deliveries. `$1` is now, `$2` true.
const CLAIMABLE: &str = "SELECT d.id FROM extension_event_delivery d \
     JOIN tenant_extension_install i ON i.id = d.install_id \
     WHERE d.state = 'pending' AND d.next_attempt_at <= $1 \
     AND (d.lease_until IS NULL OR d.lease_until < $1) AND i.enabled = $2 \
     AND NOT EXISTS (SELECT 1 FROM extension_event_delivery e \
         WHERE e.queue_id = d.queue_id AND e.state = 'pending' AND e.id < d.id) \
     ORDER BY d.next_attempt_at, d.id LIMIT $3";

const SELECT_DELIVERY: &str = "SELECT d.id, d.event_id, d.tenant_id, d.install_id, d.state, \
     d.attempts, d.next_attempt_at, d.last_status, d.last_error, d.updated_at, d.path, \
     d.trigger, ev.event_key, ev.topic, ev.payload, ev.published_at, i.extension_id \
     FROM extension_event_delivery d \
     JOIN extension_event ev ON ev.id = d.event_id \
     JOIN tenant_extension_install i ON i.id = d.install_id";

/// What a delivery is for: an event to a subscription, or a schedule's firing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// A published event, to a matching subscription.
    Event,
    /// A schedule's slot.
    Schedule,
}

impl Trigger {
    /// The stored word, also the execution log's trigger: `event` or `schedule`.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Event => "event",
            Trigger::Schedule => "schedule",
        }
    }
}

/// The queue a delivery goes to: a subscription or a schedule of one install.
pub(crate) struct Queue {
    pub trigger: Trigger,
    pub id: String,
    pub install_id: String,
    pub path: String,
}

/// Deliveries written per `INSERT` statement (7 parameters each).
const INSERT_CHUNK: usize = 64;

/// Writes a pending delivery of `event_id` to each of `queues`, due `now`, in their order
/// (the deliveries' UUID v7 ids follow it).
pub(crate) async fn insert_deliveries(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    event_id: &str,
    tenant_id: &str,
    queues: &[Queue],
    now: i64,
) -> Result<(), RegistryError> {
    for chunk in queues.chunks(INSERT_CHUNK) {
        let rows: Vec<String> = (0..chunk.len())
            .map(|i| {
                let p = |n: usize| format!("${}", 3 + i * 7 + n);
                format!(
                    "({}, $1, {}, {}, {}, {}, {}, $2, {}, 'pending', 0, $3, $3)",
                    p(1),
                    p(2),
                    p(3),
                    p(4),
                    p(5),
                    p(6),
                    p(7)
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO extension_event_delivery (id, event_id, subscription_id, \
             schedule_id, queue_id, trigger, path, tenant_id, install_id, state, attempts, \
             next_attempt_at, updated_at) VALUES {}",
            rows.join(", ")
        );
        let mut query = sqlx::query(&sql).bind(event_id).bind(tenant_id).bind(now);
        for queue in chunk {
            let (subscription_id, schedule_id) = match queue.trigger {
                Trigger::Event => (Some(&queue.id), None),
                Trigger::Schedule => (None, Some(&queue.id)),
            };
            query = query
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(subscription_id)
                .bind(schedule_id)
                .bind(&queue.id)
                .bind(queue.trigger.as_str())
                .bind(&queue.path)
                .bind(&queue.install_id);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

impl Registry {
    /// Publishes `event`: the event and one delivery per subscription of the tenant's
    /// installs whose pattern matches the topic, in one transaction. Disabled installs get
    /// their deliveries too; they wait until the install is enabled.
    pub async fn publish_event(&self, event: NewEvent<'_>) -> Result<PublishedEvent, EventError> {
        let _timer = self.queries.time("publish_event");
        validate_tenant_id(event.tenant_id)?;
        check_topic(event.topic).map_err(|source| EventError::InvalidTopic {
            topic: event.topic.to_owned(),
            source,
        })?;
        if event.key.is_empty() || event.key.len() > MAX_EVENT_KEY_LEN {
            return Err(EventError::InvalidKey);
        }
        serde_json::from_str::<serde::de::IgnoredAny>(event.payload)
            .map_err(|e| EventError::InvalidPayload(e.to_string()))?;

        let _turn = self.write_turn().await;
        let mut tx = self.begin_write().await?;
        let installs: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM tenant_extension_install WHERE tenant_id = $1",
        )
        .bind(event.tenant_id)
        .fetch_one(&mut *tx)
        .await?;
        if installs == 0 {
            return Err(EventError::UnknownTenant(event.tenant_id.to_owned()));
        }
        let subscriptions: Vec<(String, String, String, String)> = sqlx::query_as(
            "SELECT s.id, s.topic, s.install_id, s.path FROM extension_event_subscription s \
             JOIN tenant_extension_install i ON i.id = s.install_id WHERE i.tenant_id = $1 \
             ORDER BY s.id",
        )
        .bind(event.tenant_id)
        .fetch_all(&mut *tx)
        .await?;
        let matching: Vec<Queue> = subscriptions
            .into_iter()
            .filter(|(_, pattern, _, _)| {
                TopicPattern::parse(pattern).is_ok_and(|p| p.matches(event.topic))
            })
            .map(|(id, _, install_id, path)| Queue {
                trigger: Trigger::Event,
                id,
                install_id,
                path,
            })
            .collect();
        let count = u32::try_from(matching.len()).unwrap_or(u32::MAX);

        let now = now_millis();
        let event_id = uuid::Uuid::now_v7().to_string();
        let inserted = sqlx::query(
            "INSERT INTO extension_event \
             (id, tenant_id, event_key, topic, payload, deliveries, published_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant_id, event_key) DO NOTHING",
        )
        .bind(&event_id)
        .bind(event.tenant_id)
        .bind(event.key)
        .bind(event.topic)
        .bind(event.payload)
        .bind(i64::from(count))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            let row = sqlx::query(
                "SELECT id, deliveries FROM extension_event WHERE tenant_id = $1 AND event_key = $2",
            )
            .bind(event.tenant_id)
            .bind(event.key)
            .fetch_one(&mut *tx)
            .await?;
            return Ok(PublishedEvent {
                event_id: row.try_get("id")?,
                deliveries: u32::try_from(row.try_get::<i64, _>("deliveries")?).unwrap_or(0),
                duplicate: true,
            });
        }
        insert_deliveries(&mut tx, &event_id, event.tenant_id, &matching, now).await?;
        tx.commit().await?;
        tracing::debug!(
            tenant_id = event.tenant_id,
            topic = event.topic,
            event_id,
            deliveries = count,
            "event published"
        );
        Ok(PublishedEvent {
            event_id,
            deliveries: count,
            duplicate: false,
        })
    }

    /// Claims up to `max` due deliveries for `owner` (a name unique to the dispatcher)
    /// until `lease_ms` from now, and counts their attempt. Another dispatcher can claim a
    /// delivery again only once its lease has run out.
    pub async fn claim_deliveries(
        &self,
        owner: &str,
        lease_ms: i64,
        max: u32,
    ) -> Result<Vec<ClaimedDelivery>, RegistryError> {
        let _timer = self.queries.time("claim_deliveries");
        let now = now_millis();
        let lease = format!("{owner}/{}", uuid::Uuid::now_v7());
        let lock = match self.backend() {
            Backend::Postgres => " FOR UPDATE OF d SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE extension_event_delivery SET lease_owner = $4, lease_until = $5, \
             attempts = attempts + 1, updated_at = $1 WHERE id IN ({CLAIMABLE}{lock})"
        );
        let _turn = self.write_turn().await;
        let claimed = sqlx::query(&sql)
            .bind(now)
            .bind(true)
            .bind(i64::from(max))
            .bind(&lease)
            .bind(now.saturating_add(lease_ms))
            .execute(&self.pool)
            .await?;
        drop(_turn);
        if claimed.rows_affected() == 0 {
            return Ok(Vec::new());
        }
        let sql = format!("{SELECT_DELIVERY} WHERE d.lease_owner = $1 ORDER BY d.id");
        let rows = sqlx::query(&sql).bind(&lease).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                let delivery = delivery_from_row(row)?;
                Ok(ClaimedDelivery {
                    id: delivery.id,
                    lease: lease.clone(),
                    attempt: delivery.attempts,
                    trigger: delivery.trigger,
                    event_id: delivery.event_id,
                    event_key: delivery.event_key,
                    topic: delivery.topic,
                    payload: row.try_get("payload")?,
                    published_at_ms: delivery.published_at_ms,
                    claimed_at_ms: now,
                    install_id: delivery.install_id,
                    tenant_id: delivery.tenant_id,
                    extension_id: delivery.extension_id,
                    path: delivery.path,
                })
            })
            .collect()
    }

    /// Records how the attempt `claim` ended. Returns the delivery's new state, or `None`
    /// when the claim's lease was lost (it ran out and another dispatcher took the
    /// delivery, or the delivery was removed): nothing is written then.
    pub async fn finish_attempt(
        &self,
        claim: &ClaimedDelivery,
        end: &AttemptEnd,
    ) -> Result<Option<DeliveryState>, RegistryError> {
        let now = now_millis();
        let (state, next, status, error) = match end {
            AttemptEnd::Delivered { status } => {
                (DeliveryState::Delivered, now, Some(*status), None)
            }
            AttemptEnd::Failed {
                status,
                error,
                retry_after: Some(wait),
            } => {
                let wait = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
                let next = now.saturating_add(wait);
                (DeliveryState::Pending, next, *status, Some(error))
            }
            AttemptEnd::Failed {
                status,
                error,
                retry_after: None,
            } => (DeliveryState::Dead, now, *status, Some(error)),
        };
        let error = error.map(|e| truncate(e, MAX_ERROR_LEN));
        let _turn = self.write_turn().await;
        let done = sqlx::query(
            "UPDATE extension_event_delivery SET state = $1, next_attempt_at = $2, \
             last_status = $3, last_error = $4, lease_owner = NULL, lease_until = NULL, \
             updated_at = $5 WHERE id = $6 AND lease_owner = $7",
        )
        .bind(state.as_str())
        .bind(next)
        .bind(status.map(i64::from))
        .bind(error)
        .bind(now)
        .bind(&claim.id)
        .bind(&claim.lease)
        .execute(&self.pool)
        .await?;
        Ok((done.rows_affected() > 0).then_some(state))
    }

    /// The tenant's deliveries, optionally in one state, oldest first, at most `limit`
    /// (capped at [`MAX_LISTED_DELIVERIES`]).
    pub async fn list_deliveries(
        &self,
        tenant_id: &str,
        state: Option<DeliveryState>,
        limit: u32,
    ) -> Result<Vec<Delivery>, EventError> {
        validate_tenant_id(tenant_id)?;
        let limit = i64::from(limit.min(MAX_LISTED_DELIVERIES));
        let rows = match state {
            Some(state) => {
                let sql = format!(
                    "{SELECT_DELIVERY} WHERE d.tenant_id = $1 AND d.state = $2 ORDER BY d.id LIMIT $3"
                );
                sqlx::query(&sql)
                    .bind(tenant_id)
                    .bind(state.as_str())
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                let sql =
                    format!("{SELECT_DELIVERY} WHERE d.tenant_id = $1 ORDER BY d.id LIMIT $2");
                sqlx::query(&sql)
                    .bind(tenant_id)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        Ok(rows
            .iter()
            .map(delivery_from_row)
            .collect::<Result<_, _>>()?)
    }

    /// One of the tenant's deliveries.
    pub async fn get_delivery(
        &self,
        tenant_id: &str,
        delivery_id: &str,
    ) -> Result<Option<Delivery>, EventError> {
        validate_tenant_id(tenant_id)?;
        let sql = format!("{SELECT_DELIVERY} WHERE d.tenant_id = $1 AND d.id = $2");
        let row = sqlx::query(&sql)
            .bind(tenant_id)
            .bind(delivery_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(delivery_from_row).transpose()?)
    }

    /// Retries one of the tenant's deliveries now: a dead one starts over with a fresh
    /// count of attempts; a pending one between attempts has its next attempt moved to
    /// now. A delivered one, or one in an attempt right now, is refused.
    pub async fn retry_delivery(
        &self,
        tenant_id: &str,
        delivery_id: &str,
    ) -> Result<Delivery, EventError> {
        validate_tenant_id(tenant_id)?;
        let now = now_millis();
        let done = {
            let _turn = self.write_turn().await;
            sqlx::query(
                "UPDATE extension_event_delivery SET \
                 attempts = CASE WHEN state = 'dead' THEN 0 ELSE attempts END, \
                 state = 'pending', next_attempt_at = $1, updated_at = $1 \
                 WHERE tenant_id = $2 AND id = $3 AND (state = 'dead' OR (state = 'pending' \
                 AND (lease_until IS NULL OR lease_until < $1)))",
            )
            .bind(now)
            .bind(tenant_id)
            .bind(delivery_id)
            .execute(&self.pool)
            .await?
        };
        let delivery = self
            .get_delivery(tenant_id, delivery_id)
            .await?
            .ok_or_else(|| EventError::DeliveryNotFound(delivery_id.to_owned()))?;
        if done.rows_affected() == 0 {
            return Err(EventError::NotRetryable {
                id: delivery_id.to_owned(),
                reason: match delivery.state {
                    DeliveryState::Delivered => "delivered already",
                    _ => "in an attempt right now",
                },
            });
        }
        tracing::info!(tenant_id, delivery_id, "delivery retried by hand");
        Ok(delivery)
    }

    /// Removes up to `max` events published more than `older_than` ago none of whose
    /// deliveries is still pending, with their deliveries (delivered or dead). Their
    /// publisher ids become free again. Returns how many events went.
    pub async fn prune_events(
        &self,
        older_than: std::time::Duration,
        max: u32,
    ) -> Result<u64, RegistryError> {
        let age = i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX);
        let before_ms = now_millis().saturating_sub(age);
        let _turn = self.write_turn().await;
        let done = sqlx::query(
            "DELETE FROM extension_event WHERE id IN (SELECT e.id FROM extension_event e \
             WHERE e.published_at < $1 AND NOT EXISTS (SELECT 1 FROM extension_event_delivery d \
             WHERE d.event_id = e.id AND d.state = 'pending') LIMIT $2)",
        )
        .bind(before_ms)
        .bind(i64::from(max))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

fn delivery_from_row(row: &DbRow) -> Result<Delivery, RegistryError> {
    let id: String = row.try_get("id")?;
    let state: String = row.try_get("state")?;
    let state: DeliveryState = state
        .parse()
        .map_err(|e: String| RegistryError::corrupt("extension_event_delivery", "state", &id, e))?;
    let attempts: i64 = row.try_get("attempts")?;
    let trigger = match row.try_get::<String, _>("trigger")?.as_str() {
        "event" => Trigger::Event,
        "schedule" => Trigger::Schedule,
        other => {
            return Err(RegistryError::corrupt(
                "extension_event_delivery",
                "trigger",
                &id,
                format!("unknown trigger `{other}`"),
            ));
        }
    };
    let last_status: Option<i64> = row.try_get("last_status")?;
    Ok(Delivery {
        event_id: row.try_get("event_id")?,
        event_key: row.try_get("event_key")?,
        topic: row.try_get("topic")?,
        tenant_id: row.try_get("tenant_id")?,
        extension_id: row.try_get("extension_id")?,
        install_id: row.try_get("install_id")?,
        path: row.try_get("path")?,
        trigger,
        state,
        attempts: u32::try_from(attempts).unwrap_or(0),
        next_attempt_at_ms: (state == DeliveryState::Pending)
            .then(|| row.try_get("next_attempt_at"))
            .transpose()?,
        last_status: last_status.and_then(|s| u16::try_from(s).ok()),
        last_error: row.try_get("last_error")?,
        published_at_ms: row.try_get("published_at")?,
        updated_at_ms: row.try_get("updated_at")?,
        id,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use palisade_bundle::manifest::CapabilityKey;
    use serde_json::json;

    use super::*;
    use crate::test_support::{EMPTY_COMPONENT, Fixture, bundle, manifest_with};

    const ID: &str = "com.example.listener";
    const OTHER: &str = "com.example.other";

    /// Publishes `id` at `version` subscribing to `events` and installs it for `tenant`.
    async fn install(
        fx: &Fixture,
        tenant: &str,
        id: &str,
        version: &str,
        events: serde_json::Value,
    ) {
        let m = manifest_with(id, version, json!({}), |m| m["events"] = events);
        let bytes = bundle(&m, EMPTY_COMPONENT);
        let signature = fx.key.sign(&bytes).unwrap();
        // Installing the same version for another tenant publishes nothing new.
        match fx.registry.publish(&bytes, &signature, &fx.trust).await {
            Ok(_) | Err(crate::PublishError::VersionExists { .. }) => {}
            Err(e) => panic!("publishing {id} {version}: {e}"),
        }
        let v = semver::Version::parse(version).unwrap();
        fx.registry
            .install(tenant, id, Some(&v), &[CapabilityKey::Log], BTreeMap::new())
            .await
            .unwrap();
    }

    /// Installs `ID` for acme, subscribed to `ticket.*` at `/t`.
    async fn install_listener(fx: &Fixture) {
        let events = json!([{"topic": "ticket.*", "path": "/t"}]);
        install(fx, "acme", ID, "1.0.0", events).await;
    }

    /// Publishes `ticket.created` with the publisher id `key` for acme.
    async fn publish(fx: &Fixture, key: &str) -> PublishedEvent {
        let event = event("acme", "ticket.created", key);
        fx.registry.publish_event(event).await.unwrap()
    }

    fn event<'a>(tenant: &'a str, topic: &'a str, key: &'a str) -> NewEvent<'a> {
        NewEvent {
            tenant_id: tenant,
            topic,
            key,
            payload: r#"{"ticket": 42}"#,
        }
    }

    async fn claim(fx: &Fixture, owner: &str) -> Vec<ClaimedDelivery> {
        fx.registry
            .claim_deliveries(owner, 60_000, 16)
            .await
            .unwrap()
    }

    fn failed(retry_after: Option<Duration>) -> AttemptEnd {
        AttemptEnd::Failed {
            status: Some(500),
            error: "status 500".into(),
            retry_after,
        }
    }

    #[tokio::test]
    async fn publishing_delivers_to_each_matching_subscription_once() {
        let fx = Fixture::new().await;
        let listener = json!([
            {"topic": "ticket.*", "path": "/on/ticket"},
            {"topic": "billing.#", "path": "/on/billing"}
        ]);
        install(&fx, "acme", ID, "1.0.0", listener.clone()).await;
        install(
            &fx,
            "acme",
            OTHER,
            "1.0.0",
            json!([{"topic": "ticket.created", "path": "/t"}]),
        )
        .await;
        // Another tenant's install of the same extension hears nothing of acme's events.
        install(&fx, "globex", ID, "1.0.0", listener).await;

        let published = fx
            .registry
            .publish_event(event("acme", "ticket.created", "e1"))
            .await
            .unwrap();
        assert_eq!(published.deliveries, 2);
        assert!(!published.duplicate);
        let none = fx
            .registry
            .publish_event(event("acme", "order.created", "e2"))
            .await
            .unwrap();
        assert_eq!(none.deliveries, 0);

        let mut claimed = claim(&fx, "d1").await;
        claimed.sort_by(|a, b| a.extension_id.cmp(&b.extension_id));
        let seen: Vec<(&str, &str, u32)> = claimed
            .iter()
            .map(|c| (c.extension_id.as_str(), c.path.as_str(), c.attempt))
            .collect();
        assert_eq!(seen, [(ID, "/on/ticket", 1), (OTHER, "/t", 1)]);
        assert_eq!(claimed[0].event_id, published.event_id);
        assert_eq!(claimed[0].event_key, "e1");
        assert_eq!(claimed[0].topic, "ticket.created");
        assert_eq!(claimed[0].payload, r#"{"ticket": 42}"#);
        // Under lease, nobody else gets them.
        assert!(claim(&fx, "d2").await.is_empty());
    }

    #[tokio::test]
    async fn publishing_an_id_again_answers_the_first_result_and_writes_nothing() {
        let fx = Fixture::new().await;
        install_listener(&fx).await;
        let first = fx
            .registry
            .publish_event(event("acme", "ticket.created", "e1"))
            .await
            .unwrap();
        let again = fx
            .registry
            .publish_event(event("acme", "ticket.closed", "e1"))
            .await
            .unwrap();
        assert_eq!(again.event_id, first.event_id);
        assert_eq!(again.deliveries, 1);
        assert!(again.duplicate);
        assert_eq!(claim(&fx, "d1").await.len(), 1);
        // The same id of another tenant is another event.
        install(
            &fx,
            "globex",
            ID,
            "1.0.0",
            json!([{"topic": "ticket.*", "path": "/t"}]),
        )
        .await;
        let other = fx
            .registry
            .publish_event(event("globex", "ticket.created", "e1"))
            .await
            .unwrap();
        assert_ne!(other.event_id, first.event_id);
    }

    #[tokio::test]
    async fn bad_events_are_refused_with_what_is_wrong() {
        let fx = Fixture::new().await;
        let err = fx
            .registry
            .publish_event(event("acme", "ticket.*", "e1"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("topic `ticket.*`"), "{err}");
        let err = fx
            .registry
            .publish_event(event("acme", "a", ""))
            .await
            .unwrap_err();
        assert!(matches!(err, EventError::InvalidKey), "{err}");
        let err = fx
            .registry
            .publish_event(event("no tenant", "a", "e"))
            .await
            .unwrap_err();
        assert!(matches!(err, EventError::InvalidTenantId(_)), "{err}");
        let err = fx
            .registry
            .publish_event(event("nobody", "a", "e"))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "tenant `nobody` has no installs");
        let bad = NewEvent {
            payload: "{nope",
            ..event("acme", "a", "e")
        };
        let err = fx.registry.publish_event(bad).await.unwrap_err();
        assert!(err.to_string().starts_with("payload is not JSON"), "{err}");
    }

    #[tokio::test]
    async fn a_subscription_delivers_in_publish_order_one_at_a_time() {
        let fx = Fixture::new().await;
        install_listener(&fx).await;
        for key in ["e1", "e2", "e3"] {
            fx.registry
                .publish_event(event("acme", "ticket.created", key))
                .await
                .unwrap();
        }
        let first = claim(&fx, "d1").await;
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].event_key, "e1");
        // A failed attempt to retry later holds back the rest of the subscription.
        let state = fx
            .registry
            .finish_attempt(&first[0], &failed(Some(Duration::from_secs(60))))
            .await
            .unwrap();
        assert_eq!(state, Some(DeliveryState::Pending));
        assert!(claim(&fx, "d1").await.is_empty());
        // Retried by hand, it goes first again, as attempt 2.
        fx.registry
            .retry_delivery("acme", &first[0].id)
            .await
            .unwrap();
        let again = claim(&fx, "d1").await;
        assert_eq!((again[0].event_key.as_str(), again[0].attempt), ("e1", 2));
        let state = fx
            .registry
            .finish_attempt(&again[0], &AttemptEnd::Delivered { status: 204 })
            .await
            .unwrap();
        assert_eq!(state, Some(DeliveryState::Delivered));
        assert_eq!(claim(&fx, "d1").await[0].event_key, "e2");
    }

    #[tokio::test]
    async fn a_dead_delivery_is_kept_listed_and_retried_from_scratch() {
        let fx = Fixture::new().await;
        install_listener(&fx).await;
        publish(&fx, "e1").await;
        publish(&fx, "e2").await;
        let claimed = claim(&fx, "d1").await;
        let state = fx
            .registry
            .finish_attempt(&claimed[0], &failed(None))
            .await
            .unwrap();
        assert_eq!(state, Some(DeliveryState::Dead));

        let dead = fx
            .registry
            .list_deliveries("acme", Some(DeliveryState::Dead), 100)
            .await
            .unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].event_key, "e1");
        assert_eq!(dead[0].attempts, 1);
        assert_eq!(dead[0].last_status, Some(500));
        assert_eq!(dead[0].last_error.as_deref(), Some("status 500"));
        assert_eq!(dead[0].next_attempt_at_ms, None);
        // A dead delivery no longer holds back the next one.
        let next = claim(&fx, "d1").await;
        assert_eq!(next[0].event_key, "e2");
        let err = fx
            .registry
            .retry_delivery("acme", &next[0].id)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("in an attempt right now"), "{err}");
        fx.registry
            .finish_attempt(&next[0], &AttemptEnd::Delivered { status: 200 })
            .await
            .unwrap();
        let err = fx
            .registry
            .retry_delivery("acme", &next[0].id)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("delivered already"), "{err}");
        let err = fx
            .registry
            .retry_delivery("globex", &dead[0].id)
            .await
            .unwrap_err();
        assert!(matches!(err, EventError::DeliveryNotFound(_)), "{err}");

        let retried = fx
            .registry
            .retry_delivery("acme", &dead[0].id)
            .await
            .unwrap();
        assert_eq!(
            (retried.state, retried.attempts),
            (DeliveryState::Pending, 0)
        );
        assert_eq!(claim(&fx, "d1").await[0].attempt, 1);
    }

    #[tokio::test]
    async fn a_wide_fan_out_writes_every_delivery() {
        let fx = Fixture::new().await;
        // More installs than one insert statement holds, and a part of one more.
        let wide = 2 * INSERT_CHUNK + 2;
        for i in 0..wide {
            let events = json!([{"topic": "ticket.*", "path": "/t"}]);
            install(
                &fx,
                "acme",
                &format!("com.example.wide-{i}"),
                "1.0.0",
                events,
            )
            .await;
        }
        let published = publish(&fx, "e1").await;
        assert_eq!(published.deliveries as usize, wide);
        let listed = fx
            .registry
            .list_deliveries("acme", None, 1000)
            .await
            .unwrap();
        let mut installs: Vec<&str> = listed.iter().map(|d| d.install_id.as_str()).collect();
        installs.sort_unstable();
        installs.dedup();
        assert_eq!(installs.len(), wide);
        assert!(listed.iter().all(|d| d.event_id == published.event_id));
    }

    /// Two registry handles on one database are two processes (a gateway publishing, a
    /// runner's dispatcher claiming): neither serializes with the other's writes in
    /// memory, so the database must, even for transactions that read before writing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_processes_publish_and_claim_at_once_without_refusals() {
        let fx = Fixture::new().await;
        install_listener(&fx).await;
        let other = Registry::open(&crate::test_support::config_in(&fx.dir))
            .await
            .unwrap();
        let publish_from = |registry: Registry, side: &'static str| {
            tokio::spawn(async move {
                for i in 0..100 {
                    let key = format!("{side}-{i}");
                    registry
                        .publish_event(event("acme", "ticket.created", &key))
                        .await
                        .unwrap();
                }
            })
        };
        let claim_from = |registry: Registry| {
            tokio::spawn(async move {
                let mut claimed = 0;
                while claimed < 200 {
                    for claim in registry.claim_deliveries("d", 60_000, 16).await.unwrap() {
                        let end = AttemptEnd::Delivered { status: 200 };
                        registry.finish_attempt(&claim, &end).await.unwrap();
                        claimed += 1;
                    }
                    tokio::task::yield_now().await;
                }
            })
        };
        let tasks = [
            publish_from(fx.registry.clone(), "a"),
            publish_from(other.clone(), "b"),
            claim_from(other),
        ];
        for task in tasks {
            task.await.unwrap();
        }
        let delivered = fx
            .registry
            .list_deliveries("acme", Some(DeliveryState::Delivered), 1000)
            .await
            .unwrap();
        assert_eq!(delivered.len(), 200);
    }

    #[tokio::test]
    async fn pruning_removes_ended_events_before_the_cutoff_and_frees_their_ids() {
        let fx = Fixture::new().await;
        install_listener(&fx).await;
        for key in ["delivered", "dead", "pending"] {
            publish(&fx, key).await;
        }
        let first = claim(&fx, "d1").await;
        let end = AttemptEnd::Delivered { status: 200 };
        fx.registry.finish_attempt(&first[0], &end).await.unwrap();
        let second = claim(&fx, "d1").await;
        fx.registry
            .finish_attempt(&second[0], &failed(None))
            .await
            .unwrap();

        // Nothing was published more than an hour ago.
        let hour = Duration::from_secs(3600);
        assert_eq!(fx.registry.prune_events(hour, 100).await.unwrap(), 0);
        // Kept for no time, the ended events go, one batch at a time; the pending one
        // stays.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let prune = |max| fx.registry.prune_events(Duration::ZERO, max);
        assert_eq!(prune(1).await.unwrap(), 1);
        assert_eq!(prune(100).await.unwrap(), 1);
        assert_eq!(prune(100).await.unwrap(), 0);
        let left = fx
            .registry
            .list_deliveries("acme", None, 100)
            .await
            .unwrap();
        let keys: Vec<_> = left.iter().map(|d| d.event_key.as_str()).collect();
        assert_eq!(keys, ["pending"]);
        // A pruned id is new again; a kept one is still a duplicate.
        assert!(!publish(&fx, "delivered").await.duplicate);
        assert!(publish(&fx, "pending").await.duplicate);
    }

    #[tokio::test]
    async fn a_lapsed_lease_goes_to_another_dispatcher_and_the_first_cannot_finish() {
        let fx = Fixture::new().await;
        install_listener(&fx).await;
        publish(&fx, "e1").await;
        let lost = fx.registry.claim_deliveries("d1", -1, 16).await.unwrap();
        assert_eq!(lost.len(), 1);
        let taken = claim(&fx, "d2").await;
        assert_eq!(
            (taken[0].id.as_str(), taken[0].attempt),
            (lost[0].id.as_str(), 2)
        );
        let late = fx
            .registry
            .finish_attempt(&lost[0], &AttemptEnd::Delivered { status: 200 })
            .await
            .unwrap();
        assert_eq!(late, None);
        let pending = fx
            .registry
            .list_deliveries("acme", Some(DeliveryState::Pending), 10)
            .await
            .unwrap();
        assert_eq!(pending.len(), 1);
    }

    #[tokio::test]
    async fn disabled_installs_wait_and_uninstalled_ones_lose_their_deliveries() {
        let fx = Fixture::new().await;
        install_listener(&fx).await;
        install(
            &fx,
            "acme",
            OTHER,
            "1.0.0",
            json!([{"topic": "ticket.*", "path": "/t"}]),
        )
        .await;
        fx.registry.set_enabled("acme", ID, false).await.unwrap();
        let published = fx
            .registry
            .publish_event(event("acme", "ticket.created", "e1"))
            .await
            .unwrap();
        assert_eq!(published.deliveries, 2);
        let claimed = claim(&fx, "d1").await;
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].extension_id, OTHER);
        fx.registry.set_enabled("acme", ID, true).await.unwrap();
        assert_eq!(claim(&fx, "d1").await[0].extension_id, ID);

        fx.registry.uninstall("acme", OTHER).await.unwrap();
        let left = fx.registry.list_deliveries("acme", None, 10).await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].extension_id, ID);
    }

    #[tokio::test]
    async fn an_upgrade_keeps_the_deliveries_of_kept_subscriptions_only() {
        let fx = Fixture::new().await;
        install(
            &fx,
            "acme",
            ID,
            "1.0.0",
            json!([{"topic": "ticket.*", "path": "/t"}, {"topic": "billing.#", "path": "/b"}]),
        )
        .await;
        publish(&fx, "e1").await;
        fx.registry
            .publish_event(event("acme", "billing.paid", "e2"))
            .await
            .unwrap();
        install(
            &fx,
            "acme",
            ID,
            "2.0.0",
            json!([{"topic": "ticket.*", "path": "/t"}, {"topic": "order.*", "path": "/o"}]),
        )
        .await;
        let left = fx.registry.list_deliveries("acme", None, 10).await.unwrap();
        let topics: Vec<&str> = left.iter().map(|d| d.topic.as_str()).collect();
        assert_eq!(topics, ["ticket.created"]);
        let published = fx
            .registry
            .publish_event(event("acme", "order.placed", "e3"))
            .await
            .unwrap();
        assert_eq!(published.deliveries, 1);
    }
}
