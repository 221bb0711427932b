//! Service tokens: short-lived EdDSA JWTs minted by the gateway and checked by the runner.
//!
//! A token is bound to one [`TokenScope`] (tenant, extension, install, content hash). The
//! gateway reuses a token per scope until shortly before it expires; the runner caches
//! verified tokens, so neither side repeats signature work per call. The runner holds only
//! the public key.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

const ISSUER: &str = "palisade-gateway";
const AUDIENCE: &str = "palisade-runner";
/// How long a minted token is valid.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(300);
/// A cached token is replaced this long before it expires.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Bound on the number of cached tokens on either side.
const CACHE_CAPACITY: usize = 16_384;

/// What a token authorises: calls for one install of one extension at one content hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenScope {
    /// The tenant.
    pub tenant_id: String,
    /// The extension id.
    pub extension_id: String,
    /// The install id.
    pub install_id: String,
    /// `sha256:<hex>` of the bundle.
    pub content_hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    iat: u64,
    exp: u64,
    #[serde(flatten)]
    scope: TokenScope,
}

/// Why a service token was refused or could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// No token was presented.
    #[error("service token missing")]
    Missing,
    /// The token is malformed, badly signed, expired or for another audience.
    #[error("service token invalid: {0}")]
    Invalid(#[source] jsonwebtoken::errors::Error),
    /// The token is valid but for another tenant, extension, install or content hash.
    #[error("service token scope does not match the request ({field} differs)")]
    ScopeMismatch {
        /// The first field that differs.
        field: &'static str,
    },
    /// A key could not be read or written.
    #[error("service key: {0}")]
    Key(String),
}

/// An Ed25519 key pair for service tokens, as PKCS#8 / SPKI PEM.
#[derive(Clone)]
pub struct ServiceKeyPair {
    /// Private key, PKCS#8 PEM (the gateway's).
    pub private_pem: String,
    /// Public key, SPKI PEM (the runners').
    pub public_pem: String,
}

impl std::fmt::Debug for ServiceKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceKeyPair")
            .field("public_pem", &self.public_pem)
            .finish_non_exhaustive()
    }
}

impl ServiceKeyPair {
    /// Generates a fresh key pair from the operating system's random source.
    pub fn generate() -> Result<Self, TokenError> {
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let private_pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| TokenError::Key(e.to_string()))?
            .to_string();
        let public_pem = key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| TokenError::Key(e.to_string()))?;
        Ok(ServiceKeyPair {
            private_pem,
            public_pem,
        })
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Mints service tokens (gateway side), reusing one per scope while it is fresh.
pub struct TokenMinter {
    key: EncodingKey,
    cache: Mutex<HashMap<TokenScope, (String, u64)>>,
}

impl TokenMinter {
    /// Reads the private key (PKCS#8 PEM).
    pub fn from_pem(private_pem: &[u8]) -> Result<Self, TokenError> {
        let key = EncodingKey::from_ed_pem(private_pem).map_err(TokenError::Invalid)?;
        Ok(TokenMinter {
            key,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Returns a token for `scope`, minting a new one only when the cached one is near expiry.
    pub fn token(&self, scope: &TokenScope) -> Result<String, TokenError> {
        let now = now();
        if let Ok(cache) = self.cache.lock()
            && let Some((token, exp)) = cache.get(scope)
            && *exp > now + REFRESH_MARGIN.as_secs()
        {
            return Ok(token.clone());
        }
        let exp = now + TOKEN_LIFETIME.as_secs();
        let token = self.mint(scope, now, exp)?;
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_CAPACITY {
                cache.retain(|_, (_, e)| *e > now + REFRESH_MARGIN.as_secs());
                if cache.len() >= CACHE_CAPACITY {
                    cache.clear();
                }
            }
            cache.insert(scope.clone(), (token.clone(), exp));
        }
        Ok(token)
    }

    /// Mints a token with explicit issue and expiry times (seconds since the epoch).
    pub fn mint(&self, scope: &TokenScope, iat: u64, exp: u64) -> Result<String, TokenError> {
        let claims = Claims {
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            iat,
            exp,
            scope: scope.clone(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &self.key)
            .map_err(TokenError::Invalid)
    }
}

/// Verifies service tokens (runner side), caching tokens that verified until they expire.
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
    cache: Mutex<HashMap<String, Claims>>,
}

impl TokenVerifier {
    /// Reads the public key (SPKI PEM).
    pub fn from_pem(public_pem: &[u8]) -> Result<Self, TokenError> {
        let key = DecodingKey::from_ed_pem(public_pem).map_err(TokenError::Invalid)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = 5;
        Ok(TokenVerifier {
            key,
            validation,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Checks `token` and that it was issued for exactly `expected`.
    pub fn verify(&self, token: &str, expected: &TokenScope) -> Result<(), TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        let now = now();
        let cached = self
            .cache
            .lock()
            .ok()
            .and_then(|c| c.get(token).cloned())
            .filter(|claims| claims.exp > now);
        let claims = match cached {
            Some(claims) => claims,
            None => {
                let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
                    .map_err(TokenError::Invalid)?;
                if let Ok(mut cache) = self.cache.lock() {
                    if cache.len() >= CACHE_CAPACITY {
                        cache.retain(|_, c| c.exp > now);
                        if cache.len() >= CACHE_CAPACITY {
                            cache.clear();
                        }
                    }
                    cache.insert(token.to_owned(), data.claims.clone());
                }
                data.claims
            }
        };
        check_scope(&claims.scope, expected)
    }
}

fn check_scope(got: &TokenScope, expected: &TokenScope) -> Result<(), TokenError> {
    let field = if got.tenant_id != expected.tenant_id {
        "tenant_id"
    } else if got.extension_id != expected.extension_id {
        "extension_id"
    } else if got.install_id != expected.install_id {
        "install_id"
    } else if got.content_hash != expected.content_hash {
        "content_hash"
    } else {
        return Ok(());
    };
    Err(TokenError::ScopeMismatch { field })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> TokenScope {
        TokenScope {
            tenant_id: "acme".into(),
            extension_id: "com.example.hello".into(),
            install_id: "i-1".into(),
            content_hash: "sha256:00".into(),
        }
    }

    fn pair() -> (TokenMinter, TokenVerifier) {
        let keys = ServiceKeyPair::generate().unwrap();
        (
            TokenMinter::from_pem(keys.private_pem.as_bytes()).unwrap(),
            TokenVerifier::from_pem(keys.public_pem.as_bytes()).unwrap(),
        )
    }

    #[test]
    fn minted_token_verifies_and_is_reused() {
        let (minter, verifier) = pair();
        let t1 = minter.token(&scope()).unwrap();
        let t2 = minter.token(&scope()).unwrap();
        assert_eq!(t1, t2);
        verifier.verify(&t1, &scope()).unwrap();
        verifier.verify(&t1, &scope()).unwrap();
    }

    #[test]
    fn scope_mismatch_names_the_field() {
        let (minter, verifier) = pair();
        let token = minter.token(&scope()).unwrap();
        let mut other = scope();
        other.content_hash = "sha256:11".into();
        let err = verifier.verify(&token, &other).unwrap_err();
        assert!(err.to_string().contains("content_hash"), "{err}");
    }

    #[test]
    fn forged_and_expired_tokens_are_refused() {
        let (minter, _) = pair();
        let (_, other_verifier) = pair();
        let token = minter.token(&scope()).unwrap();
        assert!(matches!(
            other_verifier.verify(&token, &scope()),
            Err(TokenError::Invalid(_))
        ));
        let (minter, verifier) = pair();
        let expired = minter.mint(&scope(), now() - 600, now() - 300).unwrap();
        assert!(matches!(
            verifier.verify(&expired, &scope()),
            Err(TokenError::Invalid(_))
        ));
        assert!(matches!(
            verifier.verify("", &scope()),
            Err(TokenError::Missing)
        ));
        assert!(verifier.verify("not.a.jwt", &scope()).is_err());
    }
}
