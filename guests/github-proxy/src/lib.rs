//! Sample Palisade extension: `GET /repos/:owner/:repo` fetches
//! `{api_base}/repos/{owner}/{repo}` from the GitHub REST API and answers with a trimmed
//! JSON summary.
//!
//! * `api_base` is the install's configuration key (default `https://api.github.com`); the
//!   manifest's `http` allow-list must contain its origin.
//! * The install's secret `GITHUB_TOKEN`, when it is set, is sent as a bearer token; without
//!   it the request is anonymous (GitHub's lower rate limit applies).

use palisade_sdk::fetch::{self, FetchError};
use palisade_sdk::http::{Request, Response, Router};
use palisade_sdk::{context, log, secrets};
use serde::{Deserialize, Serialize};

/// Where the GitHub REST API lives unless the install configures `api_base`.
const DEFAULT_API_BASE: &str = "https://api.github.com";

/// Longest owner or repository name GitHub accepts.
const MAX_NAME_LEN: usize = 100;

/// The fields of GitHub's repository object this extension reads.
#[derive(Debug, Deserialize)]
struct Repository {
    full_name: String,
    #[serde(default)]
    description: Option<String>,
    html_url: String,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    stargazers_count: u64,
    #[serde(default)]
    forks_count: u64,
    #[serde(default)]
    open_issues_count: u64,
    #[serde(default)]
    default_branch: Option<String>,
    #[serde(default)]
    archived: bool,
    #[serde(default)]
    pushed_at: Option<String>,
}

/// The trimmed summary this extension answers with.
#[derive(Debug, Serialize, PartialEq, Eq)]
struct Summary {
    full_name: String,
    description: Option<String>,
    url: String,
    language: Option<String>,
    stars: u64,
    forks: u64,
    open_issues: u64,
    default_branch: Option<String>,
    archived: bool,
    pushed_at: Option<String>,
}

impl From<Repository> for Summary {
    fn from(repo: Repository) -> Self {
        Summary {
            full_name: repo.full_name,
            description: repo.description,
            url: repo.html_url,
            language: repo.language,
            stars: repo.stargazers_count,
            forks: repo.forks_count,
            open_issues: repo.open_issues_count,
            default_branch: repo.default_branch,
            archived: repo.archived,
            pushed_at: repo.pushed_at,
        }
    }
}

fn handle(request: Request) -> Response {
    router().handle(request)
}

fn router() -> Router {
    Router::new().get("/repos/:owner/:repo", repository)
}

fn repository(request: Request) -> Response {
    let (Some(owner), Some(repo)) = (request.param("owner"), request.param("repo")) else {
        return Response::bad_request("the path needs `/repos/:owner/:repo`");
    };
    for (what, name) in [("owner", owner), ("repo", repo)] {
        if let Err(reason) = check_name(name) {
            return Response::bad_request(format!("`{what}` {reason}"));
        }
    }
    let base = context::config_get("api_base").unwrap_or_else(|| DEFAULT_API_BASE.to_owned());
    let url = repository_url(&base, owner, repo);
    let mut upstream = fetch::Request::get(url.as_str())
        .with_header("accept", "application/vnd.github+json")
        .with_header("user-agent", "palisade-github-proxy")
        .with_header("x-github-api-version", "2022-11-28");
    // Any error (not granted, not set, store unavailable) means an anonymous request.
    if let Ok(token) = secrets::get("GITHUB_TOKEN") {
        upstream = upstream.with_header("authorization", format!("Bearer {token}"));
    }
    match fetch::fetch(upstream) {
        Ok(response) => answer(response),
        Err(error) => {
            log::write(
                log::Level::Warn,
                "GitHub request failed",
                &[("url", url.as_str()), ("error", &error.to_string())],
            );
            upstream_failed(&error)
        }
    }
}

/// Owner and repository names: 1 to 100 of `A-Z a-z 0-9 - _ .`, not `.` or `..`.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err("must have 1 to 100 characters");
    }
    if name == "." || name == ".." {
        return Err("cannot be `.` or `..`");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err("may only contain letters, digits, `-`, `_` and `.`");
    }
    Ok(())
}

fn repository_url(base: &str, owner: &str, repo: &str) -> String {
    format!("{}/repos/{owner}/{repo}", base.trim_end_matches('/'))
}

fn answer(response: Response) -> Response {
    match response.status() {
        200 => match response.body_json::<Repository>() {
            Ok(repo) => Response::json(200, &Summary::from(repo)),
            Err(error) => Response::json(
                502,
                &serde_json::json!({
                    "error": "upstream_invalid",
                    "message": format!("GitHub answered with an unexpected body: {error}"),
                }),
            ),
        },
        404 => Response::json(404, &serde_json::json!({ "error": "not_found" })),
        status => Response::json(
            502,
            &serde_json::json!({ "error": "upstream_status", "status": status }),
        ),
    }
}

fn upstream_failed(error: &FetchError) -> Response {
    let code = match error {
        FetchError::Denied { .. } | FetchError::Prohibited { .. } => "upstream_not_allowed",
        FetchError::Timeout { .. } => "upstream_timeout",
        _ => "upstream_unavailable",
    };
    Response::json(
        502,
        &serde_json::json!({ "error": code, "message": error.to_string() }),
    )
}

palisade_sdk::export_handler!(handle);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("rust-lang").is_ok());
        assert!(check_name("palisade.rs_2").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("..").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name("a?b").is_err());
        assert!(check_name(&"a".repeat(101)).is_err());
    }

    #[test]
    fn url_joins_base_and_path() {
        assert_eq!(
            repository_url("https://api.github.com/", "o", "r"),
            "https://api.github.com/repos/o/r"
        );
        assert_eq!(
            repository_url("http://127.0.0.1:9000", "o", "r"),
            "http://127.0.0.1:9000/repos/o/r"
        );
    }

    #[test]
    fn upstream_answers_are_trimmed_or_mapped() {
        let body = serde_json::json!({
            "full_name": "octo/hello",
            "description": "Hi",
            "html_url": "https://github.com/octo/hello",
            "language": "Rust",
            "stargazers_count": 5,
            "forks_count": 2,
            "open_issues_count": 1,
            "default_branch": "main",
            "archived": false,
            "pushed_at": "2024-01-01T00:00:00Z",
            "owner": { "login": "octo" }
        });
        let ok = answer(Response::json(200, &body));
        assert_eq!(ok.status(), 200);
        let summary: serde_json::Value = ok.body_json().unwrap();
        assert_eq!(summary["full_name"], "octo/hello");
        assert_eq!(summary["stars"], 5);
        assert!(summary.get("owner").is_none());

        assert_eq!(answer(Response::new(404)).status(), 404);
        let limited = answer(Response::new(403));
        assert_eq!(limited.status(), 502);
        assert_eq!(
            limited.body_json::<serde_json::Value>().unwrap()["status"],
            403
        );
        assert_eq!(answer(Response::text(200, "not json")).status(), 502);
    }

    #[test]
    fn fetch_errors_become_502() {
        let denied = upstream_failed(&FetchError::Denied { url: "u".into() });
        assert_eq!(denied.status(), 502);
        assert_eq!(
            denied.body_json::<serde_json::Value>().unwrap()["error"],
            "upstream_not_allowed"
        );
    }
}
