//! Endpoint matching: a request is served only when the manifest's `api.endpoints` declares
//! its method and path. The guest does its own routing; this is the gateway's allow-list.

use http::Method;

/// The declared endpoint a request matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointMatch<'a> {
    /// The declared method, as written in the manifest (`*` for every method).
    pub method: &'a str,
    /// The declared path template, e.g. `/items/:id` or `/files/*rest`.
    pub template: &'a str,
}

/// The endpoint method that stands for every method.
pub const ANY_METHOD: &str = "*";

/// Finds the endpoint, given as `(method, path template)` pairs, that matches `method`
/// and `path` (the path inside the extension, starting with `/`, without the query).
///
/// A `:name` template segment matches one non-empty segment; a last segment `*name`
/// matches the rest of the path, zero or more segments (`/*rest` matches `/`, `/a` and
/// `/a/b/c`); other segments match exactly. Methods compare case-insensitively, `*`
/// matches every method, and `HEAD` also matches a `GET` endpoint.
///
/// When several endpoints match, the most specific wins:
/// 1. a template without a wildcard beats any template with one;
/// 2. among templates without a wildcard, a literal segment beats a parameter, compared
///    left to right; among wildcard templates, the one with the most literal segments
///    before the wildcard, then the most parameters;
/// 3. a declared method beats `*`;
/// 4. then the first declared.
///
/// A path with a `.` or `..` segment (also percent-encoded) never matches.
pub fn match_endpoint<'a, I>(endpoints: I, method: &Method, path: &str) -> Option<EndpointMatch<'a>>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let segments = split(path)?;
    if segments.iter().any(|s| is_dot_segment(s)) {
        return None;
    }
    let mut best: Option<(Rank, EndpointMatch<'a>)> = None;
    for (declared, template) in endpoints {
        if !method_matches(declared, method) {
            continue;
        }
        let Some(parts) = split(template) else {
            continue;
        };
        if !template_matches(&parts, &segments) {
            continue;
        }
        let rank = Rank::of(&parts, declared);
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
    declared == ANY_METHOD
        || declared.eq_ignore_ascii_case(method.as_str())
        || (*method == Method::HEAD && declared.eq_ignore_ascii_case("GET"))
}

fn split(path: &str) -> Option<Vec<&str>> {
    Some(path.strip_prefix('/')?.split('/').collect())
}

/// How specific a matching endpoint is; the greatest wins. Fields compare in order.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    /// No wildcard segment.
    exact: bool,
    /// Without a wildcard: per segment, whether it is a literal (`true`) or a parameter.
    /// Every exact template that matches a path has as many segments as it.
    literals: Vec<bool>,
    /// With a wildcard: the literal segments before it.
    prefix_literals: usize,
    /// With a wildcard: the parameters before it.
    prefix_params: usize,
    /// A declared method rather than `*`.
    method: bool,
}

impl Rank {
    fn of(parts: &[&str], method: &str) -> Rank {
        let method = method != ANY_METHOD;
        match wildcard_prefix(parts) {
            Some(prefix) => Rank {
                exact: false,
                literals: Vec::new(),
                prefix_literals: prefix.iter().filter(|part| !is_param(part)).count(),
                prefix_params: prefix.iter().filter(|part| is_param(part)).count(),
                method,
            },
            None => Rank {
                exact: true,
                literals: parts.iter().map(|part| !is_param(part)).collect(),
                prefix_literals: 0,
                prefix_params: 0,
                method,
            },
        }
    }
}

/// The segments before a last `*name` segment, or `None` when the template has none.
fn wildcard_prefix<'p, 'a>(parts: &'p [&'a str]) -> Option<&'p [&'a str]> {
    match parts.split_last() {
        Some((last, prefix)) if is_wildcard(last) => Some(prefix),
        _ => None,
    }
}

fn template_matches(parts: &[&str], segments: &[&str]) -> bool {
    let (prefix, rest_ok) = match wildcard_prefix(parts) {
        Some(prefix) => (prefix, segments.len() >= prefix.len()),
        None => (parts, segments.len() == parts.len()),
    };
    rest_ok
        && prefix.iter().zip(segments).all(|(part, segment)| {
            if is_param(part) {
                !segment.is_empty()
            } else {
                part == segment
            }
        })
}

fn is_param(part: &str) -> bool {
    part.len() > 1 && part.starts_with(':')
}

fn is_wildcard(part: &str) -> bool {
    part.len() > 1 && part.starts_with('*')
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

    fn found(
        endpoints: &[(&'static str, &'static str)],
        method: Method,
        path: &str,
    ) -> Option<(&'static str, &'static str)> {
        match_endpoint(endpoints.iter().copied(), &method, path).map(|m| (m.method, m.template))
    }

    #[test]
    fn wildcards_match_the_rest_of_the_path() {
        let endpoints = [("GET", "/*rest")];
        for path in ["/", "/a", "/a/b/c", "/a/", "/a//b"] {
            assert_eq!(
                found(&endpoints, Method::GET, path),
                Some(("GET", "/*rest")),
                "{path}"
            );
        }
        let endpoints = [("GET", "/files/*rest")];
        for path in ["/files", "/files/", "/files/a", "/files/a/b/c.txt"] {
            assert_eq!(
                found(&endpoints, Method::GET, path),
                Some(("GET", "/files/*rest")),
                "{path}"
            );
        }
        for path in ["/", "/file", "/filesx", "/filesx/a", "/a/files"] {
            assert_eq!(found(&endpoints, Method::GET, path), None, "{path}");
        }
        let endpoints = [("GET", "/u/:id/*rest")];
        assert_eq!(
            found(&endpoints, Method::GET, "/u/1"),
            Some(("GET", "/u/:id/*rest"))
        );
        assert_eq!(
            found(&endpoints, Method::GET, "/u/1/a/b"),
            Some(("GET", "/u/:id/*rest"))
        );
        assert_eq!(found(&endpoints, Method::GET, "/u"), None);
        assert_eq!(found(&endpoints, Method::GET, "/u/"), None);
    }

    #[test]
    fn wildcards_never_match_dot_segments() {
        let endpoints = [("GET", "/*rest"), ("*", "/files/*rest")];
        for path in [
            "/..",
            "/a/../b",
            "/files/./x",
            "/files/%2E%2e/etc",
            "/files/a/%2e",
        ] {
            assert_eq!(found(&endpoints, Method::GET, path), None, "{path}");
        }
    }

    #[test]
    fn a_template_without_a_wildcard_beats_any_wildcard() {
        let endpoints = [("GET", "/a/*rest"), ("*", "/a/b/*rest"), ("GET", "/:x/:y")];
        assert_eq!(
            found(&endpoints, Method::GET, "/a/b"),
            Some(("GET", "/:x/:y"))
        );
        assert_eq!(
            found(&endpoints, Method::GET, "/a/b/c"),
            Some(("*", "/a/b/*rest"))
        );
        assert_eq!(
            found(&endpoints, Method::GET, "/a"),
            Some(("GET", "/a/*rest"))
        );
        let endpoints = [("GET", "/*rest"), ("*", "/")];
        assert_eq!(found(&endpoints, Method::GET, "/"), Some(("*", "/")));
    }

    #[test]
    fn the_longest_literal_prefix_wins_then_parameters() {
        let endpoints = [
            ("GET", "/*all"),
            ("GET", "/:x/*rest"),
            ("GET", "/a/*rest"),
            ("GET", "/a/:y/*rest"),
            ("GET", "/a/b/*rest"),
            ("GET", "/:p/b/c/*rest"),
        ];
        assert_eq!(
            found(&endpoints, Method::GET, "/z"),
            Some(("GET", "/:x/*rest"))
        );
        assert_eq!(found(&endpoints, Method::GET, "/"), Some(("GET", "/*all")));
        assert_eq!(
            found(&endpoints, Method::GET, "/a"),
            Some(("GET", "/a/*rest"))
        );
        assert_eq!(
            found(&endpoints, Method::GET, "/a/q"),
            Some(("GET", "/a/:y/*rest"))
        );
        assert_eq!(
            found(&endpoints, Method::GET, "/a/b/x"),
            Some(("GET", "/a/b/*rest"))
        );
        // Two literals before the wildcard beat one literal and a parameter…
        assert_eq!(
            found(&endpoints, Method::GET, "/a/b"),
            Some(("GET", "/a/b/*rest"))
        );
        // …and lose to two literals and a parameter.
        assert_eq!(
            found(&endpoints, Method::GET, "/a/b/c/d"),
            Some(("GET", "/:p/b/c/*rest"))
        );
    }

    #[test]
    fn a_declared_method_beats_any_then_the_first_declared_wins() {
        let endpoints = [
            ("*", "/a/*rest"),
            ("POST", "/a/*more"),
            ("GET", "/:x/*rest"),
        ];
        assert_eq!(
            found(&endpoints, Method::POST, "/a/1"),
            Some(("POST", "/a/*more"))
        );
        assert_eq!(
            found(&endpoints, Method::PUT, "/a/1"),
            Some(("*", "/a/*rest"))
        );
        // The literal prefix counts before the method.
        assert_eq!(
            found(&endpoints, Method::GET, "/a/1"),
            Some(("*", "/a/*rest"))
        );
        let endpoints = [("*", "/items/:id"), ("DELETE", "/items/:id")];
        assert_eq!(
            found(&endpoints, Method::DELETE, "/items/1"),
            Some(("DELETE", "/items/:id"))
        );
        assert_eq!(
            found(&endpoints, Method::PATCH, "/items/1"),
            Some(("*", "/items/:id"))
        );
        let endpoints = [("GET", "/a/:x/*rest"), ("GET", "/:y/b/*rest")];
        assert_eq!(
            found(&endpoints, Method::GET, "/a/b/c"),
            Some(("GET", "/a/:x/*rest"))
        );
        let endpoints = [("*", "/f/*a"), ("*", "/f/*b")];
        assert_eq!(found(&endpoints, Method::GET, "/f/x"), Some(("*", "/f/*a")));
    }

    #[test]
    fn any_method_matches_every_method_and_head_matches_get_and_any() {
        let endpoints = [("*", "/any/*rest")];
        for method in [
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::OPTIONS,
            Method::PATCH,
        ] {
            assert_eq!(
                found(&endpoints, method.clone(), "/any/x"),
                Some(("*", "/any/*rest")),
                "{method}"
            );
        }
        let endpoints = [("GET", "/files/*rest"), ("*", "/files/*rest")];
        assert_eq!(
            found(&endpoints, Method::HEAD, "/files/a"),
            Some(("GET", "/files/*rest"))
        );
        let endpoints = [("*", "/files/*rest"), ("GET", "/files/*rest")];
        assert_eq!(
            found(&endpoints, Method::HEAD, "/files/a"),
            Some(("GET", "/files/*rest"))
        );
        let endpoints = [("HEAD", "/x"), ("GET", "/x")];
        assert_eq!(found(&endpoints, Method::HEAD, "/x"), Some(("HEAD", "/x")));
        let endpoints = [("*", "/x")];
        assert_eq!(found(&endpoints, Method::HEAD, "/x"), Some(("*", "/x")));
        assert!(method_matches("*", &Method::DELETE));
        assert!(!method_matches("**", &Method::DELETE));
    }
}
