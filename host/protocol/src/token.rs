//! Service tokens: short-lived EdDSA JWTs minted by the gateway and checked by the runner.
//!
//! A token is bound to one [`TokenScope`] (tenant, extension, install, content hash). The
//! gateway reuses a token per scope until half of its lifetime has passed; the runner caches
//! verified tokens until they expire, so neither side repeats signature work per call. The
//! runner holds only the public key.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::cache::TtlCache;

const ISSUER: &str = "palisade-gateway";
const AUDIENCE: &str = "palisade-runner";
/// How long a minted token is valid.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(300);
/// A cached token is replaced once this much of its lifetime has passed: half of it, so a
/// runner always receives a token with plenty of time left, whatever the clock skew.
const REFRESH_AFTER: Duration = Duration::from_secs(TOKEN_LIFETIME.as_secs() / 2);
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

/// A token the minter reuses for its scope.
#[derive(Clone)]
struct Minted {
    token: Arc<str>,
    /// When (seconds since the epoch) a new token replaces it.
    refresh_at: u64,
}

/// Mints service tokens (gateway side), reusing one per scope while it is fresh.
pub struct TokenMinter {
    key: EncodingKey,
    cache: TtlCache<TokenScope, Minted>,
}

impl TokenMinter {
    /// Reads the private key (PKCS#8 PEM).
    pub fn from_pem(private_pem: &[u8]) -> Result<Self, TokenError> {
        let key = EncodingKey::from_ed_pem(private_pem).map_err(TokenError::Invalid)?;
        Ok(TokenMinter {
            key,
            cache: TtlCache::new(CACHE_CAPACITY),
        })
    }

    /// Returns a token for `scope`: the cached one until half of its lifetime has passed,
    /// then a newly minted one.
    pub fn token(&self, scope: &TokenScope) -> Result<Arc<str>, TokenError> {
        self.token_at(scope, now())
    }

    /// [`token`](Self::token) at `now` (seconds since the epoch).
    fn token_at(&self, scope: &TokenScope, now: u64) -> Result<Arc<str>, TokenError> {
        // The entry lapses after `REFRESH_AFTER` on the monotonic clock; `refresh_at` is the
        // same moment on the wall clock the token's own times use, and decides reuse.
        let instant = Instant::now();
        if let Some(minted) = self.cache.get(scope, instant)
            && now < minted.refresh_at
        {
            return Ok(minted.token);
        }
        let token: Arc<str> = self
            .mint(scope, now, now + TOKEN_LIFETIME.as_secs())?
            .into();
        let minted = Minted {
            token: Arc::clone(&token),
            refresh_at: now + REFRESH_AFTER.as_secs(),
        };
        self.cache
            .insert(scope.clone(), minted, instant + REFRESH_AFTER, instant);
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

/// What a token that verified says.
struct Verified {
    scope: TokenScope,
    /// Its `exp` (seconds since the epoch); the cache never answers for it at or after.
    exp: u64,
}

/// Verifies service tokens (runner side), caching tokens that verified until they expire.
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
    cache: TtlCache<Box<str>, Arc<Verified>>,
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
            cache: TtlCache::new(CACHE_CAPACITY),
        })
    }

    /// Checks `token` and that it was issued for exactly `expected`. A token that verified
    /// before is answered from the cache until its `exp` (the signature check alone allows
    /// a few seconds of clock skew beyond it); its scope is compared on every call.
    pub fn verify(&self, token: &str, expected: &TokenScope) -> Result<(), TokenError> {
        self.verify_at(token, expected, now())
    }

    /// [`verify`](Self::verify) at `now` (seconds since the epoch).
    fn verify_at(&self, token: &str, expected: &TokenScope, now: u64) -> Result<(), TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        // The entry lapses at `exp` on the monotonic clock too, which bounds the cache;
        // the wall clock, which `exp` is read on, decides whether it answers.
        let instant = Instant::now();
        if let Some(verified) = self.cache.get(token, instant)
            && now < verified.exp
        {
            return check_scope(&verified.scope, expected);
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(TokenError::Invalid)?
            .claims;
        let result = check_scope(&claims.scope, expected);
        // A token past its `exp` (within the leeway) is accepted but never cached.
        if now < claims.exp
            && let Some(expires) = instant.checked_add(Duration::from_secs(claims.exp - now))
        {
            let verified = Verified {
                scope: claims.scope,
                exp: claims.exp,
            };
            self.cache
                .insert(token.into(), Arc::new(verified), expires, instant);
        }
        result
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
    fn a_token_is_replaced_after_half_its_lifetime() {
        let (minter, verifier) = pair();
        let t0 = now();
        let first = minter.token_at(&scope(), t0).unwrap();
        let half = REFRESH_AFTER.as_secs();
        assert_eq!(minter.token_at(&scope(), t0 + half - 1).unwrap(), first);
        let second = minter.token_at(&scope(), t0 + half).unwrap();
        assert_ne!(second, first);
        assert_eq!(minter.token_at(&scope(), t0 + half + 1).unwrap(), second);
        // Each scope has its own token.
        let mut other = scope();
        other.install_id = "i-2".into();
        assert_ne!(minter.token_at(&other, t0 + half).unwrap(), second);
        verifier.verify(&second, &scope()).unwrap();
    }

    #[test]
    fn the_verifier_answers_from_its_cache_only_before_exp() {
        let (_, verifier) = pair();
        let t0 = now();
        // An entry as a verified token leaves it: the cache answers without a signature.
        let instant = Instant::now();
        verifier.cache.insert(
            "cached-token".into(),
            Arc::new(Verified {
                scope: scope(),
                exp: t0 + 60,
            }),
            instant + Duration::from_secs(600),
            instant,
        );
        verifier.verify_at("cached-token", &scope(), t0).unwrap();
        let mut other = scope();
        other.tenant_id = "globex".into();
        assert!(matches!(
            verifier.verify_at("cached-token", &other, t0),
            Err(TokenError::ScopeMismatch { field: "tenant_id" })
        ));
        // At its `exp` the entry is no longer used: the token is checked again, and fails.
        assert!(matches!(
            verifier.verify_at("cached-token", &scope(), t0 + 60),
            Err(TokenError::Invalid(_))
        ));
    }

    #[test]
    fn verified_tokens_are_cached_and_failures_are_not() {
        let (minter, verifier) = pair();
        let token = minter.token(&scope()).unwrap();
        verifier.verify(&token, &scope()).unwrap();
        assert_eq!(verifier.cache.len(), 1);
        assert!(verifier.verify("not.a.jwt", &scope()).is_err());
        assert_eq!(verifier.cache.len(), 1);
    }

    #[test]
    fn the_caches_are_bounded() {
        let (mut minter, mut verifier) = pair();
        minter.cache = TtlCache::new(8);
        verifier.cache = TtlCache::new(8);
        let scopes: Vec<TokenScope> = (0..100)
            .map(|i| TokenScope {
                install_id: format!("i-{i}"),
                ..scope()
            })
            .collect();
        let mut last = None;
        for scope in &scopes {
            let token = minter.token(scope).unwrap();
            verifier.verify(&token, scope).unwrap();
            assert!(minter.cache.len() <= 8, "{}", minter.cache.len());
            assert!(verifier.cache.len() <= 8, "{}", verifier.cache.len());
            last = Some(token);
        }
        // The newest entry is kept: its token is reused.
        let last = last.unwrap();
        assert_eq!(minter.token(&scopes[99]).unwrap(), last);
        assert!(verifier.cache.get(&*last, Instant::now()).is_some());
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
