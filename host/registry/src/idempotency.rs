//! Answers kept for idempotent replay (`idempotent_answer`), shared by every gateway of a
//! platform: the gateway that ran a keyed call stores its answer here, and any gateway
//! answers a repeat from it until it expires.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sqlx::Row;

use crate::Registry;
use crate::error::RegistryError;

/// A stored answer and the request it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotentAnswer {
    /// SHA-256 (hex) of the request a repeat must match.
    pub fingerprint: String,
    /// The guest's status.
    pub status: u16,
    /// The guest's headers, in order, as (name, value bytes).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The guest's body.
    pub body: Vec<u8>,
    /// The endpoint template the call matched, for the execution log of replays.
    pub template: Option<String>,
    /// When the answer stops being replayed (unix epoch milliseconds).
    pub expires_at_ms: i64,
}

/// Where an answer is kept: the tenant, the extension and the key.
#[derive(Debug, Clone, Copy)]
pub struct AnswerScope<'a> {
    /// The calling tenant.
    pub tenant_id: &'a str,
    /// The extension called.
    pub extension_id: &'a str,
    /// The caller's `x-idempotency-key`.
    pub key: &'a str,
}

impl Registry {
    /// The answer kept for `scope`, unless there is none or it expired before `now_ms`.
    pub async fn idempotent_answer(
        &self,
        scope: AnswerScope<'_>,
        now_ms: i64,
    ) -> Result<Option<IdempotentAnswer>, RegistryError> {
        let row = sqlx::query(
            "SELECT fingerprint, status, headers_json, body, template, expires_at \
             FROM idempotent_answer \
             WHERE tenant_id = $1 AND extension_id = $2 AND idem_key = $3 AND expires_at > $4",
        )
        .bind(scope.tenant_id)
        .bind(scope.extension_id)
        .bind(scope.key)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let headers_json: String = row.try_get("headers_json")?;
        let corrupt = |reason: String| {
            RegistryError::corrupt("idempotent_answer", "headers_json", scope.key, reason)
        };
        let pairs: Vec<(String, String)> =
            serde_json::from_str(&headers_json).map_err(|e| corrupt(e.to_string()))?;
        let headers = pairs
            .into_iter()
            .map(|(name, value)| {
                STANDARD
                    .decode(value)
                    .map(|value| (name, value))
                    .map_err(|e| corrupt(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        let status: i32 = row.try_get("status")?;
        Ok(Some(IdempotentAnswer {
            fingerprint: row.try_get("fingerprint")?,
            status: u16::try_from(status)
                .map_err(|e| RegistryError::corrupt("idempotent_answer", "status", scope.key, e))?,
            headers,
            body: row.try_get("body")?,
            template: row.try_get("template")?,
            expires_at_ms: row.try_get("expires_at")?,
        }))
    }

    /// Keeps `answer` for `scope` unless an unexpired one is kept already (the first answer
    /// stays); returns whether it was kept. The tenant's expired answers are deleted, and
    /// beyond `max_per_tenant` answers its oldest go.
    pub async fn keep_idempotent_answer(
        &self,
        scope: AnswerScope<'_>,
        answer: &IdempotentAnswer,
        now_ms: i64,
        max_per_tenant: usize,
    ) -> Result<bool, RegistryError> {
        let pairs: Vec<(&str, String)> = answer
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), STANDARD.encode(value)))
            .collect();
        let headers_json =
            serde_json::to_string(&pairs).map_err(|source| RegistryError::Encode {
                what: "answer headers",
                source,
            })?;
        let _turn = self.write_turn().await;
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM idempotent_answer WHERE tenant_id = $1 AND expires_at <= $2")
            .bind(scope.tenant_id)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        let kept = sqlx::query(
            "INSERT INTO idempotent_answer (tenant_id, extension_id, idem_key, fingerprint, \
             status, headers_json, body, template, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (tenant_id, extension_id, idem_key) DO NOTHING",
        )
        .bind(scope.tenant_id)
        .bind(scope.extension_id)
        .bind(scope.key)
        .bind(&answer.fingerprint)
        .bind(i32::from(answer.status))
        .bind(headers_json)
        .bind(&answer.body)
        .bind(answer.template.as_deref())
        .bind(now_ms)
        .bind(answer.expires_at_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        // Past the tenant's bound, its oldest answers go.
        let offset = i64::try_from(max_per_tenant).unwrap_or(i64::MAX);
        let cutoff: Option<i64> = sqlx::query_scalar(
            "SELECT created_at FROM idempotent_answer WHERE tenant_id = $1 \
             ORDER BY created_at DESC LIMIT 1 OFFSET $2",
        )
        .bind(scope.tenant_id)
        .bind(offset)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(cutoff) = cutoff {
            sqlx::query("DELETE FROM idempotent_answer WHERE tenant_id = $1 AND created_at <= $2")
                .bind(scope.tenant_id)
                .bind(cutoff)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::open_registry;

    fn answer(fingerprint: &str, expires_at_ms: i64) -> IdempotentAnswer {
        IdempotentAnswer {
            fingerprint: fingerprint.to_owned(),
            status: 201,
            headers: vec![
                ("content-type".into(), b"application/json".to_vec()),
                ("x-bytes".into(), vec![0xff, 0x00, b'a']),
            ],
            body: b"{\"id\":7}".to_vec(),
            template: Some("/items".into()),
            expires_at_ms,
        }
    }

    fn scope(key: &str) -> AnswerScope<'_> {
        AnswerScope {
            tenant_id: "acme",
            extension_id: "com.example.x",
            key,
        }
    }

    #[tokio::test]
    async fn the_first_answer_is_kept_until_it_expires() {
        let (_dir, registry) = open_registry().await;
        let first = answer("f1", 1_000);
        assert!(
            registry
                .keep_idempotent_answer(scope("k"), &first, 10, 100)
                .await
                .unwrap()
        );
        // A second answer for the key does not replace the first.
        assert!(
            !registry
                .keep_idempotent_answer(scope("k"), &answer("f2", 1_000), 20, 100)
                .await
                .unwrap()
        );
        assert_eq!(
            registry.idempotent_answer(scope("k"), 500).await.unwrap(),
            Some(first)
        );
        assert_eq!(
            registry.idempotent_answer(scope("k"), 1_000).await.unwrap(),
            None
        );
        let other = AnswerScope {
            extension_id: "com.example.other",
            ..scope("k")
        };
        assert_eq!(registry.idempotent_answer(other, 500).await.unwrap(), None);
        // Once expired, the key takes a new answer.
        assert!(
            registry
                .keep_idempotent_answer(scope("k"), &answer("f3", 5_000), 2_000, 100)
                .await
                .unwrap()
        );
        let kept = registry.idempotent_answer(scope("k"), 2_500).await.unwrap();
        assert_eq!(kept.unwrap().fingerprint, "f3");
    }

    #[tokio::test]
    async fn a_tenant_keeps_at_most_its_bound_newest_first() {
        let (_dir, registry) = open_registry().await;
        for n in 0..5 {
            let key = format!("k{n}");
            registry
                .keep_idempotent_answer(scope(&key), &answer("f", 10_000), n, 3)
                .await
                .unwrap();
        }
        for (n, kept) in [(0, false), (1, false), (2, true), (3, true), (4, true)] {
            let key = format!("k{n}");
            let found = registry.idempotent_answer(scope(&key), 100).await.unwrap();
            assert_eq!(found.is_some(), kept, "k{n}");
        }
    }
}
