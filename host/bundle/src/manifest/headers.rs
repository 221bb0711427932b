//! The `api.headers` section: extra request and response headers an extension declares,
//! and the names no extension may ever declare.

use serde::{Deserialize, Deserializer, Serialize};

/// Most names declared per direction (`api.headers.request`, `api.headers.response`).
pub const MAX_DECLARED_HEADERS: usize = 32;

/// Prefix of the platform's own headers; no name with it is ever passed to or from a guest.
pub const PALISADE_HEADER_PREFIX: &str = "x-palisade-";

/// Headers that carry credentials or session state and never reach or leave a guest.
pub const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];

/// Hop-by-hop and message-framing headers: they belong to each connection, and the
/// gateway sets them itself.
pub const HOP_BY_HOP_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// Extra headers passed to and from the guest besides the gateway's default lists
/// (`api.headers`). Names are stored lower case.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiHeaders {
    /// Request headers the guest also sees.
    #[serde(
        deserialize_with = "lower_case_names",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub request: Vec<String>,
    /// Response headers the guest may also set.
    #[serde(
        deserialize_with = "lower_case_names",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub response: Vec<String>,
}

impl ApiHeaders {
    /// Whether neither direction declares a header.
    pub fn is_empty(&self) -> bool {
        self.request.is_empty() && self.response.is_empty()
    }
}

/// Header names compare case-insensitively; they are kept lower case.
fn lower_case_names<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let names = Vec::<String>::deserialize(deserializer)?;
    Ok(names.into_iter().map(|n| n.to_ascii_lowercase()).collect())
}

/// Why the header `name` (lower case) can never be declared, or `None` when it can.
pub fn reserved_header(name: &str) -> Option<&'static str> {
    if CREDENTIAL_HEADERS.contains(&name) {
        Some(
            "it carries the caller's credentials or cookies, which never reach or leave an extension",
        )
    } else if HOP_BY_HOP_HEADERS.contains(&name) {
        Some("it is a hop-by-hop or framing header, which the gateway sets itself")
    } else if name.starts_with(PALISADE_HEADER_PREFIX) {
        Some("the `x-palisade-` prefix is reserved for the platform")
    } else {
        None
    }
}

/// Whether `name` is an HTTP header name: a non-empty token (RFC 9110 §5.6.2).
pub fn is_header_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
