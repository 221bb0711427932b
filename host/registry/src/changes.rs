//! The change sequence (`registry_change`): every change to an install or to the trusted
//! keys is numbered and recorded in the transaction that makes it. A process follows the
//! sequence ([`Registry::follow_changes`]) and drops exactly the cached entries a change
//! affects, so its caches can keep entries for minutes while a disable, an uninstall, an
//! upgrade, a config change or a key removal still reaches it within one poll.
//!
//! Numbers come from a single counter row updated in the same transaction, which serialises
//! the changes: they commit in number order, so a follower reading `seq > last` never
//! skips one. A follower that falls further behind than the changes kept (10 000) gets a
//! [`ChangeKind::Reset`] and drops everything.

use std::time::Duration;

use sqlx::Row;

use crate::db::{Connection, now_millis};
use crate::{Registry, RegistryError};

/// Changes kept for followers; older ones are deleted as new ones are recorded.
pub const KEPT_CHANGES: i64 = 10_000;
/// Default interval between two polls of the sequence: the bound on how long a change
/// takes to reach a following process (plus one query).
pub const DEFAULT_FOLLOW_INTERVAL: Duration = Duration::from_millis(500);
/// How long a follower may fail to read the sequence before it drops everything (a
/// [`ChangeKind::Reset`], again at every failed poll after that): a process cut off from
/// the registry serves nothing it cached more than this long ago without hearing of its
/// changes, however long the caches' time to live.
pub const STALE_AFTER: Duration = Duration::from_secs(5);

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// An install of a tenant: installed, upgraded, reconfigured, enabled, disabled or
    /// uninstalled.
    Install,
    /// The trusted publisher keys.
    Trust,
    /// The follower missed changes (it fell behind what is kept): drop everything.
    Reset,
}

impl ChangeKind {
    fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Install => "install",
            ChangeKind::Trust => "trust",
            ChangeKind::Reset => "reset",
        }
    }

    fn parse(text: &str) -> ChangeKind {
        match text {
            "install" => ChangeKind::Install,
            "trust" => ChangeKind::Trust,
            // A kind this build does not know: dropping everything is always safe.
            _ => ChangeKind::Reset,
        }
    }
}

/// One change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Its number.
    pub seq: i64,
    /// What changed.
    pub kind: ChangeKind,
    /// The tenant, for an install change.
    pub tenant_id: Option<String>,
    /// The extension, for an install change.
    pub extension_id: Option<String>,
    /// The install, for an install change.
    pub install_id: Option<String>,
}

/// Records a change on `conn`, inside the transaction that makes it; returns its number.
pub(crate) async fn record(
    conn: &mut Connection,
    kind: ChangeKind,
    tenant_id: Option<&str>,
    extension_id: Option<&str>,
    install_id: Option<&str>,
) -> Result<i64, RegistryError> {
    let seq: i64 = sqlx::query_scalar(
        "UPDATE registry_change_seq SET value = value + 1 WHERE id = 1 RETURNING value",
    )
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO registry_change (seq, kind, tenant_id, extension_id, install_id, changed_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(seq)
    .bind(kind.as_str())
    .bind(tenant_id)
    .bind(extension_id)
    .bind(install_id)
    .bind(now_millis())
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM registry_change WHERE seq <= $1")
        .bind(seq - KEPT_CHANGES)
        .execute(&mut *conn)
        .await?;
    Ok(seq)
}

/// Records that the install `install_id` of `tenant_id` and `extension_id` changed.
pub(crate) async fn install_changed(
    conn: &mut Connection,
    tenant_id: &str,
    extension_id: &str,
    install_id: &str,
) -> Result<i64, RegistryError> {
    record(
        conn,
        ChangeKind::Install,
        Some(tenant_id),
        Some(extension_id),
        Some(install_id),
    )
    .await
}

impl Registry {
    /// The number of the latest change (0 before the first).
    pub async fn latest_change(&self) -> Result<i64, RegistryError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM registry_change_seq WHERE id = 1")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// The changes after `after`, oldest first, at most `limit`; a [`ChangeKind::Reset`]
    /// first when some of them are no longer kept.
    pub async fn changes_since(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Change>, RegistryError> {
        let rows = sqlx::query(
            "SELECT seq, kind, tenant_id, extension_id, install_id FROM registry_change \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut changes = Vec::with_capacity(rows.len() + 1);
        for row in rows {
            let kind: String = row.try_get("kind")?;
            changes.push(Change {
                seq: row.try_get("seq")?,
                kind: ChangeKind::parse(&kind),
                tenant_id: row.try_get("tenant_id")?,
                extension_id: row.try_get("extension_id")?,
                install_id: row.try_get("install_id")?,
            });
        }
        if let Some(first) = changes.first()
            && first.seq != after + 1
        {
            changes.insert(
                0,
                Change {
                    seq: first.seq - 1,
                    kind: ChangeKind::Reset,
                    tenant_id: None,
                    extension_id: None,
                    install_id: None,
                },
            );
        }
        Ok(changes)
    }

    /// Follows the change sequence from now on, every `every`, calling `on_change` with
    /// each change in order (this handle's trust cache is dropped on trust changes before
    /// it is called), until the returned guard is dropped. A registry that does not answer
    /// is asked again at the next poll, from the last change heard of; once it has not
    /// answered for [`STALE_AFTER`], every failed poll also gives a [`ChangeKind::Reset`].
    /// Must be called inside a Tokio runtime.
    pub fn follow_changes(
        &self,
        every: Duration,
        on_change: impl Fn(&Change) + Send + Sync + 'static,
    ) -> Following {
        let registry = self.clone();
        Following(tokio::spawn(async move {
            let mut last = None;
            let mut failing_since: Option<tokio::time::Instant> = None;
            loop {
                let polled = match last {
                    None => registry.latest_change().await.map(|seq| {
                        last = Some(seq);
                        Vec::new()
                    }),
                    Some(after) => registry.changes_since(after, 1000).await,
                };
                match polled {
                    Ok(changes) => {
                        if failing_since.take().is_some() {
                            tracing::info!("following the registry's changes again");
                        }
                        for change in changes {
                            if matches!(change.kind, ChangeKind::Trust | ChangeKind::Reset) {
                                registry.trust.clear();
                            }
                            on_change(&change);
                            last = Some(change.seq);
                        }
                    }
                    Err(error) => {
                        let since = *failing_since.get_or_insert_with(|| {
                            tracing::warn!(%error, "following the registry's changes failed; cached entries are dropped if it lasts {STALE_AFTER:?}");
                            tokio::time::Instant::now()
                        });
                        if since.elapsed() >= STALE_AFTER {
                            registry.trust.clear();
                            on_change(&Change {
                                seq: last.unwrap_or(0),
                                kind: ChangeKind::Reset,
                                tenant_id: None,
                                extension_id: None,
                                install_id: None,
                            });
                        }
                    }
                }
                tokio::time::sleep(every).await;
            }
        }))
    }
}

impl Registry {
    /// [`Self::follow_changes`] every [`DEFAULT_FOLLOW_INTERVAL`] when called inside a
    /// Tokio runtime; `None` outside one (nothing then follows the sequence, and caches
    /// rely on their time to live).
    pub fn follow_changes_by_default(
        &self,
        on_change: impl Fn(&Change) + Send + Sync + 'static,
    ) -> Option<Following> {
        tokio::runtime::Handle::try_current()
            .is_ok()
            .then(|| self.follow_changes(DEFAULT_FOLLOW_INTERVAL, on_change))
    }
}

/// A process following the change sequence; it stops when this is dropped.
#[derive(Debug)]
pub struct Following(tokio::task::JoinHandle<()>);

impl Drop for Following {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::Fixture;

    #[tokio::test]
    async fn install_and_trust_changes_are_numbered_in_order() {
        let fixture = Fixture::new().await;
        let registry = &fixture.registry;
        let start = registry.latest_change().await.unwrap();
        let install_id = fixture.install_simple("t1", "com.example.c").await;
        registry
            .set_enabled("t1", "com.example.c", false)
            .await
            .unwrap();
        // Nothing to change: no change recorded.
        assert!(
            !registry
                .set_enabled("t1", "com.example.nope", false)
                .await
                .unwrap()
        );
        registry
            .untrust_key(&fixture.key.public_key().fingerprint())
            .await
            .unwrap();
        registry.uninstall("t1", "com.example.c").await.unwrap();

        let changes = registry.changes_since(start, 100).await.unwrap();
        let kinds: Vec<_> = changes.iter().map(|c| c.kind).collect();
        assert_eq!(
            kinds,
            [
                ChangeKind::Install,
                ChangeKind::Install,
                ChangeKind::Trust,
                ChangeKind::Install
            ]
        );
        let seqs: Vec<i64> = changes.iter().map(|c| c.seq).collect();
        assert_eq!(seqs, (start + 1..=start + 4).collect::<Vec<_>>());
        assert_eq!(changes[1].install_id.as_deref(), Some(install_id.as_str()));
        assert_eq!(changes[3].tenant_id.as_deref(), Some("t1"));
        assert_eq!(changes[3].extension_id.as_deref(), Some("com.example.c"));
        // Read from the middle: the rest, no reset.
        let rest = registry.changes_since(start + 2, 100).await.unwrap();
        assert_eq!(rest.len(), 2);
        assert_eq!(rest[0].kind, ChangeKind::Trust);
    }

    #[tokio::test]
    async fn a_follower_behind_what_is_kept_is_told_to_reset() {
        let fixture = Fixture::new().await;
        let registry = &fixture.registry;
        fixture.install_simple("t1", "com.example.r").await;
        let latest = registry.latest_change().await.unwrap();
        sqlx::query("DELETE FROM registry_change")
            .execute(registry.pool())
            .await
            .unwrap();
        registry
            .set_enabled("t1", "com.example.r", false)
            .await
            .unwrap();
        let changes = registry.changes_since(0, 100).await.unwrap();
        assert_eq!(changes[0].kind, ChangeKind::Reset);
        assert_eq!(changes[1].seq, latest + 1);
        assert!(
            registry
                .changes_since(latest + 1, 100)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_follower_sees_changes_made_through_another_handle() {
        let fixture = Fixture::new().await;
        let other = Registry::open(&crate::test_support::config_in(&fixture.dir))
            .await
            .unwrap();
        let (sender, mut seen) = tokio::sync::mpsc::unbounded_channel();
        let follower = other.follow_changes(Duration::from_millis(20), move |change| {
            let _ = sender.send(change.clone());
        });
        // Let it read where the sequence stands before changing anything.
        tokio::time::sleep(Duration::from_millis(200)).await;
        fixture.install_simple("t9", "com.example.f").await;
        let change = tokio::time::timeout(Duration::from_secs(5), seen.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(change.kind, ChangeKind::Install);
        assert_eq!(change.tenant_id.as_deref(), Some("t9"));
        drop(follower);
    }

    #[tokio::test]
    async fn a_follower_cut_off_from_the_registry_drops_everything_after_a_while() {
        let fixture = Fixture::new().await;
        let other = Registry::open(&crate::test_support::config_in(&fixture.dir))
            .await
            .unwrap();
        let (sender, mut seen) = tokio::sync::mpsc::unbounded_channel();
        let _follower = other.follow_changes(Duration::from_millis(50), move |change| {
            let _ = sender.send((tokio::time::Instant::now(), change.clone()));
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let cut = tokio::time::Instant::now();
        other.pool().close().await;
        let (at, change) = tokio::time::timeout(STALE_AFTER * 2, seen.recv())
            .await
            .expect("a reset within twice the bound")
            .unwrap();
        assert_eq!(change.kind, ChangeKind::Reset);
        assert!(at - cut >= STALE_AFTER, "reset after {:?}", at - cut);
    }
}
