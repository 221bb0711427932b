//! Header policy: the request id, and the allow-lists for headers passed to and from a guest.

use http::HeaderMap;
use http::header::{CACHE_CONTROL, HeaderName, HeaderValue, VARY};
use palisade_bundle::manifest::EndpointCache;

/// The request id header, echoed on every answer.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request headers a guest may see; all others are dropped.
pub const REQUEST_ALLOW: &[&str] = &[
    "accept",
    "accept-encoding",
    "content-type",
    "user-agent",
    "x-request-id",
    "x-idempotency-key",
    // Conditional requests, so guests can offer optimistic concurrency over their own
    // `etag`s (the allow-list of DESIGN §8 extended; see docs/architecture.md).
    "if-match",
    "if-none-match",
];

/// Response headers a guest may set, besides names starting with [`RESPONSE_EXT_PREFIX`].
pub const RESPONSE_ALLOW: &[&str] = &["content-type", "cache-control", "etag"];

/// Prefix of extension-defined response headers.
pub const RESPONSE_EXT_PREFIX: &str = "x-ext-";

/// Longest caller-supplied request id that is kept.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// The caller's `x-request-id` when it is 1–128 characters of `[A-Za-z0-9._-]`, otherwise a
/// new UUID v7 (time-ordered, so the execution log's request-id index grows at its end).
pub fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(&REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|id| valid_request_id(id))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

/// Whether `id` is acceptable as a request id.
pub fn valid_request_id(id: &str) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The request headers handed to the guest: the allow-listed ones (names lower case, every
/// value kept, values that are not visible ASCII dropped), with `x-request-id` set to
/// `request_id`.
pub fn forward_request_headers(headers: &HeaderMap, request_id: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for name in REQUEST_ALLOW {
        if *name == REQUEST_ID.as_str() {
            continue;
        }
        for value in headers.get_all(*name) {
            if let Ok(value) = value.to_str() {
                out.push(((*name).to_owned(), value.to_owned()));
            }
        }
    }
    out.push((REQUEST_ID.as_str().to_owned(), request_id.to_owned()));
    out
}

/// Whether a guest may set the response header `name` (lower case).
pub fn response_header_allowed(name: &str) -> bool {
    RESPONSE_ALLOW.contains(&name)
        || (name.len() > RESPONSE_EXT_PREFIX.len() && name.starts_with(RESPONSE_EXT_PREFIX))
}

/// The guest's response headers that reach the caller: allow-listed names only, never one
/// the guest's own `connection` header nominates, and only well-formed names and values.
/// Returns the headers and the names of those dropped.
pub fn filter_response_headers(headers: &[(String, String)]) -> (HeaderMap, Vec<String>) {
    let nominated: Vec<String> = headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, value)| value.split(','))
        .map(|token| token.trim().to_ascii_lowercase())
        .collect();
    let mut out = HeaderMap::new();
    let mut dropped = Vec::new();
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        let parsed = HeaderName::from_bytes(lower.as_bytes())
            .ok()
            .zip(HeaderValue::from_str(value).ok());
        match parsed {
            Some((header, value))
                if response_header_allowed(&lower) && !nominated.contains(&lower) =>
            {
                out.append(header, value);
            }
            _ => dropped.push(lower),
        }
    }
    (out, dropped)
}

/// `cache-control` directives a guest may keep on an answer of a private endpoint; every
/// other directive (`public`, `s-maxage`, `proxy-revalidate`, extensions…) is dropped.
pub const PRIVATE_CACHE_DIRECTIVES: &[&str] = &[
    "no-store",
    "no-cache",
    "max-age",
    "must-revalidate",
    "no-transform",
    "immutable",
    "stale-while-revalidate",
    "stale-if-error",
];

/// Sets the caching headers of a guest's answer. For a private endpoint (the default)
/// `cache-control` becomes `private` followed by the guest's directives from
/// [`PRIVATE_CACHE_DIRECTIVES`], so no shared cache stores the answer whatever the guest
/// asked for. For an endpoint the manifest declares public the guest's `cache-control` is
/// kept. Every answer varies on `authorization`, so no cache — shared or the browser's own —
/// hands one caller's answer to another caller (unless the guest already said `vary: *`).
pub fn apply_cache_policy(headers: &mut HeaderMap, cache: EndpointCache) {
    if cache == EndpointCache::Private {
        let mut directives = vec!["private".to_owned()];
        for value in headers.get_all(CACHE_CONTROL) {
            let Ok(value) = value.to_str() else {
                continue;
            };
            for directive in value.split(',').map(str::trim) {
                let name = directive.split('=').next().unwrap_or("").trim();
                if PRIVATE_CACHE_DIRECTIVES
                    .iter()
                    .any(|allowed| allowed.eq_ignore_ascii_case(name))
                {
                    directives.push(directive.to_owned());
                }
            }
        }
        let value = HeaderValue::from_str(&directives.join(", "))
            .unwrap_or_else(|_| HeaderValue::from_static("private"));
        headers.insert(CACHE_CONTROL, value);
    }
    let mut vary: Vec<String> = Vec::new();
    for value in headers.get_all(VARY) {
        if let Ok(value) = value.to_str() {
            vary.extend(
                value
                    .split(',')
                    .map(|name| name.trim().to_ascii_lowercase())
                    .filter(|name| !name.is_empty()),
            );
        }
    }
    if vary
        .iter()
        .any(|name| name == "*" || name == "authorization")
    {
        return;
    }
    vary.push("authorization".to_owned());
    if let Ok(value) = HeaderValue::from_str(&vary.join(", ")) {
        headers.insert(VARY, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_is_kept_when_valid() {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, HeaderValue::from_static("abc-1.2_Z"));
        assert_eq!(request_id(&headers), "abc-1.2_Z");
        headers.insert(REQUEST_ID, HeaderValue::from_str(&"a".repeat(128)).unwrap());
        assert_eq!(request_id(&headers), "a".repeat(128));
    }

    #[test]
    fn request_id_is_replaced_when_invalid_or_missing() {
        for bad in ["", "has space", "semi;colon", "ünï", &"a".repeat(129)] {
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_str(bad) {
                headers.insert(REQUEST_ID, value);
            }
            let id = request_id(&headers);
            assert_ne!(id, bad);
            assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
        }
        assert!(uuid::Uuid::parse_str(&request_id(&HeaderMap::new())).is_ok());
    }

    #[test]
    fn only_allow_listed_request_headers_are_forwarded() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("accept", "application/json"),
            ("accept-encoding", "gzip"),
            ("content-type", "text/plain"),
            ("user-agent", "ua/1"),
            ("x-idempotency-key", "k1"),
            ("x-request-id", "caller-id"),
            ("authorization", "Bearer secret"),
            ("cookie", "session=1"),
            ("host", "gateway"),
            ("x-forwarded-for", "1.2.3.4"),
            ("connection", "keep-alive"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        headers.append("accept", HeaderValue::from_static("text/html"));
        let forwarded = forward_request_headers(&headers, "rid-1");
        let pairs: Vec<(&str, &str)> = forwarded
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("accept", "application/json"),
                ("accept", "text/html"),
                ("accept-encoding", "gzip"),
                ("content-type", "text/plain"),
                ("user-agent", "ua/1"),
                ("x-idempotency-key", "k1"),
                ("x-request-id", "rid-1"),
            ]
        );
    }

    #[test]
    fn non_ascii_request_values_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert("user-agent", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let forwarded = forward_request_headers(&headers, "r");
        assert_eq!(forwarded, vec![("x-request-id".into(), "r".into())]);
    }

    #[test]
    fn response_allow_list() {
        for allowed in ["content-type", "cache-control", "etag", "x-ext-trace"] {
            assert!(response_header_allowed(allowed), "{allowed}");
        }
        for refused in [
            "set-cookie",
            "connection",
            "transfer-encoding",
            "keep-alive",
            "upgrade",
            "te",
            "trailer",
            "proxy-authenticate",
            "content-length",
            "location",
            "x-ext-",
            "x-request-id",
            "access-control-allow-origin",
        ] {
            assert!(!response_header_allowed(refused), "{refused}");
        }
    }

    #[test]
    fn response_headers_are_filtered() {
        let guest = vec![
            ("Content-Type".to_owned(), "application/json".to_owned()),
            ("set-cookie".to_owned(), "a=b".to_owned()),
            ("x-ext-a".to_owned(), "1".to_owned()),
            ("x-ext-a".to_owned(), "2".to_owned()),
            ("x-ext-hop".to_owned(), "gone".to_owned()),
            ("connection".to_owned(), "x-ext-hop".to_owned()),
            ("etag".to_owned(), "bad\nvalue".to_owned()),
            ("x-ext-bad name".to_owned(), "v".to_owned()),
        ];
        let (headers, dropped) = filter_response_headers(&guest);
        assert_eq!(headers.get("content-type").unwrap(), "application/json");
        let ext: Vec<_> = headers.get_all("x-ext-a").iter().collect();
        assert_eq!(ext, vec!["1", "2"]);
        assert_eq!(headers.len(), 3);
        assert_eq!(
            dropped,
            vec![
                "set-cookie",
                "x-ext-hop",
                "connection",
                "etag",
                "x-ext-bad name"
            ]
        );
    }

    fn cached(guest: &[(&str, &str)], cache: EndpointCache) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in guest {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        apply_cache_policy(&mut headers, cache);
        headers
    }

    #[test]
    fn private_endpoints_are_never_shared_cacheable() {
        let private = EndpointCache::Private;
        let headers = cached(&[], private);
        assert_eq!(headers[CACHE_CONTROL], "private");
        assert_eq!(headers[VARY], "authorization");
        let headers = cached(
            &[(
                "cache-control",
                "public, max-age=600, s-maxage=3600, proxy-revalidate",
            )],
            private,
        );
        assert_eq!(headers[CACHE_CONTROL], "private, max-age=600");
        let headers = cached(
            &[
                ("cache-control", "PUBLIC"),
                ("cache-control", "no-cache, Must-Revalidate"),
            ],
            private,
        );
        assert_eq!(headers.get_all(CACHE_CONTROL).iter().count(), 1);
        assert_eq!(headers[CACHE_CONTROL], "private, no-cache, Must-Revalidate");
        let headers = cached(&[("cache-control", "no-store")], private);
        assert_eq!(headers[CACHE_CONTROL], "private, no-store");
    }

    #[test]
    fn public_endpoints_keep_the_guest_cache_control_and_vary_on_authorization() {
        let public = EndpointCache::Public;
        let headers = cached(&[("cache-control", "public, max-age=60")], public);
        assert_eq!(headers[CACHE_CONTROL], "public, max-age=60");
        assert_eq!(headers[VARY], "authorization");
        assert!(cached(&[], public).get(CACHE_CONTROL).is_none());
        // A guest's own vary is kept and extended once.
        let headers = cached(&[("vary", "Accept-Language")], public);
        assert_eq!(headers[VARY], "accept-language, authorization");
        let headers = cached(&[("vary", "accept, Authorization")], public);
        assert_eq!(headers[VARY], "accept, Authorization");
        let headers = cached(&[("vary", "*")], public);
        assert_eq!(headers[VARY], "*");
    }
}
