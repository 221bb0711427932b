//! Header policy: the request id, and the allow-lists for headers passed to and from a guest.

use http::header::{CACHE_CONTROL, HeaderName, HeaderValue, VARY};
use http::{HeaderMap, StatusCode};
use palisade_bundle::manifest::{EndpointCache, PALISADE_HEADER_PREFIX, reserved_header};

/// The request id header, echoed on every answer.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request headers every guest sees; besides these only the names its manifest declares in
/// `api.headers.request` are passed, and never one [`reserved_header`] names.
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

/// Response headers every guest may set, besides names starting with
/// [`RESPONSE_EXT_PREFIX`], [`RESPONSE_REDIRECT_ALLOW`] on a redirect and the names its
/// manifest declares in `api.headers.response`.
pub const RESPONSE_ALLOW: &[&str] = &[
    "content-type",
    "cache-control",
    "etag",
    "content-disposition",
    "content-language",
    "last-modified",
    // Merged with the gateway's own `vary: authorization` by [`apply_cache_policy`].
    "vary",
];

/// Response headers a guest may set on a redirect (a 3xx status) only.
pub const RESPONSE_REDIRECT_ALLOW: &[&str] = &["location"];

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

/// Whether the request header `name` (lower case) reaches a guest whose manifest declares
/// the request headers `declared`: a default one or a declared one, never a reserved one.
pub fn request_header_forwarded(name: &str, declared: &[String]) -> bool {
    reserved_header(name).is_none()
        && !name.starts_with(PALISADE_HEADER_PREFIX)
        && (REQUEST_ALLOW.contains(&name) || declared.iter().any(|d| d.eq_ignore_ascii_case(name)))
}

/// The request headers handed to the guest: those [`request_header_forwarded`] allows
/// (names lower case, every value kept, values that are not visible ASCII dropped), with
/// `x-request-id` set to `request_id` in place of any the caller sent.
pub fn forward_request_headers(
    headers: &HeaderMap,
    request_id: &str,
    declared: &[String],
) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        if *name == REQUEST_ID
            || !request_header_forwarded(name.as_str(), declared)
            || value.to_str().is_err()
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    if let Ok(value) = HeaderValue::from_str(request_id) {
        out.insert(REQUEST_ID, value);
    }
    out
}

/// Whether a guest whose manifest declares the response headers `declared` may set the
/// response header `name` (lower case) on an answer with `status`. A reserved name
/// ([`reserved_header`]: credentials, cookies, hop-by-hop and framing headers,
/// `x-palisade-*`) never passes, declared or not.
pub fn response_header_allowed(name: &str, status: StatusCode, declared: &[String]) -> bool {
    if reserved_header(name).is_some() || name.starts_with(PALISADE_HEADER_PREFIX) {
        return false;
    }
    RESPONSE_ALLOW.contains(&name)
        || (status.is_redirection() && RESPONSE_REDIRECT_ALLOW.contains(&name))
        || (name.len() > RESPONSE_EXT_PREFIX.len() && name.starts_with(RESPONSE_EXT_PREFIX))
        || declared.iter().any(|d| d.eq_ignore_ascii_case(name))
}

/// The guest's response headers that reach the caller: those [`response_header_allowed`]
/// allows for `status` and `declared`, never one the guest's own `connection` header
/// nominates, and only values of visible ASCII. Returns the headers and the names of those
/// dropped.
pub fn filter_response_headers(
    headers: &HeaderMap,
    status: StatusCode,
    declared: &[String],
) -> (HeaderMap, Vec<String>) {
    let nominated: Vec<String> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|token| token.trim().to_ascii_lowercase())
        .collect();
    let mut out = HeaderMap::new();
    let mut dropped = Vec::new();
    for (name, value) in headers {
        let lower = name.as_str();
        if response_header_allowed(lower, status, declared)
            && !nominated.iter().any(|n| n == lower)
            && value.to_str().is_ok()
        {
            out.append(name.clone(), value.clone());
        } else {
            dropped.push(lower.to_owned());
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

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    fn values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn only_allow_listed_request_headers_are_forwarded() {
        let headers = map(&[
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
            ("accept-language", "fr"),
            ("accept", "text/html"),
        ]);
        let forwarded = forward_request_headers(&headers, "rid-1", &[]);
        assert_eq!(
            values(&forwarded, "accept"),
            ["application/json", "text/html"]
        );
        assert_eq!(values(&forwarded, "accept-encoding"), ["gzip"]);
        assert_eq!(values(&forwarded, "content-type"), ["text/plain"]);
        assert_eq!(values(&forwarded, "user-agent"), ["ua/1"]);
        assert_eq!(values(&forwarded, "x-idempotency-key"), ["k1"]);
        assert_eq!(values(&forwarded, "x-request-id"), ["rid-1"]);
        assert_eq!(forwarded.len(), 7);
    }

    #[test]
    fn declared_request_headers_are_forwarded() {
        let headers = map(&[
            ("accept-language", "fr"),
            ("accept-language", "en;q=0.5"),
            ("x-tenant-locale", "fr-CH"),
            ("if-modified-since", "Tue, 01 Jul 2025 00:00:00 GMT"),
            ("x-request-id", "caller-id"),
        ]);
        let declared = names(&["Accept-Language", "x-tenant-locale"]);
        let forwarded = forward_request_headers(&headers, "rid-2", &declared);
        assert_eq!(values(&forwarded, "accept-language"), ["fr", "en;q=0.5"]);
        assert_eq!(values(&forwarded, "x-tenant-locale"), ["fr-CH"]);
        assert!(forwarded.get("if-modified-since").is_none(), "not declared");
        assert_eq!(values(&forwarded, "x-request-id"), ["rid-2"]);
        assert_eq!(forwarded.len(), 4);
    }

    #[test]
    fn reserved_request_headers_never_pass_even_if_declared() {
        let headers = map(&[
            ("authorization", "Bearer secret"),
            ("cookie", "session=1"),
            ("x-palisade-tenant", "t1"),
            ("x-palisade-internal", "1"),
            ("host", "gateway"),
            ("te", "trailers"),
        ]);
        let declared = names(&["authorization", "cookie", "x-palisade-tenant", "host", "te"]);
        let forwarded = forward_request_headers(&headers, "r", &declared);
        assert_eq!(forwarded.len(), 1);
        assert_eq!(values(&forwarded, "x-request-id"), ["r"]);
    }

    #[test]
    fn non_ascii_request_values_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert("user-agent", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let forwarded = forward_request_headers(&headers, "r", &[]);
        assert_eq!(forwarded.len(), 1);
        assert_eq!(values(&forwarded, "x-request-id"), ["r"]);
    }

    #[test]
    fn response_allow_list() {
        let ok = StatusCode::OK;
        for allowed in [
            "content-type",
            "cache-control",
            "etag",
            "content-disposition",
            "content-language",
            "last-modified",
            "vary",
            "x-ext-trace",
        ] {
            assert!(response_header_allowed(allowed, ok, &[]), "{allowed}");
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
            "x-palisade-tenant",
            "access-control-allow-origin",
        ] {
            assert!(!response_header_allowed(refused, ok, &[]), "{refused}");
        }
    }

    #[test]
    fn location_passes_on_redirects_only() {
        for status in [301, 302, 303, 304, 307, 308] {
            let status = StatusCode::from_u16(status).unwrap();
            assert!(response_header_allowed("location", status, &[]), "{status}");
        }
        for status in [200, 201, 204, 400, 404, 500] {
            let status = StatusCode::from_u16(status).unwrap();
            assert!(
                !response_header_allowed("location", status, &[]),
                "{status}"
            );
        }
        let guest = map(&[("location", "/items/1"), ("content-type", "text/plain")]);
        let (headers, dropped) = filter_response_headers(&guest, StatusCode::FOUND, &[]);
        assert_eq!(values(&headers, "location"), ["/items/1"]);
        assert!(dropped.is_empty());
        let (headers, dropped) = filter_response_headers(&guest, StatusCode::CREATED, &[]);
        assert!(headers.get("location").is_none());
        assert_eq!(dropped, ["location"]);
        // A manifest that declares `location` gets it on every status.
        let declared = names(&["location"]);
        let (headers, _) = filter_response_headers(&guest, StatusCode::CREATED, &declared);
        assert_eq!(values(&headers, "location"), ["/items/1"]);
    }

    #[test]
    fn declared_response_headers_pass() {
        let guest = map(&[
            ("content-range", "bytes 0-9/100"),
            ("link", "</p/2>; rel=next"),
            ("retry-after", "5"),
        ]);
        let declared = names(&["Content-Range", "link"]);
        let (headers, dropped) = filter_response_headers(&guest, StatusCode::OK, &declared);
        assert_eq!(values(&headers, "content-range"), ["bytes 0-9/100"]);
        assert_eq!(values(&headers, "link"), ["</p/2>; rel=next"]);
        assert_eq!(dropped, ["retry-after"]);
    }

    #[test]
    fn reserved_response_headers_never_pass_even_if_declared() {
        let guest = map(&[
            ("set-cookie", "a=b"),
            ("x-palisade-tenant", "t"),
            ("transfer-encoding", "chunked"),
            ("content-length", "3"),
            ("connection", "close"),
            ("x-ext-a", "1"),
        ]);
        let declared = names(&[
            "set-cookie",
            "x-palisade-tenant",
            "transfer-encoding",
            "content-length",
            "connection",
        ]);
        let (headers, mut dropped) = filter_response_headers(&guest, StatusCode::OK, &declared);
        assert_eq!(headers.len(), 1);
        assert_eq!(values(&headers, "x-ext-a"), ["1"]);
        dropped.sort();
        assert_eq!(
            dropped,
            [
                "connection",
                "content-length",
                "set-cookie",
                "transfer-encoding",
                "x-palisade-tenant"
            ]
        );
    }

    /// A header map from name/value pairs, and the names of the malformed ones.
    fn header_map(pairs: &[(String, String)]) -> (HeaderMap, Vec<String>) {
        let mut out = HeaderMap::new();
        let mut malformed = Vec::new();
        for (name, value) in pairs {
            let parsed = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                .ok()
                .zip(HeaderValue::from_str(value).ok());
            match parsed {
                Some((name, value)) => {
                    out.append(name, value);
                }
                None => malformed.push(name.to_ascii_lowercase()),
            }
        }
        (out, malformed)
    }

    #[test]
    fn response_headers_are_filtered() {
        let guest = vec![
            ("Content-Type".to_owned(), "application/json".to_owned()),
            ("set-cookie".to_owned(), "a=b".to_owned()),
            ("x-ext-a".to_owned(), "1".to_owned()),
            ("x-ext-a".to_owned(), "2".to_owned()),
            ("x-ext-hop".to_owned(), "gone".to_owned()),
            ("x-ext-declared-hop".to_owned(), "gone".to_owned()),
            (
                "connection".to_owned(),
                "x-ext-hop, X-Ext-Declared-Hop".to_owned(),
            ),
            ("etag".to_owned(), "bad\nvalue".to_owned()),
            ("x-ext-bad name".to_owned(), "v".to_owned()),
        ];
        let (guest, mut dropped) = header_map(&guest);
        assert_eq!(dropped, ["etag", "x-ext-bad name"]);
        let declared = names(&["x-ext-declared-hop"]);
        let (headers, refused) = filter_response_headers(&guest, StatusCode::OK, &declared);
        dropped.extend(refused);
        assert_eq!(headers.get("content-type").unwrap(), "application/json");
        assert_eq!(values(&headers, "x-ext-a"), ["1", "2"]);
        assert_eq!(headers.len(), 3);
        dropped.sort();
        assert_eq!(
            dropped,
            [
                "connection",
                "etag",
                "set-cookie",
                "x-ext-bad name",
                "x-ext-declared-hop",
                "x-ext-hop"
            ]
        );
    }

    #[test]
    fn guest_vary_passes_and_is_merged_with_authorization() {
        let guest = map(&[("vary", "Accept-Language"), ("content-type", "text/plain")]);
        for cache in [EndpointCache::Private, EndpointCache::Public] {
            let (mut headers, dropped) = filter_response_headers(&guest, StatusCode::OK, &[]);
            assert!(dropped.is_empty());
            apply_cache_policy(&mut headers, cache);
            assert_eq!(values(&headers, "vary"), ["accept-language, authorization"]);
        }
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
