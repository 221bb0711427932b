//! The admin-token check in front of every admin route, and the scoped credentials some
//! routes also accept (`palisade credentials add --scope events` for publishing events).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::AUTHORIZATION;
use sha2::{Digest, Sha256};

use palisade_protocol::cache::TtlCache;
use palisade_registry::CredentialScope;

use super::error::{AdminError, AdminErrorCode};
use crate::GatewayState;
use crate::headers;

/// How long a credential lookup (found or not) is reused: a removed credential stops
/// working within this time on every gateway.
pub const CREDENTIAL_CACHE_TTL: Duration = Duration::from_secs(5);

/// Credential lookups, by the token's SHA-256.
pub(crate) type CredentialCache = TtlCache<[u8; 32], Option<CredentialScope>>;

/// A new, empty credential cache.
pub(crate) fn credential_cache() -> CredentialCache {
    TtlCache::new(4096)
}

/// The guard of one admin route: the admin token, or a credential of `scope`.
#[derive(Clone)]
pub(super) struct Guard {
    pub state: Arc<GatewayState>,
    pub scope: Option<CredentialScope>,
}

/// Whether `presented` equals `expected`, in time independent of where they differ: both
/// are hashed to SHA-256 first (so their lengths do not matter either) and the digests
/// compared without an early exit.
pub fn tokens_match(presented: &[u8], expected: &[u8]) -> bool {
    let a = Sha256::digest(presented);
    let b = Sha256::digest(expected);
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Lets the request through when it carries `authorization: Bearer <admin token>`, or a
/// credential of the route's scope; answers 401 otherwise.
pub(super) async fn require_admin(
    State(guard): State<Guard>,
    request: Request,
    next: Next,
) -> Response {
    let state = &guard.state;
    let request_id = headers::request_id(request.headers());
    let Some(expected) = state.config.admin_token.as_deref() else {
        return AdminError::new(AdminErrorCode::NotFound, request_id).into_response();
    };
    let Some(token) = presented_token(&request) else {
        return AdminError::new(AdminErrorCode::Unauthorized, request_id)
            .message("the admin API needs a single `authorization: Bearer <admin token>` header")
            .into_response();
    };
    if tokens_match(token.as_bytes(), expected.as_bytes()) {
        return next.run(request).await;
    }
    if let Some(scope) = guard.scope {
        match credential_scope(state, token).await {
            Ok(Some(granted)) if granted == scope => return next.run(request).await,
            Ok(_) => {}
            Err(error) => {
                tracing::error!(%request_id, %error, "reading admin credentials failed");
                return AdminError::new(AdminErrorCode::Unavailable, request_id).into_response();
            }
        }
    }
    let message = match guard.scope {
        Some(scope) => format!(
            "neither the admin token nor a credential of scope `{}` is valid here",
            scope.as_str()
        ),
        None => "the admin token is not valid".to_owned(),
    };
    AdminError::new(AdminErrorCode::Unauthorized, request_id)
        .message(message)
        .into_response()
}

/// The scope of the credential `token`, from the cache or the registry.
async fn credential_scope(
    state: &GatewayState,
    token: &str,
) -> Result<Option<CredentialScope>, palisade_registry::RegistryError> {
    let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let now = Instant::now();
    if let Some(scope) = state.credentials.get(&key, now) {
        return Ok(scope);
    }
    let scope = state.registry.credential_scope(token).await?;
    state
        .credentials
        .insert(key, scope, now + CREDENTIAL_CACHE_TTL, now);
    Ok(scope)
}

/// The token of a single `authorization: Bearer <token>` header.
fn presented_token(request: &Request) -> Option<&str> {
    let mut values = request.headers().get_all(AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let (scheme, token) = value.to_str().ok()?.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_tokens_match_and_others_do_not() {
        assert!(tokens_match(b"secret-token", b"secret-token"));
        assert!(!tokens_match(b"secret-token", b"secret-tokem"));
        assert!(!tokens_match(b"secret", b"secret-token"));
        assert!(!tokens_match(b"", b"secret-token"));
    }
}
