//! Service tokens: short-lived EdDSA JWTs minted by the gateway for one call and checked by
//! the runner.
//!
//! A token is bound to one [`TokenScope`]: tenant, extension, install and content hash, and
//! the call's method, path (with query), request id and user. It lives [`TOKEN_LIFETIME`] and
//! carries a random token id (`jti`); the runner remembers the ids it accepted until they
//! expire and refuses one presented again, so a token captured on the wire can be used
//! neither for another path nor for a second call. The runner holds only the public key.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand::RngCore;
use serde::{Deserialize, Serialize};

const ISSUER: &str = "palisade-gateway";
const AUDIENCE: &str = "palisade-runner";
/// How long a minted token is valid. It needs to cover only the hop's transit: the runner
/// checks it when the call arrives.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(30);
/// Clock skew allowed between gateway and runner.
const LEEWAY_SECS: u64 = 5;
/// Most token ids a runner remembers at once (about 50 bytes each, so 50 MB at the cap; at
/// 10,000 calls a second a token id is remembered for 35 s, which needs 350,000).
pub const MAX_REMEMBERED_TOKENS: usize = 1 << 20;

/// What a token authorises: one call, for one install of one extension at one content hash.
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
    /// The method sent to the runner.
    pub method: String,
    /// The path inside the extension, with its query (`/items/1?full=1`).
    pub path: String,
    /// The call's request id.
    pub request_id: String,
    /// The calling user, when the caller's token named one: bound so that the user a
    /// guest is told of is the one the gateway verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    iat: u64,
    exp: u64,
    jti: String,
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
    Invalid(#[source] InvalidToken),
    /// The token is valid but for another call (tenant, extension, install, content hash,
    /// method, path or request id).
    #[error("service token scope does not match the request ({field} differs)")]
    ScopeMismatch {
        /// The first field that differs.
        field: &'static str,
    },
    /// The token was presented before: a call is made once.
    #[error("service token already used (token id {0})")]
    Replayed(String),
    /// The runner holds as many unexpired token ids as it may; it refuses until some
    /// expire, rather than forget one early.
    #[error("too many service tokens in flight")]
    ReplayGuardFull,
    /// A key could not be read or written.
    #[error("service key: {0}")]
    Key(String),
    /// A token could not be put together (its claims as JSON, or the token as a header
    /// value); says which.
    #[error("service token could not be encoded: {0}")]
    Encode(&'static str),
}

/// What is wrong with a token that is not a valid service token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidToken {
    /// Not three base64url parts with a JSON header and claims of the expected shape.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header names another algorithm than `EdDSA`.
    #[error("algorithm {0:?} is not accepted (EdDSA only)")]
    Algorithm(String),
    /// The signature does not verify with the runner's public key.
    #[error("signature does not verify")]
    Signature,
    /// Past its expiry (and the allowed clock skew).
    #[error("token expired")]
    Expired,
    /// Issued by someone else, or for someone else.
    #[error("wrong issuer or audience")]
    Party,
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

/// Mints service tokens (gateway side), one per call.
///
/// A token is a compact JWS (`header.claims.signature`, base64url) signed with EdDSA, so
/// any JWT library can read it. The key is parsed once: signing a call's token is one
/// Ed25519 signature and nothing else.
pub struct TokenMinter {
    key: SigningKey,
}

/// The JWS protected header of every minted token, `{"alg":"EdDSA","typ":"JWT"}`.
const HEADER_JSON: &str = r#"{"alg":"EdDSA","typ":"JWT"}"#;

impl TokenMinter {
    /// Reads the private key (PKCS#8 PEM).
    pub fn from_pem(private_pem: &[u8]) -> Result<Self, TokenError> {
        let pem = std::str::from_utf8(private_pem)
            .map_err(|_| TokenError::Key("the private key is not PEM text".into()))?;
        let key = SigningKey::from_pkcs8_pem(pem)
            .map_err(|e| TokenError::Key(format!("not an Ed25519 PKCS#8 private key: {e}")))?;
        Ok(TokenMinter { key })
    }

    /// A new token for the call `scope`, valid for [`TOKEN_LIFETIME`].
    pub fn token(&self, scope: &TokenScope) -> Result<String, TokenError> {
        let now = now();
        self.mint(scope, now, now + TOKEN_LIFETIME.as_secs())
    }

    /// [`TokenMinter::token`], as the value of the hop's token header.
    pub fn header(&self, scope: &TokenScope) -> Result<http::HeaderValue, TokenError> {
        // Base64url and dots: always a valid header value.
        http::HeaderValue::try_from(self.token(scope)?)
            .map_err(|_| TokenError::Encode("the token is not a header value"))
    }

    /// Mints a token with explicit issue and expiry times (seconds since the epoch).
    pub fn mint(&self, scope: &TokenScope, iat: u64, exp: u64) -> Result<String, TokenError> {
        let mut id = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut id);
        let claims = Claims {
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            iat,
            exp,
            jti: format!("{:032x}", u128::from_be_bytes(id)),
            scope: scope.clone(),
        };
        let claims = serde_json::to_vec(&claims)
            .map_err(|_| TokenError::Encode("the claims are not JSON"))?;
        let mut token = String::with_capacity(64 + claims.len() * 4 / 3 + 88);
        URL_SAFE_NO_PAD.encode_string(HEADER_JSON, &mut token);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&claims, &mut token);
        let signature = self.key.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut token);
        Ok(token)
    }
}

/// Verifies service tokens (runner side) and refuses a token presented twice.
pub struct TokenVerifier {
    key: VerifyingKey,
    seen: Mutex<Seen>,
}

#[derive(Deserialize)]
struct JwsHeader {
    alg: String,
}

/// Token ids accepted and not yet expired, in order of expiry.
#[derive(Default)]
struct Seen {
    ids: HashSet<u128>,
    by_expiry: VecDeque<(u64, u128)>,
    capacity: usize,
}

impl Seen {
    /// Records `id` (the token's `jti`, 32 hex digits), valid until `exp`; refuses an id
    /// already recorded, or one that is not such a number.
    fn remember(&mut self, id: &str, exp: u64, now: u64) -> Result<(), TokenError> {
        let id = match u128::from_str_radix(id, 16) {
            Ok(value) if id.len() == 32 => value,
            _ => return Err(TokenError::Replayed(format!("{id} (not a token id)"))),
        };
        while let Some((expiry, _)) = self.by_expiry.front()
            && *expiry + LEEWAY_SECS < now
        {
            if let Some((_, old)) = self.by_expiry.pop_front() {
                self.ids.remove(&old);
            }
        }
        if self.ids.contains(&id) {
            return Err(TokenError::Replayed(format!("{id:032x}")));
        }
        if self.ids.len() >= self.capacity {
            return Err(TokenError::ReplayGuardFull);
        }
        self.ids.insert(id);
        // Tokens arrive roughly in expiry order; one out of order waits behind its
        // predecessor, which only keeps it a little longer.
        self.by_expiry.push_back((exp, id));
        Ok(())
    }
}

impl TokenVerifier {
    /// Reads the public key (SPKI PEM).
    pub fn from_pem(public_pem: &[u8]) -> Result<Self, TokenError> {
        let pem = std::str::from_utf8(public_pem)
            .map_err(|_| TokenError::Key("the public key is not PEM text".into()))?;
        let key = VerifyingKey::from_public_key_pem(pem)
            .map_err(|e| TokenError::Key(format!("not an Ed25519 SPKI public key: {e}")))?;
        Ok(TokenVerifier {
            key,
            seen: Mutex::new(Seen {
                capacity: MAX_REMEMBERED_TOKENS,
                ..Seen::default()
            }),
        })
    }

    /// The claims of `token` once its header, signature, expiry, issuer and audience are
    /// checked.
    fn claims(&self, token: &str, now: u64) -> Result<Claims, InvalidToken> {
        use InvalidToken::Malformed;
        let (signed, signature) = token.rsplit_once('.').ok_or(Malformed("not a JWS"))?;
        let (header, claims) = signed.split_once('.').ok_or(Malformed("not a JWS"))?;
        let header: JwsHeader = decode_json(header).ok_or(Malformed("header"))?;
        if header.alg != "EdDSA" {
            return Err(InvalidToken::Algorithm(header.alg));
        }
        let mut bytes = [0u8; Signature::BYTE_SIZE];
        match URL_SAFE_NO_PAD.decode_slice(signature, &mut bytes) {
            Ok(n) if n == bytes.len() => {}
            _ => return Err(Malformed("signature")),
        }
        self.key
            .verify_strict(signed.as_bytes(), &Signature::from_bytes(&bytes))
            .map_err(|_| InvalidToken::Signature)?;
        let claims: Claims = decode_json(claims).ok_or(Malformed("claims"))?;
        if claims.exp.saturating_add(LEEWAY_SECS) < now {
            return Err(InvalidToken::Expired);
        }
        if claims.iss != ISSUER || claims.aud != AUDIENCE {
            return Err(InvalidToken::Party);
        }
        Ok(claims)
    }

    /// Checks `token`: its signature, that it was issued for exactly `expected`, and that
    /// it was not presented before. Only a token that passes every check is remembered.
    pub fn verify(&self, token: &str, expected: &TokenScope) -> Result<(), TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        let now = now();
        let claims = self.claims(token, now).map_err(TokenError::Invalid)?;
        check_scope(&claims.scope, expected)?;
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remember(&claims.jti, claims.exp, now)
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
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
    } else if got.method != expected.method {
        "method"
    } else if got.path != expected.path {
        "path"
    } else if got.request_id != expected.request_id {
        "request_id"
    } else if got.user_id != expected.user_id {
        "user_id"
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
            method: "POST".into(),
            path: "/items?x=1".into(),
            request_id: "r-1".into(),
            user_id: Some("u-1".into()),
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
    fn a_token_verifies_once() {
        let (minter, verifier) = pair();
        let token = minter.token(&scope()).unwrap();
        verifier.verify(&token, &scope()).unwrap();
        assert!(matches!(
            verifier.verify(&token, &scope()),
            Err(TokenError::Replayed(_))
        ));
        // Each call has its own token.
        let second = minter.token(&scope()).unwrap();
        assert_ne!(second, token);
        verifier.verify(&second, &scope()).unwrap();
    }

    #[test]
    fn a_mismatch_names_the_field_and_does_not_use_the_token_up() {
        let (minter, verifier) = pair();
        let token = minter.token(&scope()).unwrap();
        for (field, change) in [
            (
                "content_hash",
                (|s: &mut TokenScope| s.content_hash = "sha256:11".into()) as fn(&mut TokenScope),
            ),
            ("method", |s| s.method = "GET".into()),
            ("path", |s| s.path = "/admin".into()),
            ("request_id", |s| s.request_id = "r-2".into()),
            ("user_id", |s| s.user_id = Some("u-2".into())),
            ("user_id", |s| s.user_id = None),
        ] {
            let mut other = scope();
            change(&mut other);
            let err = verifier.verify(&token, &other).unwrap_err();
            assert!(
                matches!(err, TokenError::ScopeMismatch { field: f } if f == field),
                "{err}"
            );
        }
        verifier.verify(&token, &scope()).unwrap();
    }

    #[test]
    fn remembered_ids_expire_and_are_bounded() {
        let mut seen = Seen {
            capacity: 2,
            ..Seen::default()
        };
        let id = |n: u8| format!("{n:032x}");
        seen.remember(&id(1), 100, 90).unwrap();
        assert!(matches!(
            seen.remember(&id(1), 100, 91),
            Err(TokenError::Replayed(_))
        ));
        seen.remember(&id(2), 101, 91).unwrap();
        assert!(matches!(
            seen.remember(&id(3), 102, 92),
            Err(TokenError::ReplayGuardFull)
        ));
        // Past expiry and leeway the id is forgotten (the token itself is refused by then).
        seen.remember(&id(3), 200, 100 + LEEWAY_SECS + 1).unwrap();
        assert_eq!(seen.ids.len(), 2);
        // Only a token id of this shape is accepted.
        assert!(seen.remember("not-hex", 300, 200).is_err());
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

    #[test]
    fn tokens_are_standard_jws_both_ways() {
        use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
        let keys = ServiceKeyPair::generate().unwrap();
        let minter = TokenMinter::from_pem(keys.private_pem.as_bytes()).unwrap();
        let verifier = TokenVerifier::from_pem(keys.public_pem.as_bytes()).unwrap();
        // A JWT library reads what the minter writes.
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&[AUDIENCE]);
        let decoding = DecodingKey::from_ed_pem(keys.public_pem.as_bytes()).unwrap();
        let read = jsonwebtoken::decode::<Claims>(
            &minter.token(&scope()).unwrap(),
            &decoding,
            &validation,
        )
        .unwrap();
        assert_eq!(read.claims.scope, scope());
        // And the verifier reads what a JWT library writes with the same key.
        let now = now();
        let claims = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            iat: now,
            exp: now + 30,
            jti: format!("{:032x}", 7),
            scope: scope(),
        };
        let encoding = EncodingKey::from_ed_pem(keys.private_pem.as_bytes()).unwrap();
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &encoding).unwrap();
        verifier.verify(&token, &scope()).unwrap();
        // Another algorithm is refused by name, even with a valid-looking signature part.
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"a shared secret"),
        )
        .unwrap();
        assert!(matches!(
            verifier.verify(&hs, &scope()),
            Err(TokenError::Invalid(InvalidToken::Algorithm(alg))) if alg == "HS256"
        ));
        // A changed claim breaks the signature.
        let (head, rest) = token.split_once('.').unwrap();
        let (_, signature) = rest.split_once('.').unwrap();
        let mut forged = claims.clone();
        forged.scope.path = "/admin".into();
        let forged = format!(
            "{head}.{}.{signature}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap())
        );
        assert!(matches!(
            verifier.verify(&forged, &scope()),
            Err(TokenError::Invalid(InvalidToken::Signature))
        ));
    }
}
