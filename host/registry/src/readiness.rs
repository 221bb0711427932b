//! Readiness: whether this process can serve calls now — the database answers, the trust
//! set is read, the object store answers — each check bounded in time. Servers answer it
//! on `GET /readyz`, apart from `GET /healthz` (the process is alive).

use std::future::Future;
use std::time::Duration;

use serde::Serialize;

use crate::{Registry, RegistryError};

/// Longest time one readiness check may take before it counts as failing.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The outcome of one check, as answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// It answered.
    Ok,
    /// It failed or did not answer in time (the operator's log has the detail).
    Failing,
}

/// The readiness of the registry as one process sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Readiness {
    /// The database answers a query.
    pub database: Check,
    /// The trusted publisher keys could be read.
    pub trust_set: Check,
    /// The object store answers a listing.
    pub object_store: Check,
}

impl Readiness {
    /// Whether every check passed.
    pub fn is_ready(&self) -> bool {
        [self.database, self.trust_set, self.object_store]
            .iter()
            .all(|check| *check == Check::Ok)
    }
}

impl Registry {
    /// Runs the readiness checks at once, each within [`CHECK_TIMEOUT`]; a failing one is
    /// logged with its error.
    pub async fn readiness(&self) -> Readiness {
        let (database, trust_set, object_store) = tokio::join!(
            check("database", async {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }),
            check("trust_set", async { self.trust_set().await.map(drop) }),
            check("object_store", self.objects.check_reachable()),
        );
        Readiness {
            database,
            trust_set,
            object_store,
        }
    }
}

async fn check(name: &'static str, work: impl Future<Output = Result<(), RegistryError>>) -> Check {
    match tokio::time::timeout(CHECK_TIMEOUT, work).await {
        Ok(Ok(())) => Check::Ok,
        Ok(Err(error)) => {
            tracing::warn!(check = name, %error, "readiness check failed");
            Check::Failing
        }
        Err(_) => {
            tracing::warn!(check = name, timeout = ?CHECK_TIMEOUT, "readiness check timed out");
            Check::Failing
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::open_registry;

    #[tokio::test]
    async fn a_working_registry_is_ready_and_a_missing_object_store_is_not() {
        let (dir, registry) = open_registry().await;
        let readiness = registry.readiness().await;
        assert!(readiness.is_ready(), "{readiness:?}");
        // The objects directory replaced by a file: that check fails, the others pass.
        let objects = dir.path().join("objects");
        std::fs::remove_dir_all(&objects).unwrap();
        std::fs::write(&objects, b"not a directory").unwrap();
        let readiness = registry.readiness().await;
        assert_eq!(readiness.object_store, Check::Failing, "{readiness:?}");
        assert_eq!(readiness.database, Check::Ok);
        assert!(!readiness.is_ready());
        assert_eq!(
            serde_json::to_value(readiness).unwrap(),
            serde_json::json!({"database": "ok", "trust_set": "ok", "object_store": "failing"})
        );
    }
}
