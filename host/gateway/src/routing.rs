//! Endpoint matching: a request is served only when the manifest's `api.endpoints` declares
//! its method and path. The guest does its own routing; this is the gateway's allow-list.

use http::Method;

/// The declared endpoint a request matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointMatch<'a> {
    /// The declared method, as written in the manifest.
    pub method: &'a str,
    /// The declared path template, e.g. `/items/:id`.
    pub template: &'a str,
}

/// Finds the first endpoint, given as `(method, path template)` pairs, that matches `method`
/// and `path` (the path inside the extension, starting with `/`, without the query).
///
/// A `:name` template segment matches one non-empty segment; other segments match exactly.
/// Methods compare case-insensitively and `HEAD` also matches a `GET` endpoint. When several
/// endpoints match, the most specific wins (a literal segment beats a parameter, compared
/// left to right), then the first declared. A path with a `.` or `..` segment (also
/// percent-encoded) never matches.
pub fn match_endpoint<'a, I>(endpoints: I, method: &Method, path: &str) -> Option<EndpointMatch<'a>>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let segments = split(path)?;
    if segments.iter().any(|s| is_dot_segment(s)) {
        return None;
    }
    let mut best: Option<(Vec<bool>, EndpointMatch<'a>)> = None;
    for (declared, template) in endpoints {
        if !method_matches(declared, method) || !template_matches(template, &segments) {
            continue;
        }
        let rank = specificity(template);
        if best.as_ref().is_none_or(|(best_rank, _)| rank > *best_rank) {
            best = Some((
                rank,
                EndpointMatch {
                    method: declared,
                    template,
                },
            ));
        }
    }
    best.map(|(_, found)| found)
}

/// Whether a request with `method` may use an endpoint declared with `declared`.
pub fn method_matches(declared: &str, method: &Method) -> bool {
    declared.eq_ignore_ascii_case(method.as_str())
        || (*method == Method::HEAD && declared.eq_ignore_ascii_case("GET"))
}

fn split(path: &str) -> Option<Vec<&str>> {
    Some(path.strip_prefix('/')?.split('/').collect())
}

fn template_matches(template: &str, segments: &[&str]) -> bool {
    let Some(parts) = split(template) else {
        return false;
    };
    parts.len() == segments.len()
        && parts.iter().zip(segments).all(|(part, segment)| {
            if is_param(part) {
                !segment.is_empty()
            } else {
                part == segment
            }
        })
}

/// Per segment, whether it is a literal (`true`) or a parameter.
fn specificity(template: &str) -> Vec<bool> {
    split(template)
        .unwrap_or_default()
        .iter()
        .map(|part| !is_param(part))
        .collect()
}

fn is_param(part: &str) -> bool {
    part.len() > 1 && part.starts_with(':')
}

fn is_dot_segment(segment: &str) -> bool {
    let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
    decoded == "." || decoded == ".."
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENDPOINTS: &[(&str, &str)] = &[
        ("GET", "/"),
        ("GET", "/items"),
        ("GET", "/items/:id"),
        ("post", "/items"),
        ("DELETE", "/items/:id/tags/:tag"),
    ];

    fn find(method: Method, path: &str) -> Option<&'static str> {
        match_endpoint(ENDPOINTS.iter().copied(), &method, path).map(|m| m.template)
    }

    #[test]
    fn literal_paths_match_exactly() {
        assert_eq!(find(Method::GET, "/"), Some("/"));
        assert_eq!(find(Method::GET, "/items"), Some("/items"));
        assert_eq!(find(Method::GET, "/Items"), None);
        assert_eq!(find(Method::GET, "/items/"), None);
        assert_eq!(find(Method::GET, "/itemsx"), None);
        assert_eq!(find(Method::GET, ""), None);
        assert_eq!(find(Method::GET, "items"), None);
    }

    #[test]
    fn params_match_one_non_empty_segment() {
        assert_eq!(find(Method::GET, "/items/42"), Some("/items/:id"));
        assert_eq!(find(Method::GET, "/items/a%2Fb"), Some("/items/:id"));
        assert_eq!(find(Method::GET, "/items/42/more"), None);
        assert_eq!(find(Method::GET, "/items//"), None);
        assert_eq!(
            find(Method::DELETE, "/items/1/tags/red"),
            Some("/items/:id/tags/:tag")
        );
        assert_eq!(find(Method::DELETE, "/items/1/tags/"), None);
        assert_eq!(find(Method::DELETE, "/items//tags/red"), None);
    }

    #[test]
    fn methods_must_match_and_head_matches_get() {
        assert_eq!(find(Method::POST, "/items"), Some("/items"));
        assert_eq!(find(Method::POST, "/items/1"), None);
        assert_eq!(find(Method::PUT, "/items"), None);
        assert_eq!(find(Method::HEAD, "/items/1"), Some("/items/:id"));
        let found = match_endpoint(ENDPOINTS.iter().copied(), &Method::HEAD, "/items").unwrap();
        assert_eq!(found.method, "GET");
        assert_eq!(find(Method::HEAD, "/items/1/tags/x"), None);
    }

    #[test]
    fn dot_segments_never_match() {
        for path in [
            "/items/..",
            "/items/.",
            "/items/%2e%2E",
            "/items/%2E",
            "/./items",
        ] {
            assert_eq!(find(Method::GET, path), None, "{path}");
        }
        assert_eq!(find(Method::GET, "/items/..."), Some("/items/:id"));
    }

    #[test]
    fn most_specific_then_first_declared_wins() {
        let endpoints = [("GET", "/a/:x"), ("GET", "/a/b"), ("GET", "/:y/b")];
        let found = match_endpoint(endpoints, &Method::GET, "/a/b").unwrap();
        assert_eq!(found.template, "/a/b");
        let found = match_endpoint(endpoints, &Method::GET, "/a/c").unwrap();
        assert_eq!(found.template, "/a/:x");
        let endpoints = [("GET", "/:x/b"), ("GET", "/a/:y")];
        let found = match_endpoint(endpoints, &Method::GET, "/a/b").unwrap();
        assert_eq!(found.template, "/a/:y");
        let endpoints = [("GET", "/:x"), ("GET", "/:y")];
        let found = match_endpoint(endpoints, &Method::GET, "/a").unwrap();
        assert_eq!(found.template, "/:x");
    }

    #[test]
    fn no_endpoints_no_match() {
        assert_eq!(match_endpoint([], &Method::GET, "/"), None);
    }
}
