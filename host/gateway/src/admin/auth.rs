//! The admin-token check in front of every admin route.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::AUTHORIZATION;
use sha2::{Digest, Sha256};

use super::error::{AdminError, AdminErrorCode};
use crate::GatewayState;
use crate::headers;

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

/// Lets the request through when it carries `authorization: Bearer <admin token>`;
/// answers 401 otherwise.
pub(super) async fn require_admin(
    State(state): State<Arc<GatewayState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = state.config.admin_token.as_deref() else {
        let request_id = headers::request_id(request.headers());
        return AdminError::new(AdminErrorCode::NotFound, request_id).into_response();
    };
    match presented_token(&request) {
        Some(token) if tokens_match(token.as_bytes(), expected.as_bytes()) => {
            next.run(request).await
        }
        presented => {
            let request_id = headers::request_id(request.headers());
            let message = if presented.is_none() {
                "the admin API needs a single `authorization: Bearer <admin token>` header"
            } else {
                "the admin token is not valid"
            };
            AdminError::new(AdminErrorCode::Unauthorized, request_id)
                .message(message)
                .into_response()
        }
    }
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
