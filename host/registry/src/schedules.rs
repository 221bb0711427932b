//! Schedules: the manifest's `schedules` of each install, and their firings.
//!
//! Each schedule keeps the next slot it fires at. A dispatcher fires the due ones: for each,
//! one firing (an event of topic `schedule` with key `schedule:{schedule_id}:{slot}`, so a
//! slot is fired once however many dispatchers look at it) and its delivery to the
//! schedule's path, then the next slot after now. Missed slots (no dispatcher was running,
//! or the install was disabled) fire once, as the oldest of them. Firings are then
//! delivered, retried and listed like events (see `events`).

use palisade_bundle::manifest::{Manifest, ScheduleSpec};
use sqlx::Row;

use crate::Registry;
use crate::db::{Backend, now_millis};
use crate::error::RegistryError;
use crate::events::{Queue, Trigger, insert_deliveries};

/// The topic of a schedule's firings.
pub const SCHEDULE_TOPIC: &str = "schedule";

/// Replaces the schedules of `install_id` with those of `manifest`. A schedule the manifest
/// keeps (same expression and path) keeps its row, its next slot and its pending firings.
pub(crate) async fn replace_schedules(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    install_id: &str,
    manifest: &Manifest,
) -> Result<(), RegistryError> {
    let existing: Vec<(String, String, String)> =
        sqlx::query_as("SELECT id, cron, path FROM extension_schedule WHERE install_id = $1")
            .bind(install_id)
            .fetch_all(&mut **tx)
            .await?;
    for (id, cron, path) in existing {
        let kept = manifest
            .schedules
            .iter()
            .any(|schedule| schedule.cron == cron && schedule.path == path);
        if !kept {
            sqlx::query("DELETE FROM extension_schedule WHERE id = $1")
                .bind(id)
                .execute(&mut **tx)
                .await?;
        }
    }
    let now = now_millis();
    for schedule in &manifest.schedules {
        // Published manifests were validated; one that no longer parses never fires.
        let next = ScheduleSpec::parse(&schedule.cron)
            .ok()
            .and_then(|spec| spec.next_after(now))
            .unwrap_or(i64::MAX);
        sqlx::query(
            "INSERT INTO extension_schedule (id, install_id, cron, path, next_fire_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (install_id, cron, path) DO NOTHING",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(install_id)
        .bind(&schedule.cron)
        .bind(&schedule.path)
        .bind(next)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

impl Registry {
    /// Fires up to `max` due schedules of enabled installs: one firing each, for its oldest
    /// due slot, then moves it to its first slot after now that is at least
    /// `min_interval_ms` after the slot fired. Returns how many firings were written.
    pub async fn fire_schedules(
        &self,
        min_interval_ms: i64,
        max: u32,
    ) -> Result<usize, RegistryError> {
        let now = now_millis();
        let lock = match self.backend() {
            Backend::Postgres => " FOR UPDATE OF sc SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "SELECT sc.id, sc.install_id, sc.cron, sc.path, sc.next_fire_at, i.tenant_id \
             FROM extension_schedule sc JOIN tenant_extension_install i ON i.id = sc.install_id \
             WHERE sc.next_fire_at <= $1 AND i.enabled = $2 ORDER BY sc.next_fire_at LIMIT $3{lock}"
        );
        let _turn = self.write_turn().await;
        let mut tx = self.begin_write().await?;
        let due = sqlx::query(&sql)
            .bind(now)
            .bind(true)
            .bind(i64::from(max))
            .fetch_all(&mut *tx)
            .await?;
        let mut fired = 0;
        for row in &due {
            let id: String = row.try_get("id")?;
            let cron: String = row.try_get("cron")?;
            let slot: i64 = row.try_get("next_fire_at")?;
            let tenant_id: String = row.try_get("tenant_id")?;
            let queue = Queue {
                trigger: Trigger::Schedule,
                install_id: row.try_get("install_id")?,
                path: row.try_get("path")?,
                id,
            };
            // The first slot after now that is at least `min_interval_ms` after the one
            // fired: still a slot of the schedule, so every process computes the same one.
            let earliest = now.max(slot.saturating_add(min_interval_ms).saturating_sub(1));
            let next = ScheduleSpec::parse(&cron)
                .ok()
                .and_then(|spec| spec.next_after(earliest))
                .unwrap_or(i64::MAX);
            sqlx::query("UPDATE extension_schedule SET next_fire_at = $1 WHERE id = $2")
                .bind(next)
                .bind(&queue.id)
                .execute(&mut *tx)
                .await?;
            let event_id = uuid::Uuid::now_v7().to_string();
            let payload = serde_json::json!({ "cron": cron, "slot_ms": slot }).to_string();
            let inserted = sqlx::query(
                "INSERT INTO extension_event \
                 (id, tenant_id, event_key, topic, payload, deliveries, published_at) \
                 VALUES ($1, $2, $3, $4, $5, 1, $6) ON CONFLICT (tenant_id, event_key) DO NOTHING",
            )
            .bind(&event_id)
            .bind(&tenant_id)
            .bind(format!("schedule:{}:{slot}", queue.id))
            .bind(SCHEDULE_TOPIC)
            .bind(payload)
            .bind(slot)
            .execute(&mut *tx)
            .await?;
            if inserted.rows_affected() == 0 {
                continue;
            }
            insert_deliveries(
                &mut tx,
                &event_id,
                &tenant_id,
                std::slice::from_ref(&queue),
                now,
            )
            .await?;
            fired += 1;
        }
        tx.commit().await?;
        if fired > 0 {
            tracing::debug!(fired, "schedules fired");
        }
        Ok(fired)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use palisade_bundle::manifest::CapabilityKey;
    use serde_json::json;

    use crate::DeliveryState;
    use crate::events::Trigger;
    use crate::test_support::{EMPTY_COMPONENT, Fixture, bundle, manifest_with};

    const ID: &str = "com.example.cron";

    async fn install(fx: &Fixture, version: &str, schedules: serde_json::Value) {
        let m = manifest_with(ID, version, json!({}), |m| m["schedules"] = schedules);
        fx.publish(&bundle(&m, EMPTY_COMPONENT)).await;
        let v = semver::Version::parse(version).unwrap();
        fx.registry
            .install("acme", ID, Some(&v), &[CapabilityKey::Log], BTreeMap::new())
            .await
            .unwrap();
    }

    /// Makes every schedule of the registry due now.
    async fn make_due(fx: &Fixture) {
        sqlx::query("UPDATE extension_schedule SET next_fire_at = 0")
            .execute(fx.registry.pool())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_due_schedule_fires_once_per_slot_and_moves_to_its_next_slot() {
        let fx = Fixture::new().await;
        install(
            &fx,
            "1.0.0",
            json!([{"cron": "@every 1h", "path": "/tick"}]),
        )
        .await;
        // Installed: its first slot is ahead, so nothing fires yet.
        assert_eq!(fx.registry.fire_schedules(0, 10).await.unwrap(), 0);
        make_due(&fx).await;
        assert_eq!(fx.registry.fire_schedules(0, 10).await.unwrap(), 1);
        assert_eq!(fx.registry.fire_schedules(0, 10).await.unwrap(), 0);

        let claimed = fx
            .registry
            .claim_deliveries("d1", 60_000, 10)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].trigger, Trigger::Schedule);
        assert_eq!(claimed[0].path, "/tick");
        assert_eq!(claimed[0].topic, "schedule");
        let payload: serde_json::Value = serde_json::from_str(&claimed[0].payload).unwrap();
        assert_eq!(payload, json!({"cron": "@every 1h", "slot_ms": 0}));

        // The same slot again (another dispatcher that read it before the move) is a no-op.
        make_due(&fx).await;
        assert_eq!(fx.registry.fire_schedules(0, 10).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn disabled_installs_fire_their_missed_slot_once_when_enabled() {
        let fx = Fixture::new().await;
        install(
            &fx,
            "1.0.0",
            json!([{"cron": "* * * * *", "path": "/tick"}]),
        )
        .await;
        make_due(&fx).await;
        fx.registry.set_enabled("acme", ID, false).await.unwrap();
        assert_eq!(fx.registry.fire_schedules(0, 10).await.unwrap(), 0);
        fx.registry.set_enabled("acme", ID, true).await.unwrap();
        assert_eq!(fx.registry.fire_schedules(0, 10).await.unwrap(), 1);
        assert_eq!(fx.registry.fire_schedules(0, 10).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn the_operator_minimum_spaces_firings_out() {
        let fx = Fixture::new().await;
        install(
            &fx,
            "1.0.0",
            json!([{"cron": "@every 1s", "path": "/tick"}]),
        )
        .await;
        // Due now: the slot of the current second.
        let slot = crate::db::now_millis() / 1000 * 1000;
        sqlx::query("UPDATE extension_schedule SET next_fire_at = $1")
            .bind(slot)
            .execute(fx.registry.pool())
            .await
            .unwrap();
        assert_eq!(fx.registry.fire_schedules(3_600_000, 10).await.unwrap(), 1);
        let next: i64 = sqlx::query_scalar("SELECT next_fire_at FROM extension_schedule")
            .fetch_one(fx.registry.pool())
            .await
            .unwrap();
        assert_eq!(next, slot + 3_600_000);
    }

    #[tokio::test]
    async fn an_upgrade_keeps_kept_schedules_and_uninstall_removes_their_firings() {
        let fx = Fixture::new().await;
        let both =
            json!([{"cron": "@every 1h", "path": "/a"}, {"cron": "0 3 * * *", "path": "/b"}]);
        install(&fx, "1.0.0", both).await;
        make_due(&fx).await;
        assert_eq!(fx.registry.fire_schedules(0, 10).await.unwrap(), 2);
        install(&fx, "2.0.0", json!([{"cron": "@every 1h", "path": "/a"}])).await;
        let left = fx
            .registry
            .list_deliveries("acme", Some(DeliveryState::Pending), 10)
            .await
            .unwrap();
        let paths: Vec<&str> = left.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, ["/a"]);
        fx.registry.uninstall("acme", ID).await.unwrap();
        assert!(
            fx.registry
                .list_deliveries("acme", None, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }
}
