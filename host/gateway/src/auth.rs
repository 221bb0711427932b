//! Caller authentication: a bearer JWT signed by the operator's identity provider carries
//! the caller's tenant and user.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use http::header::AUTHORIZATION;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, EncodingKey, Header, Validation};
use palisade_protocol::TtlCache;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::config::CallerAuthConfig;
use crate::jwks::{KeyError, KeySet};

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The tenant the caller acts for.
    pub tenant_id: String,
    /// The caller's user, when the token names one.
    pub user_id: Option<String>,
}

/// Why a caller was refused, or a key or token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `authorization` header.
    #[error("no authorization header")]
    Missing,
    /// The header is not a single `Bearer <token>`.
    #[error("authorization header is not a single `Bearer <token>`")]
    NotBearer,
    /// The token is malformed, badly signed, expired, not yet valid, or for another
    /// issuer or audience.
    #[error("caller token invalid: {0}")]
    Invalid(#[source] jsonwebtoken::errors::Error),
    /// The token lacks the tenant claim or it is not a non-empty string.
    #[error("caller token claim `{claim}` must be a non-empty string")]
    BadClaim {
        /// The claim's name.
        claim: String,
    },
    /// No configured key has the token's algorithm (and `kid`, when it names one).
    #[error("caller token: no configured key for algorithm {algorithm} and kid {kid:?}")]
    NoKey {
        /// The token's `alg`.
        algorithm: String,
        /// The token's `kid`, if any.
        kid: Option<String>,
    },
    /// The configured verification keys could not be loaded.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// A signing key (of [`mint_dev_token`]) could not be read.
    #[error("caller token signing key: {0}")]
    Key(#[source] jsonwebtoken::errors::Error),
    /// A token could not be signed.
    #[error("signing caller token: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

/// A caller whose token verified, with the token's validity window.
#[derive(Debug, Clone)]
struct VerifiedCaller {
    caller: Caller,
    /// The token's `exp` (seconds since the epoch); 0 when it is not a whole number, which
    /// keeps the token out of the cache.
    exp: u64,
    /// The token's `nbf`, if it has one.
    nbf: Option<u64>,
}

impl VerifiedCaller {
    /// Whether the token may be taken from the cache at `now` (seconds since the epoch):
    /// strictly before its `exp` — validation would accept it up to [`LEEWAY_SECS`] later —
    /// and no earlier than validation accepts its `nbf`.
    fn usable_at(&self, now: u64) -> bool {
        now < self.exp
            && self
                .nbf
                .is_none_or(|nbf| nbf <= now.saturating_add(LEEWAY_SECS))
    }
}

/// Checks caller tokens against the operator's configuration.
pub struct CallerAuth {
    keys: KeySet,
    issuer: String,
    audience: String,
    tenant_claim: String,
    user_claim: String,
    /// Callers of tokens that verified, by the token's SHA-256 (so the cache holds no
    /// credentials and its memory does not grow with token size); `None`: caching is off.
    verified: Option<TtlCache<[u8; 32], VerifiedCaller>>,
    /// Longest time an entry of `verified` is used.
    verified_ttl: Duration,
}

impl std::fmt::Debug for CallerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerAuth")
            .field("keys", &self.keys)
            .field("tenant_claim", &self.tenant_claim)
            .field("user_claim", &self.user_claim)
            .finish_non_exhaustive()
    }
}

impl CallerAuth {
    /// Reads the configured keys (and JWKS file) and prepares validation.
    pub fn new(config: &CallerAuthConfig) -> Result<Self, AuthError> {
        let keys = KeySet::load(&config.keys, config.jwks_path.as_deref())?;
        let caching = !config.cache_ttl.is_zero() && config.cache_capacity > 0;
        Ok(CallerAuth {
            keys,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            tenant_claim: config.tenant_claim.clone(),
            user_claim: config.user_claim.clone(),
            verified: caching.then(|| TtlCache::new(config.cache_capacity)),
            verified_ttl: config.cache_ttl,
        })
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        validation
    }

    /// Verifies `token` with the keys of its algorithm (only those with its `kid` when it
    /// names one) and returns its claims.
    fn verify(&self, token: &str) -> Result<Map<String, Value>, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(AuthError::Invalid)?;
        let validation = self.validation(header.alg);
        let mut last = None;
        for key in self.keys.candidates(header.alg, header.kid.as_deref()) {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
                Ok(data) => return Ok(data.claims),
                // Another key of the same algorithm may have signed it.
                Err(err) if matches!(err.kind(), ErrorKind::InvalidSignature) => last = Some(err),
                Err(err) => return Err(AuthError::Invalid(err)),
            }
        }
        Err(match last {
            Some(err) => AuthError::Invalid(err),
            None => AuthError::NoKey {
                algorithm: format!("{:?}", header.alg),
                kid: header.kid,
            },
        })
    }

    /// Authenticates the caller from `authorization: Bearer <jwt>`. A token that verified
    /// before is answered from the cache until its `exp` and for at most
    /// [`CallerAuthConfig::cache_ttl`]; refusals are never cached.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, AuthError> {
        self.authenticate_at(
            headers,
            Instant::now(),
            jsonwebtoken::get_current_timestamp(),
        )
    }

    /// [`authenticate`](Self::authenticate) with the cache read at `now` (monotonic) and
    /// `unix` (seconds since the epoch, the clock token claims use).
    fn authenticate_at(
        &self,
        headers: &HeaderMap,
        now: Instant,
        unix: u64,
    ) -> Result<Caller, AuthError> {
        let token = bearer_token(headers)?;
        let Some(cache) = &self.verified else {
            return self.verify_caller(token).map(|verified| verified.caller);
        };
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(hit) = cache.get(&key, now)
            && hit.usable_at(unix)
        {
            return Ok(hit.caller);
        }
        let verified = self.verify_caller(token)?;
        if verified.usable_at(unix)
            && let Some(expires) =
                now.checked_add(Duration::from_secs(verified.exp - unix).min(self.verified_ttl))
        {
            cache.insert(key, verified.clone(), expires, now);
        }
        Ok(verified.caller)
    }

    /// Verifies `token` and reads the caller and the validity window from its claims.
    fn verify_caller(&self, token: &str) -> Result<VerifiedCaller, AuthError> {
        let claims = self.verify(token)?;
        let tenant_id = match claims.get(&self.tenant_claim) {
            Some(Value::String(tenant)) if !tenant.is_empty() => tenant.clone(),
            _ => {
                return Err(AuthError::BadClaim {
                    claim: self.tenant_claim.clone(),
                });
            }
        };
        let user_id = match claims.get(&self.user_claim) {
            None | Some(Value::Null) => None,
            Some(Value::String(user)) if !user.is_empty() => Some(user.clone()),
            Some(_) => {
                return Err(AuthError::BadClaim {
                    claim: self.user_claim.clone(),
                });
            }
        };
        let exp = claims.get("exp").and_then(Value::as_u64);
        let nbf = match claims.get("nbf") {
            None => Some(None),
            Some(nbf) => nbf.as_u64().map(Some),
        };
        // Times that are not whole numbers (validation may take them) are not cached.
        let (exp, nbf) = match (exp, nbf) {
            (Some(exp), Some(nbf)) => (exp, nbf),
            _ => (0, None),
        };
        Ok(VerifiedCaller {
            caller: Caller { tenant_id, user_id },
            exp,
            nbf,
        })
    }

    /// How many verified tokens are cached.
    pub fn cached_tokens(&self) -> usize {
        self.verified.as_ref().map_or(0, TtlCache::len)
    }
}

impl AuthError {
    /// The `www-authenticate` value answering this refusal (RFC 6750 §3): a bare
    /// challenge when no token was sent, `error="invalid_token"` otherwise.
    pub fn challenge(&self) -> &'static str {
        match self {
            AuthError::Missing => "Bearer",
            AuthError::NotBearer => "Bearer error=\"invalid_request\"",
            _ => "Bearer error=\"invalid_token\"",
        }
    }
}

/// Extracts the token of the single `authorization: Bearer <token>` header.
fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or(AuthError::Missing)?;
    if values.next().is_some() {
        return Err(AuthError::NotBearer);
    }
    let value = value.to_str().map_err(|_| AuthError::NotBearer)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::NotBearer)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::NotBearer);
    }
    Ok(token)
}

/// Mints a caller token for development and tests: EdDSA-signed with `private_pem`
/// (Ed25519, PKCS#8 PEM), carrying `iss`, `aud`, `sub` = `user`, `tenant`, `iat` and `exp`
/// = now + `ttl`.
pub fn mint_dev_token(
    private_pem: &[u8],
    issuer: &str,
    audience: &str,
    tenant: &str,
    user: &str,
    ttl: Duration,
) -> Result<String, AuthError> {
    let key = EncodingKey::from_ed_pem(private_pem).map_err(AuthError::Key)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = serde_json::json!({
        "iss": issuer,
        "aud": audience,
        "sub": user,
        "tenant": tenant,
        "iat": now,
        "exp": now.saturating_add(ttl.as_secs()),
    });
    jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &key).map_err(AuthError::Sign)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use palisade_protocol::ServiceKeyPair;

    const ISS: &str = "https://idp.example";
    const AUD: &str = "palisade";

    fn setup() -> (ServiceKeyPair, CallerAuth) {
        let keys = ServiceKeyPair::generate().unwrap();
        let auth =
            CallerAuth::new(&CallerAuthConfig::new(ISS, AUD, keys.public_pem.clone())).unwrap();
        (keys, auth)
    }

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    fn sign(keys: &ServiceKeyPair, claims: Value) -> String {
        let key = EncodingKey::from_ed_pem(keys.private_pem.as_bytes()).unwrap();
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &key).unwrap()
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    #[test]
    fn valid_dev_token_authenticates() {
        let (keys, auth) = setup();
        let token = mint_dev_token(
            keys.private_pem.as_bytes(),
            ISS,
            AUD,
            "acme",
            "alice",
            Duration::from_secs(60),
        )
        .unwrap();
        let caller = auth
            .authenticate(&headers(&format!("Bearer {token}")))
            .unwrap();
        assert_eq!(
            caller,
            Caller {
                tenant_id: "acme".into(),
                user_id: Some("alice".into())
            }
        );
        // The scheme is case-insensitive.
        auth.authenticate(&headers(&format!("bearer {token}")))
            .unwrap();
    }

    #[test]
    fn missing_and_non_bearer_headers_are_refused() {
        let (_, auth) = setup();
        assert!(matches!(
            auth.authenticate(&HeaderMap::new()),
            Err(AuthError::Missing)
        ));
        for value in ["Basic abc", "Bearer", "Bearer ", "token"] {
            assert!(
                matches!(
                    auth.authenticate(&headers(value)),
                    Err(AuthError::NotBearer)
                ),
                "{value}"
            );
        }
    }

    #[test]
    fn two_authorization_headers_are_refused() {
        let (keys, auth) = setup();
        let token = mint_dev_token(
            keys.private_pem.as_bytes(),
            ISS,
            AUD,
            "a",
            "u",
            Duration::from_secs(60),
        )
        .unwrap();
        let mut map = headers(&format!("Bearer {token}"));
        map.append(AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert!(matches!(auth.authenticate(&map), Err(AuthError::NotBearer)));
    }

    #[test]
    fn bad_tokens_are_refused() {
        let (keys, auth) = setup();
        let (other, _) = setup();
        let exp = now() + 60;
        let cases = [
            ("malformed", "not.a.jwt".to_owned()),
            (
                "wrong key",
                sign(
                    &other,
                    serde_json::json!({"iss": ISS, "aud": AUD, "exp": exp, "tenant": "t"}),
                ),
            ),
            (
                "expired beyond leeway",
                sign(
                    &keys,
                    serde_json::json!({"iss": ISS, "aud": AUD, "exp": now() - 120, "tenant": "t"}),
                ),
            ),
            (
                "not yet valid",
                sign(
                    &keys,
                    serde_json::json!({"iss": ISS, "aud": AUD, "exp": exp, "nbf": now() + 120, "tenant": "t"}),
                ),
            ),
            (
                "wrong audience",
                sign(
                    &keys,
                    serde_json::json!({"iss": ISS, "aud": "other", "exp": exp, "tenant": "t"}),
                ),
            ),
            (
                "wrong issuer",
                sign(
                    &keys,
                    serde_json::json!({"iss": "other", "aud": AUD, "exp": exp, "tenant": "t"}),
                ),
            ),
            (
                "no exp",
                sign(
                    &keys,
                    serde_json::json!({"iss": ISS, "aud": AUD, "tenant": "t"}),
                ),
            ),
        ];
        for (name, token) in cases {
            let result = auth.authenticate(&headers(&format!("Bearer {token}")));
            assert!(
                matches!(result, Err(AuthError::Invalid(_))),
                "{name}: {result:?}"
            );
        }
    }

    #[test]
    fn expiry_within_leeway_is_accepted() {
        let (keys, auth) = setup();
        let token = sign(
            &keys,
            serde_json::json!({"iss": ISS, "aud": AUD, "exp": now() - 5, "tenant": "t"}),
        );
        auth.authenticate(&headers(&format!("Bearer {token}")))
            .unwrap();
    }

    #[test]
    fn tenant_claim_must_be_a_non_empty_string() {
        let (keys, auth) = setup();
        let exp = now() + 60;
        for tenant in [serde_json::json!(""), serde_json::json!(7), Value::Null] {
            let token = sign(
                &keys,
                serde_json::json!({"iss": ISS, "aud": AUD, "exp": exp, "tenant": tenant}),
            );
            let err = auth
                .authenticate(&headers(&format!("Bearer {token}")))
                .unwrap_err();
            assert!(err.to_string().contains("`tenant`"), "{err}");
        }
        let token = sign(
            &keys,
            serde_json::json!({"iss": ISS, "aud": AUD, "exp": exp}),
        );
        assert!(matches!(
            auth.authenticate(&headers(&format!("Bearer {token}"))),
            Err(AuthError::BadClaim { .. })
        ));
    }

    #[test]
    fn claim_names_are_configurable_and_user_is_optional() {
        let keys = ServiceKeyPair::generate().unwrap();
        let mut config = CallerAuthConfig::new(ISS, AUD, keys.public_pem.clone());
        config.tenant_claim = "org".into();
        config.user_claim = "email".into();
        let auth = CallerAuth::new(&config).unwrap();
        let exp = now() + 60;
        let token = sign(
            &keys,
            serde_json::json!({"iss": ISS, "aud": AUD, "exp": exp, "org": "o1", "email": "a@b"}),
        );
        let caller = auth
            .authenticate(&headers(&format!("Bearer {token}")))
            .unwrap();
        assert_eq!(caller.tenant_id, "o1");
        assert_eq!(caller.user_id.as_deref(), Some("a@b"));
        let token = sign(
            &keys,
            serde_json::json!({"iss": ISS, "aud": AUD, "exp": exp, "org": "o1"}),
        );
        let caller = auth
            .authenticate(&headers(&format!("Bearer {token}")))
            .unwrap();
        assert_eq!(caller.user_id, None);
        let token = sign(
            &keys,
            serde_json::json!({"iss": ISS, "aud": AUD, "exp": exp, "org": "o1", "email": 5}),
        );
        assert!(
            auth.authenticate(&headers(&format!("Bearer {token}")))
                .is_err()
        );
    }

    #[test]
    fn bad_key_pem_is_refused() {
        let err = CallerAuth::new(&CallerAuthConfig::new(ISS, AUD, "not a pem")).unwrap_err();
        assert!(
            matches!(err, AuthError::Keys(KeyError::Pem { .. })),
            "{err}"
        );
        assert!(mint_dev_token(b"junk", ISS, AUD, "t", "u", Duration::from_secs(1)).is_err());
    }

    mod cache {
        use super::*;

        /// Far beyond any expiry the tests use.
        const LIFE: Duration = Duration::from_secs(600);

        fn key(token: &str) -> [u8; 32] {
            Sha256::digest(token.as_bytes()).into()
        }

        fn entry(exp: u64, nbf: Option<u64>) -> VerifiedCaller {
            VerifiedCaller {
                caller: Caller {
                    tenant_id: "cached".into(),
                    user_id: None,
                },
                exp,
                nbf,
            }
        }

        fn bearer(token: &str) -> HeaderMap {
            headers(&format!("Bearer {token}"))
        }

        #[test]
        fn repeat_calls_are_answered_from_the_cache() {
            let (keys, auth) = setup();
            let (t0, unix) = (Instant::now(), now());
            let token = sign(
                &keys,
                serde_json::json!({"iss": ISS, "aud": AUD, "exp": unix + 60, "tenant": "t"}),
            );
            auth.authenticate_at(&bearer(&token), t0, unix).unwrap();
            assert_eq!(auth.cached_tokens(), 1);
            // An entry as a verified token leaves it: no signature is checked for it.
            let cache = auth.verified.as_ref().unwrap();
            cache.insert(key("opaque"), entry(unix + 60, None), t0 + LIFE, t0);
            let caller = auth.authenticate_at(&bearer("opaque"), t0, unix).unwrap();
            assert_eq!(caller.tenant_id, "cached");
        }

        #[test]
        fn an_expired_or_not_yet_valid_entry_is_never_used() {
            let (_, auth) = setup();
            let cache = auth.verified.as_ref().unwrap();
            let (t0, unix) = (Instant::now(), now());
            cache.insert(key("expiring"), entry(unix + 10, None), t0 + LIFE, t0);
            auth.authenticate_at(&bearer("expiring"), t0, unix + 9)
                .unwrap();
            assert!(matches!(
                auth.authenticate_at(&bearer("expiring"), t0, unix + 10),
                Err(AuthError::Invalid(_))
            ));
            let nbf = unix + LEEWAY_SECS + 1;
            cache.insert(key("early"), entry(unix + 600, Some(nbf)), t0 + LIFE, t0);
            assert!(matches!(
                auth.authenticate_at(&bearer("early"), t0, unix),
                Err(AuthError::Invalid(_))
            ));
            auth.authenticate_at(&bearer("early"), t0, unix + 1)
                .unwrap();
        }

        #[test]
        fn entries_last_until_exp_and_at_most_the_configured_time() {
            let keys = ServiceKeyPair::generate().unwrap();
            let mut config = CallerAuthConfig::new(ISS, AUD, keys.public_pem.clone());
            config.cache_ttl = Duration::from_secs(60);
            let auth = CallerAuth::new(&config).unwrap();
            let (t0, unix) = (Instant::now(), now());
            let token = |exp: u64| {
                sign(
                    &keys,
                    serde_json::json!({"iss": ISS, "aud": AUD, "exp": exp, "tenant": "t"}),
                )
            };
            let (long, short) = (token(unix + 3600), token(unix + 10));
            for token in [&long, &short] {
                auth.authenticate_at(&bearer(token), t0, unix).unwrap();
            }
            assert_eq!(auth.cached_tokens(), 2);
            let cache = auth.verified.as_ref().unwrap();
            let at = |secs| t0 + Duration::from_secs(secs);
            assert!(cache.get(&key(&long), at(59)).is_some());
            assert!(cache.get(&key(&long), at(60)).is_none());
            assert!(cache.get(&key(&short), at(9)).is_some());
            assert!(cache.get(&key(&short), at(10)).is_none());
        }

        #[test]
        fn refusals_are_not_cached_and_the_cache_can_be_off() {
            let (keys, auth) = setup();
            assert!(auth.authenticate(&bearer("not.a.jwt")).is_err());
            let claims =
                |exp: u64| serde_json::json!({"iss": ISS, "aud": AUD, "exp": exp, "tenant": "t"});
            let expired = sign(&keys, claims(now() - 120));
            assert!(auth.authenticate(&bearer(&expired)).is_err());
            // Past `exp` but within the leeway: accepted, yet never cached.
            let lapsed = sign(&keys, claims(now() - 5));
            auth.authenticate(&bearer(&lapsed)).unwrap();
            assert_eq!(auth.cached_tokens(), 0);

            let mut config = CallerAuthConfig::new(ISS, AUD, keys.public_pem.clone());
            config.cache_ttl = Duration::ZERO;
            let off = CallerAuth::new(&config).unwrap();
            let valid = sign(&keys, claims(now() + 60));
            off.authenticate(&bearer(&valid)).unwrap();
            assert!(off.verified.is_none());
            assert_eq!(off.cached_tokens(), 0);
        }
    }

    mod algorithms {
        use super::*;
        use crate::jwks::{CallerKey, CallerKeyAlgorithm};

        const ES_PRIVATE: &str = include_str!("tests/fixtures/es256_private.pem");
        const ES_PUBLIC: &str = include_str!("tests/fixtures/es256_public.pem");
        const RS_PRIVATE: &str = include_str!("tests/fixtures/rs256_private.pem");
        const RS_PUBLIC: &str = include_str!("tests/fixtures/rs256_public.pem");
        const SECRET: &[u8] = b"a shared secret of at least thirty-two bytes";

        fn claims() -> Value {
            serde_json::json!({"iss": ISS, "aud": AUD, "exp": now() + 60, "tenant": "t"})
        }

        fn token(alg: Algorithm, kid: Option<&str>, key: &EncodingKey) -> String {
            let mut header = Header::new(alg);
            header.kid = kid.map(str::to_owned);
            jsonwebtoken::encode(&header, &claims(), key).unwrap()
        }

        fn auth_with(keys: Vec<CallerKey>) -> CallerAuth {
            let mut config = CallerAuthConfig::new(ISS, AUD, "unused");
            config.keys = keys;
            CallerAuth::new(&config).unwrap()
        }

        fn check(auth: &CallerAuth, token: &str) -> Result<Caller, AuthError> {
            auth.authenticate(&headers(&format!("Bearer {token}")))
        }

        #[test]
        fn es256_rs256_and_hs256_tokens_verify() {
            let eddsa = ServiceKeyPair::generate().unwrap();
            let auth = auth_with(vec![
                CallerKey::eddsa_pem(eddsa.public_pem.clone()),
                CallerKey::pem(CallerKeyAlgorithm::Es256, ES_PUBLIC),
                CallerKey::pem(CallerKeyAlgorithm::Rs256, RS_PUBLIC),
                CallerKey::hs256_secret(SECRET),
            ]);
            let es = EncodingKey::from_ec_pem(ES_PRIVATE.as_bytes()).unwrap();
            let rs = EncodingKey::from_rsa_pem(RS_PRIVATE.as_bytes()).unwrap();
            let hs = EncodingKey::from_secret(SECRET);
            let ed = EncodingKey::from_ed_pem(eddsa.private_pem.as_bytes()).unwrap();
            for (alg, key) in [
                (Algorithm::ES256, &es),
                (Algorithm::RS256, &rs),
                (Algorithm::HS256, &hs),
                (Algorithm::EdDSA, &ed),
            ] {
                let caller = check(&auth, &token(alg, None, key)).unwrap();
                assert_eq!(caller.tenant_id, "t", "{alg:?}");
            }
            // A wrong HS256 secret fails.
            let wrong = EncodingKey::from_secret(b"another secret of at least thirty-two bytes!");
            assert!(matches!(
                check(&auth, &token(Algorithm::HS256, None, &wrong)),
                Err(AuthError::Invalid(_))
            ));
        }

        #[test]
        fn an_algorithm_without_a_key_is_refused() {
            let auth = auth_with(vec![CallerKey::pem(CallerKeyAlgorithm::Es256, ES_PUBLIC)]);
            let hs = EncodingKey::from_secret(SECRET);
            let err = check(&auth, &token(Algorithm::HS256, None, &hs)).unwrap_err();
            assert!(matches!(err, AuthError::NoKey { .. }), "{err}");
            assert_eq!(err.challenge(), "Bearer error=\"invalid_token\"");
        }

        #[test]
        fn kid_selects_the_key() {
            let es = EncodingKey::from_ec_pem(ES_PRIVATE.as_bytes()).unwrap();
            let auth = auth_with(vec![
                CallerKey::hs256_secret(SECRET).with_kid("old"),
                CallerKey::hs256_secret(b"the current shared secret, 32+ bytes".to_vec())
                    .with_kid("new"),
                CallerKey::pem(CallerKeyAlgorithm::Es256, ES_PUBLIC).with_kid("ec"),
            ]);
            let old = EncodingKey::from_secret(SECRET);
            check(&auth, &token(Algorithm::HS256, Some("old"), &old)).unwrap();
            // Without a kid, every HS256 key is tried.
            check(&auth, &token(Algorithm::HS256, None, &old)).unwrap();
            // A kid naming another key does not verify.
            assert!(matches!(
                check(&auth, &token(Algorithm::HS256, Some("new"), &old)),
                Err(AuthError::Invalid(_))
            ));
            // An unknown kid is refused, and so is a kid of a key of another algorithm.
            assert!(matches!(
                check(&auth, &token(Algorithm::HS256, Some("gone"), &old)),
                Err(AuthError::NoKey { .. })
            ));
            assert!(matches!(
                check(&auth, &token(Algorithm::HS256, Some("ec"), &old)),
                Err(AuthError::NoKey { .. })
            ));
            check(&auth, &token(Algorithm::ES256, Some("ec"), &es)).unwrap();
        }

        #[test]
        fn jwks_file_keys_verify_tokens() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("jwks.json");
            std::fs::write(
                &path,
                r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"idp-1","use":"sig",
                    "x":"XMasJ0WWxog6vCcpEgFZTLQJwI8cM-97CwX4fAbjFF4",
                    "y":"mI77zQT-5U0qqsFwP3fahDbZrO9-P3va5HbPxAwE9sM"}]}"#,
            )
            .unwrap();
            let mut config = CallerAuthConfig::new(ISS, AUD, "unused");
            config.keys = Vec::new();
            config.jwks_path = Some(path);
            let auth = CallerAuth::new(&config).unwrap();
            let es = EncodingKey::from_ec_pem(ES_PRIVATE.as_bytes()).unwrap();
            check(&auth, &token(Algorithm::ES256, Some("idp-1"), &es)).unwrap();
            check(&auth, &token(Algorithm::ES256, None, &es)).unwrap();
            let expired = jsonwebtoken::encode(
                &Header::new(Algorithm::ES256),
                &serde_json::json!({"iss": ISS, "aud": AUD, "exp": now() - 120, "tenant": "t"}),
                &es,
            )
            .unwrap();
            assert!(matches!(check(&auth, &expired), Err(AuthError::Invalid(_))));
        }

        #[test]
        fn challenges_follow_rfc_6750() {
            assert_eq!(AuthError::Missing.challenge(), "Bearer");
            assert_eq!(
                AuthError::NotBearer.challenge(),
                "Bearer error=\"invalid_request\""
            );
        }
    }
}
